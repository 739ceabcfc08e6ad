//! Metric names and their help texts, in one place (docs/architecture.md "Metrics").
//!
//! Everything is recorded through the `metrics` facade; `serve` installs
//! the Prometheus recorder before anything records, and the admin
//! listener renders it at `/metrics`. Without a recorder (tests, the
//! other commands) recording is a no-op. Label values come from fixed
//! sets (transport, outcome, action, reason) or from the configuration
//! (category, feed names): never from a query name or a client address.

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
    describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const QUERIES: &str = "portcullis_queries_total";
pub const QUERY_DURATION: &str = "portcullis_query_duration_seconds";
pub const BLOCKS: &str = "portcullis_blocks_total";
pub const REFUSED_CLIENTS: &str = "portcullis_refused_clients_total";
pub const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";
pub const STALE_ANSWERS: &str = "portcullis_stale_answers_total";
pub const LIMITED: &str = "portcullis_limited_total";
pub const SNAPSHOT_WRITES: &str = "portcullis_snapshot_writes_total";
pub const CACHE_HITS: &str = "portcullis_cache_hits_total";
pub const CACHE_MISSES: &str = "portcullis_cache_misses_total";
pub const PACKET_CACHE: &str = "portcullis_packet_cache_lookups_total";
pub const BLOCKLIST_ENTRIES: &str = "portcullis_blocklist_entries";
pub const BLOCKLIST_FEED_ENTRIES: &str = "portcullis_blocklist_feed_entries";
pub const BLOCKLIST_GENERATION: &str = "portcullis_blocklist_generation";
pub const BLOCKLIST_BYTES: &str = "portcullis_blocklist_bytes";
pub const RELOADS: &str = "portcullis_reloads_total";
pub const LAST_RELOAD: &str = "portcullis_last_successful_reload_timestamp_seconds";
pub const RELOAD_DURATION: &str = "portcullis_rebuild_duration_seconds";
pub const FEED_ERRORS: &str = "portcullis_feed_errors_total";
pub const SOURCE_PULLS: &str = "portcullis_feed_source_pulls_total";
pub const NOTIFY: &str = "portcullis_notify_total";
pub const RPZ_INCREMENTS: &str = "portcullis_rpz_increments_total";
pub const HITLOG_WRITTEN: &str = "portcullis_hitlog_written_total";
pub const HITLOG_DROPPED: &str = "portcullis_hitlog_dropped_total";
pub const HITLOG_ERRORS: &str = "portcullis_hitlog_errors_total";
pub const HITLOG_COALESCED: &str = "portcullis_hitlog_coalesced_total";
pub const HITLOG_EVICTED: &str = "portcullis_hitlog_evicted_total";
pub const HITLOG_FORWARDED: &str = "portcullis_hitlog_forwarded_total";
pub const HITLOG_FORWARD_ERRORS: &str = "portcullis_hitlog_forward_errors_total";
pub const HITLOG_SPOOLED: &str = "portcullis_hitlog_spooled_records";
pub const HITLOG_SPOOL_AGE: &str = "portcullis_hitlog_spool_oldest_age_seconds";
pub const HITLOG_BACKLOG: &str = "portcullis_hitlog_backlog_records";
pub const HITLOG_CATCH_UPS: &str = "portcullis_hitlog_catch_ups_total";
pub const DNSTAP_MESSAGES: &str = "portcullis_dnstap_messages_total";
pub const DNSTAP_DROPPED: &str = "portcullis_dnstap_dropped_total";
pub const DNSTAP_ERRORS: &str = "portcullis_dnstap_errors_total";
pub const API_DENIED: &str = "portcullis_api_denied_total";
pub const BLOCK_PAGE_VIEWS: &str = "portcullis_block_page_views_total";
pub const DNSSEC_ANSWERS: &str = "portcullis_dnssec_answers_total";
pub const DNSSEC_BOGUS: &str = "portcullis_dnssec_bogus_total";
pub const DNSSEC_AGGRESSIVE: &str = "portcullis_dnssec_aggressive_nxdomain_total";
pub const CONNECTIONS: &str = "portcullis_connections";
pub const CONNECTIONS_REFUSED: &str = "portcullis_connections_refused_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "portcullis_tls_handshake_failures_total";
pub const TLS_CERT_EXPIRY: &str = "portcullis_tls_certificate_expiry_seconds";
pub const TLS_CERT_RELOADS: &str = "portcullis_tls_certificate_reloads_total";
pub const DOH_ERRORS: &str = "portcullis_doh_errors_total";
pub const CONFIG_RELOADS: &str = "portcullis_config_reloads_total";

