//! Reading records back: the [`Filter`] the listing and the reports share,
//! the ids a time range maps to, and pages of records under a [`Cursor`].

use std::net::IpAddr;

use rusqlite::OptionalExtension;
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock::minute;
use crate::hitlog::{Hit, Stage, Transport};

/// Filters shared by the log listing and the report.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: every organisation (operator only).
    pub org: Option<String>,
    /// Inclusive, ms.
    pub since: Option<i64>,
    /// Exclusive, ms.
    pub until: Option<i64>,
    pub client: Option<IpAddr>,
    /// The query name or the listed name equals it or is below it.
    pub domain: Option<String>,
    pub category: Option<String>,
}

/// Where the next page starts: the id of the last record of this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub id: i64,
}

impl Cursor {
    /// Also takes the `ts-id` form of version 2's cursors, so a page
    /// link from before an upgrade still works.
    pub fn parse(text: &str) -> Option<Cursor> {
        let id = text.split_once('-').map_or(text, |(_, id)| id);
        Some(Cursor {
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)
    }
}

/// One page of records, newest first: in the order they arrived, the
/// latest first (time order, to within the few milliseconds of a batch).
#[derive(Debug, Serialize)]
pub struct Page {
    pub hits: Vec<Hit>,
    /// Pass back as `after` for the next (older) page; `None` at the end.
    pub next: Option<String>,
}

impl Store {
    /// The ids that the records with a time in [since, until) lie
    /// between, from `hits_minutes`: `None` when there is no bound to add
    /// (no time filter, or a version 2 database, which has an index on
    /// ts instead); an empty range when no record is in those minutes.
    fn id_range(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        if self.version < 3 || (since.is_none() && until.is_none()) {
            return Ok(None);
        }
        let from = since.map_or(i64::MIN, minute);
        let to = until.map_or(i64::MAX, |u| minute(u.saturating_sub(1)));
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT min(first_id), max(last_id) FROM hits_minutes WHERE minute >= ?1 AND minute <= ?2",
                [from, to],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        Ok(Some(first.zip(last).unwrap_or((1, 0))))
    }

    /// [`push_filter`], and one range of ids: the one its times imply,
    /// narrowed to ids above `above` and below `below`. One range, not
    /// one condition each: given two lower bounds on the id, SQLite
    /// scans from the one it picks, which may be the wider one.
    pub(super) fn push_filter_and_ids(
        &self,
        sql: &mut String,
        args: &mut Vec<rusqlite::types::Value>,
        filter: &Filter,
        above: Option<i64>,
        below: Option<i64>,
    ) -> Result<(), StoreError> {
        push_filter(sql, args, filter, self.version >= 7);
        let (mut first, mut last) = self
            .id_range(filter.since, filter.until)?
            .unwrap_or((i64::MIN, i64::MAX));
        if let Some(above) = above {
            first = first.max(above.saturating_add(1));
        }
        if let Some(below) = below {
            last = last.min(below.saturating_sub(1));
        }
        if (first, last) != (i64::MIN, i64::MAX) {
            args.push(first.into());
            args.push(last.into());
            sql.push_str(&format!(
                " AND id BETWEEN ?{} AND ?{}",
                args.len() - 1,
                args.len()
            ));
        }
        Ok(())
    }

