//! Holding up under failure and abuse: serve-stale (RFC 8767) and a quick
//! SERVFAIL with the reason (RFC 8914) for names never answered; ANY
//! answered minimally (RFC 8482).

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use hickory_proto::rr::RData;

use crate::harness::{
    Server, Setup, Transport, a_records, build_query, ede, exchange, metric, query, scrape,
    wait_for,
};
use crate::upstream::{Authority, example_zone, zone_head};

/// A zone whose `short` and `also` records live one second.
fn zone(short: &str) -> String {
    zone_head("example.test.", "127.0.0.1")
        + &format!(
            "short.example.test. 1 IN A {short}\n\
             also.example.test. 1 IN A 192.0.2.51\n\
             www.example.test. 300 IN A 192.0.2.10\n"
        )
}

fn ttl(reply: &Message) -> u32 {
    reply.answers.first().map_or(0, |r| r.ttl)
}

/// The test zone's authority on loopback.
fn example_authority() -> Authority {
    Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    )
}

/// A config (admin listener on) forwarding to `upstream`, with `evil` in
/// a feed and more TOML after.
fn forwarding(setup: &Setup, upstream: &str, extra: &str) -> std::path::PathBuf {
    setup.write("feeds/list.txt", "evil.example.test\n");
    setup.config_with_admin(
        "",
        &format!("[resolver]\nmode = \"forward\"\nupstreams = [\"{upstream}\"]\n{extra}"),
    )
}

#[test]
fn names_asked_before_are_answered_stale_when_the_upstream_dies() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", zone("192.0.2.50"))],
    );
    let upstream = auth.addr;
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{upstream}\"]\n\
             timeout_ms = 1000\nstale_answer_after_ms = 300\n"
        ),
    );
    let server = Server::start(&config);
    let ask = |name: &str, transport: Transport| {
        let started = Instant::now();
        let reply = query(server.addr, name, RecordType::A, transport, true);
        (reply, started.elapsed())
    };
    for name in ["short.example.test", "also.example.test"] {
        let (reply, _) = ask(name, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(ede(&reply), None, "a fresh answer carries no EDE");
    }

    // The upstream dies, and the answers expire.
    drop(auth);
    std::thread::sleep(Duration::from_millis(1300));

    // The first question after: the upstream is given its 300 ms, then
    // the stale answer goes out (TTL 30, EDE 3), well before the
    // resolution's own 1 s limit.
    let (reply, took) = ask("short.example.test", Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply), ["192.0.2.50"]);
    assert_eq!(ttl(&reply), 30);
    assert_eq!(ede(&reply).map(|e| e.0), Some(3), "{reply:?}");
    assert!(!reply.metadata.authentic_data);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(900),
        "{took:?}"
    );

    // Now the upstream is known to be failing: stale answers at once, over
    // TCP too.
    for transport in [Transport::Udp, Transport::Tcp] {
        let (reply, took) = ask("also.example.test", transport);
        assert_eq!(a_records(&reply), ["192.0.2.51"], "{transport:?}");
        assert_eq!(ede(&reply).map(|e| e.0), Some(3), "{transport:?}");
        assert!(took < Duration::from_millis(100), "{transport:?}: {took:?}");
    }

    // A name never answered: SERVFAIL with EDE 22 or 23, within the
    // configured timeout rather than the client's.
    let (reply, took) = ask("never.example.test", Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let code = ede(&reply).map(|e| e.0);
    assert!(matches!(code, Some(22 | 23)), "{reply:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");

    let text = scrape(&server);
    assert!(metric(&text, "portcullis_stale_answers_total", &[]) >= 3.0);
    assert!(metric(&text, "portcullis_upstream_errors_total", &[]) >= 1.0);

    // The upstream comes back with new data: the background refresh that
    // each stale answer starts picks it up.
    let _back = Authority::start(upstream, &[("example.test.", zone("192.0.2.99"))]);
    wait_for("a fresh answer", Duration::from_secs(10), || {
        let (reply, _) = ask("short.example.test", Transport::Udp);
        std::thread::sleep(Duration::from_millis(100));
        a_records(&reply) == ["192.0.2.99"] && ede(&reply).is_none()
    });
}

