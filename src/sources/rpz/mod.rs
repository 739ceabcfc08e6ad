//! `[[rpz]]`: Response Policy Zones kept by zone transfer, as the peers
//! (BIND, Unbound, PowerDNS, Knot) keep them. One task per zone: AXFR at
//! first, IXFR after (AXFR again when the primary cannot serve the
//! increment or the increment does not fit the file held), on the SOA's
//! refresh (retry after a failure), bounded by `refresh_floor_secs` and
//! `refresh_ceiling_secs`, and at once on a NOTIFY from a configured
//! primary. The zone is written into feeds_dir as the file named like
//! the zone, so the compiler reads it as an RPZ feed: last-good, the
//! shrink guard, the snapshot and every RPZ action work as for a file.
//! A transfer that fails (TSIG, cut short, unparseable, refused) keeps
//! the file as it was.
//!
//! The zone's SOA, serial and last contact with a primary are kept in
//! `state_dir/rpz/<zone>.json`, so a restart asks for an IXFR. When no
//! primary has answered for the SOA's expire time, `/readyz` says so (a
//! warning: the zone held keeps blocking, which is what an operator wants
//! of a threat feed whose primary is down).

pub mod xfr;
mod zone_file;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RData, Record, TSigner};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use serde::{Deserialize, Serialize};

use self::xfr::{Xfr, XfrError};
use super::{Pulled, Registry};
use crate::blocklist::increments::{Increments, NotApplied};
use crate::config::{Config, RpzConfig, TsigConfig};

/// What the zone task keeps between transfers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The SOA record held, in wire form, base64 (the IXFR request
    /// carries it).
    soa: Option<String>,
    /// Unix seconds of the last answer from a primary (a transfer or an
    /// up-to-date reply).
    last_contact: Option<u64>,
}

impl State {
    fn soa(&self) -> Option<Record> {
        let bytes = data_encoding::BASE64
            .decode(self.soa.as_ref()?.as_bytes())
            .ok()?;
        Record::from_bytes(&bytes).ok()
    }
}

fn state_path(state_dir: &Path, zone: &str) -> PathBuf {
    state_dir.join("rpz").join(format!("{zone}.json"))
}

fn load_state(state_dir: &Path, zone: &str) -> State {
    std::fs::read(state_path(state_dir, zone))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(state_dir: &Path, zone: &str, state: &State) -> std::io::Result<()> {
    let path = state_path(state_dir, zone);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::taxii::write_atomically(&path, &serde_json::to_vec(state).unwrap_or_default())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The SOA timers, in seconds: (refresh, retry, expire).
fn timers(soa: &Record) -> Option<(u64, u64, u64)> {
    match &soa.data {
        RData::SOA(s) => Some((
            u64::try_from(s.refresh).unwrap_or(0),
            u64::try_from(s.retry).unwrap_or(0),
            u64::try_from(s.expire).unwrap_or(0),
        )),
        _ => None,
    }
}

/// The zones a NOTIFY may name, with the primaries it may come from.
#[derive(Default)]
pub struct NotifyTargets {
    zones: ArcSwap<Vec<Target>>,
}

struct Target {
    zone: Name,
    primaries: Vec<IpAddr>,
    kick: Arc<tokio::sync::Notify>,
}

/// What a NOTIFY gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyVerdict {
    /// From a primary of a zone we transfer: a refresh is on its way.
    Accepted,
    /// For a zone we transfer, from an address that is not its primary.
    NotPrimary,
    /// For a zone we do not transfer.
    UnknownZone,
}

impl NotifyVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyVerdict::Accepted => "accepted",
            NotifyVerdict::NotPrimary => "not_primary",
            NotifyVerdict::UnknownZone => "unknown_zone",
        }
    }
}

impl NotifyTargets {
    pub fn new() -> Arc<NotifyTargets> {
        Arc::new(NotifyTargets::default())
    }

