//! Upstream resolution: forward (hickory-resolver with its cache) or
//! recursive (hickory's recursor from the root hints).
//!
//! Both are reduced to one [`Answer`] shape so the handler does not care
//! which is configured. Negative answers come back as answers (NXDOMAIN or
//! NODATA with the upstream's SOA), not errors; only a failure to get any
//! answer is an [`UpstreamError`], which the handler turns into SERVFAIL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::recursor::{Recursor, RecursorError, RecursorOptions};
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{ResolverConfig, ResolverMode};

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
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
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
}

/// A configured upstream.
pub enum Upstream {
    // Both boxed: they differ in size by hundreds of bytes and the enum is
    // built once, so the indirection costs nothing.
    Forward(Box<TokioResolver>),
    /// With the time one whole resolution may take (`timeout_ms`): the
    /// recursor's own limit is per server query and fixed.
    Recursive(Box<Recursor<TokioRuntimeProvider>>, Duration),
}

impl Upstream {
    /// Build the upstream from config. Must run inside the tokio runtime.
    pub fn new(config: &ResolverConfig) -> Result<Upstream, String> {
        let provider = TokioRuntimeProvider::default();
        match config.mode {
            ResolverMode::Forward => {
                let servers = config
                    .upstreams
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                let mut builder = Resolver::builder_with_config(
                    HickoryConfig::from_parts(None, Vec::new(), servers),
                    provider,
                );
                let opts = builder.options_mut();
                opts.cache_size = config.cache_size;
                opts.timeout = Duration::from_millis(config.timeout_ms);
                opts.attempts = 2;
                // A forwarder passes CNAME chains on (RFC 1034 4.3.2), and the
                // answer check in a later stage needs to see them.
                opts.preserve_intermediates = true;
                opts.use_hosts_file = ResolveHosts::Never;
                opts.ndots = 0;
                opts.edns0 = true;
                builder
                    .build()
                    .map(|r| Upstream::Forward(Box::new(r)))
                    .map_err(|e| e.to_string())
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
                Recursor::with_options(&roots, options, provider)
                    .map(|r| {
                        Upstream::Recursive(Box::new(r), Duration::from_millis(config.timeout_ms))
                    })
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Resolve one question.
    pub async fn resolve(
        &self,
        name: &LowerName,
        rtype: RecordType,
        dnssec_ok: bool,
    ) -> Result<Answer, UpstreamError> {
        let name = Name::from(name.clone());
        match self {
            Upstream::Forward(resolver) => match resolver.lookup(name, rtype).await {
                Ok(lookup) => Ok(Answer {
                    rcode: ResponseCode::NoError,
                    answers: lookup.answers().to_vec(),
                    authorities: lookup.authorities().to_vec(),
                }),
                Err(e) => negative_from_net(e),
            },
            Upstream::Recursive(recursor, limit) => {
                let resolution =
                    recursor.resolve(Query::query(name, rtype), Instant::now(), dnssec_ok);
                match tokio::time::timeout(*limit, resolution).await {
                    Ok(Ok(message)) => Ok(Answer {
                        rcode: message.metadata.response_code,
                        answers: message.answers.clone(),
                        authorities: message.authorities.clone(),
                    }),
                    Ok(Err(e)) => negative_from_recursor(e),
                    Err(_) => Err(UpstreamError::Timeout),
                }
            }
        }
    }
}

fn negative(nx: bool, soa: Option<Record>) -> Answer {
    Answer {
        rcode: if nx {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        },
        answers: Vec::new(),
        authorities: soa.into_iter().collect(),
    }
}

fn negative_from_net(e: NetError) -> Result<Answer, UpstreamError> {
    if e.is_no_records_found() {
        let nx = e.is_nx_domain();
        return Ok(negative(
            nx,
            e.into_soa().map(|soa| soa.into_record_of_rdata()),
        ));
    }
    if matches!(e, NetError::Timeout) {
        return Err(UpstreamError::Timeout);
    }
    Err(UpstreamError::Failed(e.to_string()))
}

fn negative_from_recursor(e: RecursorError) -> Result<Answer, UpstreamError> {
    if e.is_no_records_found() || e.is_nx_domain() {
        let nx = e.is_nx_domain();
        return Ok(negative(
            nx,
            e.into_soa().map(|soa| soa.into_record_of_rdata()),
        ));
    }
    if e.is_timeout() || matches!(e, RecursorError::Timeout) {
        return Err(UpstreamError::Timeout);
    }
    Err(UpstreamError::Failed(e.to_string()))
}
