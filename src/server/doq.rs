//! DNS over QUIC (RFC 9250): one query per bidirectional stream, each
//! message with its two-octet length, ALPN `doq`.
//!
//! hickory-server's DoQ is quinn too, but it does not tell the handler
//! the TLS server name (which carries a roaming key) and has no
//! per-client caps; so the endpoint is quinn's, used directly. Streams
//! of one connection are answered concurrently, at most
//! `max_in_flight` open at once (QUIC's own stream limit), and a
//! connection idle for `idle` is closed by QUIC's idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, Incoming, RecvStream, SendStream, VarInt};
use tokio::task::JoinSet;

use super::Handler;
use super::connections::Connections;
use super::decide::Via;
use super::roaming::Roaming;
use super::stream::{StreamSettings, handshake_failed};
use crate::hitlog::Transport;

/// A query's stream: the length and the largest DNS message.
const MAX_STREAM: usize = 2 + 65_535;

/// RFC 9250 4.3: DOQ_PROTOCOL_ERROR, for a stream that is not one
/// length-prefixed message.
const PROTOCOL_ERROR: u32 = 0x2;

/// A bound DoQ endpoint, ready to serve.
pub struct DoqEndpoint(Endpoint);

impl DoqEndpoint {
    /// Set up QUIC on `socket` with `tls` (a TLS 1.3 config with ALPN
    /// `doq`).
    pub fn new(
        socket: std::net::UdpSocket,
        tls: rustls::ServerConfig,
        settings: StreamSettings,
    ) -> std::io::Result<DoqEndpoint> {
        let crypto = QuicServerConfig::try_from(tls)
            .map_err(|e| std::io::Error::other(format!("QUIC TLS config: {e}")))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(
                u32::try_from(settings.max_in_flight).unwrap_or(u32::MAX),
            ))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(settings.idle.try_into().ok());
        config.transport_config(Arc::new(transport));
        let endpoint = Endpoint::new(
            EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(DoqEndpoint(endpoint))
    }
}

/// Accept DoQ connections until the task is aborted.
pub async fn serve(
    endpoint: DoqEndpoint,
    handler: Arc<Handler>,
    connections: Arc<Connections>,
    settings: StreamSettings,
    roaming: Arc<Roaming>,
) {
    let endpoint = endpoint.0;
    let mut tasks = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while tasks.try_join_next().is_some() {}
        let src = incoming.remote_address();
        let Ok(admitted) = connections.admit(src.ip(), Transport::Doq.as_str()) else {
            tracing::debug!(client = %src, "DoQ connection refused: over the connection caps");
            incoming.refuse();
            continue;
        };
        let handler = Arc::clone(&handler);
        let roaming = Arc::clone(&roaming);
        tasks.spawn(async move {
            let _admitted = admitted;
            connection(incoming, src, handler, roaming, settings).await;
        });
    }
}

async fn connection(
    incoming: Incoming,
    src: SocketAddr,
    handler: Arc<Handler>,
    roaming: Arc<Roaming>,
    settings: StreamSettings,
) {
    let connecting = tokio::time::timeout(settings.idle, async { incoming.accept()?.await });
    let connection = match connecting.await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(client = %src, %error, "DoQ handshake failed");
            handshake_failed(Transport::Doq);
            return;
        }
        Err(_) => {
            tracing::debug!(client = %src, "DoQ handshake timed out");
            handshake_failed(Transport::Doq);
            return;
        }
    };
    let server_name = connection
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.server_name);
    let via = Via {
        transport: Transport::Doq,
        attribution: roaming.by_server_name(server_name.as_deref()),
    };
    let mut streams = JoinSet::new();
    // Ends when the client closes, or QUIC's idle timeout does.
    while let Ok((send, recv)) = connection.accept_bi().await {
        while streams.try_join_next().is_some() {}
        let handler = Arc::clone(&handler);
        streams.spawn(answer_stream(send, recv, src, handler, via));
    }
}

/// Read one query from its stream to the end, answer on the same stream.
async fn answer_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    src: SocketAddr,
    handler: Arc<Handler>,
    via: Via,
) {
    let message = match recv.read_to_end(MAX_STREAM).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::debug!(client = %src, %error, "reading a DoQ stream");
            let _ = send.reset(VarInt::from_u32(PROTOCOL_ERROR));
            return;
        }
    };
    let query = match message.split_first_chunk::<2>() {
        Some((length, query)) if usize::from(u16::from_be_bytes(*length)) == query.len() => {
            query.to_vec()
        }
        _ => {
            let _ = send.reset(VarInt::from_u32(PROTOCOL_ERROR));
            return;
        }
    };
    let Some(wire) = handler.answer_message(query, src, via).await else {
        // Nothing to say (the `drop` action): end the stream empty.
        let _ = send.finish();
        return;
    };
    let Ok(length) = u16::try_from(wire.len()) else {
        return;
    };
    let mut frame = Vec::with_capacity(2 + wire.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&wire);
    if send.write_all(&frame).await.is_ok() {
        let _ = send.finish();
        // Wait for the client to have it before the stream goes.
        let _ = send.stopped().await;
    }
}
