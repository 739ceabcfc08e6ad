//! Response policy beyond the query name: CNAME targets in the answer.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{Transport, a_records, ede, query, run, wait_for};

/// Every record in the hit log, newest first (`portcullis logs`); none
/// while the writer is still creating the database (the callers poll).
fn hit_records(config: &std::path::Path) -> Vec<serde_json::Value> {
    let (code, out, _) = run(&["logs", "--format", "json", "-c", config.to_str().unwrap()]);
    if code != 0 {
        return Vec::new();
    }
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn cnames(msg: &hickory_proto::op::Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(format!("{} -> {}", r.name, c.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clean_name_that_cnames_to_a_listed_one_is_blocked_after_the_chain() {
    // www is listed; chain2 is watched in monitor mode.
    let (setup, _auth, server) = crate::forward::forwarder(
        &[
            ("block.txt", "www.example.test\n"),
            ("watch.txt", "chain2.example.test\n"),
        ],
        &format!(
            "[[feed]]\nfile = \"watch.txt\"\ncategory = \"watch\"\naction = \"log\"\n{}",
            crate::harness::EVERY_QUERY_RECORDED
        ),
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        let r = query(
            server.addr,
            "alias.example.test.",
            RecordType::A,
            transport,
            true,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r}");
        assert_eq!(cnames(&r), ["alias.example.test. -> www.example.test."]);
        assert!(a_records(&r).is_empty(), "{r}");
        let soa = r
            .authorities
            .iter()
            .find(|x| x.record_type() == RecordType::SOA)
            .expect("SOA");
        assert_eq!(
            soa.name.to_ascii(),
            "www.example.test.",
            "the SOA speaks for the listed target"
        );
        assert_eq!(ede(&r).map(|e| e.0), Some(15));
    }
    // Three CNAMEs; the watched one in the middle is recorded, the last
    // target blocks.
    let r = query(
        server.addr,
        "chain0.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r}");
    assert_eq!(
        cnames(&r),
        [
            "chain0.example.test. -> chain1.example.test.",
            "chain1.example.test. -> chain2.example.test.",
            "chain2.example.test. -> www.example.test."
        ]
    );
    // A clean answer is untouched.
    let r = query(
        server.addr,
        "notevil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&r), ["192.0.2.69"]);
    assert!(ede(&r).is_none());

    let config = setup.path("portcullis.toml");
    let logs = || hit_records(&config);
    wait_for("four records", std::time::Duration::from_secs(10), || {
        logs().len() >= 4
    });
    let records = logs();
    assert_eq!(records.len(), 4, "{records:?}");
    let alias: Vec<_> = records
        .iter()
        .filter(|h| h["qname"] == "alias.example.test")
        .collect();
    assert_eq!(alias.len(), 2, "UDP and TCP");
    assert!(alias.iter().all(|h| h["stage"] == "cname"
        && h["matched"] == "www.example.test"
        && h["action"] == "nxdomain"));
    let chain: Vec<_> = records
        .iter()
        .filter(|h| h["qname"] == "chain0.example.test")
        .collect();
    assert!(chain.iter().any(|h| h["matched"] == "chain2.example.test"
        && h["action"] == "log"
        && h["stage"] == "cname"));
    assert!(
        chain
            .iter()
            .any(|h| h["matched"] == "www.example.test" && h["action"] == "nxdomain")
    );
}

/// A zone whose names resolve into listed and unlisted addresses.
fn address_zone() -> String {
    crate::upstream::zone_head("ip.test.", "127.0.0.1")
        + "single.ip.test. IN A 198.51.100.7\n\
           single.ip.test. IN A 192.0.2.1\n\
           ranged.ip.test. IN A 203.0.113.50\n\
           v6.ip.test. IN AAAA 2001:db8:bad::1\n\
           cdn.ip.test. IN CNAME edge.cdn.ip.test.\n\
           edge.cdn.ip.test. IN A 203.0.113.9\n\
           shared.ip.test. IN A 192.0.2.200\n\
           watched.ip.test. IN A 192.0.2.201\n\
           excepted.ip.test. IN A 192.0.2.202\n\
           allowed.ip.test. IN A 198.51.100.7\n\
           clean.ip.test. IN A 192.0.2.1\n"
}

#[test]
fn answers_resolving_into_listed_addresses_are_blocked_only_where_enabled() {
    let auth = crate::upstream::Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("ip.test.", address_zone())],
    );
    let setup = crate::harness::Setup::new();
    // One opted-in IP feed (TSV, as threat-ips.tsv.gz), one range list
    // enabled through its category, one STIX bundle, one feed nobody
    // enabled, one in monitor mode, and an exception list.
    setup.write("feeds/bad-ips.tsv", "198.51.100.7\tmalware\tfam\n");
    setup.write("feeds/c2-ranges.txt", "203.0.113.0/24\n");
    setup.write(
        "feeds/intel.json",
        r#"{"type": "bundle", "id": "bundle--1", "objects": [
            {"type": "indicator", "id": "indicator--v6", "pattern": "[ipv6-addr:value = '2001:db8:bad::/48']",
             "labels": ["c2"], "valid_from": "2024-01-01T00:00:00Z"}]}"#,
    );
    setup.write("feeds/shared.tsv", "192.0.2.200\tmalware\tx\n");
    setup.write("feeds/watch.txt", "192.0.2.201\n");
    setup.write("allow.txt", "192.0.2.202\nallowed.ip.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
         [blocklist]\nanswer_ip_categories = [\"c2\"]\nallow = [\"allow.txt\"]\n\
         [[feed]]\nfile = \"bad-ips.tsv\"\nanswer_ip = true\n\
         [[feed]]\nfile = \"c2-ranges.txt\"\ncategory = \"c2\"\n\
         [[feed]]\nfile = \"watch.txt\"\ncategory = \"watch\"\naction = \"log\"\nanswer_ip = true\n{}",
        auth.addr,
        crate::harness::EVERY_QUERY_RECORDED
    ));
    let (code, out, err) = run(&["compile", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("addresses: 1 listed, 0 in the answer-IP policy (off"),
        "the feed nobody enabled says so:\n{out}"
    );
    assert!(
        out.contains("answer-IP policy: 5 addresses and ranges"),
        "{out}"
    );

    let server = crate::harness::Server::start(&config);
    let blocked = |server: &crate::harness::Server, name: &str, rtype, owner: &str| {
        for transport in [Transport::Udp, Transport::Tcp] {
            let r = query(server.addr, name, rtype, transport, true);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NXDomain,
                "{name} {transport:?}: {r}"
            );
            assert!(a_records(&r).is_empty(), "{r}");
            let soa = r
                .authorities
                .iter()
                .find(|x| x.record_type() == RecordType::SOA)
                .expect("SOA");
            assert_eq!(soa.name.to_ascii(), owner, "{r}");
            assert_eq!(ede(&r).map(|e| e.0), Some(15), "{r}");
        }
    };
    let answered = |server: &crate::harness::Server, name: &str, want: &str| {
        let r = query(server.addr, name, RecordType::A, Transport::Udp, true);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
        assert!(a_records(&r).contains(&want.to_owned()), "{name}: {r}");
        assert!(ede(&r).is_none(), "{r}");
    };
    // A listed address among clean ones blocks the whole answer.
    blocked(&server, "single.ip.test.", RecordType::A, "single.ip.test.");
    // An address inside a listed range.
    blocked(&server, "ranged.ip.test.", RecordType::A, "ranged.ip.test.");
    blocked(&server, "v6.ip.test.", RecordType::AAAA, "v6.ip.test.");
    // Behind a CNAME: the chain, then the owner's block answer.
    let r = query(
        server.addr,
        "cdn.ip.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r}");
    assert_eq!(cnames(&r), ["cdn.ip.test. -> edge.cdn.ip.test."]);
    // Off by default: an address in a feed nobody enabled.
    answered(&server, "shared.ip.test.", "192.0.2.200");
    // Monitor mode: answered, recorded.
    answered(&server, "watched.ip.test.", "192.0.2.201");
    // Exceptions: an allowed address, and an allowed name whose answer
    // holds a listed address (PASSTHRU ends policy evaluation).
    answered(&server, "excepted.ip.test.", "192.0.2.202");
    answered(&server, "allowed.ip.test.", "198.51.100.7");
    answered(&server, "clean.ip.test.", "192.0.2.1");

    let logs = || hit_records(&config);
    wait_for("eight records", std::time::Duration::from_secs(10), || {
        logs().len() >= 8
    });
    let records = logs();
    let find = |qname: &str| -> Vec<&serde_json::Value> {
        records.iter().filter(|h| h["qname"] == qname).collect()
    };
    for (qname, matched, feed, action) in [
        ("single.ip.test", "198.51.100.7", "bad-ips.tsv", "nxdomain"),
        (
            "ranged.ip.test",
            "203.0.113.0/24",
            "c2-ranges.txt",
            "nxdomain",
        ),
        ("v6.ip.test", "2001:db8:bad::/48", "intel.json", "nxdomain"),
        ("cdn.ip.test", "203.0.113.0/24", "c2-ranges.txt", "nxdomain"),
        ("watched.ip.test", "192.0.2.201", "watch.txt", "log"),
    ] {
        let hits = find(qname);
        assert!(!hits.is_empty(), "{qname}: {records:?}");
        assert!(
            hits.iter().all(|h| h["stage"] == "answer_ip"
                && h["matched"] == matched
                && h["feed"] == feed
                && h["action"] == action),
            "{qname}: {hits:?}"
        );
    }
    assert_eq!(find("v6.ip.test")[0]["indicator"], "indicator--v6");
    assert_eq!(records.len(), 8, "{records:?}");

    // The policy survives a restart from the snapshot.
    assert!(server.terminate().success());
    let server = crate::harness::Server::start(&config);
    blocked(&server, "ranged.ip.test.", RecordType::A, "ranged.ip.test.");
    answered(&server, "shared.ip.test.", "192.0.2.200");
    drop(server);
}

/// Send a query and wait `wait` for any reply (for `drop`).
fn reply_within(
    server: std::net::SocketAddr,
    name: &str,
    transport: Transport,
    edns: bool,
    wait: std::time::Duration,
) -> Option<hickory_proto::op::Message> {
    use std::io::{Read, Write};
    let bytes = crate::harness::build_query(name, RecordType::A, edns)
        .to_vec()
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = match transport {
        Transport::Udp => {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(wait)).unwrap();
            sock.send_to(&bytes, server).unwrap();
            sock.recv_from(&mut buf).ok()?.0
        }
        Transport::Tcp => {
            let mut stream = std::net::TcpStream::connect(server).unwrap();
            stream.set_read_timeout(Some(wait)).unwrap();
            stream
                .write_all(&(bytes.len() as u16).to_be_bytes())
                .unwrap();
            stream.write_all(&bytes).unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).ok()?;
            let n = usize::from(u16::from_be_bytes(len));
            stream.read_exact(&mut buf[..n]).ok()?;
            n
        }
    };
    Some(hickory_proto::op::Message::from_vec(&buf[..n]).unwrap())
}

