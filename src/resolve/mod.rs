//! Upstream resolution: forward (hickory-resolver with its cache) or
//! recursive (hickory's recursor from the root hints).
//!
//! Both are reduced to one [`Answer`] shape so the handler does not care
//! which is configured. Negative answers come back as answers (NXDOMAIN or
//! NODATA with the upstream's SOA), not errors; only a failure to get any
//! answer is an [`UpstreamError`], which the handler turns into SERVFAIL.
//!
//! With `dnssec = "validate"` both modes validate with hickory's validator
//! and every answer carries its [`Security`]; DNSSEC records always come
//! back with it (the handler strips them for clients that did not set
//! DO). The recursor returns bogus data with its proofs, so CD can be
//! honoured and the failure explained; the forwarding resolver reports a
//! bogus answer only as an error, without the data (see `forward_error`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_proto::dnssec::TrustAnchors;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData};
use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::RData;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::recursor::{DnssecConfig, DnssecPolicy};
use hickory_resolver::recursor::{Recursor, RecursorOptions};

mod aggressive;
mod explain;
mod forward;
mod negative;
mod store;

use negative::answer_of;

use crate::config::{DnssecMode, ResolverConfig, ResolverMode};
use crate::dnssec::{self, Security, anchors};

/// The IANA root servers (a.root-servers.net .. m.root-servers.net), used
/// when `resolver.root_hints` is empty.
pub const ROOT_HINTS: [IpAddr; 26] = [
    IpAddr::V4(Ipv4Addr::new(198, 41, 0, 4)),
    IpAddr::V4(Ipv4Addr::new(170, 247, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(192, 33, 4, 12)),
    IpAddr::V4(Ipv4Addr::new(199, 7, 91, 13)),
    IpAddr::V4(Ipv4Addr::new(192, 203, 230, 10)),
    IpAddr::V4(Ipv4Addr::new(192, 5, 5, 241)),
    IpAddr::V4(Ipv4Addr::new(192, 112, 36, 4)),
    IpAddr::V4(Ipv4Addr::new(198, 97, 190, 53)),
    IpAddr::V4(Ipv4Addr::new(192, 36, 148, 17)),
    IpAddr::V4(Ipv4Addr::new(192, 58, 128, 30)),
    IpAddr::V4(Ipv4Addr::new(193, 0, 14, 129)),
    IpAddr::V4(Ipv4Addr::new(199, 7, 83, 42)),
    IpAddr::V4(Ipv4Addr::new(202, 12, 27, 33)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x503, 0xba3e, 0, 0, 0, 0x2, 0x30)),
    IpAddr::V6(Ipv6Addr::new(0x2801, 0x1b8, 0x10, 0, 0, 0, 0, 0xb)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2, 0, 0, 0, 0, 0xc)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2d, 0, 0, 0, 0, 0xd)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0xa8, 0, 0, 0, 0, 0xe)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2f, 0, 0, 0, 0, 0xf)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x12, 0, 0, 0, 0, 0xd0d)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x1, 0, 0, 0, 0, 0x53)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x7fe, 0, 0, 0, 0, 0, 0x53)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x503, 0xc27, 0, 0, 0, 0x2, 0x30)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x7fd, 0, 0, 0, 0, 0, 0x1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x9f, 0, 0, 0, 0, 0x42)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdc3, 0, 0, 0, 0, 0, 0x35)),
];

/// What the upstream said.
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// With their RRSIGs when DNSSEC is on.
    pub answers: Vec<Record>,
    /// SOA, NSEC, NSEC3 and their RRSIGs, for a negative answer.
    pub authorities: Vec<Record>,
    pub security: Security,
    /// Served from an expired answer because the upstream could not
    /// answer (RFC 8767): TTL 30, never AD.
    pub stale: bool,
}

/// No answer could be had.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Failed(_) => "failed",
        }
    }

    /// The RFC 8914 code a client's SERVFAIL carries: 22 (No Reachable
    /// Authority) when nothing answered in time, 23 (Network Error) when
    /// the network said no.
    pub fn ede(&self) -> u16 {
        match self {
            UpstreamError::Timeout => 22,
            UpstreamError::Failed(_) => 23,
        }
    }
}

/// A configured upstream.
pub struct Upstream {
    kind: Kind,
    dnssec: DnssecMode,
    negative_trust_anchors: Vec<Name>,
    /// The time one whole resolution may take (`timeout_ms`), in both
    /// modes: hickory's own limits are per server query.
    limit: Duration,
    /// Every good answer, packed: served while fresh to every transport,
    /// and for `serve_stale_secs` past its TTL when the upstream fails;
    /// `None` when `stale_cache_mib` is 0.
    store: Option<store::AnswerStore>,
    /// Answers the store gave, counted with hickory's cache hits (the
    /// same question: answered without asking?); registered once, off
    /// the query path.
    store_hits: ::metrics::Counter,
    /// Validated NSEC ranges (RFC 8198); `None` unless validating with
    /// `aggressive_nsec` on.
    aggressive: Option<aggressive::AggressiveNsec>,
}

