//! Asking the running resolver: a GET on its admin API with the
//! operator's (or an organisation's) token, for `check` and `feeds`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use portcullis::config::Config;

use super::UsageError;

/// The environment variable that holds the API token.
pub const TOKEN_ENV: &str = "PORTCULLIS_TOKEN";

/// GET `path` with `query` from the admin listener (`admin`, or the
/// config's `admin.listen`) and return its JSON. A refusal is an error
/// naming `what`; a 4xx one exits as a usage error. `offline`, where the
/// command has a way to work without the resolver, is said in the errors
/// that mean it cannot be asked.
pub struct Ask<'a> {
    pub admin: Option<SocketAddr>,
    pub token_file: Option<&'a Path>,
    pub what: &'a str,
    pub offline: Option<&'a str>,
}

pub fn get(
    config: &Config,
    ask: &Ask<'_>,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<serde_json::Value> {
    let offline = ask.offline.map(|o| format!("; {o}")).unwrap_or_default();
    let what = ask.what;
    let Some(listen) = ask.admin.or(config.admin.listen) else {
        return Err(UsageError::msg(format!(
            "{}: [admin] listen is not set, so the running resolver cannot be asked{offline}",
            config.path.display()
        )));
    };
    let token = token(ask.token_file, &offline)?;
    let addr = reachable(listen);
    let mut url =
        reqwest::Url::parse(&format!("http://{addr}{path}")).context("building the admin URL")?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in query {
            q.append_pair(k, v);
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
                "cannot reach the running resolver's admin listener at {addr} (is it running?){offline}"
            )
        })?;
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the admin listener at {addr} answered {status}: {body}"))?;
    if !status.is_success() {
        let message = json["error"].as_str().unwrap_or(&body);
        let error = anyhow::anyhow!("the resolver refused {what} ({status}): {message}");
        return Err(if status.is_client_error() {
            UsageError(error).into()
        } else {
            error
        });
    }
    Ok(json)
}

/// The token from `--token-file` or the environment.
fn token(file: Option<&Path>, offline: &str) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?,
        None => std::env::var(TOKEN_ENV).map_err(|_| {
            UsageError::msg(format!(
                "the admin API needs a token: set {TOKEN_ENV} or pass --token-file{offline}"
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
