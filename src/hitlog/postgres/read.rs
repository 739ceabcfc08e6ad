//! Reading the fleet's records back from PostgreSQL: pages of records and
//! reports over every node, for `logs`, `report`, the review API and its
//! page.
//!
//! The same [`Filter`] as the node's own store, the same [`Page`] and the
//! same [`Report`], so every reader shows the fleet exactly as it shows
//! one node. Listing is newest first by time (then by the fleet-wide id),
//! walking the `(org, ts, id)` or `(ts, id)` index backwards; a cursor is
//! the id of the last record shown, whose time the next page starts
//! below. A report reads the daily roll-ups for whole days and raw rows
//! for the partial days at either end, as SQLite's does; PostgreSQL
//! groups the rows by (organisation, name, client) and the report's own
//! [`Aggregate`] ranks them, so the rankings and their ties are the ones
//! a single node gives.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row};

use super::{PgError, connect, db, migrate};
use crate::clock::DAY_MS;
use crate::config::PostgresConfig;
use crate::hitlog::store::{
    Aggregate, Cursor, Filter, Page, Pair, Report, SightingCursor, SightingPage, SightingRow,
    SightingView,
};
use crate::hitlog::{Hit, Stage, Transport};

/// Connections kept open between requests: a review page opens several
/// at once, and a TLS connection costs more than the query it serves.
const MAX_IDLE: usize = 4;

/// A time column as ms since the epoch, as the records carry it.
macro_rules! ms {
    ($col:literal) => {
        concat!("(extract(epoch FROM ", $col, ") * 1000)::bigint")
    };
}

const COLUMNS: &str = concat!(
    "id, ",
    ms!("ts"),
    ", org, client, transport, qname, qtype, stage, matched, feed, category, indicator, \
     action, repeats, ",
    ms!("last_ts"),
    ", node"
);

/// The fleet store, as readers see it.
pub struct FleetReader {
    config: PostgresConfig,
    idle: Mutex<Vec<Client>>,
    /// The schema has been brought up to date by this process.
    migrated: AtomicBool,
}

