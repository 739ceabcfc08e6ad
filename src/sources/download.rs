//! `[[download]]`: a feed file fetched over HTTP(S) on an interval.
//!
//! Each fetch is conditional (`If-None-Match` with the last ETag,
//! `If-Modified-Since` with the last `Last-Modified`), so an unchanged list
//! costs the publisher a 304. A gzip `Content-Encoding` is accepted and
//! undone; a list that is itself a `.gz` file is kept compressed (the feed
//! reader un-gzips by magic bytes) after a full test decompression.
//!
//! The previous file stays, and the failure is logged and shown by
//! `portcullis feeds`, when: the request fails (DNS, TLS, timeout), the
//! status is not 200 or 304, the body is cut short (fewer bytes than its
//! Content-Length, or a gzip stream without its end), it is larger than
//! `max_bytes`, its SHA-256 differs from the one at `sha256_url`, or it is
//! less than a tenth of the size of the file it would replace. What the
//! file then holds is the compiler's business, with its own shrink guard
//! and last-good copy.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Pulled, Registry};
use crate::config::{Config, DownloadConfig};

/// A new file smaller than the old one by more than this factor is
/// refused (a truncated mirror or an error page served as 200).
const MAX_SHRINK: u64 = 10;
/// Old files below this size may shrink freely (a list that was nearly
/// empty anyway).
const SHRINK_FLOOR: u64 = 4096;
/// A `.gz` list is test-decompressed up to this much text.
const MAX_TEST_INFLATE: u64 = 4 << 30;

/// Why a fetch kept the previous file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("download {file}: request to {url} failed: {message}")]
    Http {
        file: String,
        url: String,
        message: String,
    },
    #[error("download {file}: {url} answered {status}")]
    Status {
        file: String,
        url: String,
        status: u16,
    },
    #[error("download {file}: {url}: {message}")]
    Body {
        file: String,
        url: String,
        message: String,
    },
    #[error("download {file}: SHA-256 mismatch: {url} says {expected}, the body is {actual}")]
    Checksum {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error(
        "download {file}: the new list is {new} bytes where the old one is {old}: \
         more than {MAX_SHRINK}x smaller, refused (delete the old file to accept it)"
    )]
    Shrunk { file: String, old: u64, new: u64 },
    #[error("download {file}: {what}: {source}")]
    Local {
        file: String,
        what: String,
        source: std::io::Error,
    },
}

/// What the fetcher keeps between fetches, in state_dir/download/.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct State {
    /// What the validators below belong to: a new URL or checksum URL is
    /// a new resource, fetched whole.
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sha256_url: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    /// Of the list as written, hex.
    sha256: Option<String>,
}

impl State {
    fn version(&self) -> Option<String> {
        self.etag.clone().or_else(|| self.last_modified.clone())
    }
}

fn state_path(state_dir: &Path, file: &str) -> PathBuf {
    state_dir.join("download").join(format!("{file}.json"))
}

fn load_state(state_dir: &Path, file: &str) -> State {
    std::fs::read(state_path(state_dir, file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Start one fetcher per `[[download]]`; each fetches at once and then
/// every `interval_secs`.
pub fn spawn(config: &Config, registry: &Arc<Registry>) -> Vec<tokio::task::AbortHandle> {
    let mut handles = Vec::new();
    for source in config.downloads.clone() {
        let state_dir = config.blocklist.state_dir.clone();
        let feeds_dir = config.blocklist.feeds_dir.clone();
        registry.register(
            "download",
            &source.file,
            &source.url,
            load_state(&state_dir, &source.file).version(),
        );
        let client = match client(&source) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(file = %source.file, %error, "cannot build the HTTP client; this download is off");
                registry.record(&source.file, &Err(error));
                continue;
            }
        };
        let registry = Arc::clone(registry);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(source.interval_secs));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let outcome = fetch(&source, &client, &feeds_dir, &state_dir).await;
                match &outcome {
                    Ok(p) if p.changed => {
                        tracing::info!(file = %source.file, url = %super::shown_url(&source.url), "download: new list written")
                    }
                    Ok(_) => tracing::debug!(file = %source.file, "download: unchanged"),
                    Err(error) => {
                        tracing::warn!(%error, "download failed; the previous file stays")
                    }
                }
                super::count_pull("download", &outcome);
                registry.record(&source.file, &outcome.map_err(|e| e.to_string()));
            }
        });
        handles.push(task.abort_handle());
    }
    handles
}

