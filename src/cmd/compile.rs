//! `portcullis compile`: compile the blocklist once and report what each
//! feed contributed, without serving.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{init_tracing, load_config};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let (_list, report) =
        portcullis::blocklist::compile(&config).context("compiling the blocklist")?;
    print!("{}", portcullis::summary::compile_summary(&report));
    if report.feeds_loaded() == 0 && !report.feeds.is_empty() {
        anyhow::bail!("no feed could be loaded");
    }
    Ok(ExitCode::SUCCESS)
}
