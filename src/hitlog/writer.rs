//! The writer thread: drains the channel in batches into the store and the
//! JSON-lines stream, and runs retention.
//!
//! A plain OS thread, not a tokio task: SQLite calls block, and a blocked
//! runtime worker would delay queries. When a record arrives the thread
//! waits [`GATHER`] for more, then takes whatever is queued (up to
//! [`MAX_BATCH`]) as one transaction: under load a batch holds hundreds of
//! records, and each commit's fixed cost (rewriting the tail pages of the
//! table and its indexes to the WAL, file locks) is shared by all of them.
//!
//! Failures never reach the query path. A database that cannot be opened
//! or written (unwritable directory, full disk, the `max_db_mib` cap) is
//! logged (the first failure and then at most every 30 s), counted in
//! `portcullis_hitlog_errors_total`, and the batch is counted as dropped
//! with reason `store_error`; the JSON-lines stream still gets it. The
//! writer retries the database every few seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::jsonl::JsonLines;
use super::store::{Store, StoreError};
use super::{Counters, Hit, HitSender, PackedHit, now_ms};
use crate::metrics;

/// Most records per transaction: more than a [`GATHER`] brings at any
/// rate one writer can keep up with (about 6 µs a record on the 2-core
/// VM: some 8,000 per 50 ms), so a batch is cut short only when the
/// writer has fallen behind.
pub const MAX_BATCH: usize = 16_384;
/// How long the writer lets records gather after the first one. Writing
/// as soon as one arrived made batches of a few dozen under a burst of
/// blocked queries, each commit writing the same tail pages again: the
/// writer spent a third of its time committing. While it sleeps it is not
/// waiting on the channel, so the query path hands records over without
/// waking it.
const GATHER: Duration = Duration::from_millis(50);
const REOPEN_AFTER: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Records retention deletes in one go (a fraction of a second); with
/// more to delete it comes back after [`RETENTION_CATCH_UP`], so the
/// channel never waits long for the writer.
const RETENTION_CHUNK: u64 = 50_000;
const RETENTION_CATCH_UP: Duration = Duration::from_secs(1);
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);
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
/// Records that make a roll-up due, quiet or not (a few seconds of a
/// saturated core; a report reads them in a fraction of a second).
pub const ROLLUP_MAX_PENDING: u64 = 250_000;
/// Records one roll-up transaction takes. Nothing drains the channel
/// while it runs: at 11-16 µs a record for new names, 20,000 take a
/// quarter of a second, which the channel (65,536 slots by default, over
/// a second of a 50,000 q/s burst of blocked queries) absorbs. A larger
/// backlog is taken in turns with the batches.
pub const ROLLUP_CHUNK: u64 = 20_000;

/// What the writer needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: PathBuf,
    pub jsonl: Option<PathBuf>,
    pub retention_days: u32,
    pub capacity: usize,
    pub max_bytes: Option<u64>,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Settings {
        let h = &config.hitlog;
        Settings {
            database: h
                .database
                .clone()
                .unwrap_or_else(|| config.blocklist.state_dir.join("hits.sqlite")),
            jsonl: h.jsonl.clone(),
            retention_days: h.retention_days,
            capacity: h.channel_capacity,
            max_bytes: h.max_db_mib.map(|m| m * 1024 * 1024),
        }
    }
}

/// The running hit log: hand out senders, then [`HitLog::close`].
pub struct HitLog {
    sender: HitSender,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
}

/// Start the writer thread. The database is opened on the thread, so a
/// bad path shows as logged errors, not as a failure to start: the
/// resolver's job is answering queries.
pub fn spawn(settings: Settings) -> std::io::Result<HitLog> {
    let (sender, rx) = HitSender::channel(settings.capacity);
    let counters = Arc::clone(sender.counters());
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done) = sync_channel(1);
    let mut writer = Writer {
        settings,
        store: None,
        last_open: None,
        jsonl: None,
        counters: Arc::clone(&counters),
        failures: Failures::default(),
        pending: Pending::default(),
    };
    let stop_flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("portcullis-hitlog".into())
        .spawn(move || {
            writer.run(&rx, &stop_flag);
            let _ = done_tx.send(());
        })?;
    Ok(HitLog {
        sender,
        stop,
        thread: Some(thread),
        done,
    })
}

impl HitLog {
    pub fn sender(&self) -> HitSender {
        self.sender.clone()
    }