    /// A NOTIFY for `zone` from `source` (the address only: primaries
    /// send NOTIFY from any port). An accepted one wakes the zone's task;
    /// the transfer it starts is what TSIG protects, so a NOTIFY can at
    /// worst make a refresh early.
    pub fn notify(&self, zone: &Name, source: IpAddr) -> NotifyVerdict {
        let zones = self.zones.load();
        let Some(target) = zones.iter().find(|t| t.zone == *zone) else {
            return NotifyVerdict::UnknownZone;
        };
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        if !target.primaries.contains(&source) {
            return NotifyVerdict::NotPrimary;
        }
        target.kick.notify_one();
        NotifyVerdict::Accepted
    }

    fn set(&self, targets: Vec<Target>) {
        self.zones.store(Arc::new(targets));
    }
}

/// Start one task per `[[rpz]]`; publish their NOTIFY targets.
pub fn spawn(
    config: &Config,
    registry: &Arc<Registry>,
    notify: &Arc<NotifyTargets>,
    increments: &Arc<Increments>,
) -> Vec<tokio::task::AbortHandle> {
    let mut handles = Vec::new();
    let mut targets = Vec::new();
    for zone in config.rpz.clone() {
        let Ok(name) = Name::from_ascii(format!("{}.", zone.zone)) else {
            continue;
        };
        let state_dir = config.blocklist.state_dir.clone();
        let feeds_dir = config.blocklist.feeds_dir.clone();
        let state = load_state(&state_dir, &zone.zone);
        let primaries: Vec<String> = zone.primaries.iter().map(|p| p.to_string()).collect();
        registry.register(
            "rpz",
            &zone.zone,
            &format!("dns://{}/{}", primaries.join(","), zone.zone),
            state
                .soa()
                .and_then(|s| xfr::soa_serial(&s))
                .map(|s| format!("serial {s}")),
        );
        if let (Some(soa), Some(contact)) = (state.soa(), state.last_contact)
            && let Some((_, _, expire)) = timers(&soa)
        {
            registry.set_expiry(
                &zone.zone,
                UNIX_EPOCH + Duration::from_secs(contact),
                Duration::from_secs(expire),
            );
        }
        let kick = Arc::new(tokio::sync::Notify::new());
        targets.push(Target {
            zone: name.clone(),
            primaries: zone.primaries.iter().map(|p| p.ip()).collect(),
            kick: Arc::clone(&kick),
        });
        let registry = Arc::clone(registry);
        let max_records = config
            .feed_settings(&zone.zone)
            .and_then(|f| f.max_entries)
            .unwrap_or(config.blocklist.max_feed_entries);
        let limits = xfr::Limits {
            per_message: zone.timeout,
            deadline: zone.timeout * 20,
            max_records,
            max_bytes: usize::try_from(config.blocklist.max_feed_mib << 20).unwrap_or(usize::MAX),
        };
        let increments = Arc::clone(increments);
        let task = tokio::spawn(async move {
            let mut zone_task = ZoneTask {
                config: zone,
                name,
                feeds_dir,
                state_dir,
                state,
                limits,
                increments,
            };
            loop {
                let started = std::time::Instant::now();
                let outcome = zone_task.refresh().await;
                let took_ms = started.elapsed().as_millis() as u64;
                let wait = zone_task.next_wait(outcome.is_ok());
                match &outcome {
                    Ok(p) if p.changed => tracing::info!(
                        zone = %zone_task.config.zone,
                        result = p.detail.as_deref().unwrap_or(""),
                        took_ms,
                        "rpz: zone updated"
                    ),
                    Ok(p) => {
                        tracing::debug!(zone = %zone_task.config.zone, result = p.detail.as_deref().unwrap_or(""), "rpz: zone current")
                    }
                    Err(error) => tracing::warn!(
                        zone = %zone_task.config.zone,
                        %error,
                        "rpz: transfer failed; the zone held stays"
                    ),
                }
                super::count_pull("rpz", &outcome);
                registry.record(&zone_task.config.zone, &outcome);
                if let Some(expire) = zone_task.expiry() {
                    registry.set_expiry(&zone_task.config.zone, expire.0, expire.1);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = kick.notified() => {
                        // NOTIFYs (spoofable, and sent again by primaries
                        // that get no answer) refresh at most once per
                        // refresh_floor_secs.
                        let floor = zone_task.config.refresh_floor;
                        if let Some(rest) = floor.checked_sub(started.elapsed()) {
                            tokio::time::sleep(rest).await;
                        }
                        tracing::info!(zone = %zone_task.config.zone, "rpz: NOTIFY received; refreshing");
                    }
                }
            }
        });
        handles.push(task.abort_handle());
    }
    notify.set(targets);
    handles
}

