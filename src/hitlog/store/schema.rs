//! Opening the hit database: the connection's pragmas, the schema and its
//! versions, and bringing an older database up to the current one.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Store, StoreError};

/// 2: the roll-up runs behind the raw log (`rollup_state`). A version 1
/// database is brought up to 2 by the writer: its roll-up was kept in the
/// same transaction as its records, so all of them are rolled up.
/// 3: `hits_minutes` instead of the indexes on (org, ts) and ts; the
/// writer builds it from the records of an older database.
/// 4: `repeats` and `last_ts`, for records coalesced from a flood; an
/// older database's records each stand for one query.
///
/// 5: `node`, the resolver node that wrote the record; older records
/// have none (NULL).
/// 6: `hits_daily_sightings`, the roll-up the shared sightings are read
/// from; an older database's is built from the records it still holds.
/// 7: the records in `hit_rows`, their few-valued columns interned in
/// `hit_orgs` and `hit_labels`, and `hits` a view over them (see
/// [`HIT_TABLES`]); an older database's records are copied over once.
///
/// `forward_state` (what a fleet store has been sent) came without a new
/// version: older builds read and write the database as before and leave
/// it alone.
pub(super) const SCHEMA_VERSION: i64 = 7;

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

/// The records (version 7): `hit_rows` holds what differs from record
/// to record, and the columns that take few values (the organisation, and
/// the transport, query type, stage, feed, category, action and node
/// together) are numbers into `hit_orgs` and `hit_labels`. The view
/// `hits` puts them back together, so readers see one table as before.
/// Why: on a first pass over a threat list every record is a new row, and
/// the writer's cost is the row and the index entry; the narrower row
/// and an index on a number instead of text took the writer's insert
/// from 1.7-1.9 to 1.5-1.6 µs a record on a first pass, and the records'
/// table and index from 64 to 41 MiB per 400,000 (`cargo bench --bench
/// hitlog`; docs/performance.md).
const HIT_TABLES: &str = "
CREATE TABLE IF NOT EXISTS hit_orgs (
    id  INTEGER PRIMARY KEY,
    org TEXT NOT NULL UNIQUE      -- '' for a client in no organisation
);
CREATE TABLE IF NOT EXISTS hit_labels (
    id        INTEGER PRIMARY KEY,
    transport TEXT NOT NULL,
    qtype     TEXT NOT NULL,
    stage     TEXT NOT NULL,
    feed      TEXT NOT NULL,
    category  TEXT NOT NULL,
    action    TEXT NOT NULL,
    node      TEXT NOT NULL,      -- server.node_id of the writer, or ''
    UNIQUE (transport, qtype, stage, feed, category, action, node)
);
CREATE TABLE IF NOT EXISTS hit_rows (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,   -- ms since the Unix epoch, UTC
    org       INTEGER NOT NULL,   -- hit_orgs.id
    label     INTEGER NOT NULL,   -- hit_labels.id
    client    TEXT    NOT NULL,
    qname     TEXT    NOT NULL,
    matched   TEXT    NOT NULL,
    indicator TEXT,
    repeats   INTEGER NOT NULL DEFAULT 1, -- queries the record stands for
    last_ts   INTEGER                     -- a coalesced record's last query
);
CREATE INDEX IF NOT EXISTS hit_rows_org ON hit_rows (org);
";
/// `org_id` is there for the listing's filter: an organisation's records
/// are read through `hit_rows_org`, newest first.
const HITS_VIEW: &str = "
CREATE VIEW IF NOT EXISTS hits AS
    SELECT r.id AS id, r.ts AS ts, o.org AS org, r.client AS client,
        l.transport AS transport, r.qname AS qname, l.qtype AS qtype,
        l.stage AS stage, r.matched AS matched, l.feed AS feed,
        l.category AS category, r.indicator AS indicator, l.action AS action,
        r.repeats AS repeats, r.last_ts AS last_ts, nullif(l.node, '') AS node,
        r.org AS org_id
    FROM hit_rows r JOIN hit_orgs o ON o.id = r.org JOIN hit_labels l ON l.id = r.label;
