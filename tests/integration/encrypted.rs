//! Encrypted DNS end to end: DoT, DoH and DoQ through real clients (kdig,
//! dig, curl, aioquic) and a rustls client of our own, with a test CA and
//! certificates made by openssl at test time. Blocking, organisations by
//! address and by roaming key, the hit log's transport, padding,
//! discovery (DDR) and the browsers' canary, certificate reload, out-of-
//! order answers on one connection, connection caps, and IPv6 clients on
//! every transport.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::harness::{
    BIN, Server, Setup, Transport, a_records, build_query, ede, metric, query, query_from, run,
    scrape, wait_for,
};
use crate::upstream::{Authority, SlowRelay, example_zone};

const ROAMING_KEY: &str = "k7q2roamingkey0001";
const TLS_NAME: &str = "dns.test";

fn sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A test CA and a server certificate it signed.
pub struct Pki {
    dir: PathBuf,
    pub ca: PathBuf,
    /// Leaf then CA: a chain, as an ACME client writes it.
    pub chain: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "30",
                "-subj",
                "/CN=Portcullis Test CA",
            ],
        );
        let pki = Pki {
            dir: dir.to_owned(),
            ca: dir.join("ca.crt"),
            chain: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        let (chain, key) = pki.issue("first", 20);
        std::fs::rename(chain, &pki.chain).unwrap();
        std::fs::rename(key, &pki.key).unwrap();
        pki
    }

    /// A new leaf for dns.test (and roaming names under dot.dns.test,
    /// and the loopback addresses), valid for `days`: (chain, key).
    fn issue(&self, name: &str, days: u32) -> (PathBuf, PathBuf) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=DNS:dns.test,DNS:*.dot.dns.test,IP:127.0.0.1,IP:::1\n\
             basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=dns.test",
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                &days.to_string(),
                "-extfile",
                &ext,
            ],
        );
        let chain = self.dir.join(format!("{name}.pem"));
        let mut text = std::fs::read_to_string(self.dir.join(&crt)).unwrap();
        text.push_str(&std::fs::read_to_string(&self.ca).unwrap());
        std::fs::write(&chain, text).unwrap();
        (chain, self.dir.join(key))
    }
}

/// The encrypted listeners on 127.0.0.1 and ::1, ephemeral ports.
fn encrypted_keys(pki: &Pki) -> String {
    format!(
        "tls_listen = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         https_listen = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         quic_listen = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_name = \"{TLS_NAME}\"\n",
        pki.chain.display(),
        pki.key.display()
    )
}

/// A resolver with the encrypted listeners, forwarding to a loopback
/// authority. `home` holds ::1 only; `roamer` holds a network nobody
/// here is in, and a roaming key; 127.0.0.1 is in no organisation and
/// unknown clients are refused.
fn start(setup: &Setup, pki: &Pki, upstream: SocketAddr, server_extra: &str) -> Server {
    configure(setup, pki, upstream, server_extra);
    Server::start(&setup.path("portcullis.toml"))
}

/// Write the config `start` runs with.
fn configure(setup: &Setup, pki: &Pki, upstream: SocketAddr, server_extra: &str) {
    setup.write("feeds/malware.txt", "evil.example.test\n");
    setup.write("feeds/phish.txt", "login.phish.test\n");
    // Phishing is sinkholed to this host, where the block page listens.
    setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{upstream}\"]\ntimeout_ms = 4000\n\
             [blocklist]\nsinkhole_ipv4 = \"127.0.0.1\"\n\
             [actions]\nphishing = \"sinkhole\"\n\
             [block_page]\nlisten = \"127.0.0.1:0\"\n\
             [[feed]]\nfile = \"malware.txt\"\ncategory = \"malware\"\n\
             [[feed]]\nfile = \"phish.txt\"\ncategory = \"phishing\"\n\
             [[organisation]]\nid = \"home\"\nnetworks = [\"::1/128\"]\n\
             [[organisation]]\nid = \"roamer\"\nnetworks = [\"192.0.2.0/24\"]\n\
             roaming_key_sha256 = \"{}\"\n{}",
            sha(ROAMING_KEY),
            crate::harness::EVERY_QUERY_RECORDED
        ),
    );
    setup.edit_config(
        "allow_unknown_clients = true\n",
        &format!(
            "allow_unknown_clients = false\n{}{server_extra}",
            encrypted_keys(pki)
        ),
    );
}

