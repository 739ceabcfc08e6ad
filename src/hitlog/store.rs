//! The SQLite hit store: schema, batched writes, retention, and the
//! queries behind `portcullis logs`, `portcullis report` and the API.
//!
//! Two tables. `hits` holds every record, indexed by (org, ts) and by ts,
//! for listing and filtering. `hits_daily` is a roll-up kept in the same
//! transaction: one row per (org, UTC day, listed name, client, feed,
//! category, action) with a count and the first and last time seen.
//! Blocked queries repeat (a machine beacons to its C2 every few minutes),
//! so the roll-up is far smaller than the log, and a report reads it for
//! the whole days in its range and the raw rows only for the partial days
//! at either end. That is what keeps a report over ten million records
//! within a couple of seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::{Hit, Stage, Transport};

const DAY_MS: i64 = 86_400_000;
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hits (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,   -- ms since the Unix epoch, UTC
    org       TEXT    NOT NULL,   -- '' for a client in no organisation
    client    TEXT    NOT NULL,
    transport TEXT    NOT NULL,
    qname     TEXT    NOT NULL,
    qtype     TEXT    NOT NULL,
    stage     TEXT    NOT NULL,
    matched   TEXT    NOT NULL,
    feed      TEXT    NOT NULL,
    category  TEXT    NOT NULL,
    indicator TEXT,
    action    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS hits_org_ts ON hits (org, ts);
CREATE INDEX IF NOT EXISTS hits_ts ON hits (ts);
CREATE TABLE IF NOT EXISTS hits_daily (
    org      TEXT    NOT NULL,
    day      INTEGER NOT NULL,    -- days since the Unix epoch, UTC
    matched  TEXT    NOT NULL,
    client   TEXT    NOT NULL,
    feed     TEXT    NOT NULL,
    category TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts  INTEGER NOT NULL,
    PRIMARY KEY (org, day, matched, client, feed, category, action)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hits_daily_day ON hits_daily (day);
";

/// A hit-store failure, naming the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no hit log at {0} (has the resolver run with this config?)")]
    Missing(PathBuf),
    #[error("hit log {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("hit log {path} has schema version {found}; this portcullis knows {SCHEMA_VERSION}")]
    Version { path: PathBuf, found: i64 },
}

/// An open hit database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

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

/// Where the next page starts: the last record of this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub id: i64,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        let (ts, id) = text.split_once('-')?;
        Some(Cursor {
            ts: ts.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ts, self.id)
    }
}

/// One page of records, newest first.
#[derive(Debug, Serialize)]
pub struct Page {
    pub hits: Vec<Hit>,
    /// Pass back as `after` for the next (older) page; `None` at the end.
    pub next: Option<String>,
}

