//! `[[rpz]]` against a real primary: NSD (Debian's nsd) on loopback,
//! serving a TSIG-protected RPZ with `notify:` pointed at Portcullis and
//! IXFR kept (`store-ixfr`, `create-ixfr`). The first transfer is an
//! AXFR; a serial bump and NSD's reload send a NOTIFY and the change
//! arrives by IXFR (NSD's log says so); a wrong key is refused and the
//! zone kept; a NOTIFY from another address is refused and counted; with
//! the primary gone the zone keeps blocking and /readyz warns once the
//! SOA expire time has passed. Skipped with a message where NSD is not
//! installed (scripts/test-deps.sh installs it).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::download::{blocked, feed, feeds};
use crate::harness::{Server, Setup, Transport, http_get, metric, query, run, scrape, wait_for};
use crate::hitlog::{TOKEN_OPERATOR, sha};

const NSD: &str = "/usr/sbin/nsd";
const KEY: &str = "xfr-key";
/// 32 bytes, base64: the key both sides share.
const SECRET: &str = "cG9ydGN1bGxpcy10ZXN0LXRzaWctc2VjcmV0LTMyYg==";
const WRONG: &str = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctdw==";

struct Nsd {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nsd {
    fn start(dir: &Path, port: u16, notify_port: u16) -> Nsd {
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  zonesdir: \"{d}\"\n\
             \x20 pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n\
             \x20 zonelistfile: \"{d}/zone.list\"\n  xfrdir: \"{d}\"\n  username: \"\"\n\
             \x20 chroot: \"\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 2\n  server-count: 1\n\
             remote-control:\n  control-enable: no\n\
             key:\n  name: \"{KEY}\"\n  algorithm: hmac-sha256\n  secret: \"{SECRET}\"\n\
             zone:\n  name: \"rpz.test\"\n  zonefile: \"rpz.test.zone\"\n\
             \x20 provide-xfr: 127.0.0.1 {KEY}\n  notify: 127.0.0.1@{notify_port} NOKEY\n\
             \x20 store-ixfr: yes\n  create-ixfr: yes\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nsd.conf"), conf).unwrap();
        let child = Command::new(NSD)
            .arg("-d")
            .arg("-c")
            .arg(dir.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd");
        let nsd = Nsd {
            child,
            dir: dir.to_owned(),
        };
        wait_for("NSD to load the zone", Duration::from_secs(20), || {
            nsd.log().contains("zone rpz.test read with success")
        });
        nsd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nsd.log")).unwrap_or_default()
    }

    /// Rewrite the zone at `serial` and have NSD reload it (which sends
    /// the NOTIFY).
    fn publish(&self, serial: u32, names: &[&str]) {
        write_zone(&self.dir, serial, names);
        self.reload();
    }

    /// Have NSD reload its zone file (which sends the NOTIFY).
    fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn write_zone(dir: &Path, serial: u32, names: &[&str]) {
    let lines: Vec<String> = names.iter().map(|n| format!("{n} CNAME .")).collect();
    write_zone_lines(dir, serial, &lines);
}

fn write_zone_lines(dir: &Path, serial: u32, lines: &[String]) {
    // refresh 3600: only a NOTIFY (or a failure's 1 s retry) brings a
    // change within the test; expire 8 s: the staleness warning comes soon.
    let mut text = format!(
        "$ORIGIN rpz.test.\n$TTL 60\n@ IN SOA ns.rpz.test. admin.rpz.test. {serial} 3600 1 8 60\n\
         @ IN NS ns.rpz.test.\n"
    );
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(dir.join("rpz.test.zone"), text).unwrap();
}

fn free_port() -> u16 {
    crate::harness::port_to_reuse(std::net::Ipv4Addr::LOCALHOST).port()
}

/// The rpz.test row of `portcullis feeds --json`.
fn source(config: &Path, server: &Server) -> serde_json::Value {
    feed(&feeds(config, server), "rpz.test").clone()
}

/// A NOTIFY for rpz.test sent from `from` (a loopback address).
fn send_notify(server: &Server, from: &str) -> ResponseCode {
    let mut msg = Message::new(4711, MessageType::Query, OpCode::Notify);
    msg.metadata.authoritative = true;
    msg.add_query(Query::query(
        Name::from_ascii("rpz.test.").unwrap(),
        RecordType::SOA,
    ));
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server.addr).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to the NOTIFY");
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.op_code, OpCode::Notify);
    reply.metadata.response_code
}

/// A resolver keeping `rpz.test` from an NSD (not started yet) whose
/// folder and port are given, with the TSIG key, an operator token and a
/// wildcard upstream for `xfr.test.`; `rpz` adds keys to the `[[rpz]]`.
struct Primed {
    setup: Setup,
    nsd_dir: PathBuf,
    nsd_port: u16,
    config: PathBuf,
    _upstream: crate::upstream::Authority,
}