fn on(addrs: &[SocketAddr], v6: bool) -> SocketAddr {
    *addrs.iter().find(|a| a.is_ipv6() == v6).unwrap_or_else(|| {
        panic!(
            "no {} listener in {addrs:?}",
            if v6 { "IPv6" } else { "IPv4" }
        )
    })
}

/// Run a client command; (exit code, stdout + stderr).
fn client(program: &str, args: &[String]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn kdig(server: SocketAddr, pki: &Pki, transport: &[&str], name: &str) -> String {
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        format!("+tls-ca={}", pki.ca.display()),
        "+tls-hostname=dns.test".into(),
        "+edns".into(),
        "+timeout=5".into(),
        "+retry=0".into(),
    ];
    args.extend(transport.iter().map(|s| s.to_string()));
    args.push(name.into());
    let (code, out) = client("kdig", &args);
    assert_eq!(code, 0, "kdig {args:?}:\n{out}");
    out
}

/// Ask over DoQ with aioquic (tests/clients/doq_query.py): one response
/// per query, in the order given.
fn doq(
    server: SocketAddr,
    pki: &Pki,
    server_name: &str,
    names: &[&str],
) -> Result<Vec<Message>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/doq_query.py");
    let mut args = vec![
        script.to_owned(),
        server.ip().to_string(),
        server.port().to_string(),
        pki.ca.display().to_string(),
        server_name.to_owned(),
    ];
    for name in names {
        let mut message = build_query(name, RecordType::A, true);
        // RFC 9250 4.2.1: the ID is 0 on DoQ.
        message.metadata.id = 0;
        args.push(hex(&message.to_vec().unwrap()));
    }
    let (code, out) = client("python3", &args);
    if code != 0 {
        return Err(out);
    }
    Ok(out
        .lines()
        .map(|line| Message::from_vec(&unhex(line)).expect("a DoQ response parses"))
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A DoT connection of our own (rustls), verifying against the test CA,
/// with `server_name` as SNI.
struct Dot {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Dot {
    fn connect(addr: SocketAddr, ca: &Path, server_name: &str) -> Dot {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut config = config;
        config.alpn_protocols = vec![b"dot".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        // Finish the handshake now, so the peer certificate is known.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        Dot { tls }
    }

    fn send(&mut self, message: &Message) {
        let wire = message.to_vec().unwrap();
        let mut frame = (wire.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&wire);
        self.tls.write_all(&frame).unwrap();
        self.tls.flush().unwrap();
    }

    /// The next response's bytes.
    fn receive(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 2];
        self.tls.read_exact(&mut len)?;
        let mut wire = vec![0; usize::from(u16::from_be_bytes(len))];
        self.tls.read_exact(&mut wire)?;
        Ok(wire)
    }

    fn ask(&mut self, name: &str) -> Message {
        let message = build_query(name, RecordType::A, true);
        self.send(&message);
        let reply = Message::from_vec(&self.receive().expect("a DoT response")).unwrap();
        assert_eq!(reply.metadata.id, message.metadata.id);
        reply
    }

    fn peer_leaf(&self) -> Vec<u8> {
        self.tls
            .conn
            .peer_certificates()
            .expect("a peer certificate")[0]
            .to_vec()
    }
}

fn leaf_der(chain: &Path) -> Vec<u8> {
    let pem = std::fs::read(chain).unwrap();
    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn hits(setup: &Setup) -> Vec<serde_json::Value> {
    let config = setup.path("portcullis.toml");
    let (code, out, err) = run(&["logs", "--format", "json", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_encrypted_transport_blocks_attributes_and_logs() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    let pki = Pki::new(setup.dir.path());
    configure(&setup, &pki, auth.addr, "");
    // Clear DNS on both families too (the IPv4 address first: the
    // harness's own queries use it).
    setup.edit_config(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", \"[::1]:0\"]",
    );
    let server = Server::start(&setup.path("portcullis.toml"));
    let (dot, doh, doq_addrs) = (
        server.listening("DoT"),
        server.listening("DoH"),
        server.listening("DoQ"),
    );
    assert_eq!((dot.len(), doh.len(), doq_addrs.len()), (2, 2, 2));

    // Clear UDP and TCP from ::1 (organisation "home"), the baseline the
    // encrypted transports must match.
    let clear6 = on(&server.listening("UDP"), true);
    assert_eq!(on(&server.listening("TCP"), true), clear6);
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(clear6, "evil.example.test", RecordType::A, transport, true);
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ede(&reply).map(|e| e.0), Some(15), "{transport:?}");
        let reply = query(clear6, "www.example.test", RecordType::A, transport, true);
        assert_eq!(a_records(&reply), ["192.0.2.10"], "{transport:?}");
    }

    // From ::1 (organisation "home"), a blocked name over each transport
    // and client: NXDOMAIN with EDE 15.
    let dot6 = on(&dot, true);
    let doh6 = on(&doh, true);
    for (what, out) in [
        (
            "kdig +tls",
            kdig(dot6, &pki, &["+tls"], "evil.example.test"),
        ),
        (
            "kdig +https (POST)",
            kdig(doh6, &pki, &["+https"], "evil.example.test"),
        ),
        (
            "kdig +https-get",
            kdig(doh6, &pki, &["+https", "+https-get"], "evil.example.test"),
        ),
    ] {
        assert!(out.contains("status: NXDOMAIN"), "{what}:\n{out}");
        assert!(out.contains("EDE: 15"), "{what}: no Blocked EDE:\n{out}");
        // RFC 8467 padding on the response.
        assert!(out.contains("PADDING"), "{what}: no padding:\n{out}");
    }
    // An unlisted name resolves over each.
    let out = kdig(dot6, &pki, &["+tls"], "www.example.test");
    assert!(out.contains("192.0.2.10"), "{out}");
    let out = kdig(doh6, &pki, &["+https"], "www.example.test");
    assert!(out.contains("192.0.2.10"), "{out}");
    // BIND's dig, over TLS (IPv6) and HTTPS (HTTP/2; over IPv4, with the
    // roaming path: dig 9.18 sends an IPv6 literal as an HTTP/2 authority
    // without its brackets, which HTTP/2 servers reject).
    let doh4 = on(&doh, false);
    let roaming_endpoint = format!("+https=/dns-query/{ROAMING_KEY}");
    for (server, mode) in [(dot6, "+tls"), (doh4, roaming_endpoint.as_str())] {
        let args: Vec<String> = vec![
            format!("@{}", server.ip()),
            "-p".into(),
            server.port().to_string(),
            mode.into(),
            "+tries=1".into(),
            "+time=5".into(),
            "evil.example.test".into(),
        ];
        let (code, out) = client("dig", &args);
        assert_eq!(code, 0, "dig {args:?}:\n{out}");
        assert!(out.contains("status: NXDOMAIN"), "dig {mode}:\n{out}");
        assert!(out.contains("EDE: 15"), "dig {mode}:\n{out}");
        assert!(out.contains("PAD: ("), "dig {mode}: no padding:\n{out}");
    }
    // DoQ with aioquic over IPv6, blocked and clean in one connection.
    let answers = doq(
        on(&doq_addrs, true),
        &pki,
        TLS_NAME,
        &["evil.example.test.", "www.example.test."],
    )
    .expect("DoQ works");
    assert_eq!(answers[0].metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&answers[0]).map(|e| e.0), Some(15));
    assert_eq!(a_records(&answers[1]), ["192.0.2.10"]);
    // curl as a browser would: DoH for the name, then its HTTP request,
    // which the sinkhole answer sends to the block page.
    let page = server.listener("block page");
    let (code, out) = client(
        "curl",
        &[
            "-sS".into(),
            // A only (one DoH query), as the hit count below expects.
            "-4".into(),
            "--max-time".into(),
            "10".into(),
            "--doh-url".into(),
            format!("https://[::1]:{}/dns-query", doh6.port()),
            "--cacert".into(),
            pki.ca.display().to_string(),
            format!("http://login.phish.test:{}/", page.port()),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("This site has been blocked"), "{out}");
    assert!(out.contains("login.phish.test"), "{out}");

    // From 127.0.0.1, an address in no organisation: refused without a
    // key, served with the roaming key, refused with a wrong one.
    let dot4 = on(&dot, false);
    let out = kdig(dot4, &pki, &["+tls"], "www.example.test");
    assert!(out.contains("status: REFUSED"), "{out}");
    let roaming_sni = format!("+tls-sni={ROAMING_KEY}.dot.{TLS_NAME}");
    let out = kdig(dot4, &pki, &["+tls", &roaming_sni], "evil.example.test");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let out = kdig(
        dot4,
        &pki,
        &["+tls", "+tls-sni=wrongkey.dot.dns.test"],
        "www.example.test",
    );
    assert!(out.contains("status: REFUSED"), "{out}");
    let roaming_path = format!("+https=/dns-query/{ROAMING_KEY}");
    let out = kdig(doh4, &pki, &[&roaming_path], "evil.example.test");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let query = data_encoding::BASE64URL_NOPAD.encode(
        &build_query("www.example.test.", RecordType::A, false)
            .to_vec()
            .unwrap(),
    );
    let status = |path: &str| {
        let (code, out) = client(
            "curl",
            &[
                "-s".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
                "--cacert".into(),
                pki.ca.display().to_string(),
                format!("https://127.0.0.1:{}{path}", doh4.port()),
            ],
        );
        assert_eq!(code, 0, "{out}");
        out
    };
    assert_eq!(status(&format!("/dns-query/wrongkey?dns={query}")), "403");
    assert_eq!(
        status(&format!("/dns-query/{ROAMING_KEY}?dns={query}")),
        "200"
    );
    assert_eq!(status(&format!("/elsewhere?dns={query}")), "404");
    assert_eq!(status("/dns-query?dns=%%%"), "400");
    let roaming = doq(
        on(&doq_addrs, false),
        &pki,
        &format!("{ROAMING_KEY}.dot.{TLS_NAME}"),
        &["evil.example.test."],
    )
    .expect("DoQ with a roaming name works");
    assert_eq!(roaming[0].metadata.response_code, ResponseCode::NXDomain);
    let refused = doq(
        on(&doq_addrs, false),
        &pki,
        "nokey.dot.dns.test",
        &["www.example.test."],
    )
    .expect("DoQ with an unknown key still connects");
    assert_eq!(refused[0].metadata.response_code, ResponseCode::Refused);

    // The hit log: each transport named, each block attributed.
    wait_for("hits written", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= 12.0
    });
    let hits = hits(&setup);
    let count = |transport: &str, org: &str, client: &str| {
        hits.iter()
            .filter(|h| h["transport"] == transport && h["org"] == org && h["client"] == client)
            .count()
    };
    assert_eq!(
        count("dot", "home", "::1"),
        2,
        "kdig and dig over TLS: {hits:#?}"
    );
    assert_eq!(
        count("doh", "home", "::1"),
        3,
        "kdig POST and GET, curl: {hits:#?}"
    );
    assert_eq!(count("doq", "home", "::1"), 1, "{hits:#?}");
    assert_eq!(count("dot", "roamer", "127.0.0.1"), 1, "{hits:#?}");
    assert_eq!(
        count("doh", "roamer", "127.0.0.1"),
        2,
        "dig and kdig: {hits:#?}"
    );
    assert_eq!(count("doq", "roamer", "127.0.0.1"), 1, "{hits:#?}");
    assert_eq!(count("udp", "home", "::1"), 1, "{hits:#?}");
    assert_eq!(count("tcp", "home", "::1"), 1, "{hits:#?}");
    assert_eq!(hits.len(), 12, "{hits:#?}");

    // Metrics by transport, and the certificate's time left.
    let text = scrape(&server);
    for transport in ["dot", "doh", "doq"] {
        let blocked = metric(
            &text,
            "portcullis_queries_total",
            &[("transport", transport), ("outcome", "blocked")],
        );
        assert!(blocked >= 2.0, "{transport}: {blocked}");
    }
    let left = metric(&text, "portcullis_tls_certificate_expiry_seconds", &[]);
    assert!(left > 19.0 * 86_400.0 && left <= 20.0 * 86_400.0, "{left}");
    assert!(metric(&text, "portcullis_doh_errors_total", &[("status", "403")]) >= 1.0);
}

#[test]
fn discovery_names_the_encrypted_endpoints_and_the_canary_keeps_browsers_here() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    let pki = Pki::new(setup.dir.path());
    let server = start(&setup, &pki, auth.addr, "");
    let reply = query_from(
        server.addr,
        "127.0.0.1",
        "_dns.resolver.arpa.",
        RecordType::SVCB,
    );
    // 127.0.0.1 is in no organisation: refused like any other name.
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    // Over DoT from ::1 (an organisation's client), with our own client.
    let mut dot = Dot::connect(on(&server.listening("DoT"), true), &pki.ca, TLS_NAME);
    let message = build_query("_dns.resolver.arpa.", RecordType::SVCB, true);
    dot.send(&message);
    let wire = dot.receive().unwrap();
    assert_eq!(wire.len() % 468, 0, "padded to the 468-octet block");
    let reply = Message::from_vec(&wire).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let records: Vec<String> = reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SVCB(svcb) => format!("{} {} {svcb}", svcb.svc_priority, svcb.target_name),
            other => panic!("not SVCB: {other:?}"),
        })
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    let port = |what: &str| on(&server.listening(what), false).port();
    assert!(
        records[0].contains("dot") && records[0].contains(&format!("port={}", port("DoT"))),
        "{records:?}"
    );
    assert!(
        records[1].contains("h2") && records[1].contains(&format!("port={}", port("DoH"))),
        "{records:?}"
    );
    assert!(
        records[2].contains("doq") && records[2].contains(&format!("port={}", port("DoQ"))),
        "{records:?}"
    );
    assert!(
        records.iter().all(|r| r.contains("dns.test.")),
        "{records:?}"
    );

    // Answered here: forwarded, the loopback authority (which holds only
    // example.test) would have refused it.
    let reply = dot.ask("use-application-dns.net.");
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn a_renewed_certificate_is_used_for_new_connections_and_a_broken_one_is_not() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    let pki = Pki::new(setup.dir.path());
    let server = start(&setup, &pki, auth.addr, "");
    let addr = on(&server.listening("DoT"), true);
    let first = leaf_der(&pki.chain);
    let mut held = Dot::connect(addr, &pki.ca, TLS_NAME);
    assert_eq!(held.peer_leaf(), first);
    assert_eq!(a_records(&held.ask("www.example.test.")), ["192.0.2.10"]);

    // Renewal, as certbot does it: new files moved into place.
    let (chain, key) = pki.issue("renewed", 60);
    let renewed = leaf_der(&chain);
    std::fs::rename(&key, &pki.key).unwrap();
    std::fs::rename(&chain, &pki.chain).unwrap();
    assert!(
        server.wait_log("TLS certificate reloaded", Duration::from_secs(15)),
        "{}",
        server.log()
    );
    // The open connection carries on; a new one gets the new certificate.
    assert_eq!(a_records(&held.ask("www.example.test.")), ["192.0.2.10"]);
    let fresh = Dot::connect(addr, &pki.ca, TLS_NAME);
    assert_eq!(fresh.peer_leaf(), renewed);
    let left = metric(
        &scrape(&server),
        "portcullis_tls_certificate_expiry_seconds",
        &[],
    );
    assert!(left > 59.0 * 86_400.0, "{left}");

    // A garbage certificate: logged, and the renewed one stays.
    std::fs::write(
        &pki.chain,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    )
    .unwrap();
    assert!(
        server.wait_log(
            "keeping the TLS certificate in use",
            Duration::from_secs(15)
        ),
        "{}",
        server.log()
    );
    let mut after = Dot::connect(addr, &pki.ca, TLS_NAME);
    assert_eq!(after.peer_leaf(), renewed);
    assert_eq!(a_records(&after.ask("www.example.test.")), ["192.0.2.10"]);
    assert_eq!(a_records(&held.ask("www.example.test.")), ["192.0.2.10"]);
    assert!(
        metric(
            &scrape(&server),
            "portcullis_tls_certificate_reloads_total",
            &[("result", "error")]
        ) >= 1.0
    );
}

