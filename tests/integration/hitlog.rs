//! Organisations and the hit log end to end: records land with the right
//! organisation, the CLI and the API show each organisation only its own,
//! a crash keeps what was acknowledged, a burst drops and counts.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sha2::{Digest, Sha256};

use crate::harness::{
    Server, Setup, Transport, ede, http_get, metric, query, query_from, run, scrape, wait_for,
};
use crate::upstream::{Authority, example_zone};

pub const TOKEN_A: &str = "token-for-council-a";
pub const TOKEN_B: &str = "token-for-school-b";
pub const TOKEN_OPERATOR: &str = "token-for-the-operator";

pub fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Two organisations on loopback: council-a holds 127.0.0.0/8, school-b
/// the more specific 127.0.0.3/32. Unknown clients are refused.
pub fn two_orgs(hitlog: &str) -> (Setup, Authority, Server) {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\nc2.example.test\n");
    setup.write("feeds/phish.txt", "phish.example.test\n");
    let extra = format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
         [[feed]]\nfile = \"malware.txt\"\ncategory = \"malware\"\n\
         [[feed]]\nfile = \"phish.txt\"\ncategory = \"phishing\"\n\
         [[organisation]]\nid = \"council-a\"\nname = \"Council A\"\nnetworks = [\"127.0.0.0/8\"]\n\
         token_sha256 = \"{}\"\n\
         [[organisation]]\nid = \"school-b\"\nname = \"School B\"\nnetworks = [\"127.0.0.3/32\"]\n\
         token_sha256 = \"{}\"\nallow = [\"trusted.evil.example.test\"]\n\
         actions = {{ phishing = \"nodata\" }}\n\
         [hitlog]\n{hitlog}\n",
        auth.addr,
        sha(TOKEN_A),
        sha(TOKEN_B)
    );
    let config = setup.config_with_admin(
        &format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR)),
        &extra,
    );
    // The harness allows unknown clients; these tests want the default.
    setup.edit_config(
        "allow_unknown_clients = true",
        "allow_unknown_clients = false",
    );
    let server = Server::start(&config);
    (setup, auth, server)
}

