//! When the writer brings the roll-ups up to the raw log: what is pending,
//! when a roll-up is due, and one round of it.

use std::time::{Duration, Instant};

use super::{REOPEN_AFTER, Writer};

/// When the roll-ups catch up with the raw log (see [`rollup_due`]).
/// Reports are exact whatever the lag (they read the records not yet
/// rolled up), so the roll-up waits for a quiet moment: the writer shares
/// the cores with the queries, and a burst of blocked queries (a first
/// pass over a threat list, every name new) would otherwise pay for the
/// roll-up's writes on top of the inserts. A longer lag also means fewer,
/// larger roll-ups, each writing a page of the tree once.
const ROLLUP_QUIET: Duration = Duration::from_secs(1);
/// The longest the roll-up waits for a quiet moment: a report reads at
/// most this much of the raw log on top of the roll-up.
const ROLLUP_MAX_LAG: Duration = Duration::from_secs(60);
/// The sightings roll-up (`hits_daily_sightings`) costs as much again as
/// the reports' two, so under load it waits longer: for a quiet moment,
/// ten minutes, or two million records. Shared sightings are read exact
/// meanwhile (the raw records after its mark are added in), only slower.
const SIGHTINGS_MAX_LAG: Duration = Duration::from_secs(600);
pub const SIGHTINGS_MAX_PENDING: u64 = 2_000_000;
/// Records that make a roll-up due, quiet or not (a few seconds of a
/// saturated core; a report reads them in a fraction of a second).
pub const ROLLUP_MAX_PENDING: u64 = 250_000;
/// Records one roll-up transaction takes. Nothing drains the channel
/// while it runs: at 11-16 µs a record for new names, 20,000 take a
/// quarter of a second, which the channel (65,536 slots by default, over
/// a second of a 50,000 q/s burst of blocked queries) absorbs. A larger
/// backlog is taken in turns with the batches.
pub const ROLLUP_CHUNK: u64 = 20_000;

/// What the roll-up has not yet taken.
#[derive(Default)]
pub(super) struct Pending {
    /// Records written since the last roll-up (a store just opened counts
    /// one: it may hold records a crash left out).
    records: u64,
    /// When the first of them was written.
    since: Option<Instant>,
    /// When the writer last had a record to write.
    pub(super) last_record: Option<Instant>,
    /// After a failed roll-up: not before then.
    retry_at: Option<Instant>,
}

impl Pending {
    pub(super) fn add(&mut self, n: u64) {
        self.records += n;
        self.since.get_or_insert_with(Instant::now);
    }

    /// The reports' roll-up.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.due_within(now, ROLLUP_MAX_LAG, ROLLUP_MAX_PENDING)
    }

    /// The sightings' roll-up.
    pub(super) fn sightings_due(&self, now: Instant) -> bool {
        self.due_within(now, SIGHTINGS_MAX_LAG, SIGHTINGS_MAX_PENDING)
    }

    fn due_within(&self, now: Instant, max_lag: Duration, max_pending: u64) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let quiet = self.last_record.map_or(Duration::MAX, |t| now - t);
        self.records > 0
            && (quiet >= ROLLUP_QUIET || now - since >= max_lag || self.records >= max_pending)
    }
}

/// Whether to roll up the reports now: `pending` records have waited
/// `age` and the writer has had nothing to write for `quiet`.
#[cfg(test)]
fn rollup_due(pending: u64, age: Duration, quiet: Duration) -> bool {
    pending > 0 && (quiet >= ROLLUP_QUIET || age >= ROLLUP_MAX_LAG || pending >= ROLLUP_MAX_PENDING)
}

