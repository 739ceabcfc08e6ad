//! The writer thread: drains the channel in batches into the store and the
//! JSON-lines stream, and runs retention.
//!
//! A plain OS thread, not a tokio task: SQLite calls block, and a blocked
//! runtime worker would delay queries. It runs at idle priority where the
//! process may bring it back, so it takes only the CPU that queries leave
//! ([`priority`]). When a record arrives the thread
//! waits `GATHER` for more, then takes whatever is queued (up to
//! [`MAX_BATCH`]) as one transaction: under load a batch holds hundreds of
//! records, and each commit's fixed cost (rewriting the tail pages of the
//! table and its indexes to the WAL, file locks) is shared by all of them.
//!
//! At the `max_db_mib` cap the oldest records that the daily roll-ups
//! already count are deleted to make room ([`EVICT_CHUNK`] at a time,
//! counted in `portcullis_hitlog_evicted_total`): the newest hits are the
//! ones a security team is looking for, and reports keep the totals.
//!
//! Failures never reach the query path. A database that cannot be opened
//! or written (unwritable directory, full disk, a cap with nothing left
//! to evict) is logged (the first failure and then at most every 30 s), counted in
//! `portcullis_hitlog_errors_total`, and the batch is counted as dropped
//! with reason `store_error`; the JSON-lines stream still gets it. The
//! writer retries the database every few seconds.

pub mod coalesce;
mod failures;
pub mod priority;
mod retention;
mod rollup;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::jsonl::JsonLines;
use super::store::{Store, StoreError};
use super::{Counters, Hit, HitSender, PackedHit};
use crate::clock::now_ms;
use crate::telemetry;
use coalesce::Coalescer;
use failures::Failures;
use rollup::Pending;
pub use rollup::{ROLLUP_CHUNK, ROLLUP_MAX_PENDING};

/// Most records per transaction: more than a `GATHER` brings at any
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
/// Records deleted at a time to make room under the size cap: a few
/// MiB, several batches' worth, so the cap is not met again at once.
pub const EVICT_CHUNK: u64 = 20_000;
/// Rounds of eviction for one batch before it is given up as lost.
const EVICT_ROUNDS: u32 = 4;

/// What the writer needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: PathBuf,
    pub jsonl: Option<PathBuf>,
    pub retention_days: u32,
    pub capacity: usize,
    pub max_bytes: Option<u64>,
    pub coalesce: coalesce::Settings,
    /// Records are forwarded to a fleet store: retention and the size cap
    /// leave the ones it does not have yet.
    pub forwarding: bool,
    /// `server.node_id`, written on every record.
    pub node: Option<String>,
    /// Run the writer at idle priority, catching up at nice 10 past half
    /// the channel and nice 0 past three quarters ([`priority`]).
    pub yield_to_queries: bool,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Settings {
        let h = &config.hitlog;
        Settings {
            database: h.database.clone(),
            jsonl: h.jsonl.clone(),
            retention_days: h.retention_days,
            capacity: h.channel_capacity,
            max_bytes: h.max_db_mib.map(|m| m * 1024 * 1024),
            coalesce: coalesce::Settings {
                after: h.coalesce_after,
                window_ms: i64::from(h.coalesce_window_s) * 1000,
            },
            forwarding: h.postgres.is_some(),
            node: Some(config.server.node_id.clone()),
            yield_to_queries: h.yield_to_queries,
        }
    }
}

