//! Forward mode against a real local authority.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, Transport, a_records, assert_blocked_nxdomain, query};
use crate::upstream::{Authority, example_zone};

/// A forwarder in front of one authority for `example.test.`, with the
/// given feed files.
pub fn forwarder(feeds: &[(&str, &str)], extra: &str) -> (Setup, Authority, Server) {
    forwarder_with(feeds, &[], extra)
}

/// The same, with other files (allow and protected lists) beside the config.
pub fn forwarder_with(
    feeds: &[(&str, &str)],
    files: &[(&str, &str)],
    extra: &str,
) -> (Setup, Authority, Server) {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    for (name, text) in feeds {
        setup.write(&format!("feeds/{name}"), text);
    }
    for (name, text) in files {
        setup.write(name, text);
    }
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n{extra}",
        auth.addr
    ));
    let server = Server::start(&config);
    (setup, auth, server)
}

#[test]
fn allowed_names_resolve_over_udp_and_tcp() {
    let (_setup, _auth, server) = forwarder(&[("threats.txt", "evil.example.test\n")], "");
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(
            server.addr,
            "www.example.test.",
            RecordType::A,
            transport,
            false,
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{transport:?}"
        );
        assert_eq!(a_records(&reply), ["192.0.2.10"], "{transport:?}");
        assert!(reply.metadata.recursion_available);
        let reply = query(
            server.addr,
            "www.example.test.",
            RecordType::AAAA,
            transport,
            true,
        );
        assert_eq!(a_records(&reply), ["2001:db8::10"], "{transport:?}");
    }
}

#[test]
fn cname_chains_and_negative_answers_pass_through() {
    let (_setup, _auth, server) = forwarder(&[("threats.txt", "evil.example.test\n")], "");
    let reply = query(
        server.addr,
        "chain1.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = reply.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        [RecordType::CNAME, RecordType::CNAME, RecordType::A],
        "{reply}"
    );
    let reply = query(
        server.addr,
        "missing.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        reply
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "upstream SOA passed on: {reply}"
    );
    // A name that exists without the asked type: NODATA.
    let reply = query(
        server.addr,
        "alias.example.test.",
        RecordType::MX,
        Transport::Udp,
        false,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn listed_names_and_their_subdomains_are_blocked_over_udp_and_tcp() {
    let (_setup, _auth, server) = forwarder(
        &[("threats.txt", "evil.example.test\n")],
        "[blocklist]\npolicy_ttl = 120\n",
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        for name in ["evil.example.test.", "deep.sub.evil.example.test."] {
            let reply = query(server.addr, name, RecordType::A, transport, true);
            assert_blocked_nxdomain(&reply, "evil.example.test", 120);
        }
    }
    // notevil shares a suffix but not a label boundary.
    let reply = query(
        server.addr,
        "notevil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(a_records(&reply), ["192.0.2.69"]);
}

#[test]
fn truncated_udp_answers_are_retried_over_tcp_by_clients() {
    let (_setup, _auth, server) = forwarder(&[], "");
    // No EDNS: the 512-byte limit applies, and ~750 bytes of TXT do not fit.
    let udp = query(
        server.addr,
        "big.example.test.",
        RecordType::TXT,
        Transport::Udp,
        false,
    );
    assert!(udp.metadata.truncation, "TC set on the UDP answer");
    let tcp = query(
        server.addr,
        "big.example.test.",
        RecordType::TXT,
        Transport::Tcp,
        false,
    );
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 3);
}

#[test]
fn sigterm_stops_the_server_with_exit_code_zero() {
    let (_setup, _auth, server) = forwarder(&[], "");
    let reply = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Udp,
        false,
    );
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn each_worker_reads_its_own_udp_socket_on_the_one_port() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.example.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n",
        auth.addr
    ));
    setup.edit_config(
        "allow_unknown_clients = true",
        "allow_unknown_clients = true\nworkers = 3",
    );
    let server = Server::start(&config);
    // Three UDP sockets bound to the listening port (SO_REUSEPORT).
    // 127.0.0.1 in /proc's little-endian hex, and the port: other tests'
    // sockets may hold the same port number on another address.
    let local = format!("0100007F:{:04X}", server.addr.port());
    let udp = std::fs::read_to_string("/proc/net/udp").unwrap();
    let bound = udp
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|addr| addr == local)
        })
        .count();
    assert_eq!(bound, 3, "{udp}");
    // Clients on many source ports land on all of them; every one is
    // answered, blocked or resolved.
    for i in 0..60 {
        let (name, blocked) = if i % 2 == 0 {
            ("www.example.test.", false)
        } else {
            ("evil.example.test.", true)
        };
        let r = query(server.addr, name, RecordType::A, Transport::Udp, true);
        let want = if blocked {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        assert_eq!(r.metadata.response_code, want, "{name}");
    }
}
