//! Raw sections in, validated sections out: one function per section,
//! called in turn by [`super::Config::from_raw`], each naming the
//! offending key in its error. Checks that span sections (the sinkhole
//! addresses, the feed files) are functions of their own.
//!
//! The `[server]` section (listeners, the encrypted transports) and the
//! `[[taxii]]` sources are in [`server`] and [`taxii`].
//!
//! Over 400 lines: some forty checks, each a multi-line error naming its
//! key; split further by section they would share nothing but the
//! [`Checker`].

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::ConfigError;
use super::raw::{
    DnssecMode, RawAdmin, RawBlockPage, RawBlocklist, RawFeed, RawLimits, RawLog, RawOrganisation,
    RawResolver, ResolverMode,
};
use super::sections::{
    AdminConfig, BlockPageConfig, BlocklistConfig, DownloadConfig, FeedConfig, LimitsConfig,
    LogConfig, Organisation, ResolverConfig, RpzConfig, TaxiiConfig,
};
use crate::policy::Action;

mod hitlog;
mod server;
mod share;
mod sources;
mod taxii;

pub(super) use hitlog::{dnstap, hitlog};
pub(super) use server::{reporting_only, server};
pub(crate) use sources::check_fetch_url;
pub(super) use sources::{downloads, rpz};

/// The host name, as a node id: the kernel's, cut to what a node id may
/// hold; "localhost" when there is none.
pub(crate) fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    if id.is_empty() {
        "localhost".to_string()
    } else {
        id
    }
}
pub(super) use share::share;
use share::structured_errors;
pub(super) use taxii::taxii;

/// Where the config came from, and the warnings found so far.
pub(super) struct Checker {
    path: PathBuf,
    /// The config file's folder: relative paths are relative to it.
    base: PathBuf,
    warnings: Vec<String>,
}

impl Checker {
    pub(super) fn new(path: &Path) -> Self {
        Checker {
            path: path.to_path_buf(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            warnings: Vec::new(),
        }
    }

    fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            message,
        }
    }

    fn warn(&mut self, key: &str, message: String) {
        self.warnings.push(format!("key `{key}`: {message}"));
    }

    fn rel(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn into_warnings(self) -> Vec<String> {
        self.warnings
    }
}

/// Upstreams are parsed in either mode (a bad one is an error even where
/// it is ignored), but only forward mode uses them: in recursive mode a
/// non-empty list is a warning.
pub(super) fn resolver(raw: RawResolver, cx: &mut Checker) -> Result<ResolverConfig, ConfigError> {
    let mut upstreams = Vec::new();
    for (i, text) in raw.upstreams.iter().enumerate() {
        let addr = parse_server_addr(text).ok_or_else(|| {
            cx.invalid(
                &format!("resolver.upstreams[{i}]"),
                format!("{text:?} is not an address or address:port"),
            )
        })?;
        upstreams.push(addr);
    }
    if raw.mode == ResolverMode::Forward && upstreams.is_empty() {
        return Err(cx.invalid(
            "resolver.upstreams",
            "forward mode needs at least one upstream".into(),
        ));
    }
    if raw.mode == ResolverMode::Recursive && !upstreams.is_empty() {
        cx.warn(
            "resolver.upstreams",
            "ignored in recursive mode (only mode = \"forward\" uses upstreams)".into(),
        );
    }
    let mut root_hints = Vec::new();
    for (i, text) in raw.root_hints.iter().enumerate() {
        let key = format!("resolver.root_hints[{i}]");
        let addr = parse_server_addr(text)
            .ok_or_else(|| cx.invalid(&key, format!("{text:?} is not an IP address")))?;
        if addr.port() != 53 {
            return Err(cx.invalid(
                &key,
                "root servers are queried on port 53; give the address only".into(),
            ));
        }
        root_hints.push(addr.ip());
    }
    // The whole resolution, in both modes, so a client hears SERVFAIL
    // (with why) before its own timeout, typically 5 s, makes it retry.
    // Recursive mode takes several round trips from the root, so it gets
    // more.
    let timeout_ms = raw.timeout_ms.unwrap_or(match raw.mode {
        ResolverMode::Forward => 3000,
        ResolverMode::Recursive => 4000,
    });
    if timeout_ms == 0 {
        return Err(cx.invalid("resolver.timeout_ms", "must be above 0".into()));
    }
    if raw.serve_stale_secs > 0 && raw.stale_cache_mib == 0 {
        return Err(cx.invalid(
            "resolver.stale_cache_mib",
            "must be above 0 while serve_stale_secs is".into(),
        ));
    }
    // Read now, so a bad anchor file stops the start with its line.
    let trust_anchors = match &raw.trust_anchors {
        Some(file) => crate::dnssec::anchors::read(&cx.rel(file))
            .map_err(|e| cx.invalid("resolver.trust_anchors", e.to_string()))?,
        None => Vec::new(),
    };
    if raw.dnssec != DnssecMode::Validate && raw.trust_anchors.is_some() {
        cx.warn(
            "resolver.trust_anchors",
            "used only with dnssec = \"validate\"".into(),
        );
    }
    let mut negative_trust_anchors = Vec::new();
    for (i, text) in raw.negative_trust_anchors.iter().enumerate() {
        let key = format!("resolver.negative_trust_anchors[{i}]");
        let name = crate::domain::normalize(text)
            .ok()
            .and_then(|n| hickory_proto::rr::Name::from_ascii(format!("{n}.")).ok())
            .ok_or_else(|| cx.invalid(&key, format!("{text:?} is not a domain name")))?;
        negative_trust_anchors.push(name);
    }
    Ok(ResolverConfig {
        mode: raw.mode,
        upstreams,
        root_hints,
        allow_server_networks: raw.allow_server_networks,
        timeout_ms,
        serve_stale_secs: raw.serve_stale_secs,
        stale_answer_after_ms: raw.stale_answer_after_ms,
        stale_cache_mib: raw.stale_cache_mib,
        cache_size: raw.cache_size,
        packet_cache_size: raw.packet_cache_size,
        dnssec: raw.dnssec,
        trust_anchors,
        negative_trust_anchors,
        aggressive_nsec: raw.aggressive_nsec,
    })
}

