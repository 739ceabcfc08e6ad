//! Writing a batch of spooled records exactly once, and folding them into
//! the daily roll-ups in the same statement.

use postgres::Client;
use postgres::types::ToSql;

use super::{PgError, db};
use crate::hitlog::store::SpoolRow;

/// Columns a record is sent with; a multi-row insert of [`ROWS_PER_INSERT`]
/// stays well under PostgreSQL's 65,535 parameters.
const COLUMNS: usize = 17;
pub const ROWS_PER_INSERT: usize = 1_000;

/// Insert `rows` (in id order) for `node`/`epoch` and fold the ones that
/// were new into the roll-ups, in one transaction. Returns how many were
/// new (fewer than sent when a batch is sent again).
pub fn insert(
    client: &mut Client,
    node: &str,
    epoch: i64,
    rows: &[SpoolRow],
) -> Result<u64, PgError> {
    let mut tx = client.transaction().map_err(db("transaction"))?;
    let mut inserted = 0;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(chunk.len());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * COLUMNS);
        for row in chunk {
            params.extend_from_slice(&[
                &node as &(dyn ToSql + Sync),
                &epoch,
                &row.id,
                &row.ts,
                &row.org,
                &row.client,
                &row.transport,
                &row.qname,
                &row.qtype,
                &row.stage,
                &row.matched,
                &row.feed,
                &row.category,
                &row.indicator,
                &row.action,
                &row.repeats,
                &row.last_ts,
            ]);
        }
        let n: i64 = tx.query_one(&sql, &params).map_err(db("insert"))?.get(0);
        inserted += u64::try_from(n).unwrap_or(0);
    }
    tx.commit().map_err(db("commit"))?;
    Ok(inserted)
}

/// The statement for `rows` records: insert what is new, then fold those
/// rows (and only those) into both roll-ups, grouped and sorted by key so
/// that nodes upserting the same rows take their locks in one order.
/// Times travel as ms since the epoch, as SQLite keeps them.
fn insert_sql(rows: usize) -> String {
    use std::fmt::Write as _;
    let mut values = String::with_capacity(rows * 120);
    for r in 0..rows {
        let p = |c: usize| r * COLUMNS + c + 1;
        let _ = write!(
            values,
            "{}(${}, ${}, ${}, to_timestamp(${}::bigint / 1000.0::float8), ${}, ${}, ${}, ${}, ${}, ${}, \
             ${}, ${}, ${}, ${}, ${}, ${}, to_timestamp(${}::bigint / 1000.0::float8))",
            if r == 0 { "" } else { ", " },
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8),
            p(9),
            p(10),
            p(11),
            p(12),
            p(13),
            p(14),
            p(15),
            p(16),
        );
    }
    format!(
        "WITH new AS (
            INSERT INTO hits (node, epoch, seq, ts, org, client, transport, qname, qtype, stage,
                matched, feed, category, indicator, action, repeats, last_ts)
            VALUES {values}
            ON CONFLICT (node, epoch, seq) DO NOTHING
            RETURNING seq, ts, org, client, stage, matched, feed, category, indicator, action,
                repeats, last_ts
        ), daily AS (
            INSERT INTO hits_daily (day, org, matched, client, category, n, first_ts, last_ts)
            SELECT (ts AT TIME ZONE 'UTC')::date, org, matched, client,
                (array_agg(category ORDER BY seq DESC))[1], sum(repeats), min(ts),
                max(coalesce(last_ts, ts))
            FROM new GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (day, org, matched, client) DO UPDATE SET
                category = excluded.category, n = hits_daily.n + excluded.n,
                first_ts = least(hits_daily.first_ts, excluded.first_ts),
                last_ts = greatest(hits_daily.last_ts, excluded.last_ts)
        ), feeds AS (
            INSERT INTO hits_daily_feeds (day, org, category, feed, action, n)
            SELECT (ts AT TIME ZONE 'UTC')::date, org, category, feed, action, sum(repeats)
            FROM new GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (day, org, category, feed, action) DO UPDATE SET
                n = hits_daily_feeds.n + excluded.n
        ), sightings AS (
            INSERT INTO hits_daily_sightings (day, feed, matched, indicator, org, category, n,
                first_ts, last_ts)
            SELECT (ts AT TIME ZONE 'UTC')::date, feed, matched,
                CASE WHEN indicator LIKE 'indicator--%' THEN indicator ELSE '' END, org,
                (array_agg(category ORDER BY seq DESC))[1], sum(repeats), min(ts),
                max(coalesce(last_ts, ts))
            FROM new WHERE stage <> 'client_ip' GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (day, feed, matched, indicator, org) DO UPDATE SET
                category = excluded.category, n = hits_daily_sightings.n + excluded.n,
                first_ts = least(hits_daily_sightings.first_ts, excluded.first_ts),
                last_ts = greatest(hits_daily_sightings.last_ts, excluded.last_ts)
        )
        SELECT count(*) FROM new"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_numbers_every_parameter_once() {
        let sql = insert_sql(3);
        for p in 1..=3 * COLUMNS {
            assert!(
                sql.contains(&format!("${p},"))
                    || sql.contains(&format!("${p})"))
                    || sql.contains(&format!("${p}::")),
                "${p} missing"
            );
        }
        assert!(!sql.contains(&format!("${}", 3 * COLUMNS + 1)));
    }
}