/// An organisation-level (or operator-wide) summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub org: Option<String>,
    #[serde(with = "super::rfc3339_ms")]
    pub since: i64,
    #[serde(with = "super::rfc3339_ms")]
    pub until: i64,
    pub total: u64,
    pub distinct_names: u64,
    pub distinct_clients: u64,
    /// Operator-wide reports only: hits per organisation.
    pub by_org: Vec<Count>,
    pub by_category: Vec<CategoryCount>,
    pub by_action: Vec<Count>,
    pub top_names: Vec<NameRow>,
    pub top_clients: Vec<ClientRow>,
    /// Hits per UTC day, every day in the range (zeros included).
    pub timeline: Vec<DayCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Count {
    pub key: String,
    pub hits: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryCount {
    pub category: String,
    pub feed: String,
    pub hits: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NameRow {
    pub name: String,
    pub category: String,
    pub hits: u64,
    pub clients: u64,
    #[serde(with = "super::rfc3339_ms")]
    pub first_seen: i64,
    #[serde(with = "super::rfc3339_ms")]
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientRow {
    pub client: String,
    pub org: Option<String>,
    pub hits: u64,
    pub names: u64,
    #[serde(with = "super::rfc3339_ms")]
    pub first_seen: i64,
    #[serde(with = "super::rfc3339_ms")]
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub hits: u64,
}

impl Store {
    /// Open (creating if needed) for the writer. `max_bytes` caps the file.
    pub fn open_writer(path: &Path, max_bytes: Option<u64>) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            // A missing state dir is created; an error shows at open.
            let _ = std::fs::create_dir_all(dir);
        }
        let wrap = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        // WAL: readers (reports, the API) never block the writer. NORMAL:
        // a committed transaction survives a crash of this process.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(wrap)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.check_version(true)?;
        store.conn.execute_batch(SCHEMA).map_err(wrap)?;
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(wrap)?;
        if let Some(max) = max_bytes {
            let page: i64 = store
                .conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(wrap)?;
            let pages = (max / page.max(512) as u64).max(1);
            store
                .conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(wrap)?;
        }
        Ok(store)
    }

    /// Open an existing database for review.
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.check_version(false)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn check_version(&self, creating: bool) -> Result<(), StoreError> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if found == SCHEMA_VERSION || (creating && found == 0) {
            Ok(())
        } else {
            Err(StoreError::Version {
                path: self.path.clone(),
                found,
            })
        }
    }

    /// Write a batch in one transaction; returns the ids given, in order.
    pub fn insert(&mut self, hits: &[Hit]) -> Result<Vec<i64>, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        let mut ids = Vec::with_capacity(hits.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO hits (ts, org, client, transport, qname, qtype, stage, matched, \
                     feed, category, indicator, action) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(wrap)?;
            type Key<'a> = (&'a str, i64, &'a str, String, &'a str, &'a str, &'a str);
            let mut daily: HashMap<Key<'_>, (i64, i64, i64)> = HashMap::new();
            for h in hits {
                let org = h.org.as_deref().unwrap_or("");
                let client = h.client.to_string();
                insert
                    .execute(params![
                        h.ts,
                        org,
                        client,
                        h.transport.as_str(),
                        h.qname,
                        h.qtype,
                        h.stage.as_str(),
                        h.matched,
                        h.feed,
                        h.category,
                        h.indicator,
                        h.action,
                    ])
                    .map_err(wrap)?;
                ids.push(tx.last_insert_rowid());
                let key = (
                    org,
                    h.ts.div_euclid(DAY_MS),
                    h.matched.as_str(),
                    client,
                    h.feed.as_str(),
                    h.category.as_str(),
                    h.action.as_str(),
                );
                let e = daily.entry(key).or_insert((0, h.ts, h.ts));
                e.0 += 1;
                e.1 = e.1.min(h.ts);
                e.2 = e.2.max(h.ts);
            }
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO hits_daily (org, day, matched, client, feed, category, action, n, \
                     first_ts, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                     ON CONFLICT (org, day, matched, client, feed, category, action) DO UPDATE SET \
                     n = n + excluded.n, first_ts = min(first_ts, excluded.first_ts), \
                     last_ts = max(last_ts, excluded.last_ts)",
                )
                .map_err(wrap)?;
            for ((org, day, matched, client, feed, category, action), (n, first, last)) in &daily {
                upsert
                    .execute(params![
                        org, day, matched, client, feed, category, action, n, first, last
                    ])
                    .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(ids)
    }

    /// Delete records older than `cutoff` (ms), a chunk at a time so the
    /// writer never holds the database for long. Returns rows deleted.
    pub fn expire(&mut self, cutoff: i64) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            let n = self
                .conn
                .execute(
                    "DELETE FROM hits WHERE id IN (SELECT id FROM hits WHERE ts < ?1 LIMIT 10000)",
                    [cutoff],
                )
                .map_err(|e| self.err(e))?;
            total += n as u64;
            if n < 10_000 {
                break;
            }
        }
        // The roll-up keeps whole days: a day goes when all of it is old.
        self.conn
            .execute(
                "DELETE FROM hits_daily WHERE day < ?1",
                [cutoff.div_euclid(DAY_MS)],
            )
            .map_err(|e| self.err(e))?;
        Ok(total)
    }

    /// Records in the store (all organisations).
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM hits", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The record with this reference number, if it belongs to `org`
    /// (`None`: any organisation).
    pub fn get(&self, id: i64, org: Option<&str>) -> Result<Option<Hit>, StoreError> {
        let hit = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM hits WHERE id = ?1"),
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
        let mut sql = format!("SELECT {COLUMNS} FROM hits WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        push_filter(&mut sql, &mut args, filter);
        if let Some(c) = after {
            args.push(c.ts.into());
            args.push(c.id.into());
            let (t, i) = (args.len() - 1, args.len());
            sql.push_str(&format!(" AND (ts < ?{t} OR (ts = ?{t} AND id < ?{i}))"));
        }
        args.push((limit as i64 + 1).into());
        sql.push_str(&format!(" ORDER BY ts DESC, id DESC LIMIT ?{}", args.len()));
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
                    ts: h.ts,
                    id: h.id.unwrap_or(0),
                }
                .to_string()
            })
        } else {
            None
        };
        Ok(Page { hits, next })
    }

    /// The summary for `filter` over [since, until), with `top` rows in
    /// each ranking.
    pub fn report(
        &self,
        filter: &Filter,
        since: i64,
        until: i64,
        top: usize,
    ) -> Result<Report, StoreError> {
        let mut agg = Aggregate::default();
        let first_full = since.div_euclid(DAY_MS) + i64::from(since.rem_euclid(DAY_MS) != 0);
        let end_full = until.div_euclid(DAY_MS);
        // The raw log answers the client/domain filters exactly; the
        // roll-up has no query name, so a domain filter reads raw rows.
        let rollup_ok = filter.domain.is_none() && first_full < end_full;
        let raw_ranges: Vec<(i64, i64)> = if rollup_ok {
            vec![(since, first_full * DAY_MS), (end_full * DAY_MS, until)]
        } else {
            vec![(since, until)]
        };
        if rollup_ok {
            let mut sql = String::from(
                "SELECT org, day, matched, client, feed, category, action, n, first_ts, last_ts \
                 FROM hits_daily WHERE day >= ?1 AND day < ?2",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![first_full.into(), end_full.into()];
            push_filter(
                &mut sql,
                &mut args,
                &Filter {
                    since: None,
                    until: None,
                    ..filter.clone()
                },
            );
            self.aggregate(&sql, args, &mut agg)?;
        }
        for (from, to) in raw_ranges {
            if from >= to {
                continue;
            }
            let mut sql = format!(
                "SELECT org, ts / {DAY_MS}, matched, client, feed, category, action, 1, ts, ts \
                 FROM hits WHERE 1 = 1"
            );
            let mut args = Vec::new();
            push_filter(
                &mut sql,
                &mut args,
                &Filter {
                    since: Some(from),
                    until: Some(to),
                    ..filter.clone()
                },
            );
            self.aggregate(&sql, args, &mut agg)?;
        }
        Ok(agg.finish(filter.org.clone(), since, until, top))
    }

    fn aggregate(
        &self,
        sql: &str,
        args: Vec<rusqlite::types::Value>,
        agg: &mut Aggregate,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let r = (|| -> rusqlite::Result<()> {
                agg.add(
                    row.get_ref(0)?.as_str()?,
                    row.get(1)?,
                    row.get_ref(2)?.as_str()?,
                    row.get_ref(3)?.as_str()?,
                    row.get_ref(4)?.as_str()?,
                    row.get_ref(5)?.as_str()?,
                    row.get_ref(6)?.as_str()?,
                    row.get::<_, i64>(7)? as u64,
                    row.get(8)?,
                    row.get(9)?,
                );
                Ok(())
            })();
            r.map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, ts, org, client, transport, qname, qtype, stage, matched, feed, \
                       category, indicator, action";

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
    })
}

