//! `portcullis config check`: validate the config and every file it
//! names, for deployment pipelines. Exit 0 when all is well, 64 for a bad
//! config, 1 when a feed, an allow or protected list, or a credential file
//! has a problem.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use portcullis::orgs::OrgMap;

use super::{UsageError, init_tracing, load_config};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    OrgMap::new(&config.organisations).map_err(|e| UsageError(e.into()))?;
    init_tracing(&config);
    let (_, report) = portcullis::blocklist::compile(&config).context("compiling the blocklist")?;
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
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    if problems.is_empty() {
        println!("config OK");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}
