//! `portcullis download pull`: fetch every `[[download]]` list (or one)
//! into feeds_dir now, as the running resolver would at its next
//! interval, with the same checks; a running resolver reloads the file
//! when it lands.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{UsageError, init_tracing, load_config};

pub fn pull(only: Option<&str>, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let sources: Vec<_> = config
        .downloads
        .iter()
        .filter(|d| only.is_none_or(|f| d.file == f))
        .collect();
    if sources.is_empty() {
        return Err(UsageError::msg(format!(
            "no [[download]] entry{} in {}",
            only.map(|f| format!(" with file {f:?}"))
                .unwrap_or_default(),
            path.display()
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut failed = 0;
    for source in sources {
        let outcome = portcullis::sources::download::client(source)
            .map_err(|e| anyhow::anyhow!("download {}: {e}", source.file))
            .and_then(|client| {
                runtime
                    .block_on(portcullis::sources::download::fetch(
                        source,
                        &client,
                        &config.blocklist.feeds_dir,
                        &config.blocklist.state_dir,
                    ))
                    .map_err(anyhow::Error::from)
            });
        match outcome {
            Ok(p) => println!(
                "{}: {}{}",
                source.file,
                if p.changed {
                    "new list written"
                } else {
                    "unchanged"
                },
                p.detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            Err(e) => {
                eprintln!("portcullis: {e:#}; the previous file stays");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} download(s) failed");
    }
    Ok(ExitCode::SUCCESS)
}