enum Kind {
    // Both boxed: they differ in size by hundreds of bytes and the enum is
    // built once, so the indirection costs nothing.
    Forward(Box<forward::Forwarder>),
    Recursive(Box<Recursor<TokioRuntimeProvider>>),
}

impl Upstream {
    /// Build the upstream from config, fetching the keys that DS trust
    /// anchors name first. Must run inside the tokio runtime.
    pub async fn start(config: &ResolverConfig) -> Result<Upstream, String> {
        let owners = anchors::digest_owners(&config.trust_anchors);
        if config.dnssec != DnssecMode::Validate || owners.is_empty() {
            return Upstream::new(config);
        }
        // The keys need no validation: the DS digest authenticates them.
        let unchecked = Upstream::build(config, DnssecMode::Off, None)?;
        let mut fetched = Vec::new();
        for owner in owners {
            let answer = unchecked
                .resolve(&LowerName::from(&owner), RecordType::DNSKEY, false)
                .await
                .map_err(|e| {
                    anchors::AnchorError::Fetch {
                        owner: owner.clone(),
                        reason: e.to_string(),
                    }
                    .to_string()
                })?;
            fetched.extend(answer.answers.into_iter().filter_map(|r| match r.data {
                RData::DNSSEC(DNSSECRData::DNSKEY(key)) => Some((r.name, key)),
                _ => None,
            }));
        }
        let set = anchors::build(&config.trust_anchors, &fetched).map_err(|e| e.to_string())?;
        Upstream::build(config, config.dnssec, Some(set))
    }

    /// Build the upstream from config when its trust anchors, if any, are
    /// keys (DS anchors need [`Upstream::start`]). Must run inside the
    /// tokio runtime.
    pub fn new(config: &ResolverConfig) -> Result<Upstream, String> {
        let anchors = if config.trust_anchors.is_empty() || config.dnssec != DnssecMode::Validate {
            None
        } else {
            let keys: &[(Name, DNSKEY)] = &[];
            Some(anchors::build(&config.trust_anchors, keys).map_err(|e| e.to_string())?)
        };
        Upstream::build(config, config.dnssec, anchors)
    }

    fn build(
        config: &ResolverConfig,
        dnssec: DnssecMode,
        anchors: Option<TrustAnchors>,
    ) -> Result<Upstream, String> {
        let provider = TokioRuntimeProvider::default();
        let anchors = anchors.map(std::sync::Arc::new);
        let kind = match config.mode {
            ResolverMode::Forward => {
                Kind::Forward(Box::new(forward::Forwarder::new(config, dnssec, anchors)?))
            }
            ResolverMode::Recursive => {
                let roots: Vec<IpAddr> = if config.root_hints.is_empty() {
                    ROOT_HINTS.to_vec()
                } else {
                    config.root_hints.clone()
                };
                let options = RecursorOptions {
                    response_cache_size: config.cache_size,
                    allow_server: config.allow_server_networks.clone(),
                    ..RecursorOptions::default()
                };
                let policy = match dnssec {
                    DnssecMode::Off => DnssecPolicy::SecurityUnaware,
                    DnssecMode::Process => DnssecPolicy::ValidationDisabled,
                    DnssecMode::Validate => {
                        let mut validation = DnssecConfig::default();
                        validation.trust_anchor = anchors;
                        DnssecPolicy::ValidateWithStaticKey(validation)
                    }
                };
                let recursor = Recursor::new(&roots, policy, None, options, provider)
                    .map_err(|e| e.to_string())?;
                Kind::Recursive(Box::new(recursor))
            }
        };
        let store = (config.stale_cache_mib > 0).then(|| {
            store::AnswerStore::new(
                Duration::from_secs(config.serve_stale_secs),
                Duration::from_millis(config.stale_answer_after_ms),
                config.stale_cache_mib << 20,
            )
        });
        Ok(Upstream {
            kind,
            dnssec,
            negative_trust_anchors: config.negative_trust_anchors.clone(),
            limit: Duration::from_millis(config.timeout_ms),
            store,
            store_hits: ::metrics::counter!(crate::telemetry::CACHE_HITS, "resolver" => match config.mode {
                ResolverMode::Forward => "forward",
                ResolverMode::Recursive => "recursive",
            }),
            aggressive: (dnssec == DnssecMode::Validate && config.aggressive_nsec)
                .then(aggressive::AggressiveNsec::default),
        })
    }

