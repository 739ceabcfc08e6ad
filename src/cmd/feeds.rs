//! `portcullis feeds`: every feed file and remote source of the running
//! resolver (`/api/v1/feeds`, operator token): where it comes from, the
//! version held, the last attempt and success, entries, and why the last
//! attempt failed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{init_tracing, load_config};

/// What `feeds` asks (the command's arguments).
#[derive(clap::Args)]
pub struct Args {
    /// A file holding the operator's API token (default: PORTCULLIS_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The admin listener to ask (default: the config's admin.listen).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    init_tracing(&config);
    let ask = super::api::Ask {
        admin: args.admin,
        token_file: args.token_file.as_deref(),
        what: "the feed list",
        offline: Some("`portcullis compile` reads the feeds here instead"),
    };
    let json = super::api::get(&config, &ask, "/api/v1/feeds", &[])?;
    if args.json {
        println!("{json:#}");
    } else {
        print!("{}", text(&json));
    }
    Ok(ExitCode::SUCCESS)
}

/// One block per feed: a header line, then the source's details.
fn text(view: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let n = |v: &serde_json::Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "live list generation {}, {} names",
        n(&view["generation"]),
        n(&view["entries"])
    );
    for feed in view["feeds"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{} ({}, {}): {} entries, {} rejected",
            s(&feed["file"]).unwrap_or_default(),
            s(&feed["source"]).unwrap_or_default(),
            s(&feed["format"]).unwrap_or_else(|| "not loaded".into()),
            n(&feed["entries"]),
            n(&feed["rejected"]),
        );
        if let Some(url) = s(&feed["url"]) {
            let _ = writeln!(out, "  from {url}");
        }
        for (key, label) in [
            ("version", "version"),
            ("last_result", "last result"),
            ("last_attempt", "last attempt"),
            ("last_success", "last success"),
            ("last_change", "last change"),
        ] {
            if let Some(value) = s(&feed[key]) {
                let _ = writeln!(out, "  {label}: {value}");
            }
        }
        if let Some(error) = s(&feed["last_error"]) {
            let _ = writeln!(
                out,
                "  last attempt FAILED ({} in a row): {error}",
                n(&feed["failures"])
            );
        }
        if let Some(error) = s(&feed["compile_error"]) {
            let kept = if feed["kept_previous"].as_bool() == Some(true) {
                "; its last good copy is served"
            } else {
                ""
            };
            let _ = writeln!(out, "  not usable in the last reload: {error}{kept}");
        }
    }
    out
}