#[test]
fn every_action_over_udp_and_tcp_with_and_without_edns() {
    use hickory_proto::rr::RData;
    let feed = "evil.example.test\tc-nx\tf\nwww.example.test\tc-nodata\tf\n\
                chain1.example.test\tc-refused\tf\nchain2.example.test\tc-sink\tf\n\
                alias.example.test\tc-drop\tf\nnotevil.example.test\tc-log\tf\n";
    let (setup, _auth, server) = crate::forward::forwarder(
        &[("partner-feed.tsv", feed)],
        &format!(
            "[blocklist]\npolicy_ttl = 120\nede_names_feed = false\n\
         sinkhole_ipv4 = \"127.0.0.1\"\nsinkhole_ipv6 = \"::1\"\n\
         [actions]\nc-nx = \"nxdomain\"\nc-nodata = \"nodata\"\nc-refused = \"refused\"\n\
         c-sink = \"sinkhole\"\nc-drop = \"drop\"\nc-log = \"log\"\n{}",
            crate::harness::EVERY_QUERY_RECORDED
        ),
    );
    let soa_of = |r: &hickory_proto::op::Message| {
        r.authorities.iter().find_map(|x| match &x.data {
            RData::SOA(soa) => Some((x.name.to_ascii(), x.ttl, soa.minimum)),
            _ => None,
        })
    };
    let wait = std::time::Duration::from_millis(1500);
    for transport in [Transport::Udp, Transport::Tcp] {
        for edns in [true, false] {
            let case = format!("{transport:?} edns={edns}");
            let get = |name: &str| {
                reply_within(server.addr, name, transport, edns, wait)
                    .unwrap_or_else(|| panic!("{name} {case}: no reply"))
            };
            let blocked_ede = |r: &hickory_proto::op::Message, category: &str| {
                if edns {
                    let (code, text) = ede(r).unwrap_or_else(|| panic!("EDE {case}: {r}"));
                    assert_eq!(code, 15);
                    assert!(text.contains(category), "{text}");
                    assert!(!text.contains("partner-feed"), "feed name left out: {text}");
                } else {
                    assert!(r.edns.is_none(), "{case}: {r}");
                }
            };

            let r = get("evil.example.test.");
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{case}");
            assert!(r.answers.is_empty());
            assert_eq!(
                soa_of(&r),
                Some(("evil.example.test.".into(), 120, 120)),
                "{case}"
            );
            blocked_ede(&r, "c-nx");

            let r = get("www.example.test.");
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{case}");
            assert!(r.answers.is_empty(), "{case}: {r}");
            assert_eq!(
                soa_of(&r),
                Some(("www.example.test.".into(), 120, 120)),
                "{case}"
            );
            blocked_ede(&r, "c-nodata");

            let r = get("chain1.example.test.");
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{case}");
            assert!(r.answers.is_empty() && soa_of(&r).is_none(), "{case}: {r}");
            blocked_ede(&r, "c-refused");

            let r = get("chain2.example.test.");
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{case}");
            assert_eq!(a_records(&r), ["127.0.0.1"], "{case}");
            assert_eq!(r.answers[0].ttl, 120, "{case}");
            blocked_ede(&r, "c-sink");

            assert!(
                reply_within(server.addr, "alias.example.test.", transport, edns, wait).is_none(),
                "drop sends nothing ({case})"
            );

            let r = get("notevil.example.test.");
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{case}");
            assert_eq!(
                a_records(&r),
                ["192.0.2.69"],
                "monitor mode answers ({case})"
            );
            assert!(ede(&r).is_none(), "no EDE in monitor mode ({case})");
        }
    }
    // The sinkhole answers AAAA with the IPv6 address and other types
    // with NODATA and the policy SOA.
    let r = query(
        server.addr,
        "chain2.example.test.",
        RecordType::AAAA,
        Transport::Udp,
        true,
    );
    assert_eq!(a_records(&r), ["::1"]);
    let r = query(
        server.addr,
        "chain2.example.test.",
        RecordType::TXT,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(soa_of(&r), Some(("chain2.example.test.".into(), 120, 120)));
    // Every one of them is in the hit log with its action.
    let config = setup.path("portcullis.toml");
    let logs = || hit_records(&config);
    wait_for("26 records", std::time::Duration::from_secs(10), || {
        logs().len() >= 26
    });
    let records = logs();
    for action in ["nxdomain", "nodata", "refused", "sinkhole", "drop", "log"] {
        let n = records.iter().filter(|h| h["action"] == action).count();
        let want = if action == "sinkhole" { 6 } else { 4 };
        assert_eq!(n, want, "{action}: {records:?}");
    }
}
