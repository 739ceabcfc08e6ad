//! The TAXII 2.1 server: this service's sightings, read-only, on the
//! admin listener, behind the review API's bearer tokens.
//!
//! | route | what |
//! |---|---|
//! | `GET /taxii2/` | discovery: the one API root |
//! | `GET /taxii2/sightings/` | the API root |
//! | `GET /taxii2/sightings/collections/` | the collections this token may read |
//! | `GET .../collections/{id}/` | one collection |
//! | `GET .../collections/{id}/objects/` | its objects, paged (`added_after`, `limit`, `next`, `match[type]`, `match[id]`) |
//! | `GET .../collections/{id}/manifest/` | the same, as a manifest |
//! | `GET .../collections/{id}/objects/{object_id}/` | one object, by a walk of the collection |
//!
//! Each organisation has a collection of its own sightings, readable with
//! its token (and the operator's); the operator's token also reads one
//! across organisations, each named or all anonymous as `[share]
//! where_sighted` says. Another organisation's collection is a 403,
//! logged and counted as in the review API.
//!
//! An object's `date_added` is the time its count last moved (a
//! sighting's `modified`); a page is `limit` sightings with the objects
//! they refer to before them, so every page can be read alone. `match`
//! filters apply within a page. Nothing can be written (`can_write`
//! false; a POST is 405).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::review::ApiError;
use super::{AdminState, Principal};
use crate::clock::{format_ts, parse_ts};
use crate::hitlog::store::SightingCursor;
use crate::share::{Scope, Shared, Sharer, stix};

const TAXII: &str = "application/taxii+json;version=2.1";
const STIX: &str = "application/stix+json;version=2.1";
/// The most sightings a page holds, whatever `limit` asks.
const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 1_000;
/// How far a lookup by object id walks a collection.
const MAX_WALK: usize = 1_000_000;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/taxii2/", get(discovery))
        .route("/taxii2/sightings/", get(api_root))
        .route("/taxii2/sightings/collections/", get(collections))
        .route("/taxii2/sightings/collections/{id}/", get(collection))
        .route(
            "/taxii2/sightings/collections/{id}/objects/",
            get(objects).post(read_only),
        )
        .route(
            "/taxii2/sightings/collections/{id}/manifest/",
            get(manifest),
        )
        .route(
            "/taxii2/sightings/collections/{id}/objects/{object}/",
            get(object),
        )
}

/// A TAXII error message (section 3.6.1) with its status.
struct TaxiiError(StatusCode, String);

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.0.canonical_reason().unwrap_or("error"),
            "description": self.1,
            "http_status": self.0.as_u16().to_string(),
        });
        let mut response = (self.0, taxii_json(&body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
        }
        response
    }
}

impl From<ApiError> for TaxiiError {
    fn from(e: ApiError) -> Self {
        TaxiiError(e.0, e.1)
    }
}

fn taxii_json(body: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, TAXII)], body.to_string())
}

/// A request that does not accept TAXII 2.1 JSON is refused (406), as
/// the specification asks.
fn check_accept(headers: &HeaderMap) -> Result<(), TaxiiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|part| {
        let part = part.trim().to_ascii_lowercase().replace(' ', "");
        part.starts_with("*/*")
            || part == "application/taxii+json"
            || part.starts_with("application/taxii+json;version=2.1")
    });
    if ok {
        Ok(())
    } else {
        Err(TaxiiError(
            StatusCode::NOT_ACCEPTABLE,
            format!("this server speaks {TAXII} only; the request accepts {accept:?}"),
        ))
    }
}

/// A collection: whose sightings, and how it is named.
struct Collection {
    id: String,
    title: String,
    description: String,
    scope: CollectionScope,
}

enum CollectionScope {
    Org(String),
    All,
}

fn uuid(parts: &[&str]) -> String {
    stix::stix_id("x", parts)
        .trim_start_matches("x--")
        .to_owned()
}

impl AdminState {
    /// How sightings are shared; a 404 while `[share] taxii` is off.
    fn sharer(&self) -> Result<Sharer, TaxiiError> {
        self.access.load().sharer.clone().ok_or_else(|| {
            TaxiiError(
                StatusCode::NOT_FOUND,
                "the TAXII server is off ([share] taxii = false)".into(),
            )
        })
    }

