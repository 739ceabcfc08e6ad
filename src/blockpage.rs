//! The block page: what a browser shows when a sinkholed name has sent it
//! to this host.
//!
//! The browser asks for `http://<blocked name>/...`; the `Host` header
//! names the site and the client address names the user's network. The
//! page says the site was blocked by the organisation's protective DNS,
//! with the name, the category and the reference of the hit record, which
//! the organisation's security team can look up in the hit log (API,
//! review page, `portcullis logs`), and a contact line from config.
//!
//! The record is the most recent sinkhole hit for this client and name in
//! the last ten minutes. The writer commits within milliseconds, but a
//! browser can be quicker, so a miss is retried briefly. Without a record
//! (another address, a record older than the window, the hit log off) the
//! page still explains the block, without a reference.
//!
//! No tracking and nothing external: one self-contained HTML document, no
//! scripts, no cookies, no links out, `Cache-Control: no-store`, and a CSP
//! that allows only the inline style. Everything taken from the request is
//! escaped. HTTPS visits cannot be shown a page (no certificate for the
//! blocked name can be valid); the browser shows its own error instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, PreEscaped, html};

use crate::config::Config;
use crate::hitlog::store::{Filter, Store};
use crate::hitlog::{Hit, format_ts, now_ms};
use crate::http_limits::{HttpLimits, LimitedListener, Peer};
use crate::server::connections::Caps;

/// How far back a hit record may be to explain this visit.
const WINDOW_MS: i64 = 10 * 60 * 1000;

/// What the page needs: where the hit log is, who the clients are, and the
/// default contact line.
pub struct BlockPage {
    database: PathBuf,
    /// Organisations as the serving policy has them now.
    policy: crate::server::PolicyHandle,
    contact: String,
}

impl BlockPage {
    pub fn new(config: &Config, policy: crate::server::PolicyHandle) -> BlockPage {
        BlockPage {
            database: crate::hitlog::writer::Settings::from_config(config).database,
            policy,
            contact: config.block_page.contact.clone(),
        }
    }
}

/// Bind the listener (so a busy port fails start-up, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (block page): {e}"),
        )
    })?;
    tracing::info!("block page listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Every path and method gets the page: the browser may have asked for
/// any URL on the blocked site.
pub fn router(state: Arc<BlockPage>) -> Router {
    Router::new().fallback(page).with_state(state)
}

/// Connections to the block page: every sinkholed browser of every
/// organisation may come, a few connections each; a page is one request,
/// so a connection idle for 10 s is done.
const LIMITS: HttpLimits = HttpLimits {
    caps: Caps {
        total: 4096,
        per_client: 32,
    },
    idle: std::time::Duration::from_secs(10),
};

/// Serve the router until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<BlockPage>) {
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    let listener = LimitedListener::new(listener, LIMITS, "block_page");
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "block page listener failed");
    }
}

/// The blocked name from the Host header: lower case, no port, no
/// trailing dot; `None` when it is not a name (an address, garbage).
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    // A bracketed IPv6 literal is an address, not a blocked name.
    if host.starts_with('[') {
        return None;
    }
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = crate::domain::normalize(host).ok()?;
    (!name.is_empty()).then_some(name)
}

/// The sinkhole hit that sent this client here, if the hit log has it.
async fn find_hit(database: PathBuf, client: std::net::IpAddr, name: String) -> Option<Hit> {
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (db, wanted) = (database.clone(), name.clone());
        let found = tokio::task::spawn_blocking(move || {
            let filter = Filter {
                since: Some(now_ms() - WINDOW_MS),
                client: Some(client),
                domain: Some(wanted.clone()),
                ..Filter::default()
            };
            let page = Store::open_reader(&db)?.hits(&filter, None, 20)?;
            Ok::<_, crate::hitlog::store::StoreError>(
                page.hits
                    .into_iter()
                    .find(|h| h.qname == wanted && h.action == "sinkhole"),
            )
        })
        .await;
        match found {
            Ok(Ok(Some(hit))) => return Some(hit),
            Ok(Ok(None)) => {}
            // No database yet, or unreadable: nothing to show, no retry.
            Ok(Err(error)) => {
                tracing::debug!(%error, "block page: hit log not readable");
                return None;
            }
            Err(_) => return None,
        }
    }
    None
}

