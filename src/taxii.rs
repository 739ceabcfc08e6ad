//! TAXII 2.1 client: pulls a collection's objects into feeds_dir.
//!
//! The puller never touches the blocklist. It writes the collection as one
//! STIX bundle, `taxii-<name>.json`, atomically (a temporary name, then a
//! rename), and the ordinary file-drop path compiles it like any other
//! feed. Each pull asks only for what was added since the last one
//! (`added_after`, from the server's `X-TAXII-Date-Added-Last` header),
//! follows `more`/`next` paging, and merges the new objects into the
//! bundle, keeping the latest version of each id.
//!
//! Credentials come from a file or an environment variable named in the
//! config, read at every pull (so a rotated secret is picked up), never
//! from the config file itself. HTTPS uses rustls with the WebPKI roots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::TaxiiConfig;

/// The TAXII 2.1 media type (TAXII 2.1 section 1.6.8).
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// Poll each configured TAXII source on its interval, in the background.
/// A failed pull is logged and the previous bundle stays.
/// Returns the pollers' handles, to stop them when a config reload
/// changes the collections.
pub fn spawn_pollers(
    config: &crate::config::Config,
    registry: &std::sync::Arc<crate::sources::Registry>,
) -> Vec<tokio::task::AbortHandle> {
    let mut pollers = Vec::new();
    if config.taxii.is_empty() {
        return pollers;
    }
    let client = match client() {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "cannot build the TAXII HTTP client; TAXII pulls are off");
            return pollers;
        }
    };
    for source in config.taxii.clone() {
        let client = client.clone();
        let feeds_dir = config.blocklist.feeds_dir.clone();
        let state_dir = config.blocklist.state_dir.clone();
        let file = feed_file_name(&source);
        registry.register(
            "taxii",
            &file,
            &objects_url(&source),
            load_state(&state_dir, &source.name).added_after,
        );
        let registry = std::sync::Arc::clone(registry);
        let poller = tokio::spawn(async move {
            let mut interval =
                tokio::time::interval(Duration::from_secs(source.poll_interval_secs));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let outcome = pull(&source, &client, &feeds_dir, &state_dir).await;
                let outcome = match outcome {
                    Ok(r) => {
                        tracing::info!(taxii = %source.name, received = r.received, total = r.total, "TAXII pull done");
                        Ok(crate::sources::Pulled {
                            version: r.added_after,
                            changed: r.received > 0,
                            detail: Some(format!(
                                "{} objects received, {} held",
                                r.received, r.total
                            )),
                        })
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TAXII pull failed; the previous bundle stays");
                        Err(error.to_string())
                    }
                };
                crate::sources::count_pull("taxii", &outcome);
                registry.record(&file, &outcome);
            }
        });
        pollers.push(poller.abort_handle());
    }
    pollers
}

/// Why a pull failed; the previous bundle stays in place.
#[derive(Debug, thiserror::Error)]
pub enum TaxiiError {
    #[error("taxii {name}: cannot read the credential {what}: {message}")]
    Credential {
        name: String,
        what: String,
        message: String,
    },
    #[error("taxii {name}: request to {url} failed: {source}")]
    Http {
        name: String,
        url: String,
        source: reqwest::Error,
    },
    #[error("taxii {name}: {url} answered {status}: {hint}")]
    Status {
        name: String,
        url: String,
        status: u16,
        hint: String,
    },
    #[error("taxii {name}: {url} sent something that is not a TAXII envelope: {message}")]
    Envelope {
        name: String,
        url: String,
        message: String,
    },
    #[error("taxii {name}: cannot write {path}: {source}")]
    Write {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullCounts {
    /// Pages fetched.
    pub pages: usize,
    /// Objects received in this pull.
    pub received: usize,
    /// Objects in the bundle after merging.
    pub total: usize,
    /// The `added_after` the next pull will send.
    pub added_after: Option<String>,
}

/// Where the puller keeps its cursor between pulls.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    added_after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    more: bool,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    objects: Vec<Value>,
}

fn state_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("taxii").join(format!("{name}.json"))
}

fn load_state(state_dir: &Path, name: &str) -> State {
    std::fs::read(state_path(state_dir, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The feed file a TAXII source writes.
pub fn feed_file_name(config: &TaxiiConfig) -> String {
    format!("taxii-{}.json", config.name)
}

fn secret(
    config: &TaxiiConfig,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> Result<Option<String>, TaxiiError> {
    let err = |what: String, message: String| TaxiiError::Credential {
        name: config.name.clone(),
        what,
        message,
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("file {}", path.display()), e.to_string()))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    if let Some(var) = env {
        let value =
            std::env::var(var).map_err(|e| err(format!("variable {var}"), e.to_string()))?;
        return Ok(Some(value));
    }
    Ok(None)
}

/// One HTTP client for all pulls (connection reuse, one TLS setup).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(TAXII_MEDIA_TYPE));
    reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(60))
        .build()
}

fn objects_url(config: &TaxiiConfig) -> String {
    let root = config.url.trim_end_matches('/');
    format!("{root}/collections/{}/objects/", config.collection)
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => "credentials missing or rejected",
        403 => "these credentials may not read this collection",
        404 => "no such API root or collection",
        406 => "the server does not speak TAXII 2.1",
        _ => "unexpected status",
    }
}