/// `None` (the test is skipped, and says so) where NSD is not installed.
fn primed(test: &str, rpz: &str) -> Option<Primed> {
    if !Path::new(NSD).exists() {
        eprintln!("SKIPPED {test}: NSD is not installed (apt-get install nsd)");
        return None;
    }
    let setup = Setup::new();
    let nsd_dir = setup.path("nsd");
    std::fs::create_dir(&nsd_dir).unwrap();
    setup.write("xfr.key", &format!("{SECRET}\n"));
    let nsd_port = free_port();
    let admin = format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR));
    let (upstream, resolver) = crate::upstream::wildcard_upstream("xfr.test.");
    let config = setup.config_with_admin(
        &admin,
        &format!(
            "{resolver}[[rpz]]\nzone = \"rpz.test\"\nprimaries = [\"127.0.0.1:{nsd_port}\"]\n\
             tsig_name = \"{KEY}\"\ntsig_secret_file = \"xfr.key\"\nrefresh_floor_secs = 1\n{rpz}"
        ),
    );
    Some(Primed {
        setup,
        nsd_dir,
        nsd_port,
        config,
        _upstream: upstream,
    })
}

#[test]
fn an_rpz_follows_its_primary_by_axfr_notify_and_ixfr() {
    let Some(primed) = primed(
        "RPZ transfer test",
        "timeout_secs = 5\ncategory = \"threat-rpz\"\n",
    ) else {
        return;
    };
    // `_upstream` (not `_`) keeps the upstream running to the end.
    let Primed {
        setup,
        nsd_dir,
        nsd_port,
        config,
        _upstream,
    } = primed;
    let server = Server::start(&config);
    assert!(
        !blocked(&server, "www.evil.xfr.test"),
        "answered before the zone arrives"
    );
    write_zone(&nsd_dir, 1, &["evil.xfr.test", "*.evil.xfr.test"]);
    let nsd = Nsd::start(&nsd_dir, nsd_port, server.addr.port());

    // The first transfer is an AXFR; it lands as the feed "rpz.test".
    wait_for("the AXFR blocks", Duration::from_secs(20), || {
        blocked(&server, "www.evil.xfr.test")
    });
    wait_for("NSD to log the AXFR", Duration::from_secs(10), || {
        nsd.log().contains("axfr for rpz.test.")
    });
    let s = source(&config, &server);
    assert_eq!(
        (s["source"].as_str(), s["format"].as_str()),
        (Some("rpz"), Some("rpz"))
    );
    assert_eq!(s["version"], "serial 1");
    assert!(
        s["last_result"]
            .as_str()
            .unwrap()
            .starts_with("AXFR of serial 1: 2 records"),
        "{s}"
    );

    // A change at the primary: NOTIFY, then IXFR, blocking in seconds.
    let started = Instant::now();
    nsd.publish(2, &["evil.xfr.test", "*.evil.xfr.test", "new.xfr.test"]);
    wait_for("the IXFR blocks", Duration::from_secs(10), || {
        blocked(&server, "new.xfr.test")
    });
    eprintln!("NOTIFY to blocking: {} ms", started.elapsed().as_millis());
    assert!(server.log_contains("NOTIFY received"), "{}", server.log());
    wait_for("NSD to log the IXFR", Duration::from_secs(10), || {
        nsd.log().contains("ixfr for rpz.test.")
    });
    let s = source(&config, &server);
    assert!(
        s["last_result"]
            .as_str()
            .unwrap()
            .starts_with("IXFR 1 to 2: 0 deleted, 1 added"),
        "{s}"
    );

    // The hit names the zone and the serial that listed the name.
    let before = metric(&scrape(&server), "portcullis_hitlog_written_total", &[]);
    assert!(blocked(&server, "new.xfr.test"));
    wait_for("the hit written", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) > before
    });
    let (code, out, err) = run(&["logs", "--format", "json", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let hit: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(hit["feed"], "rpz.test");
    assert_eq!(hit["indicator"], "rpz.test serial 2");
    assert_eq!(hit["category"], "threat-rpz");

    // A wrong key: the primary refuses, the zone held stays.
    let held = std::fs::read(setup.path("feeds/rpz.test")).unwrap();
    setup.write("xfr.key", &format!("{WRONG}\n"));
    nsd.publish(
        3,
        &[
            "evil.xfr.test",
            "*.evil.xfr.test",
            "new.xfr.test",
            "third.xfr.test",
        ],
    );
    wait_for("the wrong key refused", Duration::from_secs(15), || {
        source(&config, &server)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("TSIG"))
    });
    let error = source(&config, &server)["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("NOTAUTH") || error.contains("TSIG"),
        "{error}"
    );
    assert!(server.log_contains("rpz: transfer failed; the zone held stays"));
    assert_eq!(std::fs::read(setup.path("feeds/rpz.test")).unwrap(), held);
    assert!(blocked(&server, "new.xfr.test") && !blocked(&server, "third.xfr.test"));
    // The right key again: the next retry (1 s) catches up.
    setup.write("xfr.key", &format!("{SECRET}\n"));
    wait_for(
        "the catch-up after the key is fixed",
        Duration::from_secs(15),
        || blocked(&server, "third.xfr.test"),
    );

    // A NOTIFY from an address that is not the primary is refused.
    assert_eq!(send_notify(&server, "127.0.0.2"), ResponseCode::Refused);
    assert_eq!(
        metric(
            &scrape(&server),
            "portcullis_notify_total",
            &[("result", "not_primary")]
        ),
        1.0
    );
    assert!(server.log_contains("NOTIFY refused"));
    assert!(
        metric(
            &scrape(&server),
            "portcullis_notify_total",
            &[("result", "accepted")]
        ) >= 2.0
    );

    // The primary goes away: the zone keeps blocking, and /readyz warns
    // once the SOA expire (8 s) has passed without contact.
    drop(nsd);
    wait_for("the expiry warning", Duration::from_secs(30), || {
        let (_, _, body) = http_get(server.admin(), "/readyz", None);
        body.contains("past its expire time")
    });
    // A warning, not a problem: the node stays ready.
    let (status, _, body) = http_get(server.admin(), "/readyz", None);
    assert_eq!(status, 200, "still ready: {body}");
    assert!(blocked(&server, "www.evil.xfr.test"));
}

