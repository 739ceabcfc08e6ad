//! The packet cache of whole UDP responses, through the real binary: what
//! a cached answer keeps from the query, what it never outlives, and what
//! it never holds.

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::{
    Server, Setup, Transport, a_records, build_query, ede, exchange, metric, query, scrape,
};
use crate::upstream::{Authority, example_zone};

fn start(packet_cache_size: usize) -> (Setup, Authority, Server) {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\npacket_cache_size = {packet_cache_size}\n",
            auth.addr
        ),
    );
    let server = Server::start(&config);
    (setup, auth, server)
}

fn lookups(server: &Server, result: &str) -> f64 {
    metric(
        &scrape(server),
        "portcullis_packet_cache_lookups_total",
        &[("result", result)],
    )
}

/// The reply to `name`, spelt exactly so, over UDP.
fn ask(server: &Server, name: &str, edns: bool) -> Message {
    query(server.addr, name, RecordType::A, Transport::Udp, edns)
}

#[test]
fn a_repeated_question_is_answered_from_the_cache_as_the_client_asked_it() {
    let (_setup, _auth, server) = start(1000);
    let first = ask(&server, "www.example.test.", true);
    assert_eq!(a_records(&first), ["192.0.2.10"]);
    let ttl = first.answers[0].ttl;
    std::thread::sleep(Duration::from_millis(1100));

    // Another ID (the harness checks it), another spelling (0x20): the
    // cached bytes carry both, and a TTL lowered by the time held.
    let hits = lookups(&server, "hit");
    let again = ask(&server, "WwW.eXaMpLe.TeSt.", true);
    assert_eq!(
        lookups(&server, "hit"),
        hits + 1.0,
        "answered from the cache"
    );
    assert_eq!(again.queries[0].name().to_ascii(), "WwW.eXaMpLe.TeSt.");
    assert_eq!(a_records(&again), ["192.0.2.10"]);
    assert!(
        again.answers[0].ttl < ttl,
        "{} then {ttl}",
        again.answers[0].ttl
    );
    assert!(again.metadata.recursion_available && again.metadata.recursion_desired);
    assert_eq!(again.edns.as_ref().map(|e| e.max_payload()), Some(1232));

    // Without EDNS the response has none: a different entry.
    let plain = ask(&server, "www.example.test.", false);
    assert!(plain.edns.is_none());
    assert_eq!(a_records(&plain), ["192.0.2.10"]);
    // Counted as answered queries like any other.
    let answered = metric(
        &scrape(&server),
        "portcullis_queries_total",
        &[("transport", "udp"), ("outcome", "answered")],
    );
    assert!(answered >= 3.0, "{answered}");
}

#[test]
fn a_reload_that_lists_a_cached_name_blocks_it_at_once() {
    let (setup, _auth, server) = start(1000);
    // The response is held just after it is sent: a query on its heels
    // may still miss.
    let deadline = Instant::now() + Duration::from_secs(3);
    while lookups(&server, "hit") < 1.0 {
        let reply = ask(&server, "www.example.test.", true);
        assert_eq!(a_records(&reply), ["192.0.2.10"]);
        assert!(Instant::now() < deadline, "never answered from the cache");
    }
    setup.write("feeds/more.txt", "www.example.test\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = ask(&server, "www.example.test.", true);
        if reply.metadata.response_code == ResponseCode::NXDomain {
            assert_eq!(ede(&reply).map(|(code, _)| code), Some(15));
            break;
        }
        assert!(Instant::now() < deadline, "still answered after the reload");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn blocked_truncated_and_unusual_answers_are_never_held() {
    let (_setup, _auth, server) = start(1000);
    let hits = || lookups(&server, "hit");

    // A blocked name: every query is judged (and recorded) again.
    for _ in 0..3 {
        let reply = ask(&server, "evil.example.test.", true);
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
    // Nor a truncated answer (three long TXT records, no EDNS: 512
    // octets at most).
    for _ in 0..3 {
        let reply = query(
            server.addr,
            "big.example.test.",
            RecordType::TXT,
            Transport::Udp,
            false,
        );
        assert!(reply.metadata.truncation);
    }
    assert_eq!(hits(), 0.0);

    // A query with an EDNS option (a cookie) takes the full path and is
    // not counted; it is still answered.
    let misses = lookups(&server, "miss");
    let mut msg = build_query("www.example.test.", RecordType::A, true);
    if let Some(edns) = msg.edns.as_mut() {
        edns.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                10,
                vec![7; 8],
            ));
    }
    for _ in 0..2 {
        let reply = exchange(server.addr, &msg.to_vec().unwrap(), Transport::Udp).unwrap();
        assert_eq!(
            a_records(&Message::from_vec(&reply).unwrap()),
            ["192.0.2.10"]
        );
    }
    assert_eq!(hits(), 0.0);
    assert_eq!(
        lookups(&server, "miss"),
        misses,
        "options are not looked up"
    );
}

#[test]
fn a_size_of_zero_turns_it_off() {
    let (_setup, _auth, server) = start(0);
    for _ in 0..3 {
        assert_eq!(
            a_records(&ask(&server, "www.example.test.", true)),
            ["192.0.2.10"]
        );
    }
    assert_eq!(lookups(&server, "hit"), 0.0);
    assert_eq!(lookups(&server, "miss"), 0.0);
}
