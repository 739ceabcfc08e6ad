//! The blocked-name fast path gives the bytes' worth of the full path:
//! the same response and the same hit record, for every action, type,
//! EDNS or not, spelling and client; and it stands aside exactly where
//! the full path must judge (exceptions, monitor mode, unlisted).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, Query};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use super::*;
use crate::blocklist::BlocklistHandle;
use crate::config::Config;
use crate::hitlog::{Hit, HitSender, PackedHit};
use crate::orgs::OrgMap;
use crate::resolve::Upstream;
use crate::server::capture::Capture;
use crate::server::{ClientPolicy, QueryMetrics};

const CONFIG: &str = r#"
[server]
allow_unknown_clients = true
[resolver]
mode = "forward"
upstreams = ["127.0.0.1:9"]
dnssec = "off"
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
allow = ["allow.txt"]
sinkhole_ipv4 = "192.0.2.53"
sinkhole_ipv6 = "2001:db8::53"
[actions]
phishing = "nodata"
ads = "sinkhole"
spam = "refused"
botnet = "drop"
watch = "log"
[[feed]]
file = "malware.txt"
category = "malware"
[[feed]]
file = "phish.txt"
category = "phishing"
[[feed]]
file = "ads.txt"
category = "ads"
[[feed]]
file = "hosts.txt"
category = "ads"
[[feed]]
file = "spam.txt"
category = "spam"
[[feed]]
file = "botnet.txt"
category = "botnet"
[[feed]]
file = "watch.txt"
category = "watch"
[[organisation]]
id = "council"
name = "Council"
networks = ["127.0.0.0/8"]
allow = ["trusted.evil.example.test"]
actions = { spam = "nxdomain" }
"#;

fn handler(dir: &std::path::Path, hits: HitSender) -> Handler {
    let feeds = dir.join("feeds");
    std::fs::create_dir_all(&feeds).unwrap();
    for (file, text) in [
        ("malware.txt", "evil.example.test\n"),
        ("phish.txt", "phish.example.test\n"),
        ("ads.txt", "ads.example.test\n"),
        (
            "hosts.txt",
            "10.1.2.3 local.example.test\n::1:2 local.example.test\n",
        ),
        ("spam.txt", "spam.example.test\n"),
        ("botnet.txt", "c2.example.test\n"),
        ("watch.txt", "watched.example.test\n"),
    ] {
        std::fs::write(feeds.join(file), text).unwrap();
    }
    std::fs::write(dir.join("allow.txt"), "ok.evil.example.test\n").unwrap();
    let config = Config::from_str(CONFIG, &dir.join("portcullis.toml")).unwrap();
    let (list, _) = crate::blocklist::compile(&config).unwrap();
    let list: BlocklistHandle = Arc::new(ArcSwap::from_pointee(list));
    let mut policy = ClientPolicy::new(
        &config,
        Arc::new(OrgMap::new(&config.organisations).unwrap()),
    );
    policy.allow_unknown_clients = true;
    policy.log_allowed = true;
    policy.block.ede_names_feed = true;
    Handler {
        blocklist: Arc::clone(&list),
        policy: policy.handle(),
        upstream: Arc::new(Upstream::new(&config.resolver).unwrap()),
        hits,
        metrics: QueryMetrics::new(),
        health: Arc::new(crate::health::Health::new(list, Duration::from_secs(30))),
        local: Default::default(),
        tap: None,
        notify: crate::sources::rpz::NotifyTargets::new(),
        listed_memo: Default::default(),
    }
}

fn packet(name: &str, qtype: RecordType, edns: bool, id: u16) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    msg.metadata.checking_disabled = id.is_multiple_of(2);
    // From raw labels: a name may hold bytes no presentation form
    // would let through.
    let labels = name.trim_end_matches('.').split('.').map(str::as_bytes);
    msg.add_query(Query::query(Name::from_labels(labels).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        msg.edns = Some(e);
    }
    msg.to_vec().unwrap()
}

fn without_time(packed: &PackedHit) -> Hit {
    let mut hit = packed.unpack();
    hit.ts = 0;
    hit
}

