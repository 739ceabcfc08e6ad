//! The subcommands, one file each; `main.rs` parses the command line and
//! calls one of them. Each returns the exit code or an error; an error
//! wrapped in [`UsageError`] exits with 64 (EX_USAGE), any other with 1.

pub mod api;
pub mod check;
pub mod compile;
pub mod config_check;
pub mod download;
pub mod feeds;
pub mod review;
pub mod serve;
pub mod share;
pub mod taxii;

use std::path::Path;

use portcullis::config::{Config, LogFormat};

/// An error that should exit with EX_USAGE (a bad config or argument).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsageError(pub anyhow::Error);

impl UsageError {
    pub fn msg(text: impl std::fmt::Display) -> anyhow::Error {
        UsageError(anyhow::anyhow!("{text}")).into()
    }
}

/// Load and validate the config; a bad one is a usage error.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| UsageError(e.into()).into())
}

/// Log to standard error at the config's `log.level` and `log.format`,
/// for every command; `PORTCULLIS_LOG` (a level or filter) overrides the
/// level without editing the config.
pub fn init_tracing(config: &Config) {
    let level = std::env::var("PORTCULLIS_LOG").unwrap_or_else(|_| config.log.level.clone());
    // hickory logs every request at info, and its recursor warns about
    // every negative upstream answer; an operator's "info" means ours.
    let mut filter = level;
    if !filter.contains("hickory") {
        filter.push_str(
            ",hickory_server=warn,hickory_proto=warn,hickory_resolver=error,hickory_net=warn",
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = config.log.format == LogFormat::Text && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(portcullis::log_output::EscapedStderr { ansi });
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(ansi).init(),
    }
    // Validation only collects these; they are logged once there is a log.
    for warning in &config.warnings {
        tracing::warn!(config = %config.path.display(), "{warning}");
    }
}