/// A statement being built, with its parameters numbered as they come.
struct Sql {
    text: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            params: Vec::new(),
        }
    }

    /// `value` as the next parameter; returns its placeholder.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// A time in ms as a `timestamptz` parameter.
    fn time(&mut self, ms: i64) -> String {
        let p = self.bind(ms);
        format!("to_timestamp({p}::bigint / 1000.0::float8)")
    }

    /// A day number (days since the epoch) as a `date` expression.
    fn day(&mut self, day: i64) -> String {
        let p = self.bind(day as i32);
        format!("(DATE '1970-01-01' + {p}::int)")
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn args(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    /// `filter`'s conditions on the organisation and category, which the
    /// roll-ups carry too.
    fn org_and_category(&mut self, filter: &Filter) {
        if let Some(org) = &filter.org {
            let p = self.bind(org.clone());
            self.push(&format!(" AND org = {p}"));
        }
        if let Some(category) = &filter.category {
            let p = self.bind(category.clone());
            self.push(&format!(" AND category = {p}"));
        }
    }

    /// All of `filter`'s conditions on raw records, times included.
    fn raw(&mut self, filter: &Filter) {
        self.org_and_category(filter);
        if let Some(since) = filter.since {
            let t = self.time(since);
            self.push(&format!(" AND ts >= {t}"));
        }
        if let Some(until) = filter.until {
            let t = self.time(until);
            self.push(&format!(" AND ts < {t}"));
        }
        if let Some(client) = filter.client {
            let p = self.bind(client.to_canonical().to_string());
            self.push(&format!(" AND client = {p}"));
        }
        if let Some(domain) = &filter.domain {
            // Equal, or below at a label boundary (as in SQLite: no LIKE).
            let p = self.bind(domain.clone());
            self.push(&format!(
                " AND (qname = {p}::text OR right(qname, length({p}::text) + 1) = '.' || {p}::text \
                 OR matched = {p}::text OR right(matched, length({p}::text) + 1) = '.' || {p}::text)"
            ));
        }
    }
}

impl FleetReader {
    pub fn new(config: PostgresConfig) -> FleetReader {
        FleetReader {
            config,
            idle: Mutex::new(Vec::new()),
            migrated: AtomicBool::new(false),
        }
    }

    /// Run `f` on an idle connection, or a new one. A connection that
    /// failed is not kept.
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .filter(|c| !c.is_closed());
        let mut client = match idle {
            Some(client) => client,
            None => {
                let mut client = connect(&self.config)?;
                // A reporting instance may be the first to reach a new
                // database: it makes the schema as a writer would.
                if !self.migrated.load(Ordering::Relaxed) {
                    migrate(&mut client)?;
                    self.migrated.store(true, Ordering::Relaxed);
                }
                client
            }
        };
        let result = f(&mut client);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(client);
            }
        }
        result
    }

    /// Records matching `filter`, newest first, `limit` at a time.
    pub fn hits(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, PgError> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM hits WHERE true"));
        sql.raw(filter);
        if let Some(after) = after {
            let p = sql.bind(after.id);
            sql.push(&format!(
                " AND (ts, id) < ((SELECT ts FROM hits WHERE id = {p}), {p})"
            ));
        }
        let n = sql.bind(limit as i64 + 1);
        sql.push(&format!(" ORDER BY ts DESC, id DESC LIMIT {n}"));
        let rows = self.with_client(|c| c.query(&sql.text, &sql.args()).map_err(db("listing")))?;
        let mut hits: Vec<Hit> = rows.iter().map(row_to_hit).collect::<Result<_, _>>()?;
        let next = if hits.len() > limit {
            hits.truncate(limit);
            hits.last()
                .and_then(|h| h.id)
                .map(|id| Cursor { id }.to_string())
        } else {
            None
        };
        Ok(Page { hits, next })
    }

    /// The record with this fleet-wide reference number, if it belongs to
    /// `org` (`None`: any organisation).
    pub fn get(&self, id: i64, org: Option<&str>) -> Result<Option<Hit>, PgError> {
        let sql = format!("SELECT {COLUMNS} FROM hits WHERE id = $1");
        let row = self.with_client(|c| c.query_opt(&sql, &[&id]).map_err(db("record")))?;
        let hit = row.as_ref().map(row_to_hit).transpose()?;
        Ok(hit.filter(|h| org.is_none() || h.org.as_deref() == org))
    }

    /// The summary for `filter` over [since, until), with `top` rows in
    /// each ranking: whole days from the roll-ups, the rest from raw rows,
    /// in one snapshot.
    pub fn report(
        &self,
        filter: &Filter,
        since: i64,
        until: i64,
        top: usize,
    ) -> Result<Report, PgError> {
        self.with_client(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(db("report transaction"))?;
            let newest: Option<i64> = tx
                .query_one(&format!("SELECT {} FROM hits", ms!("max(ts)")), &[])
                .map_err(db("newest record"))?
                .get(0);
            let first_full = since.div_euclid(DAY_MS) + i64::from(since.rem_euclid(DAY_MS) != 0);
            // A range that ends after the newest record holds all of the
            // last day's records: its roll-up rows are exact.
            let end_full = if newest.is_none_or(|n| n < until) {
                (until - 1).div_euclid(DAY_MS) + 1
            } else {
                until.div_euclid(DAY_MS)
            };
            // The roll-ups have no query name and no per-client feed
            // counts: a domain or client filter reads raw rows.
            let days =
                (filter.domain.is_none() && filter.client.is_none() && first_full < end_full)
                    .then_some((first_full, end_full));
            let raw: Vec<Filter> = match days {
                Some((first, end)) => [(since, first * DAY_MS), (end * DAY_MS, until)]
                    .into_iter()
                    .filter(|(from, to)| from < to)
                    .map(|(from, to)| Filter {
                        since: Some(from),
                        until: Some(to),
                        ..filter.clone()
                    })
                    .collect(),
                None => vec![Filter {
                    since: Some(since),
                    until: Some(until),
                    ..filter.clone()
                }],
            };
            let mut agg = Aggregate::new(since, until);
            let pairs = union(
                filter,
                days,
                &raw,
                "SELECT org, matched, client, category, n, first_ts AS f, last_ts AS l \
                 FROM hits_daily",
                "SELECT org, matched, client, category, repeats AS n, ts AS f, \
                 coalesce(last_ts, ts) AS l FROM hits",
                &format!(
                    "SELECT org, matched, client, min(category), sum(n)::bigint, {}, {} FROM (",
                    ms!("min(f)"),
                    ms!("max(l)")
                ),
                ") x GROUP BY org, matched, client",
            );
            let rows = tx.query(&pairs.text, &pairs.args()).map_err(db("report"))?;
            for row in &rows {
                let pair = || -> Result<Pair<'_>, postgres::Error> {
                    Ok(Pair {
                        org: row.try_get(0)?,
                        day: None,
                        matched: row.try_get(1)?,
                        client: row.try_get(2)?,
                        category: row.try_get(3)?,
                        n: count(row.try_get(4)?),
                        first: row.try_get(5)?,
                        last: row.try_get(6)?,
                    })
                };
                agg.add_pair(pair().map_err(db("report row"))?);
            }
            let timeline = union(
                filter,
                days,
                &raw,
                "SELECT (day - DATE '1970-01-01')::bigint AS d, n FROM hits_daily",
                "SELECT floor(extract(epoch FROM ts) / 86400)::bigint AS d, repeats AS n FROM hits",
                "SELECT d, sum(n)::bigint FROM (",
                ") x GROUP BY d",
            );
            let rows = tx
                .query(&timeline.text, &timeline.args())
                .map_err(db("report timeline"))?;
            for row in &rows {
                let day = || -> Result<(i64, i64), postgres::Error> {
                    Ok((row.try_get(0)?, row.try_get(1)?))
                };
                let (d, n) = day().map_err(db("report row"))?;
                agg.add_day(d, count(n));
            }
            let feeds = union(
                filter,
                days,
                &raw,
                "SELECT category, feed, action, n FROM hits_daily_feeds",
                "SELECT category, feed, action, repeats AS n FROM hits",
                "SELECT category, feed, action, sum(n)::bigint FROM (",
                ") x GROUP BY 1, 2, 3",
            );
            let rows = tx
                .query(&feeds.text, &feeds.args())
                .map_err(db("report feeds"))?;
            for row in &rows {
                let feed = || -> Result<(&str, &str, &str, i64), postgres::Error> {
                    Ok((
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                    ))
                };
                let (category, feed, action, n) = feed().map_err(db("report row"))?;
                agg.add_feed(category, feed, action, count(n));
            }
            tx.commit().map_err(db("report transaction"))?;
            Ok(agg.finish(filter.org.clone(), top))
        })
    }
}

