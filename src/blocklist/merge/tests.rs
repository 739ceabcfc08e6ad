use super::super::feed::{FeedBuilder, FeedSource};
use super::*;
use crate::formats::{Format, Indicator, ParseCounts};

pub(crate) fn source(name: &str) -> FeedSource {
    FeedSource {
        name: name.into(),
        format: Format::Plain,
        category: None,
        action: None,
        trusted: false,
        allow_only: false,
        answer_ip: false,
    }
}

pub(crate) fn one(layer: Layer) -> super::super::Blocklist {
    super::super::Blocklist::from_layers(vec![Arc::new(layer)])
}

pub(crate) fn feed(source: FeedSource, indicators: Vec<Indicator<'_>>) -> Arc<ParsedFeed> {
    let mut b = FeedBuilder::new(source);
    for i in indicators {
        b.add(i);
    }
    Arc::new(b.finish(ParseCounts::default()))
}

#[test]
fn shards_split_at_tld_boundaries() {
    let mut indicators = Vec::new();
    for tld in ["com", "net", "org", "ru", "xyz"] {
        for i in 0..20 {
            indicators.push(Indicator::block(
                format!("n{i}.example.{tld}"),
                Scope::Subtree,
            ));
        }
    }
    indicators.push(Indicator::block("com".into(), Scope::Subtree));
    let f = feed(source("f"), indicators);
    for n in 1..8 {
        let ranges = shard_ranges(&f, n);
        assert!(ranges.len() <= n.max(1));
        assert_eq!(ranges.first().map(|r| r.start), Some(0));
        assert_eq!(ranges.last().map(|r| r.end), Some(f.len()));
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            let before = f.key(&f.entries()[w[0].end - 1]);
            let after = f.key(&f.entries()[w[1].start]);
            let tld = |k: &[u8]| k.split(|b| *b == b'.').next().map(<[u8]>::to_vec);
            assert_ne!(tld(before), tld(after), "a TLD is never split");
        }
        // The shards as layers answer exactly as one layer does.
        let layers: Vec<Arc<Layer>> = ranges
            .iter()
            .map(|r| {
                let range = std::slice::from_ref(r);
                Arc::new(
                    merge_ranges(
                        std::slice::from_ref(&f),
                        range,
                        &Protected::default(),
                        &MergeSettings::default(),
                        true,
                    )
                    .unwrap()
                    .0,
                )
            })
            .collect();
        let split = super::super::Blocklist::from_layers(layers);
        let whole = one(merge(
            std::slice::from_ref(&f),
            &Protected::default(),
            &MergeSettings::default(),
        )
        .unwrap()
        .0);
        for q in [
            "n3.example.net",
            "x.n19.example.xyz",
            "other.com",
            "example.org",
            "zzz.zz",
        ] {
            assert_eq!(
                split.lookup_str(q).map(|m| split.meta(&m).scope),
                whole.lookup_str(q).map(|m| whole.meta(&m).scope),
                "{q} n={n}"
            );
            assert_eq!(
                split.lookup_str(q).map(|m| m.depth),
                whole.lookup_str(q).map(|m| m.depth),
                "{q} n={n}"
            );
        }
    }
}

#[test]
fn suppressed_indicators_are_counted_per_feed() {
    let mut p = Protected::default();
    p.insert("blogspot.com");
    let f = feed(
        source("f"),
        vec![
            Indicator::block("blogspot.com".into(), Scope::Subtree),
            Indicator::block("evil.blogspot.com".into(), Scope::Subtree),
        ],
    );
    let mut trusted = source("cert");
    trusted.trusted = true;
    let cert = feed(
        trusted,
        vec![Indicator::block("blogspot.com".into(), Scope::Exact)],
    );
    let (layer, suppressed) = merge(&[f, cert], &p, &MergeSettings::default()).unwrap();
    let list = one(layer);
    assert_eq!(
        suppressed[0],
        Suppressed {
            count: 1,
            first: vec!["blogspot.com".into()]
        }
    );
    assert_eq!(
        suppressed[1].count, 0,
        "a trusted feed may list protected names"
    );
    assert!(list.lookup_str("evil.blogspot.com").is_some());
    let m = list.lookup_str("blogspot.com").unwrap();
    assert_eq!(list.feed(&m).name, "cert");
    assert!(list.lookup_str("www.blogspot.com").is_none());
}

