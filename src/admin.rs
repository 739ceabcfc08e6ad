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
//! | `GET /api/v1/check` | one name against the live list and policy (`name`, `type`, `client`, `org`, `resolve`) |
//! | `GET /api/v1/feeds` | every feed file and remote source: version, last attempt and success, entries, last failure (operator only) |
//! | `GET /taxii2/...` | the sightings as TAXII 2.1 collections (see the `taxii` module) |
//!
//! Filters are query parameters: `since`, `until` (a duration back from
//! now like `24h`, an RFC 3339 time, or a date), `client`, `domain`,
//! `category`. The web page at `/` is three static files compiled into the
//! binary that call the same API from the browser.
//!
//! Database reads run on the blocking pool with their own read-only
//! connection: in WAL mode they never hold up the writer.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod feeds;
mod review;
mod taxii;

use review::{check, hit, hits, report_all, report_org, whoami};

use crate::config::Config;

/// Everything the admin routes read.
pub struct AdminState {
    /// `None` when metrics are not recorded in this process.
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Where the review API reads records: the node's store, or the
    /// fleet's.
    pub source: crate::hitlog::reader::HitSource,
    /// Organisations and tokens; a config reload swaps them whole, and a
    /// new token works from the next request.
    pub access: Arc<arc_swap::ArcSwap<Access>>,
    pub health: Arc<crate::health::Health>,
    /// The running resolver, for `/api/v1/check`; `None` where the admin
    /// routes run without one (tests of the review API).
    pub checker: Option<Arc<crate::server::Handler>>,
    /// What the remote feed sources last did, for `/api/v1/feeds`.
    pub sources: Option<Arc<crate::sources::Registry>>,
}

/// Who may read what: each organisation's token, and the operator's.
pub struct Access {
    pub orgs: Vec<OrgAccess>,
    pub operator_token_sha256: Option<String>,
    /// How sightings are shared (`[share]`); `None`: no TAXII server.
    pub sharer: Option<crate::share::Sharer>,
}

impl Access {
    pub fn from_config(config: &Config) -> Access {
        Access {
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
            sharer: config
                .share
                .taxii
                .then(|| crate::share::Sharer::from_config(config)),
        }
    }
}

/// One organisation as the API knows it.
#[derive(Clone)]
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
            source: crate::hitlog::reader::HitSource::from_config(config),
            access: Arc::new(arc_swap::ArcSwap::from_pointee(Access::from_config(config))),
            health,
            checker: None,
            sources: None,
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
        .route("/api/v1/check", get(check))
        .route("/api/v1/feeds", get(feeds::feeds))
        .route("/api/v1/orgs/{org}/hits", get(hits))
        .route("/api/v1/orgs/{org}/hits/{id}", get(hit))
        .route("/api/v1/orgs/{org}/report", get(report_org))
        .merge(taxii::routes())
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
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The headers every admin response carries (the page's own, stricter
/// policy stands where it set one): nothing here is meant to be framed,
/// sniffed into another type, or sent on as a referrer, and the API's JSON
/// is no document to run anything in.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
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
    /// The organisation whose token it presented, as the access list was
    /// when it was checked.
    Org(OrgAccess),
}

/// A refused or failed API request, as JSON `{"error": ...}`.
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
}
