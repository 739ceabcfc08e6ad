//! Reload: file drops, SIGHUP, periodic rescans and STIX expiry turn into
//! debounced reloads whose result replaces the blocklist with one
//! `ArcSwap::store` (docs/architecture.md "Data flow of a reload").
//!
//! The compiler lives on its own thread at the lowest scheduling priority,
//! so a reload only takes CPU the query path leaves over. Queries never
//! wait for it: they keep `load()`ing the old list until the store, and a
//! query in flight finishes on the list it started with (the old one is
//! freed when its last reader drops it). A reload that fails leaves the
//! old list serving. After every successful reload the snapshot in
//! state_dir is rewritten, so a restart serves at once.
//!
//! [`ReloadStatus`] is the one place the rest of the program (metrics, the
//! admin API) learns what the reloader is doing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::blocklist::increments::Increments;
use crate::blocklist::{
    self, BlocklistHandle, CompileSummary, Compiler, Fingerprint, inputs_match, snapshot,
};
use crate::config::Config;
use crate::telemetry;

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A file in feeds_dir was created, changed, renamed into place or deleted.
    Files,
    /// SIGHUP (`systemctl reload`): reload even if nothing looks changed.
    Signal,
    /// The periodic rescan.
    Rescan,
    /// A STIX validity edge passed.
    Expiry,
    /// Start-up from a snapshot: reload only if the feeds differ.
    Startup,
    /// The config was reloaded: rebuild with its feed settings.
    Config,
}

/// One feed as the status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedStatus {
    pub format: Option<String>,
    pub entries: usize,
    pub rejected: usize,
    /// The last error, if the last attempt failed.
    pub error: Option<String>,
    pub kept_previous: bool,
    /// Failures since start.
    pub errors_total: u64,
}

/// What the reloader has done, for metrics and health checks.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub generation: u64,
    pub entries: usize,
    pub last_success: Option<SystemTime>,
    pub last_duration: Option<Duration>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub feeds: BTreeMap<String, FeedStatus>,
    pub next_change: Option<SystemTime>,
    /// Whether the list being served came from the snapshot.
    pub from_snapshot: bool,
}

/// Shared status; read rarely, written once per reload.
pub type StatusHandle = Arc<Mutex<ReloadStatus>>;

/// Publish the live list's size and generation as gauges.
pub fn publish_list(list: &blocklist::Blocklist) {
    ::metrics::gauge!(telemetry::BLOCKLIST_ENTRIES).set(list.entries() as f64);
    ::metrics::gauge!(telemetry::BLOCKLIST_GENERATION).set(list.generation() as f64);
    ::metrics::gauge!(telemetry::BLOCKLIST_BYTES).set(list.fst_bytes() as f64);
}

/// Record a successful compile in the status and the metrics.
pub fn record_success(status: &StatusHandle, generation: u64, report: &CompileSummary) {
    ::metrics::counter!(telemetry::RELOADS, "result" => "ok").increment(1);
    ::metrics::histogram!(telemetry::RELOAD_DURATION).record(report.elapsed.as_secs_f64());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    ::metrics::gauge!(telemetry::LAST_RELOAD).set(now);
    for f in &report.feeds {
        ::metrics::gauge!(telemetry::BLOCKLIST_FEED_ENTRIES, "feed" => f.name.clone())
            .set(f.parse.loaded as f64);
        if f.error.is_some() {
            ::metrics::counter!(telemetry::FEED_ERRORS, "feed" => f.name.clone()).increment(1);
        }
    }
    let mut s = status.lock().unwrap_or_else(PoisonError::into_inner);
    // A deleted feed contributes nothing any more.
    for gone in s
        .feeds
        .keys()
        .filter(|n| !report.feeds.iter().any(|f| &f.name == *n))
    {
        ::metrics::gauge!(telemetry::BLOCKLIST_FEED_ENTRIES, "feed" => gone.clone()).set(0.0);
    }
    s.generation = generation;
    s.entries = report.entries;
    s.last_success = Some(SystemTime::now());
    s.last_duration = Some(report.elapsed);
    s.reloads_ok += 1;
    s.next_change = report.next_change;
    s.from_snapshot = false;
    let mut feeds = BTreeMap::new();
    for f in &report.feeds {
        let previous = s.feeds.get(&f.name).map_or(0, |p| p.errors_total);
        feeds.insert(
            f.name.clone(),
            FeedStatus {
                format: f.format.map(|x| x.to_string()),
                entries: f.parse.loaded,
                rejected: f.parse.rejected,
                error: f.error.clone(),
                kept_previous: f.kept_previous,
                errors_total: previous + u64::from(f.error.is_some()),
            },
        );
    }
    s.feeds = feeds;
}

