//! Recursive mode against a local delegation chain: a root, a TLD and a
//! zone, each an authority on its own loopback address on port 53 (the
//! recursor only speaks to port 53). Binding port 53 needs root, as in CI;
//! elsewhere the test says why it is skipped.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, Transport, a_records, assert_blocked_nxdomain, query};
use crate::upstream::{Authority, example_records};

const ROOT: &str = "127.0.53.1";
const TLD: &str = "127.0.53.2";
const ZONE: &str = "127.0.53.3";

fn start_chain() -> Option<(Authority, Authority, Authority)> {
    if std::net::UdpSocket::bind((ROOT, 53)).is_err() {
        eprintln!(
            "SKIPPED recursive tests: cannot bind {ROOT}:53 (needs root or CAP_NET_BIND_SERVICE)"
        );
        return None;
    }
    // Every nameserver name lives in the root zone itself (authoritative
    // there), so no delegation depends on glue.
    let soa = |origin: &str| {
        format!(
            "$TTL 300\n{origin} IN SOA a.root-servers. hostmaster.root-servers. 1 3600 600 86400 60\n"
        )
    };
    let root = soa(".")
        + &format!(
            ". IN NS a.root-servers.\na.root-servers. IN A {ROOT}\ntld.root-servers. IN A {TLD}\n\
             zone.root-servers. IN A {ZONE}\ntest. IN NS tld.root-servers.\n"
        );
    let tld =
        soa("test.") + "test. IN NS tld.root-servers.\nexample.test. IN NS zone.root-servers.\n";
    let zone = soa("example.test.")
        + "example.test. IN NS zone.root-servers.\n"
        + &example_records("example.test.");
    let root = Authority::start(format!("{ROOT}:53").parse().unwrap(), &[(".", root)]);
    let tld = Authority::start(format!("{TLD}:53").parse().unwrap(), &[("test.", tld)]);
    let zone = Authority::start(
        format!("{ZONE}:53").parse().unwrap(),
        &[("example.test.", zone)],
    );
    Some((root, tld, zone))
}

#[test]
fn recursive_mode_iterates_from_configured_root_hints() {
    let Some(_chain) = start_chain() else { return };
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.example.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"recursive\"\nroot_hints = [\"{ROOT}\"]\nallow_server_networks = [\"127.0.53.0/24\"]\n"
    ));
    let server = Server::start(&config);
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(
            server.addr,
            "www.example.test.",
            RecordType::A,
            transport,
            true,
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{transport:?}: {reply}"
        );
        assert_eq!(a_records(&reply), ["192.0.2.10"]);
    }
    let reply = query(
        server.addr,
        "alias.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert!(
        a_records(&reply).contains(&"192.0.2.10".to_owned()),
        "CNAME followed: {reply}"
    );
    let reply = query(
        server.addr,
        "missing.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "{reply}"
    );
    let reply = query(
        server.addr,
        "deep.sub.evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_blocked_nxdomain(&reply, "evil.example.test", 300);
}

#[test]
fn timeout_ms_limits_a_whole_recursive_resolution() {
    // A root that takes every query and never answers: over UDP it reads
    // nothing, over TCP the connection is queued and never served.
    const SILENT_ROOT: &str = "127.0.53.9";
    let Ok(_udp) = std::net::UdpSocket::bind((SILENT_ROOT, 53)) else {
        eprintln!("SKIPPED recursive timeout test: cannot bind {SILENT_ROOT}:53 (needs root)");
        return;
    };
    let _tcp = std::net::TcpListener::bind((SILENT_ROOT, 53)).expect("bind TCP beside UDP");
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.example.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"recursive\"\nroot_hints = [\"{SILENT_ROOT}\"]\n\
         allow_server_networks = [\"127.0.53.0/24\"]\ntimeout_ms = 400\n"
    ));
    let server = Server::start(&config);
    // The recursor alone would wait 5 s per server query, past the test
    // client's 5 s; with the limit the client gets SERVFAIL well before.
    let reply = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::ServFail,
        "{reply}"
    );
    // A blocked name is still answered from the list, upstream or not.
    let reply = query(
        server.addr,
        "evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_blocked_nxdomain(&reply, "evil.example.test", 300);
}
