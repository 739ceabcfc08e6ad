//! The DNS listener: binds UDP and TCP on every configured address and
//! hands requests to the [`Handler`].
//!
//! When an address has port 0, UDP binds first and TCP then binds the same
//! port, so a client (or a test) has one port for both transports. The
//! bound addresses are logged as `listening for UDP on ADDR` and
//! `listening for TCP on ADDR`; the test harness reads those lines.
//!
//! Each address gets one UDP socket per worker, all bound with
//! SO_REUSEPORT: the kernel spreads clients over them by address and port,
//! so each worker thread reads its own socket instead of all contending
//! for one. UDP is served by our own loop (`udp`); TCP and DoT by our
//! stream loop (`stream`), DoH by hyper (`doh`), DoQ by quinn (`doq`),
//! each connection a task.

pub mod capture;
pub mod check;
pub mod client_policy;
pub mod connections;
mod decide;
mod doh;
mod doq;
mod fast_path;
mod handler;
pub mod inspect;
pub mod limits;
pub mod listed_memo;
pub mod local;
mod mmsg;
mod name_servers;
pub mod packet_cache;
mod padding;
mod query_metrics;
pub mod question;
pub mod response;
mod roaming;
mod stream;
mod stream_answer;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use client_policy::{ClientPolicy, PolicyHandle};
pub use connections::Caps;
use connections::Connections;
pub use decide::{Attribution, Via};
pub use handler::Handler;
use packet_cache::PacketCache;
pub use query_metrics::QueryMetrics;
pub use roaming::Roaming;
use stream::{StreamSettings, Tls};

use crate::config::EncryptedConfig;
use crate::tls::CertStore;

/// Bound sockets: UDP and TCP per configured address, and the encrypted
/// listeners.
pub struct Sockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    pub encrypted: EncryptedSockets,
}

/// The DoT, DoH and DoQ sockets; empty when none is configured.
#[derive(Default)]
pub struct EncryptedSockets {
    pub dot: Vec<TcpListener>,
    pub doh: Vec<TcpListener>,
    pub doq: Vec<std::net::UdpSocket>,
}

/// Bind every address (`per_address` UDP sockets each), or fail naming
/// the one that could not be bound.
pub async fn bind(addrs: &[SocketAddr], per_address: usize) -> io::Result<Sockets> {
    let mut sockets = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
        encrypted: EncryptedSockets::default(),
    };
    for addr in addrs {
        let (udp, tcp) = bind_pair(*addr).map_err(|e| named(*addr, e))?;
        let bound = udp.local_addr()?;
        tracing::info!("listening for UDP on {bound}");
        tracing::info!("listening for TCP on {}", tcp.local_addr()?);
        sockets.udp.push(udp);
        sockets.tcp.push(tcp);
        for _ in 1..per_address.max(1) {
            sockets
                .udp
                .push(reuse_port_udp(bound).map_err(|e| named(*addr, e))?);
        }
    }
    Ok(sockets)
}

/// Bind the encrypted listeners of `config`.
pub fn bind_encrypted(config: &EncryptedConfig) -> io::Result<EncryptedSockets> {
    let mut sockets = EncryptedSockets::default();
    for addr in &config.tls_listen {
        let listener = tcp_listener(*addr).map_err(|e| named(*addr, e))?;
        tracing::info!("listening for DoT on {}", listener.local_addr()?);
        sockets.dot.push(listener);
    }
    for addr in &config.https_listen {
        let listener = tcp_listener(*addr).map_err(|e| named(*addr, e))?;
        tracing::info!("listening for DoH on {}", listener.local_addr()?);
        sockets.doh.push(listener);
    }
    for addr in &config.quic_listen {
        let socket = quic_socket(*addr).map_err(|e| named(*addr, e))?;
        tracing::info!("listening for DoQ on {}", socket.local_addr()?);
        sockets.doq.push(socket);
    }
    Ok(sockets)
}