/// Append `filter`'s conditions as numbered parameters.
fn push_filter(sql: &mut String, args: &mut Vec<rusqlite::types::Value>, filter: &Filter) {
    let mut push = |cond: &str, value: rusqlite::types::Value| {
        args.push(value);
        sql.push_str(&cond.replace("?N", &format!("?{}", args.len())));
    };
    if let Some(org) = &filter.org {
        push(" AND org = ?N", org.clone().into());
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

/// One pass over roll-up or raw rows, interning names and clients.
#[derive(Default)]
struct Aggregate {
    total: u64,
    by_org: HashMap<String, u64>,
    /// category -> feed -> hits.
    by_category: HashMap<String, HashMap<String, u64>>,
    by_action: HashMap<String, u64>,
    names: HashMap<String, NameAgg>,
    /// org -> client -> totals.
    clients: HashMap<String, HashMap<String, ClientAgg>>,
    client_count: u32,
    /// (name index, client index) pairs seen, for distinct counts.
    pairs: HashSet<(u32, u32)>,
    timeline: BTreeMap<i64, u64>,
}

struct NameAgg {
    index: u32,
    category: String,
    hits: u64,
    first: i64,
    last: i64,
}

struct ClientAgg {
    index: u32,
    hits: u64,
    first: i64,
    last: i64,
}

impl Aggregate {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        org: &str,
        day: i64,
        matched: &str,
        client: &str,
        feed: &str,
        category: &str,
        action: &str,
        n: u64,
        first: i64,
        last: i64,
    ) {
        self.total += n;
        bump(&mut self.by_org, org, n);
        bump(&mut self.by_action, action, n);
        // Rows repeat their strings; look up by reference and allocate
        // only for a key seen for the first time.
        match self.by_category.get_mut(category) {
            Some(feeds) => bump(feeds, feed, n),
            None => {
                let feeds = HashMap::from([(feed.to_owned(), n)]);
                self.by_category.insert(category.to_owned(), feeds);
            }
        }
        *self.timeline.entry(day).or_default() += n;
        let name_index = match self.names.get_mut(matched) {
            Some(name) => {
                name.hits += n;
                name.first = name.first.min(first);
                name.last = name.last.max(last);
                name.index
            }
            None => {
                let index = self.names.len() as u32;
                let agg = NameAgg {
                    index,
                    category: category.to_owned(),
                    hits: n,
                    first,
                    last,
                };
                self.names.insert(matched.to_owned(), agg);
                index
            }
        };
        if !self.clients.contains_key(org) {
            self.clients.insert(org.to_owned(), HashMap::new());
        }
        let Some(org_clients) = self.clients.get_mut(org) else {
            return;
        };
        if !org_clients.contains_key(client) {
            let agg = ClientAgg {
                index: self.client_count,
                hits: 0,
                first,
                last,
            };
            self.client_count += 1;
            org_clients.insert(client.to_owned(), agg);
        }
        let Some(client) = org_clients.get_mut(client) else {
            return;
        };
        client.hits += n;
        client.first = client.first.min(first);
        client.last = client.last.max(last);
        self.pairs.insert((name_index, client.index));
    }

    fn finish(self, org: Option<String>, since: i64, until: i64, top: usize) -> Report {
        let mut clients_per_name: HashMap<u32, u64> = HashMap::new();
        let mut names_per_client: HashMap<u32, u64> = HashMap::new();
        for (n, c) in &self.pairs {
            *clients_per_name.entry(*n).or_default() += 1;
            *names_per_client.entry(*c).or_default() += 1;
        }
        let mut top_names: Vec<NameRow> = self
            .names
            .iter()
            .map(|(name, a)| NameRow {
                name: name.clone(),
                category: a.category.clone(),
                hits: a.hits,
                clients: clients_per_name.get(&a.index).copied().unwrap_or(0),
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect();
        top_names.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.name.cmp(&b.name)));
        top_names.truncate(top);
        let mut top_clients: Vec<ClientRow> = self
            .clients
            .iter()
            .flat_map(|(org, clients)| clients.iter().map(move |(client, a)| (org, client, a)))
            .map(|(org, client, a)| ClientRow {
                client: client.clone(),
                org: (!org.is_empty()).then(|| org.clone()),
                hits: a.hits,
                names: names_per_client.get(&a.index).copied().unwrap_or(0),
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect();
        top_clients.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.client.cmp(&b.client)));
        top_clients.truncate(top);
        let mut by_category: Vec<CategoryCount> = self
            .by_category
            .into_iter()
            .flat_map(|(category, feeds)| {
                feeds.into_iter().map(move |(feed, hits)| CategoryCount {
                    category: category.clone(),
                    feed,
                    hits,
                })
            })
            .collect();
        by_category.sort_by(|a, b| {
            b.hits
                .cmp(&a.hits)
                .then_with(|| (&a.category, &a.feed).cmp(&(&b.category, &b.feed)))
        });
        let by_org = if org.is_none() {
            sorted_counts(self.by_org, "(no organisation)")
        } else {
            Vec::new()
        };
        let first_day = since.div_euclid(DAY_MS);
        let last_day = (until - 1).div_euclid(DAY_MS);
        let timeline = (first_day..=last_day.max(first_day))
            .map(|d| DayCount {
                day: day_name(d),
                hits: self.timeline.get(&d).copied().unwrap_or(0),
            })
            .collect();
        Report {
            org,
            since,
            until,
            total: self.total,
            distinct_names: self.names.len() as u64,
            distinct_clients: u64::from(self.client_count),
            by_org,
            by_category,
            by_action: sorted_counts(self.by_action, ""),
            top_names,
            top_clients,
            timeline,
        }
    }
}

fn bump(map: &mut HashMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(c) => *c += n,
        None => {
            map.insert(key.to_owned(), n);
        }
    }
}