#[test]
fn pipelined_queries_on_one_dot_connection_come_back_out_of_order() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    // Only the query for "slow" waits; the rest are answered at once.
    let relay = SlowRelay::start_matching(auth.addr, Duration::from_millis(1500), b"\x04slow");
    let setup = Setup::new();
    let pki = Pki::new(setup.dir.path());
    let server = start(&setup, &pki, relay.addr, "");
    let mut dot = Dot::connect(on(&server.listening("DoT"), true), &pki.ca, TLS_NAME);
    let mut sent = Vec::new();
    let slow = build_query("slow.example.test.", RecordType::A, true);
    dot.send(&slow);
    sent.push(slow.metadata.id);
    for i in 0..19 {
        let name = if i % 4 == 0 {
            "evil.example.test.".to_owned()
        } else {
            format!("n{i}.example.test.")
        };
        let message = build_query(&name, RecordType::A, true);
        dot.send(&message);
        sent.push(message.metadata.id);
    }
    let started = Instant::now();
    let mut order = Vec::new();
    for _ in 0..20 {
        let reply = Message::from_vec(&dot.receive().expect("all 20 answered")).unwrap();
        order.push((reply.metadata.id, started.elapsed()));
    }
    let ids: Vec<u16> = order.iter().map(|(id, _)| *id).collect();
    let mut sorted_sent = sent.clone();
    sorted_sent.sort_unstable();
    let mut sorted_got = ids.clone();
    sorted_got.sort_unstable();
    assert_eq!(sorted_got, sorted_sent, "every query answered once");
    assert_eq!(*ids.last().unwrap(), sent[0], "the slow one last: {ids:?}");
    // The other 19 did not wait for it.
    assert!(order[18].1 < Duration::from_millis(1000), "{order:?}");
}