/// The running hit log: hand out senders, then [`HitLog::close`].
pub struct HitLog {
    sender: HitSender,
    /// New settings from a config reload, taken between batches.
    updates: std::sync::mpsc::Sender<Settings>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Sets the writer's priority; `None` when it keeps normal priority.
    keeper: Option<JoinHandle<()>>,
    #[cfg(test)]
    writer_thread: Arc<priority::WriterThread>,
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
    let (updates, updated) = std::sync::mpsc::channel();
    let mut writer = Writer {
        coalescer: Coalescer::new(settings.coalesce),
        evict_logged: None,
        settings,
        store: None,
        identity: None,
        last_open: None,
        jsonl: None,
        counters: Arc::clone(&counters),
        failures: Failures::default(),
        pending: Pending::default(),
        sightings: Pending::default(),
    };
    let stop_flag = Arc::clone(&stop);
    let capacity = writer.settings.capacity;
    let yielding = writer.settings.yield_to_queries;
    let writer_thread = Arc::new(priority::WriterThread::default());
    let registered = Arc::clone(&writer_thread);
    let thread = std::thread::Builder::new()
        .name("portcullis-hitlog".into())
        .spawn(move || {
            registered.register();
            writer.run(&rx, &updated, &stop_flag);
            let _ = done_tx.send(());
        })?;
    let keeper = yielding
        .then(|| {
            priority::spawn_keeper(
                Arc::clone(&writer_thread),
                Arc::clone(&counters),
                capacity,
                Arc::clone(&stop),
            )
        })
        .flatten();
    Ok(HitLog {
        sender,
        updates,
        stop,
        thread: Some(thread),
        keeper,
        #[cfg(test)]
        writer_thread,
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

    /// Whether a keeper sets the writer's priority (see [`priority`]).
    pub fn yields(&self) -> bool {
        self.keeper.is_some()
    }

    /// The writer thread's id, once it has started.
    #[cfg(test)]
    pub(crate) fn writer_tid(&self) -> Option<i32> {
        priority::writer_tid(&self.writer_thread)
    }

    /// Where a config reload sends the writer its new settings.
    pub fn updates(&self) -> std::sync::mpsc::Sender<Settings> {
        self.updates.clone()
    }

    /// Write everything queued, then stop. Returns false when the writer
    /// did not finish within `timeout` (a hung disk).
    pub fn close(mut self, timeout: Duration) -> bool {
        self.stop.store(true, Ordering::Release);
        let finished = self.done.recv_timeout(timeout).is_ok();
        if finished && let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // It sees the stop within a tick.
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        finished
    }
}

struct Writer {
    settings: Settings,
    store: Option<Store>,
    /// The database file the store has open (device, inode), to notice it
    /// deleted or replaced under us.
    identity: Option<(u64, u64)>,
    last_open: Option<Instant>,
    jsonl: Option<JsonLines>,
    counters: Arc<Counters>,
    failures: Failures,
    pending: Pending,
    /// What the sightings roll-up has not yet taken (it waits longer).
    sightings: Pending,
    coalescer: Coalescer,
    /// When eviction was last logged (it is logged at most every 30 s).
    evict_logged: Option<Instant>,
}

/// The fleet store's cursor, when records are forwarded. A mark that
/// cannot be read keeps everything (0): deleting less is the safe side.
fn forwarded(store: &Store, forwarding: bool) -> Option<i64> {
    forwarding.then(|| store.forward_mark().map_or(0, |(_, id)| id))
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

/// The batch as records for the stream, with the ids the store gave
/// them (none if it could not take them) and the node.
fn with_ids(batch: &[Box<PackedHit>], ids: &[i64], node: Option<&str>) -> Vec<Hit> {
    batch
        .iter()
        .enumerate()
        .map(|(i, packed)| Hit {
            id: ids.get(i).copied(),
            node: node.map(str::to_owned),
            ..packed.unpack()
        })
        .collect()
}

impl Writer {
    fn run(
        &mut self,
        rx: &Receiver<Box<PackedHit>>,
        updated: &Receiver<Settings>,
        stop: &AtomicBool,
    ) {
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
            while let Ok(settings) = updated.try_recv() {
                self.apply(settings, &mut batch);
            }
            let stopping = stop.load(Ordering::Acquire);
            let before = batch.len();
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(hit) => batch.push(hit),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_all(&mut batch);
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
            let taken = (batch.len() - before) as u64;
            self.counters.taken.fetch_add(taken, Ordering::Relaxed);
            // The keeper sets it too: it runs while an idle writer waits.
            ::metrics::gauge!(telemetry::HITLOG_BACKLOG).set(self.counters.backlog() as f64);
            if !batch.is_empty() {
                self.pending.last_record = Some(Instant::now());
                self.sightings.last_record = self.pending.last_record;
            }
            // Stop only once the channel is empty: a clean shutdown
            // flushes what the query path handed over.
            if stopping && empty {
                self.write_all(&mut batch);
                self.roll_up(u64::MAX);
                return;
            }
            self.fold(&mut batch);
            self.write(&mut batch);
            if !behind && self.pending.due(Instant::now()) {
                self.roll_up(ROLLUP_CHUNK);
            } else if !behind && self.sightings.sightings_due(Instant::now()) {
                // One roll-up a round: the sightings' after the reports'.
                self.roll_up_sightings(ROLLUP_CHUNK);
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

    /// Take a reloaded config's settings: retention, the size cap, the
    /// JSON stream and coalescing (what is being folded is written first,
    /// so no count is lost). The database, the channel, the node and
    /// forwarding stay until a restart.
    #[allow(clippy::vec_box)]
    fn apply(&mut self, new: Settings, batch: &mut Vec<Box<PackedHit>>) {
        self.settings.retention_days = new.retention_days;
        if new.coalesce != self.settings.coalesce {
            self.write_all(batch);
            self.coalescer = Coalescer::new(new.coalesce);
            self.settings.coalesce = new.coalesce;
        }
        if new.jsonl != self.settings.jsonl {
            self.jsonl = new.jsonl.clone().map(JsonLines::new);
            self.settings.jsonl = new.jsonl;
        }
        if new.max_bytes != self.settings.max_bytes {
            // The cap is a pragma set when the store opens.
            self.settings.max_bytes = new.max_bytes;
            self.store = None;
            self.open_store();
        }
        tracing::info!(
            retention_days = self.settings.retention_days,
            "hit log settings reloaded"
        );
    }

    /// Fold the flood in `batch` into counted records (see [`coalesce`]).
    #[allow(clippy::vec_box)]
    fn fold(&mut self, batch: &mut Vec<Box<PackedHit>>) {
        let folded = self.coalescer.fold(batch, now_ms());
        if folded > 0 {
            self.counters.coalesced.fetch_add(folded, Ordering::Relaxed);
            ::metrics::counter!(telemetry::HITLOG_COALESCED).increment(folded);
        }
    }

    /// Write `batch` and every record still being folded (shutdown).
    #[allow(clippy::vec_box)]
    fn write_all(&mut self, batch: &mut Vec<Box<PackedHit>>) {
        self.fold(batch);
        self.coalescer.finish_all(batch);
        self.write(batch);
    }

    /// The (device, inode) of the file at the database's path now.
    fn file_identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.settings.database)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }

    /// Whether the open store's file is still the one at the path. An
    /// operator (or a clean-up script) may delete or replace it; SQLite
    /// would go on writing to the unlinked file and every record would be
    /// counted as written and lost.
    fn still_ours(&self) -> bool {
        self.identity.is_some() && self.file_identity() == self.identity
    }

    /// Close the store whose file is gone and open the path afresh.
    fn reopen_replaced(&mut self) {
        tracing::warn!(database = %self.settings.database.display(), "the hit log database was deleted or replaced; opening it again");
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(telemetry::HITLOG_ERRORS).increment(1);
        // Closing first checkpoints and removes the old file's WAL, which
        // must not be applied to the new one.
        self.store = None;
        self.identity = None;
        self.open_store();
    }

    fn open_store(&mut self) {
        self.last_open = Some(Instant::now());
        match Store::open_writer(&self.settings.database, self.settings.max_bytes) {
            Ok(mut store) => {
                if let Some(node) = &self.settings.node {
                    store.set_node(node);
                }
                self.identity = self.file_identity();
                tracing::info!(database = %self.settings.database.display(), "hit log open");
                if self.failures.count > 0 {
                    tracing::info!("hit log database usable again");
                }
                self.store = Some(store);
                self.pending.add(1);
                self.sightings.add(1);
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
        if self.store.is_some() && !self.still_ours() {
            self.reopen_replaced();
        }
        let n = batch.len() as u64;
        let mut ids = Vec::new();
        let mut inserted = self.store.as_mut().map(|s| s.insert(batch));
        if matches!(inserted, Some(Ok(_))) && !self.still_ours() {
            // Gone between the check and the commit: the batch went to the
            // old file. Write it again to the new one.
            self.reopen_replaced();
            inserted = self.store.as_mut().map(|s| s.insert(batch));
        }
        let mut rounds = 0;
        while let Some(Err(error)) = &inserted
            && is_full(error)
            && self.settings.max_bytes.is_some()
            && rounds < EVICT_ROUNDS
            && self.make_room(EVICT_CHUNK << rounds)
        {
            rounds += 1;
            inserted = self.store.as_mut().map(|s| s.insert(batch));
        }
        match inserted {
            Some(Ok(given)) => {
                ids = given;
                self.pending.add(n);
                self.sightings.add(n);
                self.counters.written.fetch_add(n, Ordering::Relaxed);
                ::metrics::counter!(telemetry::HITLOG_WRITTEN).increment(n);
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
            && let Err(error) = jsonl.write(
                &with_ids(batch, &ids, self.settings.node.as_deref()),
                now_ms(),
            )
        {
            let path = jsonl.path().display().to_string();
            self.failed(&format!("cannot write the hit stream {path}"), &error);
        }
        batch.clear();
    }

    fn lost(&self, n: u64) {
        self.counters.dropped_store.fetch_add(n, Ordering::Relaxed);
        ::metrics::counter!(telemetry::HITLOG_DROPPED, "reason" => "store_error").increment(n);
    }

    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(telemetry::HITLOG_ERRORS).increment(1);
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
