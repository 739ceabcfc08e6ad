//! Coalescing a flood of like hits into counted records.
//!
//! A client that sends random names under one blocked domain (a
//! random-subdomain flood, or malware that beacons fast) would otherwise
//! get a record per query: 191 MB of hit log in 15 s on loopback. Hits are
//! alike when they share organisation, client, listed name, stage, feed,
//! category and action; the query name, type and transport may differ (they are what the
//! flood varies). In each window (`coalesce_window_s`, from the first hit
//! of a run of like ones) the first `coalesce_after` hits are written as
//! they are, so ordinary traffic keeps one record per query; the rest
//! are folded into one record that stands for all of them: the first
//! folded hit's fields and time, `repeats` = how many, `last_ts` = the
//! last one's time. That record is written when its window ends (or at
//! shutdown), so it can be up to one window late, and a crash loses the
//! count of an unfinished window (never a record already written).
//!
//! Runs on the writer thread: the query path pays nothing for it.

use std::collections::HashMap;

use crate::hitlog::{AsHitRef, HitRef, PackedHit};

/// Runs of like hits tracked at once. Past this, a hit with a key not
/// yet tracked is written as it is: memory stays bounded whatever the
/// number of clients, and nothing is lost (it is only not folded).
pub const MAX_KEYS: usize = 65_536;

/// What the coalescer needs from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Like hits written one record each in a window; 0 = never coalesce.
    pub after: u64,
    /// The window's length, ms.
    pub window_ms: i64,
}

/// One run of like hits.
struct Run {
    /// When the run's window started (the first hit's time), ms.
    start: i64,
    /// Hits seen in the window.
    seen: u64,
    /// The record the hits past `after` are folded into, with how many
    /// and the time of the last.
    folded: Option<(Box<PackedHit>, u64, i64)>,
}

pub struct Coalescer {
    settings: Settings,
    runs: HashMap<Box<str>, Run>,
    /// Reused to build the key of each hit without allocating.
    key: String,
}

/// The outcome of one call: hits folded into another record (no record
/// of their own) in this call.
pub type Folded = u64;

impl Coalescer {
    pub fn new(settings: Settings) -> Coalescer {
        Coalescer {
            settings,
            runs: HashMap::new(),
            key: String::new(),
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
        make_key(&mut self.key, &hit.as_hit_ref());
        let window = self.settings.window_ms;
        let Some(run) = self.runs.get_mut(self.key.as_str()) else {
            if self.runs.len() < MAX_KEYS {
                let run = Run {
                    start: ts,
                    seen: 1,
                    folded: None,
                };
                self.runs.insert(self.key.as_str().into(), run);
            }
            out.push(hit);
            return 0;
        };
        if ts >= run.start.saturating_add(window) {
            // A new window: the old one's folded record goes first.
            out.extend(finish(run));
            *run = Run {
                start: ts,
                seen: 1,
                folded: None,
            };
            out.push(hit);
            return 0;
        }
        run.seen += 1;
        if run.seen <= self.settings.after {
            out.push(hit);
            return 0;
        }
        match &mut run.folded {
            None => {
                run.folded = Some((hit, 1, ts));
                0
            }
            Some((_, repeats, last)) => {
                *repeats += 1;
                *last = (*last).max(ts);
                1
            }
        }
    }

    #[allow(clippy::vec_box)]
    fn finish_due(&mut self, now: i64, out: &mut Vec<Box<PackedHit>>) {
        let window = self.settings.window_ms;
        self.runs.retain(|_, run| {
            if now < run.start.saturating_add(window) {
                return true;
            }
            out.extend(finish(run));
            false
        });
    }
}

/// The run's folded record, if it has one, standing for all it folded.
fn finish(run: &mut Run) -> Option<Box<PackedHit>> {
    let (mut record, repeats, last) = run.folded.take()?;
    record.coalesce(repeats, last);
    Some(record)
}

/// What makes hits alike, in `key`: every field but the time, the query
/// name and type, and the transport.
fn make_key(key: &mut String, h: &HitRef<'_>) {
    use std::fmt::Write as _;
    key.clear();
    // NUL cannot occur in any of the fields (names are normalised, the
    // rest come from our config and feeds' ids without control bytes),
    // so the fields cannot run into each other.
    let _ = write!(
        key,
        "{}\0{}\0{}\0{}\0{}\0{}\0{}",
        h.org.unwrap_or(""),
        h.client,
        h.matched,
        h.stage.as_str(),
        h.feed,
        h.action,
        h.category,
    );
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

    #[test]
    fn ordinary_traffic_keeps_a_record_per_query() {
        let mut c = Coalescer::new(SETTINGS);
        // Three hits a minute from one client never fold.
        for minute in 0..5 {
            let mut batch: Vec<_> = (0..3)
                .map(|i| hit(minute * 60_000 + i, "10.0.0.1", "x.evil.example"))
                .collect();
            assert_eq!(c.fold(&mut batch, minute * 60_000 + 5), 0);
            assert_eq!(batch.len(), 3);
        }
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
        assert_eq!(c.fold(&mut batch, 20), 6);
        let mut rest = Vec::new();
        c.finish_all(&mut rest);
        assert_eq!(summary(&rest)[0].2, 7);
        let mut off = Coalescer::new(Settings {
            after: 0,
            window_ms: 60_000,
        });
        let mut batch: Vec<_> = (0..10).map(|i| hit(i, "10.0.0.1", "x.example")).collect();
        assert_eq!(off.fold(&mut batch, 20), 0);
        assert_eq!(batch.len(), 10);
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
