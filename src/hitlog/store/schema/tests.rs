//! Opening, versions and upgrades, against real database files.
use super::*;
use crate::clock::DAY_MS;
use crate::hitlog::Hit;
use crate::hitlog::store::Filter;
use crate::hitlog::store::test_support::{hit, listed};

/// The records' table up to version 6, as those versions made it.
pub(super) const V6_HITS: &str = "
CREATE TABLE hits (
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
    action    TEXT    NOT NULL,
    repeats   INTEGER NOT NULL DEFAULT 1, -- queries the record stands for
    last_ts   INTEGER,                    -- a coalesced record's last query
    node      TEXT                        -- server.node_id of the writer
);
CREATE INDEX hits_org ON hits (org);
";

/// Turn a database the writer made into the shape version 6 left: the
/// records back in one `hits` table, no interned columns.
pub(super) fn downgrade_to_6(conn: &Connection) {
    conn.execute_batch(&format!(
        "CREATE TABLE v7 AS SELECT * FROM hits; DROP VIEW hits; {V6_HITS} \
         INSERT INTO hits SELECT id, ts, org, client, transport, qname, qtype, stage, matched, \
         feed, category, indicator, action, repeats, last_ts, node FROM v7 ORDER BY id; \
         DROP TABLE v7; DROP TABLE hit_rows; DROP TABLE hit_orgs; DROP TABLE hit_labels; \
         PRAGMA user_version = 6;"
    ))
    .unwrap();
}

pub(super) fn pragma(store: &Store, name: &str) -> i64 {
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
        conn.execute_batch(&format!("{V6_HITS} {SUPPORT} PRAGMA user_version = 6;"))
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
        downgrade_to_6(&s.conn);
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
        s.roll_up().unwrap();
        downgrade_to_6(&s.conn);
        s.conn
            .execute_batch(
                "DROP TABLE hits_minutes; DROP INDEX hits_org; \
                 CREATE INDEX hits_org_ts ON hits (org, ts); CREATE INDEX hits_ts ON hits (ts); \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
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
    assert_eq!(version, SCHEMA_VERSION);
    let indexes: Vec<String> = s
        .conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('hits', 'hit_rows') ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["hit_rows_org"]);
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
fn a_version_3_database_is_read_as_it_is_and_gains_repeats_from_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hits.sqlite");
    let t0 = 30 * DAY_MS;
    {
        // Version 3's table: no repeats, no last_ts, no node.
        let v3 = V6_HITS.replace(
            "action    TEXT    NOT NULL,\n    repeats   INTEGER NOT NULL DEFAULT 1, -- queries the record stands for\n    last_ts   INTEGER,                    -- a coalesced record's last query\n    node      TEXT                        -- server.node_id of the writer",
            "action    TEXT    NOT NULL",
        );
        assert_ne!(v3, V6_HITS);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{v3} {SUPPORT} PRAGMA user_version = 3;"))
            .unwrap();
        conn.execute(
            "INSERT INTO hits (ts, org, client, transport, qname, qtype, stage, matched, feed, category, action) \
             VALUES (?1, 'a', '10.0.0.1', 'udp', 'x.evil.example', 'A', 'qname', 'evil.example', 'f', 'malware', 'nxdomain')",
            [t0],
        )
        .unwrap();
        conn.execute("INSERT INTO hits_minutes VALUES (?1, 1, 1)", [t0 / 60_000])
            .unwrap();
    }
    let old = Store::open_reader(&path).unwrap();
    assert_eq!(old.version, 3);
    let report = old.report(&Filter::default(), t0, t0 + 1, 5).unwrap();
    assert_eq!(report.total, 1);
    let page = old.hits(&Filter::default(), None, 10).unwrap();
    assert_eq!((page.hits[0].repeats, page.hits[0].last_ts), (1, None));
    drop(old);
    let mut s = Store::open_writer(&path, None).unwrap();
    assert_eq!(s.version, SCHEMA_VERSION);
    let mut flood = hit(t0 + 10, "a", "10.0.0.1", "y.evil.example", "evil.example");
    flood.repeats = 500;
    flood.last_ts = Some(t0 + 59_000);
    s.insert(&[flood]).unwrap();
    s.roll_up().unwrap();
    // Twice: read as written, then as a fresh reader sees the file.
    for s in [&s, &Store::open_reader(&path).unwrap()] {
        let page = s.hits(&Filter::default(), None, 10).unwrap();
        let got: Vec<_> = page.hits.iter().map(|h| (h.repeats, h.last_ts)).collect();
        assert_eq!(got, [(500, Some(t0 + 59_000)), (1, None)]);
        // The whole day from the roll-up, and a part of it from the
        // raw records: both count the queries, not the records.
        assert_eq!(
            s.report(&Filter::default(), 0, DAY_MS * 40, 5)
                .unwrap()
                .total,
            501
        );
        assert_eq!(
            s.report(&Filter::default(), t0, t0 + 60_000, 5)
                .unwrap()
                .total,
            501
        );
    }
    let (n, last): (i64, i64) = s
        .conn
        .query_row("SELECT n, last_ts FROM hits_daily", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, last), (501, t0 + 59_000));
    let feeds: i64 = s
        .conn
        .query_row("SELECT sum(n) FROM hits_daily_feeds", [], |r| r.get(0))
        .unwrap();
    assert_eq!(feeds, 501);
}

