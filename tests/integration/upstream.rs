//! Real authoritative DNS servers for the tests: hickory's `Catalog` with
//! in-memory zones parsed from master-file text, on loopback, each in its
//! own thread and runtime so the sync tests can own them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::sync::oneshot;

/// A running authority; stops on drop.
pub struct Authority {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Authority {
    /// Serve `zones` (origin, master-file text) on `addr` (UDP and TCP).
    pub fn start(addr: SocketAddr, zones: &[(&str, String)]) -> Authority {
        let mut catalog = Catalog::new();
        for (origin, text) in zones {
            let origin = Name::from_ascii(origin).expect("origin parses");
            let (_, records) = Parser::new(text.as_str(), None, Some(origin.clone()))
                .parse()
                .unwrap_or_else(|e| panic!("zone {origin} parses: {e}"));
            let handler =
                InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::new(
                    origin.clone(),
                    records,
                    ZoneType::Primary,
                    AxfrPolicy::Deny,
                )
                .expect("zone has an SOA");
            let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
            catalog.upsert(LowerName::new(&origin), vec![handler]);
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // An ephemeral UDP port's TCP twin may be taken (by another
                // test's outgoing connection): try another port then.
                let mut tries = if addr.port() == 0 { 20 } else { 1 };
                let (udp, tcp) = loop {
                    let udp = tokio::net::UdpSocket::bind(addr)
                        .await
                        .unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
                    let bound = udp.local_addr().expect("local addr");
                    match tokio::net::TcpListener::bind(bound).await {
                        Ok(tcp) => break (udp, tcp),
                        Err(e) if tries > 1 && e.kind() == std::io::ErrorKind::AddrInUse => {
                            tries -= 1;
                        }
                        Err(e) => panic!("bind tcp {bound}: {e}"),
                    }
                };
                let bound = udp.local_addr().expect("local addr");
                let mut server = Server::new(catalog);
                server.register_socket(udp);
                server.register_listener(tcp, Duration::from_secs(5), 65535);
                ready_tx.send(bound).expect("report address");
                let _ = stop_rx.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("authority started");
        Authority {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SOA + NS boilerplate for a zone served by `ns_ip`.
pub fn zone_head(origin: &str, ns_ip: &str) -> String {
    format!(
        "$TTL 300\n\
         {origin} IN SOA ns1.{origin} hostmaster.{origin} 1 3600 600 86400 60\n\
         {origin} IN NS ns1.{origin}\n\
         ns1.{origin} IN A {ns_ip}\n"
    )
}

/// The test zone every resolver test uses (`origin` ends in a dot).
pub fn example_zone(origin: &str, ns_ip: &str) -> String {
    zone_head(origin, ns_ip) + &example_records(origin)
}

/// The records of the test zone, without SOA and NS.
pub fn example_records(origin: &str) -> String {
    format!(
        "www.{origin} IN A 192.0.2.10\n\
         www.{origin} IN AAAA 2001:db8::10\n\
         alias.{origin} IN CNAME www.{origin}\n\
         chain0.{origin} IN CNAME chain1.{origin}\n\
         chain1.{origin} IN CNAME chain2.{origin}\n\
         chain2.{origin} IN CNAME www.{origin}\n\
         evil.{origin} IN A 192.0.2.66\n\
         deep.sub.evil.{origin} IN A 192.0.2.67\n\
         good.evil.{origin} IN A 192.0.2.68\n\
         notevil.{origin} IN A 192.0.2.69\n\
         protected.{origin} IN A 192.0.2.70\n\
         big.{origin} IN TXT \"{long}\"\n\
         big.{origin} IN TXT \"{long2}\"\n\
         big.{origin} IN TXT \"{long3}\"\n",
        long = "x".repeat(250),
        long2 = "y".repeat(250),
        long3 = "z".repeat(250),
    )
}

/// A UDP relay in front of an authority that holds every answer for
/// `delay`: an upstream slow enough to have queries in flight on demand.
pub struct SlowRelay {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SlowRelay {
    pub fn start(target: SocketAddr, delay: Duration) -> SlowRelay {
        SlowRelay::start_matching(target, delay, b"")
    }

    /// Delay only the queries whose bytes hold `marker` (a label, say);
    /// the rest are relayed at once.
    pub fn start_matching(target: SocketAddr, delay: Duration, marker: &'static [u8]) -> SlowRelay {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, client)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let slow = marker.is_empty() || query.windows(marker.len()).any(|w| w == marker);
                // One thread per query: answers are delayed, not serialised.
                let reply_sock = sock.try_clone().expect("clone relay socket");
                std::thread::spawn(move || {
                    if slow {
                        std::thread::sleep(delay);
                    }
                    let up = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                    up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    up.send_to(&query, target).expect("forward");
                    let mut answer = [0u8; 4096];
                    if let Ok((m, _)) = up.recv_from(&mut answer) {
                        let _ = reply_sock.send_to(&answer[..m], client);
                    }
                });
            }
        });
        SlowRelay { addr, stop }
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An upstream that answers every name under `origin` (a wildcard A
/// record), so that only a block makes a name under it NXDOMAIN; and the
/// `[resolver]` section that forwards to it.
pub fn wildcard_upstream(origin: &str) -> (Authority, String) {
    let zone = format!(
        "{}*.{origin} IN A 192.0.2.10\n",
        zone_head(origin, "127.0.0.1")
    );
    let auth = Authority::start("127.0.0.1:0".parse().unwrap(), &[(origin, zone)]);
    let resolver = format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n",
        auth.addr
    );
    (auth, resolver)
}
