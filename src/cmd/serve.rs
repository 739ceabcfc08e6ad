//! `portcullis serve`: the config phase and the process around the
//! resolver (tracing, the metrics recorder, the runtime, the signals);
//! the resolver itself is `portcullis::serve`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use portcullis::orgs::OrgMap;
use portcullis::serve::Startup;

use super::{UsageError, init_tracing, load_config};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    portcullis::memory::return_large_frees();
    let started = Instant::now();
    let config = load_config(path)?;
    let orgs = OrgMap::new(&config.organisations).map_err(|e| UsageError(e.into()))?;
    init_tracing(&config);
    tracing::info!(config = %config.path.display(), version = env!("CARGO_PKG_VERSION"), "starting portcullis");
    // Before anything records: handles taken earlier would be no-ops.
    let prometheus = match config.admin.listen {
        Some(_) => {
            Some(portcullis::telemetry::install().context("installing the metrics recorder")?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(config.server.worker_count())
        .thread_name("portcullis-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Installed before serving, so a signal that arrives during start-up
        // is not lost (and a failure to install is a start-up error).
        let shutdown = portcullis::lifecycle::ShutdownSignal::install()
            .context("installing the SIGTERM/SIGINT handlers")?;
        let startup = Startup {
            config: Arc::new(config),
            orgs,
            prometheus,
            started,
        };
        portcullis::serve::serve(startup, shutdown.recv()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
