//! The TOML configuration: types, defaults and validation.
//!
//! Two stages (after ripgrep's low/high args): serde reads the file into
//! [`RawConfig`] with `deny_unknown_fields` everywhere, so a misspelt key
//! is an error that names the key, its line and the file; then
//! [`Config::from_raw`] checks what serde cannot (address lists, duplicate
//! ids, hex tokens) and resolves relative paths against the config file's
//! folder. Nothing here binds a socket or reads a feed.
//!
//! Every key in DESIGN.md's Configuration section is accepted from the
//! start, even where the feature behind it arrives later, so deployment
//! scripts written against one version keep working.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::feeds::Format;
use crate::policy::Action;

/// A config file that cannot be used; the message names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub resolver: RawResolver,
    #[serde(default)]
    pub blocklist: RawBlocklist,
    /// Category name -> action.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    #[serde(default, rename = "feed")]
    pub feeds: Vec<FeedConfig>,
    #[serde(default, rename = "organisation")]
    pub organisations: Vec<RawOrganisation>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub block_page: BlockPageConfig,
    #[serde(default)]
    pub hitlog: RawHitlog,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default, rename = "taxii")]
    pub taxii: Vec<TaxiiConfig>,
}

/// A TAXII 2.1 collection pulled into feeds_dir (DESIGN.md: the TAXII
/// puller writes files that the normal file-drop path picks up).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaxiiConfig {
    /// Short name; the feed file is `taxii-<name>.json` in feeds_dir.
    pub name: String,
    /// The API root, e.g. `https://taxii.example.org/api1/`.
    pub url: String,
    /// Collection id.
    pub collection: String,
    /// HTTP Basic user; the password comes from `password_file` or
    /// `password_env`, never from this file.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Bearer token instead of Basic auth, from a file or the environment.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Objects asked for per page (`limit`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_poll_interval() -> u64 {
    3600
}

fn default_page_size() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP and TCP are both served on each address.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Answer clients that fall in no organisation's networks? Closed by
    /// default: an open resolver is an amplification weapon.
    #[serde(default)]
    pub allow_unknown_clients: bool,
    /// Idle timeout of a TCP client connection, in seconds.
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout_secs: u64,
    /// On SIGTERM, how long queries already in flight may take to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// Worker threads, and UDP sockets per listen address (SO_REUSEPORT:
    /// the kernel spreads clients over them); 0 = one per CPU.
    #[serde(default)]
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            allow_unknown_clients: false,
            tcp_timeout_secs: default_tcp_timeout(),
            shutdown_grace_secs: default_grace(),
            workers: 0,
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 5353))]
}

fn default_tcp_timeout() -> u64 {
    10
}

fn default_grace() -> u64 {
    5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResolverMode {
    #[default]
    Recursive,
    Forward,
}

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
    /// Recursive mode: networks that may be queried although they are
    /// private or loopback (a lab root, split-horizon authorities, tests).
    #[serde(default)]
    pub allow_server_networks: Vec<IpNet>,
    /// Upstream query timeout in milliseconds.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_ms: u64,
    /// Answer cache entries.
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// Whole UDP responses kept for clean names (answers no blocklist
    /// entry touched), so a repeated question is answered without
    /// decoding it; 0 turns the packet cache off.
    #[serde(default = "default_packet_cache_size")]
    pub packet_cache_size: usize,
}

impl Default for RawResolver {
    fn default() -> Self {
        RawResolver {
            mode: ResolverMode::default(),
            upstreams: Vec::new(),
            root_hints: Vec::new(),
            allow_server_networks: Vec::new(),
            timeout_ms: default_upstream_timeout(),
            cache_size: default_cache_size(),
            packet_cache_size: default_packet_cache_size(),
        }
    }
}

fn default_upstream_timeout() -> u64 {
    2000
}

fn default_cache_size() -> u64 {
    1 << 20
}