pub(super) fn blocklist(raw: RawBlocklist, cx: &Checker) -> Result<BlocklistConfig, ConfigError> {
    if !(0.0..=1.0).contains(&raw.max_shrink) {
        return Err(cx.invalid(
            "blocklist.max_shrink",
            "a fraction from 0.0 to 1.0 (0.5 = refuse losing half)".into(),
        ));
    }
    if raw.rescan_secs == 0 {
        return Err(cx.invalid("blocklist.rescan_secs", "must be above 0".into()));
    }
    if raw.max_feed_entries == 0 || raw.max_feed_mib == 0 {
        let key = if raw.max_feed_entries == 0 {
            "blocklist.max_feed_entries"
        } else {
            "blocklist.max_feed_mib"
        };
        return Err(cx.invalid(key, "must be above 0".into()));
    }
    if raw.policy_ttl > 86_400 {
        return Err(cx.invalid("blocklist.policy_ttl", "at most 86400 seconds".into()));
    }
    let structured_errors = structured_errors(&raw, cx)?;
    Ok(BlocklistConfig {
        feeds_dir: cx.rel(&raw.feeds_dir),
        state_dir: cx.rel(&raw.state_dir),
        allow: raw.allow.iter().map(|p| cx.rel(p)).collect(),
        protected: raw.protected.iter().map(|p| cx.rel(p)).collect(),
        policy_ttl: raw.policy_ttl,
        default_action: raw.default_action,
        sinkhole_ipv4: raw.sinkhole_ipv4,
        sinkhole_ipv6: raw.sinkhole_ipv6,
        ede_names_feed: raw.ede_names_feed,
        structured_errors,
        answer_ip_categories: raw.answer_ip_categories,
        max_shrink: raw.max_shrink,
        debounce_ms: raw.debounce_ms,
        rescan_secs: raw.rescan_secs,
        deleted_feeds: raw.deleted_feeds,
        settle_ms: raw.settle_ms,
        allow_empty: raw.allow_empty,
        max_feed_entries: raw.max_feed_entries,
        max_feed_mib: raw.max_feed_mib,
    })
}

fn has_sinkhole(blocklist: &BlocklistConfig) -> bool {
    blocklist.sinkhole_ipv4.is_some() || blocklist.sinkhole_ipv6.is_some()
}

/// The `sinkhole` action, used globally or by a feed, needs an address to
/// answer with. (An organisation's own actions are checked with the
/// organisation, so the error can name it.)
pub(super) fn sinkhole(
    blocklist: &BlocklistConfig,
    actions: &BTreeMap<String, Action>,
    feeds: &[RawFeed],
    cx: &Checker,
) -> Result<(), ConfigError> {
    let sinkhole_used = blocklist.default_action == Action::Sinkhole
        || actions.values().any(|a| *a == Action::Sinkhole)
        || feeds.iter().any(|f| f.action == Some(Action::Sinkhole));
    if sinkhole_used && !has_sinkhole(blocklist) {
        return Err(cx.invalid(
            "blocklist.sinkhole_ipv4",
            "the `sinkhole` action is used, so set sinkhole_ipv4 and/or sinkhole_ipv6".into(),
        ));
    }
    Ok(())
}

