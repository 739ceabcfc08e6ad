//! Remote feed sources: TAXII collections, HTTP(S) downloads and RPZ
//! zone transfers. Each
//! puller runs on its own interval and writes one file into feeds_dir,
//! atomically; the ordinary file-drop path compiles it, so last-good,
//! the shrink guard, the snapshot and provenance work as for a file an
//! operator dropped. A failed pull keeps the previous file.
//!
//! [`Registry`] is what the pullers last did, for `portcullis feeds` and
//! `/api/v1/feeds`. It is in memory: after a restart a source shows its
//! version (kept in state_dir) but no attempts until its first pull.

pub mod download;
pub mod rpz;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;

/// One source as `/api/v1/feeds` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceStatus {
    /// `taxii`, `download` or `rpz` (the API shows it as the feed's
    /// `source`).
    #[serde(skip)]
    pub kind: &'static str,
    /// The feed file it writes in feeds_dir (the API's key).
    #[serde(skip)]
    pub file: String,
    pub url: String,
    /// What identifies the version held: an ETag or Last-Modified date, a
    /// TAXII `added_after` cursor, an RPZ zone's serial.
    pub version: Option<String>,
    /// What the last successful attempt did, in words (`IXFR 4 to 5: 1
    /// deleted, 2 added`, `not modified`).
    pub last_result: Option<String>,
    /// RFC 3339 times.
    pub last_attempt: Option<String>,
    pub last_success: Option<String>,
    /// When the file last changed because of this source.
    pub last_change: Option<String>,
    /// Why the last attempt failed; `None` when it succeeded.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u64,
    /// When the data held goes stale without contact (an RPZ zone's SOA
    /// expire after the last answer from a primary).
    #[serde(skip)]
    pub expires: Option<(SystemTime, Duration)>,
}

impl SourceStatus {
    /// A warning when the data is past its expiry.
    pub fn stale(&self, now: SystemTime) -> Option<String> {
        let (contact, expire) = self.expires?;
        let silent = now.duration_since(contact).ok()?;
        (silent > expire).then(|| {
            format!(
                "{} {}: no answer from its source for {} s, past its expire time of {} s; \
                 the data held keeps serving",
                self.kind,
                self.file,
                silent.as_secs(),
                expire.as_secs()
            )
        })
    }
}

/// What a successful pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub version: Option<String>,
    /// Whether the file in feeds_dir was rewritten.
    pub changed: bool,
    /// What it did, in words.
    pub detail: Option<String>,
}

/// What every source last did. Written once per pull, read by the API.
#[derive(Debug, Default)]
pub struct Registry {
    sources: Mutex<BTreeMap<String, SourceStatus>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Name a source before its first pull. A source already known under
    /// the same file keeps its history (a config reload restarts pullers).
    pub fn register(&self, kind: &'static str, file: &str, url: &str, version: Option<String>) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = sources
            .entry(file.to_owned())
            .or_insert_with(|| SourceStatus {
                kind,
                file: file.to_owned(),
                url: shown_url(url),
                version: None,
                last_result: None,
                last_attempt: None,
                last_success: None,
                last_change: None,
                last_error: None,
                failures: 0,
                expires: None,
            });
        entry.kind = kind;
        entry.url = shown_url(url);
        if entry.version.is_none() {
            entry.version = version;
        }
    }

    /// Forget sources no longer configured.
    pub fn retain(&self, files: &[String]) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.retain(|file, _| files.contains(file));
    }

    /// Record one pull's outcome.
    pub fn record(&self, file: &str, outcome: &Result<Pulled, String>) {
        let now = now_rfc3339();
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = sources.get_mut(file) else {
            return;
        };
        s.last_attempt = Some(now.clone());
        match outcome {
            Ok(pulled) => {
                s.last_success = Some(now.clone());
                s.last_error = None;
                s.failures = 0;
                if pulled.version.is_some() {
                    s.version = pulled.version.clone();
                }
                s.last_result = pulled.detail.clone();
                if pulled.changed {
                    s.last_change = Some(now);
                }
            }
            Err(error) => {
                s.last_error = Some(error.clone());
                s.failures += 1;
            }
        }
    }

    /// Note when a source's data goes stale without contact.
    pub fn set_expiry(&self, file: &str, contact: SystemTime, expire: Duration) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sources.get_mut(file) {
            s.expires = Some((contact, expire));
        }
    }

    /// Warnings for `/readyz`: sources past their expiry.
    pub fn warnings(&self) -> Vec<String> {
        let now = SystemTime::now();
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.values().filter_map(|s| s.stale(now)).collect()
    }

    /// Every source, by file name.
    pub fn list(&self) -> Vec<SourceStatus> {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.values().cloned().collect()
    }
}

