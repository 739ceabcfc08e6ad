//! The SQLite hit store: schema, batched writes, retention, and the
//! queries behind `portcullis logs`, `portcullis report` and the API.
//!
//! `schema` opens the database and migrates it, `writes` inserts records,
//! rolls them up and expires them, `queries` lists them a page at a time,
//! `reports` (with `aggregate`) sums them up, and `sightings` pages the
//! sightings roll-up.
//!
//! `hit_rows` holds every record in arrival order (its id), indexed by
//! org (so by org and id), with the organisation and the few-valued
//! columns as numbers into `hit_orgs` and `hit_labels` (see
//! `schema::HIT_TABLES`); `hits` is the view that names them again, and
//! what the readers and roll-ups select from. Time ranges are found
//! through `hits_minutes`, which holds for each minute the lowest and
//! highest id of the records whose time falls in it (a block range
//! index, as PostgreSQL's BRIN): a range
//! of minutes gives a range of ids, and the time condition is checked on
//! the rows in it. Why not an index on the time: the writer inserts a row
//! into every index for every record, and an index on `ts`, and `ts` after
//! `org` in the other, cost it 2 µs of its 5.7 µs a record (`cargo bench
//! --bench hitlog`, first pass); `hits_minutes` costs it one row a minute.
//! Records arrive in time order to within a batch, so a minute's ids are a
//! narrow range; a clock that steps back widens some ranges but loses
//! nothing. Two roll-ups are built from `hits` for the reports:
//! `hits_daily` has one row per (UTC day, org, listed name, client) with
//! a count and the first and last time seen, and `hits_daily_feeds` one
//! per (day, org, category, feed, action) with a count. A third,
//! `hits_daily_sightings` (see `sightings`), is what shared STIX
//! sightings are read from; it keeps its own mark and waits longer.
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

mod aggregate;
mod labels;
mod queries;
mod reports;
mod schema;
mod sightings;
mod spool;
#[cfg(test)]
mod test_support;
mod writes;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

// The day helpers lived here; callers elsewhere still name them so.
pub use crate::clock::{day_name, whole_days_since};
pub(crate) use aggregate::{Aggregate, Pair};
pub use queries::{Cursor, Filter, Page};
pub use reports::{CategoryCount, ClientRow, Count, DayCount, NameRow, Report};
use schema::SCHEMA_VERSION;
pub use sightings::{SightingCursor, SightingPage, SightingRow, SightingView};
pub use spool::{Backlog, SpoolRow};

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
    /// The node id written on each record ([`Store::set_node`]).
    node: Option<String>,
    /// The writer's interned organisations and labels.
    labels: labels::Labels,
}

/// The table the records' own columns are in at schema `version`.
fn rows_table(version: i64) -> &'static str {
    if version >= 7 { "hit_rows" } else { "hits" }
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `node` (`server.node_id`) on every record from now on.
    pub fn set_node(&mut self, node: &str) {
        self.node = Some(node.to_string());
    }

    /// The table the records' own columns are in: `hit_rows` from
    /// version 7, where `hits` is a view that joins the interned columns
    /// back in. Counting and the id range need no join.
    fn rows_table(&self) -> &'static str {
        rows_table(self.version)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}
