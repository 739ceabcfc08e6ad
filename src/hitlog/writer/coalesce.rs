//! Coalescing repeated and flooding hits into counted records.
//!
//! Beaconing malware asks for the same blocked name every few seconds, and
//! a client that sends random names under one blocked domain (a
//! random-subdomain flood) would get a record per query: 191 MB of hit log
//! in 15 s on loopback. Hits are alike when they share organisation,
//! client, listed name, stage, feed, category and action; they form a run
//! for a window (`coalesce_window_s`, from the first hit of the run). In a
//! window each distinct query of the run (query name, type and transport)
//! is written as a record of its own the first time, up to
//! `coalesce_after` of them, so ordinary traffic keeps its evidence; an
//! exact repeat of a query
//! already written, and every hit past that limit, is folded into one
//! record that stands for all of them: the first folded hit's fields and
//! time, `repeats` = how many, `last_ts` = the last one's time. That record
//! is written when its window ends (or at shutdown), so it can be up to one
//! window late, and a crash loses the count of an unfinished window (never
//! a record already written).
//!
//! Runs are keyed by a 128-bit keyed hash of their fields, so a key costs
//! no allocation. A run takes about 100 bytes in the table and its queue,
//! about 200 more with a folded record, and 8 bytes for each distinct
//! query it wrote past two (`coalesce_after` is at most 100). [`MAX_KEYS`]
//! bounds the runs. Runs on the writer thread: the query path pays nothing
//! for it.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use crate::hitlog::{AsHitRef, HitRef, PackedHit};

/// Runs tracked at once (40 MiB with a folded record each; a flood from
/// as many clients, each past 20 distinct names, about 80 MiB). Past this, a hit with a
/// key not yet tracked is written as it is: memory stays bounded whatever
/// the number of clients, and nothing is lost (it is only not folded).
pub const MAX_KEYS: usize = 131_072;

/// What the coalescer needs from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Distinct queries of a run written one record each in a window;
    /// 0 = never coalesce.
    pub after: u64,
    /// The window's length, ms.
    pub window_ms: i64,
}

/// One run of like hits.
struct Run {
    /// When the run's window started (the first hit's time), ms.
    start: i64,
    /// The distinct queries written in this window, by hash of name, type
    /// and transport (at most `after`).
    written: SmallVec<[u64; 2]>,
    /// The record the folded hits go into; its `repeats` and `last_ts`
    /// count them.
    folded: Option<Box<PackedHit>>,
}

impl Run {
    fn new(start: i64, query: u64) -> Run {
        let mut written = SmallVec::new();
        written.push(query);
        Run {
            start,
            written,
            folded: None,
        }
    }
}

/// The keyed hashers: two for a run's 128-bit key, the first also for a
/// query. Keys are random per process, so a client cannot choose names
/// that collide with another run.
struct Hashers([RandomState; 2]);

impl Hashers {
    fn new() -> Hashers {
        Hashers([RandomState::new(), RandomState::new()])
    }

    /// The run's key, from what makes hits alike (every field but the
    /// time, the query name and type, and the transport), and the query's
    /// hash, from the run's fields and the query name, type and transport.
    fn keys(&self, h: &HitRef<'_>) -> (u128, u64) {
        let fields = (
            h.org,
            h.client,
            h.matched,
            h.stage.as_str(),
            h.feed,
            h.action,
            h.category,
        );
        let [a, b] = &self.0;
        let mut first = a.build_hasher();
        fields.hash(&mut first);
        let mut query = first.clone();
        h.qname.hash(&mut query);
        h.qtype.hash(&mut query);
        h.transport.hash(&mut query);
        let key = (u128::from(first.finish()) << 64) | u128::from(b.hash_one(fields));
        (key, query.finish())
    }
}

pub struct Coalescer {
    settings: Settings,
    runs: HashMap<u128, Run, FxBuildHasher>,
    /// When each run's window ends, soonest first: (end, key). Ordered by
    /// the end, not by arrival, so a clock stepped back delays no other
    /// run. An entry whose run has since started again is stale and
    /// skipped.
    due: BinaryHeap<Reverse<(i64, u128)>>,
    hashers: Hashers,
}

/// The outcome of one call: hits folded into another record (no record
/// of their own) in this call.
pub type Folded = u64;

