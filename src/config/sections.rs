//! The validated sections of [`Config`](super::Config): what the rest of the
//! program reads, with absolute paths and parsed addresses. Built only by
//! `validate` (or by hand in tests); no serde here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::raw::{DnssecMode, LogFormat, RawLog, RawServer, ResolverMode};
use crate::formats::Format;
use crate::policy::Action;

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP and TCP are both served on each address; never empty.
    pub listen: Vec<SocketAddr>,
    /// Answer clients that fall in no organisation's networks?
    pub allow_unknown_clients: bool,
    /// Idle timeout of a client connection (TCP, DoT, DoH, DoQ), in
    /// seconds; also the time a TLS handshake may take.
    pub tcp_timeout_secs: u64,
    /// On SIGTERM, how long queries already in flight may take to finish.
    pub shutdown_grace_secs: u64,
    /// Worker threads, and UDP sockets per listen address (SO_REUSEPORT:
    /// the kernel spreads clients over them); 0 = one per CPU.
    pub workers: usize,
    /// The encrypted listeners and their certificate; `None` when none is
    /// configured.
    pub encrypted: Option<EncryptedConfig>,
    /// Client connections open at once, all stream transports together.
    pub max_connections: usize,
    /// Client connections open at once from one address.
    pub max_connections_per_client: usize,
    /// Queries of one connection in progress at once (HTTP/2 and QUIC
    /// streams included).
    pub max_queries_per_connection: usize,
    /// Answer `use-application-dns.net` with NXDOMAIN.
    pub application_dns_canary: bool,
    /// This resolver's name in a fleet: on every hit record it writes to
    /// a shared store. Letters, digits, `.`, `-` and `_`, 1-64 of them.
    pub node_id: String,
}

/// DNS over TLS, HTTPS and QUIC: where, and with which certificate.
#[derive(Debug, Clone)]
pub struct EncryptedConfig {
    pub tls_listen: Vec<SocketAddr>,
    pub https_listen: Vec<SocketAddr>,
    pub quic_listen: Vec<SocketAddr>,
    /// PEM chain, leaf first; absolute.
    pub cert: PathBuf,
    /// PEM private key; absolute.
    pub key: PathBuf,
    /// The name in the certificate (no trailing dot): the DDR target and
    /// the suffix of roaming server names.
    pub tls_name: Option<String>,
}

impl Default for ServerConfig {
    /// The documented defaults (an empty `[server]`).
    fn default() -> Self {
        let raw = RawServer::default();
        ServerConfig {
            listen: raw.listen,
            allow_unknown_clients: raw.allow_unknown_clients,
            tcp_timeout_secs: raw.tcp_timeout_secs,
            shutdown_grace_secs: raw.shutdown_grace_secs,
            workers: raw.workers,
            encrypted: None,
            max_connections: raw.max_connections,
            max_connections_per_client: raw.max_connections_per_client,
            max_queries_per_connection: raw.max_queries_per_connection,
            application_dns_canary: raw.application_dns_canary,
            node_id: crate::config::validate::default_node_id(),
        }
    }
}

impl ServerConfig {
    /// No DNS listener at all: an instance that serves only the review
    /// API and page (over the fleet's store).
    pub fn is_reporting_only(&self) -> bool {
        self.listen.is_empty() && self.encrypted.is_none()
    }

    /// Worker threads to run: the configured number, or one per CPU.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `[resolver]`.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub mode: ResolverMode,
    /// Forward mode's servers; at least one there.
    pub upstreams: Vec<SocketAddr>,
    /// Empty means the built-in root hints.
    pub root_hints: Vec<IpAddr>,
    /// Recursive mode: networks that may be queried although they are
    /// private or loopback (a lab root, split-horizon authorities, tests).
    pub allow_server_networks: Vec<IpNet>,
    /// Milliseconds, above 0: the longest a resolution may take before
    /// the client gets SERVFAIL (or a stale answer), in both modes.
    pub timeout_ms: u64,
    /// Answer NXDOMAIN from validated NSEC ranges (RFC 8198); only with
    /// `dnssec = "validate"`.
    pub aggressive_nsec: bool,
    /// Serve-stale (RFC 8767): seconds an expired answer stays usable;
    /// 0 = off.
    pub serve_stale_secs: u64,
    /// Milliseconds a client waits for the upstream before it gets the
    /// stale answer.
    pub stale_answer_after_ms: u64,
    /// Memory bound of the answer store (fresh answers for every
    /// transport, and stale ones for serve-stale), MiB; 0 = no store.
    pub stale_cache_mib: u64,
    /// Entries of hickory's own caches: delegations, keys, and answers
    /// the answer store does not hold.
    pub cache_size: u64,
    /// Whole UDP responses kept for clean names (answers no blocklist
    /// entry touched), so a repeated question is answered without
    /// decoding it; 0 turns the packet cache off.
    pub packet_cache_size: usize,
    pub dnssec: DnssecMode,
    /// The anchors read from `resolver.trust_anchors`; empty means the
    /// built-in IANA root keys.
    pub trust_anchors: Vec<crate::dnssec::anchors::Anchor>,
    /// Names at and below which a bogus answer is treated as insecure.
    pub negative_trust_anchors: Vec<hickory_proto::rr::Name>,
}