#[test]
fn connection_caps_hold_and_leave_room_for_other_clients() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\n");
    let config = setup.config_with_admin(
        "",
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n",
            auth.addr
        ),
    );
    setup.edit_config(
        "allow_unknown_clients = true\n",
        "allow_unknown_clients = true\nmax_connections_per_client = 5\ntcp_timeout_secs = 30\n",
    );
    let server = Server::start(&config);
    // One client holds its five connections idle.
    let held: Vec<TcpStream> = (0..5)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    wait_for("5 open", Duration::from_secs(5), || {
        metric(
            &scrape(&server),
            "portcullis_connections",
            &[("transport", "tcp")],
        ) >= 5.0
    });
    // Its sixth is closed at once.
    let mut sixth = TcpStream::connect(server.addr).unwrap();
    sixth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    let closed = Instant::now();
    assert!(matches!(sixth.read(&mut buf), Ok(0) | Err(_)));
    assert!(closed.elapsed() < Duration::from_secs(3));
    // Another address is served over TCP and UDP at once.
    let other = SocketAddr::new("127.0.0.2".parse().unwrap(), 0);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&other.into()).unwrap();
    socket
        .connect_timeout(&server.addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message = build_query("www.example.test.", RecordType::A, false);
    let wire = message.to_vec().unwrap();
    stream
        .write_all(&(wire.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&wire).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        a_records(&Message::from_vec(&reply).unwrap()),
        ["192.0.2.10"]
    );
    let reply = query_from(server.addr, "127.0.0.2", "www.example.test.", RecordType::A);
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
    let text = scrape(&server);
    assert!(
        metric(
            &text,
            "portcullis_connections_refused_total",
            &[("transport", "tcp"), ("reason", "per_client")]
        ) >= 1.0
    );
    // Closing one frees a place for the first client.
    drop(held);
    wait_for("connections closed", Duration::from_secs(5), || {
        metric(
            &scrape(&server),
            "portcullis_connections",
            &[("transport", "tcp")],
        ) <= 1.0
    });
    let reply = query(
        server.addr,
        "www.example.test.",
        RecordType::A,
        Transport::Tcp,
        false,
    );
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
}

