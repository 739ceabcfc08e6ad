//! The writer thread: drains the channel in batches into the store and the
//! JSON-lines stream, and runs retention.
//!
//! A plain OS thread, not a tokio task: SQLite calls block, and a blocked
//! runtime worker would delay queries. The thread takes whatever is queued
//! (up to [`MAX_BATCH`]) as one transaction, so under load batches grow and
//! the per-record cost falls; when idle a single record is written at once.
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
use super::{Counters, Hit, HitSender, now_ms};
use crate::metrics;

/// Most records per transaction.
pub const MAX_BATCH: usize = 4096;
const REOPEN_AFTER: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Records retention deletes in one go (a fraction of a second); with
/// more to delete it comes back after [`RETENTION_CATCH_UP`], so the
/// channel never waits long for the writer.
const RETENTION_CHUNK: u64 = 50_000;
const RETENTION_CATCH_UP: Duration = Duration::from_secs(1);
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);
/// How far the roll-ups may lag the raw log. Reports are exact whatever
/// the lag (they read the records not yet rolled up); a longer lag means
/// fewer, larger roll-ups, each writing a page of the tree once.
const ROLLUP_EVERY: Duration = Duration::from_secs(5);

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
        rollup_pending: false,
        last_rollup: Instant::now(),
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
    /// Records written since the last roll-up (or a store just opened,
    /// which may hold some from a crash).
    rollup_pending: bool,
    last_rollup: Instant,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Box<Hit>>, stop: &AtomicBool) {
        self.jsonl = self.settings.jsonl.clone().map(JsonLines::new);
        self.open_store();
        let mut next_retention = Instant::now();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let stopping = stop.load(Ordering::Acquire);
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(hit) => batch.push(*hit),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&mut batch);
                    self.roll_up();
                    return;
                }
            }
            let mut empty = batch.is_empty();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(hit) => batch.push(*hit),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                        empty = true;
                        break;
                    }
                }
            }
            self.write(&mut batch);
            // Stop only once the channel is empty: a clean shutdown
            // flushes what the query path handed over.
            if stopping && empty {
                self.roll_up();
                return;
            }
            if self.rollup_pending && self.last_rollup.elapsed() >= ROLLUP_EVERY {
                self.roll_up();
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
                self.rollup_pending = true;
            }
            Err(error) => self.failed("cannot open the hit log database", &error),
        }
    }

    fn write(&mut self, batch: &mut Vec<Hit>) {
        if batch.is_empty() {
            return;
        }
        if self.store.is_none() && self.last_open.is_none_or(|t| t.elapsed() >= REOPEN_AFTER) {
            self.open_store();
        }
        let n = batch.len() as u64;
        match self.store.as_mut().map(|s| s.insert(batch)) {
            Some(Ok(ids)) => {
                for (hit, id) in batch.iter_mut().zip(ids) {
                    hit.id = Some(id);
                }
                self.rollup_pending = true;
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
            && let Err(error) = jsonl.write(batch, now_ms())
        {
            let path = jsonl.path().display().to_string();
            self.failed(&format!("cannot write the hit stream {path}"), &error);
        }
        batch.clear();
    }

    /// Bring the roll-ups up to the raw log. On failure the records stay
    /// in the raw log and the next round takes them.
    fn roll_up(&mut self) {
        self.last_rollup = Instant::now();
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.roll_up() {
            Ok(_) => self.rollup_pending = false,
            Err(error) => self.failed("hit log roll-up failed", &error),
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
    use crate::hitlog::{Stage, Transport};

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
            tx.send(hit(i));
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
        tx.send(hit(0));
        assert_eq!(counters.dropped(), 1);
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
            log.sender().send(hit(i));
        }
        let counters = Arc::clone(log.counters());
        assert!(log.close(Duration::from_secs(30)));
        assert_eq!(counters.written.load(Ordering::Relaxed), 0);
        assert_eq!(counters.dropped(), 50);
        assert!(counters.errors.load(Ordering::Relaxed) >= 1);
    }
}
