//! `portcullis taxii pull`: pull every configured TAXII collection (or
//! one) into feeds_dir now, as the background pollers would.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{UsageError, init_tracing, load_config};

pub fn pull(only: Option<&str>, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let sources: Vec<_> = config
        .taxii
        .iter()
        .filter(|t| only.is_none_or(|n| t.name == n))
        .collect();
    if sources.is_empty() {
        return Err(UsageError::msg(format!(
            "no [[taxii]] entry{} in {}",
            only.map(|n| format!(" named {n:?}")).unwrap_or_default(),
            path.display()
        )));
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
