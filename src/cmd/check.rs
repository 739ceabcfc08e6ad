//! `portcullis check NAME`: the decision for one name and why. By default
//! the running resolver answers (`/api/v1/check` on its admin listener):
//! its live list, last-good copies included, organisations' policies and,
//! with `--resolve`, a real resolution. `--offline` compiles the config's
//! feeds here, for a host where the resolver is not running.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{UsageError, init_tracing, load_config};

pub fn offline(name: &str, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let (list, _) = portcullis::blocklist::compile(&config).context("compiling the blocklist")?;
    let explanation = list
        .explain(name)
        .map_err(|e| UsageError::msg(format!("{name:?} is not a domain name: {e}")))?;
    print!("{}", portcullis::summary::explanation(&list, &explanation));
    Ok(ExitCode::SUCCESS)
}

/// What `check` asks the running resolver (the command's arguments).
#[derive(clap::Args)]
pub struct Live {
    /// The name to look up.
    pub name: String,
    /// As a query from this client address (its organisation's policy).
    #[arg(long, conflicts_with = "offline")]
    pub client: Option<IpAddr>,
    /// As a query from this organisation (by id).
    #[arg(long, conflicts_with = "offline")]
    pub org: Option<String>,
    /// Also resolve it now and apply CNAME and answer-address policy.
    #[arg(long, conflicts_with = "offline")]
    pub resolve: bool,
    /// The query type to resolve.
    #[arg(long = "type", default_value = "A", conflicts_with = "offline")]
    pub qtype: String,
    /// A file holding the operator's (or an organisation's) API token.
    #[arg(long, conflicts_with = "offline")]
    pub token_file: Option<PathBuf>,
    /// The admin listener to ask (default: the config's admin.listen).
    #[arg(long, conflicts_with = "offline")]
    pub admin: Option<SocketAddr>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn live(args: &Live, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let mut query = vec![("name", args.name.clone()), ("type", args.qtype.clone())];
    if let Some(client) = args.client {
        query.push(("client", client.to_string()));
    }
    if let Some(org) = &args.org {
        query.push(("org", org.clone()));
    }
    if args.resolve {
        query.push(("resolve", "true".to_owned()));
    }
    let ask = super::api::Ask {
        admin: args.admin,
        token_file: args.token_file.as_deref(),
        what: "the check",
        offline: Some("--offline compiles the feeds here instead"),
    };
    let json = super::api::get(&config, &ask, "/api/v1/check", &query)?;
    if args.json {
        println!("{json:#}");
    } else {
        print!("{}", text(&json, &args.qtype));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as text for a terminal.
fn text(report: &serde_json::Value, qtype: &str) -> String {
    use std::fmt::Write as _;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let mut out = s(&report["explanation"]);
    let _ = writeln!(
        out,
        "live list generation {}",
        report["generation"].as_u64().unwrap_or(0)
    );
    if let Some(reason) = report["feed_last_good"].as_str() {
        let _ = writeln!(
            out,
            "feed {} serves its last good contents: {reason}",
            s(&report["feed"])
        );
    }
    let _ = writeln!(
        out,
        "organisation: {}",
        report["organisation"].as_str().unwrap_or("none")
    );
    let _ = writeln!(out, "decision: {}", s(&report["decision"]));
    let resolution = &report["resolution"];
    if resolution.is_object() {
        let _ = writeln!(out, "resolved now ({qtype}): {}", s(&resolution["rcode"]));
        for (code, text) in resolution["ede"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e.get(0)?.as_u64()?, e.get(1)?.as_str()?)))
        {
            let _ = writeln!(out, "  extended error {code}: {text}");
        }
        for (section, label) in [("answers", "answer"), ("authorities", "authority")] {
            for record in resolution[section].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  {label} {}", s(record));
            }
        }
        let decisions = resolution["decisions"].as_array();
        if decisions.is_none_or(|d| d.is_empty()) {
            let _ = writeln!(out, "  no entry matched along the answer");
        }
        for d in decisions.into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {} at {}: {} (feed {}, category {})",
                s(&d["action"]),
                s(&d["stage"]),
                s(&d["matched"]),
                s(&d["feed"]),
                s(&d["category"]),
            );
        }
    }
    out
}