/// Wait until the writer has committed `n` records (from /metrics).
fn wait_written(server: &Server, n: f64) {
    wait_for(
        &format!("{n} records written"),
        Duration::from_secs(20),
        || metric(&scrape(server), "portcullis_hitlog_written_total", &[]) >= n,
    );
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn blocks_are_logged_against_the_right_organisation_and_shown_only_to_it() {
    let (setup, _auth, server) = two_orgs("jsonl = \"hits.jsonl\"");
    let config = setup.path("portcullis.toml");
    let config = config.to_str().unwrap();

    // council-a: 127.0.0.1 (UDP and TCP) and 127.0.0.2; school-b: 127.0.0.3.
    let r = query(
        server.addr,
        "www.evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = query(
        server.addr,
        "c2.example.test.",
        RecordType::AAAA,
        Transport::Tcp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = query_from(
        server.addr,
        "127.0.0.2",
        "phish.example.test.",
        RecordType::A,
    );
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NXDomain,
        "council-a: default action"
    );
    let r = query_from(
        server.addr,
        "127.0.0.3",
        "phish.example.test.",
        RecordType::A,
    );
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "school-b overrides phishing to nodata"
    );
    assert!(r.answers.is_empty());
    let r = query_from(
        server.addr,
        "127.0.0.3",
        "evil.example.test.",
        RecordType::A,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // school-b's own allow entry: the upstream's own answer (the zone has
    // no such name, so NXDOMAIN, but without the block's EDE);
    // council-a still gets the block.
    let r = query_from(
        server.addr,
        "127.0.0.3",
        "www.trusted.evil.example.test.",
        RecordType::A,
    );
    assert!(ede(&r).is_none(), "allowed for school-b: {r}");
    let r = query_from(
        server.addr,
        "127.0.0.2",
        "www.trusted.evil.example.test.",
        RecordType::A,
    );
    assert_eq!(ede(&r).map(|e| e.0), Some(15), "blocked for council-a: {r}");
    // A clean name is not logged.
    let r = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    wait_written(&server, 6.0);

    // The CLI, per organisation.
    let (code, out, err) = run(&[
        "logs",
        "--org",
        "council-a",
        "--format",
        "json",
        "-c",
        config,
    ]);
    assert_eq!(code, 0, "{err}");
    let a = json_lines(&out);
    assert_eq!(a.len(), 4, "{out}");
    assert!(a.iter().all(|h| h["org"] == "council-a"));
    let www = a
        .iter()
        .find(|h| h["qname"] == "www.evil.example.test")
        .expect("the UDP block");
    assert_eq!(www["matched"], "evil.example.test");
    assert_eq!(www["feed"], "malware.txt");
    assert_eq!(www["category"], "malware");
    assert_eq!(www["client"], "127.0.0.1");
    assert_eq!(www["transport"], "udp");
    assert_eq!(www["stage"], "qname");
    assert_eq!(www["action"], "nxdomain");
    assert_eq!(www["qtype"], "A");
    let c2 = a.iter().find(|h| h["qname"] == "c2.example.test").unwrap();
    assert_eq!(
        (c2["transport"].as_str(), c2["qtype"].as_str()),
        (Some("tcp"), Some("AAAA"))
    );
    let (_, out, _) = run(&[
        "logs", "--org", "school-b", "--format", "json", "-c", config,
    ]);
    let b = json_lines(&out);
    assert_eq!(b.len(), 2, "{out}");
    assert!(
        b.iter()
            .all(|h| h["org"] == "school-b" && h["client"] == "127.0.0.3")
    );
    let phish = b.iter().find(|h| h["category"] == "phishing").unwrap();
    assert_eq!(phish["action"], "nodata");
    // Filters.
    let (_, out, _) = run(&[
        "logs",
        "--client",
        "127.0.0.2",
        "--domain",
        "example.test",
        "--format",
        "csv",
        "-c",
        config,
    ]);
    assert_eq!(out.lines().count(), 3, "header + 2 rows: {out}");
    // The default table names the transport: a roaming DoH laptop and an
    // office's UDP query look alike otherwise.
    let (_, out, _) = run(&["logs", "--org", "council-a", "-c", config]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header[..5],
        ["ref", "ts", "org", "client", "transport"],
        "{out}"
    );
    let c2 = out
        .lines()
        .find(|l| l.contains("c2.example.test"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(c2.split_whitespace().nth(4), Some("tcp"), "{out}");
    let (_, out, _) = run(&[
        "logs",
        "--category",
        "phishing",
        "--since",
        "1h",
        "--format",
        "json",
        "-c",
        config,
    ]);
    assert_eq!(json_lines(&out).len(), 2);
    let (code, _, err) = run(&["logs", "--org", "nobody", "-c", config]);
    assert_eq!(code, 64);
    assert!(err.contains("council-a, school-b"), "{err}");

    // Reports.
    let (code, out, err) = run(&[
        "report",
        "--org",
        "council-a",
        "--format",
        "json",
        "-c",
        config,
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["total"], 4);
    assert_eq!(report["top_names"][0]["name"], "evil.example.test");
    assert_eq!(report["top_names"][0]["hits"], 2);
    assert_eq!(report["top_clients"][0]["client"], "127.0.0.1");
    let (_, out, _) = run(&["report", "-c", config]);
    assert!(
        out.contains("all organisations")
            && out.contains("school-b")
            && out.contains("Top clients"),
        "{out}"
    );
    let html = setup.path("report.html");
    let (code, _, err) = run(&[
        "report",
        "--org",
        "school-b",
        "--format",
        "html",
        "-o",
        html.to_str().unwrap(),
        "-c",
        config,
    ]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(html).unwrap();
    assert!(
        html.contains("<svg")
            && html.contains("phish.example.test")
            && !html.contains("c2.example.test")
    );

    // The JSON-lines stream has every record.
    let stream = json_lines(&std::fs::read_to_string(setup.path("hits.jsonl")).unwrap());
    assert_eq!(stream.len(), 6);

    // The API: 401 without a token, 403 for the other organisation.
    let admin = server.admin();
    let (status, headers, _) = http_get(admin, "/api/v1/orgs/council-a/hits", None);
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer"))
    );
    let (status, _, _) = http_get(admin, "/api/v1/orgs/council-a/hits", Some("wrong"));
    assert_eq!(status, 401);
    let (status, _, body) = http_get(admin, "/api/v1/orgs/council-a/hits", Some(TOKEN_B));
    assert_eq!(status, 403, "{body}");
    assert!(server.wait_log("asked for another organisation", Duration::from_secs(5)));
    // An organisation id that carries a newline cannot forge a log line:
    // it is written escaped, inside its own event. The JSON answer carries
    // the same protective headers as the page.
    let (status, headers, _) = http_get(
        admin,
        "/api/v1/orgs/council-a%0AINFO%20forged%1B%5B2J/hits",
        Some(TOKEN_B),
    );
    assert_eq!(status, 403);
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("referrer-policy", "no-referrer"),
    ] {
        assert!(
            headers.iter().any(|(k, v)| k == name && v == value),
            "{name}: {headers:?}"
        );
    }
    assert!(server.wait_log(r"council-a\nINFO forged\x1b[2J", Duration::from_secs(5)));
    assert!(
        !server.log().lines().any(|l| l.starts_with("INFO forged")),
        "{}",
        server.log()
    );
    let (status, _, _) = http_get(admin, "/api/v1/report", Some(TOKEN_A));
    assert_eq!(status, 403);
    let (status, _, body) = http_get(admin, "/api/v1/orgs/council-a/hits?limit=3", Some(TOKEN_A));
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["hits"].as_array().unwrap().len(), 3);
    let next = page["next"].as_str().expect("a second page");
    let (_, _, body) = http_get(
        admin,
        &format!("/api/v1/orgs/council-a/hits?limit=3&after={next}"),
        Some(TOKEN_A),
    );
    let page2: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page2["hits"].as_array().unwrap().len(), 1);
    assert!(page2["next"].is_null());
    // A record by reference, and not through the other organisation.
    let id = page["hits"][0]["id"].as_i64().unwrap();
    let (status, _, _) = http_get(
        admin,
        &format!("/api/v1/orgs/council-a/hits/{id}"),
        Some(TOKEN_A),
    );
    assert_eq!(status, 200);
    let (status, _, _) = http_get(
        admin,
        &format!("/api/v1/orgs/school-b/hits/{id}"),
        Some(TOKEN_OPERATOR),
    );
    assert_eq!(status, 404, "record {id} is council-a's");
    let (status, _, body) = http_get(admin, "/api/v1/orgs/school-b/report", Some(TOKEN_B));
    assert_eq!(status, 200);
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["total"], 2);
    let (status, _, body) = http_get(admin, "/api/v1/report", Some(TOKEN_OPERATOR));
    assert_eq!(status, 200);
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["total"], 6);
    let (status, _, body) = http_get(
        admin,
        "/api/v1/orgs/school-b/hits?since=yesterday-ish",
        Some(TOKEN_B),
    );
    assert_eq!(status, 400);
    assert!(body.contains("not a time"), "{body}");
    let m = scrape(&server);
    assert_eq!(
        metric(
            &m,
            "portcullis_api_denied_total",
            &[("reason", "other_org")]
        ),
        3.0,
        "council-a's hits, the report, and the forged id"
    );
}