impl Coalescer {
    pub fn new(settings: Settings) -> Coalescer {
        Coalescer {
            settings,
            runs: HashMap::default(),
            due: BinaryHeap::new(),
            hashers: Hashers::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.after > 0 && self.settings.window_ms > 0
    }

    // The boxes are the channel's: unboxing would copy every record.
    #[allow(clippy::vec_box)]
    /// Keep in `batch` the records to write, fold the rest, and add the
    /// folded records whose window has ended by `now` (ms).
    pub fn fold(&mut self, batch: &mut Vec<Box<PackedHit>>, now: i64) -> Folded {
        if !self.enabled() {
            return 0;
        }
        let mut folded = 0;
        let mut out = Vec::with_capacity(batch.len());
        for hit in batch.drain(..) {
            folded += self.take(hit, &mut out);
        }
        self.finish_due(now, &mut out);
        *batch = out;
        folded
    }

    /// Every folded record, window ended or not (at shutdown).
    #[allow(clippy::vec_box)]
    pub fn finish_all(&mut self, out: &mut Vec<Box<PackedHit>>) {
        self.finish_due(i64::MAX, out);
    }

    /// Runs tracked now.
    pub fn tracked(&self) -> usize {
        self.runs.len()
    }

    #[allow(clippy::vec_box)]
    fn take(&mut self, hit: Box<PackedHit>, out: &mut Vec<Box<PackedHit>>) -> Folded {
        let ts = hit.ts();
        let (key, query) = self.hashers.keys(&hit.as_hit_ref());
        let window = self.settings.window_ms;
        let Some(run) = self.runs.get_mut(&key) else {
            if self.runs.len() < MAX_KEYS {
                self.runs.insert(key, Run::new(ts, query));
                self.due.push(Reverse((ts.saturating_add(window), key)));
            }
            out.push(hit);
            return 0;
        };
        if ts >= run.start.saturating_add(window) {
            // A new window: the old one's folded record goes first.
            out.extend(run.folded.take());
            *run = Run::new(ts, query);
            self.due.push(Reverse((ts.saturating_add(window), key)));
            out.push(hit);
            return 0;
        }
        let repeat = run.written.contains(&query);
        if !repeat && (run.written.len() as u64) < self.settings.after {
            run.written.push(query);
            out.push(hit);
            return 0;
        }
        match &mut run.folded {
            None => {
                let mut record = hit;
                record.coalesce(1, ts);
                run.folded = Some(record);
                0
            }
            Some(record) => {
                record.fold_one(ts);
                1
            }
        }
    }

    #[allow(clippy::vec_box)]
    fn finish_due(&mut self, now: i64, out: &mut Vec<Box<PackedHit>>) {
        let window = self.settings.window_ms;
        while let Some(&Reverse((end, key))) = self.due.peek() {
            if now < end {
                break;
            }
            self.due.pop();
            let ended = self
                .runs
                .get(&key)
                .is_some_and(|run| now >= run.start.saturating_add(window));
            if ended && let Some(mut run) = self.runs.remove(&key) {
                out.extend(run.folded.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::Hit;

    fn hit(ts: i64, client: &str, qname: &str) -> Box<PackedHit> {
        let h = Hit {
            ts,
            client: client.parse().unwrap(),
            qname: qname.into(),
            ..crate::hitlog::writer::tests::hit(0)
        };
        Box::new(PackedHit::pack(&h.as_hit_ref()))
    }

    fn summary(batch: &[Box<PackedHit>]) -> Vec<(String, String, u64, Option<i64>)> {
        batch
            .iter()
            .map(|p| {
                let h = p.as_hit_ref();
                (
                    h.client.to_string(),
                    h.qname.to_owned(),
                    h.repeats,
                    h.last_ts,
                )
            })
            .collect()
    }

    const SETTINGS: Settings = Settings {
        after: 3,
        window_ms: 60_000,
    };

    #[test]
    fn a_flood_from_one_client_becomes_a_few_records_and_one_counted_one() {
        let mut c = Coalescer::new(SETTINGS);
        let mut batch: Vec<_> = (0..1_000)
            .map(|i| hit(i * 10, "10.0.0.1", &format!("r{i}.evil.example")))
            .collect();
        // Another client's hits in the same batch are their own run.
        batch.push(hit(5, "10.0.0.2", "x.evil.example"));
        let folded = c.fold(&mut batch, 10_000);
        assert_eq!(folded, 1_000 - 3 - 1);
        let got = summary(&batch);
        assert_eq!(got.len(), 4, "three as they are, and the other client's");
        assert!(got.iter().all(|(_, _, n, _)| *n == 1));
        assert_eq!(got[3].0, "10.0.0.2");
        // The window ends: the folded record stands for the other 997,
        // named by the first of them, with the last one's time.
        let mut later = Vec::new();
        assert_eq!(c.fold(&mut later, 60_010), 0);
        assert_eq!(
            summary(&later),
            [(
                "10.0.0.1".to_owned(),
                "r3.evil.example".to_owned(),
                997,
                Some(9_990)
            )]
        );
        assert_eq!(later[0].ts(), 30);
        // Every query is counted once: 4 + 997 + the other client's 1.
        let queries: u64 = batch
            .iter()
            .chain(&later)
            .map(|p| p.as_hit_ref().repeats)
            .sum();
        assert_eq!(queries, 1_001);
        assert_eq!(c.tracked(), 0, "ended runs are forgotten");
    }

    fn with_type(mut h: Box<PackedHit>, qtype: &str) -> Box<PackedHit> {
        let mut hit = h.unpack();
        hit.qtype = qtype.into();
        h = Box::new(PackedHit::pack(&hit.as_hit_ref()));
        h
    }

    #[test]
    fn each_distinct_query_keeps_a_record_of_its_own() {
        let mut c = Coalescer::new(SETTINGS);
        // A browser asks A and AAAA, then another name under the same
        // listed domain, each minute: never folded.
        for minute in 0..5 {
            let t = minute * 60_000;
            let mut batch = vec![
                hit(t, "10.0.0.1", "x.evil.example"),
                with_type(hit(t + 1, "10.0.0.1", "x.evil.example"), "AAAA"),
                hit(t + 2, "10.0.0.1", "y.evil.example"),
            ];
            assert_eq!(c.fold(&mut batch, t + 5), 0);
            assert_eq!(batch.len(), 3);
        }
    }

    #[test]
    fn an_exact_repeat_is_folded_from_the_first_repeat() {
        let mut c = Coalescer::new(SETTINGS);
        // Malware beaconing every 5 s for a minute, and a second query.
        let mut batch: Vec<_> = (0..12)
            .map(|i| hit(i * 5_000, "10.0.0.1", "c2.evil.example"))
            .collect();
        batch.push(hit(56_000, "10.0.0.1", "other.evil.example"));
        assert_eq!(c.fold(&mut batch, 57_000), 10);
        let got = summary(&batch);
        assert_eq!(got.len(), 2, "the first beacon and the other query");
        assert_eq!((got[0].1.as_str(), got[0].2), ("c2.evil.example", 1));
        assert_eq!(got[1].1, "other.evil.example");
        let mut later = Vec::new();
        assert_eq!(c.fold(&mut later, 60_000), 0);
        assert_eq!(
            summary(&later),
            [(
                "10.0.0.1".to_owned(),
                "c2.evil.example".to_owned(),
                11,
                Some(55_000)
            )]
        );
        assert_eq!(later[0].ts(), 5_000, "the first repeat's time");
        // The next window starts again with a record of its own.
        let mut next = vec![hit(61_000, "10.0.0.1", "c2.evil.example")];
        assert_eq!(c.fold(&mut next, 61_000), 0);
        assert_eq!(summary(&next)[0].2, 1);
    }

    #[test]
    fn a_new_window_writes_the_old_ones_record_first() {
        let mut c = Coalescer::new(SETTINGS);
        let mut batch: Vec<_> = (0..6)
            .map(|i| hit(i, "10.0.0.1", &format!("a{i}.evil.example")))
            .collect();
        // The next hit falls in the next window, before the clock says so.
        batch.push(hit(60_000, "10.0.0.1", "b.evil.example"));
        c.fold(&mut batch, 1_000);
        let got = summary(&batch);
        assert_eq!(got.len(), 5);
        assert_eq!(got[3].1, "a3.evil.example");
        assert_eq!((got[3].2, got[3].3), (3, Some(5)));
        assert_eq!((got[4].1.as_str(), got[4].2), ("b.evil.example", 1));
    }

    #[test]
    fn shutdown_writes_unfinished_runs_and_off_folds_nothing() {
        let mut c = Coalescer::new(SETTINGS);
        let mut batch: Vec<_> = (0..10).map(|i| hit(i, "10.0.0.1", "x.example")).collect();
        assert_eq!(c.fold(&mut batch, 20), 8);
        assert_eq!(batch.len(), 1);
        let mut rest = Vec::new();
        c.finish_all(&mut rest);
        assert_eq!(summary(&rest)[0].2, 9);
        let mut off = Coalescer::new(Settings {
            after: 0,
            window_ms: 60_000,
        });
        let mut batch: Vec<_> = (0..10).map(|i| hit(i, "10.0.0.1", "x.example")).collect();
        assert_eq!(off.fold(&mut batch, 20), 0);
        assert_eq!(batch.len(), 10);
    }

    #[test]
    fn a_clock_stepped_back_delays_no_other_run() {
        let mut c = Coalescer::new(SETTINGS);
        // One run starts at 100 s, then the clock steps back to 10 s.
        let mut batch = vec![
            hit(100_000, "10.0.0.1", "x.example"),
            hit(100_001, "10.0.0.1", "x.example"),
            hit(10_000, "10.0.0.2", "y.example"),
            hit(10_001, "10.0.0.2", "y.example"),
        ];
        assert_eq!(c.fold(&mut batch, 10_002), 0);
        // The second run's window ends at 70 s: its record comes then,
        // not after the first run's end at 160 s.
        let mut later = Vec::new();
        c.fold(&mut later, 70_000);
        assert_eq!(
            summary(&later),
            [(
                "10.0.0.2".to_owned(),
                "y.example".to_owned(),
                1,
                Some(10_001)
            )]
        );
        assert_eq!(c.tracked(), 1);
    }

    #[test]
    fn past_the_key_limit_hits_are_written_as_they_are() {
        let mut c = Coalescer::new(SETTINGS);
        let mut batch: Vec<_> = (0..MAX_KEYS as u32 + 10)
            .map(|i| {
                let client = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
                hit(1, &client, "x.example")
            })
            .collect();
        c.fold(&mut batch, 2);
        assert_eq!(c.tracked(), MAX_KEYS);
        // An untracked client floods: nothing folds, nothing is lost.
        let mut flood: Vec<_> = (0..20)
            .map(|i| hit(3 + i, "192.0.2.1", "y.example"))
            .collect();
        assert_eq!(c.fold(&mut flood, 30), 0);
        assert_eq!(flood.len(), 20);
    }
}