    pub fn counters(&self) -> &Arc<Counters> {
        self.sender.counters()
    }

    /// Write everything queued, then stop. Returns false when the writer
    /// did not finish within `timeout` (a hung disk).
    pub fn close(mut self, timeout: Duration) -> bool {
        self.stop.store(true, Ordering::Release);
        let finished = self.done.recv_timeout(timeout).is_ok();
        if finished && let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        finished
    }
}

struct Writer {
    settings: Settings,
    store: Option<Store>,
    last_open: Option<Instant>,
    jsonl: Option<JsonLines>,
    counters: Arc<Counters>,
    failures: Failures,
    pending: Pending,
}

/// The most records one batch takes from a channel of `capacity`: a
/// batch that fills up means the writer is behind. Half the channel at
/// most, so that a small channel still lets a batch fill up.
fn batch_limit(capacity: usize) -> usize {
    MAX_BATCH.min(capacity / 2).max(1)
}

/// How long to let records gather before the next batch. Not at all
/// when the last batch filled up (a sustained rate above a full batch per
/// [`GATHER`] would otherwise be capped there and fill the channel), nor
/// when stopping.
fn gather_for(behind: bool, stopping: bool) -> Duration {
    if behind || stopping {
        Duration::ZERO
    } else {
        GATHER
    }
}

/// What the roll-up has not yet taken.
#[derive(Default)]
struct Pending {
    /// Records written since the last roll-up (a store just opened counts
    /// one: it may hold records a crash left out).
    records: u64,
    /// When the first of them was written.
    since: Option<Instant>,
    /// When the writer last had a record to write.
    last_record: Option<Instant>,
    /// After a failed roll-up: not before then.
    retry_at: Option<Instant>,
}

impl Pending {
    fn add(&mut self, n: u64) {
        self.records += n;
        self.since.get_or_insert_with(Instant::now);
    }

    fn due(&self, now: Instant) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let quiet = self.last_record.map_or(Duration::MAX, |t| now - t);
        rollup_due(self.records, now - since, quiet)
    }
}

/// Whether to roll up now: `pending` records have waited `age` and the
/// writer has had nothing to write for `quiet`.
fn rollup_due(pending: u64, age: Duration, quiet: Duration) -> bool {
    pending > 0 && (quiet >= ROLLUP_QUIET || age >= ROLLUP_MAX_LAG || pending >= ROLLUP_MAX_PENDING)
}