/// Count one pull in `portcullis_feed_source_pulls_total`.
pub(crate) fn count_pull<E>(kind: &'static str, outcome: &Result<Pulled, E>) {
    let result = match outcome {
        Ok(p) if p.changed => "changed",
        Ok(_) => "unchanged",
        Err(_) => "error",
    };
    ::metrics::counter!(crate::telemetry::SOURCE_PULLS, "kind" => kind, "result" => result)
        .increment(1);
}

pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The running pullers, to stop when a config reload changes them.
pub struct Pullers {
    handles: Vec<tokio::task::AbortHandle>,
}

impl Pullers {
    /// Start a puller for every `[[taxii]]`, `[[download]]` and `[[rpz]]`;
    /// the RPZ zones' NOTIFY targets are published in `notify`.
    pub fn spawn(
        config: &Config,
        registry: &Arc<Registry>,
        notify: &Arc<rpz::NotifyTargets>,
        increments: &Arc<crate::blocklist::increments::Increments>,
    ) -> Pullers {
        let mut files: Vec<String> = config
            .taxii
            .iter()
            .map(crate::taxii::feed_file_name)
            .collect();
        files.extend(config.downloads.iter().map(|d| d.file.clone()));
        files.extend(config.rpz.iter().map(|z| z.zone.clone()));
        registry.retain(&files);
        let mut handles = crate::taxii::spawn_pollers(config, registry);
        handles.extend(download::spawn(config, registry));
        handles.extend(rpz::spawn(config, registry, notify, increments));
        Pullers { handles }
    }

    /// Stop them all (a config reload, before spawning the new set).
    pub fn stop(&mut self) {
        for handle in self.handles.drain(..) {
            handle.abort();
        }
    }

    /// Whether the sources differ between two configs.
    pub fn changed(running: &Config, next: &Config) -> bool {
        running.taxii != next.taxii
            || running.downloads != next.downloads
            || running.rpz != next.rpz
    }
}

impl Drop for Pullers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_last_success_and_counts_in_a_row() {
        let registry = Registry::new();
        registry.register("download", "list.txt", "https://example.org/l", None);
        let ok = Ok(Pulled {
            version: Some("\"v1\"".into()),
            changed: true,
            detail: Some("200, written".into()),
        });
        registry.record("list.txt", &ok);
        registry.record("list.txt", &Err("404".into()));
        registry.record("list.txt", &Err("404".into()));
        let s = &registry.list()[0];
        assert_eq!(s.version.as_deref(), Some("\"v1\""));
        assert!(s.last_success.is_some() && s.last_change.is_some());
        assert_eq!((s.failures, s.last_error.as_deref()), (2, Some("404")));
        registry.record("list.txt", &ok);
        assert_eq!(registry.list()[0].failures, 0);
        assert_eq!(
            registry.list()[0].last_result.as_deref(),
            Some("200, written")
        );
        let long_ago = SystemTime::now() - Duration::from_secs(100);
        registry.set_expiry("list.txt", long_ago, Duration::from_secs(200));
        assert!(registry.warnings().is_empty());
        registry.set_expiry("list.txt", long_ago, Duration::from_secs(50));
        let warnings = registry.warnings();
        assert!(
            warnings[0].contains("past its expire time of 50 s"),
            "{warnings:?}"
        );
        registry.retain(&[]);
        assert!(registry.list().is_empty());
    }
}

/// A source URL as logs, errors and the feeds API show it: a user name
/// and password, and the values of query parameters named like a secret
/// (`key`, `token`, `secret`, `pass`, `auth`, `sig`), are replaced by
/// `***`. A feed URL often carries its subscriber's key.
pub fn shown_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("***");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let secret = |k: &str| {
            let k = k.to_ascii_lowercase();
            ["key", "token", "secret", "pass", "auth", "sig"]
                .iter()
                .any(|s| k.contains(s))
        };
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod shown_url_tests {
    use super::shown_url;

    #[test]
    fn secrets_in_a_url_are_not_shown() {
        assert_eq!(
            shown_url("https://member:hunter2@feeds.example/list.txt"),
            "https://***@feeds.example/list.txt"
        );
        assert_eq!(
            shown_url("https://feeds.example/list?format=plain&api_key=abc123&Token=x"),
            "https://feeds.example/list?format=plain&api_key=***&Token=***"
        );
        assert_eq!(
            shown_url("https://feeds.example/list.txt"),
            "https://feeds.example/list.txt"
        );
        assert_eq!(shown_url("not a url"), "not a url");
    }
}