/// The HTTP client for one download: WebPKI roots plus its `ca_file`.
pub fn client(config: &DownloadConfig) -> Result<reqwest::Client, String> {
    // A redirect must keep to the rule the URL itself was held to (HTTPS,
    // or HTTP to loopback), or a 302 to plain HTTP would undo it.
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("more than 5 redirects")
        } else if crate::config::check_fetch_url(attempt.url().as_str()).is_err() {
            attempt.error("a redirect to plain http (only https, or http to loopback)")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .redirect(redirects)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(300));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {}: no certificate in it", path.display()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Fetch once; write the list into feeds_dir if it changed.
pub async fn fetch(
    config: &DownloadConfig,
    client: &reqwest::Client,
    feeds_dir: &Path,
    state_dir: &Path,
) -> Result<Pulled, DownloadError> {
    let file = config.file.clone();
    let path = feeds_dir.join(&config.file);
    let state = load_state(state_dir, &config.file);
    let old_len = std::fs::metadata(&path).ok().map(|m| m.len());
    // The URL as shown: a subscriber's key in it stays out of logs.
    let http = |url: &str, e: reqwest::Error| DownloadError::Http {
        file: file.clone(),
        url: super::shown_url(url),
        message: error_chain(&e.without_url()),
    };

    let mut request = client.get(&config.url).header(ACCEPT_ENCODING, "gzip");
    // Ask conditionally only while the file is there (an operator who
    // deleted it wants it back) and the source is the one the validators
    // came from.
    let same_source =
        state.url.as_deref() == Some(config.url.as_str()) && state.sha256_url == config.sha256_url;
    if old_len.is_some() && same_source {
        if let Some(etag) = &state.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(date) = &state.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date);
        }
    }
    let mut response = request.send().await.map_err(|e| http(&config.url, e))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && old_len.is_some() && same_source {
        return Ok(Pulled {
            version: state.version(),
            changed: false,
            detail: Some("304 not modified".into()),
        });
    }
    if status != StatusCode::OK {
        return Err(DownloadError::Status {
            file,
            url: super::shown_url(&config.url),
            status: status.as_u16(),
        });
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header(ETAG);
    let last_modified = header(LAST_MODIFIED);
    let encoding = header(CONTENT_ENCODING).map(|e| e.to_ascii_lowercase());
    let body_err = |message: String| DownloadError::Body {
        file: file.clone(),
        url: super::shown_url(&config.url),
        message,
    };
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http(&config.url, e))? {
        if (body.len() + chunk.len()) as u64 > config.max_bytes {
            return Err(body_err(format!(
                "larger than max_bytes ({} bytes); refused",
                config.max_bytes
            )));
        }
        body.extend_from_slice(&chunk);
    }
    // Inflating and hashing a large list is CPU work: off the runtime.
    let max_bytes = config.max_bytes;
    let (content, digest) = tokio::task::spawn_blocking(move || {
        let content = match encoding.as_deref() {
            None | Some("identity") => body,
            Some("gzip" | "x-gzip") => {
                inflate(&body, max_bytes).map_err(|e| format!("gzip content encoding: {e}"))?
            }
            Some(other) => return Err(format!("unsupported content encoding {other:?}")),
        };
        if content.starts_with(&[0x1f, 0x8b]) {
            test_gzip(&content).map_err(|e| format!("a .gz list that does not inflate: {e}"))?;
        }
        let digest = hex(&Sha256::digest(&content));
        Ok((content, digest))
    })
    .await
    .map_err(|e| body_err(e.to_string()))?
    .map_err(body_err)?;
    if let Some(url) = &config.sha256_url {
        let mut response = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| http(url, e))?;
        // A checksum file is a line; a few KiB is plenty.
        let mut text = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| http(url, e))? {
            text.extend_from_slice(&chunk);
            if text.len() > 4096 {
                return Err(DownloadError::Body {
                    file: file.clone(),
                    url: super::shown_url(url),
                    message: "more than 4 KiB: not a checksum file".into(),
                });
            }
        }
        let text = String::from_utf8_lossy(&text);
        let expected = checksum_in(&text).ok_or_else(|| DownloadError::Body {
            file: file.clone(),
            url: super::shown_url(url),
            message: "holds no SHA-256 (64 hex digits)".into(),
        })?;
        if expected != digest {
            return Err(DownloadError::Checksum {
                file,
                url: super::shown_url(url),
                expected,
                actual: digest,
            });
        }
    }
    let new_len = content.len() as u64;
    if let Some(old) = old_len
        && old >= SHRINK_FLOOR
        && new_len.saturating_mul(MAX_SHRINK) < old
    {
        return Err(DownloadError::Shrunk {
            file,
            old,
            new: new_len,
        });
    }
    let changed = old_len.is_none() || state.sha256.as_deref() != Some(digest.as_str());
    let local = |what: String, source| DownloadError::Local {
        file: file.clone(),
        what,
        source,
    };
    if changed {
        crate::taxii::write_atomically(&path, &content)
            .map_err(|e| local(format!("writing {}", path.display()), e))?;
    }
    let state = State {
        url: Some(config.url.clone()),
        sha256_url: config.sha256_url.clone(),
        etag,
        last_modified,
        sha256: Some(digest),
    };
    let state_file = state_path(state_dir, &config.file);
    if let Some(dir) = state_file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| local(format!("creating {}", dir.display()), e))?;
    }
    crate::taxii::write_atomically(&state_file, &serde_json::to_vec(&state).unwrap_or_default())
        .map_err(|e| local(format!("writing {}", state_file.display()), e))?;
    Ok(Pulled {
        version: state.version(),
        changed,
        detail: Some(if changed {
            format!("200, {new_len} bytes written")
        } else {
            "200, same contents".to_owned()
        }),
    })
}