";

/// Everything else: the minutes' id ranges, the roll-ups and the marks.
const SUPPORT: &str = "
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
-- One row per (UTC day, listed name, indicator, org): what a STIX sighting
-- counts. A rowid table, so that the indexes by time (TAXII pages by the
-- time a sighting last changed) hold a time and a rowid, not the whole
-- key: every hit of a name moves its row in both.
CREATE TABLE IF NOT EXISTS hits_daily_sightings (
    day       INTEGER NOT NULL,
    feed      TEXT    NOT NULL,
    matched   TEXT    NOT NULL,
    indicator TEXT    NOT NULL,   -- the STIX indicator id, or ''
    org       TEXT    NOT NULL,
    category  TEXT    NOT NULL,   -- the latest seen
    n         INTEGER NOT NULL,
    first_ts  INTEGER NOT NULL,
    last_ts   INTEGER NOT NULL
);
-- The indicator first, so one indicator's organisations are neighbours
-- (the anonymous view adds them up).
CREATE UNIQUE INDEX IF NOT EXISTS hits_daily_sightings_key
    ON hits_daily_sightings (day, feed, matched, indicator, org);
CREATE INDEX IF NOT EXISTS hits_daily_sightings_last ON hits_daily_sightings (last_ts);
CREATE INDEX IF NOT EXISTS hits_daily_sightings_org ON hits_daily_sightings (org, last_ts);
CREATE TABLE IF NOT EXISTS rollup_state (
    rolled_up INTEGER NOT NULL    -- id of the last record in the roll-ups
);
INSERT INTO rollup_state (rolled_up)
    SELECT (SELECT coalesce(max(id), 0) FROM hits) WHERE NOT EXISTS (SELECT 1 FROM rollup_state);
-- The sightings roll-up's own mark: it waits longer than the others for
-- a quiet moment (see the writer), and starts where they stood.
CREATE TABLE IF NOT EXISTS sightings_state (
    rolled_up INTEGER NOT NULL    -- id of the last record in hits_daily_sightings
);
INSERT INTO sightings_state (rolled_up)
    SELECT rolled_up FROM rollup_state WHERE NOT EXISTS (SELECT 1 FROM sightings_state);
CREATE TABLE IF NOT EXISTS forward_state (
    epoch     INTEGER NOT NULL,   -- random, drawn when the table is made
    forwarded INTEGER NOT NULL    -- id of the last record the fleet store has
);
INSERT INTO forward_state (epoch, forwarded)
    SELECT abs(random() % 9007199254740991), 0 WHERE NOT EXISTS (SELECT 1 FROM forward_state);
";

/// From version 1 or 2 to 3: the minutes of the records there are (read
/// in time order through the old index), then the old indexes go.
const UPGRADE_TO_3: &str = "
INSERT OR IGNORE INTO hits_minutes (minute, first_id, last_id)
    SELECT (ts - ((ts % 60000) + 60000) % 60000) / 60000, min(id), max(id) FROM hits GROUP BY 1;
DROP INDEX IF EXISTS hits_org_ts;
DROP INDEX IF EXISTS hits_ts;
DELETE FROM rollup_state WHERE rowid > (SELECT min(rowid) FROM rollup_state);
";

/// From version 1, 2 or 3 to 4. Adding a column with a constant default
/// does not rewrite the table.
const UPGRADE_TO_4: &str = "
ALTER TABLE hits ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
ALTER TABLE hits ADD COLUMN last_ts INTEGER;
";

/// From any older version to 5, the same way.
const UPGRADE_TO_5: &str = "
ALTER TABLE hits ADD COLUMN node TEXT;
";

/// From a `hits` table (version 6 and before) to version 7's interned
/// records: one pass that copies every record, in id order, so ids and
/// the marks that are ids stay as they were. The old table's pages go to
/// the file's free list and are used again by new records.
const UPGRADE_TO_7: &str = "
INSERT OR IGNORE INTO hit_orgs (org) SELECT DISTINCT org FROM hits;
INSERT OR IGNORE INTO hit_labels (transport, qtype, stage, feed, category, action, node)
    SELECT DISTINCT transport, qtype, stage, feed, category, action, coalesce(node, '') FROM hits;