/// `[blocklist]`, with absolute paths.
#[derive(Debug, Clone)]
pub struct BlocklistConfig {
    pub feeds_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Exception list files (any feed format; every entry becomes an allow).
    pub allow: Vec<PathBuf>,
    /// Protected-name list files (plain lists).
    pub protected: Vec<PathBuf>,
    /// TTL of block answers and of their synthesised SOA, in seconds.
    pub policy_ttl: u32,
    pub default_action: Action,
    /// Sinkhole answer for A queries when the action is `sinkhole`.
    pub sinkhole_ipv4: Option<Ipv4Addr>,
    /// Sinkhole answer for AAAA queries when the action is `sinkhole`.
    pub sinkhole_ipv6: Option<Ipv6Addr>,
    /// Name the feed in the Extended DNS Error text? Some operators would
    /// rather not tell clients which partner listed a name.
    pub ede_names_feed: bool,
    /// The EDE text of a block as structured JSON (draft-ietf-dnsop-
    /// structured-dns-error): contact, justification, sub-error,
    /// organisation. `None`: plain text.
    pub structured_errors: Option<StructuredErrors>,
    /// Categories whose address indicators take part in the answer-IP
    /// policy, in every feed (a feed can also opt in with `answer_ip`).
    pub answer_ip_categories: Vec<String>,
    /// A feed that loses more than this fraction of its entries at once
    /// keeps its previous contents (truncated downloads are the common
    /// cause of a protective DNS losing its protection).
    pub max_shrink: f64,
    /// Quiet time after a file event before the reload starts, in ms.
    pub debounce_ms: u64,
    /// Full rescan of feeds_dir even without file events (network file
    /// systems lose events), in seconds.
    pub rescan_secs: u64,
    /// A feed written in place is read once it has been unchanged this
    /// long (ms); 0 reads it at once.
    pub settle_ms: u64,
    /// Whether a deleted feed's entries stay until a SIGHUP.
    pub deleted_feeds: crate::config::DeletedFeeds,
    /// Serve an empty blocklist without complaint.
    pub allow_empty: bool,
    /// Entries one feed may hold unless its `max_entries` says otherwise,
    /// counted as it is read.
    pub max_feed_entries: usize,
    /// MiB of text one feed may hold, after decompression.
    pub max_feed_mib: u64,
}

/// Optional per-file settings for a feed in `feeds_dir`.
// The field order is part of the snapshot fingerprint (the compiler hashes
// this type's Debug text): reordering costs every resolver one full
// reload at its next start.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// File name inside `feeds_dir`.
    pub file: String,
    /// Skip content detection.
    pub format: Option<Format>,
    /// Category for every entry (overrides the feed's own column).
    pub category: Option<String>,
    /// Action for every entry (overrides the format's and the category's).
    pub action: Option<Action>,
    /// Trusted enough to list protected names (a national CERT's own feed).
    pub trusted: bool,
    /// Its address indicators block answers that resolve into them
    /// (answer-IP policy).
    pub answer_ip: bool,
    /// Refuse the feed when it holds more entries than this (a runaway or
    /// wrong file is more likely than a real tenfold growth).
    pub max_entries: Option<usize>,
}