/// A fresh answer is the answer store's to give, on every transport, with
/// its TTL lowered by its age. With `dnssec = "process"` the forwarder
/// asks the upstream past hickory's cache, and serve-stale is off, so
/// once the upstream is gone nothing but the store can answer.
#[test]
fn fresh_answers_come_from_the_answer_store_after_the_upstream_is_gone() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", zone("192.0.2.50"))],
    );
    let setup = Setup::new();
    let config = forwarding(
        &setup,
        &auth.addr.to_string(),
        "timeout_ms = 600\nserve_stale_secs = 0\ndnssec = \"process\"\n",
    );
    let server = Server::start(&config);
    for name in ["www.example.test", "also.example.test"] {
        let reply = query(server.addr, name, RecordType::A, Transport::Tcp, true);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{reply:?}"
        );
    }
    drop(auth);
    std::thread::sleep(Duration::from_millis(1300));
    for transport in [Transport::Tcp, Transport::Udp] {
        let reply = query(
            server.addr,
            "www.example.test",
            RecordType::A,
            transport,
            true,
        );
        assert_eq!(a_records(&reply), ["192.0.2.10"], "{transport:?}");
        assert_eq!(ede(&reply), None, "{transport:?}: fresh, not stale");
        assert!(
            (298..300).contains(&ttl(&reply)),
            "{transport:?}: {}",
            ttl(&reply)
        );
    }
    // also's TTL (1 s) has run out: gone from the store, and the upstream
    // is dead.
    let reply = query(
        server.addr,
        "also.example.test",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::ServFail,
        "{reply:?}"
    );
}