#[test]
fn encrypted_listeners_without_a_usable_certificate_do_not_start() {
    let setup = Setup::new();
    let config = setup.config("");
    // No certificate at all: a config error naming the key.
    setup.edit_config(
        "allow_unknown_clients = true\n",
        "allow_unknown_clients = true\ntls_listen = [\"127.0.0.1:0\"]\n",
    );
    let (code, _, err) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("server.tls_cert") && err.contains("server.tls_listen"),
        "{err}"
    );

    // A key that belongs to another certificate: the file is named.
    let pki = Pki::new(setup.dir.path());
    let (_, other_key) = pki.issue("other", 20);
    setup.edit_config(
        "tls_listen = [\"127.0.0.1:0\"]\n",
        &format!(
            "tls_listen = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            pki.chain.display(),
            other_key.display()
        ),
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("other.key") && err.contains("does not belong"),
        "{err}"
    );
    // `config check` finds the same problem before a deployment does.
    let (code, out, _) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("problem: TLS certificate") && out.contains("does not belong"),
        "{out}"
    );

    // A matching certificate with three days left passes with a warning.
    let (short_cert, short_key) = pki.issue("short", 3);
    setup.edit_config(
        &format!("tls_key = \"{}\"\n", other_key.display()),
        &format!("tls_key = \"{}\"\n", short_key.display()),
    );
    setup.edit_config(
        &format!("tls_cert = \"{}\"\n", pki.chain.display()),
        &format!("tls_cert = \"{}\"\n", short_cert.display()),
    );
    let (code, out, _) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: TLS certificate") && out.contains("short.pem expires in"),
        "{out}"
    );
}

