//! Start the real binary and talk DNS to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A temp folder holding a config, a feeds folder and a state folder.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("feeds")).expect("feeds dir");
        Setup { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    /// Write `portcullis.toml` with the DNS and admin listeners on
    /// ephemeral ports, plus the extra TOML given.
    pub fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_unknown_clients = true\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n{extra}\n"
        );
        let text = merge_resolver_section(&merge_blocklist_section(&text));
        self.write("portcullis.toml", &text)
    }

    /// Like [`Setup::config`], with keys for the `[admin]` section.
    pub fn config_with_admin(&self, admin: &str, extra: &str) -> PathBuf {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_unknown_clients = true\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n[log]\nlevel = \"info\"\n{extra}\n"
        );
        let text = merge_resolver_section(&merge_blocklist_section(&text));
        self.write("portcullis.toml", &text)
    }
}

impl Setup {
    /// Change one thing in the written `portcullis.toml` (a harness
    /// default the test wants otherwise); panics if `from` is not there.
    pub fn edit_config(&self, from: &str, to: &str) {
        let path = self.path("portcullis.toml");
        let text = std::fs::read_to_string(&path).expect("read config");
        assert!(text.contains(from), "{from:?} not in the config:\n{text}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write config");
    }
}

/// Tests give `[blocklist]` keys via `extra`; default feeds_dir/state_dir
/// to the temp folder unless given.
fn merge_blocklist_section(text: &str) -> String {
    let defaults = "feeds_dir = \"feeds\"\nstate_dir = \"state\"\n";
    if let Some(i) = text.find("[blocklist]\n") {
        let at = i + "[blocklist]\n".len();
        let section_end = text[at..].find("\n[").map_or(text.len(), |e| at + e);
        let mut out = text[..at].to_owned();
        if !text[at..section_end].contains("feeds_dir") {
            out.push_str("feeds_dir = \"feeds\"\n");
        }
        if !text[at..section_end].contains("state_dir") {
            out.push_str("state_dir = \"state\"\n");
        }
        out.push_str(&text[at..]);
        out
    } else {
        format!("{text}\n[blocklist]\n{defaults}")
    }
}

/// The test authorities serve unsigned zones under a root no anchor
/// covers, which a validating resolver rightly calls bogus: validation is
/// off unless a test sets `dnssec` itself (the DNSSEC tests do, against
/// the signed lab).
fn merge_resolver_section(text: &str) -> String {
    match text.find("[resolver]\n") {
        Some(_) if text.contains("dnssec =") => text.to_owned(),
        Some(i) => {
            let at = i + "[resolver]\n".len();
            format!("{}dnssec = \"off\"\n{}", &text[..at], &text[at..])
        }
        None => format!("{text}\n[resolver]\ndnssec = \"off\"\n"),
    }
}

/// A running `portcullis serve`; killed on drop, its log printed if the
/// test failed.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener, when the config has one.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(config: &Path) -> Server {
        Self::try_start(config).unwrap_or_else(|log| panic!("portcullis did not start:\n{log}"))
    }

    /// Start with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Server {
        Self::try_start_env(config, env)
            .unwrap_or_else(|log| panic!("portcullis did not start:\n{log}"))
    }

    /// Start and wait for the listening lines; Err(log) if it exits first.
    pub fn try_start(config: &Path) -> Result<Server, String> {
        Self::try_start_env(config, &[])
    }

    fn try_start_env(config: &Path, env: &[(&str, &str)]) -> Result<Server, String> {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening for UDP on ").nth(1) {
                    // Text or JSON logs: the address ends at a quote or space.
                    let addr = rest.split(['"', ' ']).next().unwrap_or("");
                    let _ = tx.send(addr.trim().to_owned());
                } else if line.contains("reporting only (server.listen = [])") {
                    // No DNS address: `addr` is unspecified.
                    let _ = tx.send("0.0.0.0:0".to_owned());
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    let addr = addr.parse().expect("listening address parses");
                    let mut server = Server {
                        child,
                        addr,
                        admin: None,
                        log,
                    };
                    server.wait_serving();
                    // The admin listener binds before the "serving" line.
                    server.admin = server
                        .log
                        .lock()
                        .unwrap()
                        .iter()
                        .find_map(|l| l.split("admin listening on ").nth(1))
                        .and_then(|a| a.split(['"', ' ']).next())
                        .map(|a| a.trim().parse().expect("admin address parses"));
                    return Ok(server);
                }
                Err(_) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100));
                        return Err(log.lock().unwrap().join("\n"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err(format!("timed out\n{}", log.lock().unwrap().join("\n")));
                    }
                }
            }
        }
    }

    fn wait_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // The start-up line itself ("serving startup_ms=..." as text,
            // "message":"serving" as JSON), not any line with the word.
            if self.log_contains(" serving startup_ms=")
                || self.log_contains("\"message\":\"serving\"")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no 'serving' line:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin listener's address (panics when the config has none).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("the admin listener is on")
    }

    /// The address a listener logged as `<what> listening on ADDR`
    /// (e.g. "block page").
    pub fn listener(&self, what: &str) -> SocketAddr {
        let needle = format!("{what} listening on ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split(needle.as_str()).nth(1))
            .and_then(|a| a.split(['"', ' ']).next())
            .map(|a| a.trim().parse().expect("listener address parses"))
            .unwrap_or_else(|| panic!("no {what} listener in the log"))
    }

    /// The addresses logged as `listening for <what> on ADDR` ("DoT",
    /// "DoH", "DoQ", "TCP").
    pub fn listening(&self, what: &str) -> Vec<SocketAddr> {
        let needle = format!("listening for {what} on ");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split(needle.as_str()).nth(1))
            .filter_map(|a| a.split(['"', ' ']).next())
            .map(|a| a.trim().parse().expect("listener address parses"))
            .collect()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Send a signal (`"TERM"`, `"HUP"`) without waiting.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Wait (up to 10 s) for the process to exit.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- portcullis log ----\n{}\n------------------------",
                self.log()
            );
        }
    }
}

