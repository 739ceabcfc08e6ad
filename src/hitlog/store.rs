//! The SQLite hit store: schema, batched writes, retention, and the
//! queries behind `portcullis logs`, `portcullis report` and the API.
//!
//! `hits` holds every record in arrival order (its id), indexed by org
//! (so by org and id). Time ranges are found through `hits_minutes`, which
//! holds for each minute the lowest and highest id of the records whose
//! time falls in it (a block range index, as PostgreSQL's BRIN): a range
//! of minutes gives a range of ids, and the time condition is checked on
//! the rows in it. Why not an index on the time: the writer inserts a row
//! into every index for every record, and an index on `ts`, and `ts` after
//! `org` in the other, cost it 2 µs of its 5.7 µs a record (`cargo bench
//! --bench hitlog`, first pass); `hits_minutes` costs it one row a minute.
//! Records arrive in time order to within a batch, so a minute's ids are a
//! narrow range; a clock that steps back widens some ranges but loses
//! nothing. Two roll-ups are built from `hits`: `hits_daily` has one row
//! per (UTC day, org, listed name, client) with a count and the first and
//! last time seen, and `hits_daily_feeds` one per (day, org, category,
//! feed, action) with a count.
//!
//! The roll-up runs behind the raw log, not in its transaction
//! ([`Store::roll_up`], from the writer when it is quiet, and at least
//! every minute): `rollup_state`
//! holds the id of the last record rolled up, and a report adds the raw
//! records after it to the roll-up rows it reads, in one read transaction,
//! so a report is exact whatever the roll-up's lag, and a crash loses
//! nothing (the next roll-up takes the records from where the last one
//! stopped). Why behind: on a first pass over a threat list every record
//! is a new name, so its roll-up row lands on a random page of the tree,
//! and upserting per batch rewrote thousands of pages to the WAL each
//! time; one roll-up of many batches, sorted by key, writes each page once.
//! Blocked queries repeat (a machine beacons to its C2 every few minutes),
//! so the roll-up is far smaller than the log, and a report reads it for
//! the whole days in its range and the raw rows only for the partial days
//! at either end. That is what keeps a report over ten million records
//! within a couple of seconds.
//!
//! The roll-up's key starts with the day: the writer's upserts all land in
//! today's part of the tree (which stays in the page cache), an
//! operator-wide report reads its days as one sequential range, and
//! retention deletes whole days from the front. An index on (org, day)
//! serves one organisation's report.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
// Reports hash a million short strings; FxHash is several times faster
// than SipHash and the keys come from our own database, not an attacker.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;

use super::{AsHitRef, Hit, Stage, Transport};

