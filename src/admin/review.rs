//! The review API: bearer-token access to one organisation's hit records
//! and reports (or every organisation's, for the operator's token). The
//! routes are listed in the admin module's doc.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AdminState, OrgAccess, Principal};
use crate::hitlog::reader::ReadError;
use crate::hitlog::store::{Cursor, Filter};
use crate::hitlog::{now_ms, parse_time};
use crate::report::{self, OutputFormat};
use crate::telemetry;

pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

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

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        tracing::warn!(error = %e, "hit log read failed");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn denied(reason: &'static str) {
    ::metrics::counter!(telemetry::API_DENIED, "reason" => reason).increment(1);
}

impl AdminState {
    pub(super) fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
        let access = self.access.load();
        if access.operator_token_sha256.as_deref() == Some(hash.as_str()) {
            return Ok(Principal::Operator);
        }
        match access
            .orgs
            .iter()
            .find(|o| o.token_sha256.as_deref() == Some(hash.as_str()))
        {
            Some(org) => Ok(Principal::Org(org.clone())),
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
        if !self.access.load().orgs.iter().any(|o| o.id == org) {
            return match principal {
                Principal::Operator => Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no organisation {org:?}"),
                )),
                // Do not tell another organisation which ids exist.
                Principal::Org(mine) => Err(self.forbidden(&mine, org)),
            };
        }
        match principal {
            Principal::Operator => Ok(org.to_owned()),
            Principal::Org(mine) if mine.id == org => Ok(org.to_owned()),
            Principal::Org(mine) => Err(self.forbidden(&mine, org)),
        }
    }

    pub(super) fn forbidden(&self, mine: &OrgAccess, asked: &str) -> ApiError {
        let mine = &mine.id;
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
pub(super) struct WhoAmI {
    operator: bool,
    orgs: Vec<OrgInfo>,
}

#[derive(Serialize)]
pub(super) struct OrgInfo {
    id: String,
    name: String,
}

pub(super) async fn whoami(
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
            orgs: state.access.load().orgs.iter().map(info).collect(),
        },
        Principal::Org(mine) => WhoAmI {
            operator: false,
            orgs: vec![info(&mine)],
        },
    }))
}

/// Query parameters of the hits and report routes.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
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

pub(super) async fn hits(
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
    let source = state.source.clone();
    let page = blocking(move || source.hits(&filter, after, limit)).await?;
    Ok(no_store(axum::Json(page).into_response()))
}

pub(super) async fn hit(
    State(state): State<Arc<AdminState>>,
    Path((org, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let org = state.authorise(&headers, &org)?;
    let source = state.source.clone();
    match blocking(move || source.get(id, Some(&org))).await? {
        Some(hit) => Ok(no_store(axum::Json(hit).into_response())),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no record {id} for this organisation"),
        )),
    }
}

pub(super) async fn report_org(
    State(state): State<Arc<AdminState>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let org = state.authorise(&headers, &org)?;
    run_report(&state, params, Some(org)).await
}

pub(super) async fn report_all(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    match state.principal(&headers)? {
        Principal::Operator => run_report(&state, params, None).await,
        Principal::Org(mine) => Err(state.forbidden(&mine, "(all organisations)")),
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
    let source = state.source.clone();
    let r = blocking(move || source.report(&filter, since, until, top)).await?;
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
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
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
    fn token_hashes_are_lower_case_hex_sha256() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

/// `GET /api/v1/check` parameters.
#[derive(Debug, Deserialize)]
pub(super) struct CheckParams {
    name: String,
    /// The query type for `resolve` (default A).
    #[serde(rename = "type")]
    qtype: Option<String>,
    client: Option<String>,
    org: Option<String>,
    #[serde(default)]
    resolve: bool,
}

/// One name against the live list and an organisation's policy, resolved
/// as its client would be with `resolve=true`. The operator may check for
/// any client or organisation; an organisation's token for its own only.
pub(super) async fn check(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(params): Query<CheckParams>,
) -> Result<Response, ApiError> {
    let principal = state.principal(&headers)?;
    let org = match (principal, params.org.filter(|o| !o.is_empty())) {
        (Principal::Operator, org) => org,
        (Principal::Org(mine), Some(asked)) if asked != mine.id => {
            return Err(state.forbidden(&mine, &asked));
        }
        (Principal::Org(mine), _) => Some(mine.id),
    };
    let client = match params.client.as_deref().filter(|s| !s.is_empty()) {
        Some(c) => Some(
            c.parse::<IpAddr>()
                .map_err(|_| bad(format!("client {c:?} is not an IP address")))?,
        ),
        None => None,
    };
    let qtype = match params.qtype.as_deref().filter(|s| !s.is_empty()) {
        Some(t) => t
            .to_ascii_uppercase()
            .parse::<hickory_proto::rr::RecordType>()
            .map_err(|_| bad(format!("type {t:?} is not a record type")))?,
        None => hickory_proto::rr::RecordType::A,
    };
    let Some(checker) = state.checker.clone() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no resolver runs in this process".into(),
        ));
    };
    let request = crate::server::check::CheckRequest {
        name: params.name,
        qtype,
        client,
        org,
        resolve: params.resolve,
    };
    match checker.check_live(&request).await {
        Ok(report) => Ok(no_store(axum::Json(report).into_response())),
        Err(error) => Err(bad(error.to_string())),
    }
}
