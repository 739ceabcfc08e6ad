//! Bad input gets a clear answer and breaks nothing.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::forward::forwarder;
use crate::harness::{Setup, Transport, a_records, exchange, query, run};

#[test]
fn malformed_packets_do_not_stop_the_server() {
    let (_s, _a, server) = forwarder(&[("threats.txt", "evil.example.test\n")], "");
    let good = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Udp,
        false,
    );
    let mut header_only = good.to_vec().unwrap();
    header_only.truncate(12);

    // Shorter than a header: no answer is possible (RFC 1035 has no ID to
    // echo), so the packet is dropped.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&[0x12, 0x34, 0x01], server.addr).unwrap();

    // A header that promises a question that is not there: FORMERR.
    let mut promises_question = header_only.clone();
    promises_question[2] = 0x01; // RD, QUERY
    promises_question[5] = 1; // QDCOUNT = 1
    let reply = exchange(server.addr, &promises_question, Transport::Udp).unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // A name with a label length pointing past the end: FORMERR.
    let mut bad_label = promises_question.clone();
    bad_label.extend_from_slice(&[63, b'a', b'b']);
    let reply =
        Message::from_vec(&exchange(server.addr, &bad_label, Transport::Udp).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // A name longer than 255 octets on the wire: FORMERR.
    let mut long_name = promises_question.clone();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply =
        Message::from_vec(&exchange(server.addr, &long_name, Transport::Udp).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // Two questions in one query: FORMERR (RFC 9619).
    let mut two = hickory_proto::op::Message::from_vec(&good.to_vec().unwrap()).unwrap();
    two.metadata.message_type = hickory_proto::op::MessageType::Query;
    two.answers.clear();
    two.add_query(hickory_proto::op::Query::query(
        "evil.example.test.".parse().unwrap(),
        RecordType::A,
    ));
    let reply =
        Message::from_vec(&exchange(server.addr, &two.to_vec().unwrap(), Transport::Udp).unwrap())
            .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // Garbage over TCP closes that connection only.
    let _ = exchange(server.addr, &[0xff; 40], Transport::Tcp);

    // And the server still answers.
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(
            server.addr,
            "www.example.test.",
            RecordType::A,
            transport,
            false,
        );
        assert_eq!(a_records(&reply), ["192.0.2.10"]);
        let reply = query(
            server.addr,
            "evil.example.test.",
            RecordType::A,
            transport,
            false,
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[test]
fn edns_version_above_zero_gets_badvers() {
    let (_s, _a, server) = forwarder(&[], "");
    let mut msg = crate::harness::build_query("www.example.test.", RecordType::A, true);
    if let Some(edns) = msg.edns.as_mut() {
        edns.set_version(1);
    }
    let reply =
        Message::from_vec(&exchange(server.addr, &msg.to_vec().unwrap(), Transport::Udp).unwrap())
            .unwrap();
    // 16 is BADVERS in an OPT's extended rcode (RFC 6891); hickory's parser
    // names the shared value BADSIG (RFC 8945), so compare the number.
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert!(reply.edns.is_some(), "BADVERS travels in an OPT record");
}

#[test]
fn a_broken_feed_line_is_rejected_and_the_rest_loads() {
    let feed = "evil.example.test\nnot a name\n192.0.2.1\nphish.example.test\n";
    let (_s, _a, server) = forwarder(&[("threats.txt", feed)], "");
    let reply = query(
        server.addr,
        "phish.example.test.",
        RecordType::A,
        Transport::Udp,
        false,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        server.log_contains("line=2"),
        "rejected line logged with its number:\n{}",
        server.log()
    );
    assert!(
        server.log_contains("threats.txt"),
        "and its file:\n{}",
        server.log()
    );
    // `192.0.2.1` is an address indicator (answer-IP policy), not a
    // rejected name.
    assert!(
        server.log_contains("loaded=3 rejected=1"),
        "and counted:\n{}",
        server.log()
    );
}

#[test]
fn a_feed_in_no_known_format_is_reported_and_others_load() {
    let (_s, _a, server) = forwarder(
        &[
            ("junk.bin", "<html>\n<body>404 Not Found</body>\n"),
            ("ok.txt", "evil.example.test\n"),
        ],
        "",
    );
    let reply = query(
        server.addr,
        "evil.example.test.",
        RecordType::A,
        Transport::Udp,
        false,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        server.log_contains("junk.bin") && server.log_contains("matches no known format"),
        "{}",
        server.log()
    );
}

#[test]
fn config_errors_name_the_key_and_file_and_exit_before_binding() {
    let setup = Setup::new();
    // A fixed port: if the server bound anything, a second bind would show it.
    let config = setup.write(
        "portcullis.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisen = true\n",
    );
    let (code, _, stderr) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "EX_USAGE: {stderr}");
    assert!(
        stderr.contains("lisen") && stderr.contains("portcullis.toml"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening for"),
        "nothing was bound: {stderr}"
    );

    let config = setup.write(
        "portcullis.toml",
        "[resolver]\nmode = \"forward\"\nupstreams = [\"not-an-address\"]\n",
    );
    let (code, _, stderr) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("resolver.upstreams[0]"), "{stderr}");

    let (code, _, stderr) = run(&[
        "serve",
        "--config",
        setup.path("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn a_missing_feeds_dir_stops_start_up_with_its_path() {
    let setup = Setup::new();
    let config = setup.config("[blocklist]\nfeeds_dir = \"nowhere\"\n");
    let err = crate::harness::Server::try_start(&config)
        .err()
        .expect("start-up fails");
    assert!(err.contains("nowhere"), "{err}");
}
