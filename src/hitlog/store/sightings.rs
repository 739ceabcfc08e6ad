//! What the shared sightings count: per UTC day, listed name and
//! indicator, the hits of each organisation, read from
//! `hits_daily_sightings` and the records not yet rolled up, a page at a
//! time in the order they last changed.
//!
//! A sighting's time is the last hit it counts: a TAXII client that asks
//! for what was added after a time gets every sighting whose count moved
//! since, with its count as of now. The records after the roll-up's mark
//! are added to the rows they belong to, so a page is exact whatever the
//! roll-up's lag (as a report is).
//!
//! Client-IP triggers are no sightings: what they list is the member's own
//! address, not an indicator of a threat, and it must not leave.

use std::cmp::Ordering;
use std::collections::HashMap;

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::clock::DAY_MS;

/// The roll-up's `SELECT`, up to its `WHERE` (the caller adds the id range
/// and [`ROLLUP_GROUP`]); shared by the roll-up and the schema upgrade.
pub(super) const ROLLUP_SELECT: &str = "(day, feed, matched, indicator, org, category, n, first_ts, last_ts) \
     SELECT ts / 86400000, feed, matched, \
     CASE WHEN indicator LIKE 'indicator--%' THEN indicator ELSE '' END, org, \
     substr(max(format('%020d', id) || category), 21), sum(repeats), min(ts), \
     max(coalesce(last_ts, ts)) FROM hits WHERE stage != 'client_ip'";
pub(super) const ROLLUP_GROUP: &str = "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5";

/// One organisation's hits of one listed name (and indicator) on one day;
/// in the anonymous view, every organisation's (`org` is then empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SightingRow {
    pub day: i64,
    pub feed: String,
    pub matched: String,
    /// The STIX indicator the entry came from; empty for other formats
    /// (an RPZ entry's zone and serial is no indicator of its own: one
    /// name's sightings would split at every transfer).
    pub indicator: String,
    /// The organisation; empty for clients in none, and in the anonymous
    /// view.
    pub org: String,
    pub category: String,
    pub n: u64,
    pub first: i64,
    pub last: i64,
}

/// Which rows a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SightingView<'a> {
    /// One organisation's.
    Org(&'a str),
    /// Every organisation's, each its own.
    EachOrg,
    /// Every organisation's added up: one row per day, name and indicator.
    Anonymous,
}

/// Where a page ended: the last row's time and key. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SightingCursor {
    pub(crate) last: i64,
    /// `i64::MAX` in a cursor made by [`SightingCursor::after_time`].
    pub(crate) day: i64,
    pub(crate) feed: String,
    pub(crate) matched: String,
    pub(crate) indicator: String,
    pub(crate) org: String,
}

impl SightingCursor {
    /// As text for a TAXII `next`: the key's JSON, hex-encoded.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(text: &str) -> Option<SightingCursor> {
        if !text.len().is_multiple_of(2) || text.len() > 8192 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect();
        serde_json::from_slice(&bytes?).ok()
    }

    /// The cursor just before everything last changed after `ts`.
    pub fn after_time(ts: i64) -> SightingCursor {
        SightingCursor {
            last: ts,
            day: i64::MAX,
            feed: String::new(),
            matched: String::new(),
            indicator: String::new(),
            org: String::new(),
        }
    }

    pub(crate) fn of(row: &SightingRow) -> SightingCursor {
        SightingCursor {
            last: row.last,
            day: row.day,
            feed: row.feed.clone(),
            matched: row.matched.clone(),
            indicator: row.indicator.clone(),
            org: row.org.clone(),
        }
    }
}

/// A page of rows, oldest change first.
#[derive(Debug, Default)]
pub struct SightingPage {
    pub rows: Vec<SightingRow>,
    /// Where the next page starts, when there is more.
    pub next: Option<SightingCursor>,
}

type Key = (i64, String, String, String, String);

fn key(row: &SightingRow) -> Key {
    (
        row.day,
        row.feed.clone(),
        row.matched.clone(),
        row.indicator.clone(),
        row.org.clone(),
    )
}

