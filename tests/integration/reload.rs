//! Hot reload through the real binary: files dropped, replaced, truncated,
//! made malformed and deleted while a client queries without pause.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, Transport, a_records, build_query, ede, exchange};
use crate::upstream::{Authority, example_zone};

const NAMES_PER_FEED: usize = 40;

fn names(prefix: &str) -> Vec<String> {
    (0..NAMES_PER_FEED)
        .map(|i| format!("{prefix}-{i}.example.test"))
        .collect()
}

fn write_feed(dir: &Path, file: &str, names: &[String]) {
    // Written under a temporary name and renamed, as a feed hub would.
    let tmp = dir.join(format!(".{file}.part"));
    std::fs::write(&tmp, names.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Blocked (EDE 15) or not, for one name; None when no answer came.
fn is_blocked(server: std::net::SocketAddr, name: &str) -> Option<bool> {
    let msg = build_query(&format!("{name}."), RecordType::A, true);
    let reply = exchange(server, &msg.to_vec().ok()?, Transport::Udp).ok()?;
    let reply = hickory_proto::op::Message::from_vec(&reply).ok()?;
    Some(ede(&reply).is_some_and(|(code, _)| code == 15))
}

/// Wait until every name has the wanted state; returns how long it took.
///
/// Each sweep queries the names in order. One swap can flip a sweep at
/// most once, from the old state to the new; a list that was being built
/// while it served would show names flipping back and forth within one
/// sweep, which fails the test.
fn wait_for(server: std::net::SocketAddr, names: &[String], blocked: bool, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let sweep: Vec<Option<bool>> = names.iter().map(|n| is_blocked(server, n)).collect();
        assert!(
            sweep.iter().all(Option::is_some),
            "{what}: a query went unanswered"
        );
        let flips = sweep.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            flips <= 1,
            "{what}: half-built list? states within one sweep: {sweep:?}"
        );
        if flips == 1 {
            assert_eq!(
                sweep.last(),
                Some(&Some(blocked)),
                "{what}: a sweep flipped away from the new state: {sweep:?}"
            );
        }
        if sweep.iter().all(|s| *s == Some(blocked)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: not {} within 3 s",
            if blocked { "blocked" } else { "allowed" }
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The background client: a name that is always blocked and one that
/// always resolves, queried in a loop; every answer is checked.
struct Client {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

fn start_client(server: std::net::SocketAddr) -> Client {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (s, n) = (Arc::clone(&stop), Arc::clone(&sent));
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut problems = Vec::new();
        while !s.load(Ordering::Relaxed)
            && Instant::now() < deadline
            && n.load(Ordering::Relaxed) < 200_000
        {
            n.fetch_add(2, Ordering::Relaxed);
            match is_blocked(server, "stable.example.test") {
                Some(true) => {}
                other => problems.push(format!("stable.example.test: {other:?}")),
            }
            let msg = build_query("www.example.test.", RecordType::A, false);
            let ok = exchange(server, &msg.to_vec().unwrap(), Transport::Udp)
                .ok()
                .and_then(|r| hickory_proto::op::Message::from_vec(&r).ok())
                .is_some_and(|r| a_records(&r) == ["192.0.2.10"]);
            if !ok {
                problems.push("www.example.test not resolved".into());
            }
        }
        problems
    });
    Client { stop, sent, thread }
}

#[test]
fn twenty_file_operations_under_continuous_queries() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    let feeds = setup.path("feeds");
    setup.write("feeds/stable.txt", "stable.example.test\n");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n[blocklist]\ndebounce_ms = 200\nmax_shrink = 0.5\n",
        auth.addr
    ));
    let server = Server::start(&config);
    let client = start_client(server.addr);
    let mut slowest = Duration::ZERO;
    let mut ops = 0;
    let mut step = |d: Duration| {
        slowest = slowest.max(d);
        ops += 1;
    };

    // 1-10: ten new feeds dropped in.
    for i in 0..10 {
        let file = format!("f{i:02}.txt");
        write_feed(&feeds, &file, &names(&format!("f{i}")));
        step(wait_for(server.addr, &names(&format!("f{i}")), true, &file));
    }
    // 11-13: three feeds replaced by new contents.
    for i in 0..3 {
        let file = format!("f{i:02}.txt");
        write_feed(&feeds, &file, &names(&format!("g{i}")));
        step(wait_for(server.addr, &names(&format!("g{i}")), true, &file));
        step(wait_for(
            server.addr,
            &names(&format!("f{i}")),
            false,
            &file,
        ));
    }
    // 14: truncated to a tenth: held back, the old names stay blocked.
    write_feed(&feeds, "f05.txt", &names("f5")[..4]);
    std::thread::sleep(Duration::from_millis(1200));
    step(wait_for(
        server.addr,
        &names("f5"),
        true,
        "truncated f05.txt",
    ));
    // 15: malformed: held back too.
    std::fs::write(
        feeds.join("f06.txt"),
        b"\x00\x01\x02 <html>not a feed</html>\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    step(wait_for(
        server.addr,
        &names("f6"),
        true,
        "malformed f06.txt",
    ));
    // 16-17: deleted: the names stay blocked (a deletion by mistake lifts
    // nothing) until a SIGHUP confirms it; then they resolve again.
    for i in [7, 8] {
        std::fs::remove_file(feeds.join(format!("f{i:02}.txt"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    for i in [7, 8] {
        step(wait_for(
            server.addr,
            &names(&format!("f{i}")),
            true,
            "deleted feed, not confirmed",
        ));
    }
    server.signal("HUP");
    for i in [7, 8] {
        step(wait_for(
            server.addr,
            &names(&format!("f{i}")),
            false,
            "deleted feed, confirmed by SIGHUP",
        ));
    }
    // 18: a temporary file is ignored until renamed into place.
    std::fs::write(feeds.join("f10.txt.tmp"), names("f10").join("\n")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        is_blocked(server.addr, "f10-0.example.test"),
        Some(false),
        "a .tmp file is not a feed"
    );
    std::fs::rename(feeds.join("f10.txt.tmp"), feeds.join("f10.txt")).unwrap();
    step(wait_for(
        server.addr,
        &names("f10"),
        true,
        "renamed into place",
    ));
    // 19: the truncated feed restored in full goes through.
    write_feed(&feeds, "f05.txt", &names("h5"));
    step(wait_for(
        server.addr,
        &names("h5"),
        true,
        "f05.txt restored",
    ));
    // 20: two feeds changed at once: one debounced reload takes both.
    write_feed(&feeds, "f11.txt", &names("f11"));
    write_feed(&feeds, "f12.txt", &names("f12"));
    step(wait_for(
        server.addr,
        &[names("f11"), names("f12")].concat(),
        true,
        "two drops",
    ));

    client.stop.store(true, Ordering::Relaxed);
    let problems = client.thread.join().unwrap();
    let sent = client.sent.load(Ordering::Relaxed);
    assert!(
        problems.is_empty(),
        "{} of {sent} background queries failed: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(sent > 100, "the background client ran ({sent} queries)");
    assert!(ops >= 20, "{ops} operations");
    assert!(
        slowest < Duration::from_secs(3),
        "slowest switch {slowest:?}"
    );
    assert!(
        server.log_contains("shrank from 40 to 4"),
        "the log says why f05 was held back:\n{}",
        server.log()
    );
    assert!(
        server.log_contains("matches no known format"),
        "and why f06 was:\n{}",
        server.log()
    );
    eprintln!(
        "reload: {ops} operations, slowest switch {slowest:?}, {sent} background queries, none failed"
    );
}

#[test]
fn sighup_reloads_and_restart_serves_from_the_snapshot() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/a.txt", "evil.example.test\n");
    setup.write("allow.txt", "");
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n[blocklist]\nallow = [\"allow.txt\"]\n",
        auth.addr
    ));
    let server = Server::start(&config);
    assert_eq!(is_blocked(server.addr, "x.evil.example.test"), Some(true));
    // The allow list is not in feeds_dir: SIGHUP picks up its change.
    setup.write("allow.txt", "x.evil.example.test\n");
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    wait_for(
        server.addr,
        &["x.evil.example.test".into()],
        false,
        "SIGHUP",
    );
    let snapshot = setup.path("state/blocklist.snapshot");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_contains("generation=2") || !snapshot.exists() {
        assert!(
            Instant::now() < deadline,
            "snapshot written after the reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.terminate().success());

    // Restart: served from the snapshot, no feed parsed, no reload.
    let server = Server::start(&config);
    assert!(
        server.log_contains("blocklist loaded from the snapshot"),
        "{}",
        server.log()
    );
    assert!(
        !server.log_contains("feed loaded"),
        "no feed parsed:\n{}",
        server.log()
    );
    assert_eq!(is_blocked(server.addr, "y.evil.example.test"), Some(true));
    assert_eq!(is_blocked(server.addr, "x.evil.example.test"), Some(false));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !server.log_contains("reloading the blocklist"),
        "unchanged feeds cause no reload:\n{}",
        server.log()
    );
    drop(server);

    // A feed changed while the server was down: the snapshot serves first,
    // then the reload brings the change in.
    setup.write("feeds/b.txt", "later.example.test\n");
    let server = Server::start(&config);
    assert!(server.log_contains("blocklist loaded from the snapshot"));
    wait_for(
        server.addr,
        &["later.example.test".into()],
        true,
        "reload after a snapshot start",
    );
    drop(server);

    // A corrupt snapshot is ignored with a warning, and the feeds compile.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&snapshot, &bytes).unwrap();
    let server = Server::start(&config);
    assert!(
        server.log_contains("ignoring the snapshot") && server.log_contains("checksum"),
        "{}",
        server.log()
    );
    assert_eq!(is_blocked(server.addr, "later.example.test"), Some(true));
}
