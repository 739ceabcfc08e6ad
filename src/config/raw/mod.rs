//! The config file exactly as serde reads it: one `Raw*` type per section,
//! `deny_unknown_fields` everywhere, and the defaults of every key.
//!
//! Nothing here is checked beyond what serde's types enforce: paths are
//! still relative, upstreams and root hints still text. The `validate` module
//! turns these into the validated types the rest of the program reads.
//!
//! `[server]` and `[limits]`, the sections with the most keys, are in
//! [`server`] and [`limits`]; `[hitlog]`, `[dnstap]` and `[share]` in
//! [`records`].
//!
//! Over 400 lines because it is the one place every key's default lives:
//! the other sections, their default fns and Default impls.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::formats::Format;
use crate::policy::Action;

mod limits;
mod records;
mod server;
mod sources;

pub use limits::{OverLimit, RawLimits};
pub use records::{RawDnstap, RawHitlog, RawShare};
pub use server::RawServer;
pub use sources::{RawDownload, RawRpz};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub resolver: RawResolver,
    #[serde(default)]
    pub blocklist: RawBlocklist,
    /// Category name -> action.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    #[serde(default, rename = "feed")]
    pub feeds: Vec<RawFeed>,
    #[serde(default, rename = "organisation")]
    pub organisations: Vec<RawOrganisation>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub block_page: RawBlockPage,
    #[serde(default)]
    pub hitlog: RawHitlog,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default, rename = "taxii")]
    pub taxii: Vec<RawTaxii>,
    #[serde(default, rename = "download")]
    pub downloads: Vec<RawDownload>,
    #[serde(default, rename = "rpz")]
    pub rpz: Vec<RawRpz>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub dnstap: Option<RawDnstap>,
    #[serde(default)]
    pub share: RawShare,
}

/// What a feed deleted from feeds_dir does to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeletedFeeds {
    /// Its entries stay, served from its last good copy, until a SIGHUP
    /// confirms the deletion: a deletion by mistake lifts no protection.
    #[default]
    Keep,
    /// Its entries go at the next reload.
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResolverMode {
    #[default]
    Recursive,
    Forward,
}

/// `resolver.dnssec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnssecMode {
    /// Validate every answer; bogus ones become SERVFAIL.
    #[default]
    Validate,
    /// Ask upstream for DNSSEC records and pass them to clients that set
    /// DO, without validating.
    Process,
    /// Neither ask for nor pass DNSSEC records.
    Off,
}

/// `[resolver]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    #[serde(default)]
    pub mode: ResolverMode,
    /// Forward mode: `address:port` (port defaults to 53).
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Recursive mode: root server addresses replacing the built-in hints.
    #[serde(default)]
    pub root_hints: Vec<String>,
    #[serde(default)]
    pub allow_server_networks: Vec<IpNet>,
    /// Unset: 3000 in forward mode, 4000 in recursive mode.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Serve-stale window past the TTL, seconds; 0 turns it off.
    #[serde(default = "default_serve_stale_secs")]
    pub serve_stale_secs: u64,
    /// How long a client waits for the upstream before a stale answer.
    #[serde(default = "default_stale_answer_after_ms")]
    pub stale_answer_after_ms: u64,
    /// Memory for kept answers, MiB.
    #[serde(default = "default_stale_cache_mib")]
    pub stale_cache_mib: u64,
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// 0 turns the packet cache off.
    #[serde(default = "default_packet_cache_size")]
    pub packet_cache_size: usize,
    #[serde(default)]
    pub dnssec: DnssecMode,
    /// A file of DS or DNSKEY records; unset: the built-in root keys.
    #[serde(default)]
    pub trust_anchors: Option<PathBuf>,
    /// Zones whose validation failures are ignored (RFC 7646).
    #[serde(default)]
    pub negative_trust_anchors: Vec<String>,
    /// Answer NXDOMAIN from validated NSEC ranges (RFC 8198).
    #[serde(default = "default_true")]
    pub aggressive_nsec: bool,
}

impl Default for RawResolver {
    fn default() -> Self {
        RawResolver {
            mode: ResolverMode::default(),
            upstreams: Vec::new(),
            root_hints: Vec::new(),
            allow_server_networks: Vec::new(),
            timeout_ms: None,
            serve_stale_secs: default_serve_stale_secs(),
            stale_answer_after_ms: default_stale_answer_after_ms(),
            stale_cache_mib: default_stale_cache_mib(),
            cache_size: default_cache_size(),
            packet_cache_size: default_packet_cache_size(),
            dnssec: DnssecMode::default(),
            trust_anchors: None,
            negative_trust_anchors: Vec::new(),
            aggressive_nsec: true,
        }
    }
}

fn default_serve_stale_secs() -> u64 {
    // RFC 8767 suggests one to three days; Unbound's recommended
    // serve-expired-ttl is one.
    86_400
}

fn default_stale_answer_after_ms() -> u64 {
    // RFC 8767's client response timer, and Unbound's
    // serve-expired-client-timeout: under a stub's first retry.
    1_800
}

fn default_stale_cache_mib() -> u64 {
    64
}

fn default_cache_size() -> u64 {
    // hickory's working cache: delegations, keys and the answers the
    // answer store does not hold (CD queries). Each entry is a decoded
    // message, about 2 KiB signed, in two caches when validating: 4096
    // bounds them near Unbound's default 4 MiB message and key caches.
    4096
}

fn default_packet_cache_size() -> usize {
    // PowerDNS Recursor's default (packetcache-max-entries). About 250
    // bytes an entry when full: 120 MiB at most, only on a resolver that
    // has seen half a million distinct questions within their TTLs.
    500_000
}