    /// The collections `principal` may read.
    fn collections_for(&self, principal: &Principal) -> Result<Vec<Collection>, TaxiiError> {
        let sharer = self.sharer()?;
        let org_collection = |id: &str, name: &str| Collection {
            id: uuid(&["collection", &sharer.name, id]),
            title: format!("Sightings: {name}"),
            description: format!(
                "What {} blocked for {name}: one STIX sighting per indicator and day.",
                sharer.name
            ),
            scope: CollectionScope::Org(id.to_owned()),
        };
        match principal {
            Principal::Org(org) => Ok(vec![org_collection(&org.id, &org.name)]),
            Principal::Operator => {
                let mut all: Vec<Collection> = self
                    .access
                    .load()
                    .orgs
                    .iter()
                    .map(|o| org_collection(&o.id, &o.name))
                    .collect();
                let anonymous = sharer.where_sighted == crate::config::WhereSighted::Service;
                all.push(Collection {
                    id: uuid(&["collection", &sharer.name, "*"]),
                    title: "Sightings: all organisations".into(),
                    description: if anonymous {
                        format!(
                            "What {} blocked, every organisation added up and none named.",
                            sharer.name
                        )
                    } else {
                        format!("What {} blocked, by organisation.", sharer.name)
                    },
                    scope: CollectionScope::All,
                });
                Ok(all)
            }
        }
    }

    /// The collection `id`, if this token may read it: another
    /// organisation's is a 403 (logged and counted), an unknown one 404.
    fn find_collection(&self, headers: &HeaderMap, id: &str) -> Result<Collection, TaxiiError> {
        check_accept(headers)?;
        let principal = self.principal(headers)?;
        let mine = self.collections_for(&principal)?;
        if let Some(found) = mine.into_iter().find(|c| c.id == id) {
            return Ok(found);
        }
        if let Principal::Org(org) = &principal {
            let theirs = self
                .collections_for(&Principal::Operator)?
                .into_iter()
                .find(|c| c.id == id);
            if let Some(Collection {
                scope: CollectionScope::Org(other),
                ..
            }) = theirs
            {
                return Err(self.forbidden(org, &other).into());
            }
            if theirs.is_some() {
                return Err(self.forbidden(org, "*").into());
            }
        }
        Err(TaxiiError(
            StatusCode::NOT_FOUND,
            format!("no collection {id:?} here"),
        ))
    }
}

fn collection_json(c: &Collection) -> Value {
    json!({
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "can_read": true,
        "can_write": false,
        "media_types": [STIX],
    })
}

async fn discovery(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    check_accept(&headers)?;
    let name = state.sharer()?.name;
    state.principal(&headers)?;
    Ok(taxii_json(&json!({
        "title": format!("{name}: sightings"),
        "description": "What this protective DNS service blocked, as STIX 2.1 sightings.",
        "default": "/taxii2/sightings/",
        "api_roots": ["/taxii2/sightings/"],
    }))
    .into_response())
}

async fn api_root(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    check_accept(&headers)?;
    state.sharer()?;
    state.principal(&headers)?;
    Ok(taxii_json(&json!({
        "title": "Sightings",
        "description": "One collection per organisation, and one across them for the operator.",
        "versions": [TAXII],
        "max_content_length": 0,
    }))
    .into_response())
}

async fn collections(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    check_accept(&headers)?;
    let principal = state.principal(&headers)?;
    let list: Vec<Value> = state
        .collections_for(&principal)?
        .iter()
        .map(collection_json)
        .collect();
    Ok(taxii_json(&json!({ "collections": list })).into_response())
}

async fn collection(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, TaxiiError> {
    let c = state.find_collection(&headers, &id)?;
    Ok(taxii_json(&collection_json(&c)).into_response())
}

async fn read_only() -> TaxiiError {
    TaxiiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "these collections are read-only (can_write is false)".into(),
    )
}

#[derive(Deserialize, Default)]
struct PageQuery {
    added_after: Option<String>,
    limit: Option<String>,
    next: Option<String>,
    #[serde(rename = "match[type]")]
    match_type: Option<String>,
    #[serde(rename = "match[id]")]
    match_id: Option<String>,
}

/// A page of a collection's objects, and whether there is more.
struct ObjectPage {
    objects: Vec<Shared>,
    next: Option<String>,
}