/// The batch as records for the stream, with the ids the store gave
/// them (none if it could not take them).
fn with_ids(batch: &[Box<PackedHit>], ids: &[i64]) -> Vec<Hit> {
    batch
        .iter()
        .enumerate()
        .map(|(i, packed)| Hit {
            id: ids.get(i).copied(),
            ..packed.unpack()
        })
        .collect()
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Box<PackedHit>>, stop: &AtomicBool) {
        self.jsonl = self.settings.jsonl.clone().map(JsonLines::new);
        self.open_store();
        let mut next_retention = Instant::now();
        let limit = batch_limit(self.settings.capacity);
        let mut batch = Vec::with_capacity(limit);
        // The last batch filled up before the channel was empty: the
        // writer is behind, so the next one goes without waiting, and the
        // roll-up waits until it has caught up.
        let mut behind = false;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(hit) => batch.push(hit),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&mut batch);
                    self.roll_up(u64::MAX);
                    return;
                }
            }
            if !batch.is_empty() {
                let wait = gather_for(behind, stopping);
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            let mut empty = false;
            while batch.len() < limit {
                match rx.try_recv() {
                    Ok(hit) => batch.push(hit),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                        empty = true;
                        break;
                    }
                }
            }
            behind = !empty;
            if !batch.is_empty() {
                self.pending.last_record = Some(Instant::now());
            }
            self.write(&mut batch);
            // Stop only once the channel is empty: a clean shutdown
            // flushes what the query path handed over.
            if stopping && empty {
                self.roll_up(u64::MAX);
                return;
            }
            if !behind && self.pending.due(Instant::now()) {
                self.roll_up(ROLLUP_CHUNK);
            }
            if Instant::now() >= next_retention {
                let more = self.expire();
                next_retention = Instant::now()
                    + if more {
                        RETENTION_CATCH_UP
                    } else {
                        RETENTION_EVERY
                    };
            }
        }
    }

    fn open_store(&mut self) {
        self.last_open = Some(Instant::now());
        match Store::open_writer(&self.settings.database, self.settings.max_bytes) {
            Ok(store) => {
                tracing::info!(database = %self.settings.database.display(), "hit log open");
                if self.failures.count > 0 {
                    tracing::info!("hit log database usable again");
                }
                self.store = Some(store);
                self.pending.add(1);
            }
            Err(error) => self.failed("cannot open the hit log database", &error),
        }
    }

    // The boxes are the channel's: unboxing would copy every record.
    #[allow(clippy::vec_box)]
    fn write(&mut self, batch: &mut Vec<Box<PackedHit>>) {
        if batch.is_empty() {
            return;
        }
        if self.store.is_none() && self.last_open.is_none_or(|t| t.elapsed() >= REOPEN_AFTER) {
            self.open_store();
        }
        let n = batch.len() as u64;
        let mut ids = Vec::new();
        match self.store.as_mut().map(|s| s.insert(batch)) {
            Some(Ok(given)) => {
                ids = given;
                self.pending.add(n);
                self.counters.written.fetch_add(n, Ordering::Relaxed);
                ::metrics::counter!(metrics::HITLOG_WRITTEN).increment(n);
            }
            Some(Err(error)) => {
                self.failed("cannot write to the hit log database", &error);
                // A full database may take writes again after retention;
                // anything else gets a fresh connection later.
                if !is_full(&error) {
                    self.store = None;
                }
                self.lost(n);
            }
            None => self.lost(n),
        }
        if let Some(jsonl) = self.jsonl.as_mut()
            && let Err(error) = jsonl.write(&with_ids(batch, &ids), now_ms())
        {
            let path = jsonl.path().display().to_string();
            self.failed(&format!("cannot write the hit stream {path}"), &error);
        }
        batch.clear();
    }

    /// Bring the roll-ups up to the raw log, taking at most `limit`
    /// records; once caught up, checkpoint the WAL. On failure the records
    /// stay in the raw log and a later round takes them.
    fn roll_up(&mut self, limit: u64) {
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

    fn lost(&self, n: u64) {
        self.counters.dropped_store.fetch_add(n, Ordering::Relaxed);
        ::metrics::counter!(metrics::HITLOG_DROPPED, "reason" => "store_error").increment(n);
    }

    /// One round of retention; true when there may be more to delete.
    fn expire(&mut self) -> bool {
        let cutoff = now_ms() - i64::from(self.settings.retention_days) * 86_400_000;
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        match store.expire(cutoff, RETENTION_CHUNK) {
            Ok(0) => false,
            Ok(n) => {
                tracing::info!(
                    deleted = n,
                    days = self.settings.retention_days,
                    "hit log retention"
                );
                n >= RETENTION_CHUNK
            }
            Err(error) => {
                self.failed("hit log retention failed", &error);
                false
            }
        }
    }

    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(metrics::HITLOG_ERRORS).increment(1);
        self.failures.report(what, error);
    }
}

fn is_full(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Sqlite {
            source: rusqlite::Error::SqliteFailure(e, _),
            ..
        } if e.code == rusqlite::ErrorCode::DiskFull
    )
}

/// Logs the first failure at once and then at most every 30 s, with the
/// number suppressed in between: a full disk must not flood the journal.
#[derive(Default)]
struct Failures {
    count: u64,
    since_logged: u64,
    last_logged: Option<Instant>,
}