INSERT INTO hit_rows (id, ts, org, label, client, qname, matched, indicator, repeats, last_ts)
    SELECT h.id, h.ts, o.id, l.id, h.client, h.qname, h.matched, h.indicator, h.repeats, h.last_ts
    FROM hits h JOIN hit_orgs o ON o.org = h.org
    JOIN hit_labels l ON l.transport = h.transport AND l.qtype = h.qtype AND l.stage = h.stage
        AND l.feed = h.feed AND l.category = h.category AND l.action = h.action
        AND l.node = coalesce(h.node, '')
    ORDER BY h.id;
DROP TABLE hits;
";

/// From any older version to 6: the sightings of the records already
/// rolled up (the ones after the mark, which `sightings_state` starts at,
/// are the next sightings roll-up's).
fn upgrade_to_6() -> String {
    format!(
        "INSERT OR IGNORE INTO hits_daily_sightings {} \
         AND id <= (SELECT rolled_up FROM rollup_state) {};",
        super::sightings::ROLLUP_SELECT,
        super::sightings::ROLLUP_GROUP
    )
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
            node: None,
            labels: Default::default(),
        };
        let found = store.check_version(true)?;
        if found != 0 && found < SCHEMA_VERSION {
            tracing::info!(database = %path.display(), from = found, to = SCHEMA_VERSION,
                "upgrading the hit log's schema (one pass over its records)");
        }
        // By the columns there, not the version alone: a test (or a
        // downgrade and upgrade again) may leave them behind.
        let has_column = |name: &str| -> Result<bool, StoreError> {
            store
                .conn
                .query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info('hits') WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .map_err(wrap)
        };
        // A `hits` table, not the view: its records move to `hit_rows`.
        let old_table: bool = found != 0
            && store
                .conn
                .query_row(
                    "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'hits'",
                    [],
                    |r| r.get(0),
                )
                .map_err(wrap)?;
        let to_3 = if (1..3).contains(&found) {
            UPGRADE_TO_3
        } else {
            ""
        };
        let to_4 = if old_table && !has_column("repeats")? {
            UPGRADE_TO_4
        } else {
            ""
        };
        let to_5 = if old_table && !has_column("node")? {
            UPGRADE_TO_5
        } else {
            ""
        };
        let to_6 = if (1..6).contains(&found) {
            upgrade_to_6()
        } else {
            String::new()
        };
        let upgrade = format!("{to_3} {to_4} {to_5} {to_6}");
        let schema = if old_table {
            format!("{SUPPORT} {upgrade} {HIT_TABLES} {UPGRADE_TO_7} {HITS_VIEW}")
        } else {
            format!("{HIT_TABLES} {HITS_VIEW} {SUPPORT} {upgrade}")
        };
        // One transaction: a failed upgrade leaves the old version whole.
        store
            .conn
            .execute_batch(&format!(
                "BEGIN; {schema} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(wrap)?;
        if let Some(max) = max_bytes {
            let pages = (max / page.max(512) as u64).max(1);
            if old_table {
                store.shrink_to(pages).map_err(wrap)?;
            }
            store
                .conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(wrap)?;
        }
        Ok(store)
    }

    /// After the upgrade to version 7: the old table's pages are free but
    /// still in the file, and SQLite keeps a cap no lower than the file,
    /// so a database that was near its cap would stay above it for good.
    /// Rewritten without them when it is over.
    fn shrink_to(&self, pages: u64) -> rusqlite::Result<()> {
        let count: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        if u64::try_from(count).unwrap_or(0) <= pages {
            return Ok(());
        }
        tracing::info!(database = %self.path.display(), pages = count, cap = pages,
            "the upgraded hit log is over its cap: rewriting it without the old records' pages");
        self.conn.execute_batch("VACUUM")
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
            node: None,
            labels: Default::default(),
        };
        store.version = store.check_version(false)?;
        Ok(store)
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
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod interned_tests;