fn default_packet_cache_size() -> usize {
    // PowerDNS Recursor's default (packetcache-max-entries). About 250
    // bytes an entry when full: 120 MiB at most, only on a resolver that
    // has seen half a million distinct questions within their TTLs.
    500_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocklist {
    #[serde(default = "default_feeds_dir")]
    pub feeds_dir: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Exception list files (any feed format; every entry becomes an allow).
    #[serde(default)]
    pub allow: Vec<PathBuf>,
    /// Protected-name list files (plain lists).
    #[serde(default)]
    pub protected: Vec<PathBuf>,
    /// TTL of block answers and of their synthesised SOA, in seconds.
    #[serde(default = "default_policy_ttl")]
    pub policy_ttl: u32,
    #[serde(default)]
    pub default_action: Action,
    /// Sinkhole answer for A queries when the action is `sinkhole`.
    #[serde(default)]
    pub sinkhole_ipv4: Option<Ipv4Addr>,
    /// Sinkhole answer for AAAA queries when the action is `sinkhole`.
    #[serde(default)]
    pub sinkhole_ipv6: Option<Ipv6Addr>,
    /// Name the feed in the Extended DNS Error text? Some operators would
    /// rather not tell clients which partner listed a name.
    #[serde(default = "default_true")]
    pub ede_names_feed: bool,
    /// Categories whose address indicators take part in the answer-IP
    /// policy, in every feed (a feed can also opt in with `answer_ip`).
    /// Off by default: one address often serves many unrelated names.
    #[serde(default)]
    pub answer_ip_categories: Vec<String>,
    /// A feed that loses more than this fraction of its entries at once
    /// keeps its previous contents (truncated downloads are the common
    /// cause of a protective DNS losing its protection).
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    /// Quiet time after a file event before the rebuild starts, in ms.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Full rescan of feeds_dir even without file events (network file
    /// systems lose events), in seconds.
    #[serde(default = "default_rescan_secs")]
    pub rescan_secs: u64,
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
            answer_ip_categories: Vec::new(),
            max_shrink: default_max_shrink(),
            debounce_ms: default_debounce_ms(),
            rescan_secs: default_rescan_secs(),
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

fn default_true() -> bool {
    true
}

/// Optional per-file settings for a feed in `feeds_dir`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// File name inside `feeds_dir`.
    pub file: String,
    /// Skip content detection.
    #[serde(default)]
    pub format: Option<Format>,
    /// Category for every entry (overrides the feed's own column).
    #[serde(default)]
    pub category: Option<String>,
    /// Action for every entry (overrides the format's and the category's).
    #[serde(default)]
    pub action: Option<Action>,
    /// Trusted enough to list protected names (a national CERT's own feed).
    #[serde(default)]
    pub trusted: bool,
    /// Its address indicators block answers that resolve into them
    /// (answer-IP policy). Off by default: shared hosting makes one
    /// address stand for many unrelated names.
    #[serde(default)]
    pub answer_ip: bool,
    /// Refuse the feed when it holds more entries than this (a runaway or
    /// wrong file is more likely than a real tenfold growth).
    #[serde(default)]
    pub max_entries: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrganisation {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub networks: Vec<IpNet>,
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Names (and everything below them) this organisation never has
    /// blocked: its own intranet, a supplier a feed wrongly lists.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Category -> action for this organisation's clients only; beats the
    /// global `[actions]` and the feed's own action.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    /// Who this organisation's users should ask about a block (the block
    /// page shows it instead of `block_page.contact`).
    #[serde(default)]
    pub contact: Option<String>,
}

/// The page a browser sees when a sinkholed name brings it here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockPageConfig {
    /// HTTP listener for the block page, e.g. "0.0.0.0:80"; off (`""`)
    /// by default. Point `sinkhole_ipv4`/`sinkhole_ipv6` at this host.
    #[serde(default, deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// Who to contact about a block, shown on the page.
    #[serde(default)]
    pub contact: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin HTTP listener (metrics, health, review API and page);
    /// default 127.0.0.1:9153, `""` disables it.
    #[serde(default = "default_admin_listen", deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub operator_token_sha256: Option<String>,
    /// `/readyz` wants an upstream answer at most this old.
    #[serde(default = "default_upstream_fresh")]
    pub ready_upstream_secs: u64,
    /// Without queries, probe the upstream (`. NS`) this often.
    #[serde(default = "default_probe")]
    pub upstream_probe_secs: u64,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            operator_token_sha256: None,
            ready_upstream_secs: default_upstream_fresh(),
            upstream_probe_secs: default_probe(),
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHitlog {
    /// Off: no hit records at all (no database, no stream); blocking is
    /// unchanged. For a resolver whose hits are recorded elsewhere, and to
    /// measure what recording costs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// Also stream every record as a JSON line to this file (rotated daily
    /// to `NAME-YYYY-MM-DD.jsonl`), for SIEM shippers.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// The SQLite database; default `state_dir/hits.sqlite`.
    #[serde(default)]
    pub database: Option<PathBuf>,
    /// Record queries that an allow entry let through, too.
    #[serde(default)]
    pub log_allowed: bool,
    /// Records that may wait for the writer; beyond this they are dropped
    /// and counted, never waited for.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Cap on the database file; at the cap writes fail as on a full disk
    /// (logged, counted, records dropped) until retention frees space.
    #[serde(default)]
    pub max_db_mib: Option<u64>,
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
            max_db_mib: None,
        }
    }
}