#[test]
fn addresses_need_an_opt_in_and_the_longest_network_decides() {
    let net = |t: &str| Indicator::address(crate::formats::parse_net(t).unwrap());
    let mut opted = source("opted.txt");
    opted.answer_ip = true;
    let opted = feed(opted, vec![net("192.0.2.0/24"), net("192.0.2.128/25")]);
    let c2 = feed(
        source("c2.tsv"),
        vec![Indicator {
            category: Some("c2"),
            ..net("198.51.100.1")
        }],
    );
    let other = feed(source("other.txt"), vec![net("203.0.113.1")]);
    let mut allow = source("allow:a.txt");
    allow.allow_only = true;
    let allow = feed(allow, vec![net("192.0.2.200")]);
    let settings = MergeSettings {
        answer_ip_categories: ["c2".to_owned()].into(),
        ..MergeSettings::default()
    };
    let (layer, _) = merge(&[opted, c2, other, allow], &Protected::default(), &settings).unwrap();
    assert_eq!(layer.addresses(), 4, "other.txt did not opt in");
    let list = one(layer);
    let decide = |ip: &str| {
        list.lookup_address(ip.parse().unwrap()).map(|(m, net)| {
            (
                net.to_string(),
                list.feed(&m).name.clone(),
                list.meta(&m).verdict,
            )
        })
    };
    assert_eq!(
        decide("192.0.2.5"),
        Some(("192.0.2.0/24".into(), "opted.txt".into(), Verdict::Block))
    );
    assert_eq!(
        decide("192.0.2.129"),
        Some(("192.0.2.128/25".into(), "opted.txt".into(), Verdict::Block))
    );
    assert_eq!(
        decide("192.0.2.200"),
        Some((
            "192.0.2.200/32".into(),
            "allow:a.txt".into(),
            Verdict::Allow
        ))
    );
    assert_eq!(
        decide("198.51.100.1"),
        Some(("198.51.100.1/32".into(), "c2.tsv".into(), Verdict::Block))
    );
    assert_eq!(decide("203.0.113.1"), None);
    assert_eq!(decide("2001:db8::1"), None);
}

#[test]
fn actions_follow_feed_then_format_then_category_then_default() {
    let settings = MergeSettings {
        by_category: [
            ("phishing".to_owned(), Action::Nodata),
            ("malware".to_owned(), Action::Refused),
        ]
        .into(),
        default_action: Action::Nxdomain,
        answer_ip_categories: Default::default(),
    };
    let cat = |n: &str, c| Indicator {
        net: None,
        category: Some(c),
        ..Indicator::block(n.into(), Scope::Subtree)
    };
    let tsv = feed(
        source("t"),
        vec![
            cat("phish.example", "phishing"),
            cat("other.example", "spam"),
        ],
    );
    let mut forced = source("f");
    forced.action = Some(Action::Log);
    let native = |n: &str| Indicator {
        net: None,
        action: Some(Action::Nodata),
        ..Indicator::block(n.into(), Scope::Exact)
    };
    let forced = feed(forced, vec![native("forced.example")]);
    let mut rpz = source("r");
    rpz.category = Some("malware".into());
    let sink = Indicator {
        net: None,
        action: Some(Action::Sinkhole),
        local: vec!["192.0.2.1".parse().unwrap()],
        ..Indicator::block("sink.example".into(), Scope::Exact)
    };
    let rpz = feed(
        rpz,
        vec![
            native("native.example"),
            Indicator::block("plain.example".into(), Scope::Exact),
            sink,
        ],
    );
    let list = one(merge(&[tsv, forced, rpz], &Protected::default(), &settings)
        .unwrap()
        .0);
    let meta = |n: &str| *list.meta(&list.lookup_str(n).unwrap());
    assert_eq!(meta("phish.example").action, Action::Nodata);
    assert_eq!(meta("other.example").action, Action::Nxdomain);
    assert_eq!(meta("forced.example").action, Action::Log);
    assert_eq!(meta("native.example").action, Action::Nodata);
    assert_eq!(meta("plain.example").action, Action::Refused);
    assert_eq!(meta("sink.example").action, Action::Sinkhole);
    assert_eq!(
        list.answer(&list.lookup_str("sink.example").unwrap()),
        ["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn earlier_feeds_win_ties_and_exceptions_from_any_feed_win() {
    let a = feed(
        source("a"),
        vec![Indicator {
            net: None,
            detail: Some("from a"),
            ..Indicator::block("x.example".into(), Scope::Subtree)
        }],
    );
    let b = feed(
        source("b"),
        vec![Indicator {
            net: None,
            detail: Some("from b"),
            ..Indicator::block("x.example".into(), Scope::Subtree)
        }],
    );
    let list = one(merge(
        &[a.clone(), b.clone()],
        &Protected::default(),
        &MergeSettings::default(),
    )
    .unwrap()
    .0);
    let m = list.lookup_str("x.example").unwrap();
    assert_eq!(list.detail(&m), Some("from a"));
    assert!(m.contested);
    let mut allow = source("allow:ok");
    allow.allow_only = true;
    let ok = feed(
        allow,
        vec![Indicator::block("x.example".into(), Scope::Subtree)],
    );
    let list = one(merge(
        &[a, b, ok],
        &Protected::default(),
        &MergeSettings::default(),
    )
    .unwrap()
    .0);
    let m = list.lookup_str("y.x.example").unwrap();
    assert_eq!(list.meta(&m).verdict, Verdict::Allow);
}
