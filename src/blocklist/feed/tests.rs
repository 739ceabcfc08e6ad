use super::*;

#[test]
fn protected_names_suppress_equal_and_above_but_not_below() {
    let mut p = Protected::default();
    p.insert("mail.google.com");
    assert!(p.suppresses("mail.google.com", Scope::Subtree));
    assert!(p.suppresses("google.com", Scope::Subtree));
    assert!(p.suppresses("com", Scope::Subtree));
    assert!(!p.suppresses("evil.mail.google.com", Scope::Subtree));
    assert!(!p.suppresses("docs.google.com", Scope::Subtree));
    // An exact entry only takes down its own name.
    assert!(p.suppresses("mail.google.com", Scope::Exact));
    assert!(!p.suppresses("google.com", Scope::Exact));
    // `*.google.com` covers mail.google.com; `*.mail.google.com` does not.
    assert!(p.suppresses("google.com", Scope::Below));
    assert!(!p.suppresses("mail.google.com", Scope::Below));
}

#[test]
fn entries_come_out_sorted_with_file_order_for_ties() {
    let source = FeedSource {
        name: "f".into(),
        format: Format::Plain,
        category: None,
        action: None,
        trusted: false,
        allow_only: false,
        answer_ip: false,
    };
    let mut b = FeedBuilder::new(source);
    b.add(Indicator::block("b.example".into(), Scope::Subtree));
    b.add(Indicator::block("a.example".into(), Scope::Subtree));
    b.add(Indicator {
        net: None,
        detail: Some("second"),
        ..Indicator::block("a.example".into(), Scope::Subtree)
    });
    let feed = b.finish(ParseCounts::default());
    let keys: Vec<&[u8]> = feed.entries().iter().map(|e| feed.key(e)).collect();
    assert_eq!(keys, [&b"example.a."[..], b"example.a.", b"example.b."]);
    let second = feed.metas()[feed.entries()[1].meta as usize];
    assert_eq!(second.detail.map(|d| feed.string(d)), Some("second"));
}

#[test]
fn below_only_rules_whose_apex_no_rule_blocks_are_counted() {
    let mut b = FeedBuilder::new(FeedSource::feed("f".into(), None));
    for (name, scope) in [
        ("open.example", Scope::Below),
        ("same.example", Scope::Below),
        ("same.example", Scope::Exact),
        ("a.parent.example", Scope::Below),
        ("parent.example", Scope::Subtree),
        ("b.exactparent.example", Scope::Below),
        ("exactparent.example", Scope::Exact),
        ("other.example", Scope::Subtree),
    ] {
        b.add(Indicator::block(name.into(), scope));
    }
    let mut allowed = Indicator::block("allowed.example".into(), Scope::Below);
    allowed.verdict = Verdict::Allow;
    b.add(allowed);
    let feed = b.finish(ParseCounts::default());
    // open.example and b.exactparent.example (an exact rule on the parent
    // does not cover a child); an allow rule is not a block left open.
    assert_eq!(feed.report.apexes_open, 2);
}
