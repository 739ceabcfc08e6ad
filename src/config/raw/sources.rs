//! `[[download]]`: feed files fetched over HTTP(S). The feed settings a
//! `[[feed]]` would carry are keys of the download itself, so one entry
//! says where a list comes from and how to read it.

use std::path::PathBuf;

use serde::Deserialize;

use crate::formats::Format;
use crate::policy::Action;

/// One `[[download]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    pub url: String,
    /// The file it becomes in feeds_dir.
    pub file: String,
    #[serde(default = "default_download_interval")]
    pub interval_secs: u64,
    /// A file holding the list's SHA-256 (`sha256sum` output or the bare
    /// hex), fetched alongside and compared before the list is taken.
    #[serde(default)]
    pub sha256_url: Option<String>,
    /// Default: blocklist.max_feed_mib.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// PEM roots to trust for this URL besides the WebPKI ones (an
    /// internal CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub trusted: bool,
    #[serde(default)]
    pub answer_ip: bool,
    #[serde(default)]
    pub max_entries: Option<usize>,
}

fn default_download_interval() -> u64 {
    3600
}
