//! The local database as the spool of a fleet store: which records the
//! fleet store has (`forward_state`), and the ones it has not yet, in id
//! order, for [`crate::hitlog::forward`].

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{SCHEMA_VERSION, Store, StoreError};

/// A record as forwarded: the columns of `hits`, with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolRow {
    pub id: i64,
    pub ts: i64,
    pub org: String,
    pub client: String,
    pub transport: String,
    pub qname: String,
    pub qtype: String,
    pub stage: String,
    pub matched: String,
    pub feed: String,
    pub category: String,
    pub indicator: Option<String>,
    pub action: String,
    pub repeats: i64,
    pub last_ts: Option<i64>,
}

/// What waits to be forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    /// The oldest waiting record's time, ms.
    pub oldest_ts: Option<i64>,
}

impl Store {
    /// Open the writer's database to read the spool and move its cursor,
    /// without creating or migrating anything (the writer does that):
    /// `Missing` until the writer has made it. Opened for each round and
    /// closed after, so a database deleted or replaced under the resolver
    /// is followed at once and never kept open by the forwarder.
    pub fn open_spool(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
            node: None,
            labels: Default::default(),
        };
        store
            .conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// This database's epoch (drawn when its `forward_state` was made) and
    /// the id of the last record the fleet store has. The epoch tells this
    /// database's ids from those of an earlier one at the same node (a
    /// file deleted and made again starts its ids over).
    pub fn forward_mark(&self) -> Result<(i64, i64), StoreError> {
        self.conn
            .query_row("SELECT epoch, forwarded FROM forward_state", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))
    }

    /// The fleet store has every record up to `id`.
    pub fn set_forwarded(&self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE forward_state SET forwarded = max(forwarded, ?1)",
                [id],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` records after `after`, in id order.
    pub fn unforwarded(&self, after: i64, limit: usize) -> Result<Vec<SpoolRow>, StoreError> {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT id, ts, org, client, transport, qname, qtype, stage, matched, feed, \
                 category, indicator, action, repeats, last_ts FROM hits \
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = select
            .query_map([after, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(SpoolRow {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    org: r.get(2)?,
                    client: r.get(3)?,
                    transport: r.get(4)?,
                    qname: r.get(5)?,
                    qtype: r.get(6)?,
                    stage: r.get(7)?,
                    matched: r.get(8)?,
                    feed: r.get(9)?,
                    category: r.get(10)?,
                    indicator: r.get(11)?,
                    action: r.get(12)?,
                    repeats: r.get(13)?,
                    last_ts: r.get(14)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// How many records wait after `after`, and since when.
    pub fn backlog(&self, after: i64) -> Result<Backlog, StoreError> {
        // Counted on the records' own table where there is one (version
        // 7): through the view, the joins cost five times as much. Asked
        // of the file each time, since the writer may upgrade it between
        // rounds.
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let table = super::rows_table(version);
        let (records, oldest_ts): (i64, Option<i64>) = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*), (SELECT ts FROM {table} WHERE id > ?1 ORDER BY id LIMIT 1) \
                     FROM {table} WHERE id > ?1"
                ),
                [after],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or((0, None));
        Ok(Backlog {
            records: u64::try_from(records).unwrap_or(0),
            oldest_ts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::Hit;
    use crate::hitlog::store::test_support;

    fn hit(ts: i64, label: &str) -> Hit {
        let name = format!("{label}.example.test");
        test_support::hit(ts, "org-a", "192.0.2.1", &name, &name)
    }

    #[test]
    fn ids_never_go_back_when_the_table_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open_writer(&dir.path().join("h.sqlite"), None).unwrap();
        let ids = s.insert(&[hit(1_000, "a"), hit(1_001, "b")]).unwrap();
        assert_eq!(ids, vec![1, 2]);
        s.set_forwarded(2).unwrap();
        s.roll_up().unwrap();
        // Retention takes everything: SQLite alone would give id 1 again.
        assert_eq!(s.expire(10_000, 100, Some(2)).unwrap(), 2);
        let ids = s.insert(&[hit(20_000, "c"), hit(20_001, "d")]).unwrap();
        assert_eq!(ids, vec![3, 4]);
        let rows = s.unforwarded(2, 10).unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(rows[0].qname, "c.example.test");
    }

    #[test]
    fn the_writer_and_the_forwarder_write_the_same_database_without_failing() {
        // The writer's batches read before they write; had they not taken
        // the lock at BEGIN, the forwarder's cursor updates in between
        // would fail them at once (SQLITE_BUSY, no waiting): at 10,000
        // q/s a node lost three quarters of its records that way.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        let mut writer = Store::open_writer(&path, None).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarder = {
            let (path, done) = (path.clone(), std::sync::Arc::clone(&done));
            std::thread::spawn(move || {
                let spool = Store::open_spool(&path).unwrap();
                let mut moves = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    spool.set_forwarded(0).unwrap();
                    moves += 1;
                }
                moves
            })
        };
        for i in 0..2_000 {
            let batch: Vec<Hit> = (0..5).map(|j| hit(1_000 + i * 5 + j, "w")).collect();
            writer.insert(&batch).unwrap();
            if i % 100 == 0 {
                writer.roll_up().unwrap();
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(forwarder.join().unwrap() > 0);
        assert_eq!(writer.unforwarded(0, 20_000).unwrap().len(), 10_000);
    }

    #[test]
    fn unforwarded_records_outlive_retention_and_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open_writer(&dir.path().join("h.sqlite"), None).unwrap();
        s.insert(&[hit(1_000, "a"), hit(1_001, "b"), hit(1_002, "c")])
            .unwrap();
        s.roll_up().unwrap();
        s.set_forwarded(1).unwrap();
        let (_, forwarded) = s.forward_mark().unwrap();
        assert_eq!(forwarded, 1);
        // All three are past retention and rolled up; two are not forwarded.
        assert_eq!(s.expire(10_000, 100, Some(forwarded)).unwrap(), 1);
        assert_eq!(s.evict_oldest(100, Some(forwarded)).unwrap(), 0);
        let backlog = s.backlog(forwarded).unwrap();
        assert_eq!(
            backlog,
            Backlog {
                records: 2,
                oldest_ts: Some(1_001)
            }
        );
        // Without a fleet store nothing holds them.
        assert_eq!(s.expire(10_000, 100, None).unwrap(), 2);
    }

    #[test]
    fn a_database_keeps_its_epoch_and_a_new_one_draws_another() {
        let (dir, _) = test_support::store();
        let path = dir.path().join("h.sqlite");
        let (epoch, _) = Store::open_writer(&path, None)
            .unwrap()
            .forward_mark()
            .unwrap();
        let (again, _) = Store::open_writer(&path, None)
            .unwrap()
            .forward_mark()
            .unwrap();
        assert_eq!(epoch, again);
        std::fs::remove_file(&path).unwrap();
        let (other, forwarded) = Store::open_writer(&path, None)
            .unwrap()
            .forward_mark()
            .unwrap();
        assert_ne!(epoch, other);
        assert_eq!(forwarded, 0);
    }
}
