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