/// Put a compiled list live as the next generation: swap it into
/// `handle`, publish its gauges, record the report in `status`, and write
/// the snapshot in the background. The start-up compile and every reload
/// take this one path, so a list is never live without its snapshot and
/// status. Returns the list now serving.
pub fn go_live(
    increments: &Increments,
    status: &StatusHandle,
    config: &Arc<Config>,
    list: blocklist::Blocklist,
    report: &CompileSummary,
) -> Arc<blocklist::Blocklist> {
    // Pending RPZ increments stay on top of the compiled list until a
    // compile that read their zone file goes live.
    let started = report.started.unwrap_or_else(|| {
        Instant::now()
            .checked_sub(report.elapsed)
            .unwrap_or_else(Instant::now)
    });
    let kept: Vec<&str> = report
        .feeds
        .iter()
        .filter(|f| f.kept_previous || f.error.is_some())
        .map(|f| f.name.as_str())
        .collect();
    let (compiled, list) = increments.publish(list, Arc::clone(config), started, &kept);
    let generation = list.generation();
    publish_list(&list);
    record_success(status, generation, report);
    let state_dir = config.blocklist.state_dir.clone();
    // The snapshot is the compiled list: increments are not what the
    // feeds compile to until their compile.
    let (snapshot_list, fingerprints) = (compiled, report.inputs.clone());
    let next_change = report.next_change;
    // Writing 15 MB is not query-path work.
    tokio::task::spawn_blocking(move || {
        let result = match snapshot::save(&state_dir, &snapshot_list, &fingerprints, next_change) {
            Ok(_) => "ok",
            Err(error) => {
                tracing::warn!(%error, dir = %state_dir.display(), "cannot write the blocklist snapshot");
                "error"
            }
        };
        ::metrics::counter!(crate::telemetry::SNAPSHOT_WRITES, "result" => result).increment(1);
    });
    list
}

/// A request to the compiler thread.
struct Job {
    reply: oneshot::Sender<Result<(blocklist::Blocklist, CompileSummary), String>>,
    /// The config to build with (a config reload may have changed it).
    config: Arc<Config>,
    /// SIGHUP: feeds deleted from feeds_dir go for good.
    confirm_deletions: bool,
}

/// Start the compiler thread (lowest priority) owning `compiler`.
fn spawn_compiler(mut compiler: Compiler) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("portcullis-compiler".into())
        .spawn(move || {
            if let Err(error) =
                thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
            {
                tracing::debug!(?error, "could not lower the compiler thread's priority");
            }
            for job in rx {
                compiler.set_config(job.config);
                let result = if job.confirm_deletions {
                    compiler.compile_confirming_deletions()
                } else {
                    compiler.compile()
                };
                let result = result.map_err(|e| e.to_string());
                let _ = job.reply.send(result);
                crate::memory::purge();
            }
        })?;
    Ok(tx)
}

/// Everything the reload loop needs.
pub struct Reloader {
    /// The serving config: a config reload swaps it.
    pub config: Arc<ArcSwap<Config>>,
    pub handle: BlocklistHandle,
    pub increments: Arc<Increments>,
    pub status: StatusHandle,
}

