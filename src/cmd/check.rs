//! `portcullis check NAME`: the decision for one name and why. By default
//! the running resolver answers (`/api/v1/check` on its admin listener):
//! its live list, last-good copies included, organisations' policies and,
//! with `--resolve`, a real resolution. `--offline` compiles the config's
//! feeds here, for a host where the resolver is not running.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{UsageError, init_tracing, load_config};

/// The environment variable that holds the API token.
const TOKEN_ENV: &str = "PORTCULLIS_TOKEN";

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
    let Some(listen) = args.admin.or(config.admin.listen) else {
        return Err(UsageError::msg(format!(
            "{}: [admin] listen is not set, so the running resolver cannot be asked; \
             use --offline to compile the feeds here",
            config.path.display()
        )));
    };
    let token = token(args.token_file.as_deref())?;
    let addr = reachable(listen);
    let mut url = reqwest::Url::parse(&format!("http://{addr}/api/v1/check"))
        .context("building the admin URL")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("name", &args.name);
        q.append_pair("type", &args.qtype);
        if let Some(client) = args.client {
            q.append_pair("client", &client.to_string());
        }
        if let Some(org) = &args.org {
            q.append_pair("org", org);
        }
        if args.resolve {
            q.append_pair("resolve", "true");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client")?;
    let (status, body) = runtime
        .block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?;
            let response = client.get(url.clone()).bearer_auth(&token).send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .with_context(|| {
            format!(
                "cannot reach the running resolver's admin listener at {addr} \
             (is it running? --offline compiles the feeds here instead)"
            )
        })?;
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the admin listener at {addr} answered {status}: {body}"))?;
    if !status.is_success() {
        let message = json["error"].as_str().unwrap_or(&body);
        let error = anyhow::anyhow!("the resolver refused the check ({status}): {message}");
        return Err(if status.is_client_error() {
            UsageError(error).into()
        } else {
            error
        });
    }
    if args.json {
        println!("{json:#}");
    } else {
        print!("{}", text(&json, &args.qtype));
    }
    Ok(ExitCode::SUCCESS)
}

/// The token from `--token-file` or the environment.
fn token(file: Option<&Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?,
        None => std::env::var(TOKEN_ENV).map_err(|_| {
            UsageError::msg(format!(
                "the admin API needs a token: set {TOKEN_ENV} or pass --token-file \
                 (or use --offline)"
            ))
        })?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(UsageError::msg("the API token is empty"));
    }
    Ok(token)
}

/// Where to connect for a listener bound to `listen`: a wildcard address
/// is reached over loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
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