/// Every series name, for the checks on the shipped dashboard and rules.
pub const ALL: &[&str] = &[
    DNSSEC_ANSWERS,
    DNSSEC_BOGUS,
    DNSSEC_AGGRESSIVE,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    TLS_HANDSHAKE_FAILURES,
    TLS_CERT_EXPIRY,
    TLS_CERT_RELOADS,
    DOH_ERRORS,
    CONFIG_RELOADS,
    QUERIES,
    QUERY_DURATION,
    BLOCKS,
    REFUSED_CLIENTS,
    UPSTREAM_ERRORS,
    STALE_ANSWERS,
    LIMITED,
    SNAPSHOT_WRITES,
    CACHE_HITS,
    CACHE_MISSES,
    PACKET_CACHE,
    BLOCKLIST_ENTRIES,
    BLOCKLIST_FEED_ENTRIES,
    BLOCKLIST_GENERATION,
    BLOCKLIST_BYTES,
    RELOADS,
    LAST_RELOAD,
    RELOAD_DURATION,
    FEED_ERRORS,
    SOURCE_PULLS,
    NOTIFY,
    RPZ_INCREMENTS,
    HITLOG_WRITTEN,
    HITLOG_DROPPED,
    HITLOG_ERRORS,
    HITLOG_COALESCED,
    HITLOG_EVICTED,
    HITLOG_FORWARDED,
    HITLOG_FORWARD_ERRORS,
    HITLOG_SPOOLED,
    HITLOG_SPOOL_AGE,
    HITLOG_BACKLOG,
    HITLOG_CATCH_UPS,
    DNSTAP_MESSAGES,
    DNSTAP_DROPPED,
    DNSTAP_ERRORS,
    API_DENIED,
    BLOCK_PAGE_VIEWS,
];

/// Install the Prometheus recorder for this process and describe every
/// series. Call before anything records: handles taken earlier are no-ops.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    // Query latencies from 50 µs (a block answer) to 5 s (a slow
    // recursion); reloads from 10 ms to 2 minutes.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(QUERY_DURATION.into()),
            &[
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(RELOAD_DURATION.into()),
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0],
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(HickoryNames(recorder)).map_err(|_| InstallError::AlreadySet)?;
    describe();
    Ok(handle)
}

/// How often recorded histogram samples are folded into their buckets.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Fold histogram samples into their buckets every [`UPKEEP_EVERY`], for
/// as long as the runtime runs. The recorder keeps every sample until it
/// is folded, which otherwise happens only when `/metrics` is scraped: a
/// resolver nobody scrapes grew by about 14 bytes a query (360 MiB over
/// 25 million queries on the 16-core device run). Every second, because
/// the samples of five seconds of a 50,000 q/s flood were 3 MiB of heap.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("a metrics recorder is already installed in this process")]
    AlreadySet,
}

/// Passes everything through, except that hickory-resolver's answer-cache
/// counters (it records them through the same facade) are given our
/// names, with a `resolver` label saying which resolver's cache.
struct HickoryNames<R>(R);

fn renamed(key: &Key) -> Option<Key> {
    let (name, resolver) = match key.name() {
        "hickory_resolver_cache_hit_total" => (CACHE_HITS, "forward"),
        "hickory_resolver_cache_miss_total" => (CACHE_MISSES, "forward"),
        "hickory_recursor_cache_hit_total" => (CACHE_HITS, "recursive"),
        "hickory_recursor_cache_miss_total" => (CACHE_MISSES, "recursive"),
        _ => return None,
    };
    let mut labels: Vec<Label> = key.labels().cloned().collect();
    labels.push(Label::new("resolver", resolver));
    Some(Key::from_parts(name, labels))
}