#[test]
fn a_version_4_database_is_read_without_nodes_and_gains_them_from_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hits.sqlite");
    {
        let v4 = V6_HITS.replace(
            "last_ts   INTEGER,                    -- a coalesced record's last query\n    node      TEXT                        -- server.node_id of the writer",
            "last_ts   INTEGER",
        );
        assert_ne!(v4, V6_HITS);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{v4} {SUPPORT} PRAGMA user_version = 4;"))
            .unwrap();
    }
    let mut s = Store::open_writer(&path, None).unwrap();
    s.insert(&[hit(
        1_000,
        "a",
        "10.0.0.1",
        "x.evil.example",
        "evil.example",
    )])
    .unwrap();
    drop(s);
    // Written before the upgrade took a node: none. (The writer above
    // had no node set, as a writer without server.node_id never does.)
    let old = Store::open_reader(&path).unwrap();
    assert_eq!(old.version, SCHEMA_VERSION);
    let page = old.hits(&Filter::default(), None, 10).unwrap();
    assert_eq!(page.hits[0].node, None);
    let mut s = Store::open_writer(&path, None).unwrap();
    s.set_node("pdns-lon-1");
    s.insert(&[hit(
        2_000,
        "a",
        "10.0.0.1",
        "y.evil.example",
        "evil.example",
    )])
    .unwrap();
    let page = Store::open_reader(&path)
        .unwrap()
        .hits(&Filter::default(), None, 10)
        .unwrap();
    let nodes: Vec<_> = page.hits.iter().map(|h| h.node.as_deref()).collect();
    assert_eq!(nodes, [Some("pdns-lon-1"), None]);
}

#[test]
fn a_version_4_reader_sees_no_node_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hits.sqlite");
    let v4 = V6_HITS.replace(
        "last_ts   INTEGER,                    -- a coalesced record's last query\n    node      TEXT                        -- server.node_id of the writer",
        "last_ts   INTEGER",
    );
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!("{v4} {SUPPORT} PRAGMA user_version = 4;"))
        .unwrap();
    conn.execute(
        "INSERT INTO hits (ts, org, client, transport, qname, qtype, stage, matched, feed, category, action) \
         VALUES (5, 'a', '10.0.0.1', 'udp', 'x.evil.example', 'A', 'qname', 'evil.example', 'f', 'malware', 'nxdomain')",
        [],
    )
    .unwrap();
    drop(conn);
    let old = Store::open_reader(&path).unwrap();
    assert_eq!(old.version, 4);
    let page = old.hits(&Filter::default(), None, 10).unwrap();
    assert_eq!(page.hits.len(), 1);
    assert_eq!(page.hits[0].node, None);
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
