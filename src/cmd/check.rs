//! `portcullis check NAME`: the decision for one name and why.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{UsageError, init_tracing, load_config};

pub fn run(name: &str, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let (list, _) = portcullis::blocklist::compile(&config).context("compiling the blocklist")?;
    let explanation = list
        .explain(name)
        .map_err(|e| UsageError::msg(format!("{name:?} is not a domain name: {e}")))?;
    print!("{}", portcullis::summary::explanation(&list, &explanation));
    Ok(ExitCode::SUCCESS)
}