#[tokio::test]
async fn the_fast_path_answers_and_records_as_the_full_path_does() {
    let dir = tempfile::tempdir().unwrap();
    let (hits, received) = HitSender::channel(1024);
    let handler = handler(dir.path(), hits);
    let names = [
        ("evil.example.test.", true),
        ("Deep.SUB.Evil.Example.Test.", true),
        ("phish.example.test.", true),
        ("ads.example.test.", true),
        ("local.example.test.", true),
        ("spam.example.test.", true),
        ("c2.example.test.", true),
        // Labels hickory escapes: the hit record's spelling from `Name`.
        ("*.evil.example.test.", true),
        ("a b.evil.example.test.", true),
        ("-x.evil.example.test.", true),
        // The full path's: exceptions, monitor mode, unlisted.
        ("ok.evil.example.test.", false),
        ("trusted.evil.example.test.", false),
        ("watched.example.test.", false),
        ("clean.example.test.", false),
    ];
    let clients: [SocketAddr; 2] = [
        "127.0.0.1:5353".parse().unwrap(),
        "[2001:db8::9]:53".parse().unwrap(),
    ];
    let mut id = 1u16;
    let mut compared = 0;
    for (name, fast_expected) in names {
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::MX,
        ] {
            for edns in [false, true] {
                for src in clients {
                    id += 1;
                    let wire = packet(name, qtype, edns, id);
                    let what = format!("{name} {qtype} edns={edns} from {src}");
                    let mut out = [0u8; 1232];
                    let fast = handler.answer_from_bytes(None, &wire, src, &mut out);
                    // trusted.evil is an exception for the council only.
                    let expected =
                        fast_expected || (name.starts_with("trusted") && !src.ip().is_loopback());
                    assert_eq!(fast.is_some(), expected, "{what}");
                    let Some(len) = fast else { continue };
                    let fast_hit = received.try_recv().map(|p| without_time(&p));

                    let request = Request::from_bytes(wire.clone(), src, Protocol::Udp).unwrap();
                    let capture = Capture::default();
                    handler
                        .serve(&request, capture.clone(), super::super::Via::UDP)
                        .await;
                    let slow = capture.take();
                    let slow_hit = received.try_recv().map(|p| without_time(&p));
                    assert_eq!(fast_hit.ok(), slow_hit.ok(), "{what}: hit record");
                    let Some(slow) = slow else {
                        assert_eq!(len, 0, "{what}: only drop sends nothing");
                        continue;
                    };
                    let (fast, slow) = (
                        Message::from_vec(&out[..len]).unwrap(),
                        Message::from_vec(&slow).unwrap(),
                    );
                    assert_eq!(fast.metadata, slow.metadata, "{what}");
                    assert_eq!(fast.queries, slow.queries, "{what}");
                    assert_eq!(fast.answers, slow.answers, "{what}");
                    assert_eq!(fast.authorities, slow.authorities, "{what}");
                    assert_eq!(fast.additionals, slow.additionals, "{what}");
                    assert_eq!(fast.edns, slow.edns, "{what}");
                    compared += 1;
                }
            }
        }
    }
    assert!(received.try_recv().is_err(), "no hit left over");
    // 10 listed names (one with drop) x 4 types x 2 x 2, and the
    // trusted name from outside the council (x 4 x 2).
    assert_eq!(compared, 9 * 4 * 2 * 2 + 4 * 2, "responses compared");
}

#[tokio::test]
async fn any_from_the_bytes_is_the_full_paths_answer_in_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let handler = handler(dir.path(), HitSender::disabled());
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    for (name, fast_expected) in [
        ("clean.example.test.", true),
        ("Mixed.Case.Example.Test.", true),
        // Listed (blocked, excepted or watched): the full path decides.
        ("evil.example.test.", false),
        ("ok.evil.example.test.", false),
        ("watched.example.test.", false),
    ] {
        for edns in [false, true] {
            let wire = packet(name, RecordType::ANY, edns, 40);
            let what = format!("{name} edns={edns}");
            let mut out = [0u8; 1232];
            let fast = handler.answer_from_bytes(None, &wire, src, &mut out);
            assert_eq!(fast.is_some(), fast_expected, "{what}");
            let Some(len) = fast else { continue };
            let request = Request::from_bytes(wire.clone(), src, Protocol::Udp).unwrap();
            let capture = Capture::default();
            handler
                .serve(&request, capture.clone(), super::super::Via::UDP)
                .await;
            let slow = capture.take().unwrap();
            assert!(len < slow.len(), "{what}: the owner is a pointer");
            assert!(len <= 2 * wire.len(), "{what}: {len} for {}", wire.len());
            let (fast, slow) = (
                Message::from_vec(&out[..len]).unwrap(),
                Message::from_vec(&slow).unwrap(),
            );
            assert_eq!(fast.metadata, slow.metadata, "{what}");
            assert_eq!(fast.queries, slow.queries, "{what}");
            assert_eq!(fast.answers, slow.answers, "{what}");
            assert_eq!(fast.edns, slow.edns, "{what}");
        }
    }
    // With DO the full path gives a real RRset instead.
    let mut msg =
        Message::from_vec(&packet("clean.example.test.", RecordType::ANY, true, 41)).unwrap();
    if let Some(edns) = msg.edns.as_mut() {
        edns.set_dnssec_ok(true);
    }
    let mut out = [0u8; 1232];
    assert!(
        handler
            .answer_from_bytes(None, &msg.to_vec().unwrap(), src, &mut out)
            .is_none()
    );
}

