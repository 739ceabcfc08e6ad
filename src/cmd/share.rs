//! `portcullis share`: the sightings as one STIX 2.1 bundle file, for a
//! community that takes uploads rather than a TAXII feed. The objects are
//! the ones the TAXII collections serve, ids and all.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use portcullis::hitlog::reader::HitSource;
use portcullis::hitlog::{now_ms, parse_time};
use portcullis::share::{Scope, Sharer, stix};

use super::{UsageError, init_tracing, load_config};

/// Sightings read per round from the store.
const PAGE: usize = 50_000;

#[derive(clap::Args)]
pub struct Args {
    /// Sightings last seen from this time on: a duration back from now
    /// (24h, 7d), an RFC 3339 time or a date (2026-11-01).
    #[arg(long, default_value = "7d")]
    since: String,
    /// Only this organisation's sightings (default: every organisation's,
    /// named or added up as `[share] where_sighted` says).
    #[arg(long)]
    org: Option<String>,
    /// Write the bundle here (default: standard output). The file is
    /// replaced whole or not at all.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

pub fn run(args: &Args, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let now = now_ms();
    let since = parse_time(&args.since, now)
        .map_err(|e| UsageError::msg(format!("--since {:?}: {e}", args.since)))?;
    if let Some(org) = &args.org
        && !config.organisations.iter().any(|o| &o.id == org)
    {
        return Err(UsageError::msg(format!(
            "no organisation {org:?} in {}",
            path.display()
        )));
    }
    init_tracing(&config);
    let sharer = Sharer::from_config(&config);
    let view = sharer.view(match &args.org {
        Some(org) => Scope::Org(org),
        None => Scope::All,
    });
    let source = HitSource::from_config(&config);
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = source.sightings(view, after.as_ref(), Some(since), PAGE)?;
        rows.extend(page.rows);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let sightings = rows.len();
    let objects: Vec<_> = sharer
        .objects(&rows)
        .into_iter()
        .map(|s| s.object)
        .collect();
    let count = objects.len();
    let bundle = stix::bundle(objects, now);
    let mut text = serde_json::to_vec_pretty(&bundle).context("writing the bundle as JSON")?;
    text.push(b'\n');
    match &args.output {
        Some(file) => {
            portcullis::taxii::write_atomically(file, &text)
                .with_context(|| format!("writing the bundle to {}", file.display()))?;
            eprintln!(
                "portcullis: {sightings} sightings ({count} objects) written to {}",
                file.display()
            );
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&text)
                .context("writing the bundle to standard output")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
