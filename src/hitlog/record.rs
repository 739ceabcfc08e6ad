//! The forms a hit record takes on its way to the store: borrowed
//! ([`HitRef`]) on the query path, and packed into one allocation
//! ([`PackedHit`]) in the channel to the writer.

use std::net::IpAddr;

use super::{Hit, Stage, Transport};

/// A hit record with every field borrowed: what the query path hands
/// over (nothing is copied unless the hit log is on), and what the store
/// writes, from a [`Hit`] or straight from a [`PackedHit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitRef<'a> {
    pub ts: i64,
    pub org: Option<&'a str>,
    pub client: IpAddr,
    pub transport: Transport,
    pub qname: &'a str,
    pub qtype: &'a str,
    pub stage: Stage,
    pub matched: &'a str,
    pub feed: &'a str,
    pub category: &'a str,
    pub indicator: Option<&'a str>,
    pub action: &'a str,
    /// Queries this record stands for: 1, or more for a record the
    /// writer coalesced from a flood (see `writer::coalesce`).
    pub repeats: u64,
    /// For a coalesced record, the time of the last query it counts.
    pub last_ts: Option<i64>,
}

/// Anything that holds a hit record.
pub trait AsHitRef {
    fn as_hit_ref(&self) -> HitRef<'_>;
}

impl AsHitRef for Hit {
    fn as_hit_ref(&self) -> HitRef<'_> {
        HitRef {
            ts: self.ts,
            org: self.org.as_deref(),
            client: self.client,
            transport: self.transport,
            qname: &self.qname,
            qtype: &self.qtype,
            stage: self.stage,
            matched: &self.matched,
            feed: &self.feed,
            category: &self.category,
            indicator: self.indicator.as_deref(),
            action: &self.action,
            repeats: self.repeats,
            last_ts: self.last_ts,
        }
    }
}

impl<T: AsHitRef> AsHitRef for Box<T> {
    fn as_hit_ref(&self) -> HitRef<'_> {
        (**self).as_hit_ref()
    }
}

/// A hit on its way to the writer: the text fields one after another in
/// one string. Why: every allocation the query path makes is freed on the
/// writer thread, and glibc makes such a cross-thread free (and the next
/// allocation on the query path) several times dearer than a local one;
/// a [`Hit`] has up to eight strings, this has one. The writer binds the
/// fields straight from it: unpacking each record into a [`Hit`] first
/// was a fifth of the writer's time (allocations, and copies of strings
/// no longer in the cache by the time SQLite read them).
#[derive(Debug)]
pub struct PackedHit {
    ts: i64,
    client: IpAddr,
    transport: Transport,
    stage: Stage,
    has_org: bool,
    has_indicator: bool,
    repeats: u64,
    last_ts: Option<i64>,
    /// Where each text field ends in `text`, in [`PackedHit::pack`]'s order.
    ends: [u32; 8],
    text: String,
}

impl PackedHit {
    pub fn pack(hit: &HitRef<'_>) -> PackedHit {
        let fields = [
            hit.org.unwrap_or(""),
            hit.qname,
            hit.qtype,
            hit.matched,
            hit.feed,
            hit.category,
            hit.indicator.unwrap_or(""),
            hit.action,
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; 8];
        for (end, field) in ends.iter_mut().zip(fields) {
            text.push_str(field);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        PackedHit {
            ts: hit.ts,
            client: hit.client,
            transport: hit.transport,
            stage: hit.stage,
            has_org: hit.org.is_some(),
            has_indicator: hit.indicator.is_some(),
            repeats: hit.repeats,
            last_ts: hit.last_ts,
            ends,
            text,
        }
    }

    /// Make this record stand for `repeats` queries, the last at `last_ts`.
    pub fn coalesce(&mut self, repeats: u64, last_ts: i64) {
        self.repeats = repeats;
        self.last_ts = Some(last_ts);
    }

    /// Count one more query in this coalesced record, at `ts`.
    pub fn fold_one(&mut self, ts: i64) {
        self.repeats += 1;
        self.last_ts = Some(self.last_ts.map_or(ts, |last| last.max(ts)));
    }

    pub fn ts(&self) -> i64 {
        self.ts
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// The record as a [`Hit`] (for the JSON-lines stream).
    pub fn unpack(&self) -> Hit {
        let h = self.as_hit_ref();
        Hit {
            id: None,
            ts: h.ts,
            org: h.org.map(str::to_owned),
            client: h.client,
            transport: h.transport,
            qname: h.qname.to_owned(),
            qtype: h.qtype.to_owned(),
            stage: h.stage,
            matched: h.matched.to_owned(),
            feed: h.feed.to_owned(),
            category: h.category.to_owned(),
            indicator: h.indicator.map(str::to_owned),
            action: h.action.to_owned(),
            repeats: h.repeats,
            last_ts: h.last_ts,
            node: None,
        }
    }
}

impl AsHitRef for PackedHit {
    fn as_hit_ref(&self) -> HitRef<'_> {
        HitRef {
            ts: self.ts,
            org: self.has_org.then(|| self.field(0)),
            client: self.client,
            transport: self.transport,
            qname: self.field(1),
            qtype: self.field(2),
            stage: self.stage,
            matched: self.field(3),
            feed: self.field(4),
            category: self.field(5),
            indicator: self.has_indicator.then(|| self.field(6)),
            action: self.field(7),
            repeats: self.repeats,
            last_ts: self.last_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_hit_reads_and_unpacks_as_the_same_record() {
        let full = Hit {
            id: None,
            ts: 1_795_000_000_123,
            org: Some("council-a".into()),
            client: "2001:db8::1".parse().unwrap(),
            transport: Transport::Tcp,
            qname: "x.évil.example".into(),
            qtype: "AAAA".into(),
            stage: Stage::Cname,
            matched: "évil.example".into(),
            feed: "stix.json".into(),
            category: "c2".into(),
            indicator: Some("indicator--1234".into()),
            action: "sinkhole".into(),
            repeats: 1,
            last_ts: None,
            node: None,
        };
        // No organisation and no indicator are not the same as empty ones.
        let bare = Hit {
            org: None,
            indicator: None,
            feed: String::new(),
            ..full.clone()
        };
        let empty = Hit {
            org: Some(String::new()),
            indicator: Some(String::new()),
            ..bare.clone()
        };
        let coalesced = Hit {
            repeats: 4_000,
            last_ts: Some(1_795_000_059_000),
            ..bare.clone()
        };
        for hit in [full, bare, empty, coalesced] {
            let packed = PackedHit::pack(&hit.as_hit_ref());
            assert_eq!(packed.as_hit_ref(), hit.as_hit_ref());
            assert_eq!(packed.unpack(), hit);
        }
    }
}
