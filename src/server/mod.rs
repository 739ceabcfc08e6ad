//! The DNS listener: binds UDP and TCP on every configured address and
//! hands requests to the [`Handler`].
//!
//! When an address has port 0, UDP binds first and TCP then binds the same
//! port, so a client (or a test) has one port for both transports. The
//! bound addresses are logged as `listening for UDP on ADDR` and
//! `listening for TCP on ADDR`; the test harness reads those lines.

mod handler;
pub mod inspect;
pub mod response;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

pub use handler::{Handler, QueryMetrics};

/// Bound sockets, one UDP and one TCP per configured address.
pub struct Sockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

/// Bind every address, or fail naming the one that could not be bound.
pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Sockets> {
    let mut sockets = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for addr in addrs {
        let (udp, tcp) = bind_pair(*addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        tracing::info!("listening for UDP on {}", udp.local_addr()?);
        tracing::info!("listening for TCP on {}", tcp.local_addr()?);
        sockets.udp.push(udp);
        sockets.tcp.push(tcp);
    }
    Ok(sockets)
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    // An ephemeral UDP port may be taken for TCP; try a few.
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// Start serving; the returned server stops on `shutdown_gracefully`.
pub fn serve(handler: Handler, sockets: Sockets, tcp_timeout: Duration) -> Server<Handler> {
    let mut server = Server::new(handler);
    for udp in sockets.udp {
        server.register_socket(udp);
    }
    for tcp in sockets.tcp {
        // 64 KiB of queued responses per TCP connection.
        server.register_listener(tcp, tcp_timeout, 64 * 1024);
    }
    server
}
