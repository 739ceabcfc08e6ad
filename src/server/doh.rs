//! DNS over HTTPS (RFC 8484): GET (`?dns=` base64url) and POST
//! (`application/dns-message`) on `/dns-query`, and on
//! `/dns-query/{key}` for an organisation's roaming devices; HTTP/2 and
//! HTTP/1.1, chosen by ALPN.
//!
//! hickory-server's DoH speaks HTTP/2 only and serves one fixed path, so
//! this listener is hyper's (already here under reqwest and axum) over
//! tokio-rustls; the query itself goes to the same handler as every
//! other transport.
//!
//! HTTP answers: 200 with the DNS response; 400 for a request that holds
//! no DNS message; 403 for a roaming key no organisation holds; 404 for
//! any other path; 405 for another method; 413 for a body over 65,535
//! octets; 415 for a POST of another type; 504 where the `drop` action
//! sends no DNS response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::Handler;
use super::connections::Connections;
use super::decide::{Attribution, Via};
use super::roaming::Roaming;
use super::stream::{StreamSettings, Tls, accept_loop, handshake_failed};
use crate::hitlog::{Transport, now_ms};
use crate::telemetry;

const MEDIA_TYPE: &str = "application/dns-message";
const PATH: &str = "/dns-query";
/// The largest DNS message.
const MAX_MESSAGE: usize = 65_535;

/// Accept DoH connections on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    connections: Arc<Connections>,
    settings: StreamSettings,
    tls: Tls,
) {
    accept_loop(listener, Transport::Doh, connections, move |stream, src| {
        connection(stream, src, Arc::clone(&handler), tls.clone(), settings)
    })
    .await;
}

async fn connection(
    stream: TcpStream,
    src: SocketAddr,
    handler: Arc<Handler>,
    tls: Tls,
    settings: StreamSettings,
) {
    let stream = match tokio::time::timeout(settings.idle, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(client = %src, %error, "DoH handshake failed");
            handshake_failed(Transport::Doh);
            return;
        }
        Err(_) => {
            tracing::debug!(client = %src, "DoH handshake timed out");
            handshake_failed(Transport::Doh);
            return;
        }
    };
    let last_read = Arc::new(AtomicI64::new(now_ms()));
    let io = TokioIo::new(Watched {
        inner: stream,
        last_read: Arc::clone(&last_read),
    });
    let roaming = tls.roaming;
    let service = hyper::service::service_fn(move |request| {
        let handler = Arc::clone(&handler);
        let roaming = Arc::clone(&roaming);
        async move { Ok::<_, Infallible>(respond(request, src, &handler, &roaming).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.idle);
    builder
        .http2()
        .max_concurrent_streams(u32::try_from(settings.max_in_flight).unwrap_or(u32::MAX));
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let idle_ms = i64::try_from(settings.idle.as_millis()).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(settings.idle / 2 + Duration::from_millis(1));
    let mut closing = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(client = %src, %error, "DoH connection ended");
                }
                return;
            }
            _ = ticks.tick(), if !closing => {
                // Idle: nothing read for the idle time. Requests in
                // progress still finish (a graceful close).
                if now_ms() - last_read.load(Ordering::Relaxed) > idle_ms {
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// One HTTP request to its HTTP response.
async fn respond(
    request: Request<Incoming>,
    src: SocketAddr,
    handler: &Handler,
    roaming: &Roaming,
) -> Response<Full<Bytes>> {
    let attribution = match request.uri().path().strip_prefix(PATH) {
        Some("") => Attribution::Address,
        Some(rest) => match rest.strip_prefix('/') {
            Some(key) if !key.is_empty() && !key.contains('/') => roaming.by_key(key),
            _ => return error(StatusCode::NOT_FOUND, "not found"),
        },
        None => return error(StatusCode::NOT_FOUND, "not found"),
    };
    if attribution == Attribution::UnknownKey {
        return error(StatusCode::FORBIDDEN, "unknown key");
    }
    let query = match *request.method() {
        Method::GET => match get_query(request.uri().query()) {
            Ok(query) => query,
            Err((status, text)) => return error(status, text),
        },
        Method::POST => match post_query(request).await {
            Ok(query) => query,
            Err((status, text)) => return error(status, text),
        },
        _ => {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, POST"));
            return response;
        }
    };
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return error(StatusCode::BAD_REQUEST, "not a DNS query");
    }
    let via = Via {
        transport: Transport::Doh,
        attribution,
    };
    let Some(wire) = handler.answer_message(query, src, via).await else {
        return error(StatusCode::GATEWAY_TIMEOUT, "no answer");
    };
    let max_age = min_ttl(&wire);
    let mut response = Response::new(Full::new(Bytes::from(wire)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(CACHE_CONTROL, value);
    }
    response
}

/// The `dns` parameter of a GET, base64url without padding (RFC 8484
/// 4.1; padding is tolerated).
/// Why a request holds no query: the HTTP status and a line of text.
type Reject = (StatusCode, &'static str);

fn get_query(query: Option<&str>) -> Result<Vec<u8>, Reject> {
    let encoded = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("dns="))
        .ok_or((StatusCode::BAD_REQUEST, "no dns parameter"))?;
    let encoded = encoded.trim_end_matches('=');
    if encoded.len() > MAX_MESSAGE * 4 / 3 + 4 {
        return Err((StatusCode::URI_TOO_LONG, "dns parameter too long"));
    }
    data_encoding::BASE64URL_NOPAD
        .decode(encoded.as_bytes())
        .map_err(|_| (StatusCode::BAD_REQUEST, "dns parameter is not base64url"))
}

/// The body of a POST, `application/dns-message`, at most 65,535 octets.
async fn post_query(request: Request<Incoming>) -> Result<Vec<u8>, Reject> {
    let media_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() != Some(MEDIA_TYPE) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/dns-message",
        ));
    }
    match Limited::new(request.into_body(), MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes().to_vec()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "a DNS message is at most 65535 octets",
        )),
        Err(_) => Err((StatusCode::BAD_REQUEST, "request body broken")),
    }
}

