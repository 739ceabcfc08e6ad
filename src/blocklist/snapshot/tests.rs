use super::*;
use crate::blocklist::merge::tests::{feed, source};
use crate::blocklist::{MergeSettings, Protected, merge};
use crate::formats::{Indicator, Subject};

fn sample() -> Blocklist {
    let local = Indicator {
        net: None,
        action: Some(Action::Sinkhole),
        local: vec!["192.0.2.1".parse().unwrap()],
        detail: Some("indicator--1"),
        ..Indicator::block("sink.example".into(), Scope::Exact)
    };
    let f = feed(
        source("f.txt"),
        vec![
            Indicator::block("evil.example".into(), Scope::Subtree),
            local,
        ],
    );
    let mut client = Indicator::address("127.0.0.2/32".parse().unwrap());
    client.subject = Subject::Client;
    let mut ns_ip = Indicator::address("127.0.55.0/24".parse().unwrap());
    ns_ip.subject = Subject::NameServer;
    let mut ns_name = Indicator::block("evil-dns.example".into(), Scope::Below);
    ns_name.subject = Subject::NameServer;
    let g = feed(
        source("g.txt"),
        vec![
            Indicator::block("second.example".into(), Scope::Exact),
            client,
            ns_ip,
            ns_name,
        ],
    );
    let layer = |f| {
        Arc::new(
            merge(&[f], &Protected::default(), &MergeSettings::default())
                .unwrap()
                .0,
        )
    };
    let mut list = Blocklist::from_layers(vec![layer(f), layer(g)]);
    list.set_generation(7);
    list
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let fp = BTreeMap::from([(
        "/x/f.txt".to_owned(),
        Fingerprint {
            size: 3,
            modified: Some(std::time::UNIX_EPOCH),
            hash: 9,
        },
    )]);
    save(dir.path(), &sample(), &fp, None).unwrap();
    let loaded = load(dir.path()).unwrap();
    let list = loaded.list;
    assert_eq!(loaded.fingerprints, fp);
    assert_eq!(list.generation(), 7);
    assert_eq!(list.entries(), 3);
    assert_eq!(list.layers().len(), 2);
    let m = list.lookup_str("a.evil.example").unwrap();
    assert_eq!(list.feed(&m).name, "f.txt");
    let m = list.lookup_str("sink.example").unwrap();
    assert_eq!(list.detail(&m), Some("indicator--1"));
    assert_eq!(list.answer(&m), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    let m = list.lookup_str("second.example").unwrap();
    assert_eq!((m.layer, list.feed(&m).name.as_str()), (1, "g.txt"));
    // Client-IP triggers come back, apart from the answer addresses.
    assert_eq!(list.clients(), 1);
    assert_eq!(list.addresses(), 0);
    let (m, net) = list.lookup_client("127.0.0.2".parse().unwrap()).unwrap();
    assert_eq!(
        (list.feed(&m).name.as_str(), net.to_string()),
        ("g.txt", "127.0.0.2/32".into())
    );
    assert!(list.lookup_client("127.0.0.3".parse().unwrap()).is_none());
    assert!(list.lookup_address("127.0.0.2".parse().unwrap()).is_none());
    // So do the name-server triggers, apart from the query names.
    assert_eq!(list.ns_triggers(), (true, true));
    let (m, listed) = list.lookup_ns_name("ns1.evil-dns.example").unwrap();
    assert_eq!(
        (list.feed(&m).name.as_str(), listed),
        ("g.txt", "evil-dns.example")
    );
    assert!(list.lookup_ns_name("evil-dns.example").is_none());
    assert!(list.lookup_str("ns1.evil-dns.example").is_none());
    let (m, net) = list
        .lookup_ns_address("127.0.55.9".parse().unwrap())
        .unwrap();
    assert_eq!(
        (list.feed(&m).name.as_str(), net.to_string()),
        ("g.txt", "127.0.55.0/24".into())
    );
    assert!(list.lookup_address("127.0.55.9".parse().unwrap()).is_none());
}

#[test]
fn corruption_is_detected_and_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), &sample(), &BTreeMap::new(), None).unwrap();
    let good = std::fs::read(&path).unwrap();
    // A flipped byte anywhere after the header.
    for at in [HEADER + 3, good.len() - 5] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            matches!(load(dir.path()), Err(SnapshotError::Checksum { .. })),
            "flip at {at}"
        );
    }
    // Truncated.
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    assert!(matches!(
        load(dir.path()),
        Err(SnapshotError::Truncated { .. })
    ));
    std::fs::write(&path, &good[..10]).unwrap();
    assert!(matches!(
        load(dir.path()),
        Err(SnapshotError::Truncated { .. })
    ));
    // Wrong version.
    let mut other = good.clone();
    other[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    std::fs::write(&path, &other).unwrap();
    assert!(
        matches!(load(dir.path()), Err(SnapshotError::Version { got, .. }) if got == VERSION + 1)
    );
    // Not a snapshot at all.
    std::fs::write(&path, b"hello, this is not a snapshot file at all").unwrap();
    assert!(matches!(load(dir.path()), Err(SnapshotError::Magic { .. })));
    // Missing.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(load(dir.path()), Err(SnapshotError::Io { .. })));
    // And the good one still loads.
    std::fs::write(&path, &good).unwrap();
    assert!(load(dir.path()).is_ok());
}
