//! The resolver's life, as named phases: config (the caller's), blocklist,
//! bind, spawn, signal (the caller's shutdown future), drain.
//!
//! [`serve`] runs them all in order, as `portcullis serve` does. Each
//! phase is public, so a test can bind its own sockets and hand in its
//! own shutdown: [`blocklist()`], then [`Bound::bind`] (or a `Bound` built
//! by hand), then [`run`]. The blocklist is loaded before anything is
//! bound: a protective resolver that answered before its list was loaded
//! would let listed names through (docs/architecture.md "Data flow of a
//! reload").

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::blocklist::{self, BlocklistHandle, CompileSummary, Compiler, Fingerprint, snapshot};
use crate::config::Config;
use crate::health::{self, Health};
use crate::hitlog;
use crate::lifecycle;
use crate::orgs::OrgMap;
use crate::resolve::Upstream;
use crate::server::local::{Endpoints, LocalNames};
use crate::server::{self, Handler};
use crate::tls::CertStore;
use crate::watch::{Reloader, StatusHandle, Trigger, go_live};

/// What the config phase hands on: the validated config, the
/// organisations built from it, the metrics recorder if one was installed,
/// and when the process started (for the start-up timings).
pub struct Startup {
    pub config: Arc<Config>,
    pub orgs: OrgMap,
    pub prometheus: Option<PrometheusHandle>,
    pub started: Instant,
}

/// Run the resolver until `shutdown` completes, then drain and stop.
pub async fn serve(startup: Startup, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let loaded = blocklist(&startup.config, startup.started).await?;
    let bound = Bound::bind(&startup.config).await?;
    run(startup, loaded, bound, shutdown).await
}

/// The blocklist phase's result: the list serving from the first query,
/// and the compiler and input fingerprints the reloader carries on from.
pub struct Loaded {
    pub handle: BlocklistHandle,
    /// Every list goes live through it (compiles and RPZ increments).
    pub increments: Arc<blocklist::increments::Increments>,
    pub status: StatusHandle,
    compiler: Compiler,
    known: BTreeMap<String, Fingerprint>,
}

/// Phase "blocklist": serve the snapshot if it is valid (the feeds are
/// checked after, by the reloader); otherwise compile the feeds now.
pub async fn blocklist(config: &Arc<Config>, started: Instant) -> anyhow::Result<Loaded> {
    let status: StatusHandle = Arc::default();
    let handle = blocklist::empty_handle();
    let increments = blocklist::increments::Increments::new(Arc::clone(&handle));
    let mut compiler = Compiler::new(Arc::clone(config));
    compiler.keep_last_good();
    match snapshot::load(&config.blocklist.state_dir) {
        Ok(loaded) => {
            tracing::info!(
                generation = loaded.list.generation(),
                entries = loaded.list.entries(),
                took_ms = started.elapsed().as_millis() as u64,
                "blocklist loaded from the snapshot"
            );
            {
                let mut s = status.lock().unwrap_or_else(PoisonError::into_inner);
                s.from_snapshot = true;
                // A validity edge that passed while the resolver was down
                // makes the reloader reload at once.
                s.next_change = loaded.next_change;
            }
            // Big feeds whose files are unchanged keep their layers, so the
            // first reload after a restart is as fast as any other.
            if blocklist::settings_match(config, &loaded.fingerprints) {
                compiler.adopt(&loaded.list, &loaded.fingerprints);
            }
            crate::watch::publish_list(&loaded.list);
            increments.seed(loaded.list, Arc::clone(config));
            Ok(Loaded {
                handle,
                increments,
                status,
                compiler,
                known: loaded.fingerprints,
            })
        }
        Err(error) => {
            let missing = matches!(&error, snapshot::SnapshotError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound);
            if !missing {
                tracing::warn!(%error, "ignoring the snapshot; compiling the feeds");
            }
            let (compiler, result) = tokio::task::spawn_blocking(move || {
                let result = compiler.compile();
                crate::memory::purge();
                (compiler, result)
            })
            .await
            .context("blocklist compiler task")?;
            let (list, report) = result.context("compiling the blocklist")?;
            log_feeds(&report);
            let list = go_live(&increments, &status, config, list, &report);
            tracing::info!(
                entries = list.entries(),
                bytes = list.fst_bytes(),
                took_ms = report.elapsed.as_millis() as u64,
                "blocklist generation {} live",
                list.generation()
            );
            Ok(Loaded {
                handle,
                increments,
                status,
                compiler,
                known: report.inputs,
            })
        }
    }
}