fn error(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    ::metrics::counter!(telemetry::DOH_ERRORS, "status" => status.as_str().to_owned()).increment(1);
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// RFC 8484 5.1: an HTTP cache may keep the answer no longer than its
/// smallest TTL (0 for a response without records).
fn min_ttl(wire: &[u8]) -> u32 {
    let Ok(message) = hickory_proto::op::Message::from_vec(wire) else {
        return 0;
    };
    message
        .answers
        .iter()
        .chain(&message.authorities)
        .map(|r| r.ttl)
        .min()
        .unwrap_or(0)
}

/// A stream that notes when it last read anything, for the idle timeout
/// hyper has no setting for over HTTP/2.
struct Watched<S> {
    inner: S,
    last_read: Arc<AtomicI64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_read.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_takes_base64url_with_or_without_padding() {
        let wire = [0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xFF];
        let plain = data_encoding::BASE64URL_NOPAD.encode(&wire);
        let padded = data_encoding::BASE64URL.encode(&wire);
        for encoded in [plain, padded] {
            let query = format!("x=1&dns={encoded}");
            assert_eq!(get_query(Some(&query)).unwrap(), wire);
        }
        assert_eq!(
            get_query(Some("dns=!!")).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(get_query(None).unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_cache_lifetime_is_the_smallest_ttl() {
        use hickory_proto::op::{Message, MessageType, OpCode};
        use hickory_proto::rr::{Name, RData, Record, rdata::A};
        let name = Name::from_ascii("a.example.").unwrap();
        let mut message = Message::new(1, MessageType::Response, OpCode::Query);
        for ttl in [300, 60, 900] {
            message.add_answer(Record::from_rdata(
                name.clone(),
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        assert_eq!(min_ttl(&message.to_vec().unwrap()), 60);
        let empty = Message::new(1, MessageType::Response, OpCode::Query);
        assert_eq!(min_ttl(&empty.to_vec().unwrap()), 0);
    }
}