fn default_retention() -> u32 {
    90
}

fn default_channel_capacity() -> usize {
    65_536
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `portcullis=debug,hickory=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (for the journal and terminals) or `json` (one object per
    /// line, for log shippers).
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

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// Validated configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub server: ServerConfig,
    pub resolver: ResolverConfig,
    pub blocklist: RawBlocklist,
    pub actions: BTreeMap<String, Action>,
    pub feeds: Vec<FeedConfig>,
    pub organisations: Vec<Organisation>,
    pub admin: RawAdmin,
    pub block_page: BlockPageConfig,
    pub hitlog: RawHitlog,
    pub log: LogConfig,
    pub taxii: Vec<TaxiiConfig>,
}

#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub mode: ResolverMode,
    pub upstreams: Vec<SocketAddr>,
    /// Empty means the built-in root hints.
    pub root_hints: Vec<IpAddr>,
    pub allow_server_networks: Vec<IpNet>,
    pub timeout_ms: u64,
    pub cache_size: u64,
    pub packet_cache_size: usize,
}

#[derive(Debug, Clone)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub networks: Vec<IpNet>,
    pub token_sha256: Option<String>,
    /// Normalised names.
    pub allow: Vec<String>,
    pub actions: BTreeMap<String, Action>,
    pub contact: Option<String>,
}

impl ServerConfig {
    /// Worker threads to run: the configured number, or one per CPU.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str(&text, path)
    }

    /// Parse config text; `path` locates relative paths and names the file in errors.
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        Self::from_raw(raw, path)
    }

    pub fn from_raw(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        if raw.server.workers > 1024 {
            return Err(invalid(
                "server.workers",
                format!(
                    "{} is too many; at most 1024 (0 = one per CPU)",
                    raw.server.workers
                ),
            ));
        }
        if raw.server.listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "needs at least one address".into(),
            ));
        }

        let mut upstreams = Vec::new();
        for (i, text) in raw.resolver.upstreams.iter().enumerate() {
            let addr = parse_server_addr(text).ok_or_else(|| {
                invalid(
                    &format!("resolver.upstreams[{i}]"),
                    format!("{text:?} is not an address or address:port"),
                )
            })?;
            upstreams.push(addr);
        }
        if raw.resolver.mode == ResolverMode::Forward && upstreams.is_empty() {
            return Err(invalid(
                "resolver.upstreams",
                "forward mode needs at least one upstream".into(),
            ));
        }
        let mut root_hints = Vec::new();
        for (i, text) in raw.resolver.root_hints.iter().enumerate() {
            let key = format!("resolver.root_hints[{i}]");
            let addr = parse_server_addr(text)
                .ok_or_else(|| invalid(&key, format!("{text:?} is not an IP address")))?;
            if addr.port() != 53 {
                return Err(invalid(
                    &key,
                    "root servers are queried on port 53; give the address only".into(),
                ));
            }
            root_hints.push(addr.ip());
        }
        if raw.resolver.timeout_ms == 0 {
            return Err(invalid("resolver.timeout_ms", "must be above 0".into()));
        }

        let mut blocklist = raw.blocklist;
        blocklist.feeds_dir = rel(&blocklist.feeds_dir);
        blocklist.state_dir = rel(&blocklist.state_dir);
        blocklist.allow = blocklist.allow.iter().map(|p| rel(p)).collect();
        blocklist.protected = blocklist.protected.iter().map(|p| rel(p)).collect();
        if !(0.0..=1.0).contains(&blocklist.max_shrink) {
            return Err(invalid(
                "blocklist.max_shrink",
                "a fraction from 0.0 to 1.0 (0.5 = refuse losing half)".into(),
            ));
        }
        if blocklist.rescan_secs == 0 {
            return Err(invalid("blocklist.rescan_secs", "must be above 0".into()));
        }
        if blocklist.policy_ttl > 86_400 {
            return Err(invalid(
                "blocklist.policy_ttl",
                "at most 86400 seconds".into(),
            ));
        }

        let sinkhole_used = blocklist.default_action == Action::Sinkhole
            || raw.actions.values().any(|a| *a == Action::Sinkhole)
            || raw.feeds.iter().any(|f| f.action == Some(Action::Sinkhole));
        if sinkhole_used && blocklist.sinkhole_ipv4.is_none() && blocklist.sinkhole_ipv6.is_none() {
            return Err(invalid(
                "blocklist.sinkhole_ipv4",
                "the `sinkhole` action is used, so set sinkhole_ipv4 and/or sinkhole_ipv6".into(),
            ));
        }

        let mut seen_files = HashSet::new();
        for (i, feed) in raw.feeds.iter().enumerate() {
            let key = format!("feed[{i}].file");
            if feed.file.is_empty() || feed.file.contains('/') || feed.file.contains('\\') {
                return Err(invalid(
                    &key,
                    format!("{:?} must be a file name inside feeds_dir", feed.file),
                ));
            }
            if !seen_files.insert(feed.file.as_str()) {
                return Err(invalid(
                    &key,
                    format!("{:?} is configured twice", feed.file),
                ));
            }
        }

        let mut organisations = Vec::new();
        let mut seen_ids = HashSet::new();
        for (i, org) in raw.organisations.into_iter().enumerate() {
            if org.id.is_empty()
                || !org
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    &format!("organisation[{i}].id"),
                    format!("{:?}: use letters, digits, - and _", org.id),
                ));
            }
            if !seen_ids.insert(org.id.clone()) {
                return Err(invalid(
                    &format!("organisation[{i}].id"),
                    format!("{:?} is used twice", org.id),
                ));
            }
            if let Some(token) = &org.token_sha256 {
                check_sha256(token)
                    .map_err(|m| invalid(&format!("organisation[{i}].token_sha256"), m))?;
            }
            let mut allow = Vec::new();
            for (j, name) in org.allow.iter().enumerate() {
                allow.push(crate::domain::normalize(name).map_err(|e| {
                    invalid(
                        &format!("organisation[{i}].allow[{j}]"),
                        format!("{name:?}: {e}"),
                    )
                })?);
            }
            organisations.push(Organisation {
                name: org.name.unwrap_or_else(|| org.id.clone()),
                id: org.id,
                networks: org.networks.iter().map(IpNet::trunc).collect(),
                token_sha256: org.token_sha256.map(|t| t.to_ascii_lowercase()),
                allow,
                actions: org.actions,
                contact: org.contact,
            });
        }
        if let Some(token) = &raw.admin.operator_token_sha256 {
            check_sha256(token).map_err(|m| invalid("admin.operator_token_sha256", m))?;
        }
        if raw.hitlog.retention_days == 0 {
            return Err(invalid(
                "hitlog.retention_days",
                "must be at least 1".into(),
            ));
        }
        if raw.hitlog.channel_capacity == 0 {
            return Err(invalid(
                "hitlog.channel_capacity",
                "must be at least 1".into(),
            ));
        }
        let mut hitlog = raw.hitlog;
        hitlog.jsonl = hitlog.jsonl.map(|p| rel(&p));
        hitlog.database = Some(
            hitlog
                .database
                .map(|p| rel(&p))
                .unwrap_or_else(|| blocklist.state_dir.join("hits.sqlite")),
        );
        if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log filter (try \"info\")", raw.log.level),
            ));
        }

        let mut taxii = raw.taxii;
        let mut seen_names = HashSet::new();
        for (i, t) in taxii.iter_mut().enumerate() {
            let key = |k: &str| format!("taxii[{i}].{k}");
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    &key("name"),
                    format!("{:?}: use letters, digits, - and _", t.name),
                ));
            }
            if !seen_names.insert(t.name.clone()) {
                return Err(invalid(&key("name"), format!("{:?} is used twice", t.name)));
            }
            check_taxii_url(&t.url).map_err(|m| invalid(&key("url"), m))?;
            if t.password_file.is_some() && t.password_env.is_some() {
                return Err(invalid(
                    &key("password_file"),
                    "give password_file or password_env, not both".into(),
                ));
            }
            if t.token_file.is_some() && t.token_env.is_some() {
                return Err(invalid(
                    &key("token_file"),
                    "give token_file or token_env, not both".into(),
                ));
            }
            let has_password = t.password_file.is_some() || t.password_env.is_some();
            let has_token = t.token_file.is_some() || t.token_env.is_some();
            if has_password && t.username.is_none() {
                return Err(invalid(
                    &key("username"),
                    "a password needs a username".into(),
                ));
            }
            if has_password && has_token {
                return Err(invalid(
                    &key("token_file"),
                    "use a password or a token, not both".into(),
                ));
            }
            if t.poll_interval_secs < 60 {
                return Err(invalid(
                    &key("poll_interval_secs"),
                    "at least 60 seconds (be kind to the server)".into(),
                ));
            }
            if t.page_size == 0 {
                return Err(invalid(&key("page_size"), "must be above 0".into()));
            }
            t.password_file = t.password_file.as_ref().map(|p| rel(p));
            t.token_file = t.token_file.as_ref().map(|p| rel(p));
        }

        Ok(Config {
            path: path.to_path_buf(),
            server: raw.server,
            resolver: ResolverConfig {
                mode: raw.resolver.mode,
                upstreams,
                root_hints,
                allow_server_networks: raw.resolver.allow_server_networks,
                timeout_ms: raw.resolver.timeout_ms,
                cache_size: raw.resolver.cache_size,
                packet_cache_size: raw.resolver.packet_cache_size,
            },
            blocklist,
            actions: raw.actions,
            feeds: raw.feeds,
            organisations,
            admin: raw.admin,
            block_page: raw.block_page,
            hitlog,
            log: raw.log,
            taxii,
        })
    }

    /// Per-file settings for a feed file name, if configured.
    pub fn feed_settings(&self, file_name: &str) -> Option<&FeedConfig> {
        self.feeds.iter().find(|f| f.file == file_name)
    }
}

/// `1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353`.
fn parse_server_addr(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

/// TAXII over HTTPS; plain HTTP only to a loopback address (a local relay
/// or a test server), never across a network.
fn check_taxii_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("plain http is only allowed to a loopback address; use https".into())
            }
        }
        other => Err(format!("scheme {other:?}: use https")),
    }
}

fn check_sha256(token: &str) -> Result<(), String> {
    if token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("must be 64 hex digits (the SHA-256 of the token, not the token)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, Path::new("/etc/portcullis/portcullis.toml"))
    }

    #[test]
    fn empty_config_gets_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen, [SocketAddr::from(([127, 0, 0, 1], 5353))]);
        assert!(!c.server.allow_unknown_clients);
        assert_eq!(c.resolver.mode, ResolverMode::Recursive);
        assert_eq!(
            c.blocklist.feeds_dir,
            Path::new("/etc/portcullis/blocklists")
        );
        assert_eq!(c.blocklist.state_dir, Path::new("/etc/portcullis/state"));
        assert_eq!(c.blocklist.policy_ttl, 300);
        assert_eq!(c.blocklist.default_action, Action::Nxdomain);
        assert_eq!(
            c.admin.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9153)))
        );
        assert_eq!(c.hitlog.retention_days, 90);
    }

    #[test]
    fn every_design_key_is_accepted() {
        let c = parse(
            r#"
            [server]
            listen = ["127.0.0.1:5353", "[::1]:5353"]
            allow_unknown_clients = false
            [resolver]
            mode = "forward"
            upstreams = ["9.9.9.9:53", "149.112.112.112"]
            root_hints = []
            [blocklist]
            feeds_dir = "blocklists"
            state_dir = "/var/lib/portcullis"
            allow = ["allow.txt"]
            protected = ["protected.txt"]
            policy_ttl = 300
            default_action = "nxdomain"
            [actions]
            malware = "refused"
            phishing = "nodata"
            [[feed]]
            file = "partner.txt"
            format = "plain"
            category = "malware"
            action = "nxdomain"
            [[organisation]]
            id = "council-a"
            name = "Council A"
            networks = ["10.1.0.0/16", "2001:db8:1::/48"]
            token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            [admin]
            listen = "127.0.0.1:9153"
            operator_token_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
            [hitlog]
            retention_days = 90
            jsonl = "/var/log/portcullis/hits.jsonl"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.resolver.upstreams[1],
            SocketAddr::from(([149, 112, 112, 112], 53))
        );
        assert_eq!(
            c.blocklist.allow,
            [PathBuf::from("/etc/portcullis/allow.txt")]
        );
        assert_eq!(c.blocklist.state_dir, Path::new("/var/lib/portcullis"));
        assert_eq!(c.actions["malware"], Action::Refused);
        assert_eq!(c.organisations[0].networks.len(), 2);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = parse("[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/portcullis/portcullis.toml"), "{err}");
        assert!(err.contains("lisen"), "{err}");
        let err = parse("[blocklists]\n").unwrap_err().to_string();
        assert!(err.contains("blocklists"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse("[resolver]\nmode = \"forward\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolver.upstreams"), "{err}");
        let err = parse("[resolver]\nmode = \"forward\"\nupstreams = [\"nine\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolver.upstreams[0]"), "{err}");
        let err = parse("[resolver]\nmode = \"iterative\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("iterative"), "{err}");
        let err = parse("[blocklist]\ndefault_action = \"sinkhole\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinkhole_ipv4"), "{err}");
        let err = parse("[[organisation]]\nid = \"a\"\n[[organisation]]\nid = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("organisation[1].id"), "{err}");
        let err = parse("[[organisation]]\nid = \"a\"\ntoken_sha256 = \"secret\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("organisation[0].token_sha256"), "{err}");
        let err = parse("[[organisation]]\nid = \"a\"\nnetworks = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("networks"), "{err}");
        let err = parse(
            "[[taxii]]\nname = \"a\"\nurl = \"http://taxii.example/api1/\"\ncollection = \"c\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("taxii[0].url") && err.contains("https"),
            "{err}"
        );
        let err = parse("[[taxii]]\nname = \"a\"\nurl = \"https://taxii.example/api1/\"\ncollection = \"c\"\npassword = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `password`"),
            "passwords never in the config: {err}"
        );
        let err = parse("[[taxii]]\nname = \"a\"\nurl = \"https://t.example/\"\ncollection = \"c\"\npassword_env = \"P\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("taxii[0].username"), "{err}");
        let err = parse("[resolver]\nroot_hints = [\"127.0.0.1:5300\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolver.root_hints[0]"), "{err}");
    }
}