#[test]
fn serve_stale_can_be_turned_off() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", zone("192.0.2.50"))],
    );
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n\
         timeout_ms = 600\nserve_stale_secs = 0\n",
        auth.addr
    ));
    let server = Server::start(&config);
    let reply = query(
        server.addr,
        "short.example.test",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(a_records(&reply), ["192.0.2.50"]);
    drop(auth);
    std::thread::sleep(Duration::from_millis(1300));
    let reply = query(
        server.addr,
        "short.example.test",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(matches!(ede(&reply).map(|e| e.0), Some(22 | 23)));
}

#[test]
fn any_gets_a_minimal_answer_that_amplifies_at_most_twice() {
    let auth = example_authority();
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n",
        auth.addr
    ));
    let server = Server::start(&config);
    // `big` holds 750 bytes of TXT, `www` an A and an AAAA, the apex SOA,
    // NS and glue: each would amplify a conventional ANY answer.
    for name in [
        "big.example.test.",
        "www.example.test.",
        "example.test.",
        "nx.example.test.",
    ] {
        for edns in [false, true] {
            for transport in [Transport::Udp, Transport::Tcp] {
                let query = build_query(name, RecordType::ANY, edns).to_vec().unwrap();
                let reply = exchange(server.addr, &query, transport).unwrap();
                // Amplification needs a spoofed source, so UDP; over TCP
                // the answer is the same record, its owner uncompressed.
                if transport == Transport::Udp {
                    let ratio = reply.len() as f64 / query.len() as f64;
                    assert!(ratio <= 2.0, "{name} edns={edns}: {ratio:.2}");
                }
                let reply = Message::from_vec(&reply).unwrap();
                assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
                assert_eq!(reply.answers.len(), 1, "{name}: {reply:?}");
                let RData::HINFO(hinfo) = &reply.answers[0].data else {
                    panic!("{name}: not HINFO: {reply:?}");
                };
                assert_eq!(&*hinfo.cpu, b"RFC8482");
            }
        }
    }
    // A DNSSEC client gets one real RRset it can validate (here unsigned).
    let mut msg = build_query("www.example.test.", RecordType::ANY, true);
    if let Some(edns) = msg.edns.as_mut() {
        edns.set_dnssec_ok(true);
    }
    let reply = exchange(server.addr, &msg.to_vec().unwrap(), Transport::Udp).unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    // A listed name is blocked whatever the type.
    let reply = query(
        server.addr,
        "evil.example.test",
        RecordType::ANY,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&reply).map(|e| e.0), Some(15));
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_by_server(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn idle_admin_connections_are_capped_per_client_and_closed() {
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "max_connections_per_client = 4\nidle_timeout_secs = 1",
        "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n",
    );
    let server = Server::start(&config);
    let admin = server.admin();
    // One client holds its four connections open and silent.
    let mut idle: Vec<_> = (0..4).map(|_| connect_from("127.0.0.2", admin)).collect();
    std::thread::sleep(Duration::from_millis(100));
    // Its fifth is closed at once; another client is answered at once.
    let mut fifth = connect_from("127.0.0.2", admin);
    assert!(closed_by_server(&mut fifth, Duration::from_millis(500)));
    let (status, _, body) = crate::harness::http_get(admin, "/healthz", None);
    assert_eq!(status, 200, "{body}");
    // The silent ones are closed after the idle timeout, freeing places.
    for stream in &mut idle {
        assert!(closed_by_server(stream, Duration::from_secs(5)));
    }
    let mut again = connect_from("127.0.0.2", admin);
    {
        use std::io::{Read, Write};
        write!(again, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        again.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    }
    let text = scrape(&server);
    assert!(
        metric(
            &text,
            "portcullis_connections_refused_total",
            &[("transport", "admin"), ("reason", "per_client")]
        ) >= 1.0
    );
}

#[test]
fn outsiders_filling_the_connection_cap_leave_the_members_their_quarter() {
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "",
        "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n\
         [[organisation]]\nid = \"member\"\nname = \"Member\"\nnetworks = [\"127.0.0.1/32\"]\n",
    );
    setup.edit_config(
        "allow_unknown_clients = true\n",
        "allow_unknown_clients = false\nmax_connections = 40\nmax_connections_per_client = 10\n\
         tcp_timeout_secs = 60\n",
    );
    let server = Server::start(&config);
    // Eight addresses in no organisation open ten connections each, and
    // hold them silent: the first 30 (three quarters of 40) stay open,
    // the rest are closed at once.
    let mut outsiders: Vec<std::net::TcpStream> = Vec::new();
    for host in 1..=8 {
        for _ in 0..10 {
            outsiders.push(connect_from(&format!("127.0.9.{host}"), server.addr));
        }
    }
    wait_for("the outsiders counted", Duration::from_secs(10), || {
        let text = scrape(&server);
        metric(&text, "portcullis_connections", &[("transport", "tcp")]) >= 30.0
            && metric(
                &text,
                "portcullis_connections_refused_total",
                &[("transport", "tcp"), ("reason", "reserved_for_members")],
            ) >= 50.0
    });
    let closed = outsiders
        .iter_mut()
        .map(|s| closed_by_server(s, Duration::from_millis(200)))
        .filter(|&closed| closed)
        .count();
    assert_eq!(closed, 50, "all but three quarters of the cap turned away");
    // The member is answered over TCP (its quarter), over UDP, and the
    // admin listener answers.
    for transport in [Transport::Tcp, Transport::Udp] {
        let r = query(
            server.addr,
            "evil.example.test",
            RecordType::A,
            transport,
            true,
        );
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NXDomain,
            "{transport:?}: {r}"
        );
    }
    let (status, _, _) = crate::harness::http_get(server.admin(), "/healthz", None);
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &scrape(&server),
            "portcullis_connections",
            &[("transport", "tcp")]
        ),
        30.0,
        "the member's connection closed after its answer"
    );
    drop(outsiders);
}

