//! `GET /api/v1/feeds` (operator token): every feed file with what the
//! last reload made of it, and for a file a remote source writes (TAXII,
//! download, RPZ transfer) what that source last did.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::review::ApiError;
use super::{AdminState, Principal};
use crate::sources::SourceStatus;

/// One feed file as the API shows it.
#[derive(Debug, Serialize)]
pub struct FeedView {
    pub file: String,
    /// `file` (dropped by hand), `taxii`, `download` or `rpz`.
    pub source: &'static str,
    /// The remote source's state, where there is one.
    #[serde(flatten)]
    pub remote: Option<SourceStatus>,
    /// From the last reload; `None` before the file first arrived.
    pub format: Option<String>,
    pub entries: Option<usize>,
    pub rejected: Option<usize>,
    /// Why the last reload could not use the file.
    pub compile_error: Option<String>,
    /// The last reload kept the previous good copy of it.
    pub kept_previous: bool,
}

#[derive(Debug, Serialize)]
pub struct FeedsView {
    pub generation: u64,
    pub entries: usize,
    pub feeds: Vec<FeedView>,
}

pub(super) async fn feeds(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Principal::Org(mine) = state.principal(&headers)? {
        return Err(state.forbidden(&mine, "(feed sources)"));
    }
    Ok(axum::Json(view(&state)).into_response())
}

fn view(state: &AdminState) -> FeedsView {
    let remote: BTreeMap<String, SourceStatus> = state
        .sources
        .as_ref()
        .map(|r| r.list())
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.file.clone(), s))
        .collect();
    let (generation, entries, compiled) = match &state.health.reload {
        Some(status) => {
            let s = status.lock().unwrap_or_else(PoisonError::into_inner);
            (s.generation, s.entries, s.feeds.clone())
        }
        None => (0, 0, BTreeMap::new()),
    };
    let mut files: Vec<&String> = compiled.keys().chain(remote.keys()).collect();
    files.sort();
    files.dedup();
    let feeds = files
        .into_iter()
        .map(|file| {
            let remote = remote.get(file).cloned();
            let compiled = compiled.get(file);
            FeedView {
                file: file.clone(),
                source: remote.as_ref().map_or("file", |r| r.kind),
                remote,
                format: compiled.and_then(|c| c.format.clone()),
                entries: compiled.map(|c| c.entries),
                rejected: compiled.map(|c| c.rejected),
                compile_error: compiled.and_then(|c| c.error.clone()),
                kept_previous: compiled.is_some_and(|c| c.kept_previous),
            }
        })
        .collect();
    FeedsView {
        generation,
        entries,
        feeds,
    }
}
