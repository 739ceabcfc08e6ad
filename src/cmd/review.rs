//! `portcullis logs` and `portcullis report`: the hit log read back for
//! an organisation's security team or the operator.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use portcullis::config::Config;
use portcullis::hitlog::reader::HitSource;
use portcullis::hitlog::store::whole_days_since;
use portcullis::hitlog::store::{Cursor, Filter};
use portcullis::hitlog::{now_ms, parse_time};
use portcullis::report::OutputFormat;

use super::{UsageError, init_tracing, load_config};

/// Which records `logs` and `report` look at.
#[derive(clap::Args)]
pub struct FilterArgs {
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

impl FilterArgs {
    fn to_filter(&self, config: &Config) -> anyhow::Result<Filter> {
        if let Some(org) = &self.org
            && !config.organisations.iter().any(|o| &o.id == org)
        {
            let ids: Vec<&str> = config.organisations.iter().map(|o| o.id.as_str()).collect();
            return Err(UsageError::msg(format!(
                "no organisation {org:?} in {} (known: {})",
                config.path.display(),
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            )));
        }
        let now = now_ms();
        let time = |t: &Option<String>, what: &str| {
            t.as_deref()
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(|e| UsageError::msg(format!("--{what}: {e}")))
        };
        let domain = self
            .domain
            .as_deref()
            .map(portcullis::domain::normalize)
            .transpose()
            .map_err(|e| UsageError::msg(format!("--domain: {e}")))?;
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

/// `logs`: matching records, newest first, `limit` of them (0: all).
pub fn logs(
    args: &FilterArgs,
    limit: usize,
    format: OutputFormat,
    path: &Path,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let filter = args.to_filter(&config)?;
    if matches!(format, OutputFormat::Html) {
        return Err(UsageError::msg(
            "logs: use --format table, json or csv (html is for report)",
        ));
    }
    init_tracing(&config);
    let store = HitSource::from_config(&config);
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
    print!("{}", portcullis::report::hits(&hits, format)?);
    Ok(ExitCode::SUCCESS)
}

/// `report`: totals, rankings and a timeline over a time range.
pub fn report(
    args: &FilterArgs,
    top: usize,
    format: OutputFormat,
    output: Option<&Path>,
    path: &Path,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let mut filter = args.to_filter(&config)?;
    let now = now_ms();
    let since = filter
        .since
        .take()
        .unwrap_or_else(|| whole_days_since(now, 30));
    let until = filter.until.take().unwrap_or(now + 1);
    if since >= until {
        return Err(UsageError::msg("--since must be before --until"));
    }
    init_tracing(&config);
    let store = HitSource::from_config(&config);
    let r = store.report(&filter, since, until, top.max(1))?;
    let text = portcullis::report::report(&r, format)?;
    match output {
        Some(file) => std::fs::write(file, text)
            .with_context(|| format!("writing the report to {}", file.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