/// What came back for a burst of `count` queries sent at once from
/// `source`: (answers, truncated, refused, nothing) within `wait`.
fn burst(
    server: std::net::SocketAddr,
    source: &str,
    names: impl Fn(usize) -> String,
    count: usize,
    wait: Duration,
) -> (usize, usize, usize, usize) {
    let sock = std::net::UdpSocket::bind((source, 0)).unwrap();
    let mut ids = std::collections::HashSet::new();
    for i in 0..count {
        let msg = build_query(&names(i), RecordType::A, true);
        ids.insert(msg.metadata.id);
        sock.send_to(&msg.to_vec().unwrap(), server).unwrap();
    }
    let (mut answered, mut truncated, mut refused) = (0, 0, 0);
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && answered + truncated + refused < count {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        let reply = Message::from_vec(&buf[..n]).unwrap();
        assert!(ids.remove(&reply.metadata.id), "an answer per query");
        if reply.metadata.truncation {
            truncated += 1;
        } else if reply.metadata.response_code == ResponseCode::Refused {
            refused += 1;
        } else {
            answered += 1;
        }
    }
    let nothing = count - answered - truncated - refused;
    (answered, truncated, refused, nothing)
}

#[test]
fn a_client_over_its_rate_is_refused_and_others_are_not() {
    let setup = Setup::new();
    let config = forwarding(
        &setup,
        "127.0.0.1:9",
        "[limits]\nclient_qps = 20\nburst_factor = 1\n\
         [[organisation]]\nid = \"nat\"\nnetworks = [\"127.0.0.3/32\"]\nclient_qps = 1000\n",
    );
    let server = Server::start(&config);
    // Blocked names: answered from the bytes, so only the limit decides.
    let evil = |i: usize| format!("n{i}.evil.example.test");
    let (answered, truncated, refused, nothing) =
        burst(server.addr, "127.0.0.1", evil, 200, Duration::from_secs(2));
    assert!(
        (20..=30).contains(&answered) && refused == 200 - answered,
        "{answered} {truncated} {refused} {nothing}"
    );
    // Another address is its own client; a NAT organisation has more.
    let (answered, ..) = burst(server.addr, "127.0.0.2", evil, 20, Duration::from_secs(2));
    assert_eq!(answered, 20);
    let (answered, ..) = burst(server.addr, "127.0.0.3", evil, 200, Duration::from_secs(2));
    assert_eq!(answered, 200);
    // TCP has a bucket of its own: the limited client can still get in.
    let reply = query(
        server.addr,
        "x.evil.example.test",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let text = scrape(&server);
    let limited = metric(
        &text,
        "portcullis_limited_total",
        &[("limit", "client_rate")],
    );
    assert!(limited >= 170.0, "{limited}");
    assert!(
        metric(
            &text,
            "portcullis_queries_total",
            &[("transport", "udp"), ("outcome", "refused")]
        ) >= 170.0
    );
}

#[test]
fn over_limit_truncate_sends_clients_to_tcp() {
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n\
         [limits]\nclient_qps = 10\nburst_factor = 1\nover_limit = \"truncate\"\n",
    );
    let server = Server::start(&config);
    let (answered, truncated, refused, _) = burst(
        server.addr,
        "127.0.0.1",
        |i| format!("n{i}.evil.example.test"),
        100,
        Duration::from_secs(2),
    );
    assert!((10..=15).contains(&answered), "{answered}");
    assert_eq!((truncated, refused), (100 - answered, 0));
}

#[test]
fn response_rate_limiting_slips_a_spoofed_victim_a_few_truncated_answers() {
    let setup = Setup::new();
    let config = forwarding(
        &setup,
        "127.0.0.1:9",
        "[limits]\nrrl_responses_per_second = 10\nburst_factor = 1\nrrl_slip = 2\n",
    );
    let server = Server::start(&config);
    // The same response, again and again, to one address (as a reflection
    // attack aims them at a victim).
    let (answered, truncated, refused, nothing) = burst(
        server.addr,
        "127.0.0.1",
        |_| "evil.example.test".to_owned(),
        200,
        Duration::from_secs(1),
    );
    assert!((10..=15).contains(&answered), "{answered}");
    assert_eq!(refused, 0);
    let limited = 200 - answered;
    // One in two of those held back goes out truncated, the rest not at all.
    assert!(
        truncated.abs_diff(limited / 2) <= 1 && nothing.abs_diff(limited / 2) <= 1,
        "{answered} {truncated} {nothing}"
    );
    // Other names to the same address, and the same name to another
    // block, are other responses.
    let (answered, ..) = burst(
        server.addr,
        "127.0.0.1",
        |i| format!("other{i}.evil.example.test"),
        5,
        Duration::from_secs(1),
    );
    assert_eq!(answered, 5);
    let text = scrape(&server);
    assert!(metric(&text, "portcullis_limited_total", &[("limit", "rrl_slip")]) >= 80.0);
    assert!(metric(&text, "portcullis_limited_total", &[("limit", "rrl_drop")]) >= 80.0);
}