impl Writer {
    /// Bring the sightings roll-up up to the raw log, taking at most
    /// `limit` records; on failure a later round takes them.
    pub(super) fn roll_up_sightings(&mut self, limit: u64) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.roll_up_sightings_at_most(limit) {
            Ok(taken) if taken < limit => self.sightings = Pending::default(),
            Ok(taken) => {
                self.sightings.records = self.sightings.records.saturating_sub(taken).max(1);
            }
            Err(error) => {
                self.sightings.retry_at = Some(Instant::now() + REOPEN_AFTER);
                self.failed("hit log sightings roll-up failed", &error);
            }
        }
    }

    /// Bring the roll-ups up to the raw log, taking at most `limit`
    /// records; once caught up, checkpoint the WAL. On failure the records
    /// stay in the raw log and a later round takes them.
    pub(super) fn roll_up(&mut self, limit: u64) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.roll_up_at_most(limit) {
            Ok(taken) if taken < limit => {
                self.pending = Pending::default();
                // Not a lost record: the WAL is copied over later.
                if let Err(error) = store.checkpoint() {
                    tracing::warn!(%error, "hit log checkpoint failed; SQLite retries it");
                }
            }
            // More to take: the next round, after the next batch.
            Ok(taken) => {
                self.pending.records = self.pending.records.saturating_sub(taken).max(1);
            }
            Err(error) => {
                self.pending.retry_at = Some(Instant::now() + REOPEN_AFTER);
                self.failed("hit log roll-up failed", &error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::hitlog::store::Store;
    use crate::hitlog::writer::tests::{NO_COALESCE, hit, packed, writer};
    use crate::hitlog::writer::{Settings, spawn};

    #[test]
    fn a_backlog_is_rolled_up_in_turns_and_then_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hits.sqlite");
        let mut w = writer(&database);
        let mut batch: Vec<_> = (0..25).map(packed).collect();
        w.write(&mut batch);
        assert!(w.pending.records >= 25);
        w.roll_up(10);
        assert_eq!(w.store.as_ref().unwrap().rolled_up().unwrap(), Some(10));
        assert!(w.pending.records > 0, "more to take: still pending");
        w.roll_up(10);
        w.roll_up(10);
        assert_eq!(w.store.as_ref().unwrap().rolled_up().unwrap(), Some(25));
        assert_eq!(w.pending.records, 0, "caught up");
        assert!(w.pending.since.is_none());
    }

    #[test]
    fn a_failed_rollup_is_retried_after_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hits.sqlite");
        let mut w = writer(&database);
        let mut batch = vec![packed(1)];
        w.write(&mut batch);
        // Break the roll-up from outside: its mark is gone.
        rusqlite::Connection::open(&database)
            .unwrap()
            .execute_batch("DROP TABLE rollup_state")
            .unwrap();
        w.roll_up(ROLLUP_CHUNK);
        let retry = w.pending.retry_at.expect("a retry time");
        assert!(retry > Instant::now());
        assert!(!w.pending.due(Instant::now()), "not again at once");
        assert!(w.pending.due(retry), "again after the wait");
        assert_eq!(w.counters.errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_rollup_waits_for_a_quiet_moment_within_bounds() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Nothing to roll up.
        assert!(!rollup_due(0, s(3600), s(3600)));
        // Busy: records every few ms, young, few.
        assert!(!rollup_due(1000, s(5), ms(10)));
        assert!(!rollup_due(
            ROLLUP_MAX_PENDING - 1,
            ROLLUP_MAX_LAG - ms(1),
            ms(99)
        ));
        // A quiet second.
        assert!(rollup_due(1, ms(1), ROLLUP_QUIET));
        // Busy, but the lag or the backlog is at its bound.
        assert!(rollup_due(1, ROLLUP_MAX_LAG, ms(1)));
        assert!(rollup_due(ROLLUP_MAX_PENDING, ms(1), ms(1)));
    }

    #[test]
    fn the_sightings_rollup_waits_longer_under_load() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.add(ROLLUP_MAX_PENDING);
        p.since = Some(now - ROLLUP_MAX_LAG);
        p.last_record = Some(now);
        assert!(p.due(now), "the reports' bounds are reached");
        assert!(!p.sightings_due(now), "the sightings' are not");
        p.since = Some(now - SIGHTINGS_MAX_LAG);
        assert!(p.sightings_due(now));
        p.since = Some(now);
        p.records = SIGHTINGS_MAX_PENDING;
        assert!(p.sightings_due(now));
        // A quiet moment is enough for both.
        p.records = 1;
        p.last_record = Some(now - ROLLUP_QUIET);
        assert!(p.due(now) && p.sightings_due(now));
    }

    #[test]
    fn the_writer_takes_the_sightings_in_chunks_and_reads_stay_exact() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hits.sqlite");
        let mut w = writer(&database);
        let mut batch: Vec<_> = (0..25).map(packed).collect();
        w.write(&mut batch);
        w.roll_up(u64::MAX);
        let store = Store::open_reader(&database).unwrap();
        let before = store
            .sightings(crate::hitlog::store::SightingView::EachOrg, None, None, 100)
            .unwrap()
            .rows;
        assert_eq!(store.sightings_rolled_up().unwrap(), Some(0), "not yet");
        w.roll_up_sightings(10);
        assert!(w.sightings.records > 0, "more to take");
        w.roll_up_sightings(10);
        w.roll_up_sightings(10);
        assert_eq!(store.sightings_rolled_up().unwrap(), Some(25));
        assert_eq!(w.sightings.records, 0, "caught up");
        let after = store
            .sightings(crate::hitlog::store::SightingView::EachOrg, None, None, 100)
            .unwrap()
            .rows;
        assert_eq!(after, before, "the same, rolled up or read raw");
        assert_eq!(after.iter().map(|r| r.n).sum::<u64>(), 25);
    }

    #[test]
    fn a_failed_rollup_is_retried_later_not_on_every_batch() {
        let now = Instant::now();
        let mut pending = Pending::default();
        pending.add(10);
        pending.since = Some(now - ROLLUP_MAX_LAG);
        assert!(pending.due(now));
        pending.retry_at = Some(now + REOPEN_AFTER);
        assert!(!pending.due(now));
        assert!(pending.due(now + REOPEN_AFTER));
    }

    #[test]
    fn records_a_crash_left_out_of_the_rollup_are_rolled_up_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hits.sqlite");
        let mut store = Store::open_writer(&database, None).unwrap();
        store.insert(&[hit(1), hit(2)]).unwrap();
        // The process dies here, before its roll-up.
        drop(store);
        let log = spawn(Settings {
            database: database.clone(),
            jsonl: None,
            retention_days: 1,
            capacity: 100,
            max_bytes: None,
            coalesce: NO_COALESCE,
            forwarding: false,
            node: None,
            yield_to_queries: false,
        })
        .unwrap();
        assert!(log.close(Duration::from_secs(30)));
        assert_eq!(
            Store::open_reader(&database).unwrap().rolled_up().unwrap(),
            Some(2)
        );
    }
}