/// A zone big enough for layers of its own (60,000 names): its IXFR is
/// live before the zone's compile (the increment: a mask over the zone's
/// layers and a layer of the changed owners), and the compile that
/// follows gives the same answers.
#[test]
fn a_big_zone_s_increment_is_live_before_its_compile() {
    let Some(primed) = primed("RPZ increment test", "timeout_secs = 10\n") else {
        return;
    };
    // `_upstream` (not `_`) keeps the upstream running to the end.
    let Primed {
        setup,
        nsd_dir,
        nsd_port,
        config,
        _upstream,
    } = primed;
    let server = Server::start(&config);
    let zone = |changed: bool| {
        let mut lines: Vec<String> = (0..60_000)
            .map(|i| format!("n{i}.xfr.test CNAME ."))
            .collect();
        if changed {
            lines.push("new.xfr.test CNAME .".into());
            lines.push("*.wild.xfr.test CNAME *.".into());
        } else {
            lines.push("gone.xfr.test CNAME .".into());
            lines.push("*.wild.xfr.test CNAME .".into());
        }
        lines
    };
    write_zone_lines(&nsd_dir, 1, &zone(false));
    let nsd = Nsd::start(&nsd_dir, nsd_port, server.addr.port());
    wait_for("the AXFR blocks", Duration::from_secs(60), || {
        blocked(&server, "gone.xfr.test")
    });
    let nodata = |name: &str| {
        let reply = query(server.addr, name, RecordType::A, Transport::Udp, true);
        reply.metadata.response_code == ResponseCode::NoError && reply.answers.is_empty()
    };
    let answered = |name: &str| {
        let reply = query(server.addr, name, RecordType::A, Transport::Udp, true);
        reply.metadata.response_code == ResponseCode::NoError && !reply.answers.is_empty()
    };
    assert!(blocked(&server, "a.wild.xfr.test") && answered("new.xfr.test"));
    let generation = |s: &Server| metric(&scrape(s), "portcullis_blocklist_generation", &[]);
    let before = generation(&server);

    // Serial 2: one owner deleted, one added, one changed (NXDOMAIN to
    // NODATA).
    write_zone_lines(&nsd_dir, 2, &zone(true));
    nsd.reload();
    wait_for("the increment blocks", Duration::from_secs(20), || {
        blocked(&server, "new.xfr.test")
    });
    let log = || server.log();
    assert!(answered("gone.xfr.test"), "deleted, resolves: {}", log());
    assert!(nodata("a.wild.xfr.test"), "changed, NODATA: {}", log());
    assert!(
        blocked(&server, "n59999.xfr.test"),
        "still blocks: {}",
        log()
    );
    assert!(
        server.log_contains("rpz: increment live"),
        "{}",
        server.log()
    );
    let live = |s: &Server| {
        metric(
            &scrape(s),
            "portcullis_rpz_increments_total",
            &[("result", "live")],
        )
    };
    assert_eq!(live(&server), 1.0, "{}", server.log());

    // The zone file and its compile follow; the answers stay the same.
    wait_for("the compile of the zone", Duration::from_secs(60), || {
        generation(&server) >= before + 2.0
    });
    assert!(blocked(&server, "new.xfr.test"));
    assert!(answered("gone.xfr.test"));
    assert!(nodata("a.wild.xfr.test"));
    let kept = std::fs::read_to_string(setup.path("feeds/rpz.test")).unwrap();
    assert!(kept.contains("new.xfr.test") && !kept.contains("gone.xfr.test"));
    // After a restart (from the snapshot the compile wrote) as well.
    drop(server);
    let server = Server::start(&config);
    assert!(blocked(&server, "new.xfr.test") && !blocked(&server, "gone.xfr.test"));
    // Ready from the snapshot: it carries a generation.
    let (_, _, body) = http_get(server.admin(), "/readyz", None);
    assert!(!body.contains("no blocklist is loaded"), "{body}");
    wait_for("ready after the restart", Duration::from_secs(10), || {
        http_get(server.admin(), "/readyz", None).0 == 200
    });
    drop(nsd);
}
