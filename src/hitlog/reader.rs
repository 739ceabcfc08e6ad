//! Where `portcullis logs`, `report`, the review API and its page read
//! records from: the node's own SQLite store, or, when `[hitlog] postgres`
//! is set, the fleet's store in PostgreSQL, so that any node (or a
//! reporting-only instance) answers for every node.
//!
//! Both give the same [`Page`] and [`Report`] for the same [`Filter`];
//! organisation separation is the filter's, decided by the caller before
//! it asks.

use std::path::PathBuf;
use std::sync::Arc;

use super::Hit;
use super::postgres::{FleetReader, PgError};
use super::store::{
    Cursor, Filter, Page, Report, SightingCursor, SightingPage, SightingView, Store, StoreError,
};
use crate::config::Config;

/// The hit store the readers use.
#[derive(Clone)]
pub enum HitSource {
    /// This node's SQLite database.
    Local(PathBuf),
    /// The fleet's PostgreSQL store.
    Fleet(Arc<FleetReader>),
}

/// A read that failed, naming the store.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Local(#[from] StoreError),
    #[error("fleet hit store: {0}")]
    Fleet(#[from] PgError),
}

impl HitSource {
    /// The fleet store when `[hitlog] postgres` is set, else the node's.
    pub fn from_config(config: &Config) -> HitSource {
        match &config.hitlog.postgres {
            Some(postgres) => HitSource::Fleet(Arc::new(FleetReader::new(postgres.clone()))),
            None => HitSource::Local(config.hitlog.database.clone()),
        }
    }

    /// Records matching `filter`, newest first, `limit` at a time.
    pub fn hits(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, ReadError> {
        Ok(match self {
            HitSource::Local(db) => Store::open_reader(db)?.hits(filter, after, limit)?,
            HitSource::Fleet(fleet) => fleet.hits(filter, after, limit)?,
        })
    }

    /// The record with this reference number, if it belongs to `org`.
    pub fn get(&self, id: i64, org: Option<&str>) -> Result<Option<Hit>, ReadError> {
        Ok(match self {
            HitSource::Local(db) => Store::open_reader(db)?.get(id, org)?,
            HitSource::Fleet(fleet) => fleet.get(id, org)?,
        })
    }

    /// The summary for `filter` over [since, until).
    pub fn report(
        &self,
        filter: &Filter,
        since: i64,
        until: i64,
        top: usize,
    ) -> Result<Report, ReadError> {
        Ok(match self {
            HitSource::Local(db) => Store::open_reader(db)?.report(filter, since, until, top)?,
            HitSource::Fleet(fleet) => fleet.report(filter, since, until, top)?,
        })
    }

    /// Sightings rows that last changed after `after` (and at or after
    /// `since`), oldest change first, at most `limit`.
    pub fn sightings(
        &self,
        view: SightingView<'_>,
        after: Option<&SightingCursor>,
        since: Option<i64>,
        limit: usize,
    ) -> Result<SightingPage, ReadError> {
        Ok(match self {
            HitSource::Local(db) => Store::open_reader(db)?.sightings(view, after, since, limit)?,
            HitSource::Fleet(fleet) => fleet.sightings(view, after, since, limit)?,
        })
    }
}
