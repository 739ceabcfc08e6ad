//! The writer's side of the interned columns: the id of an organisation
//! in `hit_orgs`, and of a (transport, query type, stage, feed, category,
//! action, node) in `hit_labels`, found in memory after the first time.
//!
//! A few hundred values in practice (organisations times feeds times
//! actions); the maps are emptied past [`MOST`] entries, so a flood of odd
//! query types costs lookups in the database, not memory.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::hitlog::HitRef;

/// Entries kept in each map before it starts over.
const MOST: usize = 65_536;

#[derive(Default)]
pub(super) struct Labels {
    orgs: HashMap<String, i64>,
    /// By the label's columns, each written as its length (four bytes)
    /// and its text, so no text can be taken for two. Bytes, not a
    /// formatted string: this is built for every record.
    labels: HashMap<Vec<u8>, i64>,
    /// The key being looked up, reused so a known label costs no
    /// allocation.
    key: Vec<u8>,
}

impl Labels {
    /// The id of `org` ('' for none), added to `hit_orgs` if new.
    pub(super) fn org(&mut self, conn: &Connection, org: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.orgs.get(org) {
            return Ok(id);
        }
        conn.prepare_cached("INSERT OR IGNORE INTO hit_orgs (org) VALUES (?1)")?
            .execute([org])?;
        let id: i64 = conn
            .prepare_cached("SELECT id FROM hit_orgs WHERE org = ?1")?
            .query_row([org], |r| r.get(0))?;
        if self.orgs.len() >= MOST {
            self.orgs.clear();
        }
        self.orgs.insert(org.to_owned(), id);
        Ok(id)
    }

    /// The id of the hit's label, added to `hit_labels` if new.
    pub(super) fn label(
        &mut self,
        conn: &Connection,
        h: &HitRef<'_>,
        node: &str,
    ) -> rusqlite::Result<i64> {
        let columns = [
            h.transport.as_str(),
            h.qtype,
            h.stage.as_str(),
            h.feed,
            h.category,
            h.action,
            node,
        ];
        self.key.clear();
        for c in columns {
            let len = u32::try_from(c.len()).unwrap_or(u32::MAX);
            self.key.extend_from_slice(&len.to_le_bytes());
            self.key.extend_from_slice(c.as_bytes());
        }
        if let Some(&id) = self.labels.get(self.key.as_slice()) {
            return Ok(id);
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO hit_labels (transport, qtype, stage, feed, category, action, node) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(columns)?;
        let id: i64 = conn
            .prepare_cached(
                "SELECT id FROM hit_labels WHERE transport = ?1 AND qtype = ?2 AND stage = ?3 \
                 AND feed = ?4 AND category = ?5 AND action = ?6 AND node = ?7",
            )?
            .query_row(columns, |r| r.get(0))?;
        if self.labels.len() >= MOST {
            self.labels.clear();
        }
        self.labels.insert(self.key.clone(), id);
        Ok(id)
    }

    /// After a transaction that failed: the ids it added were rolled back
    /// with it.
    pub(super) fn forget(&mut self) {
        self.orgs.clear();
        self.labels.clear();
    }
}