/// `[blocklist]`; paths are relative to the config file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocklist {
    #[serde(default = "default_feeds_dir")]
    pub feeds_dir: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub allow: Vec<PathBuf>,
    #[serde(default)]
    pub protected: Vec<PathBuf>,
    #[serde(default = "default_policy_ttl")]
    pub policy_ttl: u32,
    #[serde(default)]
    pub default_action: Action,
    #[serde(default)]
    pub sinkhole_ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    pub sinkhole_ipv6: Option<Ipv6Addr>,
    #[serde(default = "default_true")]
    pub ede_names_feed: bool,
    /// The EDE text as the structured JSON of the IETF draft (off: plain
    /// text, until the draft is final).
    #[serde(default)]
    pub structured_errors: bool,
    /// Contact URIs (mailto:, tel:, sips:) for the structured text's `c`.
    #[serde(default)]
    pub error_contact: Vec<String>,
    /// The organisation named in the structured text's `o`.
    #[serde(default)]
    pub error_organisation: Option<String>,
    /// Off by default: one address often serves many unrelated names.
    #[serde(default)]
    pub answer_ip_categories: Vec<String>,
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    #[serde(default = "default_rescan_secs")]
    pub rescan_secs: u64,
    #[serde(default)]
    pub deleted_feeds: DeletedFeeds,
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Serve a blocklist with no entries (otherwise a reload that would
    /// empty it is refused, and an empty list makes the node unready).
    #[serde(default)]
    pub allow_empty: bool,
    #[serde(default = "default_max_feed_entries")]
    pub max_feed_entries: usize,
    #[serde(default = "default_max_feed_mib")]
    pub max_feed_mib: u64,
}

fn default_settle_ms() -> u64 {
    // Longer than the pauses of a download written in place in bursts.
    2000
}

fn default_max_feed_entries() -> usize {
    crate::formats::Bounds::default().max_entries
}

fn default_max_feed_mib() -> u64 {
    crate::formats::Bounds::default().max_bytes >> 20
}

fn default_max_shrink() -> f64 {
    0.5
}

fn default_debounce_ms() -> u64 {
    1000
}

fn default_rescan_secs() -> u64 {
    300
}

impl Default for RawBlocklist {
    fn default() -> Self {
        RawBlocklist {
            feeds_dir: default_feeds_dir(),
            state_dir: default_state_dir(),
            allow: Vec::new(),
            protected: Vec::new(),
            policy_ttl: default_policy_ttl(),
            default_action: Action::default(),
            sinkhole_ipv4: None,
            sinkhole_ipv6: None,
            ede_names_feed: true,
            structured_errors: false,
            error_contact: Vec::new(),
            error_organisation: None,
            answer_ip_categories: Vec::new(),
            max_shrink: default_max_shrink(),
            debounce_ms: default_debounce_ms(),
            rescan_secs: default_rescan_secs(),
            deleted_feeds: DeletedFeeds::default(),
            settle_ms: default_settle_ms(),
            allow_empty: false,
            max_feed_entries: default_max_feed_entries(),
            max_feed_mib: default_max_feed_mib(),
        }
    }
}

fn default_feeds_dir() -> PathBuf {
    PathBuf::from("blocklists")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

fn default_policy_ttl() -> u32 {
    300
}

pub(super) fn default_true() -> bool {
    true
}

/// One `[[feed]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFeed {
    pub file: String,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub trusted: bool,
    /// Off by default: shared hosting makes one address stand for many
    /// unrelated names.
    #[serde(default)]
    pub answer_ip: bool,
    #[serde(default)]
    pub max_entries: Option<usize>,
}

/// One `[[organisation]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrganisation {
    pub id: String,
    /// Defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub networks: Vec<IpNet>,
    #[serde(default)]
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub roaming_key_sha256: Option<String>,
    /// Names as written; validation normalises them.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    #[serde(default)]
    pub contact: Option<String>,
    /// This organisation's per-client query rate (a NAT gateway's is many
    /// hosts'); unset: `limits.client_qps`.
    #[serde(default)]
    pub client_qps: Option<u32>,
}

/// `[block_page]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlockPage {
    /// Off (`""`) by default.
    #[serde(default, deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub contact: String,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Default 127.0.0.1:9153, `""` disables it.
    #[serde(default = "default_admin_listen", deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub operator_token_sha256: Option<String>,
    #[serde(default = "default_upstream_fresh")]
    pub ready_upstream_secs: u64,
    #[serde(default = "default_probe")]
    pub upstream_probe_secs: u64,
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
    #[serde(default = "default_admin_connections_per_client")]
    pub max_connections_per_client: usize,
    #[serde(default = "default_admin_idle")]
    pub idle_timeout_secs: u64,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            operator_token_sha256: None,
            ready_upstream_secs: default_upstream_fresh(),
            upstream_probe_secs: default_probe(),
            max_connections: default_admin_connections(),
            max_connections_per_client: default_admin_connections_per_client(),
            idle_timeout_secs: default_admin_idle(),
        }
    }
}

fn default_admin_connections() -> usize {
    64
}

fn default_admin_connections_per_client() -> usize {
    // A Prometheus server, a dashboard and an operator's browser from
    // one address, with room to spare.
    16
}

fn default_admin_idle() -> u64 {
    30
}

fn default_upstream_fresh() -> u64 {
    60
}

fn default_probe() -> u64 {
    15
}

fn default_admin_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9153)))
}

/// `"ADDR:PORT"`, or `""` for off.
fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address:port (e.g. \"127.0.0.1:9153\"; \"\" turns the listener off)"
        ))
    })
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// One `[[taxii]]`. Passwords and tokens are never keys here (a
/// `password` key is an unknown-field error), only where to find them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTaxii {
    pub name: String,
    pub url: String,
    pub collection: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_poll_interval() -> u64 {
    3600
}

fn default_page_size() -> u32 {
    1000
}
