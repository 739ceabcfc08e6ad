//! Remote feed sources: TAXII collections and HTTP(S) downloads. Each
//! puller runs on its own interval and writes one file into feeds_dir,
//! atomically; the ordinary file-drop path compiles it, so last-good,
//! the shrink guard, the snapshot and provenance work as for a file an
//! operator dropped. A failed pull keeps the previous file.
//!
//! [`Registry`] is what the pullers last did, for `portcullis feeds` and
//! `/api/v1/feeds`. It is in memory: after a restart a source shows its
//! version (kept in state_dir) but no attempts until its first pull.

pub mod download;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;

/// One source as `/api/v1/feeds` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceStatus {
    /// `taxii` or `download` (the API shows it as the feed's `source`).
    #[serde(skip)]
    pub kind: &'static str,
    /// The feed file it writes in feeds_dir (the API's key).
    #[serde(skip)]
    pub file: String,
    pub url: String,
    /// What identifies the version held: an ETag or Last-Modified date, a
    /// TAXII `added_after` cursor.
    pub version: Option<String>,
    /// RFC 3339 times.
    pub last_attempt: Option<String>,
    pub last_success: Option<String>,
    /// When the file last changed because of this source.
    pub last_change: Option<String>,
    /// Why the last attempt failed; `None` when it succeeded.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u64,
}

/// What a successful pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub version: Option<String>,
    /// Whether the file in feeds_dir was rewritten.
    pub changed: bool,
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
                url: url.to_owned(),
                version: None,
                last_attempt: None,
                last_success: None,
                last_change: None,
                last_error: None,
                failures: 0,
            });
        entry.kind = kind;
        entry.url = url.to_owned();
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
    /// Start a puller for every `[[taxii]]` and `[[download]]`.
    pub fn spawn(config: &Config, registry: &Arc<Registry>) -> Pullers {
        let mut files: Vec<String> = config
            .taxii
            .iter()
            .map(crate::taxii::feed_file_name)
            .collect();
        files.extend(config.downloads.iter().map(|d| d.file.clone()));
        registry.retain(&files);
        let mut handles = crate::taxii::spawn_pollers(config, registry);
        handles.extend(download::spawn(config, registry));
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
        running.taxii != next.taxii || running.downloads != next.downloads
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
        registry.retain(&[]);
        assert!(registry.list().is_empty());
    }
}