impl AdminState {
    async fn page(&self, c: &Collection, q: &PageQuery) -> Result<ObjectPage, TaxiiError> {
        let limit = match q.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => n.min(MAX_LIMIT),
                _ => {
                    return Err(TaxiiError(
                        StatusCode::BAD_REQUEST,
                        format!("limit {text:?} is not a positive whole number"),
                    ));
                }
            },
        };
        let after = match (&q.next, &q.added_after) {
            (Some(next), _) => Some(SightingCursor::decode(next).ok_or_else(|| {
                TaxiiError(
                    StatusCode::BAD_REQUEST,
                    "next is not a cursor this server gave".into(),
                )
            })?),
            (None, Some(text)) => Some(SightingCursor::after_time(parse_ts(text).ok_or_else(
                || {
                    TaxiiError(
                        StatusCode::BAD_REQUEST,
                        format!("added_after {text:?} is not an RFC 3339 time"),
                    )
                },
            )?)),
            (None, None) => None,
        };
        let sharer = self.sharer()?;
        let source = self.source.clone();
        let scope = match &c.scope {
            CollectionScope::Org(org) => Some(org.clone()),
            CollectionScope::All => None,
        };
        let page = tokio::task::spawn_blocking(move || {
            let view = sharer.view(match &scope {
                Some(org) => Scope::Org(org),
                None => Scope::All,
            });
            source
                .sightings(view, after.as_ref(), None, limit)
                .map(|page| (sharer.objects(&page.rows), page.next))
        })
        .await
        .map_err(|e| TaxiiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| TaxiiError::from(ApiError::from(e)))?;
        let (mut objects, next) = page;
        objects.retain(|o| {
            q.match_type
                .as_deref()
                .is_none_or(|t| t.split(',').any(|t| o.object["type"] == t))
                && q.match_id
                    .as_deref()
                    .is_none_or(|i| i.split(',').any(|i| o.object["id"] == i))
        });
        Ok(ObjectPage {
            objects,
            next: next.map(|n| n.encode()),
        })
    }
}

/// The page's envelope headers: the first and last `date_added`.
fn date_headers(page: &ObjectPage) -> Vec<(&'static str, String)> {
    let first = page.objects.iter().map(|o| o.date_added).min();
    let last = page.objects.iter().map(|o| o.date_added).max();
    let mut headers = Vec::new();
    if let (Some(first), Some(last)) = (first, last) {
        headers.push(("X-TAXII-Date-Added-First", format_ts(first)));
        headers.push(("X-TAXII-Date-Added-Last", format_ts(last)));
    }
    headers
}

fn with_headers(body: &Value, extra: Vec<(&'static str, String)>) -> Response {
    let mut response = taxii_json(body).into_response();
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn envelope(page: &ObjectPage, items: Vec<Value>) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("more".into(), page.next.is_some().into());
    if let Some(next) = &page.next {
        body.insert("next".into(), next.clone().into());
    }
    if !items.is_empty() {
        body.insert("objects".into(), items.into());
    }
    Value::Object(body)
}

async fn objects(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, TaxiiError> {
    let c = state.find_collection(&headers, &id)?;
    let page = state.page(&c, &q).await?;
    let items = page.objects.iter().map(|o| o.object.clone()).collect();
    Ok(with_headers(&envelope(&page, items), date_headers(&page)))
}

async fn manifest(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, TaxiiError> {
    let c = state.find_collection(&headers, &id)?;
    let page = state.page(&c, &q).await?;
    let items = page
        .objects
        .iter()
        .map(|o| {
            json!({
                "id": o.object["id"],
                "date_added": format_ts(o.date_added),
                "version": o.object.get("modified").unwrap_or(&o.object["created"]),
                "media_type": STIX,
            })
        })
        .collect();
    Ok(with_headers(&envelope(&page, items), date_headers(&page)))
}

async fn object(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path((id, object)): Path<(String, String)>,
) -> Result<Response, TaxiiError> {
    let c = state.find_collection(&headers, &id)?;
    // Ids are hashes: the object is found by walking the collection.
    let mut q = PageQuery {
        limit: Some(MAX_LIMIT.to_string()),
        ..PageQuery::default()
    };
    let mut walked = 0;
    loop {
        let page = state.page(&c, &q).await?;
        walked += MAX_LIMIT;
        if let Some(found) = page.objects.iter().rev().find(|o| o.object["id"] == object) {
            let page = ObjectPage {
                objects: vec![Shared {
                    object: found.object.clone(),
                    date_added: found.date_added,
                }],
                next: None,
            };
            let items = vec![found.object.clone()];
            return Ok(with_headers(&envelope(&page, items), date_headers(&page)));
        }
        match page.next {
            Some(next) if walked < MAX_WALK => q.next = Some(next),
            _ => break,
        }
    }
    Err(TaxiiError(
        StatusCode::NOT_FOUND,
        format!("no object {object:?} in this collection"),
    ))
}