#[test]
fn unknown_clients_are_refused_and_counted() {
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n\
         [[organisation]]\nid = \"only-two\"\nnetworks = [\"127.0.0.2/32\"]\n",
    );
    setup.edit_config(
        "allow_unknown_clients = true",
        "allow_unknown_clients = false",
    );
    let server = Server::start(&config);
    for _ in 0..3 {
        let r = query(
            server.addr,
            "evil.example.test.",
            RecordType::A,
            Transport::Udp,
            true,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }
    let r = query_from(
        server.addr,
        "127.0.0.2",
        "evil.example.test.",
        RecordType::A,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let m = scrape(&server);
    assert_eq!(metric(&m, "portcullis_refused_clients_total", &[]), 3.0);
    assert_eq!(
        metric(&m, "portcullis_queries_total", &[("outcome", "refused")]),
        3.0
    );
}

/// Send blocked queries from `threads` threads until `stop`, each waiting
/// for its answer; returns the number answered.
fn stream_blocked(
    server: std::net::SocketAddr,
    threads: usize,
    per_thread: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<usize>> {
    stream_blocked_tagged(server, "h", threads, per_thread, stop)
}

/// [`stream_blocked`] with names that start with `tag`, so that rounds
/// of a test ask different names.
pub fn stream_blocked_tagged(
    server: std::net::SocketAddr,
    tag: &str,
    threads: usize,
    per_thread: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<usize>> {
    (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut answered = 0;
                let mut buf = [0u8; 1500];
                for i in 0..per_thread {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("{tag}{t}-{i}.evil.example.test.");
                    let msg = crate::harness::build_query(&name, RecordType::A, false);
                    if sock.send_to(&msg.to_vec().unwrap(), server).is_err() {
                        break;
                    }
                    match sock.recv_from(&mut buf) {
                        Ok(_) => answered += 1,
                        Err(_) => break,
                    }
                }
                answered
            })
        })
        .collect()
}

