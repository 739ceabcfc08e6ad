//! Response policy beyond the query name: CNAME targets in the answer.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{Transport, a_records, ede, query, run, wait_for};

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
        "[[feed]]\nfile = \"watch.txt\"\ncategory = \"watch\"\naction = \"log\"\n",
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
    // Three links; the watched middle one is recorded, the last one blocks.
    let r = query(
        server.addr,
        "chain1.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r}");
    assert_eq!(
        cnames(&r),
        [
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
    let logs = || {
        let (_, out, _) = run(&["logs", "--format", "json", "-c", config.to_str().unwrap()]);
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<serde_json::Value>>()
    };
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
        .filter(|h| h["qname"] == "chain1.example.test")
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
