//! The packet cache gives back exactly what it was given for a question:
//! any response bytes held for a query come back byte for byte (same
//! query, no time passed), never for another blocklist generation, and
//! nothing panics on any bytes. A cache of its own per input: a response
//! the cache declines to hold (TTL 0, truncated) leaves an earlier one for
//! the same question in place, as it should, which a shared cache would
//! report as a mismatch.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use portcullis::server::packet_cache::PacketCache;
use portcullis::server::question::Question;

fuzz_target!(|data: &[u8]| {
    let cache = PacketCache::new(16).expect("a cache");
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (query, records) = rest.split_at(at);
    let Some(question) = Question::parse(query) else {
        return;
    };
    // A response to it: the query with QR set, and records after it.
    let mut wire = query.to_vec();
    wire[2] |= 0x80;
    if let Some((&count, records)) = records.split_first() {
        wire[6..8].copy_from_slice(&u16::from(count % 4).to_be_bytes());
        wire.extend_from_slice(records);
    }
    let now = Instant::now();
    cache.insert(query, &wire, 7, now);
    let mut out = [0u8; 1232];
    if let Some(n) = cache.answer(&question, query, 7, now, &mut out) {
        assert_eq!(&out[..n], &wire[..]);
    }
    assert!(cache.answer(&question, query, 8, now, &mut out).is_none());
});
