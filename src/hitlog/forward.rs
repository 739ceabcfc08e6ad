//! The forwarder: a thread that sends the fleet store (PostgreSQL) every
//! record of the local database it does not have yet, in id order.
//!
//! The local database is written first, as on a single node, so a record
//! is acknowledged (counted as written) when it is in SQLite; from there
//! the forwarder sends batches and moves the local cursor
//! (`forward_state.forwarded`) after PostgreSQL has committed. While
//! PostgreSQL is away the records wait in SQLite (the spool), where
//! retention and the size cap leave them alone, and go in order when it
//! is back. A crash between the two commits sends a batch again, which
//! the PostgreSQL store's insert takes as already there: exactly once.
//!
//! Never on the query path: DNS keeps answering whatever PostgreSQL does,
//! and `/readyz` names the trouble as a warning.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::postgres::{self, PgError};
use super::store::{Store, StoreError};
use crate::clock::now_ms;
use crate::config::PostgresConfig;
use crate::telemetry;

/// Records sent in one PostgreSQL transaction.
pub const BATCH: usize = 5_000;
/// How long the forwarder waits when it has caught up.
const IDLE: Duration = Duration::from_millis(200);
/// Backoff after a failure: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_LAST: Duration = Duration::from_secs(10);
/// The spool's figures are refreshed at most this often while sending.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// What the forwarder needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub postgres: PostgresConfig,
    pub node: String,
    pub database: PathBuf,
}

/// The forwarder's state, for `/readyz` and the tests.
#[derive(Debug, Default)]
pub struct Status {
    pub forwarded: AtomicU64,
    /// Records in the local database that PostgreSQL does not have.
    pub spooled: AtomicU64,
    /// The oldest of them, ms since the epoch (0: none).
    pub oldest_ms: AtomicI64,
    /// Since when PostgreSQL has been failing, ms (0: it is not).
    pub failing_since_ms: AtomicI64,
    pub last_error: Mutex<Option<String>>,
}

impl Status {
    /// One line for `/readyz` when records are not reaching PostgreSQL.
    pub fn warning(&self) -> Option<String> {
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Some(format!(
            "hit log: the PostgreSQL hit store has failed for {:.0} s ({error}); {} records \
             spooled locally, forwarded when it is back",
            (now_ms() - since) as f64 / 1000.0,
            self.spooled.load(Ordering::Relaxed)
        ))
    }
}

/// The running forwarder; [`Forwarder::stop`] ends it.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Status>,
}

impl Forwarder {
    pub fn spawn(settings: Settings) -> std::io::Result<Forwarder> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Status::default());
        let mut run = Run {
            settings,
            status: Arc::clone(&status),
            stop: Arc::clone(&stop),
            client: None,
            migrated: false,
            logged: None,
        };
        let thread = std::thread::Builder::new()
            .name("portcullis-forward".into())
            .spawn(move || run.run())?;
        Ok(Forwarder {
            stop,
            thread: Some(thread),
            status,
        })
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Stop after the batch in hand; what is left stays spooled for the
    /// next start.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Run {
    settings: Settings,
    status: Arc<Status>,
    stop: Arc<AtomicBool>,
    client: Option<::postgres::Client>,
    migrated: bool,
    logged: Option<Instant>,
}

impl Run {
    fn run(&mut self) {
        let mut retry = RETRY_FIRST;
        let mut figures_at: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            let store = match Store::open_spool(&self.settings.database) {
                Ok(store) => store,
                // The writer makes it (with its first record, or again
                // after it was deleted).
                Err(StoreError::Missing(_)) => {
                    self.sleep(IDLE);
                    continue;
                }
                Err(error) => {
                    self.failed(&error.into());
                    self.sleep(retry);
                    retry = (retry * 2).min(RETRY_LAST);
                    continue;
                }
            };
            match self.round(&store) {
                Ok(sent) => {
                    retry = RETRY_FIRST;
                    if self.status.failing_since_ms.swap(0, Ordering::Relaxed) != 0 {
                        tracing::info!("hit log: the PostgreSQL hit store is back");
                    }
                    if sent == 0 || figures_at.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                        self.figures(&store);
                        figures_at = Some(Instant::now());
                    }
                    drop(store);
                    if sent < BATCH {
                        self.sleep(IDLE);
                    }
                }
                Err(error) => {
                    self.failed(&error);
                    self.figures(&store);
                    drop(store);
                    self.sleep(retry);
                    retry = (retry * 2).min(RETRY_LAST);
                }
            }
        }
    }

    /// Send one batch; returns how many records it held.
    fn round(&mut self, store: &Store) -> Result<usize, ForwardError> {
        let (epoch, forwarded) = store.forward_mark()?;
        let rows = store.unforwarded(forwarded, BATCH)?;
        if rows.is_empty() {
            return Ok(0);
        }
        if self.client.is_none() {
            self.client = Some(postgres::connect(&self.settings.postgres)?);
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(0);
        };
        if !self.migrated {
            postgres::migrate(client)?;
            self.migrated = true;
        }
        let new = match postgres::insert(client, &self.settings.node, epoch, &rows) {
            Ok(new) => new,
            Err(error) => {
                // A broken connection is made again next round.
                if client.is_closed() {
                    self.client = None;
                }
                return Err(error.into());
            }
        };
        let last = rows.last().map_or(forwarded, |r| r.id);
        store.set_forwarded(last)?;
        self.status.forwarded.fetch_add(new, Ordering::Relaxed);
        ::metrics::counter!(telemetry::HITLOG_FORWARDED).increment(new);
        Ok(rows.len())
    }

    /// Refresh the spool's figures.
    fn figures(&mut self, store: &Store) {
        let backlog = store
            .forward_mark()
            .and_then(|(_, forwarded)| store.backlog(forwarded));
        match backlog {
            Ok(backlog) => {
                self.status
                    .spooled
                    .store(backlog.records, Ordering::Relaxed);
                let oldest = backlog.oldest_ts.unwrap_or(0);
                self.status.oldest_ms.store(oldest, Ordering::Relaxed);
                ::metrics::gauge!(telemetry::HITLOG_SPOOLED).set(backlog.records as f64);
                let age = if oldest == 0 {
                    0.0
                } else {
                    (now_ms() - oldest).max(0) as f64 / 1000.0
                };
                ::metrics::gauge!(telemetry::HITLOG_SPOOL_AGE).set(age);
            }
            Err(error) => self.failed(&ForwardError::Store(error)),
        }
    }

    fn failed(&mut self, error: &ForwardError) {
        let _ = self.status.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *self
            .status
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        ::metrics::counter!(telemetry::HITLOG_FORWARD_ERRORS).increment(1);
        if let ForwardError::Pg(PgError::TooNew { .. }) = error {
            // Nothing this build can do; say so at every retry's log slot.
            self.migrated = false;
        }
        if self.logged.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
            tracing::warn!(
                %error,
                spooled = self.status.spooled.load(Ordering::Relaxed),
                "hit log: cannot forward to the PostgreSQL hit store; records stay spooled \
                 in the local database"
            );
            self.logged = Some(Instant::now());
        }
    }

    /// Sleep for `d`, or less when told to stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}
