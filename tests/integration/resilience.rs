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
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
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
