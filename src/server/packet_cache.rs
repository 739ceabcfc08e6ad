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

/// The cache: `capacity` responses over `SHARDS` shards.
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
mod tests;
