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

#[test]
fn a_large_feed_sorts_as_a_plain_sort_of_its_keys_would() {
    // Over the two-thread threshold, with keys shorter and longer than
    // the eight bytes compared first, many sharing those eight, and
    // repeats whose file order must hold.
    let mut b = FeedBuilder::new(FeedSource::feed("f".into(), None));
    let mut names = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..120_000u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let name = match i % 4 {
            0 => format!("{}.io", rng % 500),
            1 => format!("h{}.shared-registrable.example", rng % 5_000),
            2 => format!("x{}", rng % 50),
            _ => format!("{:x}.bad{}.example", rng, rng % 7),
        };
        names.push(name);
    }
    for (i, name) in names.iter().enumerate() {
        let detail = format!("{i}");
        b.add(Indicator {
            net: None,
            detail: Some(&detail),
            ..Indicator::block(name.as_str().into(), Scope::Subtree)
        });
    }
    let feed = b.finish(ParseCounts::default());
    let got: Vec<(Vec<u8>, usize)> = feed
        .entries()
        .iter()
        .map(|e| {
            let meta = feed.metas()[e.meta as usize];
            let line = meta
                .detail
                .map(|d| feed.string(d))
                .unwrap()
                .parse()
                .unwrap();
            (feed.key(e).to_vec(), line)
        })
        .collect();
    let mut want: Vec<(Vec<u8>, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut key = Vec::new();
            for label in n.rsplit('.') {
                key.extend_from_slice(label.as_bytes());
                key.push(domain::KEY_SEPARATOR);
            }
            (key, i)
        })
        .collect();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "first difference at {:?}",
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
}