/// The message of an error and its causes (reqwest's top line alone says
/// "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

fn inflate(body: &[u8], max: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "inflates past max_bytes ({max} bytes)"
        )));
    }
    Ok(out)
}

fn test_gzip(content: &[u8]) -> std::io::Result<()> {
    let mut decoder = flate2::read::MultiGzDecoder::new(content).take(MAX_TEST_INFLATE);
    std::io::copy(&mut decoder, &mut std::io::sink()).map(|_| ())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 in a checksum file: `sha256sum` output (`HEX  name`), BSD
/// style (`SHA256 (name) = HEX`) or the bare hex.
fn checksum_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '=' || c == '(' || c == ')')
        .find(|t| t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_files_in_the_usual_shapes() {
        let h = "ab".repeat(32);
        assert_eq!(checksum_in(&format!("{h}  list.txt\n")), Some(h.clone()));
        assert_eq!(
            checksum_in(&format!("SHA256 (list.txt) = {}\n", h.to_uppercase())),
            Some(h.clone())
        );
        assert_eq!(checksum_in(&h), Some(h.clone()));
        assert_eq!(checksum_in("<html>not found</html>"), None);
    }

    #[test]
    fn a_cut_gzip_stream_is_refused() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&b"evil.example\n".repeat(1000)).unwrap();
        let whole = gz.finish().unwrap();
        assert!(test_gzip(&whole).is_ok());
        assert!(test_gzip(&whole[..whole.len() / 2]).is_err());
        assert_eq!(inflate(&whole, 13_000).unwrap().len(), 13_000);
        assert!(inflate(&whole, 12_999).is_err(), "past max_bytes");
    }
}