/// Every listener, bound and not yet serving.
pub struct Bound {
    pub dns: server::Sockets,
    pub admin: Option<TcpListener>,
    pub block_page: Option<TcpListener>,
    /// The certificate of the encrypted listeners, if any.
    pub certs: Option<Arc<CertStore>>,
}

impl Bound {
    /// Phase "bind": the DNS, admin and block page addresses of `config`,
    /// failing with the address that could not be bound; and the
    /// certificate, failing with the file that does not load.
    pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
        let certs = match &config.server.encrypted {
            Some(encrypted) => Some(Arc::new(
                CertStore::open(&encrypted.cert, &encrypted.key)
                    .context("loading the TLS certificate (server.tls_cert, server.tls_key)")?,
            )),
            None => None,
        };
        let mut dns = server::bind(&config.server.listen, config.server.worker_count()).await?;
        if let Some(encrypted) = &config.server.encrypted {
            dns.encrypted = server::bind_encrypted(encrypted)?;
        }
        let admin = match config.admin.listen {
            Some(addr) => Some(crate::admin::bind(addr).await?),
            None => None,
        };
        let block_page = match config.block_page.listen {
            Some(addr) => Some(crate::blockpage::bind(addr).await?),
            None => None,
        };
        Ok(Bound {
            dns,
            admin,
            block_page,
            certs,
        })
    }
}

/// Phases "spawn", "signal" and "drain": serve on `bound` until `shutdown`
/// completes, then refuse new queries, drain those in flight and flush
/// the hit log.
pub async fn run(
    startup: Startup,
    loaded: Loaded,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = spawn(startup, loaded, bound).await?;
    shutdown.await;
    running.drain().await;
    Ok(())
}

/// What is running, for the drain.
struct Running {
    config: Arc<Config>,
    /// Watches the config file for changes; stops when dropped.
    _config_watch: Option<notify::RecommendedWatcher>,
    health: Arc<Health>,
    dns: server::Listeners,
    hitlog: Option<hitlog::HitLog>,
    forwarder: Option<hitlog::forward::Forwarder>,
    dnstap: Option<crate::dnstap::Sender>,
}