    /// What validation says about an answer, or `Indeterminate` when this
    /// upstream does not validate.
    fn judge(&self, name: &Name, answers: &[Record], authorities: &[Record], now: u32) -> Security {
        match self.dnssec {
            DnssecMode::Validate => dnssec::security(
                name,
                answers,
                authorities,
                now,
                &self.negative_trust_anchors,
            ),
            _ => Security::Indeterminate,
        }
    }

    /// Resolve one question. With DNSSEC on, the DNSSEC records come back
    /// too, whatever the client asked. `checking_disabled` is the client's
    /// CD: recursive mode validates anyway and the handler decides; forward
    /// mode passes it upstream, so a validating upstream returns the data.
    pub async fn resolve(
        &self,
        name: &LowerName,
        rtype: RecordType,
        checking_disabled: bool,
    ) -> Result<Answer, UpstreamError> {
        let aggressive = self.aggressive.as_ref().filter(|_| !checking_disabled);
        if let Some(cache) = aggressive
            && let Some(answer) = cache.answer(&Name::from(name.clone()), Instant::now())
        {
            ::metrics::counter!(crate::telemetry::DNSSEC_AGGRESSIVE).increment(1);
            return Ok(answer);
        }
        let result =
            tokio::time::timeout(self.limit, self.resolve_now(name, rtype, checking_disabled))
                .await
                .unwrap_or(Err(UpstreamError::Timeout));
        if let (Some(cache), Ok(answer)) = (aggressive, &result) {
            cache.learn(answer, Instant::now());
        }
        result
    }

    async fn resolve_now(
        &self,
        name: &LowerName,
        rtype: RecordType,
        checking_disabled: bool,
    ) -> Result<Answer, UpstreamError> {
        let name = Name::from(name.clone());
        let now = unix_now();
        match &self.kind {
            Kind::Forward(forwarder) => {
                let unvalidated = self.dnssec == DnssecMode::Process
                    || (self.dnssec == DnssecMode::Validate && checking_disabled);
                if unvalidated {
                    let query = Query::query(name.clone(), rtype);
                    return match forwarder.unvalidated(query, checking_disabled).await {
                        Ok(response) => Ok(answer_of(&response, Security::Indeterminate)),
                        Err(e) => self.forward_error(&name, e, now, false),
                    };
                }
                match forwarder.resolver.lookup(name.clone(), rtype).await {
                    Ok(lookup) => {
                        let answers = lookup.answers().to_vec();
                        let authorities = lookup.authorities().to_vec();
                        let security = self.judge(&name, &answers, &authorities, now);
                        Ok(Answer {
                            rcode: ResponseCode::NoError,
                            answers,
                            authorities,
                            security,
                            stale: false,
                        })
                    }
                    Err(NetError::Dns(DnsError::DnssecBogus)) => {
                        Ok(self.explain_forward(forwarder, &name, rtype, now).await)
                    }
                    Err(e) => self.forward_error(&name, e, now, true),
                }
            }
            Kind::Recursive(recursor) => {
                let ask_dnssec = self.dnssec != DnssecMode::Off;
                let resolution = recursor.resolve(
                    Query::query(name.clone(), rtype),
                    Instant::now(),
                    ask_dnssec,
                );
                match resolution.await {
                    Ok(message) => {
                        let mut security =
                            self.judge(&name, &message.answers, &message.authorities, now);
                        if let Security::Bogus(bogus) = &mut security {
                            self.explain_keys(recursor, bogus).await;
                        }
                        Ok(Answer {
                            rcode: message.metadata.response_code,
                            answers: message.answers,
                            authorities: message.authorities,
                            security,
                            stale: false,
                        })
                    }
                    Err(e) => self.recursor_error(&name, e, now),
                }
            }
        }
    }
}

/// Seconds since the epoch, for signature validity periods.
fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DS anchor needs its key fetched, which only matters when
    /// validating: with validation off the anchors are not used at all.
    #[tokio::test]
    async fn ds_anchors_are_ignored_unless_validating() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("root.ds"),
            ". 300 IN DS 9903 13 2 449CDAE4AAD68A1B9F7A2D4BF3BDB7C17E7B0C70D3C1A9C1B2C3D4E5F6A7B8C9\n",
        )
        .unwrap();
        for (mode, builds) in [("off", true), ("process", true), ("validate", false)] {
            let text = format!(
                "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n\
                 dnssec = \"{mode}\"\ntrust_anchors = \"root.ds\"\n"
            );
            let config =
                crate::config::Config::from_str(&text, &dir.path().join("p.toml")).unwrap();
            // Validating with a DS anchor needs the key: `new` cannot
            // fetch it (`start` does), so it refuses rather than guess.
            assert_eq!(Upstream::new(&config.resolver).is_ok(), builds, "{mode}");
        }
    }
}