#[test]
fn kill_9_keeps_every_acknowledged_record_and_the_database_opens_cleanly() {
    // One record per query: the count is compared with what was sent.
    let (setup, _auth, server) = two_orgs("coalesce_after = 0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = stream_blocked(server.addr, 4, 50_000, stop.clone());
    // Let records flow, read the acknowledged count, and kill at once.
    wait_written(&server, 500.0);
    let acknowledged = metric(&scrape(&server), "portcullis_hitlog_written_total", &[]);
    server.kill_hard();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(sent as f64 >= acknowledged);

    let db = setup.path("state/hits.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM hits", [], |r| r.get(0))
        .unwrap();
    assert!(
        count as f64 >= acknowledged,
        "{count} records after kill -9, {acknowledged} acknowledged before it"
    );
    drop(conn);
    let config = setup.path("portcullis.toml");
    let (code, out, err) = run(&["report", "--format", "json", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["total"].as_i64(), Some(count));
}

#[test]
fn a_burst_larger_than_the_channel_is_answered_and_every_drop_counted() {
    let (setup, _auth, server) = two_orgs("channel_capacity = 1\ncoalesce_after = 0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = stream_blocked(server.addr, 16, 250, stop);
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(answered, 4000, "every query answered");
    // Everything is either written or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (written, dropped) = loop {
        let m = scrape(&server);
        let written = metric(&m, "portcullis_hitlog_written_total", &[]);
        let dropped = metric(
            &m,
            "portcullis_hitlog_dropped_total",
            &[("reason", "channel_full")],
        );
        if written + dropped >= 4000.0 || Instant::now() > deadline {
            break (written, dropped);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(written + dropped, 4000.0);
    assert!(dropped > 0.0, "a one-record channel under 16 clients drops");
    let blocked = metric(
        &scrape(&server),
        "portcullis_queries_total",
        &[("outcome", "blocked")],
    );
    assert_eq!(blocked, 4000.0);
    assert_eq!(server.terminate().code(), Some(0));
    let conn = rusqlite::Connection::open(setup.path("state/hits.sqlite")).unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM hits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        count as f64, written,
        "the records missing are exactly the drops"
    );
}

/// Once `n` hits have been handed to the writer (coalesced ones written
/// when their window ended): the records written and the hits folded.
fn handed_over(server: &Server, what: &str, n: f64) -> (f64, f64) {
    let counts = || {
        let m = scrape(server);
        (
            metric(&m, "portcullis_hitlog_written_total", &[]),
            metric(&m, "portcullis_hitlog_coalesced_total", &[]),
        )
    };
    wait_for(what, Duration::from_secs(20), || {
        let (written, coalesced) = counts();
        written + coalesced >= n
    });
    counts()
}

/// council-a's hit records, as its security team reads them.
fn council_a_hits(server: &Server) -> serde_json::Value {
    let (status, _, body) = http_get(
        server.admin(),
        "/api/v1/orgs/council-a/hits?limit=500",
        Some(TOKEN_A),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Stop the server, then the report's total of queries.
fn report_total(setup: &Setup, server: Server) -> Option<u64> {
    assert_eq!(server.terminate().code(), Some(0));
    let config = setup.path("portcullis.toml");
    let (code, out, err) = run(&["report", "--format", "json", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    r["total"].as_u64()
}

#[test]
fn a_beacon_is_its_first_query_and_one_counted_record() {
    // Malware asks for its C2 name again and again; the same client's AAAA
    // and a TCP retry are queries of their own. The window is long enough
    // for all 32 queries to fall in one on a loaded machine.
    let (setup, _auth, server) = two_orgs("coalesce_window_s = 5");
    let ask = |qtype, transport| {
        let r = query(server.addr, "c2.example.test.", qtype, transport, false);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    };
    for _ in 0..30 {
        ask(RecordType::A, Transport::Udp);
    }
    ask(RecordType::AAAA, Transport::Udp);
    ask(RecordType::A, Transport::Tcp);
    // The counted record comes once its window ends. Three queries as
    // they came, one record for the other 29 A/UDP queries (the 28 folded
    // into it count as coalesced).
    let (written, coalesced) = handed_over(&server, "the beacon's records", 32.0);
    assert_eq!((written, coalesced), (4.0, 28.0));
    let page = council_a_hits(&server);
    let mut got: Vec<(String, String, u64, bool)> = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["qtype"].as_str().unwrap().to_owned(),
                h["transport"].as_str().unwrap().to_owned(),
                h["repeats"].as_u64().unwrap_or(1),
                h["last_ts"].is_string(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("A", "tcp", 1, false),
        ("A", "udp", 1, false),
        ("A", "udp", 29, true),
        ("AAAA", "udp", 1, false),
    ]
    .map(|(t, tr, n, last)| (t.to_owned(), tr.to_owned(), n, last));
    assert_eq!(got, want, "{page}");
    // The report counts the 32 queries.
    assert_eq!(report_total(&setup, server), Some(32));
}

#[test]
fn a_flood_from_one_client_is_coalesced_into_counted_records() {
    // The default threshold, a short window so that the counted record
    // is written while the test watches.
    let (setup, _auth, server) = two_orgs("coalesce_window_s = 2");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered: usize = stream_blocked(server.addr, 4, 1500, stop)
        .into_iter()
        .map(|w| w.join().unwrap())
        .sum();
    assert_eq!(answered, 6000, "every query answered");
    // The counted record comes once its window ends.
    let (written, coalesced) = handed_over(&server, "the flood's records", 6000.0);
    assert_eq!(written + coalesced, 6000.0);
    // 20 a window as they came and one counted record per window: the
    // flood lasts a few windows at most, not 6,000 records.
    assert!(written < 200.0, "{written} records for one client's flood");
    // The security team sees the counted record through the API.
    let page = council_a_hits(&server);
    let hits = page["hits"].as_array().unwrap();
    let counted: Vec<&serde_json::Value> = hits
        .iter()
        .filter(|h| h["repeats"].as_u64().is_some())
        .collect();
    assert!(!counted.is_empty(), "{page}");
    for h in &counted {
        assert_eq!(h["matched"], "evil.example.test");
        assert!(h["last_ts"].is_string(), "{h}");
    }
    let queries: u64 = hits
        .iter()
        .map(|h| h["repeats"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(queries, 6000, "each query counted once across the records");
    // The report counts queries, not records.
    assert_eq!(report_total(&setup, server), Some(6000));
}

#[test]
fn sigterm_flushes_queued_records_before_exit() {
    let (setup, _auth, server) = two_orgs("coalesce_after = 0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered: usize = stream_blocked(server.addr, 4, 500, stop)
        .into_iter()
        .map(|w| w.join().unwrap())
        .sum();
    assert_eq!(answered, 2000);
    // No wait for the writer: whatever is queued must be written on exit.
    assert_eq!(server.terminate().code(), Some(0));
    let conn = rusqlite::Connection::open(setup.path("state/hits.sqlite")).unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM hits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2000);
}

#[test]
fn with_the_hit_log_off_blocks_are_answered_and_nothing_is_recorded() {
    let (setup, _auth, server) = two_orgs("enabled = false\njsonl = \"hits.jsonl\"");
    for _ in 0..3 {
        let reply = query_from(
            server.addr,
            "127.0.0.2",
            "evil.example.test.",
            RecordType::A,
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ede(&reply).map(|(code, _)| code), Some(15));
    }
    let text = scrape(&server);
    assert_eq!(
        metric(&text, "portcullis_blocks_total", &[("category", "malware")]),
        3.0
    );
    assert_eq!(metric(&text, "portcullis_hitlog_written_total", &[]), 0.0);
    assert_eq!(metric(&text, "portcullis_hitlog_dropped_total", &[]), 0.0);
    assert!(server.log_contains("hit log off"), "{}", server.log());
    assert_eq!(server.terminate().code(), Some(0));
    assert!(!setup.path("state/hits.sqlite").exists());
    assert!(!setup.path("hits.jsonl").exists());
}

#[test]
fn an_unusable_database_is_reported_and_queries_are_still_answered() {
    // The database's folder would have to be inside a file: unusable.
    let (_setup, _auth, server) = two_orgs("database = \"portcullis.toml/hits.sqlite\"");
    for i in 0..20 {
        let r = query(
            server.addr,
            &format!("n{i}.evil.example.test."),
            RecordType::A,
            Transport::Udp,
            true,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    let r = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        server.wait_log("cannot open the hit log database", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&server);
        let lost = metric(
            &m,
            "portcullis_hitlog_dropped_total",
            &[("reason", "store_error")],
        );
        if lost == 20.0 {
            assert!(metric(&m, "portcullis_hitlog_errors_total", &[]) >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "lost = {lost}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn queries_an_allow_entry_let_through_are_logged_when_enabled() {
    let (setup, _auth, server) = crate::forward::forwarder_with(
        &[("list.txt", "evil.example.test\n")],
        &[("allow.txt", "good.evil.example.test\n")],
        "[blocklist]\nallow = [\"allow.txt\"]\n[hitlog]\nlog_allowed = true\n",
    );
    let r = query(
        server.addr,
        "good.evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "allowed: {r}"
    );
    let r = query(
        server.addr,
        "evil.example.test.",
        RecordType::A,
        Transport::Udp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    wait_written(&server, 2.0);
    let config = setup.path("portcullis.toml");
    let (_, out, _) = run(&["logs", "--format", "json", "-c", config.to_str().unwrap()]);
    let records = json_lines(&out);
    assert_eq!(records.len(), 2, "{out}");
    let allowed = records
        .iter()
        .find(|h| h["action"] == "allow")
        .expect("an allow record");
    assert_eq!(allowed["qname"], "good.evil.example.test");
    assert_eq!(allowed["matched"], "good.evil.example.test");
    assert!(
        records
            .iter()
            .any(|h| h["action"] == "nxdomain" && h["qname"] == "evil.example.test")
    );
}