/// A Chromium managed policy, removed when dropped. Chromium on Linux
/// reads policies only from /etc, so the test needs to write there (CI
/// runs as root); without that it says so and skips.
struct ChromiumPolicy(PathBuf);

impl ChromiumPolicy {
    fn install(json: &str) -> Option<ChromiumPolicy> {
        let dir = Path::new("/etc/chromium/policies/managed");
        std::fs::create_dir_all(dir).ok()?;
        let path = dir.join("portcullis-integration-test-doh.json");
        std::fs::write(&path, json).ok()?;
        Some(ChromiumPolicy(path))
    }
}

impl Drop for ChromiumPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_browser_using_doh_lands_on_the_block_page() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    let pki = Pki::new(setup.dir.path());
    let server = start(&setup, &pki, auth.addr, "");
    let doh = on(&server.listening("DoH"), false);
    let page = server.listener("block page");
    // DoH only ("secure": no fallback to the system resolver), through
    // the roaming path, since 127.0.0.1 is in no organisation.
    let policy = format!(
        "{{\"DnsOverHttpsMode\": \"secure\", \"DnsOverHttpsTemplates\": \
         \"https://127.0.0.1:{}/dns-query/{ROAMING_KEY}{{?dns}}\"}}",
        doh.port()
    );
    let Some(_policy) = ChromiumPolicy::install(&policy) else {
        eprintln!("skipped: cannot write a Chromium policy under /etc (not root)");
        return;
    };
    // The test CA is not in Chromium's store; the certificate is checked
    // by the other tests.
    let dom = crate::browser::rendered_with(
        &format!("http://login.phish.test:{}/", page.port()),
        &["--ignore-certificate-errors".to_owned()],
    );
    assert!(dom.contains("This site has been blocked"), "{dom}");
    assert!(dom.contains("login.phish.test"), "{dom}");
    wait_for("the hit written", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= 1.0
    });
    let hits = hits(&setup);
    assert!(
        hits.iter().any(|h| h["qname"] == "login.phish.test"
            && h["transport"] == "doh"
            && h["org"] == "roamer"
            && h["action"] == "sinkhole"),
        "{hits:#?}"
    );
}