#[test]
fn a_random_subdomain_flood_fills_its_zones_share_and_other_names_resolve() {
    let auth = example_authority();
    // Names under victim.example.test take a second upstream; others not.
    let relay = crate::upstream::SlowRelay::start_matching(
        auth.addr,
        Duration::from_millis(1000),
        b"\x06victim",
    );
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 3000\n\
             [limits]\nmax_upstream_per_zone = 5\nmax_upstream_per_client = 100\n",
            relay.addr
        ),
    );
    let server = Server::start(&config);
    let started = Instant::now();
    // From eight addresses, five names each: no client is over its own
    // cap, and the zone's cap still holds the flood as a whole.
    let floods: Vec<_> = (1..=8)
        .map(|host| {
            let addr = server.addr;
            std::thread::spawn(move || {
                burst(
                    addr,
                    &format!("127.0.8.{host}"),
                    |i| format!("r{host}-{i}.victim.example.test"),
                    5,
                    Duration::from_secs(3),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Meanwhile other names resolve at once, from the same client too.
    let reply = query(
        server.addr,
        "www.example.test",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
    assert!(started.elapsed() < Duration::from_millis(900));
    let (answered, nothing) = floods
        .into_iter()
        .map(|f| f.join().unwrap())
        .fold((0, 0), |(a, n), (answered, _, _, nothing)| {
            (a + answered, n + nothing)
        });
    assert_eq!(nothing, 0);
    assert_eq!(answered, 40, "SERVFAIL counts as answered here");
    let text = scrape(&server);
    let capped = metric(
        &text,
        "portcullis_limited_total",
        &[("limit", "upstream_zone")],
    );
    assert!((30.0..=35.0).contains(&capped), "{capped}");
    // A capped query is SERVFAIL with the reason.
    let _hold: Vec<_> = (0..5)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || {
                query(
                    addr,
                    &format!("h{i}.victim.example.test"),
                    RecordType::A,
                    Transport::Udp,
                    true,
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let reply = query(
        server.addr,
        "late.victim.example.test",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let (code, text) = ede(&reply).unwrap();
    assert_eq!(code, 0);
    assert!(text.contains("zone"), "{text}");
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit_and_the_list_stays() {
    use std::io::Write;
    let setup = Setup::new();
    let config = forwarding(&setup, "127.0.0.1:9", "");
    let server = Server::start(&config);
    // 3 GiB of valid lines in 3 MiB: one 64 MiB gzip member, 48 times
    // (a multi-member gzip file is one stream to a reader).
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let line = b"x.bomb.example.test\n";
    for _ in 0..(64 << 20) / line.len() {
        member.write_all(line).unwrap();
    }
    let member = member.finish().unwrap();
    let staged = setup.path("bomb.txt.gz.part");
    let mut file = std::fs::File::create(&staged).unwrap();
    for _ in 0..48 {
        file.write_all(&member).unwrap();
    }
    drop(file);
    let started = Instant::now();
    std::fs::rename(&staged, setup.path("feeds/bomb.txt.gz")).unwrap();
    assert!(
        server.wait_log("more than 4000000 entries", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    let peak = peak_rss_kib(server.pid());
    assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
    // The list it had still blocks, and the refusal is counted.
    let reply = query(
        server.addr,
        "evil.example.test",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = query(
        server.addr,
        "x.bomb.example.test",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_ne!(reply.metadata.response_code, ResponseCode::NXDomain);
    eprintln!("bomb refused in {took:?}, peak RSS {peak} KiB");
}

fn rows(db: &rusqlite::Connection) -> u64 {
    db.query_row("SELECT count(*) FROM hits", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_hit_log_deleted_under_a_stream_of_blocks_is_opened_again_and_loses_nothing() {
    let setup = Setup::new();
    // One record per query: records are compared with queries sent.
    let config = forwarding(&setup, "127.0.0.1:9", "[hitlog]\ncoalesce_after = 0\n");
    let server = Server::start(&config);
    let database = setup.path("state/hits.sqlite");
    let total = 3000;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stream = std::thread::spawn({
        let (addr, sent) = (server.addr, std::sync::Arc::clone(&sent));
        move || {
            for i in 0..total {
                query(
                    addr,
                    &format!("n{i}.evil.example.test"),
                    RecordType::A,
                    Transport::Udp,
                    true,
                );
                sent.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    });
    wait_for("some hits written", Duration::from_secs(10), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= 500.0
    });
    // Keep the old file readable (an open file outlives its name), then
    // delete it, as a careless clean-up would.
    let old = rusqlite::Connection::open_with_flags(
        &database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let deleted_at = sent.load(std::sync::atomic::Ordering::SeqCst);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    stream.join().unwrap();
    wait_for("every hit written", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= total as f64
    });
    let text = scrape(&server);
    assert_eq!(metric(&text, "portcullis_hitlog_dropped_total", &[]), 0.0);
    // Everything counted as written is in a file: what came before the
    // deletion in the old one, the rest in the new one at the path.
    let new = rusqlite::Connection::open_with_flags(
        &database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("a new database at the path");
    let (before, after) = (rows(&old), rows(&new));
    assert!(
        before + after >= total as u64,
        "{before} + {after} < {total}"
    );
    assert!(
        after >= (total - deleted_at) as u64,
        "{after} in the new file, {} sent after the deletion",
        total - deleted_at
    );
    assert!(server.wait_log("deleted or replaced", Duration::from_secs(5)));
}

fn feed_names(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{prefix}{i}.example.test\n"))
        .collect()
}

fn blocked(server: &Server, name: &str) -> bool {
    let reply = query(server.addr, name, RecordType::A, Transport::Udp, true);
    ede(&reply).is_some_and(|(code, _)| code == 15)
}

fn readyz(server: &Server) -> (u16, serde_json::Value) {
    let (status, _, body) = crate::harness::http_get(server.admin(), "/readyz", None);
    (status, serde_json::from_str(&body).unwrap())
}

#[test]
fn a_restart_judges_feeds_against_their_last_good_copies() {
    let setup = Setup::new();
    setup.write("feeds/small.txt", &feed_names("s", 20));
    setup.write("feeds/garbled.txt", &feed_names("g", 20));
    std::fs::create_dir_all(setup.path("elsewhere")).unwrap();
    setup.write("elsewhere/target.txt", &feed_names("t", 5));
    std::os::unix::fs::symlink(
        setup.path("elsewhere/target.txt"),
        setup.path("feeds/linked.txt"),
    )
    .unwrap();
    // A STIX indicator that is valid for a few seconds more.
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    setup.write(
        "feeds/intel.json",
        &format!(
            r#"{{"type": "bundle", "id": "bundle--1", "objects": [
              {{"type": "indicator", "spec_version": "2.1", "id": "indicator--brief",
                "pattern_type": "stix", "pattern": "[domain-name:value = 'brief.example.test']",
                "valid_from": "2024-01-01T00:00:00Z", "valid_until": "{until}"}}]}}"#
        ),
    );
    let auth = example_authority();
    let config = setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n",
            auth.addr
        ),
    );
    let server = Server::start(&config);
    for name in [
        "s3.example.test",
        "g3.example.test",
        "t3.example.test",
        "brief.example.test",
    ] {
        assert!(blocked(&server, name), "{name}");
    }
    assert_eq!(server.terminate().code(), Some(0));

    // While it is down: one feed truncated to a tenth, one garbled, the
    // link's target gone, and the indicator's time up.
    setup.write("feeds/small.txt", &feed_names("s", 2));
    setup.write("feeds/garbled.txt", "\u{0}\u{1}<html>not a feed</html>\n");
    std::fs::remove_file(setup.path("elsewhere/target.txt")).unwrap();
    std::thread::sleep(Duration::from_secs(4));

    // From the snapshot: the expiry is acted on at once, and the reload
    // judges the feeds against the copies kept in state_dir.
    let server = Server::start(&config);
    wait_for(
        "the expired indicator lifted",
        Duration::from_secs(10),
        || !blocked(&server, "brief.example.test"),
    );
    for name in ["s3.example.test", "g3.example.test", "t3.example.test"] {
        assert!(
            blocked(&server, name),
            "{name} after a restart from the snapshot"
        );
    }
    for reason in ["shrank from 20 to 2", "no known format", "target is gone"] {
        assert!(
            server.wait_log(reason, Duration::from_secs(5)),
            "{reason}\n{}",
            server.log()
        );
    }
    let text = scrape(&server);
    for feed in ["small.txt", "garbled.txt", "linked.txt"] {
        assert!(
            metric(&text, "portcullis_feed_errors_total", &[("feed", feed)]) >= 1.0,
            "{feed}"
        );
    }
    let (status, ready) = readyz(&server);
    assert_eq!(status, 200, "{ready}");
    let warnings = ready["warnings"].to_string();
    for feed in ["small.txt", "garbled.txt", "linked.txt"] {
        assert!(warnings.contains(feed), "{feed}: {warnings}");
    }
    assert_eq!(server.terminate().code(), Some(0));

    // Without the snapshot the start-up compile itself uses the copies.
    std::fs::remove_file(setup.path("state/blocklist.snapshot")).unwrap();
    let server = Server::start(&config);
    for name in ["s3.example.test", "g3.example.test", "t3.example.test"] {
        assert!(blocked(&server, name), "{name} after a compile at start");
    }
    assert!(!blocked(&server, "brief.example.test"));

    // Every feed file removed: the list stays, and /readyz says why.
    for feed in ["small.txt", "garbled.txt", "linked.txt", "intel.json"] {
        std::fs::remove_file(setup.path(&format!("feeds/{feed}"))).unwrap();
    }
    wait_for("the deletions noticed", Duration::from_secs(10), || {
        readyz(&server).1["warnings"]
            .to_string()
            .contains("was deleted")
    });
    assert!(blocked(&server, "s3.example.test"));
    assert_eq!(readyz(&server).0, 200);
}

#[test]
fn a_feed_written_in_place_in_bursts_never_serves_a_partial_list() {
    let setup = Setup::new();
    let names: Vec<String> = (0..400).map(|i| format!("b{i}.example.test")).collect();
    setup.write("feeds/bursty.txt", &(names.join("\n") + "\n"));
    let config = setup.config(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n\
         [blocklist]\ndebounce_ms = 200\n",
    );
    let server = Server::start(&config);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sample: Vec<String> = names.iter().step_by(20).cloned().collect();
    let watcher = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        move || {
            let (mut asked, mut unblocked) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                for name in &sample {
                    let reply = query(addr, name, RecordType::A, Transport::Udp, true);
                    asked += 1;
                    if ede(&reply).map(|e| e.0) != Some(15) {
                        unblocked.push(name.clone());
                    }
                }
            }
            (asked, unblocked)
        }
    });
    // The same names again, plus one, written in place in 8 bursts with
    // 1.5 s pauses: longer than the debounce, shorter than the settle time.
    let text = names.join("\n") + "\nlast.example.test\n";
    let chunk = text.len().div_ceil(8);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(setup.path("feeds/bursty.txt")).unwrap();
        for part in text.as_bytes().chunks(chunk) {
            file.write_all(part).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        }
    }
    wait_for("the whole file read", Duration::from_secs(10), || {
        let reply = query(
            addr,
            "last.example.test",
            RecordType::A,
            Transport::Udp,
            true,
        );
        ede(&reply).map(|e| e.0) == Some(15)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (asked, unblocked) = watcher.join().unwrap();
    assert!(asked > 100, "{asked}");
    assert!(
        unblocked.is_empty(),
        "{} of {asked} unblocked: {:?}",
        unblocked.len(),
        &unblocked[..unblocked.len().min(5)]
    );
    assert!(
        server.log_contains("still being written"),
        "{}",
        server.log()
    );
}