/// One `[[organisation]]`.
#[derive(Debug, Clone)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub networks: Vec<IpNet>,
    /// Lower-case hex.
    pub token_sha256: Option<String>,
    /// SHA-256 (lower-case hex) of the key its roaming devices present in
    /// a DoH path or a DoT/DoQ server name.
    pub roaming_key_sha256: Option<String>,
    /// Normalised names (and everything below them) this organisation
    /// never has blocked: its own intranet, a supplier a feed wrongly lists.
    pub allow: Vec<String>,
    /// Category -> action for this organisation's clients only; beats the
    /// global `[actions]` and the feed's own action.
    pub actions: BTreeMap<String, Action>,
    /// Who this organisation's users should ask about a block (the block
    /// page shows it instead of `block_page.contact`).
    pub contact: Option<String>,
    /// Its clients' query rate, when it differs from `limits.client_qps`.
    pub client_qps: Option<u32>,
}

/// `[limits]`: what one client, or one zone, can take (see
/// `server::limits`). Rates of 0 are off.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub client_qps: u32,
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub over_limit: crate::config::OverLimit,
    pub burst_factor: u32,
    pub rrl_responses_per_second: u32,
    pub rrl_slip: u32,
    pub rrl_prefix_v4: u8,
    pub rrl_prefix_v6: u8,
    pub max_upstream_queries: u32,
    pub max_upstream_per_client: u32,
    pub max_upstream_per_zone: u32,
}

/// The page a browser sees when a sinkholed name brings it here.
#[derive(Debug, Clone, Default)]
pub struct BlockPageConfig {
    /// HTTP listener for the block page, e.g. "0.0.0.0:80"; `None` is off.
    /// Point `sinkhole_ipv4`/`sinkhole_ipv6` at this host.
    pub listen: Option<SocketAddr>,
    /// Who to contact about a block, shown on the page.
    pub contact: String,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin HTTP listener (metrics, health, review API and page); `None`
    /// is off.
    pub listen: Option<SocketAddr>,
    /// 64 hex digits, as written.
    pub operator_token_sha256: Option<String>,
    /// `/readyz` wants an upstream answer at most this old.
    pub ready_upstream_secs: u64,
    /// Without queries, probe the upstream (`. NS`) this often.
    pub upstream_probe_secs: u64,
    /// Connection caps and idle timeout of the admin listener.
    pub limits: crate::http_limits::HttpLimits,
}

/// `[hitlog]`, with absolute paths.
#[derive(Debug, Clone)]
pub struct HitlogConfig {
    /// Off: no hit records at all (no database, no stream); blocking is
    /// unchanged. For a resolver whose hits are recorded elsewhere, and to
    /// measure what recording costs.
    pub enabled: bool,
    /// At least 1.
    pub retention_days: u32,
    /// Also stream every record as a JSON line to this file (rotated daily
    /// to `NAME-YYYY-MM-DD.jsonl`), for SIEM shippers.
    pub jsonl: Option<PathBuf>,
    /// The SQLite database (default `state_dir/hits.sqlite`): the one place
    /// the writer, the CLI and the admin API take its path from.
    pub database: PathBuf,
    /// Record queries that an allow entry let through, too.
    pub log_allowed: bool,
    /// Records that may wait for the writer; beyond this they are dropped
    /// and counted, never waited for.
    pub channel_capacity: usize,
    /// The writer runs at idle priority, taking only CPU time the queries
    /// leave, and catches up at nice 10 past half the channel and nice 0
    /// past three quarters.
    pub yield_to_queries: bool,
    /// Cap on the database file (`None`: no cap). At the cap the oldest
    /// records already in the daily roll-ups are deleted to make room.
    pub max_db_mib: Option<u64>,
    /// Like hits from one client written one record each per window
    /// before the rest are folded into one counted record; 0 = never.
    pub coalesce_after: u64,
    /// The coalescing window, seconds.
    pub coalesce_window_s: u32,
    /// A fleet's shared store: every record is also forwarded there.
    pub postgres: Option<PostgresConfig>,
}

/// `[dnstap]`: dnstap messages to a collector (Frame Streams).
#[derive(Debug, Clone)]
pub struct DnstapConfig {
    pub target: DnstapTarget,
    /// Only queries a blocklist entry decided.
    pub only_policy: bool,
    /// Send CLIENT_QUERY messages (when the query arrives).
    pub client_query: bool,
    /// Send CLIENT_RESPONSE messages (with the query and the response).
    pub client_response: bool,
    pub identity: String,
    /// Messages waiting for the collector; beyond this they are dropped
    /// and counted.
    pub queue: usize,
}