/// Phase "spawn": the DNS listeners, the hit-log writer, the admin and
/// block page listeners, the upstream probe, the reloader, the config
/// reload (SIGHUP, file changes) and the TAXII pollers.
async fn spawn(startup: Startup, loaded: Loaded, bound: Bound) -> anyhow::Result<Running> {
    let Startup {
        config,
        orgs,
        prometheus,
        started,
    } = startup;
    if let Some(prometheus) = &prometheus {
        tokio::spawn(crate::telemetry::upkeep(prometheus.clone()));
    }
    let Loaded {
        handle,
        increments,
        status,
        compiler,
        known,
    } = loaded;
    let upstream = Arc::new(Upstream::start(&config.resolver).await.map_err(|e| {
        anyhow::anyhow!("configuring the {:?} resolver: {e}", config.resolver.mode)
    })?);
    let mut health = Health::new(
        Arc::clone(&handle),
        Duration::from_secs(config.admin.ready_upstream_secs),
    );
    health.certs = bound.certs.clone();
    health.reload = Some(Arc::clone(&status));
    health.allow_empty = config.blocklist.allow_empty;
    health.answers_dns = !config.server.is_reporting_only();
    let forwarder = match (&config.hitlog.postgres, config.hitlog.enabled) {
        (Some(postgres), true) => Some(
            hitlog::forward::Forwarder::spawn(hitlog::forward::Settings {
                postgres: postgres.clone(),
                node: config.server.node_id.clone(),
                database: config.hitlog.database.clone(),
            })
            .context("starting the hit log forwarder")?,
        ),
        _ => None,
    };
    health.forward = forwarder.as_ref().map(|f| Arc::clone(f.status()));
    let sources = crate::sources::Registry::new();
    let notify = crate::sources::rpz::NotifyTargets::new();
    health.sources = Some(Arc::clone(&sources));
    let health = Arc::new(health);
    let hitlog = if config.hitlog.enabled {
        Some(
            hitlog::spawn(hitlog::writer::Settings::from_config(&config))
                .context("starting the hit log writer")?,
        )
    } else {
        tracing::info!("hit log off (hitlog.enabled = false): no hit is recorded");
        None
    };
    let orgs = Arc::new(orgs);
    let (tap, dnstap) = match &config.dnstap {
        Some(d) => {
            let (tap, sender) = crate::dnstap::spawn(d).context("starting the dnstap sender")?;
            (Some(tap), Some(sender))
        }
        None => (None, None),
    };
    let policy = server::ClientPolicy::new(&config, Arc::clone(&orgs)).handle();
    let handler = Arc::new(Handler {
        blocklist: Arc::clone(&handle),
        policy: Arc::clone(&policy),
        upstream: Arc::clone(&upstream),
        hits: hitlog
            .as_ref()
            .map_or_else(hitlog::HitSender::disabled, |h| h.sender()),
        metrics: server::QueryMetrics::new(),
        health: Arc::clone(&health),
        notify: Arc::clone(&notify),
        listed_memo: Default::default(),
        local: LocalNames::new(
            config.server.application_dns_canary,
            &endpoints(&config, &bound.dns.encrypted),
        ),
        tap,
    });
    let tls_name = config
        .server
        .encrypted
        .as_ref()
        .and_then(|e| e.tls_name.as_deref());
    let tls = bound.certs.map(|certs| server::TlsSetup {
        certs,
        roaming: Arc::new(server::Roaming::new(Arc::clone(&policy), tls_name)),
    });
    let dns = server::serve(
        Arc::clone(&handler),
        bound.dns,
        server::ServeSettings::from_config(&config),
        tls,
    )
    .context("starting the DNS listeners")?;
    health.dns_bound.store(true, Ordering::Relaxed);
    if config.server.is_reporting_only() {
        tracing::info!(
            "reporting only (server.listen = []): no DNS is answered; the review API and page read {}",
            if config.hitlog.postgres.is_some() {
                "the fleet's store"
            } else {
                "this node's store"
            }
        );
    }
    tracing::info!(startup_ms = started.elapsed().as_millis() as u64, "serving");
    {
        let list = handle.load();
        lifecycle::notify_ready(&format!(
            "serving blocklist generation {}, {} names",
            list.generation(),
            list.entries()
        ));
    }
    lifecycle::spawn_watchdog();
    let mut access = None;
    if let Some(listener) = bound.admin {
        let mut state = crate::admin::AdminState::new(&config, prometheus, Arc::clone(&health));
        state.checker = Some(Arc::clone(&handler));
        state.sources = Some(Arc::clone(&sources));
        access = Some(Arc::clone(&state.access));
        let state = Arc::new(state);
        let app = crate::admin::router(state);
        let listener =
            crate::http_limits::LimitedListener::new(listener, config.admin.limits, "admin");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "admin listener failed");
            }
        });
    }
    if let Some(listener) = bound.block_page {
        let state = Arc::new(crate::blockpage::BlockPage::new(
            &config,
            Arc::clone(&policy),
        ));
        tokio::spawn(crate::blockpage::serve(listener, state));
    }
    if !config.server.is_reporting_only() {
        health::spawn_upstream_probe(
            Arc::clone(&upstream),
            Arc::clone(&health),
            Duration::from_secs(config.admin.upstream_probe_secs.max(1)),
        );
    }

    let (trigger_tx, triggers) = tokio::sync::mpsc::channel::<Trigger>(8);
    let serving_config = Arc::new(arc_swap::ArcSwap::new(Arc::clone(&config)));
    let reloader = Reloader {
        config: Arc::clone(&serving_config),
        handle,
        increments: Arc::clone(&increments),
        status,
    };
    tokio::spawn(reloader.run(compiler, known, triggers, trigger_tx.clone()));
    let (cause_tx, causes) = tokio::sync::mpsc::channel(8);
    let config_watch = crate::reconfig::spawn_triggers(&config.path, cause_tx)
        .context("installing the SIGHUP handler")?;
    let reconfigurer = crate::reconfig::Reconfigurer {
        config: serving_config,
        policy,
        access,
        blocklist: trigger_tx,
        hitlog: hitlog.as_ref().map(|h| h.updates()),
        pullers: crate::sources::Pullers::spawn(&config, &sources, &notify, &increments),
        sources,
        notify,
        increments,
    };
    tokio::spawn(reconfigurer.run(causes));
    Ok(Running {
        config,
        _config_watch: config_watch,
        health,
        dns,
        hitlog,
        forwarder,
        dnstap,
    })
}