/// Run the binary to completion (compile, check, bad configs).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run portcullis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How a test query is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub fn build_query(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("test name parses"),
        rtype,
    ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// Send one query and return the parsed response.
pub fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    transport: Transport,
    edns: bool,
) -> Message {
    let msg = build_query(name, rtype, edns);
    let bytes = msg.to_vec().expect("encode query");
    let reply = exchange(server, &bytes, transport)
        .unwrap_or_else(|e| panic!("no answer for {name} over {transport:?}: {e}"));
    let reply = Message::from_vec(&reply).expect("response parses");
    assert_eq!(reply.metadata.id, msg.metadata.id, "response id matches");
    reply
}

/// Send one UDP query from a chosen loopback source address.
pub fn query_from(server: SocketAddr, source: &str, name: &str, rtype: RecordType) -> Message {
    let msg = build_query(name, rtype, true);
    let sock = UdpSocket::bind((source, 0)).expect("bind the source address");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&msg.to_vec().expect("encode"), server)
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer for {name} from {source}: {e}"));
    let reply = Message::from_vec(&buf[..n]).expect("response parses");
    assert_eq!(reply.metadata.id, msg.metadata.id);
    reply
}

/// A plain HTTP/1.0 GET (the server then closes and sends no chunking).
/// Returns status, headers (lower-case names) and body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// GET /metrics from the admin listener (200, Prometheus text).
pub fn scrape(server: &Server) -> String {
    let (status, headers, body) = http_get(server.admin(), "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain"))
    );
    body
}

/// Poll `ok` every 50 ms until it holds; panic after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One sample's value from Prometheus text, by metric name and labels
/// (`name{a="x"}` as written; labels in any order). Sums matching series.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric_name != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Send raw bytes, return raw reply bytes.
pub fn exchange(
    server: SocketAddr,
    bytes: &[u8],
    transport: Transport,
) -> std::io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => {
            let source = if server.is_ipv6() {
                "[::1]:0"
            } else {
                "127.0.0.1:0"
            };
            let sock = UdpSocket::bind(source)?;
            sock.set_read_timeout(Some(Duration::from_secs(5)))?;
            sock.send_to(bytes, server)?;
            let mut buf = vec![0u8; 65535];
            let (n, _) = sock.recv_from(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let len = u16::try_from(bytes.len())
                .expect("query fits")
                .to_be_bytes();
            stream.write_all(&len)?;
            stream.write_all(bytes)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf)?;
            Ok(buf)
        }
    }
}

/// The A addresses in an answer, as text.
pub fn a_records(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The RFC 8914 EDE info-code and text, if present.
pub fn ede(msg: &Message) -> Option<(u16, String)> {
    let edns = msg.edns.as_ref()?;
    edns.options().as_ref().iter().find_map(|(code, option)| {
        if u16::from(*code) != 15 {
            return None;
        }
        let hickory_proto::rr::rdata::opt::EdnsOption::Unknown(_, bytes) = option else {
            return None;
        };
        let info = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
        Some((info, String::from_utf8_lossy(&bytes[2..]).into_owned()))
    })
}

/// Assert a blocked NXDOMAIN with the policy SOA and EDE 15.
pub fn assert_blocked_nxdomain(msg: &Message, listed: &str, ttl: u32) {
    assert_eq!(
        msg.metadata.response_code,
        ResponseCode::NXDomain,
        "rcode: {msg}"
    );
    assert!(msg.answers.is_empty(), "no answers: {msg}");
    let soa = msg
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .unwrap_or_else(|| panic!("SOA in authority: {msg}"));
    assert_eq!(
        soa.name.to_ascii(),
        format!("{listed}."),
        "SOA owner is the listed name"
    );
    assert_eq!(soa.ttl, ttl);
    let (code, text) = ede(msg).unwrap_or_else(|| panic!("EDE present: {msg}"));
    assert_eq!(code, 15, "EDE info-code Blocked");
    assert!(!text.contains('/'), "EDE text names no path: {text}");
}

/// An address on loopback `ip` whose UDP and TCP ports are both free now, for a
/// server that a test starts there later (after a restart, say). Taken
/// below the kernel's ephemeral range, where no other test's outgoing
/// connection can take it in between; spread by the process id so that
/// test processes running side by side rarely try the same one.
pub fn port_to_reuse(ip: std::net::Ipv4Addr) -> SocketAddr {
    // Each call in this process starts past the last one's.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = 20_000 + ((std::process::id() % 500) * 20 + call) % 12_000;
    for port in (start..32_000).chain(20_000..start) {
        let addr: SocketAddr = (ip, port as u16).into();
        let free =
            std::net::UdpSocket::bind(addr).is_ok() && std::net::TcpListener::bind(addr).is_ok();
        if free {
            return addr;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A `[hitlog]` table for tests that count a record per query: they ask
/// the same name again (over UDP and TCP, with and without EDNS), which
/// the coalescer would fold into a counted record until its window ends.
pub const EVERY_QUERY_RECORDED: &str = "[hitlog]\ncoalesce_after = 0\n";

/// Every hit record in the store of the resolver configured by `config`,
/// one JSON object a line (`portcullis logs --format json --limit 0`).
pub fn hit_records(config: &Path) -> String {
    let config = config.to_str().expect("a UTF-8 config path");
    let (_, out, _) = run(&["logs", "--format", "json", "--limit", "0", "-c", config]);
    out
}