/// Where a dnstap collector listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnstapTarget {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// `[hitlog] postgres*`: the fleet's shared hit store.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq URL or key=value string without a password; `sslmode`
    /// chooses TLS (`disable`, `prefer` (default), `require`).
    pub url: String,
    /// The password, read at connect time; without one,
    /// `PORTCULLIS_POSTGRES_PASSWORD` is used if set.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates for the server's TLS certificate; default the
    /// Mozilla roots.
    pub ca_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `portcullis=debug,hickory=warn`.
    pub level: String,
    /// `text` (for the journal and terminals) or `json` (one object per
    /// line, for log shippers).
    pub format: LogFormat,
}

impl Default for LogConfig {
    /// The documented defaults (an empty `[log]`).
    fn default() -> Self {
        let RawLog { level, format } = RawLog::default();
        LogConfig { level, format }
    }
}

/// A TAXII 2.1 collection pulled into feeds_dir (docs/architecture.md:
/// the TAXII puller writes files that the normal file-drop path picks up).
#[derive(Debug, Clone, PartialEq)]
pub struct TaxiiConfig {
    /// Short name; the feed file is `taxii-<name>.json` in feeds_dir.
    pub name: String,
    /// The API root, e.g. `https://taxii.example.org/api1/`.
    pub url: String,
    /// Collection id.
    pub collection: String,
    /// HTTP Basic user; the password comes from `password_file` or
    /// `password_env`, never from the config file.
    pub username: Option<String>,
    /// Absolute.
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// Bearer token instead of Basic auth, from a file (absolute) or the
    /// environment.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub poll_interval_secs: u64,
    /// Objects asked for per page (`limit`).
    pub page_size: u32,
}

/// One `[[download]]`: a feed file fetched over HTTP(S) on an interval
/// and written into feeds_dir, where the file-drop path compiles it. Its
/// feed settings are in [`super::Config::feeds`] under the same file name.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadConfig {
    pub url: String,
    /// File name inside feeds_dir.
    pub file: String,
    pub interval_secs: u64,
    pub sha256_url: Option<String>,
    /// Bytes of body (as sent, before gzip is undone) taken at most.
    pub max_bytes: u64,
    /// Absolute.
    pub ca_file: Option<PathBuf>,
}

/// One `[[rpz]]`: a Response Policy Zone kept by AXFR/IXFR and NOTIFY,
/// written into feeds_dir as the file named like the zone. Its feed
/// settings are in [`super::Config::feeds`] under that file name.
#[derive(Debug, Clone, PartialEq)]
pub struct RpzConfig {
    /// Lower case, no trailing dot; also the feed file's name.
    pub zone: String,
    pub primaries: Vec<std::net::SocketAddr>,
    pub tsig: Option<TsigConfig>,
    pub refresh_floor: std::time::Duration,
    pub refresh_ceiling: std::time::Duration,
    pub timeout: std::time::Duration,
}

/// A TSIG key: the secret is read from its file at each transfer, so a
/// rotated key is picked up.
#[derive(Debug, Clone, PartialEq)]
pub struct TsigConfig {
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// Absolute.
    pub secret_file: PathBuf,
}

/// `[share]`: the sightings this service shares back.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// The service's STIX identity name.
    pub name: String,
    pub where_sighted: WhereSighted,
    pub tlp: Tlp,
    /// TAXII 2.1 collections on the admin listener.
    pub taxii: bool,
}

/// Whom a shared sighting says saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhereSighted {
    /// Each organisation, as a STIX identity of its own (its name).
    #[default]
    Organisation,
    /// The service as a whole: one sighting per indicator and day, summed
    /// over organisations, naming none.
    Service,
}

/// The TLP 2.0 marking on every shared object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Tlp {
    #[serde(rename = "clear")]
    Clear,
    #[serde(rename = "green")]
    Green,
    /// The default: the recipients' organisations and their clients, on a
    /// need-to-know basis; what a member's sightings usually merit.
    #[default]
    #[serde(rename = "amber")]
    Amber,
    #[serde(rename = "amber+strict")]
    AmberStrict,
    #[serde(rename = "red")]
    Red,
}

/// What the structured EDE text says besides the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructuredErrors {
    /// Contact URIs (`c`).
    pub contact: Vec<String>,
    /// Who blocked (`o`).
    pub organisation: Option<String>,
}
