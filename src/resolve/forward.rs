//! Forward mode: hickory's caching resolver for every ordinary question,
//! and beside it, over the same upstreams, an uncached path that asks
//! with DO (and CD when the client set it) for what the caching resolver
//! cannot give: data for a CD client, records for `dnssec = "process"`,
//! and a bogus answer's records so the failure can be explained. hickory's
//! resolver turns a bogus answer into a bare error and drops the data.

use std::sync::Arc;

use hickory_proto::dnssec::TrustAnchors;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::dnssec::DnssecDnsHandle;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer, RetryDnsHandle};
use hickory_resolver::{NameServerPool, PoolContext, Resolver, TlsConfig, TokioResolver};

use crate::config::{DnssecMode, ResolverConfig};

type Pool = RetryDnsHandle<NameServerPool<TokioRuntimeProvider>>;

pub(super) struct Forwarder {
    /// Cached, and validating with `dnssec = "validate"`.
    pub resolver: TokioResolver,
    /// Uncached, never validating: asks with DO, and with CD on request.
    raw: Pool,
    /// Uncached, validating: only to explain an answer the resolver
    /// found bogus.
    explain: Option<DnssecDnsHandle<Pool>>,
}

impl Forwarder {
    pub fn new(
        config: &ResolverConfig,
        dnssec: DnssecMode,
        anchors: Option<Arc<TrustAnchors>>,
    ) -> Result<Forwarder, String> {
        let servers: Vec<NameServerConfig> = config
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
            HickoryConfig::from_parts(None, Vec::new(), servers.clone()),
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        opts.cache_size = config.cache_size;
        // Two tries fit in the whole resolution's time (`Upstream::resolve`
        // holds that), so a lost packet or a dead first upstream leaves
        // time for another.
        opts.timeout = std::time::Duration::from_millis((config.timeout_ms / 2).max(100));
        opts.attempts = 2;
        // A forwarder passes CNAME chains on (RFC 1034 4.3.2), and the
        // answer check in a later stage needs to see them.
        opts.preserve_intermediates = true;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        opts.edns0 = true;
        opts.validate = dnssec == DnssecMode::Validate;
        let pool_opts = opts.clone();
        let anchors = anchors.unwrap_or_else(|| Arc::new(TrustAnchors::default()));
        if dnssec == DnssecMode::Validate {
            builder = builder.with_trust_anchor(Arc::clone(&anchors));
        }
        let resolver = builder.build().map_err(|e| e.to_string())?;
        let raw = pool(servers, pool_opts)?;
        let explain = (dnssec == DnssecMode::Validate)
            .then(|| DnssecDnsHandle::with_trust_anchor(raw.clone(), anchors));
        Ok(Forwarder {
            resolver,
            raw,
            explain,
        })
    }

    /// The upstream's answer as it came, asked with DO (and CD).
    pub async fn unvalidated(&self, query: Query, cd: bool) -> Result<DnsResponse, NetError> {
        let mut request = DnsRequest::from_query(query, dnssec_options());
        request.metadata.checking_disabled = cd;
        self.raw.send(request).first_answer().await
    }

    /// The answer validated again without the cache, with every record's
    /// proof, bogus ones included.
    pub async fn validated(&self, query: Query) -> Option<Result<DnsResponse, NetError>> {
        let explain = self.explain.as_ref()?;
        Some(explain.lookup(query, dnssec_options()).first_answer().await)
    }
}

fn pool(servers: Vec<NameServerConfig>, opts: ResolverOpts) -> Result<Pool, String> {
    let attempts = opts.attempts;
    let tls = TlsConfig::new().map_err(|e| e.to_string())?;
    let cx = Arc::new(PoolContext::new(opts, tls));
    let pool = NameServerPool::from_config(servers, cx, TokioRuntimeProvider::default());
    Ok(RetryDnsHandle::new(pool, attempts))
}

fn dnssec_options() -> DnsRequestOptions {
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.edns_set_dnssec_ok = true;
    options.recursion_desired = true;
    options
}
