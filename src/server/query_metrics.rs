//! The per-query metrics: how each query ended, by transport, and how long
//! it took; refused clients, upstream failures and packet-cache lookups.
//! The handles are made once, so recording one is an atomic add.

use std::time::Instant;

use crate::hitlog::Transport;
use crate::telemetry;

/// How a query ended, for `portcullis_queries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueryOutcome {
    /// Answered from upstream (any rcode but SERVFAIL).
    Answered,
    /// Answered from upstream, and no blocklist entry matched anything in
    /// it: the response may go in the packet cache. Counted as answered.
    Clean,
    /// A block response, or none for `drop`.
    Blocked,
    /// The client is in no organisation.
    Refused,
    /// The upstream failed.
    Servfail,
    /// Not a query we serve: bad opcode, class, EDNS version, form.
    Rejected,
}

const OUTCOMES: [&str; 5] = ["answered", "blocked", "refused", "servfail", "rejected"];

impl QueryOutcome {
    /// Its index in [`OUTCOMES`].
    fn label(self) -> usize {
        match self {
            QueryOutcome::Answered | QueryOutcome::Clean => 0,
            QueryOutcome::Blocked => 1,
            QueryOutcome::Refused => 2,
            QueryOutcome::Servfail => 3,
            QueryOutcome::Rejected => 4,
        }
    }
}

/// Counter handles made once, so the query path is an atomic add.
pub struct QueryMetrics {
    /// [transport][outcome], transports in `Transport::ALL` order.
    queries: [[::metrics::Counter; 5]; 6],
    duration: ::metrics::Histogram,
    refused_clients: ::metrics::Counter,
    upstream_errors: ::metrics::Counter,
    stale_answers: ::metrics::Counter,
    /// Packet cache lookups: [hit, miss].
    packet_cache: [::metrics::Counter; 2],
    /// Upstream answers by validation state, in `Security::LABELS` order.
    dnssec: [::metrics::Counter; 4],
}

impl QueryMetrics {
    /// Take the handles from the installed recorder (no-ops without one).
    pub fn new() -> QueryMetrics {
        let per = |t: Transport| {
            OUTCOMES.map(|o| {
                ::metrics::counter!(telemetry::QUERIES, "transport" => t.as_str(), "outcome" => o)
            })
        };
        QueryMetrics {
            queries: Transport::ALL.map(per),
            duration: ::metrics::histogram!(telemetry::QUERY_DURATION),
            refused_clients: ::metrics::counter!(telemetry::REFUSED_CLIENTS),
            upstream_errors: ::metrics::counter!(telemetry::UPSTREAM_ERRORS),
            stale_answers: ::metrics::counter!(telemetry::STALE_ANSWERS),
            packet_cache: ["hit", "miss"]
                .map(|r| ::metrics::counter!(telemetry::PACKET_CACHE, "result" => r)),
            dnssec: crate::dnssec::Security::LABELS
                .map(|s| ::metrics::counter!(telemetry::DNSSEC_ANSWERS, "state" => s)),
        }
    }

    fn counter(&self, transport: Transport, outcome: QueryOutcome) -> &::metrics::Counter {
        &self.queries[transport.index()][outcome.label()]
    }

    /// One query ended with `outcome`, `started` ago.
    pub(super) fn record(&self, transport: Transport, outcome: QueryOutcome, started: Instant) {
        self.counter(transport, outcome).increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }

    /// A message that is not a query we can decode.
    pub(super) fn rejected(&self, transport: Transport) {
        self.counter(transport, QueryOutcome::Rejected).increment(1);
    }

    /// A client in no organisation, refused.
    pub(super) fn refused_client(&self) {
        self.refused_clients.increment(1);
    }

    /// The upstream failed to answer.
    pub(super) fn upstream_error(&self) {
        self.upstream_errors.increment(1);
    }

    /// An expired answer given because the upstream could not answer.
    pub(super) fn stale_answer(&self) {
        self.stale_answers.increment(1);
    }

    /// An upstream answer's validation state; a bogus one also by its
    /// extended error code (a handful of values, and bogus answers are
    /// rare, so the labelled lookup is not on the hot path).
    pub(super) fn validation(&self, security: &crate::dnssec::Security) {
        self.dnssec[security.index()].increment(1);
        if let crate::dnssec::Security::Bogus(bogus) = security {
            ::metrics::counter!(telemetry::DNSSEC_BOGUS, "ede" => bogus.ede.to_string())
                .increment(1);
        }
    }

    /// A packet cache lookup: answered from it, or not.
    pub(super) fn packet_cache(&self, hit: bool) {
        self.packet_cache[if hit { 0 } else { 1 }].increment(1);
    }
}

impl Default for QueryMetrics {
    fn default() -> Self {
        QueryMetrics::new()
    }
}
