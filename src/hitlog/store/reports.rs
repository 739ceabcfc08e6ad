//! Organisation and operator reports: what a [`Report`] holds, and how it
//! is read from the roll-ups for whole days and from raw records for the
//! rest.

use serde::Serialize;

use super::aggregate::{Aggregate, Pair};
use super::queries::{Filter, push_filter};
use super::{Store, StoreError};
use crate::clock::DAY_MS;

/// An organisation-level (or operator-wide) summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub org: Option<String>,
    #[serde(with = "crate::hitlog::rfc3339_ms")]
    pub since: i64,
    #[serde(with = "crate::hitlog::rfc3339_ms")]
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
    #[serde(with = "crate::hitlog::rfc3339_ms")]
    pub first_seen: i64,
    #[serde(with = "crate::hitlog::rfc3339_ms")]
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientRow {
    pub client: String,
    pub org: Option<String>,
    pub hits: u64,
    pub names: u64,
    #[serde(with = "crate::hitlog::rfc3339_ms")]
    pub first_seen: i64,
    #[serde(with = "crate::hitlog::rfc3339_ms")]
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub hits: u64,
}

impl Store {
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
        // that would walk the whole range of days the filter names. (From
        // version 7 `hits` is a view, where the hint would mean nothing;
        // its one index, on the organisation, is read with the id range.)
        let table = if after > 0 && self.version < 7 {
            "hits NOT INDEXED"
        } else {
            "hits"
        };
        let mut sql = format!(
            "SELECT org, ts, matched, client, category, feed, action, {}, {} FROM {table} WHERE 1 = 1",
            self.repeats_sql(),
            self.last_ts_sql(),
        );
        let mut args = Vec::new();
        self.push_filter_and_ids(&mut sql, &mut args, filter, Some(after), None)?;
        self.scan(&sql, args, |row| {
            let ts: i64 = row.get(1)?;
            let category = row.get_ref(4)?.as_str()?;
            let n = row.get::<_, i64>(7)?.max(1) as u64;
            agg.add_pair(Pair {
                org: row.get_ref(0)?.as_str()?,
                day: Some(ts.div_euclid(DAY_MS)),
                matched: row.get_ref(2)?.as_str()?,
                client: row.get_ref(3)?.as_str()?,
                category,
                n,
                first: ts,
                last: row.get(8)?,
            });
            agg.add_feed(
                category,
                row.get_ref(5)?.as_str()?,
                row.get_ref(6)?.as_str()?,
                n,
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
        push_filter(&mut sql, &mut args, &days, false);
        self.scan(&sql, args, |row| {
            agg.add_pair(Pair {
                org: row.get_ref(0)?.as_str()?,
                day: Some(row.get(1)?),
                matched: row.get_ref(2)?.as_str()?,
                client: row.get_ref(3)?.as_str()?,
                category: row.get_ref(4)?.as_str()?,
                n: row.get::<_, i64>(5)? as u64,
                first: row.get(6)?,
                last: row.get(7)?,
            });
            Ok(())
        })?;
        let mut sql = String::from(
            "SELECT category, feed, action, n FROM hits_daily_feeds WHERE day >= ?1 AND day < ?2",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![from.into(), to.into()];
        push_filter(&mut sql, &mut args, &days, false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::store::test_support::{hit, store};

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
}