fn sorted_counts(map: HashMap<String, u64>, empty_key: &str) -> Vec<Count> {
    let mut v: Vec<Count> = map
        .into_iter()
        .map(|(key, hits)| Count {
            key: if key.is_empty() {
                empty_key.to_owned()
            } else {
                key
            },
            hits,
        })
        .collect();
    v.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.key.cmp(&b.key)));
    v
}

/// `YYYY-MM-DD` for a day number.
pub fn day_name(day: i64) -> String {
    super::format_ts(day * DAY_MS)[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(ts: i64, org: &str, client: &str, qname: &str, matched: &str) -> Hit {
        Hit {
            id: None,
            ts,
            org: Some(org.into()),
            client: client.parse().unwrap(),
            transport: Transport::Udp,
            qname: qname.into(),
            qtype: "A".into(),
            stage: Stage::Qname,
            matched: matched.into(),
            feed: "feed.txt".into(),
            category: "malware".into(),
            indicator: None,
            action: "nxdomain".into(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_writer(&dir.path().join("hits.sqlite"), None).unwrap();
        (dir, store)
    }

    #[test]
    fn pages_are_newest_first_and_filtered_by_org_domain_and_client() {
        let (_dir, mut s) = store();
        let mut batch = Vec::new();
        for i in 0..25 {
            batch.push(hit(
                1000 + i,
                "a",
                "10.0.0.1",
                "x.evil.example",
                "evil.example",
            ));
        }
        batch.push(hit(2000, "b", "10.0.0.2", "evil.example", "evil.example"));
        batch.push(hit(
            2001,
            "a",
            "10.0.0.3",
            "notevil.example",
            "notevil.example",
        ));
        s.insert(&batch).unwrap();
        let a = Filter {
            org: Some("a".into()),
            domain: Some("evil.example".into()),
            ..Filter::default()
        };
        let p1 = s.hits(&a, None, 10).unwrap();
        assert_eq!(p1.hits.len(), 10);
        assert_eq!(p1.hits[0].ts, 1024);
        let p2 = s
            .hits(&a, Cursor::parse(p1.next.as_deref().unwrap()), 10)
            .unwrap();
        let p3 = s
            .hits(&a, Cursor::parse(p2.next.as_deref().unwrap()), 10)
            .unwrap();
        assert_eq!(p3.hits.len(), 5);
        assert_eq!(p3.next, None);
        assert_eq!(p3.hits.last().unwrap().ts, 1000);
        // `notevil.example` is not below `evil.example`; org b is not a.
        let all: Vec<_> = [p1, p2, p3].into_iter().flat_map(|p| p.hits).collect();
        assert!(
            all.iter()
                .all(|h| h.org.as_deref() == Some("a") && h.matched == "evil.example")
        );
        let by_client = Filter {
            client: Some("10.0.0.3".parse().unwrap()),
            ..Filter::default()
        };
        assert_eq!(s.hits(&by_client, None, 10).unwrap().hits.len(), 1);
        let id = s.hits(&by_client, None, 1).unwrap().hits[0].id.unwrap();
        assert!(s.get(id, Some("a")).unwrap().is_some());
        assert!(
            s.get(id, Some("b")).unwrap().is_none(),
            "another org's record"
        );
    }

    #[test]
    fn a_report_from_the_rollup_equals_one_from_raw_rows() {
        let (_dir, mut s) = store();
        let day = DAY_MS;
        let mut batch = Vec::new();
        // Three days; two clients; the middle day entirely inside the range.
        for d in 0..3 {
            for i in 0..10 {
                let ts = d * day + 3_600_000 + i * 1000;
                batch.push(hit(ts, "a", "10.0.0.1", "c2.evil.example", "evil.example"));
                if i % 2 == 0 {
                    batch.push(hit(ts, "a", "10.0.0.2", "bad.example", "bad.example"));
                }
            }
        }
        batch.push(hit(day + 5, "b", "10.9.9.9", "bad.example", "bad.example"));
        // Two batches, so the roll-up's upsert path is used.
        let (x, y) = batch.split_at(17);
        s.insert(x).unwrap();
        s.insert(y).unwrap();
        let org_a = Filter {
            org: Some("a".into()),
            ..Filter::default()
        };
        // [00:30 day 0, 23:00 day 2): day 1 from the roll-up, the edges raw.
        let since = day / 48;
        let until = 2 * day + 23 * 3_600_000;
        let fast = s.report(&org_a, since, until, 10).unwrap();
        let exact = s
            .report(
                &Filter {
                    domain: Some("example".into()),
                    ..org_a.clone()
                },
                since,
                until,
                10,
            )
            .unwrap();
        assert_eq!(fast.total, 45);
        assert_eq!(fast, exact);
        assert_eq!(fast.top_names[0].name, "evil.example");
        assert_eq!(fast.top_names[0].hits, 30);
        assert_eq!(fast.top_names[0].clients, 1);
        assert_eq!(fast.top_clients[0].client, "10.0.0.1");
        assert_eq!(fast.top_clients[0].names, 1);
        assert_eq!(
            fast.timeline.iter().map(|d| d.hits).collect::<Vec<_>>(),
            [15, 15, 15]
        );
        assert_eq!(fast.timeline[0].day, "1970-01-01");
        assert!(fast.by_org.is_empty());
        let all = s.report(&Filter::default(), 0, 3 * day, 10).unwrap();
        assert_eq!(all.total, 46);
        assert_eq!(all.by_org[1].key, "b");
    }

    #[test]
    fn retention_deletes_old_records_and_rollup_days() {
        let (_dir, mut s) = store();
        s.insert(&[
            hit(10, "a", "10.0.0.1", "a.example", "a.example"),
            hit(2 * DAY_MS + 10, "a", "10.0.0.1", "a.example", "a.example"),
        ])
        .unwrap();
        assert_eq!(s.expire(DAY_MS).unwrap(), 1);
        assert_eq!(s.count().unwrap(), 1);
        let r = s.report(&Filter::default(), 0, 3 * DAY_MS, 5).unwrap();
        assert_eq!(r.total, 1);
    }

    #[test]
    fn a_capped_database_fails_like_a_full_disk_and_keeps_what_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hits.sqlite");
        let mut s = Store::open_writer(&path, Some(64 * 1024)).unwrap();
        let mut written = 0;
        let err = loop {
            let batch: Vec<Hit> = (0..100)
                .map(|i| {
                    hit(
                        i,
                        "a",
                        "10.0.0.1",
                        &format!("n{written}-{i}.example"),
                        "x.example",
                    )
                })
                .collect();
            match s.insert(&batch) {
                Ok(_) => written += 100,
                Err(e) => break e,
            }
            assert!(written < 100_000, "the cap never bit");
        };
        assert!(err.to_string().contains("full"), "{err}");
        drop(s);
        let r = Store::open_reader(&path).unwrap();
        assert_eq!(r.count().unwrap(), written);
    }

    #[test]
    fn a_missing_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open_reader(&dir.path().join("nope.sqlite"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("has the resolver run"), "{err}");
    }
}