const DAY_MS: i64 = 86_400_000;
/// 2: the roll-up runs behind the raw log (`rollup_state`). A version 1
/// database is brought up to 2 by the writer: its roll-up was kept in the
/// same transaction as its records, so all of them are rolled up.
/// 3: `hits_minutes` instead of the indexes on (org, ts) and ts; the
/// writer builds it from the records of an older database.
const SCHEMA_VERSION: i64 = 3;
/// The granule of `hits_minutes`.
const MINUTE_MS: i64 = 60_000;
/// The page size of a new database (SQLite's default is 4 KiB). On the
/// writer's first-pass bench (`cargo bench --bench hitlog`: 400,000
/// records, each a new name; three alternating runs), 16 KiB pages took
/// the pass from 2.41-2.55 to 2.10-2.26 s: inserting 1.5-1.6 -> 1.4-1.5 µs
/// a record, rolling up 4.2-4.6 -> 3.6-3.9 µs. Fewer, fuller pages to
/// split and write to the WAL; 8 KiB and 64 KiB did less well, and the
/// reports ran as fast or faster. An existing database keeps the page size
/// it was made with.
const PAGE_SIZE: i64 = 16_384;
/// The WAL's size before SQLite checkpoints on its own, in bytes (the
/// pragma takes pages, so it is divided by the database's page size).
const WAL_BYTES: i64 = 64 << 20;

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
CREATE INDEX IF NOT EXISTS hits_org ON hits (org);
CREATE TABLE IF NOT EXISTS hits_minutes (
    minute   INTEGER PRIMARY KEY, -- ts div 60,000
    first_id INTEGER NOT NULL,    -- the lowest and highest id of the
    last_id  INTEGER NOT NULL     -- records whose time is in the minute
);
CREATE TABLE IF NOT EXISTS hits_daily (
    day      INTEGER NOT NULL,    -- days since the Unix epoch, UTC
    org      TEXT    NOT NULL,
    matched  TEXT    NOT NULL,
    client   TEXT    NOT NULL,
    category TEXT    NOT NULL,    -- the latest seen for the name
    n        INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts  INTEGER NOT NULL,
    PRIMARY KEY (day, org, matched, client)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hits_daily_org ON hits_daily (org, day);
CREATE TABLE IF NOT EXISTS hits_daily_feeds (
    day      INTEGER NOT NULL,
    org      TEXT    NOT NULL,
    category TEXT    NOT NULL,
    feed     TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (day, org, category, feed, action)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_state (
    rolled_up INTEGER NOT NULL    -- id of the last record in the roll-ups
);
INSERT INTO rollup_state (rolled_up)
    SELECT (SELECT coalesce(max(id), 0) FROM hits) WHERE NOT EXISTS (SELECT 1 FROM rollup_state);
";

/// From version 1 or 2 to 3: the minutes of the records there are (read
/// in time order through the old index), then the old indexes go. Run in
/// the same transaction as [`SCHEMA`], which builds `hits_org`.
const UPGRADE_TO_3: &str = "
INSERT OR IGNORE INTO hits_minutes (minute, first_id, last_id)
    SELECT (ts - ((ts % 60000) + 60000) % 60000) / 60000, min(id), max(id) FROM hits GROUP BY 1;
DROP INDEX IF EXISTS hits_org_ts;
DROP INDEX IF EXISTS hits_ts;
DELETE FROM rollup_state WHERE rowid > (SELECT min(rowid) FROM rollup_state);
";

/// The minute a record's time falls in, as `hits_minutes` keys it.
fn minute(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS)
}

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
    /// The schema version: 1 has no roll-up mark (see [`SCHEMA_VERSION`]).
    version: i64,
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
        // Only a new, empty database takes the page size; it must come
        // before WAL.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(wrap)?;
        // WAL: readers (reports, the API) never block the writer. NORMAL:
        // a committed transaction survives a crash of this process.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(wrap)?;
        // 64 MiB of page cache: the index pages the writer touches (today's
        // roll-up rows, the tail of each index) stay in memory.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(wrap)?;
        // The writer checkpoints once it has caught up in a quiet moment;
        // this is the backstop. SQLite's default, 1,000 pages, checkpointed
        // every 20,000-odd records, each time rewriting and syncing the
        // database file in the middle of a burst of blocked queries. The
        // WAL reaches about 64 MiB before a checkpoint (more while a long
        // report keeps it from starting over), and is cut back to 64 MiB
        // after one.
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(wrap)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BYTES / page.max(512))
            .map_err(wrap)?;
        conn.pragma_update(None, "journal_size_limit", WAL_BYTES)
            .map_err(wrap)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
        };
        let found = store.check_version(true)?;
        if found != 0 && found < SCHEMA_VERSION {
            tracing::info!(database = %path.display(), from = found, to = SCHEMA_VERSION,
                "upgrading the hit log's schema (one pass over its records)");
        }
        let upgrade = if found < 3 { UPGRADE_TO_3 } else { "" };
        // One transaction: a failed upgrade leaves the old version whole.
        store
            .conn
            .execute_batch(&format!(
                "BEGIN; {SCHEMA} {upgrade} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(wrap)?;
        if let Some(max) = max_bytes {
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
        // Reports scan large ranges: map the file instead of copying pages.
        let _ = conn.pragma_update(None, "mmap_size", 1i64 << 30);
        let _ = conn.pragma_update(None, "cache_size", -65_536);
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
        };
        store.version = store.check_version(false)?;
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

    /// The database's schema version, if this build can use it.
    fn check_version(&self, creating: bool) -> Result<i64, StoreError> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        // A reader takes version 1 as it is (all of it is rolled up), and
        // 2 without `hits_minutes` (it has the index on ts instead).
        if (1..=SCHEMA_VERSION).contains(&found) || (creating && found == 0) {
            Ok(found)
        } else {
            Err(StoreError::Version {
                path: self.path.clone(),
                found,
            })
        }
    }

    /// Write a batch in one transaction; returns the ids given, in order.
    /// The roll-ups catch up in [`Store::roll_up`].
    pub fn insert<H: AsHitRef>(&mut self, hits: &[H]) -> Result<Vec<i64>, StoreError> {
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
            let mut client = String::with_capacity(40);
            // The minutes of the batch, with their lowest and highest id:
            // one or two, unless the clock stepped.
            let mut minutes: Vec<(i64, i64, i64)> = Vec::new();
            for h in hits.iter().map(AsHitRef::as_hit_ref) {
                use std::fmt::Write as _;
                client.clear();
                let _ = write!(client, "{}", h.client);
                insert
                    .execute(params![
                        h.ts,
                        h.org.unwrap_or(""),
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
                let id = tx.last_insert_rowid();
                ids.push(id);
                let m = minute(h.ts);
                match minutes.iter_mut().find(|(k, _, _)| *k == m) {
                    // Ids only grow within the transaction.
                    Some((_, _, last)) => *last = id,
                    None => minutes.push((m, id, id)),
                }
            }
            let mut range = tx
                .prepare_cached(
                    "INSERT INTO hits_minutes (minute, first_id, last_id) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (minute) DO UPDATE SET first_id = min(first_id, excluded.first_id), \
                     last_id = max(last_id, excluded.last_id)",
                )
                .map_err(wrap)?;
            for (m, first, last) in minutes {
                range.execute([m, first, last]).map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(ids)
    }

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
    fn push_filter_and_ids(
        &self,
        sql: &mut String,
        args: &mut Vec<rusqlite::types::Value>,
        filter: &Filter,
        above: Option<i64>,
        below: Option<i64>,
    ) -> Result<(), StoreError> {
        push_filter(sql, args, filter);
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
    fn newest_ts(&self) -> Result<Option<i64>, StoreError> {
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
                "SELECT max(ts) FROM hits WHERE id BETWEEN ?1 AND ?2",
                [first, last],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Fold every record written since the last roll-up into the roll-ups.
    pub fn roll_up(&mut self) -> Result<u64, StoreError> {
        self.roll_up_at_most(u64::MAX)
    }

    /// Fold the records written since the last roll-up, at most `limit`
    /// of them (by id), into `hits_daily` and `hits_daily_feeds`, in one
    /// transaction that also moves the mark. Returns how many ids it
    /// took: fewer than `limit` means it has caught up. Sorting by the
    /// roll-up's key first means each page of the tree is written once.
    pub fn roll_up_at_most(&mut self, limit: u64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        let from: i64 = tx
            .query_row("SELECT rolled_up FROM rollup_state", [], |r| r.get(0))
            .map_err(wrap)?;
        let last: i64 = tx
            .query_row("SELECT coalesce(max(id), 0) FROM hits", [], |r| r.get(0))
            .map_err(wrap)?;
        let to = last.min(from.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)));
        if to <= from {
            return Ok(0);
        }
        // The category is the latest seen for the name: the one on the
        // group's newest record, carried through `max` behind its
        // zero-padded id. Joining the groups back to their newest record
        // made SQLite materialise them and sort them a second time: a
        // quarter slower for a burst of new names.
        tx.execute(
            &format!(
                "INSERT INTO hits_daily (day, org, matched, client, category, n, first_ts, last_ts) \
                 SELECT ts / {DAY_MS}, org, matched, client, \
                 substr(max(format('%020d', id) || category), 21), count(*), min(ts), max(ts) \
                 FROM hits WHERE id > ?1 AND id <= ?2 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
                 ON CONFLICT (day, org, matched, client) DO UPDATE SET \
                 category = excluded.category, n = n + excluded.n, \
                 first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)"
            ),
            [from, to],
        )
        .map_err(wrap)?;
        tx.execute(
            &format!(
                "INSERT INTO hits_daily_feeds (day, org, category, feed, action, n) \
                 SELECT ts / {DAY_MS}, org, category, feed, action, count(*) \
                 FROM hits WHERE id > ?1 AND id <= ?2 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 \
                 ON CONFLICT (day, org, category, feed, action) DO UPDATE SET n = n + excluded.n"
            ),
            [from, to],
        )
        .map_err(wrap)?;
        tx.execute("UPDATE rollup_state SET rolled_up = ?1", [to])
            .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok((to - from) as u64)
    }

    /// Copy the WAL into the database file as far as readers allow, so
    /// the next burst starts with an empty WAL and does not checkpoint.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    /// Delete records older than `cutoff` (ms), at most `limit` of them,
    /// in chunks of 10,000. Returns rows deleted; `limit` deleted means
    /// there may be more, and the caller comes back for them soon (the
    /// writer is not writing while it deletes).
    pub fn expire(&mut self, cutoff: i64, limit: u64) -> Result<u64, StoreError> {
        let mut total = 0u64;
        // The old records lie at or below the last id of the cutoff's
        // minute; a rowid scan from the start finds them first.
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(last_id) FROM hits_minutes WHERE minute <= ?1",
                [minute(cutoff.saturating_sub(1))],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let mut done = last.is_none();
        if let Some(last) = last {
            while total < limit {
                let n = self
                    .conn
                    .execute(
                        "DELETE FROM hits WHERE id IN \
                         (SELECT id FROM hits WHERE id <= ?2 AND ts < ?1 LIMIT 10000)",
                        [cutoff, last],
                    )
                    .map_err(|e| self.err(e))?;
                total += n as u64;
                done = n < 10_000;
                if done {
                    break;
                }
            }
        }
        // A minute's range goes once none of its records is left.
        if done {
            self.conn
                .execute(
                    "DELETE FROM hits_minutes WHERE minute < ?1",
                    [minute(cutoff)],
                )
                .map_err(|e| self.err(e))?;
        }
        // The roll-up keeps whole days: a day goes when all of it is old.
        for table in ["hits_daily", "hits_daily_feeds"] {
            self.conn
                .execute(
                    &format!("DELETE FROM {table} WHERE day < ?1"),
                    [cutoff.div_euclid(DAY_MS)],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(total)
    }

    /// The id of the last record in the roll-ups; `None` for a version 1
    /// database, which has no mark because all of it is rolled up.
    pub fn rolled_up(&self) -> Result<Option<i64>, StoreError> {
        if self.version < 2 {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT rolled_up FROM rollup_state", [], |r| r.get(0))
            .map(Some)
            .map_err(|e| self.err(e))
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

    /// The summary for `filter` over [since, until), with `top` rows in
    /// each ranking.
    pub fn report(
        &self,
        filter: &Filter,
        since: i64,
        until: i64,
        top: usize,
    ) -> Result<Report, StoreError> {
        let mut agg = Aggregate::new(since, until);
        let first_full = since.div_euclid(DAY_MS) + i64::from(since.rem_euclid(DAY_MS) != 0);
        // A range that ends after the newest record (a report up to now)
        // holds all of the last day's records: its roll-up rows are exact.
        let newest = self.newest_ts()?;
        let end_full = if newest.is_none_or(|n| n < until) {
            (until - 1).div_euclid(DAY_MS) + 1
        } else {
            until.div_euclid(DAY_MS)
        };
        // The roll-ups have no query name and no per-client feed counts:
        // a domain or client filter reads raw rows.
        let rollup_ok = filter.domain.is_none() && filter.client.is_none() && first_full < end_full;
        let raw_ranges: Vec<(i64, i64)> = if rollup_ok {
            vec![
                (since, first_full * DAY_MS),
                (end_full * DAY_MS, until.max(end_full * DAY_MS)),
            ]
        } else {
            vec![(since, until)]
        };
        if rollup_ok {
            // Two cores, two halves of the days: the second half on its own
            // read connection (WAL readers do not block each other), then
            // one merge. A report is a rare, interactive request; using
            // the machine for it is what makes it quick.
            let mid = first_full + (end_full - first_full) / 2;
            if mid > first_full {
                let path = self.path.clone();
                let second = std::thread::scope(|scope| {
                    let handle = scope.spawn(move || -> Result<Aggregate, StoreError> {
                        let other = Store::open_reader(&path)?;
                        let mut part = Aggregate::new(since, until);
                        other.rollup(filter, mid, end_full, &mut part)?;
                        Ok(part)
                    });
                    self.rollup(filter, first_full, mid, &mut agg)?;
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(StoreError::Missing(self.path.clone())))
                })?;
                agg.merge(second);
            } else {
                self.rollup(filter, first_full, end_full, &mut agg)?;
            }
        }
        for (from, to) in raw_ranges {
            if from < to {
                self.add_raw(
                    &Filter {
                        since: Some(from),
                        until: Some(to),
                        ..filter.clone()
                    },
                    0,
                    &mut agg,
                )?;
            }
        }
        Ok(agg.finish(filter.org.clone(), top))
    }

    /// Add the raw records matching `filter` with an id above `after` to
    /// `agg`.
    fn add_raw(&self, filter: &Filter, after: i64, agg: &mut Aggregate) -> Result<(), StoreError> {
        // Records after a mark are the newest, a range of ids: read them
        // by id, not through an index (in version 2, on (org, ts) or ts)
        // that would walk the whole range of days the filter names.
        let table = if after > 0 {
            "hits NOT INDEXED"
        } else {
            "hits"
        };
        let mut sql = format!(
            "SELECT org, ts, matched, client, category, feed, action FROM {table} WHERE 1 = 1"
        );
        let mut args = Vec::new();
        self.push_filter_and_ids(&mut sql, &mut args, filter, Some(after), None)?;
        self.scan(&sql, args, |row| {
            let ts: i64 = row.get(1)?;
            let category = row.get_ref(4)?.as_str()?;
            agg.add_pair(
                row.get_ref(0)?.as_str()?,
                ts.div_euclid(DAY_MS),
                row.get_ref(2)?.as_str()?,
                row.get_ref(3)?.as_str()?,
                category,
                1,
                ts,
                ts,
            );
            agg.add_feed(
                category,
                row.get_ref(5)?.as_str()?,
                row.get_ref(6)?.as_str()?,
                1,
            );
            Ok(())
        })
    }

    /// Add days [from, to) to `agg`: their roll-up rows, and the records
    /// the roll-up has not taken yet, read in one transaction so that the
    /// writer's roll-up cannot move between the two.
    fn rollup(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        agg: &mut Aggregate,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let rolled_up = self.rolled_up()?;
        let days = Filter {
            since: None,
            until: None,
            ..filter.clone()
        };
        let mut sql = String::from(
            "SELECT org, day, matched, client, category, n, first_ts, last_ts \
             FROM hits_daily WHERE day >= ?1 AND day < ?2",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![from.into(), to.into()];
        push_filter(&mut sql, &mut args, &days);
        self.scan(&sql, args, |row| {
            agg.add_pair(
                row.get_ref(0)?.as_str()?,
                row.get(1)?,
                row.get_ref(2)?.as_str()?,
                row.get_ref(3)?.as_str()?,
                row.get_ref(4)?.as_str()?,
                row.get::<_, i64>(5)? as u64,
                row.get(6)?,
                row.get(7)?,
            );
            Ok(())
        })?;
        let mut sql = String::from(
            "SELECT category, feed, action, n FROM hits_daily_feeds WHERE day >= ?1 AND day < ?2",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![from.into(), to.into()];
        push_filter(&mut sql, &mut args, &days);
        self.scan(&sql, args, |row| {
            agg.add_feed(
                row.get_ref(0)?.as_str()?,
                row.get_ref(1)?.as_str()?,
                row.get_ref(2)?.as_str()?,
                row.get::<_, i64>(3)? as u64,
            );
            Ok(())
        })?;
        if let Some(rolled_up) = rolled_up {
            let tail = Filter {
                since: Some(from * DAY_MS),
                until: Some(to * DAY_MS),
                ..filter.clone()
            };
            self.add_raw(&tail, rolled_up, agg)?;
        }
        tx.finish().map_err(|e| self.err(e))
    }

    /// Run `sql` and hand each row to `f`.
    fn scan(
        &self,
        sql: &str,
        args: Vec<rusqlite::types::Value>,
        mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            f(row).map_err(|e| self.err(e))?;
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
struct Aggregate {
    since: i64,
    until: i64,
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
    timeline: HashMap<i64, u64>,
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
    fn new(since: i64, until: i64) -> Aggregate {
        Aggregate {
            since,
            until,
            total: 0,
            by_org: HashMap::default(),
            by_category: HashMap::default(),
            by_action: HashMap::default(),
            names: HashMap::default(),
            clients: HashMap::default(),
            client_count: 0,
            pairs: HashSet::default(),
            timeline: HashMap::default(),
        }
    }

    /// Hits of one listed name by one client on one day.
    #[allow(clippy::too_many_arguments)]
    fn add_pair(
        &mut self,
        org: &str,
        day: i64,
        matched: &str,
        client: &str,
        category: &str,
        n: u64,
        first: i64,
        last: i64,
    ) {
        self.total += n;
        // Rows repeat their strings; look up by reference and allocate
        // only for a key seen for the first time.
        bump(&mut self.by_org, org, n);
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
            self.clients.insert(org.to_owned(), HashMap::default());
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

    /// Hits by category, feed and action.
    fn add_feed(&mut self, category: &str, feed: &str, action: &str, n: u64) {
        bump(&mut self.by_action, action, n);
        match self.by_category.get_mut(category) {
            Some(feeds) => bump(feeds, feed, n),
            None => {
                let mut feeds = HashMap::default();
                feeds.insert(feed.to_owned(), n);
                self.by_category.insert(category.to_owned(), feeds);
            }
        }
    }

    /// Fold in an aggregate of other rows (the other half of the days).
    fn merge(&mut self, other: Aggregate) {
        self.total += other.total;
        for (k, n) in other.by_org {
            *self.by_org.entry(k).or_default() += n;
        }
        for (k, n) in other.by_action {
            *self.by_action.entry(k).or_default() += n;
        }
        for (category, feeds) in other.by_category {
            let mine = self.by_category.entry(category).or_default();
            for (feed, n) in feeds {
                *mine.entry(feed).or_default() += n;
            }
        }
        for (day, n) in other.timeline {
            *self.timeline.entry(day).or_default() += n;
        }
        // Their name and client indices, renumbered into ours.
        let mut name_map: HashMap<u32, u32> = HashMap::default();
        for (name, theirs) in other.names {
            let next = self.names.len() as u32;
            let mine = self.names.entry(name).or_insert_with(|| NameAgg {
                index: next,
                category: theirs.category.clone(),
                hits: 0,
                first: theirs.first,
                last: theirs.last,
            });
            mine.hits += theirs.hits;
            mine.first = mine.first.min(theirs.first);
            mine.last = mine.last.max(theirs.last);
            name_map.insert(theirs.index, mine.index);
        }
        let mut client_map: HashMap<u32, u32> = HashMap::default();
        for (org, clients) in other.clients {
            let mine_org = self.clients.entry(org).or_default();
            for (client, theirs) in clients {
                let next = self.client_count;
                let mine = mine_org.entry(client).or_insert_with(|| ClientAgg {
                    index: next,
                    hits: 0,
                    first: theirs.first,
                    last: theirs.last,
                });
                if mine.index == next {
                    self.client_count += 1;
                }
                mine.hits += theirs.hits;
                mine.first = mine.first.min(theirs.first);
                mine.last = mine.last.max(theirs.last);
                client_map.insert(theirs.index, mine.index);
            }
        }
        for (n, c) in other.pairs {
            if let (Some(n), Some(c)) = (name_map.get(&n), client_map.get(&c)) {
                self.pairs.insert((*n, *c));
            }
        }
    }

    fn finish(self, org: Option<String>, top: usize) -> Report {
        let mut clients_per_name: HashMap<u32, u64> = HashMap::default();
        let mut names_per_client: HashMap<u32, u64> = HashMap::default();
        for (n, c) in &self.pairs {
            *clients_per_name.entry(*n).or_default() += 1;
            *names_per_client.entry(*c).or_default() += 1;
        }
        // Rank by reference; build rows for the top ones only.
        let mut names: Vec<(&String, &NameAgg)> = self.names.iter().collect();
        let by_hits = |a: &(&String, &NameAgg), b: &(&String, &NameAgg)| {
            b.1.hits.cmp(&a.1.hits).then_with(|| a.0.cmp(b.0))
        };
        if names.len() > top {
            names.select_nth_unstable_by(top, by_hits);
            names.truncate(top);
        }
        names.sort_by(by_hits);
        let top_names = names
            .into_iter()
            .map(|(name, a)| NameRow {
                name: name.clone(),
                category: a.category.clone(),
                hits: a.hits,
                clients: clients_per_name.get(&a.index).copied().unwrap_or(0),
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect();
        let mut clients: Vec<(&String, &String, &ClientAgg)> = self
            .clients
            .iter()
            .flat_map(|(org, cs)| cs.iter().map(move |(c, a)| (org, c, a)))
            .collect();
        let by_hits = |a: &(&String, &String, &ClientAgg), b: &(&String, &String, &ClientAgg)| {
            b.2.hits.cmp(&a.2.hits).then_with(|| a.1.cmp(b.1))
        };
        if clients.len() > top {
            clients.select_nth_unstable_by(top, by_hits);
            clients.truncate(top);
        }
        clients.sort_by(by_hits);
        let top_clients = clients
            .into_iter()
            .map(|(org, client, a)| ClientRow {
                client: client.clone(),
                org: (!org.is_empty()).then(|| org.clone()),
                hits: a.hits,
                names: names_per_client.get(&a.index).copied().unwrap_or(0),
                first_seen: a.first,
                last_seen: a.last,
            })
            .collect();
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
        let first_day = self.since.div_euclid(DAY_MS);
        let last_day = (self.until - 1).div_euclid(DAY_MS);
        let timeline = (first_day..=last_day.max(first_day))
            .map(|d| DayCount {
                day: day_name(d),
                hits: self.timeline.get(&d).copied().unwrap_or(0),
            })
            .collect();
        Report {
            org,
            since: self.since,
            until: self.until,
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

/// The default report range's start: midnight (UTC) `days - 1` days ago,
/// so "the last 30 days" is 29 whole days and today. Whole days are what
/// the roll-up holds, so such a report never reads raw rows.
pub fn whole_days_since(now: i64, days: i64) -> i64 {
    (now.div_euclid(DAY_MS) - (days - 1)) * DAY_MS
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

    fn pragma(store: &Store, name: &str) -> i64 {
        store
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_16_kib_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let new = Store::open_writer(&dir.path().join("new.sqlite"), Some(64 << 20)).unwrap();
        assert_eq!(pragma(&new, "page_size"), PAGE_SIZE);
        assert_eq!(pragma(&new, "wal_autocheckpoint") * PAGE_SIZE, WAL_BYTES);
        assert_eq!(pragma(&new, "max_page_count"), (64 << 20) / PAGE_SIZE);
        // A database made by an earlier version, with SQLite's default
        // 4 KiB pages, and holding a record.
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "page_size", 4096).unwrap();
            conn.execute_batch(&format!("{SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"))
                .unwrap();
        }
        let mut old = Store::open_writer(&path, Some(64 << 20)).unwrap();
        old.insert(&[hit(1_000, "a", "10.0.0.1", "x.bad.example", "bad.example")])
            .unwrap();
        assert_eq!(pragma(&old, "page_size"), 4096);
        assert_eq!(pragma(&old, "wal_autocheckpoint") * 4096, WAL_BYTES);
        assert_eq!(pragma(&old, "max_page_count"), (64 << 20) / 4096);
        assert_eq!(old.count().unwrap(), 1);
    }

    /// Both roll-up tables, every row, in key order.
    fn rollup_rows(store: &Store) -> Vec<String> {
        let mut rows = Vec::new();
        for sql in [
            "SELECT day, org, matched, client, category, n, first_ts, last_ts FROM hits_daily ORDER BY 1, 2, 3, 4",
            "SELECT day, org, category, feed, action, n FROM hits_daily_feeds ORDER BY 1, 2, 3, 4, 5",
        ] {
            let mut stmt = store.conn.prepare(sql).unwrap();
            let mut q = stmt.query([]).unwrap();
            while let Some(row) = q.next().unwrap() {
                let cells: Vec<String> = (0..row.as_ref().column_count())
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                rows.push(cells.join("|"));
            }
        }
        rows
    }

    #[test]
    fn a_rollup_in_chunks_equals_one_in_a_single_pass() {
        // Repeats across chunk boundaries, a category that changes, two
        // days, organisations and feeds that vary.
        let mut records = Vec::new();
        for i in 0..500i64 {
            let mut h = hit(
                DAY_MS * 20_000 + i * 300_000,
                ["a", "b"][(i % 2) as usize],
                ["10.0.0.1", "2001:db8::7"][(i % 3 % 2) as usize],
                "q.example",
                &format!("name{}.example", i % 13),
            );
            h.category = ["malware", "phishing"][(i / 7 % 2) as usize].into();
            h.feed = ["one.txt", "two.rpz"][(i / 5 % 2) as usize].into();
            records.push(h);
        }
        let (_d1, mut chunked) = store();
        let (_d2, mut whole) = store();
        chunked.insert(&records).unwrap();
        whole.insert(&records).unwrap();
        let mut taken = Vec::new();
        loop {
            let n = chunked.roll_up_at_most(37).unwrap();
            taken.push(n);
            if n < 37 {
                break;
            }
        }
        assert_eq!(taken.iter().sum::<u64>(), 500);
        assert_eq!(taken.len(), 14, "{taken:?}");
        assert_eq!(whole.roll_up().unwrap(), 500);
        let rows = rollup_rows(&whole);
        assert!(rows.len() > 50, "{} rows", rows.len());
        assert_eq!(rollup_rows(&chunked), rows);
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
        let org_a = Filter {
            org: Some("a".into()),
            ..Filter::default()
        };
        // [00:30 day 0, 23:00 day 2): day 1 from the roll-up, the edges raw.
        let since = day / 48;
        let until = 2 * day + 23 * 3_600_000;
        let exact = |s: &Store| {
            s.report(
                &Filter {
                    domain: Some("example".into()),
                    ..org_a.clone()
                },
                since,
                until,
                10,
            )
            .unwrap()
        };
        // Two batches with a roll-up between, so its upsert path is used;
        // a report is exact with nothing, part and all of it rolled up.
        let (x, y) = batch.split_at(17);
        s.insert(x).unwrap();
        assert_eq!(s.report(&org_a, since, until, 10).unwrap(), exact(&s));
        assert_eq!(s.roll_up().unwrap(), 17);
        s.insert(y).unwrap();
        assert_eq!(s.report(&org_a, since, until, 10).unwrap(), exact(&s));
        assert_eq!(s.roll_up().unwrap(), 29);
        assert_eq!(s.roll_up().unwrap(), 0, "nothing new");
        let fast = s.report(&org_a, since, until, 10).unwrap();
        assert_eq!(fast.total, 45);
        assert_eq!(fast, exact(&s));
        let rolled: i64 = s
            .conn
            .query_row(
                "SELECT sum(n) FROM hits_daily WHERE day = 1 AND org = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rolled, 15, "day 1 is in the roll-up once");
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
    fn the_newest_record_names_the_category_past_a_power_of_ten() {
        let (_dir, mut s) = store();
        // Ids 1 to 10 in one roll-up: 10 must count as newer than 9.
        let batch: Vec<Hit> = (1..=10)
            .map(|i| {
                let mut h = hit(i, "a", "10.0.0.1", "x.evil.example", "evil.example");
                h.category = if i == 10 { "c2" } else { "phishing" }.into();
                h
            })
            .collect();
        s.insert(&batch).unwrap();
        s.roll_up().unwrap();
        let row: (String, i64) = s
            .conn
            .query_row("SELECT category, n FROM hits_daily", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(row, ("c2".into(), 10));
    }

    #[test]
    fn the_rollup_keeps_the_latest_category_and_the_first_and_last_time() {
        let (_dir, mut s) = store();
        let mut first = hit(100, "a", "10.0.0.1", "x.evil.example", "evil.example");
        first.category = "phishing".into();
        let second = hit(50, "a", "10.0.0.1", "x.evil.example", "evil.example");
        s.insert(&[first, second]).unwrap();
        s.roll_up().unwrap();
        let category = |s: &Store| -> String {
            s.conn
                .query_row("SELECT category FROM hits_daily", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            category(&s),
            "malware",
            "the newest record's, not the latest time's"
        );
        let mut third = hit(70, "a", "10.0.0.1", "y.evil.example", "evil.example");
        third.category = "c2".into();
        s.insert(&[third]).unwrap();
        s.roll_up().unwrap();
        let row: (String, i64, i64, i64) = s
            .conn
            .query_row(
                "SELECT category, n, first_ts, last_ts FROM hits_daily",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, ("c2".into(), 3, 50, 100));
        let feeds: i64 = s
            .conn
            .query_row("SELECT sum(n) FROM hits_daily_feeds", [], |r| r.get(0))
            .unwrap();
        assert_eq!(feeds, 3);
    }

    #[test]
    fn a_version_1_database_is_taken_as_rolled_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hits.sqlite");
        {
            // Version 1: no mark; its roll-up was written with its records.
            let mut s = Store::open_writer(&path, None).unwrap();
            s.insert(&[hit(10, "a", "10.0.0.1", "x.evil.example", "evil.example")])
                .unwrap();
            s.roll_up().unwrap();
            s.conn
                .execute_batch("DROP TABLE rollup_state; PRAGMA user_version = 1;")
                .unwrap();
        }
        let whole_day = |s: &Store| s.report(&Filter::default(), 0, DAY_MS, 5).unwrap().total;
        assert_eq!(whole_day(&Store::open_reader(&path).unwrap()), 1);
        let mut s = Store::open_writer(&path, None).unwrap();
        assert_eq!(s.roll_up().unwrap(), 0, "the mark starts after its records");
        assert_eq!(whole_day(&s), 1, "not counted twice");
        s.insert(&[hit(20, "a", "10.0.0.1", "x.evil.example", "evil.example")])
            .unwrap();
        assert_eq!(whole_day(&s), 2);
        assert_eq!(s.roll_up().unwrap(), 1);
        assert_eq!(whole_day(&Store::open_reader(&path).unwrap()), 2);
    }

    /// Every record in [since, until) by paging through `hits`, as
    /// (id, ts), newest first.
    fn listed(s: &Store, org: Option<&str>, since: i64, until: i64) -> Vec<(i64, i64)> {
        let filter = Filter {
            org: org.map(str::to_owned),
            since: Some(since),
            until: Some(until),
            ..Filter::default()
        };
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = s.hits(&filter, after, 7).unwrap();
            out.extend(page.hits.iter().map(|h| (h.id.unwrap(), h.ts)));
            match page.next.as_deref().and_then(Cursor::parse) {
                Some(c) => after = Some(c),
                None => return out,
            }
        }
    }

    #[test]
    fn time_ranges_are_found_through_the_minutes_even_after_the_clock_steps_back() {
        let (_dir, mut s) = store();
        let t0 = 20 * DAY_MS;
        // Three minutes of records, then the clock steps back an hour for
        // a while (a VM resumed, NTP corrected it), then forward again.
        let mut all: Vec<Hit> = (0..180)
            .map(|i| {
                hit(
                    t0 + i * 1000,
                    if i % 2 == 0 { "a" } else { "b" },
                    "10.0.0.1",
                    "x.example",
                    "x.example",
                )
            })
            .collect();
        all.extend((0..50).map(|i| {
            hit(
                t0 - 3_600_000 + i * 10,
                "a",
                "10.0.0.2",
                "y.example",
                "y.example",
            )
        }));
        all.extend(
            (0..30).map(|i| hit(t0 + 200_000 + i, "a", "10.0.0.3", "z.example", "z.example")),
        );
        for batch in all.chunks(40) {
            s.insert(batch).unwrap();
        }
        let ids: Vec<i64> = (1..=all.len() as i64).collect();
        let expect = |org: Option<&str>, since: i64, until: i64| -> Vec<(i64, i64)> {
            let mut v: Vec<(i64, i64)> = all
                .iter()
                .zip(&ids)
                .filter(|(h, _)| h.ts >= since && h.ts < until)
                .filter(|(h, _)| org.is_none() || h.org.as_deref() == org)
                .map(|(h, &id)| (id, h.ts))
                .collect();
            v.reverse();
            v
        };
        let ranges = [
            (t0, t0 + 60_000),
            (t0 + 59_999, t0 + 61_001),
            (t0 - 3_600_000, t0 - 3_599_700),
            (t0 - 3_600_000 + 5, t0 + 1),
            (t0 + 150_000, t0 + 300_000),
            (0, 40 * DAY_MS),
            (t0 + 400_000, t0 + 500_000),
        ];
        for (since, until) in ranges {
            for org in [None, Some("a"), Some("b")] {
                assert_eq!(
                    listed(&s, org, since, until),
                    expect(org, since, until),
                    "{org:?} {since}..{until}"
                );
            }
            let report = s.report(&Filter::default(), since, until, 5).unwrap();
            assert_eq!(
                report.total,
                expect(None, since, until).len() as u64,
                "report {since}..{until}"
            );
        }
        assert_eq!(s.newest_ts().unwrap(), Some(t0 + 200_029));
        // Retention takes the hour before the step, and only it.
        assert_eq!(s.expire(t0 - 1_800_000, 100_000).unwrap(), 50);
        let left: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM hits_minutes WHERE minute < ?1",
                [minute(t0 - 1_800_000)],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the expired minutes' ranges go with them");
        assert_eq!(listed(&s, None, 0, 40 * DAY_MS).len(), 210);
    }

    #[test]
    fn a_version_2_database_is_read_as_it_is_and_upgraded_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hits.sqlite");
        let t0 = 20 * DAY_MS;
        {
            // Version 2: indexes on (org, ts) and ts, no minutes.
            let mut s = Store::open_writer(&path, None).unwrap();
            let batch: Vec<Hit> = (0..300)
                .map(|i| hit(t0 + i * 1000, "a", "10.0.0.1", "x.example", "x.example"))
                .collect();
            s.insert(&batch).unwrap();
            s.conn
                .execute_batch(
                    "DROP TABLE hits_minutes; DROP INDEX hits_org; \
                     CREATE INDEX hits_org_ts ON hits (org, ts); CREATE INDEX hits_ts ON hits (ts); \
                     PRAGMA user_version = 2;",
                )
                .unwrap();
            s.roll_up().unwrap();
            // Version 2's writer added a stray mark of 0 on every start.
            s.conn
                .execute_batch(
                    "INSERT INTO rollup_state VALUES (0); INSERT INTO rollup_state VALUES (0);",
                )
                .unwrap();
        }
        let (since, until) = (t0 + 30_500, t0 + 150_000);
        let old = Store::open_reader(&path).unwrap();
        assert_eq!(old.version, 2);
        let before = listed(&old, Some("a"), since, until);
        assert_eq!(before.len(), 119, "seconds 31 to 149");
        assert_eq!(old.newest_ts().unwrap(), Some(t0 + 299_000));
        drop(old);
        let s = Store::open_writer(&path, None).unwrap();
        let version: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
        let indexes: Vec<String> = s
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hits' ORDER BY 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["hits_org"]);
        let minutes: i64 = s
            .conn
            .query_row("SELECT count(*) FROM hits_minutes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(minutes, 5, "300 s of records");
        drop(s);
        let s = Store::open_writer(&path, None).unwrap();
        let marks: Vec<i64> = s
            .conn
            .prepare("SELECT rolled_up FROM rollup_state")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, [300], "one mark, the real one, after two starts");
        assert_eq!(listed(&s, Some("a"), since, until), before);
        assert_eq!(listed(&s, None, since, until), before);
        assert_eq!(s.newest_ts().unwrap(), Some(t0 + 299_000));
    }

    #[test]
    fn page_cursors_are_ids_and_old_ones_still_parse() {
        assert_eq!(Cursor::parse("42"), Some(Cursor { id: 42 }));
        assert_eq!(Cursor::parse("1795000000123-42"), Some(Cursor { id: 42 }));
        assert_eq!(Cursor { id: 42 }.to_string(), "42");
        assert_eq!(Cursor::parse("forty-two"), None);
        assert_eq!(Cursor::parse(""), None);
    }

    #[test]
    fn retention_deletes_old_records_and_rollup_days() {
        let (_dir, mut s) = store();
        s.insert(&[
            hit(10, "a", "10.0.0.1", "a.example", "a.example"),
            hit(2 * DAY_MS + 10, "a", "10.0.0.1", "a.example", "a.example"),
        ])
        .unwrap();
        assert_eq!(s.expire(DAY_MS, 100).unwrap(), 1);
        // A backlog goes a bounded amount at a time.
        let old: Vec<Hit> = (0..12_000)
            .map(|i| hit(i, "a", "10.0.0.1", "a.example", "a.example"))
            .collect();
        s.insert(&old).unwrap();
        assert_eq!(s.expire(DAY_MS, 5).unwrap(), 10_000, "one chunk");
        assert_eq!(s.expire(DAY_MS, 50_000).unwrap(), 2_000, "the rest");
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
