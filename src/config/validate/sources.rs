//! `[[download]]` and `[[rpz]]`: feed sources. Each becomes a source and
//! the `[[feed]]` settings of the file it writes.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Checker, ConfigError};
use crate::config::raw::{RawDownload, RawFeed, RawRpz};
use crate::config::sections::{BlocklistConfig, DownloadConfig, RpzConfig, TsigConfig};

/// The downloads, and the feed settings they carry for their files.
pub(in crate::config) fn downloads(
    raw: Vec<RawDownload>,
    feeds: &[RawFeed],
    blocklist: &BlocklistConfig,
    cx: &Checker,
) -> Result<(Vec<DownloadConfig>, Vec<RawFeed>), ConfigError> {
    let mut downloads = Vec::new();
    let mut settings = Vec::new();
    let mut seen = HashSet::new();
    for (i, d) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("download[{i}].{k}");
        let loopback = check_fetch_url(&d.url).map_err(|m| cx.invalid(&key("url"), m))?;
        if let Some(url) = &d.sha256_url {
            check_fetch_url(url).map_err(|m| cx.invalid(&key("sha256_url"), m))?;
        }
        if d.file.is_empty()
            || d.file.contains('/')
            || d.file.contains('\\')
            || !crate::blocklist::is_feed_file_name(&d.file)
        {
            return Err(cx.invalid(
                &key("file"),
                format!(
                    "{:?} must be a feed file name inside feeds_dir (not starting with `.` \
                     or `README`, not ending in `.tmp`, `.part`, `~` or `.md`)",
                    d.file
                ),
            ));
        }
        if d.file.starts_with("taxii-") || d.file.starts_with("rpz-") {
            return Err(cx.invalid(
                &key("file"),
                format!(
                    "{:?}: names starting with `taxii-` or `rpz-` belong to those sources",
                    d.file
                ),
            ));
        }
        if !seen.insert(d.file.clone()) {
            return Err(cx.invalid(
                &key("file"),
                format!("{:?} is written by two downloads", d.file),
            ));
        }
        if feeds.iter().any(|f| f.file == d.file) {
            return Err(cx.invalid(
                &key("file"),
                format!(
                    "{:?} also has a [[feed]] entry: give its settings in the [[download]] only",
                    d.file
                ),
            ));
        }
        // Loopback sources (a local mirror, a test server) may be polled
        // as often as wanted; a publisher's server no more than once a
        // minute.
        let floor = if loopback { 1 } else { 60 };
        if d.interval_secs < floor {
            return Err(cx.invalid(
                &key("interval_secs"),
                format!("at least {floor} seconds (be kind to the publisher)"),
            ));
        }
        let max_bytes = d.max_bytes.unwrap_or(blocklist.max_feed_mib << 20);
        if max_bytes == 0 {
            return Err(cx.invalid(&key("max_bytes"), "must be above 0".into()));
        }
        settings.push(RawFeed {
            file: d.file.clone(),
            format: d.format,
            category: d.category,
            action: d.action,
            trusted: d.trusted,
            answer_ip: d.answer_ip,
            max_entries: d.max_entries,
        });
        downloads.push(DownloadConfig {
            url: d.url,
            file: d.file,
            interval_secs: d.interval_secs,
            sha256_url: d.sha256_url,
            max_bytes,
            ca_file: d.ca_file.as_ref().map(|p| cx.rel(p)),
        });
    }
    Ok((downloads, settings))
}

/// HTTPS anywhere; plain HTTP only to a loopback address (a local relay
/// or a test server), never across a network. Returns whether the host is
/// loopback.
pub(crate) fn check_fetch_url(url: &str) -> Result<bool, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(loopback),
        "http" if loopback => Ok(true),
        "http" => Err("plain http is only allowed to a loopback address; use https".into()),
        other => Err(format!("scheme {other:?}: use https")),
    }
}

/// The RPZ sources, and the feed settings (format `rpz`) of their files.
pub(in crate::config) fn rpz(
    raw: Vec<RawRpz>,
    feeds: &[RawFeed],
    cx: &Checker,
) -> Result<(Vec<RpzConfig>, Vec<RawFeed>), ConfigError> {
    let mut zones = Vec::new();
    let mut settings = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("rpz[{i}].{k}");
        let zone = crate::domain::normalize(&r.zone)
            .map_err(|e| cx.invalid(&key("zone"), format!("{:?}: {e}", r.zone)))?;
        if !zone.contains('.') || !crate::blocklist::is_feed_file_name(&zone) {
            return Err(cx.invalid(
                &key("zone"),
                format!("{zone:?}: give the policy zone's full name, such as rpz.example.org"),
            ));
        }
        if zones.iter().any(|z: &RpzConfig| z.zone == zone) {
            return Err(cx.invalid(&key("zone"), format!("{zone:?} is configured twice")));
        }
        if feeds.iter().any(|f| f.file == zone) {
            return Err(cx.invalid(
                &key("zone"),
                format!(
                    "the zone is written to feeds_dir as {zone:?}, which another [[feed]] or \
                     [[download]] also names"
                ),
            ));
        }
        if r.primaries.is_empty() {
            return Err(cx.invalid(&key("primaries"), "name at least one primary".into()));
        }
        let mut primaries = Vec::new();
        for (j, text) in r.primaries.iter().enumerate() {
            let addr = text
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| {
                    text.parse::<IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .ok_or_else(|| {
                    cx.invalid(
                        &format!("rpz[{i}].primaries[{j}]"),
                        format!("{text:?}: an address, or address:port (no host names)"),
                    )
                })?;
            primaries.push(addr);
        }
        let tsig = match (&r.tsig_name, &r.tsig_secret_file) {
            (None, None) => None,
            (Some(name), Some(file)) => {
                if crate::sources::rpz::xfr::tsig_algorithm(&r.tsig_algorithm).is_none() {
                    return Err(cx.invalid(
                        &key("tsig_algorithm"),
                        format!(
                            "{:?}: use hmac-sha256, hmac-sha384 or hmac-sha512",
                            r.tsig_algorithm
                        ),
                    ));
                }
                Some(TsigConfig {
                    name: name.clone(),
                    algorithm: r.tsig_algorithm.to_ascii_lowercase(),
                    secret_file: cx.rel(file),
                })
            }
            (Some(_), None) => {
                return Err(cx.invalid(
                    &key("tsig_secret_file"),
                    "a TSIG key needs its secret file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(
                    cx.invalid(&key("tsig_name"), "a TSIG secret needs its key name".into())
                );
            }
        };
        if r.refresh_floor_secs == 0 || r.refresh_ceiling_secs < r.refresh_floor_secs {
            return Err(cx.invalid(
                &key("refresh_ceiling_secs"),
                "refresh_floor_secs must be above 0 and at most refresh_ceiling_secs".into(),
            ));
        }
        if r.timeout_secs == 0 {
            return Err(cx.invalid(&key("timeout_secs"), "must be above 0".into()));
        }
        settings.push(RawFeed {
            file: zone.clone(),
            format: Some(crate::formats::Format::Rpz),
            category: r.category,
            action: r.action,
            trusted: r.trusted,
            answer_ip: r.answer_ip,
            max_entries: r.max_entries,
        });
        zones.push(RpzConfig {
            zone,
            primaries,
            tsig,
            refresh_floor: Duration::from_secs(r.refresh_floor_secs),
            refresh_ceiling: Duration::from_secs(r.refresh_ceiling_secs),
            timeout: Duration::from_secs(r.timeout_secs),
        });
    }
    Ok((zones, settings))
}
