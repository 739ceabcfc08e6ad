//! `[hitlog]` (with the fleet store's `postgres*` keys) and `[dnstap]`.

use std::path::Path;

use super::Checker;
use crate::config::ConfigError;
use crate::config::raw::{RawDnstap, RawHitlog};
use crate::config::sections::{DnstapConfig, DnstapTarget, HitlogConfig, PostgresConfig};

/// The most distinct queries a run of like hits writes in a window: the
/// coalescer keeps and compares that many per run, so it bounds its memory
/// and the writer's work per hit.
const MAX_COALESCE_AFTER: u64 = 100;

pub(in crate::config) fn hitlog(
    raw: RawHitlog,
    state_dir: &Path,
    reporting_only: bool,
    cx: &mut Checker,
) -> Result<HitlogConfig, ConfigError> {
    if raw.retention_days == 0 {
        return Err(cx.invalid("hitlog.retention_days", "must be at least 1".into()));
    }
    if raw.channel_capacity == 0 {
        return Err(cx.invalid("hitlog.channel_capacity", "must be at least 1".into()));
    }
    // Below a few MiB the schema and one day's roll-up would not fit and
    // every record would be evicted as soon as it was written.
    if raw.max_db_mib != 0 && raw.max_db_mib < 16 {
        return Err(cx.invalid(
            "hitlog.max_db_mib",
            format!(
                "{} is too small: at least 16, or 0 for no cap",
                raw.max_db_mib
            ),
        ));
    }
    if raw.coalesce_window_s == 0 || raw.coalesce_window_s > 3600 {
        return Err(cx.invalid(
            "hitlog.coalesce_window_s",
            format!("{} is not between 1 and 3600", raw.coalesce_window_s),
        ));
    }
    if raw.coalesce_after > MAX_COALESCE_AFTER {
        return Err(cx.invalid(
            "hitlog.coalesce_after",
            format!(
                "{} is more than {MAX_COALESCE_AFTER}: each run of like hits keeps that many queries to compare",
                raw.coalesce_after
            ),
        ));
    }
    let postgres = postgres(&raw, cx)?;
    // A reporting-only instance reads the fleet's store and records nothing.
    if postgres.is_some() && !raw.enabled && !reporting_only {
        cx.warn(
            "hitlog.postgres",
            "is set while hitlog.enabled = false: nothing is recorded, so nothing is forwarded"
                .into(),
        );
    }
    Ok(HitlogConfig {
        enabled: raw.enabled,
        retention_days: raw.retention_days,
        jsonl: raw.jsonl.map(|p| cx.rel(&p)),
        database: raw
            .database
            .map(|p| cx.rel(&p))
            .unwrap_or_else(|| state_dir.join("hits.sqlite")),
        log_allowed: raw.log_allowed,
        channel_capacity: raw.channel_capacity,
        yield_to_queries: raw.yield_to_queries,
        max_db_mib: (raw.max_db_mib != 0).then_some(raw.max_db_mib),
        coalesce_after: raw.coalesce_after,
        coalesce_window_s: raw.coalesce_window_s,
        postgres,
    })
}

/// `[dnstap]`: one collector, a queue of at least one message.
pub(in crate::config) fn dnstap(
    raw: RawDnstap,
    node_id: &str,
    cx: &Checker,
) -> Result<DnstapConfig, ConfigError> {
    let target = match (raw.socket, raw.tcp) {
        (Some(path), None) => DnstapTarget::Unix(cx.rel(&path)),
        (None, Some(addr)) => DnstapTarget::Tcp(addr),
        (Some(_), Some(_)) => {
            return Err(cx.invalid(
                "dnstap.socket",
                "and dnstap.tcp are both set; choose one collector".into(),
            ));
        }
        (None, None) => {
            return Err(cx.invalid(
                "dnstap",
                "needs a collector: socket = \"/run/...\" or tcp = \"host:port\"".into(),
            ));
        }
    };
    if raw.queue == 0 {
        return Err(cx.invalid("dnstap.queue", "must be at least 1".into()));
    }
    if !raw.client_query && !raw.client_response {
        return Err(cx.invalid(
            "dnstap.client_response",
            "and dnstap.client_query are both false: nothing would be sent".into(),
        ));
    }
    Ok(DnstapConfig {
        target,
        only_policy: raw.only_policy,
        client_query: raw.client_query,
        client_response: raw.client_response,
        identity: raw.identity.unwrap_or_else(|| node_id.to_string()),
        queue: raw.queue,
    })
}

/// `hitlog.postgres*`. A password in the URL is refused: config files
/// are copied, shown and committed, so the secret lives in a file of its
/// own or the environment.
fn postgres(raw: &RawHitlog, cx: &Checker) -> Result<Option<PostgresConfig>, ConfigError> {
    let Some(url) = &raw.postgres else {
        for (key, set) in [
            (
                "hitlog.postgres_password_file",
                raw.postgres_password_file.is_some(),
            ),
            ("hitlog.postgres_ca_file", raw.postgres_ca_file.is_some()),
        ] {
            if set {
                return Err(cx.invalid(key, "is set without hitlog.postgres".into()));
            }
        }
        return Ok(None);
    };
    let parsed: postgres::Config = url.parse().map_err(|e| {
        cx.invalid(
            "hitlog.postgres",
            format!("not a PostgreSQL connection string: {e}"),
        )
    })?;
    if parsed.get_password().is_some() {
        return Err(cx.invalid(
            "hitlog.postgres",
            "holds a password; put it in hitlog.postgres_password_file or the \
             PORTCULLIS_POSTGRES_PASSWORD environment variable instead"
                .into(),
        ));
    }
    if parsed.get_dbname().is_none() || parsed.get_hosts().is_empty() {
        return Err(cx.invalid(
            "hitlog.postgres",
            "needs a host and a database name (postgres://USER@HOST:PORT/DBNAME)".into(),
        ));
    }
    Ok(Some(PostgresConfig {
        url: url.clone(),
        password_file: raw.postgres_password_file.as_ref().map(|p| cx.rel(p)),
        ca_file: raw.postgres_ca_file.as_ref().map(|p| cx.rel(p)),
    }))
}