fn add(into: &mut SightingRow, other: &SightingRow) {
    if other.last >= into.last {
        into.category.clone_from(&other.category);
    }
    into.n += other.n;
    into.first = into.first.min(other.first);
    into.last = into.last.max(other.last);
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SightingRow> {
    Ok(SightingRow {
        day: r.get(0)?,
        feed: r.get(1)?,
        matched: r.get(2)?,
        indicator: r.get(3)?,
        org: r.get(4)?,
        category: r.get(5)?,
        n: r.get::<_, i64>(6)?.max(0) as u64,
        first: r.get(7)?,
        last: r.get(8)?,
    })
}

const COLUMNS: &str = "day, feed, matched, indicator, org, category, n, first_ts, last_ts";

impl Store {
    /// Rows that last changed after `after` (and at or after `since`),
    /// oldest change first, at most `limit`.
    pub fn sightings(
        &self,
        view: SightingView<'_>,
        after: Option<&SightingCursor>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<SightingPage, StoreError> {
        let org = match view {
            SightingView::Org(org) => Some(org),
            _ => None,
        };
        let raw = self.unrolled(org)?;
        // `since` narrows the floor too, so the index is read from there
        // rather than filtered from its start.
        let since = since.unwrap_or(i64::MIN);
        let floor = after
            .cloned()
            .unwrap_or_else(|| SightingCursor::after_time(i64::MIN))
            .max(SightingCursor::after_time(since.saturating_sub(1)));
        let wanted = |row: &SightingRow| row.last >= since && SightingCursor::of(row) > floor;

        // The rows with records not yet rolled up, whole, in order.
        let mut merged: Vec<SightingRow> = Vec::with_capacity(raw.len());
        for (k, part) in &raw {
            let mut row = self.rolled_row(k)?.unwrap_or_else(|| SightingRow {
                n: 0,
                first: i64::MAX,
                last: i64::MIN,
                ..part.clone()
            });
            add(&mut row, part);
            if wanted(&row) {
                merged.push(row);
            }
        }
        merged.sort_by_cached_key(SightingCursor::of);
        let mut merged = merged.into_iter().peekable();

        let (index, org_clause) = match org {
            Some(_) => ("hits_daily_sightings_org", "org = ?7 AND"),
            None => ("hits_daily_sightings_last", ""),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM hits_daily_sightings INDEXED BY {index} WHERE {org_clause} \
             last_ts >= ?1 AND (last_ts, day, feed, matched, indicator, org) > (?1, ?2, ?3, ?4, ?5, ?6) \
             AND last_ts >= ?8 ORDER BY last_ts, day, feed, matched, indicator, org"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params![
                floor.last,
                floor.day,
                floor.feed,
                floor.matched,
                floor.indicator,
                floor.org,
                org.unwrap_or(""),
                since,
            ])
            .map_err(|e| self.err(e))?;

        let mut page = SightingPage::default();
        let mut rolled: Option<SightingRow> = None;
        let mut last_taken: Option<SightingCursor> = None;
        loop {
            if rolled.is_none() {
                // Rows with unrolled records come from `merged`, whole.
                while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                    let row = read_row(row).map_err(|e| self.err(e))?;
                    if raw.is_empty() || !raw.contains_key(&key(&row)) {
                        rolled = Some(row);
                        break;
                    }
                }
            }
            let take_rolled = match (&rolled, merged.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(a), Some(b)) => {
                    SightingCursor::of(a).cmp(&SightingCursor::of(b)) == Ordering::Less
                }
            };
            let Some(row) = (if take_rolled {
                rolled.take()
            } else {
                merged.next()
            }) else {
                break;
            };
            // The anonymous view's rows are sums; the page goes on from
            // the member each was listed at.
            let (row, member) = match view {
                SightingView::Anonymous => match self.whole_indicator(&row, &raw)? {
                    Some(all) => (all, Some(SightingCursor::of(&row))),
                    // Another organisation's hit came later: the sum is
                    // listed there.
                    None => continue,
                },
                _ => (row, None),
            };
            if page.rows.len() == limit {
                // One more there: the page ends at the last row taken.
                page.next = last_taken.or_else(|| page.rows.last().map(SightingCursor::of));
                break;
            }
            page.rows.push(row);
            last_taken = member;
        }
        Ok(page)
    }

    /// Records after the roll-up's mark, added up by row key.
    fn unrolled(&self, org: Option<&str>) -> Result<HashMap<Key, SightingRow>, StoreError> {
        let mark = self.sightings_rolled_up()?.unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT ts / {DAY_MS}, feed, matched, \
             CASE WHEN indicator LIKE 'indicator--%' THEN indicator ELSE '' END, org, \
             substr(max(format('%020d', id) || category), 21), sum(repeats), min(ts), \
             max(coalesce(last_ts, ts)) FROM hits WHERE id > ?1 AND stage != 'client_ip' \
             AND (?2 IS NULL OR org = ?2) GROUP BY 1, 2, 3, 4, 5"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params![mark, org], read_row)
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let row = row.map_err(|e| self.err(e))?;
            out.insert(key(&row), row);
        }
        Ok(out)
    }

    fn rolled_row(&self, k: &Key) -> Result<Option<SightingRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM hits_daily_sightings WHERE day = ?1 AND feed = ?2 \
                     AND matched = ?3 AND indicator = ?4 AND org = ?5"
                ),
                rusqlite::params![k.0, k.1, k.2, k.3, k.4],
                read_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every organisation's hits of `row`'s name and indicator that day,
    /// added up, if `row` is the one that changed last (so each sum is
    /// listed once, where it last changed); `None` otherwise.
    fn whole_indicator(
        &self,
        row: &SightingRow,
        raw: &HashMap<Key, SightingRow>,
    ) -> Result<Option<SightingRow>, StoreError> {
        let mut members: HashMap<String, SightingRow> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM hits_daily_sightings WHERE day = ?1 AND feed = ?2 \
                 AND matched = ?3 AND indicator = ?4"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                rusqlite::params![row.day, row.feed, row.matched, row.indicator],
                read_row,
            )
            .map_err(|e| self.err(e))?;
        for member in rows {
            let member = member.map_err(|e| self.err(e))?;
            members.insert(member.org.clone(), member);
        }
        for (k, part) in raw {
            if k.0 == row.day && k.1 == row.feed && k.2 == row.matched && k.3 == row.indicator {
                match members.get_mut(&k.4) {
                    Some(m) => add(m, part),
                    None => {
                        members.insert(k.4.clone(), part.clone());
                    }
                }
            }
        }
        let latest = members
            .values()
            .max_by(|a, b| (a.last, &a.org).cmp(&(b.last, &b.org)));
        if latest.is_none_or(|l| l.org != row.org || l.last != row.last) {
            return Ok(None);
        }
        let mut sum = SightingRow {
            org: String::new(),
            n: 0,
            first: i64::MAX,
            last: i64::MIN,
            ..row.clone()
        };
        let mut members: Vec<&SightingRow> = members.values().collect();
        members.sort_by_key(|m| m.last);
        for m in members {
            add(&mut sum, m);
        }
        Ok(Some(sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::Stage;
    use crate::hitlog::store::test_support::{hit, store};

    const DAY0: i64 = 20_000 * DAY_MS;

    fn all(s: &Store, view: SightingView<'_>, since: Option<i64>, page: usize) -> Vec<SightingRow> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let p = s.sightings(view, after.as_ref(), since, page).unwrap();
            assert!(p.rows.len() <= page);
            out.extend(p.rows);
            match p.next {
                Some(next) => {
                    // The cursor survives its text form.
                    after = Some(SightingCursor::decode(&next.encode()).unwrap());
                }
                None => return out,
            }
        }
    }

    fn summary(rows: &[SightingRow]) -> Vec<(i64, &str, &str, u64, i64, i64)> {
        rows.iter()
            .map(|r| {
                (
                    r.day - 20_000,
                    r.org.as_str(),
                    r.matched.as_str(),
                    r.n,
                    r.first - DAY0,
                    r.last - DAY0,
                )
            })
            .collect()
    }

    #[test]
    fn sightings_count_each_day_name_and_org_exactly_whatever_the_rollup_lag() {
        let (_dir, mut s) = store();
        let mut hits = vec![
            hit(DAY0 + 10, "a", "10.0.0.1", "x.evil.test", "evil.test"),
            hit(DAY0 + 20, "a", "10.0.0.2", "evil.test", "evil.test"),
            hit(DAY0 + 30, "b", "10.0.0.3", "evil.test", "evil.test"),
            hit(DAY0 + 40, "a", "10.0.0.1", "bad.test", "bad.test"),
            hit(DAY0 + DAY_MS + 5, "a", "10.0.0.1", "evil.test", "evil.test"),
        ];
        // A client-IP trigger is no sighting.
        let mut client = hit(DAY0 + 50, "a", "10.0.0.1", "ok.test", "10.0.0.0/24");
        client.stage = Stage::ClientIp;
        hits.push(client);
        // A coalesced record stands for its repeats.
        let mut flood = hit(DAY0 + 60, "b", "10.0.0.3", "evil.test", "evil.test");
        flood.repeats = 4;
        flood.last_ts = Some(DAY0 + 90);
        hits.push(flood);
        s.insert(&hits[..4]).unwrap();
        s.roll_up().unwrap();
        // The rest after the mark: read from the raw records.
        s.insert(&hits[4..]).unwrap();

        let expected = vec![
            (0, "a", "bad.test", 1, 40, 40),
            (0, "a", "evil.test", 2, 10, 20),
            (0, "b", "evil.test", 5, 30, 90),
            (1, "a", "evil.test", 1, DAY_MS + 5, DAY_MS + 5),
        ];
        let rows = all(&s, SightingView::EachOrg, None, 100);
        let mut got = summary(&rows);
        // Oldest change first.
        assert_eq!(
            got.iter().map(|r| r.5).collect::<Vec<_>>(),
            vec![20, 40, 90, DAY_MS + 5]
        );
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want);
        // Paging one at a time gives the same rows.
        assert_eq!(
            all(&s, SightingView::EachOrg, None, 1),
            all(&s, SightingView::EachOrg, None, 100)
        );

        // Rolled up or not, the same answer.
        let before = all(&s, SightingView::EachOrg, None, 2);
        s.roll_up().unwrap();
        assert_eq!(all(&s, SightingView::EachOrg, None, 2), before);

        // One organisation's.
        assert_eq!(
            summary(&all(&s, SightingView::Org("b"), None, 1)),
            vec![(0, "b", "evil.test", 5, 30, 90)]
        );
        // Anonymous: one row per day and name, every org added up, no org.
        assert_eq!(
            summary(&all(&s, SightingView::Anonymous, None, 1)),
            vec![
                (0, "", "bad.test", 1, 40, 40),
                (0, "", "evil.test", 7, 10, 90),
                (1, "", "evil.test", 1, DAY_MS + 5, DAY_MS + 5),
            ]
        );
        // What changed after a time (TAXII's added_after).
        let after = SightingCursor::after_time(DAY0 + 40);
        let page = s
            .sightings(SightingView::EachOrg, Some(&after), None, 10)
            .unwrap();
        assert_eq!(
            summary(&page.rows).iter().map(|r| r.5).collect::<Vec<_>>(),
            vec![90, DAY_MS + 5]
        );
        // `since`: last seen at or after.
        assert_eq!(
            all(&s, SightingView::EachOrg, Some(DAY0 + DAY_MS), 10).len(),
            1
        );
        // A new hit moves its row to the end, with the new count.
        s.insert(&[hit(DAY0 + 100, "a", "10.0.0.1", "evil.test", "evil.test")])
            .unwrap();
        let page = s
            .sightings(SightingView::EachOrg, Some(&after), None, 10)
            .unwrap();
        assert_eq!(
            summary(&page.rows),
            vec![
                (0, "b", "evil.test", 5, 30, 90),
                (0, "a", "evil.test", 3, 10, 100),
                (1, "a", "evil.test", 1, DAY_MS + 5, DAY_MS + 5),
            ]
        );
        assert!(SightingCursor::decode("zz").is_none() && SightingCursor::decode("abc").is_none());
    }

    #[test]
    fn an_older_database_gets_the_sightings_of_what_it_rolled_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hits.sqlite");
        {
            let mut s = Store::open_writer(&path, None).unwrap();
            s.insert(&[
                hit(DAY0 + 1, "a", "10.0.0.1", "evil.test", "evil.test"),
                hit(DAY0 + 2, "a", "10.0.0.1", "evil.test", "evil.test"),
            ])
            .unwrap();
            s.roll_up().unwrap();
            s.conn
                .execute_batch("DROP TABLE hits_daily_sightings; PRAGMA user_version = 5;")
                .unwrap();
        }
        let s = Store::open_writer(&path, None).unwrap();
        assert_eq!(
            summary(&all(&s, SightingView::EachOrg, None, 10)),
            vec![(0, "a", "evil.test", 2, 1, 2)]
        );
    }
}