/// Names only: whether the files are there is [`feed_files_present`]'s
/// question. A name the compiler never reads as a feed (a temporary or
/// documentation name) is an error, since its settings could never apply.
pub(super) fn feeds(raw: Vec<RawFeed>, cx: &Checker) -> Result<Vec<FeedConfig>, ConfigError> {
    let mut seen_files = HashSet::new();
    for (i, feed) in raw.iter().enumerate() {
        let key = format!("feed[{i}].file");
        if feed.file.is_empty() || feed.file.contains('/') || feed.file.contains('\\') {
            return Err(cx.invalid(
                &key,
                format!("{:?} must be a file name inside feeds_dir", feed.file),
            ));
        }
        if !seen_files.insert(feed.file.as_str()) {
            return Err(cx.invalid(&key, format!("{:?} is configured twice", feed.file)));
        }
        if !crate::blocklist::is_feed_file_name(&feed.file) {
            return Err(cx.invalid(
                &key,
                format!(
                    "{:?} is never read as a feed (names starting with `.` or `README`, \
                     or ending in `.tmp`, `.part`, `~` or `.md`, are skipped)",
                    feed.file
                ),
            ));
        }
    }
    Ok(raw
        .into_iter()
        .map(|f| FeedConfig {
            file: f.file,
            format: f.format,
            category: f.category,
            action: f.action,
            trusted: f.trusted,
            answer_ip: f.answer_ip,
            max_entries: f.max_entries,
        })
        .collect())
}

/// A `[[feed]]` whose file is not in feeds_dir is a warning, not an error:
/// feeds arrive and leave by file drop while the resolver runs (and a
/// TAXII source's file appears only after its first pull, which itself
/// needs this config), so refusing to start would turn a late delivery or
/// a deliberate deletion into an outage. A file a configured `[[taxii]]`,
/// `[[download]]` or `[[rpz]]` source writes is not warned about, nor is
/// anything when feeds_dir itself is missing (the compiler reports that).
pub(super) fn feed_files_present(
    feeds: &[FeedConfig],
    feeds_dir: &Path,
    taxii: &[TaxiiConfig],
    downloads: &[DownloadConfig],
    rpz: &[RpzConfig],
    cx: &mut Checker,
) {
    if !feeds_dir.is_dir() {
        return;
    }
    let pulled: HashSet<String> = taxii
        .iter()
        .map(crate::taxii::feed_file_name)
        .chain(downloads.iter().map(|d| d.file.clone()))
        .chain(rpz.iter().map(|z| z.zone.clone()))
        .collect();
    for (i, feed) in feeds.iter().enumerate() {
        // is_file follows links, as the compiler's listing does: a
        // dangling link is no feed.
        if pulled.contains(&feed.file) || feeds_dir.join(&feed.file).is_file() {
            continue;
        }
        cx.warn(
            &format!("feed[{i}].file"),
            format!(
                "no file {:?} in feeds_dir {}: its settings apply only once it arrives",
                feed.file,
                feeds_dir.display()
            ),
        );
    }
}

/// An organisation that uses the `sinkhole` action needs the blocklist's
/// sinkhole addresses, like any other use of it.
pub(super) fn organisations(
    raw: Vec<RawOrganisation>,
    blocklist: &BlocklistConfig,
    cx: &Checker,
) -> Result<Vec<Organisation>, ConfigError> {
    let mut organisations = Vec::new();
    let mut seen_ids = HashSet::new();
    for (i, org) in raw.into_iter().enumerate() {
        if org.id.is_empty()
            || !org
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(cx.invalid(
                &format!("organisation[{i}].id"),
                format!("{:?}: use letters, digits, - and _", org.id),
            ));
        }
        if !seen_ids.insert(org.id.clone()) {
            return Err(cx.invalid(
                &format!("organisation[{i}].id"),
                format!("{:?} is used twice", org.id),
            ));
        }
        if let Some(token) = &org.token_sha256 {
            check_sha256(token)
                .map_err(|m| cx.invalid(&format!("organisation[{i}].token_sha256"), m))?;
        }
        if let Some(key) = &org.roaming_key_sha256 {
            check_sha256(key)
                .map_err(|m| cx.invalid(&format!("organisation[{i}].roaming_key_sha256"), m))?;
        }
        let mut allow = Vec::new();
        for (j, name) in org.allow.iter().enumerate() {
            allow.push(crate::domain::normalize(name).map_err(|e| {
                cx.invalid(
                    &format!("organisation[{i}].allow[{j}]"),
                    format!("{name:?}: {e}"),
                )
            })?);
        }
        let sinkholed = org.actions.iter().find(|(_, a)| **a == Action::Sinkhole);
        if let Some((category, _)) = sinkholed
            && !has_sinkhole(blocklist)
        {
            return Err(cx.invalid(
                &format!("organisation[{i}].actions.{category}"),
                format!(
                    "organisation {:?} uses the `sinkhole` action, so set \
                     blocklist.sinkhole_ipv4 and/or blocklist.sinkhole_ipv6",
                    org.id
                ),
            ));
        }
        organisations.push(Organisation {
            name: org.name.unwrap_or_else(|| org.id.clone()),
            id: org.id,
            networks: org.networks.iter().map(IpNet::trunc).collect(),
            token_sha256: org.token_sha256.map(|t| t.to_ascii_lowercase()),
            roaming_key_sha256: org.roaming_key_sha256.map(|t| t.to_ascii_lowercase()),
            allow,
            actions: org.actions,
            contact: org.contact,
            client_qps: org.client_qps,
        });
    }
    Ok(organisations)
}

