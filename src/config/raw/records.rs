//! `[hitlog]`, `[dnstap]` and `[share]` as serde reads them: what the
//! node records of the queries it decides, and where that goes.

use std::path::PathBuf;

use serde::Deserialize;

use super::default_true;

/// `[hitlog]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHitlog {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// Default `state_dir/hits.sqlite`.
    #[serde(default)]
    pub database: Option<PathBuf>,
    #[serde(default)]
    pub log_allowed: bool,
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    #[serde(default = "default_true")]
    pub yield_to_queries: bool,
    /// 0 = no cap.
    #[serde(default = "default_max_db_mib")]
    pub max_db_mib: u64,
    #[serde(default = "default_coalesce_after")]
    pub coalesce_after: u64,
    #[serde(default = "default_coalesce_window_s")]
    pub coalesce_window_s: u32,
    #[serde(default)]
    pub postgres: Option<String>,
    #[serde(default)]
    pub postgres_password_file: Option<PathBuf>,
    #[serde(default)]
    pub postgres_ca_file: Option<PathBuf>,
}

impl Default for RawHitlog {
    fn default() -> Self {
        RawHitlog {
            enabled: true,
            retention_days: default_retention(),
            jsonl: None,
            database: None,
            log_allowed: false,
            channel_capacity: default_channel_capacity(),
            yield_to_queries: true,
            max_db_mib: default_max_db_mib(),
            coalesce_after: default_coalesce_after(),
            coalesce_window_s: default_coalesce_window_s(),
            postgres: None,
            postgres_password_file: None,
            postgres_ca_file: None,
        }
    }
}

fn default_retention() -> u32 {
    90
}

/// A burst of 100,000 blocked first-pass queries at full speed fits with
/// half to spare, while the writer yields the core to them.
fn default_channel_capacity() -> usize {
    262_144
}

fn default_max_db_mib() -> u64 {
    4096
}

fn default_coalesce_after() -> u64 {
    20
}

fn default_coalesce_window_s() -> u32 {
    60
}

/// `[share]`: the sightings this service shares back (STIX 2.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    /// The service's STIX identity: who made the sightings.
    #[serde(default = "default_share_name")]
    pub name: String,
    #[serde(default)]
    pub where_sighted: crate::config::WhereSighted,
    #[serde(default)]
    pub tlp: crate::config::Tlp,
    /// Serve the sightings as TAXII 2.1 collections on the admin listener.
    #[serde(default = "default_true")]
    pub taxii: bool,
}

fn default_share_name() -> String {
    "Portcullis protective DNS".into()
}

impl Default for RawShare {
    fn default() -> Self {
        RawShare {
            name: default_share_name(),
            where_sighted: Default::default(),
            tlp: Default::default(),
            taxii: true,
        }
    }
}

/// `[dnstap]`: where to send dnstap messages, and which.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnstap {
    /// A collector's Unix socket (Frame Streams, bidirectional).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Or a collector's TCP address.
    #[serde(default)]
    pub tcp: Option<std::net::SocketAddr>,
    /// Only queries a blocklist entry decided (blocked, monitored, or let
    /// through by an exception when those are logged).
    #[serde(default)]
    pub only_policy: bool,
    #[serde(default)]
    pub client_query: bool,
    #[serde(default = "default_true")]
    pub client_response: bool,
    /// Default: the node id.
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default = "default_dnstap_queue")]
    pub queue: usize,
}

fn default_dnstap_queue() -> usize {
    65_536
}
