//! The limits' tables, rates and caps, and the answers they write.

use super::*;

fn config(text: &str) -> crate::config::Config {
    crate::config::Config::from_str(text, std::path::Path::new("/tmp/p.toml")).unwrap()
}

fn limits(text: &str) -> Limits {
    let config = config(text);
    Limits::new(&config.limits, &config.organisations)
}

fn query(name: &str) -> Vec<u8> {
    let mut msg = hickory_proto::op::Message::query();
    msg.metadata.id = 7;
    msg.metadata.recursion_desired = true;
    msg.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name).unwrap(),
        hickory_proto::rr::RecordType::A,
    ));
    msg.to_vec().unwrap()
}

#[test]
fn a_bucket_gives_its_burst_then_its_rate() {
    let buckets = Buckets::new(16);
    let rate = Rate {
        per_second: 1000,
        burst: 5,
    };
    let taken = (0..20).filter(|_| buckets.take(42, rate)).count();
    assert!((5..=7).contains(&taken), "{taken}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    // 20 ms at 1000/s refills the 5 it can hold.
    assert!((0..5).all(|_| buckets.take(42, rate)));
}

#[test]
fn client_rate_counts_by_block_and_by_organisation() {
    let l = limits(
        "[limits]\nclient_qps = 10\nburst_factor = 1\nclient_prefix_v4 = 24\n\
         [[organisation]]\nid = \"nat\"\nnetworks = [\"198.51.100.0/24\"]\nclient_qps = 1000\n",
    );
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.200".parse().unwrap();
    let other: IpAddr = "203.0.113.1".parse().unwrap();
    let passed = (0..10)
        .filter(|_| l.query(a, None, true) == Verdict::Pass)
        .count();
    assert_eq!(passed, 10);
    // The same /24: the same bucket, now empty.
    assert_eq!(l.query(b, None, true), Verdict::Refuse);
    // Over TCP the same block has a bucket of its own.
    assert_eq!(l.query(b, None, false), Verdict::Pass);
    assert_eq!(l.query(other, None, true), Verdict::Pass);
    // The NAT organisation has its own, larger rate.
    let nat: IpAddr = "198.51.100.7".parse().unwrap();
    let passed = (0..500)
        .filter(|_| l.query(nat, Some(OrgId(0)), true) == Verdict::Pass)
        .count();
    assert_eq!(passed, 500);
}

#[test]
fn without_a_rate_nothing_is_limited() {
    let l = limits("");
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    assert!((0..100_000).all(|_| l.query(a, None, true) == Verdict::Pass));
    let wire = query("www.example.test.");
    let orgs = OrgMap::default();
    assert!((0..10_000).all(|_| l.response(a, &wire, &orgs) == Sending::Send));
}

#[test]
fn rrl_slips_one_in_slip_past_the_rate() {
    let l = limits("[limits]\nrrl_responses_per_second = 5\nburst_factor = 1\nrrl_slip = 2\n");
    let victim: IpAddr = "192.0.2.1".parse().unwrap();
    let mut response = query("www.example.test.");
    response[2] |= 0x80;
    response[7] = 1; // one answer (the count is all the kind needs)
    let orgs = OrgMap::default();
    let sent: Vec<Sending> = (0..25)
        .map(|_| l.response(victim, &response, &orgs))
        .collect();
    let count = |s| sent.iter().filter(|x| **x == s).count();
    assert!((5..=6).contains(&count(Sending::Send)), "{sent:?}");
    let limited = 25 - count(Sending::Send);
    assert_eq!(count(Sending::Slip), limited.div_ceil(2), "{sent:?}");
    // Another name is another response: its own budget.
    let mut other = query("mail.example.test.");
    other[2] |= 0x80;
    other[7] = 1;
    assert_eq!(l.response(victim, &other, &orgs), Sending::Send);
}

#[test]
fn a_zone_at_its_cap_leaves_other_zones_and_clients_alone() {
    let l = limits(
        "[limits]\nmax_upstream_queries = 100\nmax_upstream_per_client = 50\n\
         max_upstream_per_zone = 3\n",
    );
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let name = |n: &str| Name::from_ascii(n.to_ascii_lowercase()).unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| l.wait_upstream(a, None, &name(&format!("r{i}.victim.test"))))
        .collect();
    assert!(held.iter().all(Result::is_ok));
    assert_eq!(
        l.wait_upstream(a, None, &name("R9.VICTIM.test")).err(),
        Some(Cap::Zone)
    );
    assert!(l.wait_upstream(a, None, &name("www.other.test")).is_ok());
    drop(held);
    assert!(l.wait_upstream(a, None, &name("r9.victim.test")).is_ok());
    // The per-client cap.
    let mine: Vec<_> = (0..50)
        .map(|i| l.wait_upstream(a, None, &name(&format!("n.z{i}.test"))))
        .collect();
    assert!(mine.iter().all(Result::is_ok));
    assert_eq!(
        l.wait_upstream(a, None, &name("n.z99.test")).err(),
        Some(Cap::Client)
    );
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    assert!(l.wait_upstream(b, None, &name("n.z99.test")).is_ok());
}

#[test]
fn limited_and_slipped_answers_keep_the_id_and_question() {
    let q = query("www.example.test.");
    let mut out = [0u8; 512];
    for truncate in [false, true] {
        let n = write_limited(&mut out, &q, truncate);
        let reply = hickory_proto::op::Message::from_vec(&out[..n]).unwrap();
        assert_eq!(reply.metadata.id, 7);
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(reply.metadata.truncation, truncate);
        assert_eq!(
            reply.metadata.response_code,
            if truncate {
                hickory_proto::op::ResponseCode::NoError
            } else {
                hickory_proto::op::ResponseCode::Refused
            }
        );
    }
    let mut response = q.clone();
    response[2] |= 0x80;
    response.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    response[7] = 1;
    let n = slip(&mut response);
    let reply = hickory_proto::op::Message::from_vec(&response[..n]).unwrap();
    assert!(reply.metadata.truncation && reply.answers.is_empty());
    assert_eq!(reply.queries.len(), 1);
    // Garbage after the header: header only, no question claimed.
    let mut out = [0u8; 64];
    let n = write_limited(
        &mut out,
        &[0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 200],
        false,
    );
    assert_eq!(n, 12);
    assert_eq!(&out[4..6], &[0, 0]);
}
