//! Limits for the admin and block-page HTTP listeners: connection caps
//! (total and per client address) and an idle timeout, so that a client
//! that opens connections and sends nothing, or trickles a request, cannot
//! take the file descriptors the DNS listeners need, or the operator's
//! `/healthz`. The same counting as the DNS stream transports
//! ([`crate::server::connections`]), one budget per listener; refusals
//! show in `portcullis_connections_refused_total{transport="admin"}` (or
//! `block_page`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::server::connections::{Admitted, Caps, Connections};

/// The limits of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub caps: Caps,
    /// A connection that neither reads nor writes for this long is closed.
    pub idle: Duration,
}

/// A listener for `axum::serve` that admits connections under the caps
/// and closes idle ones.
pub struct LimitedListener {
    inner: TcpListener,
    connections: Arc<Connections>,
    label: &'static str,
    idle: Duration,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: HttpLimits, label: &'static str) -> LimitedListener {
        LimitedListener {
            inner,
            connections: Connections::new(limits.caps),
            label,
            idle: limits.idle,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: wait for some to
                    // close rather than spin.
                    tracing::warn!(listener = self.label, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over a cap: closed at once, counted by `admit`.
            if let Ok(admitted) = self.connections.admit(addr.ip(), self.label) {
                return (Limited::new(stream, admitted, self.idle), addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The client's address, for handlers that ask (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// An admitted connection: uncounted when dropped, and failing with
/// `TimedOut` once idle.
pub struct Limited {
    inner: TcpStream,
    _admitted: Admitted,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Limited {
    fn new(inner: TcpStream, admitted: Admitted, idle: Duration) -> Limited {
        Limited {
            inner,
            _admitted: admitted,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Pending from the socket: an error instead once the deadline passed.
    fn idle_check<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.idle_check(cx),
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.active();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.idle_check(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve(limits: HttpLimits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            let _ = axum::serve(LimitedListener::new(listener, limits, "admin"), app).await;
        });
        addr
    }

    async fn get(addr: SocketAddr) -> io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok(text)
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_the_cap_leaves_room_after() {
        let addr = serve(HttpLimits {
            caps: Caps {
                total: 8,
                per_client: 2,
            },
            idle: Duration::from_millis(300),
        })
        .await;
        // Two silent connections take this client's share.
        let mut silent = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A third is closed at once, without an answer.
        let refused = get(addr).await.unwrap_or_default();
        assert!(refused.is_empty(), "{refused}");
        // The idle ones are closed by the server after 300 ms ...
        for stream in &mut silent {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
                .await
                .expect("closed by the server");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        // ... and their places are free again.
        let text = get(addr).await.unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("ok"),
            "{text}"
        );
    }
}
