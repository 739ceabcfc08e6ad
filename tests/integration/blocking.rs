//! Block responses and the precedence rules, end to end.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Transport, a_records, assert_blocked_nxdomain, ede, query};

const THREATS: &str = "# domain\tcategory\tfamily\n\
                       evil.example.test\tmalware\ttestbot\n\
                       phish.example.test\tphishing\tkit\n\
                       scan.example.test\tsuspicious\tscanner\n\
                       protected.example.test\tmalware\toops\n";

fn blocking_server() -> (
    crate::harness::Setup,
    crate::upstream::Authority,
    crate::harness::Server,
) {
    let extra = "[blocklist]\nallow = [\"allow.txt\"]\nprotected = [\"protected.txt\"]\npolicy_ttl = 300\n\
                 [actions]\nphishing = \"nodata\"\nsuspicious = \"refused\"\n";
    let lists = [
        ("allow.txt", "good.evil.example.test\n"),
        ("protected.txt", "protected.example.test\n"),
    ];
    crate::forward::forwarder_with(&[("threats.tsv", THREATS)], &lists, extra)
}

#[test]
fn nxdomain_carries_soa_and_ede_naming_category_and_feed() {
    let (_s, _a, server) = blocking_server();
    let reply = query(
        server.addr,
        "deep.sub.evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_blocked_nxdomain(&reply, "evil.example.test", 300);
    let (_, text) = ede(&reply).unwrap();
    assert!(
        text.contains("malware") && text.contains("threats.tsv"),
        "{text}"
    );
    // Without EDNS there is no OPT record to carry an EDE.
    let reply = query(
        server.addr,
        "evil.example.test.",
        RecordType::A,
        Transport::Udp,
        false,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.edns.is_none());
    assert_eq!(reply.authorities.len(), 1);
}

#[test]
fn per_category_actions_nodata_and_refused() {
    let (_s, _a, server) = blocking_server();
    let reply = query(
        server.addr,
        "www.phish.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(ede(&reply).unwrap().0, 15);
    let reply = query(
        server.addr,
        "scan.example.test.",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert_eq!(ede(&reply).unwrap().0, 15);
}

#[test]
fn allow_entry_under_a_blocked_domain_resolves() {
    let (_s, _a, server) = blocking_server();
    let reply = query(
        server.addr,
        "good.evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply), ["192.0.2.68"]);
    assert!(ede(&reply).is_none());
}

#[test]
fn protected_name_listed_by_a_feed_still_resolves() {
    let (_s, _a, server) = blocking_server();
    let reply = query(
        server.addr,
        "protected.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(a_records(&reply), ["192.0.2.70"]);
    assert!(
        server.log_contains("suppressed=1"),
        "start-up log reports the suppression:\n{}",
        server.log()
    );
}

#[test]
fn uppercase_and_trailing_dot_queries_match_and_keep_their_case() {
    let (_s, _a, server) = blocking_server();
    for name in [
        "EVIL.Example.TEST.",
        "Deep.SUB.evil.example.test",
        "evil.example.test",
    ] {
        let reply = query(server.addr, name, RecordType::A, Transport::Udp, true);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        // The question comes back exactly as asked (0x20 case preservation).
        let asked = name.trim_end_matches('.');
        assert_eq!(
            reply.queries[0].name().to_ascii().trim_end_matches('.'),
            asked
        );
    }
}

#[test]
fn unknown_clients_are_refused_by_default() {
    use crate::harness::{Server, Setup};
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    // No organisation holds 127.0.0.1 and unknown clients are not allowed.
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n\
                [blocklist]\nfeeds_dir = \"feeds\"\n[admin]\nlisten = \"\"\n[[organisation]]\nid = \"elsewhere\"\nnetworks = [\"10.0.0.0/8\"]\n";
    let config = setup.write("portcullis.toml", text);
    let server = Server::start(&config);
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(
            server.addr,
            "evil.example.test.",
            RecordType::A,
            transport,
            true,
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{transport:?}"
        );
    }
}