/// Pull new objects and rewrite the collection's bundle in `feeds_dir`.
pub async fn pull(
    config: &TaxiiConfig,
    client: &reqwest::Client,
    feeds_dir: &Path,
    state_dir: &Path,
) -> Result<PullCounts, TaxiiError> {
    let name = config.name.clone();
    let state_path = state_path(state_dir, &config.name);
    let state = load_state(state_dir, &config.name);
    let password = secret(config, &config.password_file, &config.password_env)?;
    let token = secret(config, &config.token_file, &config.token_env)?;
    let url = objects_url(config);

    let mut report = PullCounts {
        added_after: state.added_after.clone(),
        ..PullCounts::default()
    };
    let mut received = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut request = client
            .get(&url)
            .query(&[("limit", config.page_size.to_string())]);
        if let Some(after) = &state.added_after {
            request = request.query(&[("added_after", after)]);
        }
        if let Some(n) = &next {
            request = request.query(&[("next", n)]);
        }
        if let Some(user) = &config.username {
            request = request.basic_auth(user, password.as_deref());
        } else if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|source| TaxiiError::Http {
            name: name.clone(),
            url: url.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(TaxiiError::Status {
                name,
                url,
                status,
                hint: status_hint(status).to_owned(),
            });
        }
        if let Some(last) = response
            .headers()
            .get("X-TAXII-Date-Added-Last")
            .and_then(|v| v.to_str().ok())
        {
            report.added_after = Some(last.to_owned());
        }
        let body = response.bytes().await.map_err(|source| TaxiiError::Http {
            name: name.clone(),
            url: url.clone(),
            source,
        })?;
        let envelope: Envelope =
            serde_json::from_slice(&body).map_err(|e| TaxiiError::Envelope {
                name: name.clone(),
                url: url.clone(),
                message: e.to_string(),
            })?;
        report.pages += 1;
        received.extend(envelope.objects);
        match (envelope.more, envelope.next) {
            (true, Some(n)) => next = Some(n),
            (true, None) => {
                return Err(TaxiiError::Envelope {
                    name,
                    url,
                    message: "more = true without a next cursor".into(),
                });
            }
            _ => break,
        }
    }
    report.received = received.len();

    let path = feeds_dir.join(feed_file_name(config));
    let mut objects = existing_objects(&path);
    for object in received {
        merge(&mut objects, object);
    }
    report.total = objects.len();
    let bundle = serde_json::json!({
        "type": "bundle",
        "id": format!("bundle--portcullis-taxii-{}", config.name),
        "objects": objects.into_values().collect::<Vec<_>>(),
    });
    let write_err = |path: &Path, source| TaxiiError::Write {
        name: name.clone(),
        path: path.to_path_buf(),
        source,
    };
    write_atomically(
        &path,
        &serde_json::to_vec_pretty(&bundle).unwrap_or_default(),
    )
    .map_err(|e| write_err(&path, e))?;
    let state = State {
        added_after: report.added_after.clone(),
    };
    if let Some(dir) = state_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    }
    write_atomically(&state_path, &serde_json::to_vec(&state).unwrap_or_default())
        .map_err(|e| write_err(&state_path, e))?;
    Ok(report)
}

/// Objects already pulled, keyed by `id` + nothing else: one version each.
fn existing_objects(path: &Path) -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    let Ok(bytes) = std::fs::read(path) else {
        return objects;
    };
    let Ok(bundle) = serde_json::from_slice::<Value>(&bytes) else {
        return objects;
    };
    if let Some(list) = bundle.get("objects").and_then(Value::as_array) {
        for object in list {
            merge(&mut objects, object.clone());
        }
    }
    objects
}

/// Keep the latest version of each id (by `modified`, RFC 3339 text in UTC
/// sorts by time).
fn merge(objects: &mut BTreeMap<String, Value>, object: Value) {
    let Some(id) = object.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    let modified = |o: &Value| o.get("modified").and_then(Value::as_str).map(str::to_owned);
    match objects.get(&id) {
        Some(existing) if modified(existing) > modified(&object) => {}
        _ => {
            objects.insert(id, object);
        }
    }
}

/// Write to a temporary name in the same folder (which the feed watcher
/// ignores), sync, then rename into place.
///
/// The file is stamped as modified a second before now: the compiler
/// tells a file written in place (read once it has settled) from one
/// renamed into place (read at once) by its change time being later than
/// its modification time, and a small file can be written and renamed
/// within the same millisecond.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per write: an old puller still finishing its write after a
    // config reload restarted it must not share a temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{file_name}.{}-{n}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    let stamp = std::time::SystemTime::now() - Duration::from_secs(1);
    file.set_modified(stamp)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_version_of_an_id_wins() {
        let mut objects = BTreeMap::new();
        let v = |m: &str, p: &str| serde_json::json!({"id": "indicator--1", "modified": m, "pattern": p});
        merge(&mut objects, v("2024-02-01T00:00:00.000Z", "new"));
        merge(&mut objects, v("2024-01-01T00:00:00.000Z", "old"));
        assert_eq!(objects["indicator--1"]["pattern"], "new");
        merge(&mut objects, v("2024-03-01T00:00:00.000Z", "newer"));
        assert_eq!(objects["indicator--1"]["pattern"], "newer");
        merge(&mut objects, serde_json::json!({"no": "id"}));
        assert_eq!(objects.len(), 1);
    }
}
