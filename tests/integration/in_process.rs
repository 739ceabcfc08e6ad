//! The resolver as a library: `portcullis::serve`'s phases run in this
//! process, on sockets the test binds and with a shutdown the test
//! fires, the way an embedding program or a test would drive it.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use portcullis::config::Config;
use portcullis::orgs::OrgMap;
use portcullis::serve::{self, Bound, Startup};

use crate::harness::{Setup, Transport, a_records, assert_blocked_nxdomain, query};
use crate::upstream::{Authority, example_zone};

#[test]
fn serve_runs_on_the_callers_sockets_until_the_callers_shutdown() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.example.test\n");
    let path = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n",
        auth.addr
    ));
    let config = Config::load(&path).expect("the test config loads");
    let orgs = OrgMap::new(&config.organisations).expect("no organisations");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let serving = std::thread::spawn(move || {
        runtime.block_on(async move {
            let config = std::sync::Arc::new(config);
            let started = Instant::now();
            let loaded = serve::blocklist(&config, started).await?;
            // The caller's own sockets: one UDP and one TCP on the same
            // ephemeral port, no admin or block page listener.
            let dns = portcullis::server::bind(&["127.0.0.1:0".parse().unwrap()], 1).await?;
            bound_tx.send(dns.udp[0].local_addr()?).unwrap();
            let bound = Bound {
                dns,
                admin: None,
                block_page: None,
                certs: None,
            };
            let startup = Startup {
                config,
                orgs,
                prometheus: None,
                started,
            };
            serve::run(startup, loaded, bound, async {
                let _ = stopped.await;
            })
            .await
        })
    });
    let addr = bound_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the resolver bound its sockets");

    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(addr, "www.example.test.", RecordType::A, transport, false);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_records(&reply), ["192.0.2.10"], "{transport:?}");
        let reply = query(addr, "evil.example.test.", RecordType::A, transport, true);
        assert_blocked_nxdomain(&reply, "evil.example.test", 300);
    }

    stop.send(()).expect("the resolver is still running");
    let result = serving.join().expect("the serving thread did not panic");
    assert!(result.is_ok(), "serve::run ended with {result:?}");
    // After the drain the sockets are closed: a query goes unanswered.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let q = crate::harness::build_query("www.example.test.", RecordType::A, false);
    socket.send_to(&q.to_vec().unwrap(), addr).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "nothing answers after shutdown"
    );
}