/// Found by the `dns_fast_path` fuzz target: ANY for a name near the
/// longest, without EDNS (512 octets). Written from the bytes, the HINFO's
/// owner is a pointer and the answer fits; hickory's builder writes the
/// owner in full, so the full path's answer is truncated.
#[tokio::test]
async fn any_for_a_long_name_fits_in_512_octets_from_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let handler = handler(dir.path(), HitSender::disabled());
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let label = "a".repeat(60);
    let name = format!("{label}.{label}.{label}.{label}.example.");
    let wire = packet(&name, RecordType::ANY, false, 42);
    let mut out = [0u8; 1232];
    let n = handler
        .answer_from_bytes(None, &wire, src, &mut out)
        .expect("answered from the bytes");
    let fast = Message::from_vec(&out[..n]).unwrap();
    assert!(n <= 512 && !fast.metadata.truncation, "{n}");
    assert_eq!(fast.answers.len(), 1);
    let request = Request::from_bytes(wire, src, Protocol::Udp).unwrap();
    let capture = Capture::default();
    handler
        .serve(&request, capture.clone(), super::super::Via::UDP)
        .await;
    let slow = Message::from_vec(&capture.take().unwrap()).unwrap();
    assert!(
        slow.metadata.truncation,
        "the full path's copy does not fit"
    );
}

#[test]
fn the_fast_path_stands_aside_for_unusual_queries() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let handler = handler(dir.path(), HitSender::disabled());
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let mut out = [0u8; 1232];
    let good = packet("evil.example.test.", RecordType::A, true, 7);
    assert!(
        handler
            .answer_from_bytes(None, &good, src, &mut out)
            .is_some()
    );
    let mut chaos = Message::from_vec(&good).unwrap();
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert!(
        handler
            .answer_from_bytes(None, &chaos.to_vec().unwrap(), src, &mut out)
            .is_none()
    );
    let axfr = packet("evil.example.test.", RecordType::AXFR, false, 8);
    assert!(
        handler
            .answer_from_bytes(None, &axfr, src, &mut out)
            .is_none()
    );
    // No room for the response: the full path answers (and truncates).
    assert!(
        handler
            .answer_from_bytes(None, &good, src, &mut out[..40])
            .is_none()
    );
    // Shutting down: the full path refuses.
    assert_eq!(
        rt.block_on(handler.health.lifecycle.drain(Duration::ZERO)),
        0
    );
    assert!(
        handler
            .answer_from_bytes(None, &good, src, &mut out)
            .is_none()
    );
}

#[tokio::test]
async fn a_repeated_listed_name_comes_from_the_memo_until_a_new_list_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let (hits, _received) = HitSender::channel(1024);
    let handler = handler(dir.path(), hits);
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let ask = |name: &str, id: u16| {
        let mut out = [0u8; 4096];
        let wire = packet(name, RecordType::A, false, id);
        handler
            .answer_from_bytes(None, &wire, src, &mut out)
            .map(|len| Message::from_vec(&out[..len]).unwrap())
    };
    let first = ask("evil.example.test.", 1).expect("blocked on the fast path");
    let generation = handler.blocklist.load().generation();
    // The first walk only marks the name (the memo's doorkeeper).
    let wire_name = b"\x04evil\x07example\x04test\x00";
    assert_eq!(
        handler.listed_memo.get(&Key::of(wire_name), generation),
        None
    );
    let second = ask("evil.example.test.", 2).expect("blocked on the fast path");
    assert_eq!(second.authorities, first.authorities);
    let held = handler
        .listed_memo
        .get(&Key::of(wire_name), generation)
        .expect("the listed name is held from its second walk");
    assert_eq!(
        Some(held),
        handler.blocklist.load().lookup_str("evil.example.test")
    );
    // Asked again, in another case: the memo's entry gives the same answer.
    let again = ask("EVIL.Example.TEST.", 3).expect("blocked again");
    assert_eq!(again.metadata.response_code, first.metadata.response_code);
    assert_eq!(again.authorities, first.authorities);
    assert_eq!(handler.listed_memo.len(), 1);
    // A new list without the name goes live: the memo does not block it.
    std::fs::write(dir.path().join("feeds/malware.txt"), "other.example.test\n").unwrap();
    let config = Config::from_str(CONFIG, &dir.path().join("portcullis.toml")).unwrap();
    let (mut list, _) = crate::blocklist::compile(&config).unwrap();
    list.set_generation(handler.blocklist.load().generation() + 1);
    handler.blocklist.store(Arc::new(list));
    assert!(
        ask("evil.example.test.", 5).is_none(),
        "no longer listed: the full path resolves it"
    );
    assert!(ask("other.example.test.", 7).is_some());
}
