//! dnstap to a real collector: `fstrm_capture` (Debian's fstrm-bin) on a
//! Unix socket, the file it writes read back by BIND's `dnstap-read`, and
//! the policy fields (which that `dnstap-read` does not print) decoded
//! from the same file. Without the tools the test says why it is skipped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prost::Message as _;

use portcullis::dnstap::message::{Dnstap, PolicyAction, PolicyMatch};

use crate::harness::{Server, Setup, Transport, metric, query, scrape, wait_for};
use crate::upstream::{Authority, example_zone};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `fstrm_capture` listening on `socket`, writing `file`.
fn collector(socket: &Path, file: &Path) -> Child {
    let _ = std::fs::remove_file(socket);
    let child = Command::new("fstrm_capture")
        .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
        .arg(socket)
        .arg("-w")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fstrm_capture");
    wait_for("the collector's socket", Duration::from_secs(10), || {
        socket.exists()
    });
    child
}

/// Stop a collector so that it closes its file (SIGINT, as an operator
/// would), and wait for it.
fn stop(mut collector: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &collector.id().to_string()])
        .status();
    let _ = collector.wait();
}

/// The dnstap payloads of a Frame Streams file (control frames skipped).
fn payloads(file: &Path) -> Vec<Dnstap> {
    let bytes = std::fs::read(file).expect("read the capture");
    let mut out = Vec::new();
    let mut at = 0;
    let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    while at + 4 <= bytes.len() {
        let len = u32_at(at);
        if len == 0 {
            // A control frame: its length, then its body.
            let control = u32_at(at + 4);
            at += 8 + control;
            continue;
        }
        out.push(Dnstap::decode(&bytes[at + 4..at + 4 + len]).expect("a dnstap payload"));
        at += 4 + len;
    }
    out
}

fn dnstap_read(file: &Path) -> String {
    let out = Command::new("dnstap-read")
        .arg("-y")
        .arg(file)
        .output()
        .expect("run dnstap-read");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_query_reaches_a_real_collector_with_its_policy_and_a_lost_collector_costs_nothing() {
    if !have("fstrm_capture") || !have("dnstap-read") {
        eprintln!("skipped: needs fstrm_capture (fstrm-bin) and dnstap-read (bind9-dnsutils)");
        return;
    }
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\n");
    let socket = setup.path("tap.sock");
    let first = setup.path("first.fstrm");
    let second = setup.path("second.fstrm");
    let collector1 = collector(&socket, &first);
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n\
         [dnstap]\nsocket = \"tap.sock\"\nclient_query = true\nidentity = \"pdns-test-1\"\n",
        auth.addr
    ));
    let server = Server::start(&config);
    wait_for("the dnstap connection", Duration::from_secs(10), || {
        server.log_contains("dnstap: connected")
    });

    // A blocked name over UDP (the fast path) and over TCP, a clean name
    // resolved upstream, and the same again from the packet cache.
    let blocked = query(
        server.addr,
        "a.evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(blocked.metadata.response_code, ResponseCode::NXDomain);
    let over_tcp = query(
        server.addr,
        "b.evil.example.test.",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(over_tcp.metadata.response_code, ResponseCode::NXDomain);
    for _ in 0..2 {
        let clean = query(
            server.addr,
            "www.example.test.",
            RecordType::A,
            Transport::Udp,
            true,
        );
        assert_eq!(clean.metadata.response_code, ResponseCode::NoError);
    }
    wait_for("8 messages written", Duration::from_secs(10), || {
        metric(&scrape(&server), "portcullis_dnstap_messages_total", &[]) >= 8.0
    });

    // The collector goes away mid-stream: DNS is unaffected, and what
    // could not be sent is counted.
    stop(collector1);
    for i in 0..50 {
        let name = format!("gone{i}.evil.example.test.");
        let r = query(server.addr, &name, RecordType::A, Transport::Udp, true);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    wait_for("drops counted", Duration::from_secs(10), || {
        let m = scrape(&server);
        metric(
            &m,
            "portcullis_dnstap_dropped_total",
            &[("reason", "no_collector")],
        ) + metric(
            &m,
            "portcullis_dnstap_dropped_total",
            &[("reason", "collector_error")],
        ) > 0.0
    });

    // It comes back: the resolver connects again on its own.
    let collector2 = collector(&socket, &second);
    wait_for(
        "the dnstap connection again",
        Duration::from_secs(30),
        || {
            let r = query(
                server.addr,
                "again.evil.example.test.",
                RecordType::A,
                Transport::Udp,
                true,
            );
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
            std::thread::sleep(Duration::from_millis(200));
            metric(&scrape(&server), "portcullis_dnstap_messages_total", &[]) > 8.0
        },
    );
    // A clean stop ends the stream with STOP and FINISH.
    assert!(server.terminate().success());
    stop(collector2);

    // dnstap-read, an independent decoder, reads the first file.
    let text = dnstap_read(&first);
    assert_eq!(text.matches("type: CLIENT_QUERY").count(), 4, "{text}");
    assert_eq!(text.matches("type: CLIENT_RESPONSE").count(), 4, "{text}");
    assert_eq!(text.matches("identity: pdns-test-1").count(), 8, "{text}");
    assert_eq!(text.matches("socket_protocol: TCP").count(), 2, "{text}");
    assert_eq!(
        text.matches("query_address: \"127.0.0.1\"").count(),
        8,
        "{text}"
    );
    assert_eq!(
        text.matches("status: NXDOMAIN").count(),
        4,
        "two blocked responses: {text}"
    );
    assert!(text.contains("'a.evil.example.test. IN A'"), "{text}");
    assert!(text.contains("www.example.test."), "{text}");

    // The policy fields, from the same file.
    let messages: Vec<_> = payloads(&first)
        .into_iter()
        .map(|d| d.message.expect("a message"))
        .collect();
    assert_eq!(messages.len(), 8);
    let with_policy: Vec<_> = messages.iter().filter_map(|m| m.policy.as_ref()).collect();
    assert_eq!(
        with_policy.len(),
        4,
        "both messages of both blocked queries"
    );
    for p in with_policy {
        assert_eq!(p.r#type.as_deref(), Some("blocklist"));
        assert_eq!(p.rule.as_deref(), Some(&b"malware.txt"[..]));
        assert_eq!(p.action, Some(PolicyAction::Nxdomain as i32));
        assert_eq!(p.r#match, Some(PolicyMatch::Qname as i32));
        assert_eq!(
            p.value.as_deref(),
            Some(&b"\x04evil\x07example\x04test\x00"[..])
        );
    }
    // The second file has the queries after the collector came back.
    let later = payloads(&second);
    assert!(!later.is_empty());
    assert!(
        later
            .iter()
            .all(|d| d.message.as_ref().is_some_and(|m| m.policy.is_some()))
    );
}