impl Running {
    /// Phase "drain": refuse new queries, wait up to the grace period for
    /// those in flight, stop the listeners, flush the hit log.
    async fn drain(self) {
        let Running {
            config,
            _config_watch,
            health,
            mut dns,
            hitlog,
            forwarder,
            dnstap,
        } = self;
        let lifecycle = &health.lifecycle;
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        tracing::info!(
            in_flight = lifecycle.in_flight(),
            grace_secs = grace.as_secs(),
            "shutting down: refusing new queries, draining"
        );
        lifecycle::notify_stopping();
        let left = lifecycle.drain(grace).await;
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "grace period over; abandoning queries still in flight"
            );
        }
        if tokio::time::timeout(Duration::from_secs(2), dns.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the DNS listeners did not stop within 2 s");
        }
        drop(dns);
        if let Some(hitlog) = hitlog {
            let counters = Arc::clone(hitlog.counters());
            let flushed =
                tokio::task::spawn_blocking(move || hitlog.close(Duration::from_secs(10)))
                    .await
                    .unwrap_or(false);
            let written = counters.written.load(Ordering::Relaxed);
            let dropped = counters.dropped();
            if dropped > 0 || !flushed {
                tracing::warn!(
                    written,
                    dropped,
                    flushed,
                    "hit log closed; records were lost"
                );
            } else {
                tracing::info!(written, dropped, flushed, "hit log closed");
            }
        }
        // The listeners are gone: what is queued is the last of the stream.
        if let Some(dnstap) = dnstap {
            let _ = tokio::task::spawn_blocking(move || dnstap.stop()).await;
        }
        // What it has not sent stays spooled for the next start.
        if let Some(forwarder) = forwarder {
            let _ = tokio::task::spawn_blocking(move || forwarder.stop()).await;
        }
    }
}

/// The encrypted endpoints as bound (a configured port 0 is the one the
/// kernel chose), for discovery (DDR).
fn endpoints(config: &Config, sockets: &server::EncryptedSockets) -> Endpoints {
    let Some(encrypted) = &config.server.encrypted else {
        return Endpoints::default();
    };
    let tcp = |listeners: &[TcpListener]| {
        listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect::<Vec<_>>()
    };
    Endpoints {
        name: encrypted
            .tls_name
            .as_deref()
            .and_then(|n| hickory_proto::rr::Name::from_ascii(format!("{n}.")).ok()),
        dot: tcp(&sockets.dot),
        doh: tcp(&sockets.doh),
        doq: sockets
            .doq
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect(),
    }
}

/// One line per feed after the start-up compile.
fn log_feeds(report: &CompileSummary) {
    for feed in &report.feeds {
        match &feed.error {
            Some(error) => tracing::error!(feed = %feed.name, %error, "feed not loaded"),
            None => tracing::info!(
                feed = %feed.name,
                format = feed.format.map_or("?", |f| f.as_str()),
                loaded = feed.parse.loaded,
                rejected = feed.parse.rejected,
                suppressed = feed.suppressed.count,
                "feed loaded"
            ),
        }
    }
}
