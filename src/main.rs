//! The `portcullis` command: CLI parsing and wiring only.
//!
//! `serve` runs the resolver; `compile` and `check` run the compiler and
//! the lookup on their own, for operators and deployment pipelines. Errors
//! are printed once, with their cause chain, and the exit code says what
//! kind: 64 (EX_USAGE) for a bad config or arguments, 1 for anything else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};

use portcullis::blocklist::{self, Compiler, snapshot};
use portcullis::config::Config;
use portcullis::health::Health;
use portcullis::hitlog::store::{Cursor, Filter, Store};
use portcullis::hitlog::{now_ms, parse_time};
use portcullis::lifecycle;
use portcullis::orgs::OrgMap;
use portcullis::resolve::Upstream;
use portcullis::server::{self, Handler, response::BlockSettings};
use portcullis::watch::{Reloader, StatusHandle, Trigger, record_success};

const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(version, about = "Protective DNS resolver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The config file every subcommand takes.
#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(
        long = "config",
        short = 'c',
        env = "PORTCULLIS_CONFIG",
        default_value = "/etc/portcullis/portcullis.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the resolver.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Compile the blocklist and report what each feed contributed.
    Compile {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// TAXII 2.1 collections.
    Taxii {
        #[command(subcommand)]
        command: TaxiiCommand,
    },
    /// List blocked queries from the hit log, newest first.
    Logs {
        #[command(flatten)]
        filter: FilterArgs,
        /// Records to show; 0 for all.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Summarise blocked queries: totals, categories and feeds, top names,
    /// top clients, a per-day timeline.
    Report {
        #[command(flatten)]
        filter: FilterArgs,
        /// Rows in each ranking.
        #[arg(long, default_value_t = 20)]
        top: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the decision for a name and why.
    Check {
        /// The name to look up.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and every feed it names, without serving: for
    /// deployment pipelines. Exit 0 when all is well, 64 for a bad config,
    /// 1 when a feed, an allow or protected list, or a credential file has
    /// a problem.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum TaxiiCommand {
    /// Pull every configured collection (or one) into feeds_dir now.
    Pull {
        /// Only the `[[taxii]]` entry with this name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Which records `logs` and `report` look at.
#[derive(clap::Args)]
struct FilterArgs {
    /// One organisation's records (default: every organisation).
    #[arg(long)]
    org: Option<String>,
    /// From this time: a duration back from now (24h, 7d), an RFC 3339
    /// time or a date (2026-11-01). `report` defaults to the last 30 UTC
    /// days (29 whole days and today).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time (same forms); default now.
    #[arg(long)]
    until: Option<String>,
    /// Only this client address.
    #[arg(long)]
    client: Option<std::net::IpAddr>,
    /// Only queries for this name or names below it (query or listed name).
    #[arg(long)]
    domain: Option<String>,
    /// Only this category.
    #[arg(long)]
    category: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
    Html,
}

impl From<OutputFormat> for portcullis::report::Format {
    fn from(f: OutputFormat) -> Self {
        use portcullis::report::Format;
        match f {
            OutputFormat::Table => Format::Table,
            OutputFormat::Json => Format::Json,
            OutputFormat::Csv => Format::Csv,
            OutputFormat::Html => Format::Html,
        }
    }
}

/// An error that should exit with EX_USAGE.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct UsageError(anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config.path),
        Command::Compile { config } => compile(&config.path),
        Command::Check { name, config } => check(&name, &config.path),
        Command::Logs {
            filter,
            limit,
            format,
            config,
        } => logs(&filter, limit, format, &config.path),
        Command::Report {
            filter,
            top,
            format,
            output,
            config,
        } => report(&filter, top, format, output.as_deref(), &config.path),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config.path),
        Command::Taxii {
            command: TaxiiCommand::Pull { name, config },
        } => taxii_pull(name.as_deref(), &config.path),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| UsageError(e.into()).into())
}

fn init_tracing(level: &str) {
    init_tracing_as(level, portcullis::config::LogFormat::Text)
}

fn init_tracing_as(level: &str, format: portcullis::config::LogFormat) {
    // hickory logs every request at info; an operator's "info" means ours.
    let mut filter = level.to_owned();
    if !filter.contains("hickory") {
        filter.push_str(
            ",hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,hickory_net=warn",
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        portcullis::config::LogFormat::Json => builder.json().init(),
        portcullis::config::LogFormat::Text => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}

fn compile(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&std::env::var("PORTCULLIS_LOG").unwrap_or_else(|_| "warn".to_owned()));
    let (_list, report) = blocklist::compile(&config).context("compiling the blocklist")?;
    print!("{}", portcullis::summary::compile_summary(&report));
    if report.feeds_loaded() == 0 && !report.feeds.is_empty() {
        anyhow::bail!("no feed could be loaded");
    }
    Ok(ExitCode::SUCCESS)
}

fn taxii_pull(only: Option<&str>, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing("warn");
    let sources: Vec<_> = config
        .taxii
        .iter()
        .filter(|t| only.is_none_or(|n| t.name == n))
        .collect();
    if sources.is_empty() {
        return Err(UsageError(anyhow::anyhow!(
            "no [[taxii]] entry{} in {}",
            only.map(|n| format!(" named {n:?}")).unwrap_or_default(),
            path.display()
        ))
        .into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = portcullis::taxii::client().context("building the HTTP client")?;
    let mut failed = 0;
    for source in sources {
        match runtime.block_on(portcullis::taxii::pull(
            source,
            &client,
            &config.blocklist.feeds_dir,
            &config.blocklist.state_dir,
        )) {
            Ok(r) => println!(
                "{}: {} objects received in {} pages, {} in {}",
                source.name,
                r.received,
                r.pages,
                r.total,
                config
                    .blocklist
                    .feeds_dir
                    .join(portcullis::taxii::feed_file_name(source))
                    .display()
            ),
            Err(e) => {
                eprintln!("portcullis: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} TAXII pull(s) failed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Poll each TAXII source on its interval, in the background.
fn spawn_taxii_pollers(config: &Config) {
    if config.taxii.is_empty() {
        return;
    }
    let client = match portcullis::taxii::client() {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "cannot build the TAXII HTTP client; TAXII pulls are off");
            return;
        }
    };
    for source in config.taxii.clone() {
        let client = client.clone();
        let feeds_dir = config.blocklist.feeds_dir.clone();
        let state_dir = config.blocklist.state_dir.clone();
        tokio::spawn(async move {
            let mut interval =
                tokio::time::interval(Duration::from_secs(source.poll_interval_secs));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match portcullis::taxii::pull(&source, &client, &feeds_dir, &state_dir).await {
                    Ok(r) => {
                        tracing::info!(taxii = %source.name, received = r.received, total = r.total, "TAXII pull done")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TAXII pull failed; the previous bundle stays")
                    }
                }
            }
        });
    }
}

fn config_check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    OrgMap::new(&config.organisations).map_err(|e| UsageError(e.into()))?;
    init_tracing("error");
    let (_, report) = blocklist::compile(&config).context("compiling the blocklist")?;
    let mut problems: Vec<String> = report
        .feeds
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("feed {}: {e}", f.name)))
        .collect();
    for t in &config.taxii {
        for file in [&t.password_file, &t.token_file].into_iter().flatten() {
            if let Err(e) = std::fs::metadata(file) {
                problems.push(format!(
                    "taxii {}: credential file {}: {e}",
                    t.name,
                    file.display()
                ));
            }
        }
    }
    println!(
        "{}: {} feeds, {} names, {} organisations, {} TAXII sources",
        path.display(),
        report.feeds.len(),
        report.entries,
        config.organisations.len(),
        config.taxii.len()
    );
    if problems.is_empty() {
        println!("config OK");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}

impl FilterArgs {
    fn to_filter(&self, config: &Config) -> anyhow::Result<Filter> {
        if let Some(org) = &self.org
            && !config.organisations.iter().any(|o| &o.id == org)
        {
            let ids: Vec<&str> = config.organisations.iter().map(|o| o.id.as_str()).collect();
            return Err(UsageError(anyhow::anyhow!(
                "no organisation {org:?} in {} (known: {})",
                config.path.display(),
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            ))
            .into());
        }
        let now = now_ms();
        let time = |t: &Option<String>, what: &str| {
            t.as_deref()
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(|e| UsageError(anyhow::anyhow!("--{what}: {e}")))
        };
        let domain = self
            .domain
            .as_deref()
            .map(portcullis::domain::normalize)
            .transpose()
            .map_err(|e| UsageError(anyhow::anyhow!("--domain: {e}")))?;
        Ok(Filter {
            org: self.org.clone(),
            since: time(&self.since, "since")?,
            until: time(&self.until, "until")?,
            client: self.client.map(|c| c.to_canonical()),
            domain,
            category: self.category.clone(),
        })
    }
}

fn open_hits(config: &Config) -> anyhow::Result<Store> {
    let database = portcullis::hitlog::writer::Settings::from_config(config).database;
    Ok(Store::open_reader(&database)?)
}

fn logs(
    args: &FilterArgs,
    limit: usize,
    format: OutputFormat,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let filter = args.to_filter(&config)?;
    if matches!(format, OutputFormat::Html) {
        return Err(UsageError(anyhow::anyhow!(
            "logs: use --format table, json or csv (html is for report)"
        ))
        .into());
    }
    let store = open_hits(&config)?;
    let mut hits = Vec::new();
    let mut after = None;
    loop {
        let want = if limit == 0 {
            10_000
        } else {
            (limit - hits.len()).min(10_000)
        };
        let page = store.hits(&filter, after, want)?;
        hits.extend(page.hits);
        after = page.next.as_deref().and_then(Cursor::parse);
        if after.is_none() || (limit != 0 && hits.len() >= limit) {
            break;
        }
    }
    print!("{}", portcullis::report::hits(&hits, format.into())?);
    Ok(ExitCode::SUCCESS)
}

fn report(
    args: &FilterArgs,
    top: usize,
    format: OutputFormat,
    output: Option<&std::path::Path>,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let mut filter = args.to_filter(&config)?;
    let now = now_ms();
    let since = filter
        .since
        .take()
        .unwrap_or_else(|| portcullis::hitlog::store::whole_days_since(now, 30));
    let until = filter.until.take().unwrap_or(now + 1);
    if since >= until {
        return Err(UsageError(anyhow::anyhow!("--since must be before --until")).into());
    }
    let store = open_hits(&config)?;
    let r = store.report(&filter, since, until, top.max(1))?;
    let text = portcullis::report::report(&r, format.into())?;
    match output {
        Some(file) => std::fs::write(file, text)
            .with_context(|| format!("writing the report to {}", file.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn check(name: &str, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing("error");
    let (list, _) = blocklist::compile(&config).context("compiling the blocklist")?;
    let explanation = list
        .explain(name)
        .map_err(|e| UsageError(anyhow::anyhow!("{name:?} is not a domain name: {e}")))?;
    print!("{}", portcullis::summary::explanation(&list, &explanation));
    Ok(ExitCode::SUCCESS)
}

fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    portcullis::memory::return_large_frees();
    let started = Instant::now();
    let config = load_config(path)?;
    let orgs = OrgMap::new(&config.organisations).map_err(|e| UsageError(e.into()))?;
    init_tracing_as(&config.log.level, config.log.format);
    tracing::info!(config = %config.path.display(), version = env!("CARGO_PKG_VERSION"), "starting portcullis");
    // Before anything records: handles taken earlier would be no-ops.
    let prometheus = match config.admin.listen {
        Some(_) => Some(portcullis::metrics::install().context("installing the metrics recorder")?),
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(config.server.worker_count())
        .thread_name("portcullis-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        if let Some(prometheus) = &prometheus {
            tokio::spawn(portcullis::metrics::upkeep(prometheus.clone()));
        }
        let config = Arc::new(config);
        let status: StatusHandle = Arc::default();
        let mut compiler = Compiler::new(Arc::clone(&config));
        // A valid snapshot serves at once; the feeds are checked after.
        // Without one, compile before binding: a protective resolver that
        // answers before its list is loaded would let listed names through.
        let (list, known) = match snapshot::load(&config.blocklist.state_dir) {
            Ok(loaded) => {
                tracing::info!(
                    generation = loaded.list.generation(),
                    entries = loaded.list.entries(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "blocklist loaded from the snapshot"
                );
                                status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).from_snapshot = true;
                // Big feeds whose files are unchanged keep their layers, so
                // the first reload after a restart is as fast as any other.
                if blocklist::settings_match(&config, &loaded.fingerprints) {
                    compiler.adopt(&loaded.list, &loaded.fingerprints);
                }
                (loaded.list, loaded.fingerprints)
            }
            Err(error) => {
                if !matches!(&error, snapshot::SnapshotError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound) {
                    tracing::warn!(%error, "ignoring the snapshot; compiling the feeds");
                }
                let (c, result) = tokio::task::spawn_blocking(move || {
                    let result = compiler.compile();
                    (compiler, result)
                })
                .await
                .context("blocklist compiler task")?;
                compiler = c;
                let (mut list, report) = result.context("compiling the blocklist")?;
                log_feeds(&report);
                list.set_generation(1);
                record_success(&status, 1, &report);
                tracing::info!(
                    entries = list.entries(),
                    bytes = list.fst_bytes(),
                    took_ms = report.elapsed.as_millis() as u64,
                    "blocklist generation 1 live"
                );
                (list, report.inputs)
            }
        };
        portcullis::watch::publish_list(&list);
        let handle: blocklist::BlocklistHandle = Arc::new(ArcSwap::from_pointee(list));
        if !status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).from_snapshot {
            let (list, state_dir, fingerprints) = (handle.load_full(), config.blocklist.state_dir.clone(), known.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(error) = snapshot::save(&state_dir, &list, &fingerprints) {
                    tracing::warn!(%error, dir = %state_dir.display(), "cannot write the blocklist snapshot");
                }
            });
        }

        let upstream = Arc::new(
            Upstream::new(&config.resolver)
                .map_err(|e| anyhow::anyhow!("configuring the {:?} resolver: {e}", config.resolver.mode))?,
        );
        let health = Arc::new(Health::new(
            Arc::clone(&handle),
            Duration::from_secs(config.admin.ready_upstream_secs),
        ));
        let lifecycle = Arc::clone(&health.lifecycle);
        let hitlog = if config.hitlog.enabled {
            Some(
                portcullis::hitlog::spawn(portcullis::hitlog::writer::Settings::from_config(&config))
                    .context("starting the hit log writer")?,
            )
        } else {
            tracing::info!("hit log off (hitlog.enabled = false): no hit is recorded");
            None
        };
        let orgs = Arc::new(orgs);
        let handler = Handler {
            blocklist: Arc::clone(&handle),
            orgs: Arc::clone(&orgs),
            upstream: Arc::clone(&upstream),
            block: BlockSettings {
                policy_ttl: config.blocklist.policy_ttl,
                sinkhole_ipv4: config.blocklist.sinkhole_ipv4,
                sinkhole_ipv6: config.blocklist.sinkhole_ipv6,
                ede_names_feed: config.blocklist.ede_names_feed,
            },
            allow_unknown_clients: config.server.allow_unknown_clients,
            hits: hitlog.as_ref().map_or_else(portcullis::hitlog::HitSender::disabled, |h| h.sender()),
            log_allowed: config.hitlog.log_allowed,
            metrics: server::QueryMetrics::new(),
            health: Arc::clone(&health),
        };
        let sockets = server::bind(&config.server.listen, config.server.worker_count()).await?;
        let admin = match config.admin.listen {
            Some(addr) => Some(portcullis::admin::bind(addr).await?),
            None => None,
        };
        let block_page = match config.block_page.listen {
            Some(addr) => Some(portcullis::blockpage::bind(addr).await?),
            None => None,
        };
        let mut dns = server::serve(
            handler,
            sockets,
            Duration::from_secs(config.server.tcp_timeout_secs),
            config.resolver.packet_cache_size,
        );
        health.dns_bound.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(startup_ms = started.elapsed().as_millis() as u64, "serving");
        {
            let list = handle.load();
            lifecycle::notify_ready(&format!("serving blocklist generation {}, {} names", list.generation(), list.entries()));
        }
        lifecycle::spawn_watchdog();
        if let Some(listener) = admin {
            let state = Arc::new(portcullis::admin::AdminState::new(&config, prometheus, Arc::clone(&health)));
            let app = portcullis::admin::router(state);
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!(%error, "admin listener failed");
                }
            });
        }
        if let Some(listener) = block_page {
            let state = Arc::new(portcullis::blockpage::BlockPage::new(&config, Arc::clone(&orgs)));
            tokio::spawn(portcullis::blockpage::serve(listener, state));
        }
        spawn_upstream_probe(
            Arc::clone(&upstream),
            Arc::clone(&health),
            Duration::from_secs(config.admin.upstream_probe_secs.max(1)),
        );

        let (trigger_tx, triggers) = tokio::sync::mpsc::channel(8);
        let reloader = Reloader { config: Arc::clone(&config), handle, status: Arc::clone(&status) };
        tokio::spawn(reloader.run(compiler, known, triggers, trigger_tx.clone()));
        spawn_sighup(trigger_tx)?;
        spawn_taxii_pollers(&config);

        lifecycle::shutdown_signal().await.context("installing the SIGTERM/SIGINT handlers")?;
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        tracing::info!(in_flight = lifecycle.in_flight(), grace_secs = grace.as_secs(), "shutting down: refusing new queries, draining");
        lifecycle::notify_stopping();
        let left = lifecycle.drain(grace).await;
        if left > 0 {
            tracing::warn!(in_flight = left, "grace period over; abandoning queries still in flight");
        }
        if tokio::time::timeout(Duration::from_secs(2), dns.shutdown()).await.is_err() {
            tracing::warn!("the DNS listeners did not stop within 2 s");
        }
        drop(dns);
        if let Some(hitlog) = hitlog {
            let counters = Arc::clone(hitlog.counters());
            let flushed = tokio::task::spawn_blocking(move || hitlog.close(Duration::from_secs(10)))
                .await
                .unwrap_or(false);
            tracing::info!(
                written = counters.written.load(std::sync::atomic::Ordering::Relaxed),
                dropped = counters.dropped(),
                flushed,
                "hit log closed"
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn log_feeds(report: &blocklist::CompileReport) {
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

/// Keep the readiness check's view of the upstream fresh when no query
/// does: resolve `. NS` whenever the last answer is getting old.
fn spawn_upstream_probe(upstream: Arc<Upstream>, health: Arc<Health>, every: Duration) {
    tokio::spawn(async move {
        let root = hickory_proto::rr::LowerName::from(hickory_proto::rr::Name::root());
        loop {
            if !health.upstream_fresh(every) {
                match upstream
                    .resolve(&root, hickory_proto::rr::RecordType::NS, false)
                    .await
                {
                    Ok(_) => health.upstream_answered(),
                    Err(error) => {
                        health.upstream_failed();
                        tracing::debug!(%error, "upstream probe failed");
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// SIGHUP (systemctl reload) forces a rebuild.
fn spawn_sighup(tx: tokio::sync::mpsc::Sender<Trigger>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: rebuilding the blocklist");
            let _ = tx.send(Trigger::Signal).await;
        }
    });
    Ok(())
}