/// `head` (roll-up rows for `days`) UNION ALL `raw_head` (records for
/// each of `raw`), wrapped in `open` ... `close`. Both heads name their
/// columns as `open` reads them: either may come first, or alone.
fn union(
    filter: &Filter,
    days: Option<(i64, i64)>,
    raw: &[Filter],
    head: &str,
    raw_head: &str,
    open: &str,
    close: &str,
) -> Sql {
    let mut sql = Sql::new(open);
    let mut parts = 0;
    if let Some((first, end)) = days {
        let (a, b) = (sql.day(first), sql.day(end));
        sql.push(&format!("{head} WHERE day >= {a} AND day < {b}"));
        sql.org_and_category(filter);
        parts += 1;
    }
    for f in raw {
        if parts > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(raw_head);
        sql.push(" WHERE true");
        sql.raw(f);
        parts += 1;
    }
    sql.push(close);
    sql
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn row_to_hit(row: &Row) -> Result<Hit, PgError> {
    let read = || -> Result<Hit, postgres::Error> {
        let org: String = row.try_get(2)?;
        let client: String = row.try_get(3)?;
        let stage: String = row.try_get(7)?;
        let repeats: i64 = row.try_get(13)?;
        Ok(Hit {
            id: Some(row.try_get(0)?),
            ts: row.try_get(1)?,
            org: (!org.is_empty()).then_some(org),
            client: client
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            transport: Transport::parse(row.try_get(4)?),
            qname: row.try_get(5)?,
            qtype: row.try_get(6)?,
            stage: Stage::parse(&stage).unwrap_or(Stage::Qname),
            matched: row.try_get(8)?,
            feed: row.try_get(9)?,
            category: row.try_get(10)?,
            indicator: row.try_get(11)?,
            action: row.try_get(12)?,
            repeats: repeats.max(1) as u64,
            last_ts: row.try_get(14)?,
            node: row.try_get(15)?,
        })
    };
    read().map_err(db("record row"))
}

impl FleetReader {
    /// Sightings rows that last changed after `after` (and at or after
    /// `since`), oldest change first, at most `limit`: the fleet's
    /// roll-up is updated with each insert, so it is whole. The anonymous
    /// view adds organisations up in the query.
    pub fn sightings(
        &self,
        view: SightingView<'_>,
        after: Option<&SightingCursor>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<SightingPage, PgError> {
        let anonymous = view == SightingView::Anonymous;
        let mut sql = Sql::new("");
        let (cols, key) = if anonymous {
            (
                concat!(
                    "(day - DATE '1970-01-01')::bigint, feed, matched, indicator, '', \
                     (array_agg(category ORDER BY last_ts DESC))[1], sum(n)::bigint, ",
                    ms!("min(first_ts)"),
                    ", ",
                    ms!("max(last_ts)")
                ),
                "(max(last_ts), day, feed, matched, indicator)",
            )
        } else {
            (
                concat!(
                    "(day - DATE '1970-01-01')::bigint, feed, matched, indicator, org, category, n, ",
                    ms!("first_ts"),
                    ", ",
                    ms!("last_ts")
                ),
                "(last_ts, day, feed, matched, indicator, org)",
            )
        };
        let mut cond = String::from("true");
        if let SightingView::Org(org) = view {
            let p = sql.bind(org.to_owned());
            cond.push_str(&format!(" AND org = {p}"));
        }
        let mut having = String::from("true");
        let last = if anonymous { "max(last_ts)" } else { "last_ts" };
        if let Some(since) = since {
            let t = sql.time(since);
            if anonymous {
                having.push_str(&format!(" AND {last} >= {t}"));
            } else {
                cond.push_str(&format!(" AND {last} >= {t}"));
            }
        }
        if let Some(c) = after {
            let t = sql.time(c.last);
            let after_key = if c.day == i64::MAX {
                format!("{last} > {t}")
            } else {
                let day = sql.day(c.day);
                let feed = sql.bind(c.feed.clone());
                let matched = sql.bind(c.matched.clone());
                let indicator = sql.bind(c.indicator.clone());
                if anonymous {
                    format!("{key} > ({t}, {day}, {feed}, {matched}, {indicator})")
                } else {
                    let org = sql.bind(c.org.clone());
                    format!("{key} > ({t}, {day}, {feed}, {matched}, {indicator}, {org})")
                }
            };
            if anonymous {
                // A sum changed after `t` has a member that did, on that
                // day or (a coalesced record running past midnight) the one
                // before.
                let from = sql.day(c.last.div_euclid(crate::clock::DAY_MS) - 1);
                cond.push_str(&format!(" AND day >= {from}"));
                having.push_str(&format!(" AND {after_key}"));
            } else {
                cond.push_str(&format!(" AND {after_key}"));
            }
        }
        let n = sql.bind(limit as i64 + 1);
        sql.push(&if anonymous {
            format!(
                "SELECT {cols} FROM hits_daily_sightings WHERE {cond} \
                 GROUP BY day, feed, matched, indicator HAVING {having} \
                 ORDER BY {key} LIMIT {n}"
            )
        } else {
            format!("SELECT {cols} FROM hits_daily_sightings WHERE {cond} ORDER BY {key} LIMIT {n}")
        });
        let rows =
            self.with_client(|c| c.query(&sql.text, &sql.args()).map_err(db("sightings")))?;
        let mut page = SightingPage::default();
        for row in rows {
            page.rows.push(SightingRow {
                day: row.try_get(0).map_err(db("sightings"))?,
                feed: row.try_get(1).map_err(db("sightings"))?,
                matched: row.try_get(2).map_err(db("sightings"))?,
                indicator: row.try_get(3).map_err(db("sightings"))?,
                org: row.try_get(4).map_err(db("sightings"))?,
                category: row.try_get(5).map_err(db("sightings"))?,
                n: row.try_get::<_, i64>(6).map_err(db("sightings"))?.max(0) as u64,
                first: row.try_get(7).map_err(db("sightings"))?,
                last: row.try_get(8).map_err(db("sightings"))?,
            });
        }
        if page.rows.len() > limit {
            page.rows.truncate(limit);
            page.next = page.rows.last().map(SightingCursor::of);
        }
        Ok(page)
    }
}