fn named(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

/// Receive buffer asked for each UDP socket. The kernel default (208 KiB,
/// a few hundred queries) overflows, and drops queries, when the worker
/// is off the CPU for a few milliseconds under load (the hit-log writer
/// sharing its core); the kernel caps it at net.core.rmem_max.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A socket for `addr`; an IPv6 one is IPv6-only, so that `[::]:53` and
/// `0.0.0.0:53` can both be listened on (Linux's default would have the
/// IPv6 socket take the IPv4 port too, and the second bind fail).
fn socket_for(addr: SocketAddr, kind: socket2::Type) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A UDP socket with SO_REUSEPORT set before the bind, so that more can
/// join it on the same address.
fn reuse_port_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket_for(addr, socket2::Type::DGRAM)?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(%error, "keeping the default UDP receive buffer");
    }
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A UDP socket for QUIC (quinn takes a std socket).
fn quic_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, socket2::Type::DGRAM)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A listening TCP socket.
fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr, socket2::Type::STREAM)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((reuse_port_udp(addr)?, tcp_listener(addr)?));
    }
    // An ephemeral UDP port may be taken for TCP; try a few.
    let mut last = None;
    for _ in 0..16 {
        let udp = reuse_port_udp(addr)?;
        match tcp_listener(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// How the listeners serve, from the config.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// Idle timeout of a stream connection (and of a TLS handshake).
    pub idle: Duration,
    /// Responses the UDP packet cache holds (0: none).
    pub packet_cache: usize,
    pub caps: Caps,
    pub max_queries_per_connection: usize,
}

impl ServeSettings {
    pub fn from_config(config: &crate::config::Config) -> ServeSettings {
        let server = &config.server;
        ServeSettings {
            idle: Duration::from_secs(server.tcp_timeout_secs),
            packet_cache: config.resolver.packet_cache_size,
            caps: Caps {
                total: fd_limited(server.max_connections),
                per_client: server.max_connections_per_client,
            },
            max_queries_per_connection: server.max_queries_per_connection,
        }
    }
}

/// The connection cap, lowered to three quarters of the file descriptors
/// this process may open, so that the rest (upstream sockets, the hit log,
/// the admin listener) always have some.
#[allow(unsafe_code)]
fn fd_limited(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return configured;
    }
    let usable = usize::try_from(limit.rlim_cur / 4 * 3)
        .unwrap_or(usize::MAX)
        .max(1);
    if usable < configured {
        tracing::warn!(
            configured,
            allowed = usable,
            open_files_limit = limit.rlim_cur,
            "server.max_connections lowered to fit the open-files limit (raise LimitNOFILE)"
        );
        return usable;
    }
    configured
}

/// The certificate and the roaming keys, for the encrypted listeners.
pub struct TlsSetup {
    pub certs: Arc<CertStore>,
    pub roaming: Arc<Roaming>,
}

/// The running listeners.
pub struct Listeners {
    tasks: JoinSet<()>,
}

impl Listeners {
    /// Stop receiving; queries already in flight were drained before.
    pub async fn shutdown(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Start serving on every socket.
pub fn serve(
    handler: Arc<Handler>,
    sockets: Sockets,
    settings: ServeSettings,
    tls: Option<TlsSetup>,
) -> io::Result<Listeners> {
    let cache = PacketCache::new(settings.packet_cache).map(Arc::new);
    let connections = Connections::with_members(settings.caps, Arc::clone(&handler.policy));
    let stream_settings = StreamSettings {
        idle: settings.idle,
        max_in_flight: settings.max_queries_per_connection,
    };
    let mut tasks = JoinSet::new();
    for socket in sockets.udp {
        tasks.spawn(udp::serve(socket, Arc::clone(&handler), cache.clone()));
    }
    for listener in sockets.tcp {
        tasks.spawn(stream::serve(
            listener,
            Arc::clone(&handler),
            Arc::clone(&connections),
            stream_settings,
            None,
        ));
    }
    let encrypted = sockets.encrypted;
    let Some(tls) = tls else {
        if !encrypted.dot.is_empty() || !encrypted.doh.is_empty() || !encrypted.doq.is_empty() {
            return Err(io::Error::other("encrypted listeners need a certificate"));
        }
        return Ok(Listeners { tasks });
    };
    let dot = Tls {
        acceptor: TlsAcceptor::from(Arc::new(tls.certs.server_config(&[b"dot"]))),
        roaming: Arc::clone(&tls.roaming),
    };
    for listener in encrypted.dot {
        tasks.spawn(stream::serve(
            listener,
            Arc::clone(&handler),
            Arc::clone(&connections),
            stream_settings,
            Some(dot.clone()),
        ));
    }
    let doh = Tls {
        acceptor: TlsAcceptor::from(Arc::new(tls.certs.server_config(&[b"h2", b"http/1.1"]))),
        roaming: Arc::clone(&tls.roaming),
    };
    for listener in encrypted.doh {
        tasks.spawn(doh::serve(
            listener,
            Arc::clone(&handler),
            Arc::clone(&connections),
            stream_settings,
            doh.clone(),
        ));
    }
    for socket in encrypted.doq {
        let config = tls.certs.quic_server_config(&[b"doq"]);
        let endpoint = doq::DoqEndpoint::new(socket, config, stream_settings)?;
        tasks.spawn(doq::serve(
            endpoint,
            Arc::clone(&handler),
            Arc::clone(&connections),
            stream_settings,
            Arc::clone(&tls.roaming),
        ));
    }
    tasks.spawn(async move {
        // The watch lives as long as the listeners.
        let _ = tls.certs.spawn_watch().await;
    });
    Ok(Listeners { tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv6_listeners_are_ipv6_only() {
        // Bound on loopback: the option is what lets [::]:53 and
        // 0.0.0.0:53 be listened on together.
        let Ok(listener) = tcp_listener("[::1]:0".parse().unwrap()) else {
            return; // no IPv6 on this machine
        };
        let socket = socket2::SockRef::from(&listener);
        assert!(socket.only_v6().unwrap());
        let udp = quic_socket("[::1]:0".parse().unwrap()).unwrap();
        assert!(socket2::SockRef::from(&udp).only_v6().unwrap());
        let v4 = tcp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4());
    }
}
