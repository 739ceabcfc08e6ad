//! The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, the review
//! API and the review web page.
//!
//! It binds 127.0.0.1:9153 by default: metrics and hit records are not for
//! the internet. The review API is behind bearer tokens. Config holds only
//! their SHA-256 hashes; an organisation's token sees that organisation,
//! the operator's token sees every one. A token for one organisation
//! asking for another gets 403 and a warning in the log (an attempt to
//! read someone else's data is worth a look).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/whoami` | the organisations this token may see |
//! | `GET /api/v1/orgs/{org}/hits` | records, newest first, paged (`after`, `limit`) |
//! | `GET /api/v1/orgs/{org}/hits/{ref}` | one record by its reference |
//! | `GET /api/v1/orgs/{org}/report` | the report (`format=json|csv|html`) |
//! | `GET /api/v1/report` | across organisations (operator only) |
//!
//! Filters are query parameters: `since`, `until` (a duration back from
//! now like `24h`, an RFC 3339 time, or a date), `client`, `domain`,
//! `category`. The web page at `/` is three static files compiled into the
//! binary that call the same API from the browser.
//!
//! Database reads run on the blocking pool with their own read-only
//! connection: in WAL mode they never hold up the writer.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::hitlog::store::{Cursor, Filter, Store, StoreError};
use crate::hitlog::{now_ms, parse_time};
use crate::report::{self, OutputFormat};
use crate::telemetry;

/// Everything the admin routes read.
pub struct AdminState {
    /// `None` when metrics are not recorded in this process.
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub database: PathBuf,
    pub orgs: Vec<OrgAccess>,
    pub operator_token_sha256: Option<String>,
    pub health: Arc<crate::health::Health>,
}

/// One organisation as the API knows it.
pub struct OrgAccess {
    pub id: String,
    pub name: String,
    pub token_sha256: Option<String>,
}

impl AdminState {
    pub fn new(
        config: &Config,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
        health: Arc<crate::health::Health>,
    ) -> AdminState {
        AdminState {
            prometheus,
            database: config.hitlog.database.clone(),
            orgs: config
                .organisations
                .iter()
                .map(|o| OrgAccess {
                    id: o.id.clone(),
                    name: o.name.clone(),
                    token_sha256: o.token_sha256.clone(),
                })
                .collect(),
            operator_token_sha256: config.admin.operator_token_sha256.clone(),
            health,
        }
    }
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/report", get(report_all))
        .route("/api/v1/orgs/{org}/hits", get(hits))
        .route("/api/v1/orgs/{org}/hits/{id}", get(hit))
        .route("/api/v1/orgs/{org}/report", get(report_org))
        .route(
            "/",
            get(|| async { page(PAGE_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(PAGE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { page(PAGE_CSS, "text/css; charset=utf-8") }),
        )
        .with_state(state)
}

/// Bind the admin listener (before serving, so a taken port fails start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (admin): {e}"))
    })?;
    tracing::info!("admin listening on {}", listener.local_addr()?);
    Ok(listener)
}

const PAGE_HTML: &str = include_str!("admin/index.html");
const PAGE_JS: &str = include_str!("admin/app.js");
const PAGE_CSS: &str = include_str!("admin/app.css");

/// The page's files: nothing external, nothing inline, so a strict
/// Content-Security-Policy holds.
fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                 img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> Response {
    match &state.prometheus {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not recorded\n").into_response(),
    }
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let report = state.health.readiness();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(report)).into_response()
}

/// Who a request is.
enum Principal {
    Operator,
    Org(usize),
}

/// A refused or failed API request, as JSON `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "hit log read failed");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn denied(reason: &'static str) {
    ::metrics::counter!(telemetry::API_DENIED, "reason" => reason).increment(1);
}

impl AdminState {
    fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            denied("no_token");
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "an Authorization: Bearer token is required".into(),
            ));
        };
        let hash = hex(&Sha256::digest(token.as_bytes()));
        if self.operator_token_sha256.as_deref() == Some(hash.as_str()) {
            return Ok(Principal::Operator);
        }
        match self
            .orgs
            .iter()
            .position(|o| o.token_sha256.as_deref() == Some(hash.as_str()))
        {
            Some(i) => Ok(Principal::Org(i)),
            None => {
                denied("bad_token");
                Err(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "the token is not valid".into(),
                ))
            }
        }
    }

    /// The organisation in the path, if this principal may see it.
    fn authorise(&self, headers: &HeaderMap, org: &str) -> Result<String, ApiError> {
        let principal = self.principal(headers)?;
        let Some(index) = self.orgs.iter().position(|o| o.id == org) else {
            return match principal {
                Principal::Operator => Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no organisation {org:?}"),
                )),
                // Do not tell another organisation which ids exist.
                Principal::Org(mine) => Err(self.forbidden(mine, org)),
            };
        };
        match principal {
            Principal::Operator => Ok(org.to_owned()),
            Principal::Org(mine) if mine == index => Ok(org.to_owned()),
            Principal::Org(mine) => Err(self.forbidden(mine, org)),
        }
    }

    fn forbidden(&self, mine: usize, asked: &str) -> ApiError {
        let mine = &self.orgs[mine].id;
        tracing::warn!(token_org = %mine, asked_for = %asked, "API: a token asked for another organisation's data");
        denied("other_org");
        ApiError(
            StatusCode::FORBIDDEN,
            format!("this token is for organisation {mine:?} only"),
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize)]
struct WhoAmI {
    operator: bool,
    orgs: Vec<OrgInfo>,
}

