//! Operability: Prometheus metrics that move by exactly what the test
//! caused, health endpoints that flip, systemd notifications over a real
//! notify socket, JSON logs, and SIGTERM draining queries in flight.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::forward::forwarder;
use crate::harness::{Server, Setup, Transport, http_get, metric, query, scrape, wait_for};
use crate::upstream::{Authority, SlowRelay, example_zone};

/// Parse with an independent Prometheus text parser: the exposition must
/// be valid, and every series must have HELP text.
fn parsed(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    for sample in &scrape.samples {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| sample.metric.strip_suffix(s))
            .unwrap_or(&sample.metric);
        assert!(
            scrape.docs.contains_key(base) || scrape.docs.contains_key(&sample.metric),
            "no HELP for {}",
            sample.metric
        );
    }
    scrape
}

#[test]
fn metrics_move_by_exactly_the_queries_and_reloads_the_test_caused() {
    let (setup, _auth, server) = forwarder(
        &[("malware.txt", "evil.example.test\n")],
        "[[feed]]\nfile = \"malware.txt\"\ncategory = \"malware\"\n",
    );
    let before = scrape(&server);
    parsed(&before);
    let q = |labels: &[(&str, &str)], text: &str| metric(text, "portcullis_queries_total", labels);

    for _ in 0..3 {
        let r = query(
            server.addr,
            "evil.example.test.",
            RecordType::A,
            Transport::Udp,
            true,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    let r = query(
        server.addr,
        "x.evil.example.test.",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    for _ in 0..2 {
        let r = query(
            server.addr,
            "www.example.test.",
            RecordType::A,
            Transport::Udp,
            true,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
    // TCP does not use the packet cache: the answer store answers.
    let r = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let after = scrape(&server);
    let scrape_after = parsed(&after);
    let delta = |labels: &[(&str, &str)]| q(labels, &after) - q(labels, &before);
    assert_eq!(delta(&[("transport", "udp"), ("outcome", "blocked")]), 3.0);
    assert_eq!(delta(&[("transport", "tcp"), ("outcome", "blocked")]), 1.0);
    assert_eq!(delta(&[("transport", "udp"), ("outcome", "answered")]), 2.0);
    assert_eq!(delta(&[("transport", "tcp"), ("outcome", "answered")]), 1.0);
    assert_eq!(delta(&[("outcome", "servfail")]), 0.0);
    let blocks = |t: &str| {
        metric(
            t,
            "portcullis_blocks_total",
            &[("category", "malware"), ("action", "nxdomain")],
        )
    };
    assert_eq!(blocks(&after) - blocks(&before), 4.0);
    // The TCP query came from the answer store; the second UDP one from
    // the packet cache, or from the store when it came on the heels of
    // the first (the response is held just after it is sent). Both count
    // as cache hits of the forward resolver.
    let packet = |t: &str| {
        metric(
            t,
            "portcullis_packet_cache_lookups_total",
            &[("result", "hit")],
        )
    };
    let hits = |t: &str| metric(t, "portcullis_cache_hits_total", &[("resolver", "forward")]);
    let (packet_hits, cache_hits) = (
        packet(&after) - packet(&before),
        hits(&after) - hits(&before),
    );
    assert!(packet_hits <= 1.0 && cache_hits >= 1.0, "{after}");
    assert_eq!(packet_hits + cache_hits, 2.0, "{after}");
    let count = |t: &str| metric(t, "portcullis_query_duration_seconds_count", &[]);
    assert_eq!(count(&after) - count(&before), 7.0);
    assert_eq!(metric(&after, "portcullis_blocklist_entries", &[]), 1.0);
    assert_eq!(metric(&after, "portcullis_blocklist_generation", &[]), 1.0);
    assert_eq!(
        metric(
            &after,
            "portcullis_blocklist_feed_entries",
            &[("feed", "malware.txt")]
        ),
        1.0
    );
    assert!(
        scrape_after
            .samples
            .iter()
            .any(|s| s.metric == "portcullis_last_successful_reload_timestamp_seconds")
    );

    // A dropped file: one reload, the generation and entries follow.
    let reloads = |t: &str| metric(t, "portcullis_reloads_total", &[("result", "ok")]);
    let reloads_before = reloads(&after);
    setup.write("feeds/more.txt", "bad.example.test\nworse.example.test\n");
    wait_for("the reload", Duration::from_secs(15), || {
        metric(&scrape(&server), "portcullis_blocklist_generation", &[]) == 2.0
    });
    let reloaded = scrape(&server);
    parsed(&reloaded);
    assert_eq!(reloads(&reloaded) - reloads_before, 1.0);
    assert_eq!(metric(&reloaded, "portcullis_blocklist_entries", &[]), 3.0);
    assert_eq!(
        metric(
            &reloaded,
            "portcullis_blocklist_feed_entries",
            &[("feed", "more.txt")]
        ),
        2.0
    );
    // A broken feed counts as a feed error; the rest still reloads.
    setup.write(
        "feeds/broken.rpz",
        "$ORIGIN rpz.\n@ SOA x. y. 1 2 3 4 5\nbad..name CNAME .\n",
    );
    std::fs::write(setup.path("feeds/broken.rpz.gz"), b"\x1f\x8b not gzip").unwrap();
    wait_for("the feed error", Duration::from_secs(15), || {
        metric(
            &scrape(&server),
            "portcullis_feed_errors_total",
            &[("feed", "broken.rpz.gz")],
        ) >= 1.0
    });
    // No label carries a query name or a client address.
    for line in scrape(&server).lines() {
        assert!(
            !line.contains("evil.example.test") && !line.contains("127.0.0.1"),
            "{line}"
        );
    }
}

#[test]
fn readyz_follows_the_upstream_and_shutdown_while_healthz_stays_up() {
    // An upstream port with nothing on it yet, started on later.
    let port = crate::harness::port_to_reuse(std::net::Ipv4Addr::LOCALHOST);
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "ready_upstream_secs = 3\nupstream_probe_secs = 1",
        &format!("[resolver]\nmode = \"forward\"\nupstreams = [\"{port}\"]\ntimeout_ms = 500\n"),
    );
    let server = Server::start(&config);
    let admin = server.admin();
    let (status, _, body) = http_get(admin, "/healthz", None);
    assert_eq!((status, body.contains("ok")), (200, true));
    let (status, _, body) = http_get(admin, "/readyz", None);
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["dns_listeners"], true);
    assert_eq!(ready["blocklist_entries"], 1);
    assert!(
        ready["problems"][0].as_str().unwrap().contains("upstream"),
        "{body}"
    );

    // The upstream comes up (serving the root, which the probe asks for
    // `. NS`, as a real forwarder or root server would answer): ready.
    let root = "$TTL 300\n. IN SOA a.root.test. hostmaster.root.test. 1 3600 600 86400 60\n\
                . IN NS a.root.test.\n";
    let _auth = Authority::start(
        port,
        &[
            (".", root.to_owned()),
            ("example.test.", example_zone("example.test.", "127.0.0.1")),
        ],
    );
    wait_for("ready", Duration::from_secs(10), || {
        http_get(admin, "/readyz", None).0 == 200
    });
    let (_, _, body) = http_get(admin, "/readyz", None);
    assert!(body.contains("\"problems\":[]"), "{body}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn sigterm_under_load_answers_in_flight_queries_flushes_the_log_and_exits_zero() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let relay = SlowRelay::start(auth.addr, Duration::from_millis(1500));
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 5000\n",
            relay.addr
        ),
    );
    setup.edit_config(
        "allow_unknown_clients = true\n",
        "allow_unknown_clients = true\nshutdown_grace_secs = 10\n",
    );
    let server = Server::start(&config);
    let addr = server.addr;
    // Blocked queries (records queued for the log), then slow ones.
    for i in 0..200 {
        query(
            addr,
            &format!("n{i}.evil.example.test."),
            RecordType::A,
            Transport::Udp,
            false,
        );
    }
    let slow: Vec<_> = (0..4)
        .map(|i| {
            let transport = if i % 2 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            std::thread::spawn(move || {
                query(addr, "www.example.test.", RecordType::A, transport, true)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    assert!(
        server.wait_log("draining", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    // New queries during the drain are refused, and /readyz says why.
    let r = query(
        addr,
        "other.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let (status, _, body) = http_get(server.admin(), "/readyz", None);
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");
    for q in slow {
        let r = q.join().expect("the in-flight query was answered");
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
        assert!(!r.answers.is_empty(), "{r}");
    }
    let log = server.log();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    let conn = rusqlite::Connection::open(setup.path("state/hits.sqlite")).unwrap();
    // One client's 200 blocks: 20 records as they came and one counting
    // the rest, which exists only because exit flushed the coalescer.
    let (records, queries): (i64, i64) = conn
        .query_row("SELECT count(*), sum(repeats) FROM hits", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (records, queries),
        (21, 200),
        "every blocked query's record flushed before exit"
    );
}

#[test]
fn systemd_gets_ready_status_watchdog_and_stopping_over_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\nbad.example.test\n");
    let config = setup.config("[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n");
    let server = Server::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen = Vec::new();
    let read_until = |needle: &str, seen: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        while !seen.iter().any(|m| m.contains(needle)) {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {needle}: {e}; got {seen:?}"));
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    read_until("READY=1", &mut seen);
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=serving blocklist generation 1, 2 names"),
        "{ready}"
    );
    read_until("WATCHDOG=1", &mut seen);
    server.signal("HUP");
    read_until("generation 2", &mut seen);
    server.signal("TERM");
    read_until("STOPPING=1", &mut seen);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config("[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n");
    setup.edit_config("level = \"info\"", "level = \"info\"\nformat = \"json\"");
    let server = Server::start(&config);
    let log = server.log();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    assert!(log.contains("\"message\":\"serving\""), "{log}");
}
