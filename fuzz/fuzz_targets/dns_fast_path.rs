//! The UDP fast path answers as the full path does. Any bytes that the
//! fast path answers (a blocked name, ANY) are answered again by the full
//! path (hickory's decoder and response builder), and the two responses
//! decode to the same message. Nothing panics on any bytes.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::Message;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use libfuzzer_sys::fuzz_target;
use portcullis::blocklist;
use portcullis::config::Config;
use portcullis::health::Health;
use portcullis::hitlog::HitSender;
use portcullis::orgs::OrgMap;
use portcullis::resolve::Upstream;
use portcullis::server::capture::Capture;
use portcullis::server::limits::Limits;
use portcullis::server::response::BlockSettings;
use portcullis::server::{Handler, QueryMetrics};

struct World {
    runtime: tokio::runtime::Runtime,
    handler: Handler,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("feeds")).expect("feeds");
        std::fs::write(
            dir.path().join("feeds/list.txt"),
            "evil.example.test\nads.example.test\n",
        )
        .expect("feed");
        std::fs::write(dir.path().join("feeds/hosts.txt"), "10.1.2.3 local.example.test\n")
            .expect("hosts");
        let toml = "[server]\nallow_unknown_clients = true\n\
                    [resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\ndnssec = \"off\"\n\
                    [blocklist]\nfeeds_dir = \"feeds\"\nstate_dir = \"state\"\n\
                    sinkhole_ipv4 = \"192.0.2.53\"\n\
                    [[feed]]\nfile = \"hosts.txt\"\naction = \"sinkhole\"\n";
        let config = Config::from_str(toml, &dir.path().join("portcullis.toml")).expect("config");
        let (list, _) = blocklist::compile(&config).expect("compile");
        let list: blocklist::BlocklistHandle = Arc::new(ArcSwap::from_pointee(list));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let handler = runtime.block_on(async {
            Handler {
                blocklist: Arc::clone(&list),
                orgs: Arc::new(OrgMap::default()),
                upstream: Arc::new(Upstream::new(&config.resolver).expect("upstream")),
                block: BlockSettings {
                    policy_ttl: 300,
                    sinkhole_ipv4: config.blocklist.sinkhole_ipv4,
                    sinkhole_ipv6: None,
                    ede_names_feed: true,
                },
                allow_unknown_clients: true,
                hits: HitSender::disabled(),
                log_allowed: false,
                metrics: QueryMetrics::new(),
                health: Arc::new(Health::new(list, Duration::from_secs(30))),
                local: Default::default(),
                limits: Limits::new(&config.limits, &config.organisations),
            }
        });
        World {
            runtime,
            handler,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let src: SocketAddr = "192.0.2.1:5353".parse().expect("addr");
    let mut out = [0u8; 1232];
    let Some(n) = world.handler.answer_from_bytes(None, data, src, &mut out) else {
        return;
    };
    if n == 0 {
        return; // the drop action: nothing sent on either path
    }
    let fast = Message::from_vec(&out[..n]).expect("the fast path's answer decodes");
    let request = Request::from_bytes(data.to_vec(), src, Protocol::Udp)
        .expect("what the fast path answers, hickory decodes");
    let capture = Capture::default();
    world
        .runtime
        .block_on(world.handler.handle_udp(&request, capture.clone()));
    let slow = capture.take().expect("the full path answers too");
    let slow = Message::from_vec(&slow).expect("the full path's answer decodes");
    if slow.metadata.truncation && !fast.metadata.truncation {
        // hickory's builder does not compress an owner name against the
        // question, so near the UDP limit its copy of the same answer
        // (ANY's HINFO for a long name) may not fit where ours does.
        assert_eq!(fast.answers.len(), 1);
        return;
    }
    assert_eq!(fast.metadata, slow.metadata);
    assert_eq!(fast.queries, slow.queries);
    assert_eq!(fast.answers, slow.answers);
    assert_eq!(fast.authorities, slow.authorities);
    assert_eq!(fast.edns, slow.edns);
});
