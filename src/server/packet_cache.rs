//! Whole UDP responses for clean names, answered without decoding.
//!
//! A repeated question for a name no blocklist entry touched gets the
//! bytes the handler sent last time, with the client's ID, the client's
//! spelling of the name (0x20 case is preserved) and every TTL lowered by
//! the time the response has been held. That is PowerDNS Recursor's
//! packet cache, and it is what keeps a cache hit at a few hundred
//! nanoseconds instead of a full decode, resolver lookup and encode.
//!
//! What may be held, and for how long:
//! - only answers the handler marked clean: the upstream's answer, with
//!   no entry matching the query name, a CNAME target or an address (so no
//!   organisation's exception, action or hit record can depend on it);
//! - never a truncated response, a SERVFAIL or one without records;
//! - until the lowest TTL in it runs out, and only while the blocklist
//!   generation it was answered under is still the one in force (a reload
//!   empties it in effect);
//! - keyed by everything the response depends on: the lower-cased
//!   question, the RD/AD/CD flags, whether EDNS was used, its DO bit and
//!   the payload size offered. A query with EDNS options (cookies, client
//!   subnet) or anything unusual takes the full path.
//!
//! Shards of a plain mutex: a lookup holds one for a hash probe and a copy
//! of a few hundred bytes; nothing else (no reload, no log write) ever
//! takes them. Each shard evicts in insertion order when full.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxBuildHasher;

use super::question::OPT;
pub use super::question::{MAX_UDP_PAYLOAD, Question};

const SHARDS: usize = 64;

/// One held response. The key, the response and its TTL offsets share
/// one allocation, and the map holds the entry itself, so a hit touches
/// two places in memory (the map's bucket and the bytes) rather than five:
/// with a few hundred thousand names held, each is a likely cache miss.
struct Entry {
    /// The key, then the response, then the offsets of its TTL fields
    /// (two bytes each, native order; the OPT's is not a TTL).
    data: Box<[u8]>,
    key_len: u16,
    wire_len: u16,
    stored: Instant,
    expires: Instant,
    generation: u64,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }

    fn wire(&self) -> &[u8] {
        let start = usize::from(self.key_len);
        &self.data[start..start + usize::from(self.wire_len)]
    }

    fn ttls(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[usize::from(self.key_len) + usize::from(self.wire_len)..]
            .chunks_exact(2)
            .map(|at| usize::from(u16::from_ne_bytes([at[0], at[1]])))
    }
}

#[derive(Default)]
struct Shard {
    /// Key hash -> entry; a colliding key replaces the entry.
    entries: HashMap<u64, Entry, FxBuildHasher>,
    /// The hashes in `entries`, oldest first: once full, the oldest goes.
    order: VecDeque<u64>,
}

/// The cache: `capacity` responses over [`SHARDS`] shards.
pub struct PacketCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl PacketCache {
    /// `None` for a capacity of 0 (off).
    pub fn new(capacity: usize) -> Option<PacketCache> {
        if capacity == 0 {
            return None;
        }
        Some(PacketCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        })
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(hash >> 58) as usize % SHARDS];
        shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write the held response to `question` (from `packet`) into `out`,
    /// as of `now`; its length, or `None` on a miss.
    pub fn answer(
        &self,
        question: &Question,
        packet: &[u8],
        generation: u64,
        now: Instant,
        out: &mut [u8],
    ) -> Option<usize> {
        let key = question.key();
        let hash = hash(key);
        let shard = self.shard(hash);
        let entry = shard.entries.get(&hash)?;
        let wire = entry.wire();
        if entry.key() != key
            || entry.generation != generation
            || entry.expires <= now
            || wire.len() > question.limit.min(out.len())
        {
            return None;
        }
        let len = wire.len();
        out[..len].copy_from_slice(wire);
        out[..2].copy_from_slice(&packet[..2]);
        let name = question.name();
        out[name.clone()].copy_from_slice(&packet[name]);
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        for at in entry.ttls() {
            let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        Some(len)
    }

    /// Hold `wire`, the response just sent to `packet`, if it may be held
    /// (see the module notes).
    pub fn insert(&self, packet: &[u8], wire: &[u8], generation: u64, now: Instant) {
        let Some(question) = Question::parse(packet) else {
            return;
        };
        if wire.len() > question.limit {
            return;
        }
        let Some((ttls, lowest)) = ttl_fields(wire) else {
            return;
        };
        if lowest == 0 {
            return;
        }
        let key = question.key();
        let (Ok(key_len), Ok(wire_len)) = (u16::try_from(key.len()), u16::try_from(wire.len()))
        else {
            return;
        };
        let mut data = Vec::with_capacity(key.len() + wire.len() + 2 * ttls.len());
        data.extend_from_slice(key);
        data.extend_from_slice(wire);
        for at in &ttls {
            data.extend_from_slice(&at.to_ne_bytes());
        }
        let hash = hash(key);
        let entry = Entry {
            data: data.into(),
            key_len,
            wire_len,
            stored: now,
            expires: now + std::time::Duration::from_secs(u64::from(lowest)),
            generation,
        };
        let mut shard = self.shard(hash);
        let shard = &mut *shard;
        if let Some(held) = shard.entries.get_mut(&hash) {
            *held = entry;
            return;
        }
        if shard.entries.len() >= self.per_shard
            && let Some(oldest) = shard.order.pop_front()
        {
            shard.entries.remove(&oldest);
        }
        shard.entries.insert(hash, entry);
        shard.order.push_back(hash);
    }
}

fn hash(key: &[u8]) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    h.write(key);
    h.finish()
}

/// The offsets of a response's TTL fields and the lowest TTL, or `None`
/// when it is not one to hold: truncated, SERVFAIL, no records, more than
/// 32 records, or not well formed.
fn ttl_fields(wire: &[u8]) -> Option<(Vec<u16>, u32)> {
    let header = wire.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let rcode = flags & 0x000F;
    // TC set, or an rcode other than NOERROR and NXDOMAIN.
    if flags & 0x0200 != 0 || !(rcode == 0 || rcode == 3) {
        return None;
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let mut pos = 12;
    for _ in 0..count(4) {
        pos = skip_name(wire, pos)? + 4;
    }
    let mut ttls = Vec::new();
    let mut lowest = u32::MAX;
    for _ in 0..count(6) + count(8) + count(10) {
        pos = skip_name(wire, pos)?;
        let fixed = wire.get(pos..pos + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if rtype != OPT {
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            lowest = lowest.min(ttl);
            ttls.push(u16::try_from(pos + 4).ok()?);
        }
        pos += 10 + rdlen;
    }
    if pos != wire.len() || ttls.is_empty() || ttls.len() > 32 {
        return None;
    }
    Some((ttls, lowest))
}

/// The offset after the name at `pos` (labels, maybe ending in a pointer).
fn skip_name(wire: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = usize::from(*wire.get(pos)?);
        match len & 0xC0 {
            0 if len == 0 => return Some(pos + 1),
            0 => pos += 1 + len,
            0xC0 => return wire.get(pos + 1).map(|_| pos + 2),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
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
}