#[derive(Serialize)]
struct OrgInfo {
    id: String,
    name: String,
}

async fn whoami(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<axum::Json<WhoAmI>, ApiError> {
    let info = |o: &OrgAccess| OrgInfo {
        id: o.id.clone(),
        name: o.name.clone(),
    };
    Ok(axum::Json(match state.principal(&headers)? {
        Principal::Operator => WhoAmI {
            operator: true,
            orgs: state.orgs.iter().map(info).collect(),
        },
        Principal::Org(i) => WhoAmI {
            operator: false,
            orgs: vec![info(&state.orgs[i])],
        },
    }))
}

/// Query parameters of the hits and report routes.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {
    since: Option<String>,
    until: Option<String>,
    client: Option<String>,
    domain: Option<String>,
    category: Option<String>,
    /// Paging: the `next` value of the previous page.
    after: Option<String>,
    limit: Option<usize>,
    /// Report: rows per ranking.
    top: Option<usize>,
    /// Report: json (default), csv or html.
    format: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

impl Params {
    fn filter(&self, org: Option<String>) -> Result<Filter, ApiError> {
        let now = now_ms();
        let time = |t: &Option<String>| {
            t.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(bad)
        };
        let client = match self.client.as_deref().filter(|s| !s.is_empty()) {
            Some(c) => Some(
                c.parse::<IpAddr>()
                    .map_err(|_| bad(format!("client {c:?} is not an IP address")))?,
            ),
            None => None,
        };
        let domain = match self.domain.as_deref().filter(|s| !s.is_empty()) {
            Some(d) => {
                Some(crate::domain::normalize(d).map_err(|e| bad(format!("domain {d:?}: {e}")))?)
            }
            None => None,
        };
        Ok(Filter {
            org,
            since: time(&self.since)?,
            until: time(&self.until)?,
            client,
            domain,
            category: self.category.clone().filter(|s| !s.is_empty()),
        })
    }
}

/// Largest page the API returns.
const MAX_LIMIT: usize = 1000;

async fn hits(
    State(state): State<Arc<AdminState>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let org = state.authorise(&headers, &org)?;
    let filter = params.filter(Some(org))?;
    let after = match params.after.as_deref().filter(|s| !s.is_empty()) {
        Some(a) => {
            Some(Cursor::parse(a).ok_or_else(|| bad(format!("after {a:?} is not a page cursor")))?)
        }
        None => None,
    };
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let db = state.database.clone();
    let page = blocking(move || Store::open_reader(&db)?.hits(&filter, after, limit)).await?;
    Ok(no_store(axum::Json(page).into_response()))
}

async fn hit(
    State(state): State<Arc<AdminState>>,
    Path((org, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = state.authorise(&headers, &org)?;
    let db = state.database.clone();
    match blocking(move || Store::open_reader(&db)?.get(id, Some(&org))).await? {
        Some(hit) => Ok(no_store(axum::Json(hit).into_response())),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no record {id} for this organisation"),
        )),
    }
}

async fn report_org(
    State(state): State<Arc<AdminState>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let org = state.authorise(&headers, &org)?;
    run_report(&state, params, Some(org)).await
}

async fn report_all(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    match state.principal(&headers)? {
        Principal::Operator => run_report(&state, params, None).await,
        Principal::Org(mine) => Err(state.forbidden(mine, "(all organisations)")),
    }
}

/// Default report range: the last 30 days.
const DEFAULT_REPORT_DAYS: i64 = 30;

async fn run_report(
    state: &AdminState,
    params: Params,
    org: Option<String>,
) -> Result<Response, ApiError> {
    let format = match params.format.as_deref().unwrap_or("json") {
        "json" => OutputFormat::Json,
        "csv" => OutputFormat::Csv,
        "html" => OutputFormat::Html,
        other => return Err(bad(format!("format {other:?}: use json, csv or html"))),
    };
    let mut filter = params.filter(org)?;
    let now = now_ms();
    let since = filter
        .since
        .take()
        .unwrap_or_else(|| crate::hitlog::store::whole_days_since(now, DEFAULT_REPORT_DAYS));
    let until = filter.until.take().unwrap_or(now + 1);
    if since >= until {
        return Err(bad("since must be before until".into()));
    }
    let top = params.top.unwrap_or(20).clamp(1, 1000);
    let db = state.database.clone();
    let r = blocking(move || Store::open_reader(&db)?.report(&filter, since, until, top)).await?;
    let response = match format {
        OutputFormat::Json => axum::Json(r).into_response(),
        other => {
            let body = report::report(&r, other)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let content_type = if other == OutputFormat::Csv {
                "text/csv; charset=utf-8"
            } else {
                "text/html; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
    };
    Ok(no_store(response))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_uses_no_inline_script_or_external_resource() {
        assert!(PAGE_HTML.contains("<script src=\"app.js\""));
        assert!(!PAGE_HTML.contains("<script>"));
        for text in [PAGE_HTML, PAGE_JS, PAGE_CSS] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // Data goes into the DOM as text, never as markup.
        assert!(!PAGE_JS.contains("innerHTML"));
    }

    #[test]
    fn token_hashes_are_lower_case_hex_sha256() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
