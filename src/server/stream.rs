//! The stream listeners: DNS over TCP (RFC 7766) and DNS over TLS (RFC
//! 7858), the same two-octet-length framing over a plain or an encrypted
//! connection.
//!
//! hickory-server has both, but it answers the queries of one connection
//! strictly one after another, has no connection caps, and does not tell
//! the handler the TLS server name (which carries a roaming key); so the
//! framing is ours, and the TLS is tokio-rustls, as in hickory.
//!
//! Each connection reads queries as they come and answers each in a task
//! of its own, so a slow upstream answer does not hold up the ones behind
//! it (RFC 7766 6.2.1.1: out of order, matched by ID). At most
//! `max_in_flight` queries of one connection are in progress; past that
//! the connection is not read until one finishes (back-pressure, not
//! memory). A connection with nothing in progress that sends nothing for
//! `idle` is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Handler;
use super::connections::Connections;
use super::decide::Via;
use super::roaming::Roaming;
use crate::hitlog::Transport;
use crate::telemetry;

/// How the stream transports treat a connection.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Close a connection with nothing in progress after this long without
    /// a query; also the time a TLS handshake may take.
    pub idle: Duration,
    /// Queries of one connection in progress at once.
    pub max_in_flight: usize,
}

/// What a DoT listener adds to a TCP one.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub roaming: Arc<Roaming>,
}

/// Accept connections on `listener` until the task is aborted (which
/// aborts its connections too). With `tls`, each is DNS over TLS.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    connections: Arc<Connections>,
    settings: StreamSettings,
    tls: Option<Tls>,
) {
    let transport = if tls.is_some() {
        Transport::Dot
    } else {
        Transport::Tcp
    };
    accept_loop(listener, transport, connections, move |stream, src| {
        let handler = Arc::clone(&handler);
        let tls = tls.clone();
        async move {
            match tls {
                None => connection(stream, src, handler, Via::address(transport), settings).await,
                Some(tls) => dot(stream, src, handler, tls, settings).await,
            }
        }
    })
    .await;
}

/// Accept connections, admit those within the caps, and serve each with
/// `serve_one` in a task of its own, until the task is aborted (which
/// aborts the connections' tasks too).
pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    transport: Transport,
    connections: Arc<Connections>,
    mut serve_one: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: the caps leave
                // room, so this is another process or a low ulimit. Wait
                // rather than spin.
                tracing::warn!(%error, %transport, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let Ok(admitted) = connections.admit(src.ip(), transport.as_str()) else {
            tracing::debug!(client = %src, %transport, "connection refused: over the connection caps");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let served = serve_one(stream, src);
        tasks.spawn(async move {
            let _admitted = admitted;
            served.await;
        });
    }
}

/// The TLS handshake, then the connection, judged by the roaming key in
/// the server name if there is one.
async fn dot(
    stream: TcpStream,
    src: SocketAddr,
    handler: Arc<Handler>,
    tls: Tls,
    settings: StreamSettings,
) {
    let stream = match tokio::time::timeout(settings.idle, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(client = %src, %error, "DoT handshake failed");
            handshake_failed(Transport::Dot);
            return;
        }
        Err(_) => {
            tracing::debug!(client = %src, "DoT handshake timed out");
            handshake_failed(Transport::Dot);
            return;
        }
    };
    let attribution = tls.roaming.by_server_name(stream.get_ref().1.server_name());
    let via = Via {
        transport: Transport::Dot,
        attribution,
    };
    connection(stream, src, handler, via, settings).await;
}

pub(super) fn handshake_failed(transport: Transport) {
    ::metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES, "transport" => transport.as_str())
        .increment(1);
}

/// Serve one connection until the client closes it, it idles out, or an
/// error breaks it; answers in progress are still written after the
/// client's half-close.
async fn connection<S>(
    stream: S,
    src: SocketAddr,
    handler: Arc<Handler>,
    via: Via,
    settings: StreamSettings,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let (responses, outbox) = mpsc::channel(settings.max_in_flight.max(1));
    let read = read_queries(reader, src, handler, via, settings, responses);
    let write = write_responses(writer, outbox);
    let ((), result) = tokio::join!(read, write);
    if let Err(error) = result {
        tracing::debug!(client = %src, %error, transport = %via.transport, "writing responses");
    }
}

async fn read_queries<R: AsyncRead + Unpin>(
    mut reader: R,
    src: SocketAddr,
    handler: Arc<Handler>,
    via: Via,
    settings: StreamSettings,
    responses: mpsc::Sender<Vec<u8>>,
) {
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let mut queries = JoinSet::new();
    'connection: loop {
        // The length, read so that a timeout loses nothing (`read` is
        // cancel-safe; `read_u16` is not).
        let mut head = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            match tokio::time::timeout(settings.idle, reader.read(&mut head[got..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => break 'connection,
                Ok(Ok(n)) => got += n,
                Err(_) => {
                    while queries.try_join_next().is_some() {}
                    // RFC 7766 6.2.3: idle only once nothing is in progress.
                    if queries.is_empty() {
                        break 'connection;
                    }
                }
            }
        }
        let length = usize::from(u16::from_be_bytes(head));
        let mut query = vec![0; length];
        match tokio::time::timeout(settings.idle, reader.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let handler = Arc::clone(&handler);
        let responses = responses.clone();
        queries.spawn(async move {
            if let Some(wire) = handler.answer_message(query, src, via).await {
                let _ = responses.send(wire).await;
            }
            drop(permit);
        });
        while queries.try_join_next().is_some() {}
    }
    // Answer what was asked before the client stopped asking.
    while queries.join_next().await.is_some() {}
}

/// Write each response with its length as it comes; flush when no more
/// are waiting (one TLS record for a burst of answers).
async fn write_responses<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut outbox: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut frame = Vec::with_capacity(514);
    while let Some(wire) = outbox.recv().await {
        let Ok(length) = u16::try_from(wire.len()) else {
            continue;
        };
        frame.clear();
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&wire);
        writer.write_all(&frame).await?;
        if outbox.is_empty() {
            writer.flush().await?;
        }
    }
    writer.shutdown().await
}
