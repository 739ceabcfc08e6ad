//! `[[download]]` and `[[rpz]]`: feeds fetched over HTTP(S) and by zone
//! transfer. The feed settings a `[[feed]]` would carry are keys of the
//! source itself, so one entry says where a list comes from and how to
//! read it.

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

/// One `[[rpz]]`: a Response Policy Zone transferred from its primaries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRpz {
    pub zone: String,
    /// `ADDRESS` (port 53) or `ADDRESS:PORT`, `[V6]:PORT`; tried in order.
    pub primaries: Vec<String>,
    #[serde(default)]
    pub tsig_name: Option<String>,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// The key's secret, base64, as `tsig-keygen` writes it in `secret`.
    #[serde(default)]
    pub tsig_secret_file: Option<PathBuf>,
    /// Bounds on the SOA's refresh and retry.
    #[serde(default = "default_refresh_floor")]
    pub refresh_floor_secs: u64,
    #[serde(default = "default_refresh_ceiling")]
    pub refresh_ceiling_secs: u64,
    /// Wait for each message of a transfer at most this long.
    #[serde(default = "default_xfr_timeout")]
    pub timeout_secs: u64,
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

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
}

fn default_refresh_floor() -> u64 {
    60
}

fn default_refresh_ceiling() -> u64 {
    86_400
}

fn default_xfr_timeout() -> u64 {
    30
}
