//! What the resolver adds around the lookup: one UDP query's bytes through
//! the handler, in process, with no socket.
//!
//! - `blocked_from_bytes`: a blocked UDP query as the listener answers it
//!   (`Handler::answer_from_bytes`: the question read in place, a
//!   packet-cache miss, lookup, organisation policy, the response written
//!   from the bytes);
//! - `blocked_full_path`: the same through the general handler (decode,
//!   lookup, block response records, encode), as TCP and unusual queries
//!   take it. The hit log is off in both; a hit record is a channel send
//!   (its writer is measured in `scripts/bench/hitlog-load.sh`);
//! - `resolver_cache`: decode, lookup, the forwarder's answer cache,
//!   answer inspection, encode (a clean name the packet cache does not
//!   hold: off, or a query with EDNS options);
//! - `packet_cache`: a clean name asked again, answered from the packet
//!   cache (what most queries on a busy resolver take).
//!
//! The upstream is a small UDP responder on loopback, asked once per name
//! to fill the cache; the list is a few names (the lookup against the
//! full list is `benches/lookup.rs`).
//!
//! `cargo bench --bench handler`

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use portcullis::blocklist;
use portcullis::config::Config;
use portcullis::health::Health;
use portcullis::hitlog::HitSender;
use portcullis::orgs::OrgMap;
use portcullis::resolve::Upstream;
use portcullis::server::capture::Capture;
use portcullis::server::packet_cache::PacketCache;
use portcullis::server::{ClientPolicy, Handler, QueryMetrics};

/// Answers every A question with 192.0.2.1, TTL one day, until stopped.
fn upstream(stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the upstream");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let addr = socket.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, src)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(mut msg) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            msg.metadata.message_type = MessageType::Response;
            msg.metadata.recursion_available = true;
            let name = msg.queries[0].name().clone();
            msg.answers.push(Record::from_rdata(
                name,
                86_400,
                RData::A(A::new(192, 0, 2, 1)),
            ));
            if let Ok(wire) = msg.to_vec() {
                let _ = socket.send_to(&wire, src);
            }
        }
    });
    addr
}

fn packet(name: &str) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = 4242;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.edns = Some(edns);
    msg.to_vec().expect("encode")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let upstream_addr = upstream(Arc::clone(&stop));
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(work.path().join("feeds")).expect("feeds");
    std::fs::write(
        work.path().join("feeds/threats.txt"),
        "evil.example.test\nbad.example.test\n",
    )
    .expect("feed");
    let toml = format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{upstream_addr}\"]\ndnssec = \"off\"\n\
         [blocklist]\nfeeds_dir = \"feeds\"\nstate_dir = \"state\"\n"
    );
    let config = Config::from_str(&toml, &work.path().join("portcullis.toml")).expect("config");
    let (list, _) = blocklist::compile(&config).expect("compile");
    let list: blocklist::BlocklistHandle = Arc::new(ArcSwap::from_pointee(list));
    let handler = rt.block_on(async {
        let mut policy = ClientPolicy::new(&config, Arc::new(OrgMap::default()));
        policy.allow_unknown_clients = true;
        policy.block.ede_names_feed = true;
        Handler {
            blocklist: Arc::clone(&list),
            policy: policy.handle(),
            upstream: Arc::new(Upstream::new(&config.resolver).expect("upstream")),
            hits: HitSender::disabled(),
            metrics: QueryMetrics::new(),
            health: Arc::new(Health::new(list, Duration::from_secs(30))),
            local: Default::default(),
            tap: None,
            notify: portcullis::sources::rpz::NotifyTargets::new(),
            listed_memo: Default::default(),
        }
    });
    let client: SocketAddr = "127.0.0.1:5300".parse().expect("addr");
    let run = |wire: &[u8]| -> bool {
        let request = Request::from_bytes(wire.to_vec(), client, Protocol::Udp).expect("decode");
        rt.block_on(handler.handle_udp(&request, Capture::default()))
    };
    let blocked = packet("www.evil.example.test.");
    let clean = packet("www.example.test.");
    // Fill the forwarder's cache, and check what each path is.
    assert!(!run(&blocked), "a blocked answer is never held");
    assert!(run(&clean), "a clean answer may be held");
    let cache = PacketCache::new(1000).expect("cache");
    let mut out = [0u8; 1232];
    let generation = handler.blocklist.load().generation();
    cache.insert(
        &clean,
        &encoded(&handler, &rt, &clean, client),
        generation,
        Instant::now(),
    );
    assert!(
        handler
            .answer_from_bytes(Some(&cache), &clean, client, &mut out)
            .is_some(),
        "held"
    );
    assert!(
        handler
            .answer_from_bytes(Some(&cache), &blocked, client, &mut out)
            .is_some(),
        "blocked from the bytes"
    );

    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Elements(1));
    group.bench_function("blocked_from_bytes", |b| {
        b.iter(|| handler.answer_from_bytes(Some(&cache), black_box(&blocked), client, &mut out))
    });
    group.bench_function("blocked_full_path", |b| b.iter(|| run(black_box(&blocked))));
    group.bench_function("resolver_cache", |b| b.iter(|| run(black_box(&clean))));
    group.bench_function("packet_cache", |b| {
        b.iter(|| handler.answer_from_bytes(Some(&cache), black_box(&clean), client, &mut out))
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
}

/// The bytes the handler answers `wire` with.
fn encoded(
    handler: &Handler,
    rt: &tokio::runtime::Runtime,
    wire: &[u8],
    client: SocketAddr,
) -> Vec<u8> {
    let capture = Capture::default();
    let request = Request::from_bytes(wire.to_vec(), client, Protocol::Udp).expect("decode");
    rt.block_on(handler.handle_udp(&request, capture.clone()));
    capture.take().expect("a response")
}

criterion_group!(benches, bench);
criterion_main!(benches);
