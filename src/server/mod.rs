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
//! for one. UDP is served by our own loop (`udp`); TCP by hickory's
//! listener, one per address, connections spread as tasks.

pub mod capture;
mod decide;
mod fast_path;
mod handler;
pub mod inspect;
mod mmsg;
pub mod packet_cache;
mod query_metrics;
pub mod question;
pub mod response;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

pub use handler::{Handler, TcpHandler};
use packet_cache::PacketCache;
pub use query_metrics::QueryMetrics;

/// Bound sockets, one UDP and one TCP per configured address.
pub struct Sockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

/// Bind every address (`per_address` UDP sockets each), or fail naming
/// the one that could not be bound.
pub async fn bind(addrs: &[SocketAddr], per_address: usize) -> io::Result<Sockets> {
    let mut sockets = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for addr in addrs {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
        let (udp, tcp) = bind_pair(*addr).await.map_err(named)?;
        let bound = udp.local_addr()?;
        tracing::info!("listening for UDP on {bound}");
        tracing::info!("listening for TCP on {}", tcp.local_addr()?);
        sockets.udp.push(udp);
        sockets.tcp.push(tcp);
        for _ in 1..per_address.max(1) {
            sockets.udp.push(reuse_port_udp(bound).map_err(named)?);
        }
    }
    Ok(sockets)
}

/// Receive buffer asked for each UDP socket. The kernel default (208 KiB,
/// a few hundred queries) overflows, and drops queries, when the worker
/// is off the CPU for a few milliseconds under load (the hit-log writer
/// sharing its core); the kernel caps it at net.core.rmem_max.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP socket with SO_REUSEPORT set before the bind, so that more can
/// join it on the same address.
fn reuse_port_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(%error, "keeping the default UDP receive buffer");
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((reuse_port_udp(addr)?, TcpListener::bind(addr).await?));
    }
    // An ephemeral UDP port may be taken for TCP; try a few.
    let mut last = None;
    for _ in 0..16 {
        let udp = reuse_port_udp(addr)?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// The running listeners.
pub struct Listeners {
    tcp: Server<TcpHandler>,
    udp: JoinSet<()>,
}

impl Listeners {
    /// Stop receiving; queries already in flight were drained before.
    pub async fn shutdown(&mut self) {
        self.udp.abort_all();
        while self.udp.join_next().await.is_some() {}
        if let Err(error) = self.tcp.shutdown_gracefully().await {
            tracing::warn!(%error, "stopping the TCP listeners");
        }
    }
}

/// Start serving, with a packet cache of `packet_cache` responses (0: none).
pub fn serve(
    handler: Handler,
    sockets: Sockets,
    tcp_timeout: Duration,
    packet_cache: usize,
) -> Listeners {
    let handler = Arc::new(handler);
    let cache = PacketCache::new(packet_cache).map(Arc::new);
    let mut udp = JoinSet::new();
    for socket in sockets.udp {
        udp.spawn(udp::serve(socket, Arc::clone(&handler), cache.clone()));
    }
    let mut tcp = Server::new(TcpHandler(handler));
    for listener in sockets.tcp {
        // 64 KiB of queued responses per TCP connection.
        tcp.register_listener(listener, tcp_timeout, 64 * 1024);
    }
    Listeners { tcp, udp }
}