async fn page(
    State(state): State<Arc<BlockPage>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let client = peer.ip().to_canonical();
    let name = host_name(&headers);
    let hit = match &name {
        Some(name) => find_hit(state.database.clone(), client, name.clone()).await,
        None => None,
    };
    let outcome = if hit.is_some() { "found" } else { "not_found" };
    ::metrics::counter!(crate::telemetry::BLOCK_PAGE_VIEWS, "record" => outcome).increment(1);
    let client_policy = state.policy.load();
    let orgs = &client_policy.orgs;
    let policy = orgs.lookup(client).map(|o| orgs.policy(o));
    let organisation = policy.map_or("your organisation", |p| p.name.as_str());
    let contact = policy
        .and_then(|p| p.contact.as_deref())
        .unwrap_or(&state.contact);
    let html = render(name.as_deref(), hit.as_ref(), organisation, contact);
    let mut response = (StatusCode::FORBIDDEN, html).into_response();
    let h = response.headers_mut();
    for (key, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(key, HeaderValue::from_static(value));
    }
    response
}

/// The page itself. maud escapes every value: the name comes from the
/// request's Host header, the category from a feed.
pub fn render(name: Option<&str>, hit: Option<&Hit>, organisation: &str, contact: &str) -> String {
    let shown = name.unwrap_or("this site");
    let row = |label: &str, id: &str, value: &str| {
        html! { dt { (label) } dd id=(id) { (value) } }
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { "Blocked: " (shown) }
                style { (PreEscaped(STYLE)) }
            }
            body { main {
                h1 { "This site has been blocked" }
                p id="summary" {
                    strong { (shown) } " was blocked by " (organisation) "'s protective DNS \
                    because it appears in threat intelligence as dangerous: it may spread \
                    malware, steal passwords or control infected computers."
                }
                dl {
                    (row("Site", "name", shown))
                    @match hit {
                        Some(hit) => {
                            (row("Category", "category", &hit.category))
                            (row("Reference", "reference", &hit.id.unwrap_or(0).to_string()))
                            (row("Time (UTC)", "time", &format_ts(hit.ts)))
                        }
                        None => (row("Reference", "reference",
                            "none found (the block was not recorded for this device in the last ten minutes)")),
                    }
                }
                p id="contact" {
                    @if contact.trim().is_empty() {
                        "If you need this site for your work, contact your IT or security team"
                    } @else {
                        (contact)
                    }
                    ". Quote the reference above."
                }
                p class="small" {
                    "This page keeps nothing about your visit; the block was recorded when \
                    the name was looked up."
                }
            } }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f4f4;color:#222;margin:0}\
main{max-width:40rem;margin:3rem auto;background:#fff;padding:2rem;border-top:6px solid #b00020}\
h1{margin-top:0;color:#b00020}dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem}\
dt{font-weight:bold}dd{margin:0;word-break:break-all}.small{color:#666;font-size:.85rem}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::{Stage, Transport};

    #[test]
    fn everything_from_the_request_is_escaped_and_nothing_is_external() {
        let hit = Hit {
            id: Some(42),
            ts: 0,
            org: Some("a".into()),
            client: "127.0.0.1".parse().unwrap(),
            transport: Transport::Udp,
            qname: "evil.example".into(),
            qtype: "A".into(),
            stage: Stage::Qname,
            matched: "evil.example".into(),
            feed: "f".into(),
            category: "<script>x</script>".into(),
            indicator: None,
            action: "sinkhole".into(),
            repeats: 1,
            last_ts: None,
            node: None,
        };
        let html = render(
            Some("evil.example"),
            Some(&hit),
            "Org <&>",
            "Call \"IT\" <x>",
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("Org &lt;&amp;&gt;"));
        assert!(html.contains(">42<"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<link") && !html.contains("<img") && !html.contains("<a "));
    }

    #[test]
    fn the_host_header_gives_a_normalised_name_or_nothing() {
        let host = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            host_name(&h)
        };
        assert_eq!(host("Evil.Example:8080").as_deref(), Some("evil.example"));
        assert_eq!(host("evil.example.").as_deref(), Some("evil.example"));
        assert_eq!(host("[::1]:80"), None);
        assert_eq!(host("<b>"), None);
        assert_eq!(host_name(&HeaderMap::new()), None);
    }
}