struct ZoneTask {
    config: RpzConfig,
    name: Name,
    feeds_dir: PathBuf,
    state_dir: PathBuf,
    state: State,
    limits: xfr::Limits,
    increments: Arc<Increments>,
}

impl ZoneTask {
    fn path(&self) -> PathBuf {
        self.feeds_dir.join(&self.config.zone)
    }

    /// The SOA's refresh after a success, its retry after a failure
    /// (the floor before any SOA is known), within the floor and ceiling.
    fn next_wait(&self, ok: bool) -> Duration {
        let secs = self
            .state
            .soa()
            .and_then(|s| timers(&s))
            .map(|(refresh, retry, _)| if ok { refresh } else { retry })
            .unwrap_or(0);
        Duration::from_secs(secs).clamp(self.config.refresh_floor, self.config.refresh_ceiling)
    }

    fn expiry(&self) -> Option<(SystemTime, Duration)> {
        let contact = self.state.last_contact?;
        let (_, _, expire) = timers(&self.state.soa()?)?;
        Some((
            UNIX_EPOCH + Duration::from_secs(contact),
            Duration::from_secs(expire),
        ))
    }

    /// One refresh against the primaries, in order, until one answers.
    async fn refresh(&mut self) -> Result<Pulled, String> {
        let signer = match &self.config.tsig {
            Some(tsig) => Some(signer(tsig)?),
            None => None,
        };
        // IXFR only from the version the zone file holds: the file is
        // written before the state, and either may be lost.
        let path = self.path();
        let current = self.state.soa().filter(|soa| {
            // One short read of the file's first line.
            let file = zone_file::serial_of(&path);
            file.is_some() && file == xfr::soa_serial(soa)
        });
        let mut errors = Vec::new();
        for primary in self.config.primaries.clone() {
            let result = match &current {
                Some(soa) => match self.transfer(primary, Some(soa), signer.as_ref()).await {
                    Ok(done) => Ok(done),
                    Err(e) if e.axfr_may_help() => {
                        tracing::info!(zone = %self.config.zone, error = %e, "rpz: IXFR not usable; trying AXFR");
                        self.transfer(primary, None, signer.as_ref())
                            .await
                            .map_err(|e| e.to_string())
                    }
                    // A key the primary refuses, it refuses for AXFR too.
                    Err(e) => Err(e.to_string()),
                },
                None => self
                    .transfer(primary, None, signer.as_ref())
                    .await
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(pulled) => return Ok(pulled),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    /// One transfer from one primary, applied to the zone file.
    async fn transfer(
        &mut self,
        primary: std::net::SocketAddr,
        current: Option<&Record>,
        signer: Option<&TSigner>,
    ) -> Result<Pulled, XfrError> {
        let started = std::time::Instant::now();
        let result = xfr::transfer(primary, &self.name, current, signer, self.limits).await?;
        let local = |message: String| XfrError::Local { message };
        let zone = self.config.zone.clone();
        let path = self.path();
        let old = current.and_then(xfr::soa_serial);
        let (soa, detail) = match result {
            Xfr::UpToDate { serial } => {
                self.contact(None).map_err(|e| local(e.to_string()))?;
                return Ok(Pulled {
                    version: Some(format!("serial {serial}")),
                    changed: false,
                    detail: Some(format!("up to date at serial {serial} ({primary})")),
                });
            }
            Xfr::Full { soa, lines, count } => {
                tracing::info!(zone = %zone, records = count, transfer_ms = started.elapsed().as_millis() as u64, "rpz: AXFR received; writing the zone file");
                let how = format!("AXFR from {primary}");
                let (p, z, s) = (path.clone(), zone.clone(), soa.clone());
                tokio::task::spawn_blocking(move || {
                    zone_file::write_full(&p, &z, &s, &lines, &how)
                })
                .await
                .map_err(|e| local(e.to_string()))?
                .map_err(|e| local(format!("cannot write {}: {e}", path.display())))?;
                let serial = xfr::soa_serial(&soa).unwrap_or(0);
                (
                    soa,
                    format!("AXFR of serial {serial}: {count} records ({primary})"),
                )
            }
            Xfr::Incremental { soa, diffs } => {
                let serial = xfr::soa_serial(&soa).unwrap_or(0);
                let how = format!("IXFR from {primary}");
                // Live at once where it can be (see blocklist::increments);
                // the zone file and its compile follow either way.
                let steps: Vec<(Vec<String>, Vec<String>)> = diffs
                    .iter()
                    .map(|(deleted, added)| {
                        let lines = |records: &[Record]| {
                            records.iter().filter_map(xfr::master_line).collect()
                        };
                        (lines(deleted), lines(added))
                    })
                    .collect();
                let soa_text = zone_file::soa_line(&soa).unwrap_or_default();
                let (increments, z) = (Arc::clone(&self.increments), zone.clone());
                let live =
                    tokio::task::spawn_blocking(move || increments.apply(&z, &soa_text, &steps))
                        .await
                        .unwrap_or_else(|e| Err(NotApplied::Build(e.to_string())));
                let result = if live.is_ok() { "live" } else { "compile" };
                ::metrics::counter!(crate::telemetry::RPZ_INCREMENTS, "result" => result)
                    .increment(1);
                match &live {
                    Ok(changes) => {
                        tracing::info!(zone = %zone, serial, changes, "rpz: increment live; the zone file and its compile follow")
                    }
                    Err(reason) => {
                        tracing::info!(zone = %zone, serial, %reason, "rpz: increment left to the compile")
                    }
                }
                let (p, z, s) = (path.clone(), zone.clone(), soa.clone());
                let applied =
                    tokio::task::spawn_blocking(move || zone_file::apply(&p, &z, &s, &diffs, &how))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                match &applied {
                    Ok(_) => self.increments.written(&zone),
                    // Not in the file: the AXFR that follows brings the
                    // zone, and its compile.
                    Err(_) => self.increments.abandon(&zone),
                }
                match applied {
                    Ok((deleted, added)) => (
                        soa,
                        format!(
                            "IXFR {} to {serial}: {deleted} deleted, {added} added ({primary})",
                            old.unwrap_or(0)
                        ),
                    ),
                    Err(message) => {
                        return Err(XfrError::NeedsAxfr {
                            primary,
                            message: format!("the increment does not fit the zone held: {message}"),
                        });
                    }
                }
            }
        };
        let serial = xfr::soa_serial(&soa).unwrap_or(0);
        self.contact(Some(&soa)).map_err(|e| local(e.to_string()))?;
        Ok(Pulled {
            version: Some(format!("serial {serial}")),
            changed: true,
            detail: Some(detail),
        })
    }

    /// Note an answer from a primary (and the new SOA, if it changed).
    fn contact(&mut self, soa: Option<&Record>) -> std::io::Result<()> {
        if let Some(soa) = soa {
            let bytes = soa
                .to_bytes()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.state.soa = Some(data_encoding::BASE64.encode(&bytes));
        }
        self.state.last_contact = Some(unix_now());
        save_state(&self.state_dir, &self.config.zone, &self.state)
    }
}

/// The TSIG signer, with the secret read from its file now (a rotated
/// key is picked up at the next transfer). `config check` calls it too.
pub fn signer(tsig: &TsigConfig) -> Result<TSigner, String> {
    let text = std::fs::read_to_string(&tsig.secret_file).map_err(|e| {
        format!(
            "cannot read the TSIG secret file {}: {e}",
            tsig.secret_file.display()
        )
    })?;
    let secret = data_encoding::BASE64
        .decode(text.trim().trim_matches('"').as_bytes())
        .map_err(|e| {
            format!(
                "the TSIG secret in {} is not base64: {e}",
                tsig.secret_file.display()
            )
        })?;
    let algorithm = xfr::tsig_algorithm(&tsig.algorithm)
        .ok_or_else(|| format!("TSIG algorithm {:?} is not supported", tsig.algorithm))?;
    let name =
        Name::from_ascii(&tsig.name).map_err(|e| format!("TSIG key name {:?}: {e}", tsig.name))?;
    TSigner::new(secret, algorithm, name, 300).map_err(|e| format!("TSIG key {}: {e}", tsig.name))
}