    /// The time of the newest record.
    pub(super) fn newest_ts(&self) -> Result<Option<i64>, StoreError> {
        if self.version < 3 {
            return self
                .conn
                .query_row("SELECT max(ts) FROM hits", [], |r| r.get(0))
                .map_err(|e| self.err(e));
        }
        // The newest record is in the newest minute's range of ids. Two
        // statements: in one, as a join, SQLite scanned the whole table.
        let newest: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT first_id, last_id FROM hits_minutes ORDER BY minute DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((first, last)) = newest else {
            return Ok(None);
        };
        self.conn
            .query_row(
                &format!(
                    "SELECT max(ts) FROM {} WHERE id BETWEEN ?1 AND ?2",
                    self.rows_table()
                ),
                [first, last],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records in the store (all organisations).
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM {}", self.rows_table()),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The record with this reference number, if it belongs to `org`
    /// (`None`: any organisation).
    pub fn get(&self, id: i64, org: Option<&str>) -> Result<Option<Hit>, StoreError> {
        let hit = self
            .conn
            .query_row(
                &format!("SELECT {} FROM hits WHERE id = ?1", self.columns()),
                [id],
                row_to_hit,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(hit.filter(|h| org.is_none() || h.org.as_deref() == org))
    }

    /// Records matching `filter`, newest first, `limit` at a time.
    pub fn hits(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let mut sql = format!("SELECT {} FROM hits WHERE 1 = 1", self.columns());
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        self.push_filter_and_ids(&mut sql, &mut args, filter, None, after.map(|c| c.id))?;
        args.push((limit as i64 + 1).into());
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut hits: Vec<Hit> = stmt
            .query_map(rusqlite::params_from_iter(args), row_to_hit)
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let next = if hits.len() > limit {
            hits.truncate(limit);
            hits.last().map(|h| {
                Cursor {
                    id: h.id.unwrap_or(0),
                }
                .to_string()
            })
        } else {
            None
        };
        Ok(Page { hits, next })
    }
}

const COLUMNS: &str = "id, ts, org, client, transport, qname, qtype, stage, matched, feed, \
                       category, indicator, action, repeats, last_ts, node";
/// The same for a version 4 database, read as it is.
const COLUMNS_4: &str = "id, ts, org, client, transport, qname, qtype, stage, matched, feed, \
                         category, indicator, action, repeats, last_ts, NULL";
/// The same for a database before version 4.
const COLUMNS_3: &str = "id, ts, org, client, transport, qname, qtype, stage, matched, feed, \
                         category, indicator, action, 1, NULL, NULL";

impl Store {
    /// The columns [`row_to_hit`] reads, as this database has them.
    fn columns(&self) -> &'static str {
        match self.version {
            5.. => COLUMNS,
            4 => COLUMNS_4,
            _ => COLUMNS_3,
        }
    }

    /// How many queries a record stands for, as SQL over `hits`.
    pub(super) fn repeats_sql(&self) -> &'static str {
        if self.version >= 4 { "repeats" } else { "1" }
    }

    /// The time of a record's last query, as SQL over `hits`.
    pub(super) fn last_ts_sql(&self) -> &'static str {
        if self.version >= 4 {
            "coalesce(last_ts, ts)"
        } else {
            "ts"
        }
    }
}

fn row_to_hit(row: &rusqlite::Row<'_>) -> rusqlite::Result<Hit> {
    let org: String = row.get(2)?;
    let client: String = row.get(3)?;
    let stage: String = row.get(7)?;
    Ok(Hit {
        id: Some(row.get(0)?),
        ts: row.get(1)?,
        org: (!org.is_empty()).then_some(org),
        client: client
            .parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        transport: Transport::parse(&row.get::<_, String>(4)?),
        qname: row.get(5)?,
        qtype: row.get(6)?,
        stage: Stage::parse(&stage).unwrap_or(Stage::Qname),
        matched: row.get(8)?,
        feed: row.get(9)?,
        category: row.get(10)?,
        indicator: row.get(11)?,
        action: row.get(12)?,
        repeats: row.get::<_, i64>(13)?.max(1) as u64,
        last_ts: row.get(14)?,
        node: row.get(15)?,
    })
}

/// Append `filter`'s conditions as numbered parameters. `org_ids`: the
/// rows are version 7's `hits`, whose organisation is read by its id
/// (through `hit_rows_org`, newest first); the roll-ups hold its name.
pub(super) fn push_filter(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    filter: &Filter,
    org_ids: bool,
) {
    let mut push = |cond: &str, value: rusqlite::types::Value| {
        args.push(value);
        sql.push_str(&cond.replace("?N", &format!("?{}", args.len())));
    };
    if let Some(org) = &filter.org {
        if org_ids {
            push(
                " AND org_id = (SELECT id FROM hit_orgs WHERE org = ?N)",
                org.clone().into(),
            );
        } else {
            push(" AND org = ?N", org.clone().into());
        }
    }
    if let Some(since) = filter.since {
        push(" AND ts >= ?N", since.into());
    }
    if let Some(until) = filter.until {
        push(" AND ts < ?N", until.into());
    }
    if let Some(client) = filter.client {
        push(" AND client = ?N", client.to_canonical().to_string().into());
    }
    if let Some(category) = &filter.category {
        push(" AND category = ?N", category.clone().into());
    }
    if let Some(domain) = &filter.domain {
        // Equal, or below at a label boundary (no LIKE: `_` is a wildcard
        // there and a legal character in names).
        push(
            " AND (qname = ?N OR substr(qname, -length(?N) - 1) = '.' || ?N \
             OR matched = ?N OR substr(matched, -length(?N) - 1) = '.' || ?N)",
            domain.clone().into(),
        );
    }
}

#[cfg(test)]
mod tests;