impl Reloader {
    /// Run until the process ends: watch, debounce, reload, swap.
    /// `triggers` also receives SIGHUP and start-up requests from main.
    ///
    /// `compiler` may already hold parsed feeds (from the start-up compile);
    /// `known` are the fingerprints of the inputs the serving list was
    /// built from (from the snapshot, or from the start-up compile).
    pub async fn run(
        self,
        compiler: Compiler,
        mut known: BTreeMap<String, Fingerprint>,
        mut triggers: tmpsc::Receiver<Trigger>,
        trigger_tx: tmpsc::Sender<Trigger>,
    ) {
        let compiler = match spawn_compiler(compiler) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "cannot start the compiler thread; the blocklist will not reload");
                return;
            }
        };
        // feeds_dir, the debounce and the rescan period are fixed until a
        // restart (a config reload says so).
        let first = self.config.load_full();
        let _watcher = watch_dir(&first.blocklist.feeds_dir, trigger_tx.clone());
        // Files may have changed between the compile (or the snapshot) and
        // the watch starting: check once now that events cannot be missed.
        let _ = trigger_tx.try_send(Trigger::Startup);
        let debounce = Duration::from_millis(first.blocklist.debounce_ms);
        let rescan = Duration::from_secs(first.blocklist.rescan_secs);
        let mut next_rescan = tokio::time::Instant::now() + rescan;
        loop {
            let next_change = self
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next_change;
            // Wake for a validity edge at most a day ahead (and re-check).
            let expiry_in = next_change
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(86_400))
                .min(Duration::from_secs(86_400));
            let mut trigger = tokio::select! {
                t = triggers.recv() => match t {
                    Some(t) => t,
                    None => return,
                },
                _ = tokio::time::sleep_until(next_rescan) => Trigger::Rescan,
                _ = tokio::time::sleep(expiry_in), if next_change.is_some() => Trigger::Expiry,
            };
            if trigger == Trigger::Rescan {
                next_rescan = tokio::time::Instant::now() + rescan;
            }
            if trigger == Trigger::Files {
                // Debounce: wait for `debounce` without further events.
                loop {
                    match tokio::time::timeout(debounce, triggers.recv()).await {
                        Ok(Some(Trigger::Files)) => continue,
                        Ok(Some(other)) => {
                            trigger = other;
                            break;
                        }
                        Err(_) => break,
                        Ok(None) => return,
                    }
                }
            }
            let config = self.config.load_full();
            if matches!(trigger, Trigger::Rescan | Trigger::Startup | Trigger::Files)
                && inputs_match(&config, &known)
            {
                tracing::debug!(?trigger, "feeds unchanged; no reload");
                continue;
            }
            tracing::info!(?trigger, "reloading the blocklist");
            let (reply, result) = oneshot::channel();
            let job = Job {
                reply,
                config: Arc::clone(&config),
                confirm_deletions: trigger == Trigger::Signal,
            };
            if compiler.send(job).is_err() {
                tracing::error!("the compiler thread has stopped; the blocklist will not reload");
                return;
            }
            let started = Instant::now();
            match result.await {
                Ok(Ok((list, report)))
                    if list.entries() == 0
                        && self.handle.load().entries() > 0
                        && !config.blocklist.allow_empty =>
                {
                    // Every feed gone or empty at once is an accident far
                    // more often than a decision.
                    let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
                    s.reloads_failed += 1;
                    ::metrics::counter!(telemetry::RELOADS, "result" => "error").increment(1);
                    tracing::error!(
                        feeds = report.feeds.len(),
                        "the new blocklist is empty; keeping the one serving (set blocklist.allow_empty to serve an empty list)"
                    );
                    known = report.inputs;
                }
                Ok(Ok((list, report))) => {
                    for f in report.feeds.iter().filter(|f| f.error.is_some()) {
                        tracing::warn!(feed = %f.name, error = f.error.as_deref().unwrap_or(""), kept_previous = f.kept_previous, "feed error");
                    }
                    let list = go_live(&self.increments, &self.status, &config, list, &report);
                    let (generation, entries) = (list.generation(), list.entries());
                    tracing::info!(
                        generation,
                        entries,
                        took_ms = started.elapsed().as_millis() as u64,
                        "blocklist swapped in"
                    );
                    crate::lifecycle::notify_status(&format!(
                        "serving blocklist generation {generation}, {entries} names"
                    ));
                    known = report.inputs;
                }
                Ok(Err(error)) => {
                    let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
                    s.reloads_failed += 1;
                    ::metrics::counter!(telemetry::RELOADS, "result" => "error").increment(1);
                    tracing::error!(%error, "reload failed; the previous blocklist keeps serving");
                }
                Err(_) => {
                    tracing::error!("the compiler thread died; the blocklist will not reload");
                    return;
                }
            }
        }
    }
}

/// Watch feeds_dir; relevant events become `Trigger::Files`.
fn watch_dir(dir: &Path, tx: tmpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant_kind = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        let relevant_name = event.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(blocklist::is_feed_file_name)
        });
        if relevant_kind && relevant_name {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(Trigger::Files);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(%error, "cannot watch feeds_dir; relying on the periodic rescan and SIGHUP");
            return None;
        }
    };
    if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(%error, dir = %dir.display(), "cannot watch feeds_dir; relying on the periodic rescan and SIGHUP");
        return None;
    }
    Some(watcher)
}