impl Failures {
    fn report(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.count += 1;
        self.since_logged += 1;
        if self
            .last_logged
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY)
        {
            tracing::error!(
                %error,
                failures = self.since_logged,
                "{what}; hit records are being lost (queries are still answered)"
            );
            self.since_logged = 0;
            self.last_logged = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::AsHitRef;
    use crate::hitlog::{Stage, Transport};

    fn packed(i: i64) -> Box<PackedHit> {
        Box::new(PackedHit::pack(&hit(i).as_hit_ref()))
    }

    fn hit(i: i64) -> Hit {
        Hit {
            id: None,
            ts: now_ms() + i,
            org: Some("a".into()),
            client: "10.0.0.1".parse().unwrap(),
            transport: Transport::Udp,
            qname: format!("n{i}.evil.example"),
            qtype: "A".into(),
            stage: Stage::Qname,
            matched: "evil.example".into(),
            feed: "f".into(),
            category: "malware".into(),
            indicator: None,
            action: "nxdomain".into(),
        }
    }

    #[test]
    fn close_writes_everything_queued_to_the_store_and_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            database: dir.path().join("hits.sqlite"),
            jsonl: Some(dir.path().join("hits.jsonl")),
            retention_days: 1,
            capacity: 20_000,
            max_bytes: None,
        };
        let log = spawn(settings.clone()).unwrap();
        let tx = log.sender();
        for i in 0..10_000 {
            tx.send(hit(i).as_hit_ref());
        }
        let counters = Arc::clone(log.counters());
        assert!(log.close(Duration::from_secs(30)));
        assert_eq!(counters.written.load(Ordering::Relaxed), 10_000);
        assert_eq!(counters.dropped(), 0);
        let store = Store::open_reader(&settings.database).unwrap();
        assert_eq!(store.count().unwrap(), 10_000);
        assert_eq!(
            store.rolled_up().unwrap(),
            Some(10_000),
            "close brings the roll-up up to date"
        );
        let lines = std::fs::read_to_string(dir.path().join("hits.jsonl")).unwrap();
        let first: Hit = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(
            first.id,
            Some(1),
            "the stream carries the store's reference"
        );
        assert_eq!(lines.lines().count(), 10_000);
        // After close, nothing can be queued: it is counted, not lost silently.
        tx.send(hit(0).as_hit_ref());
        assert_eq!(counters.dropped(), 1);
    }

    #[test]
    fn the_writer_gathers_only_when_it_is_keeping_up() {
        assert_eq!(gather_for(false, false), GATHER);
        assert_eq!(gather_for(true, false), Duration::ZERO);
        assert_eq!(gather_for(false, true), Duration::ZERO);
    }

    #[test]
    fn a_batch_can_fill_up_whatever_the_channel_size() {
        assert_eq!(batch_limit(65_536), MAX_BATCH);
        assert_eq!(batch_limit(1_000), 500);
        assert_eq!(batch_limit(1), 1);
    }

    /// A writer on `database` as `spawn` makes one, without its thread.
    fn writer(database: &std::path::Path) -> Writer {
        let mut w = Writer {
            settings: Settings {
                database: database.to_path_buf(),
                jsonl: None,
                retention_days: 1,
                capacity: 100,
                max_bytes: None,
            },
            store: None,
            last_open: None,
            jsonl: None,
            counters: Arc::new(Counters::default()),
            failures: Failures::default(),
            pending: Pending::default(),
        };
        w.open_store();
        w
    }

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
    fn a_channel_filled_again_and_again_loses_nothing() {
        // A small channel, filled to the brim three times: every record
        // is written, none dropped.
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hits.sqlite");
        let log = spawn(Settings {
            database: database.clone(),
            jsonl: None,
            retention_days: 1,
            capacity: 1000,
            max_bytes: None,
        })
        .unwrap();
        let sender = log.sender();
        let counters = Arc::clone(log.counters());
        for round in 0..3u64 {
            for i in 0..1000 {
                sender.send(hit((round * 1000 + i) as i64).as_hit_ref());
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while counters.written.load(Ordering::Relaxed) < (round + 1) * 1000 {
                assert!(
                    Instant::now() < deadline,
                    "the writer did not drain the channel"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(log.close(Duration::from_secs(60)));
        assert_eq!(counters.dropped(), 0);
        assert_eq!(
            Store::open_reader(&database).unwrap().count().unwrap(),
            3000
        );
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
        })
        .unwrap();
        assert!(log.close(Duration::from_secs(30)));
        assert_eq!(
            Store::open_reader(&database).unwrap().rolled_up().unwrap(),
            Some(2)
        );
    }

    #[test]
    fn an_unopenable_database_counts_every_record_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the database file should be.
        let database = dir.path().join("hits.sqlite");
        std::fs::create_dir(&database).unwrap();
        let log = spawn(Settings {
            database,
            jsonl: None,
            retention_days: 1,
            capacity: 100,
            max_bytes: None,
        })
        .unwrap();
        for i in 0..50 {
            log.sender().send(hit(i).as_hit_ref());
        }
        let counters = Arc::clone(log.counters());
        assert!(log.close(Duration::from_secs(30)));
        assert_eq!(counters.written.load(Ordering::Relaxed), 0);
        assert_eq!(counters.dropped(), 50);
        assert!(counters.errors.load(Ordering::Relaxed) >= 1);
    }
}
