//! Writing to the hit database: batches of records, the roll-ups that
//! follow them, WAL checkpoints and retention.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError};
use crate::clock::{DAY_MS, minute};
use crate::hitlog::AsHitRef;

impl Store {
    /// Write a batch in one transaction; returns the ids given, in order.
    /// The roll-ups catch up in [`Store::roll_up`].
    pub fn insert<H: AsHitRef>(&mut self, hits: &[H]) -> Result<Vec<i64>, StoreError> {
        let inserted = self.insert_tx(hits);
        if inserted.is_err() {
            self.labels.forget();
        }
        inserted.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn insert_tx<H: AsHitRef>(&mut self, hits: &[H]) -> rusqlite::Result<Vec<i64>> {
        let Store {
            conn, labels, node, ..
        } = self;
        // Immediate: the write lock is taken at BEGIN, where SQLite's busy
        // timeout waits for it. A deferred transaction that read first (the
        // id floor below) and then wrote would fail at once, without
        // waiting, if the forwarder had written in between.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(hits.len());
        {
            // Ids only grow, even when retention or the cap has emptied the
            // table (SQLite would start again at 1): the roll-ups' marks
            // and the fleet store's cursor are ids, and a reused one would
            // be skipped by all.
            let mut next_id: Option<i64> = tx
                .query_row(
                    "SELECT max((SELECT rolled_up FROM rollup_state), \
                     (SELECT rolled_up FROM sightings_state), \
                     (SELECT forwarded FROM forward_state)) + 1 \
                     WHERE (SELECT coalesce(max(id), 0) FROM hit_rows) < \
                     max((SELECT rolled_up FROM rollup_state), \
                     (SELECT rolled_up FROM sightings_state), (SELECT forwarded FROM forward_state))",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO hit_rows (ts, org, label, client, qname, matched, indicator, \
                 repeats, last_ts, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let node = node.as_deref().unwrap_or("");
            let mut client = String::with_capacity(40);
            // The minutes of the batch, with their lowest and highest id:
            // one or two, unless the clock stepped.
            let mut minutes: Vec<(i64, i64, i64)> = Vec::new();
            for h in hits.iter().map(AsHitRef::as_hit_ref) {
                use std::fmt::Write as _;
                client.clear();
                let _ = write!(client, "{}", h.client);
                let org = labels.org(&tx, h.org.unwrap_or(""))?;
                let label = labels.label(&tx, &h, node)?;
                insert.execute(params![
                    h.ts,
                    org,
                    label,
                    client,
                    h.qname,
                    h.matched,
                    h.indicator,
                    i64::try_from(h.repeats).unwrap_or(i64::MAX),
                    h.last_ts,
                    next_id.take(),
                ])?;
                let id = tx.last_insert_rowid();
                ids.push(id);
                let m = minute(h.ts);
                match minutes.iter_mut().find(|(k, _, _)| *k == m) {
                    // Ids only grow within the transaction.
                    Some((_, _, last)) => *last = id,
                    None => minutes.push((m, id, id)),
                }
            }
            let mut range = tx.prepare_cached(
                "INSERT INTO hits_minutes (minute, first_id, last_id) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (minute) DO UPDATE SET first_id = min(first_id, excluded.first_id), \
                 last_id = max(last_id, excluded.last_id)",
            )?;
            for (m, first, last) in minutes {
                range.execute([m, first, last])?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Fold every record written since the last roll-up into the roll-ups
    /// (the sightings' too). Returns how many the reports' roll-up took.
    pub fn roll_up(&mut self) -> Result<u64, StoreError> {
        let taken = self.roll_up_at_most(u64::MAX)?;
        self.roll_up_sightings_at_most(u64::MAX)?;
        Ok(taken)
    }

    /// Fold the records after the sightings' mark, at most `limit` of
    /// them, into `hits_daily_sightings`, in one transaction that moves
    /// the mark; fewer than `limit` taken means it has caught up. Separate
    /// from [`Store::roll_up_at_most`]: it costs as much again (a row
    /// per name and organisation, moved in two time indexes), and sharing
    /// can wait for a quieter moment than the reports.
    pub fn roll_up_sightings_at_most(&mut self, limit: u64) -> Result<u64, StoreError> {
        let upsert = format!(
            "INSERT INTO hits_daily_sightings {} AND id > ?1 AND id <= ?2 {} \
             ON CONFLICT (day, feed, matched, indicator, org) DO UPDATE SET \
             category = excluded.category, n = n + excluded.n, \
             first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)",
            super::sightings::ROLLUP_SELECT,
            super::sightings::ROLLUP_GROUP
        );
        self.roll_up_range("sightings_state", limit, &[&upsert])
    }

    /// The id of the last record in the sightings roll-up; `None` for a
    /// database without one (opened for reading at an older version).
    pub fn sightings_rolled_up(&self) -> Result<Option<i64>, StoreError> {
        if self.version < 6 {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT rolled_up FROM sightings_state", [], |r| r.get(0))
            .map(Some)
            .map_err(|e| self.err(e))
    }

    /// Fold the records written since the last roll-up, at most `limit`
    /// of them (by id), into `hits_daily` and `hits_daily_feeds`, in one
    /// transaction that also moves the mark. Returns how many ids it
    /// took: fewer than `limit` means it has caught up. Sorting by the
    /// roll-up's key first means each page of the tree is written once.
    pub fn roll_up_at_most(&mut self, limit: u64) -> Result<u64, StoreError> {
        // The category is the latest seen for the name: the one on the
        // group's newest record, carried through `max` behind its
        // zero-padded id. Joining the groups back to their newest record
        // made SQLite materialise them and sort them a second time: a
        // quarter slower for a burst of new names.
        let daily = format!(
            "INSERT INTO hits_daily (day, org, matched, client, category, n, first_ts, last_ts) \
             SELECT ts / {DAY_MS}, org, matched, client, \
             substr(max(format('%020d', id) || category), 21), sum(repeats), min(ts), \
             max(coalesce(last_ts, ts)) \
             FROM hits WHERE id > ?1 AND id <= ?2 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
             ON CONFLICT (day, org, matched, client) DO UPDATE SET \
             category = excluded.category, n = n + excluded.n, \
             first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)"
        );
        let feeds = format!(
            "INSERT INTO hits_daily_feeds (day, org, category, feed, action, n) \
             SELECT ts / {DAY_MS}, org, category, feed, action, sum(repeats) \
             FROM hits WHERE id > ?1 AND id <= ?2 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 \
             ON CONFLICT (day, org, category, feed, action) DO UPDATE SET n = n + excluded.n"
        );
        self.roll_up_range("rollup_state", limit, &[&daily, &feeds])
    }

    /// One round of a roll-up whose mark is `mark_table`'s `rolled_up`:
    /// the records after the mark, at most `limit`, through `statements`
    /// (each takes the id range as ?1 and ?2), and the mark moved, in one
    /// transaction. Returns how many ids it took.
    fn roll_up_range(
        &mut self,
        mark_table: &str,
        limit: u64,
        statements: &[&str],
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        // Immediate, as in `insert`: it reads the mark before it writes.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let from: i64 = tx
            .query_row(&format!("SELECT rolled_up FROM {mark_table}"), [], |r| {
                r.get(0)
            })
            .map_err(wrap)?;
        let last: i64 = tx
            .query_row("SELECT coalesce(max(id), 0) FROM hit_rows", [], |r| {
                r.get(0)
            })
            .map_err(wrap)?;
        let to = last.min(from.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)));
        if to <= from {
            return Ok(0);
        }
        for sql in statements {
            tx.execute(sql, [from, to]).map_err(wrap)?;
        }
        tx.execute(&format!("UPDATE {mark_table} SET rolled_up = ?1"), [to])
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
    /// Records above `keep_above` (the fleet store's cursor, when there is
    /// one) are kept whatever their age: they have not been forwarded.
    pub fn expire(
        &mut self,
        cutoff: i64,
        limit: u64,
        keep_above: Option<i64>,
    ) -> Result<u64, StoreError> {
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
        let last = match (last, keep_above) {
            (Some(last), Some(keep)) => Some(last.min(keep)),
            (last, _) => last,
        };
        let mut done = last.is_none();
        if let Some(last) = last {
            while total < limit {
                let n = self
                    .conn
                    .execute(
                        "DELETE FROM hit_rows WHERE id IN \
                         (SELECT id FROM hit_rows WHERE id <= ?2 AND ts < ?1 LIMIT 10000)",
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
        for table in ["hits_daily", "hits_daily_feeds", "hits_daily_sightings"] {
            self.conn
                .execute(
                    &format!("DELETE FROM {table} WHERE day < ?1"),
                    [cutoff.div_euclid(DAY_MS)],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(total)
    }

    /// Delete the oldest records, at most `limit`, but only ones the daily
    /// roll-ups already count, and not above `keep_above` (the fleet
    /// store's cursor): what the size cap takes leaves the report totals
    /// whole and the spool intact. Returns how many went.
    pub fn evict_oldest(&mut self, limit: u64, keep_above: Option<i64>) -> Result<u64, StoreError> {
        let mark = self
            .rolled_up()?
            .unwrap_or(i64::MAX)
            .min(self.sightings_rolled_up()?.unwrap_or(i64::MAX))
            .min(keep_above.unwrap_or(i64::MAX));
        let n = self
            .conn
            .execute(
                "DELETE FROM hit_rows WHERE id IN (SELECT id FROM hit_rows WHERE id <= ?1 ORDER BY id LIMIT ?2)",
                [mark, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .map_err(|e| self.err(e))?;
        if n > 0 {
            self.conn
                .execute(
                    "DELETE FROM hits_minutes WHERE last_id < (SELECT coalesce(min(id), ?1) FROM hit_rows)",
                    [i64::MAX],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(n as u64)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::Hit;
    use crate::hitlog::store::Filter;
    use crate::hitlog::store::test_support::{hit, store};

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
    fn retention_deletes_old_records_and_rollup_days() {
        let (_dir, mut s) = store();
        s.insert(&[
            hit(10, "a", "10.0.0.1", "a.example", "a.example"),
            hit(2 * DAY_MS + 10, "a", "10.0.0.1", "a.example", "a.example"),
        ])
        .unwrap();
        assert_eq!(s.expire(DAY_MS, 100, None).unwrap(), 1);
        // A backlog goes a bounded amount at a time.
        let old: Vec<Hit> = (0..12_000)
            .map(|i| hit(i, "a", "10.0.0.1", "a.example", "a.example"))
            .collect();
        s.insert(&old).unwrap();
        assert_eq!(s.expire(DAY_MS, 5, None).unwrap(), 10_000, "one chunk");
        assert_eq!(s.expire(DAY_MS, 50_000, None).unwrap(), 2_000, "the rest");
        assert_eq!(s.count().unwrap(), 1);
        let r = s.report(&Filter::default(), 0, 3 * DAY_MS, 5).unwrap();
        assert_eq!(r.total, 1);
    }
}