impl<R: Recorder> Recorder for HickoryNames<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description)
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match renamed(key) {
            Some(ours) => self.0.register_counter(&ours, metadata),
            None => self.0.register_counter(key, metadata),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(key, metadata)
    }
}

fn describe() {
    describe_counter!(
        QUERIES,
        "DNS queries answered (or dropped), by transport and outcome."
    );
    describe_histogram!(
        QUERY_DURATION,
        Unit::Seconds,
        "Time from a query's arrival to its answer being handed to the socket."
    );
    describe_counter!(
        CACHE_HITS,
        "Upstream lookups answered from a cache (the answer store, or the resolver library's own) without asking the upstream, by resolver (forward, recursive)."
    );
    describe_counter!(
        CACHE_MISSES,
        "Upstream lookups the answer cache could not answer, by resolver."
    );
    describe_counter!(
        PACKET_CACHE,
        "UDP queries looked up in the packet cache of whole responses, by result (hit, miss); queries it cannot hold (EDNS options, unusual headers) are not counted."
    );
    describe_counter!(
        BLOCKS,
        "Queries that matched the blocklist, by category and action taken."
    );
    describe_counter!(
        REFUSED_CLIENTS,
        "Queries refused because the client is in no organisation."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Upstream resolutions that failed (answered SERVFAIL)."
    );
    describe_counter!(
        SNAPSHOT_WRITES,
        "Blocklist snapshot writes after a reload, by result (ok, error)."
    );
    describe_counter!(
        LIMITED,
        "Queries and responses a limit held back, by limit (client_rate, rrl_slip, rrl_drop, upstream_total, upstream_client, upstream_zone) and organisation."
    );
    describe_counter!(
        STALE_ANSWERS,
        "Expired answers served because the upstream failed or was slow (RFC 8767)."
    );
    describe_gauge!(BLOCKLIST_ENTRIES, "Names in the live blocklist.");
    describe_gauge!(
        BLOCKLIST_FEED_ENTRIES,
        "Entries each feed contributes to the live blocklist."
    );
    describe_gauge!(
        BLOCKLIST_GENERATION,
        "Generation number of the live blocklist."
    );
    describe_gauge!(
        BLOCKLIST_BYTES,
        Unit::Bytes,
        "Size of the live blocklist's automata."
    );
    describe_counter!(RELOADS, "Blocklist reloads, by result (ok or error).");
    describe_counter!(
        CONFIG_RELOADS,
        "Config file reloads (SIGHUP or a change to the file), by result (ok or error)."
    );
    describe_gauge!(
        LAST_RELOAD,
        Unit::Seconds,
        "Unix time of the last successful blocklist build."
    );
    describe_histogram!(
        RELOAD_DURATION,
        Unit::Seconds,
        "Time to reload the blocklist after a change."
    );
    describe_counter!(
        FEED_ERRORS,
        "Feed files that could not be used in a reload (the last good contents stay)."
    );
    describe_counter!(
        SOURCE_PULLS,
        "Pulls of remote feed sources, by kind (taxii, download, rpz) and result (changed, unchanged, error)."
    );
    describe_counter!(
        NOTIFY,
        "DNS NOTIFY messages received, by result (accepted, not_primary, unknown_zone)."
    );
    describe_counter!(
        RPZ_INCREMENTS,
        "RPZ IXFR increments, by how they went live (live: at once, before the zone's compile; compile: by the compile alone)."
    );
    describe_counter!(
        HITLOG_WRITTEN,
        "Hit records committed to the hit-log database."
    );
    describe_counter!(
        HITLOG_DROPPED,
        "Hit records lost, by reason (channel_full, store_error, stopped)."
    );
    describe_counter!(
        HITLOG_ERRORS,
        "Hit-log database operations that failed (open, write, retention)."
    );
    describe_counter!(
        DNSSEC_AGGRESSIVE,
        "NXDOMAIN answered from validated NSEC ranges without asking the upstream (RFC 8198)."
    );
    describe_counter!(
        HITLOG_COALESCED,
        "Hits folded into a counted record by the flood coalescer (no record of their own)."
    );
    describe_counter!(
        HITLOG_EVICTED,
        "Oldest hit records deleted to keep the database under hitlog.max_db_mib."
    );
    describe_counter!(
        HITLOG_FORWARDED,
        "Hit records forwarded to the fleet's PostgreSQL hit store."
    );
    describe_counter!(
        HITLOG_FORWARD_ERRORS,
        "Failed attempts to forward hit records to PostgreSQL (they stay spooled)."
    );
    describe_gauge!(
        HITLOG_SPOOLED,
        "Hit records in the local database that the PostgreSQL hit store does not have yet."
    );
    describe_gauge!(
        HITLOG_SPOOL_AGE,
        Unit::Seconds,
        "Age of the oldest hit record waiting for the PostgreSQL hit store (0: none waiting)."
    );
    describe_gauge!(
        HITLOG_BACKLOG,
        "Hit records waiting in the channel for the writer."
    );
    describe_counter!(
        HITLOG_CATCH_UPS,
        "Times the hit log writer's backlog passed half the channel and it left idle priority to catch up."
    );
    describe_counter!(DNSTAP_MESSAGES, "dnstap messages written to the collector.");
    describe_counter!(
        DNSTAP_DROPPED,
        "Queries not sent to the dnstap collector, by reason (queue_full, no_collector, collector_error, stopped)."
    );
    describe_counter!(
        DNSTAP_ERRORS,
        "Failed connections and writes to the dnstap collector."
    );
    describe_counter!(
        API_DENIED,
        "Admin API requests refused, by reason (no_token, bad_token, other_org)."
    );
    describe_counter!(
        BLOCK_PAGE_VIEWS,
        "Block pages served, by whether the hit record was found (found, not_found)."
    );
    describe_counter!(
        DNSSEC_ANSWERS,
        "Upstream answers by validation state (secure, insecure, bogus, indeterminate)."
    );
    describe_counter!(
        DNSSEC_BOGUS,
        "Answers that failed DNSSEC validation, by RFC 8914 extended error code."
    );
    describe_gauge!(
        CONNECTIONS,
        "Client connections open now, by transport (tcp, dot, doh, doq)."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Client connections closed at once, by transport and reason (total, per_client)."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS and QUIC handshakes that failed or timed out, by transport."
    );
    describe_gauge!(
        TLS_CERT_EXPIRY,
        Unit::Seconds,
        "Seconds until the TLS certificate in use expires (negative: expired)."
    );
    describe_counter!(
        TLS_CERT_RELOADS,
        "TLS certificate reloads after the files changed, by result (ok, error)."
    );
    describe_counter!(
        DOH_ERRORS,
        "DoH requests answered with an HTTP error, by status code."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Series names used in a text (histograms by their base name).
    fn used(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("portcullis_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.push(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_dashboard_and_alert_rules_use_only_series_we_export() {
        let dashboard = include_str!("../monitoring/grafana-dashboard.json");
        let alerts = include_str!("../monitoring/prometheus-alerts.yml");
        for (file, text) in [("dashboard", dashboard), ("alerts", alerts)] {
            let names = used(text);
            assert!(names.len() > 5, "{file}");
            for name in names {
                assert!(
                    ALL.contains(&name.as_str()),
                    "{file} uses unknown series {name}"
                );
            }
        }
        let json: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        assert!(json["panels"].as_array().unwrap().len() >= 10);
    }

    #[test]
    fn names_follow_the_prometheus_conventions() {
        for name in ALL {
            assert!(name.starts_with("portcullis_"), "{name}");
            let counter = name.ends_with("_total");
            let gauge_or_histogram = name.ends_with("_seconds")
                || name.ends_with("_bytes")
                || name.ends_with("_entries")
                || name.ends_with("_connections")
                || name.ends_with("_records")
                || name.ends_with("_generation");
            assert!(
                counter || gauge_or_histogram,
                "{name}: unit or _total suffix"
            );
        }
    }
}