pub(super) fn admin(raw: RawAdmin, cx: &mut Checker) -> Result<AdminConfig, ConfigError> {
    if let Some(addr) = raw.listen.filter(|a| !a.ip().is_loopback()) {
        cx.warn(
            "admin.listen",
            format!(
                "{addr} is beyond loopback and the admin listener speaks plain HTTP: \
                 tokens and hit records cross the network in clear; put a TLS proxy in \
                 front of it, or listen on loopback"
            ),
        );
    }
    if let Some(token) = &raw.operator_token_sha256 {
        check_sha256(token).map_err(|m| cx.invalid("admin.operator_token_sha256", m))?;
    }
    for (key, value) in [
        ("admin.max_connections", raw.max_connections),
        (
            "admin.max_connections_per_client",
            raw.max_connections_per_client,
        ),
        ("admin.idle_timeout_secs", raw.idle_timeout_secs as usize),
    ] {
        if value == 0 {
            return Err(cx.invalid(key, "must be at least 1".into()));
        }
    }
    Ok(AdminConfig {
        listen: raw.listen,
        operator_token_sha256: raw.operator_token_sha256,
        ready_upstream_secs: raw.ready_upstream_secs,
        upstream_probe_secs: raw.upstream_probe_secs,
        limits: crate::http_limits::HttpLimits {
            caps: crate::server::connections::Caps {
                total: raw.max_connections,
                per_client: raw.max_connections_per_client,
            },
            idle: std::time::Duration::from_secs(raw.idle_timeout_secs),
        },
    })
}

/// Nothing to check: serde already parsed the address.
pub(super) fn block_page(raw: RawBlockPage) -> BlockPageConfig {
    BlockPageConfig {
        listen: raw.listen,
        contact: raw.contact,
    }
}

pub(super) fn log(raw: RawLog, cx: &Checker) -> Result<LogConfig, ConfigError> {
    if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
        return Err(cx.invalid(
            "log.level",
            format!("{:?} is not a log filter (try \"info\")", raw.level),
        ));
    }
    Ok(LogConfig {
        level: raw.level,
        format: raw.format,
    })
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

fn check_sha256(token: &str) -> Result<(), String> {
    if token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("must be 64 hex digits (the SHA-256 of the token, not the token)".into())
    }
}

pub(super) fn limits(raw: RawLimits, cx: &Checker) -> Result<LimitsConfig, ConfigError> {
    for (key, value, most) in [
        ("limits.client_prefix_v4", raw.client_prefix_v4, 32),
        ("limits.client_prefix_v6", raw.client_prefix_v6, 128),
        ("limits.rrl_prefix_v4", raw.rrl_prefix_v4, 32),
        ("limits.rrl_prefix_v6", raw.rrl_prefix_v6, 128),
    ] {
        if value > most {
            return Err(cx.invalid(key, format!("{value} is not a prefix length (0-{most})")));
        }
    }
    for (key, value) in [
        ("limits.burst_factor", raw.burst_factor),
        ("limits.max_upstream_queries", raw.max_upstream_queries),
        (
            "limits.max_upstream_per_client",
            raw.max_upstream_per_client,
        ),
        ("limits.max_upstream_per_zone", raw.max_upstream_per_zone),
    ] {
        if value == 0 {
            return Err(cx.invalid(key, "must be at least 1".into()));
        }
    }
    Ok(LimitsConfig {
        client_qps: raw.client_qps,
        client_prefix_v4: raw.client_prefix_v4,
        client_prefix_v6: raw.client_prefix_v6,
        over_limit: raw.over_limit,
        burst_factor: raw.burst_factor,
        rrl_responses_per_second: raw.rrl_responses_per_second,
        rrl_slip: raw.rrl_slip,
        rrl_prefix_v4: raw.rrl_prefix_v4,
        rrl_prefix_v6: raw.rrl_prefix_v6,
        max_upstream_queries: raw.max_upstream_queries,
        max_upstream_per_client: raw.max_upstream_per_client,
        max_upstream_per_zone: raw.max_upstream_per_zone,
    })
}
