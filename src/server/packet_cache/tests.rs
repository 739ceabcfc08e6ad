use super::*;
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::time::Duration;

fn query(name: &str, id: u16, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e);
    }
    m.to_vec().unwrap()
}

fn response(query: &[u8], ttls: &[u32], rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::from_vec(query).unwrap();
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    let name = m.queries[0].name().clone();
    for (i, ttl) in ttls.iter().enumerate() {
        let a = RData::A(A::new(192, 0, 2, i as u8));
        m.answers.push(Record::from_rdata(name.clone(), *ttl, a));
    }
    if let Some(e) = m.edns.as_mut() {
        e.set_max_payload(1232);
    }
    m.to_vec().unwrap()
}

fn decode(wire: &[u8]) -> Message {
    Message::from_vec(wire).unwrap()
}

#[test]
fn a_held_answer_comes_back_with_the_new_id_spelling_and_aged_ttls() {
    let cache = PacketCache::new(16).unwrap();
    let first = query("WWW.Example.org.", 1, true);
    let t0 = Instant::now();
    cache.insert(
        &first,
        &response(&first, &[300, 60], ResponseCode::NoError),
        7,
        t0,
    );

    let again = query("www.EXAMPLE.org.", 2, true);
    let q = Question::parse(&again).unwrap();
    let mut out = [0u8; 1232];
    let later = t0 + Duration::from_secs(10);
    let n = cache.answer(&q, &again, 7, later, &mut out).unwrap();
    let m = decode(&out[..n]);
    assert_eq!(m.metadata.id, 2);
    assert_eq!(m.queries[0].name().to_ascii(), "www.EXAMPLE.org.");
    let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
    assert_eq!(ttls, [290, 50]);
    assert_eq!(m.edns.unwrap().max_payload(), 1232);

    // Expired with its lowest TTL; gone with a new generation.
    assert!(
        cache
            .answer(&q, &again, 7, t0 + Duration::from_secs(60), &mut out)
            .is_none()
    );
    assert!(cache.answer(&q, &again, 8, later, &mut out).is_none());
}

#[test]
fn the_key_tells_apart_what_the_response_depends_on() {
    let cache = PacketCache::new(16).unwrap();
    let with_edns = query("a.example.", 1, true);
    let t0 = Instant::now();
    cache.insert(
        &with_edns,
        &response(&with_edns, &[60], ResponseCode::NoError),
        1,
        t0,
    );
    let mut out = [0u8; 1232];
    let plain = query("a.example.", 2, false);
    let q = Question::parse(&plain).unwrap();
    assert!(cache.answer(&q, &plain, 1, t0, &mut out).is_none());
    let mut no_rd = Message::from_vec(&with_edns).unwrap();
    no_rd.metadata.recursion_desired = false;
    let no_rd = no_rd.to_vec().unwrap();
    let q = Question::parse(&no_rd).unwrap();
    assert!(cache.answer(&q, &no_rd, 1, t0, &mut out).is_none());
    let other = query("b.example.", 3, true);
    let q = Question::parse(&other).unwrap();
    assert!(cache.answer(&q, &other, 1, t0, &mut out).is_none());
}

#[test]
fn what_is_never_held() {
    let cache = PacketCache::new(16).unwrap();
    let q = query("a.example.", 1, false);
    let t0 = Instant::now();
    let mut out = [0u8; 1232];
    let parsed = Question::parse(&q).unwrap();
    for wire in [
        response(&q, &[60], ResponseCode::ServFail),
        response(&q, &[], ResponseCode::NXDomain),
        response(&q, &[0], ResponseCode::NoError),
        response(&q, &[60; 40], ResponseCode::NoError)[..300].to_vec(),
    ] {
        cache.insert(&q, &wire, 1, t0);
        assert!(cache.answer(&parsed, &q, 1, t0, &mut out).is_none());
    }
    let mut truncated = response(&q, &[60], ResponseCode::NoError);
    truncated[2] |= 0x02;
    cache.insert(&q, &truncated, 1, t0);
    assert!(cache.answer(&parsed, &q, 1, t0, &mut out).is_none());

    // A negative answer with its SOA is held for the SOA's TTL.
    let mut m = Message::from_vec(&response(&q, &[], ResponseCode::NXDomain)).unwrap();
    let zone = Name::from_ascii("example.").unwrap();
    let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, 5);
    m.authorities
        .push(Record::from_rdata(zone, 30, RData::SOA(soa)));
    cache.insert(&q, &m.to_vec().unwrap(), 1, t0);
    let n = cache.answer(&parsed, &q, 1, t0, &mut out).unwrap();
    assert_eq!(
        decode(&out[..n]).metadata.response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn unusual_queries_are_left_to_the_full_path() {
    let good = query("a.example.", 1, true);
    assert!(Question::parse(&good).is_some());
    assert!(Question::parse(&good[..good.len() - 1]).is_none());
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(Question::parse(&trailing).is_none());
    let mut response = good.clone();
    response[2] |= 0x80;
    assert!(Question::parse(&response).is_none());
    let mut notify = good.clone();
    notify[2] |= 4 << 3;
    assert!(Question::parse(&notify).is_none());
    let mut m = Message::from_vec(&good).unwrap();
    let mut e = Edns::new();
    e.options_mut()
        .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
            10,
            vec![1; 8],
        ));
    m.edns = Some(e);
    assert!(Question::parse(&m.to_vec().unwrap()).is_none());
    let mut pointer = good.clone();
    pointer[12] = 0xC0;
    assert!(Question::parse(&pointer).is_none());
}

#[test]
fn a_full_shard_reuses_its_oldest_slot() {
    let cache = PacketCache::new(SHARDS).unwrap();
    assert_eq!(cache.per_shard, 1);
    let t0 = Instant::now();
    let names: Vec<String> = (0..400).map(|i| format!("n{i}.example.")).collect();
    for name in &names {
        let q = query(name, 1, false);
        cache.insert(&q, &response(&q, &[60], ResponseCode::NoError), 1, t0);
    }
    let mut out = [0u8; 1232];
    let held = names
        .iter()
        .filter(|name| {
            let q = query(name, 1, false);
            let parsed = Question::parse(&q).unwrap();
            cache.answer(&parsed, &q, 1, t0, &mut out).is_some()
        })
        .count();
    assert!(held <= SHARDS && held > SHARDS / 2, "{held} held");
    // The newest is always held; the oldest went first.
    let newest = query(names.last().unwrap(), 1, false);
    let parsed = Question::parse(&newest).unwrap();
    assert!(cache.answer(&parsed, &newest, 1, t0, &mut out).is_some());
    let total: usize = cache
        .shards
        .iter()
        .map(|s| s.lock().unwrap().order.len())
        .sum();
    assert_eq!(total, held, "the eviction order holds exactly what is held");
}
