//! `[[download]]` against a real HTTP(S) server: `tests/download/serve.py`
//! (Python's http.server with ETag, 304s, gzip and a cut-short body) on
//! loopback, plain and with a certificate from a test CA. The resolver
//! fetches, writes into feeds_dir and blocks; an unchanged list costs a
//! 304; a changed one is applied; a 404, a cut body, a tenfold shrink, a
//! checksum mismatch and an untrusted certificate keep the old file, each
//! shown by `portcullis feeds`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::encrypted::Pki;
use crate::harness::{BIN, Server, Setup, Transport, query, wait_for};
use crate::hitlog::{TOKEN_OPERATOR, sha};

struct Publisher {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: PathBuf,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Publisher {
    /// Serve `dir/pub` (created), over TLS with `tls` = (cert, key).
    fn start(dir: &Path, name: &str, tls: Option<(&Path, &Path)>) -> Publisher {
        let root = dir.join(format!("{name}-pub"));
        std::fs::create_dir_all(&root).unwrap();
        let port_file = dir.join(format!("{name}.port"));
        let log = dir.join(format!("{name}.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/download/serve.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&root).arg(&port_file).arg(&log);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 tests/download/serve.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().expect("a port");
            }
            assert!(Instant::now() < deadline, "the publisher did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Publisher {
            child,
            port,
            log,
            dir: root,
        }
    }

    fn publish(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.join(name)).unwrap();
    }

    /// Requests for `path` with `status` so far.
    fn count(&self, path: &str, status: u16) -> usize {
        let needle = format!("GET {path} {status}");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == needle)
            .count()
    }
}

/// A list of `n` names under `tag`, plus `extra` names.
fn list(tag: &str, n: usize, extra: &[&str]) -> String {
    let mut text = format!("# {tag} list\n");
    for i in 0..n {
        text.push_str(&format!("{tag}-{i}.dl.test\n"));
    }
    for name in extra {
        text.push_str(name);
        text.push('\n');
    }
    text
}

/// Whether `name` gets NXDOMAIN: a block (the test upstreams answer
/// every name). Also for the RPZ transfer test.
pub(crate) fn blocked(server: &Server, name: &str) -> bool {
    query(server.addr, name, RecordType::A, Transport::Udp, true)
        .metadata
        .response_code
        == ResponseCode::NXDomain
}

/// `portcullis feeds --json` from the running resolver.
pub(crate) fn feeds(config: &Path, server: &Server) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["feeds", "--json", "--config"])
        .arg(config)
        .arg("--admin")
        .arg(server.admin().to_string())
        .env("PORTCULLIS_TOKEN", TOKEN_OPERATOR)
        .output()
        .expect("run portcullis feeds");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("feeds --json is JSON")
}

pub(crate) fn feed<'a>(view: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    view["feeds"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["file"] == file))
        .unwrap_or_else(|| panic!("no feed {file} in {view:#}"))
}

/// Wait until the download of `file` has failed with a message holding
/// `needle`; return the message.
fn wait_failure(config: &Path, server: &Server, file: &str, needle: &str) -> String {
    let mut last = String::new();
    wait_for(
        &format!("{file} fails with {needle:?}"),
        Duration::from_secs(20),
        || {
            last = feed(&feeds(config, server), file)["last_error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            last.contains(needle)
        },
    );
    last
}

fn download(url: &str, file: &str, extra: &str) -> String {
    format!(
        "[[download]]\nurl = \"{url}\"\nfile = \"{file}\"\ninterval_secs = 1\ncategory = \"malware\"\n{extra}\n"
    )
}

#[test]
fn a_download_follows_its_publisher_and_keeps_the_last_good_file() {
    let setup = Setup::new();
    let publisher = Publisher::start(setup.dir.path(), "http", None);
    publisher.publish("list.txt", &list("one", 400, &["first.dl.test"]));
    let base = format!("http://127.0.0.1:{}", publisher.port);
    let (_upstream, resolver) = crate::upstream::wildcard_upstream("dl.test.");
    let admin = format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR));
    let config = setup.config_with_admin(
        &admin,
        &format!(
            "{resolver}{}",
            download(&format!("{base}/list.txt"), "dl.txt", "")
        ),
    );
    let server = Server::start(&config);
    assert!(
        !blocked(&server, "first.dl.test"),
        "answered before the list arrives"
    );

    wait_for("the first download blocks", Duration::from_secs(20), || {
        blocked(&server, "first.dl.test")
    });
    assert!(!blocked(&server, "second.dl.test"));
    // An unchanged list is asked for conditionally and answered 304.
    wait_for("a 304", Duration::from_secs(10), || {
        publisher.count("/list.txt", 304) >= 2
    });
    assert_eq!(publisher.count("/list.txt", 200), 1, "fetched whole once");
    let view = feeds(&config, &server);
    let dl = feed(&view, "dl.txt");
    assert_eq!(dl["source"], "download");
    assert_eq!(dl["format"], "plain");
    assert_eq!(dl["entries"], 401);
    assert_eq!(dl["url"], format!("{base}/list.txt"));
    assert!(
        dl["version"].as_str().unwrap().starts_with('"'),
        "the ETag: {dl}"
    );
    assert!(
        dl["last_success"].is_string() && dl["last_error"].is_null(),
        "{dl}"
    );

    // A change at the source is blocking within seconds, with the file's
    // provenance on the decision.
    publisher.publish(
        "list.txt",
        &list("one", 400, &["first.dl.test", "second.dl.test"]),
    );
    wait_for("the changed list blocks", Duration::from_secs(10), || {
        blocked(&server, "second.dl.test")
    });
    let held = std::fs::read(setup.path("feeds/dl.txt")).unwrap();

    // Each failure keeps the file as it was and is shown with its reason.
    let cases = [
        (format!("{base}/missing.txt"), String::new(), "404"),
        (
            format!("{base}/truncated/list.txt"),
            String::new(),
            "request to",
        ),
        (
            format!("{base}/small.txt"),
            String::new(),
            "more than 10x smaller",
        ),
        (
            format!("{base}/list.txt"),
            format!("sha256_url = \"{base}/list.txt.sha256\"\n"),
            "SHA-256 mismatch",
        ),
    ];
    publisher.publish("small.txt", "tiny.dl.test\n");
    publisher.publish(
        "list.txt.sha256",
        &format!("{}  list.txt\n", "0".repeat(64)),
    );
    let good = download(&format!("{base}/list.txt"), "dl.txt", "");
    for (url, extra, needle) in &cases {
        let bad = download(url, "dl.txt", extra);
        setup.edit_config(&good, &bad);
        let message = wait_failure(&config, &server, "dl.txt", needle);
        assert_eq!(
            std::fs::read(setup.path("feeds/dl.txt")).unwrap(),
            held,
            "{message}: the file is kept"
        );
        assert!(blocked(&server, "second.dl.test"), "{message}");
        setup.edit_config(&bad, &good);
    }
    let view = feeds(&config, &server);
    assert!(feed(&view, "dl.txt")["failures"].as_u64().unwrap() >= 1);
    // The text form says what failed.
    let out = Command::new(BIN)
        .args(["feeds", "--config"])
        .arg(&config)
        .arg("--admin")
        .arg(server.admin().to_string())
        .env("PORTCULLIS_TOKEN", TOKEN_OPERATOR)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dl.txt (download, plain): 402 entries") && text.contains("FAILED"),
        "{text}"
    );

    // A gzip Content-Encoding is undone.
    publisher.publish(
        "list.txt",
        &list(
            "one",
            400,
            &["first.dl.test", "second.dl.test", "third.dl.test"],
        ),
    );
    setup.edit_config(
        &good,
        &download(&format!("{base}/gzip/list.txt"), "dl.txt", ""),
    );
    wait_for("the gzip download blocks", Duration::from_secs(20), || {
        blocked(&server, "third.dl.test")
    });
    assert_eq!(publisher.count("/gzip/list.txt", 200), 1);
    let text = std::fs::read_to_string(setup.path("feeds/dl.txt")).unwrap();
    assert!(text.starts_with("# one list\n"), "written inflated");
}

#[test]
fn https_downloads_trust_the_configured_ca_only() {
    let setup = Setup::new();
    let pki_dir = setup.path("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    let pki = Pki::new(&pki_dir);
    let publisher = Publisher::start(setup.dir.path(), "https", Some((&pki.chain, &pki.key)));
    publisher.publish("list.txt", &list("tls", 10, &["over-tls.dl.test"]));
    let url = format!("https://127.0.0.1:{}/list.txt", publisher.port);
    let admin = format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR));
    let (_upstream, resolver) = crate::upstream::wildcard_upstream("dl.test.");
    let extra = format!(
        "{resolver}{}{}",
        download(
            &url,
            "trusted.txt",
            &format!("ca_file = \"{}\"\n", pki.ca.display())
        ),
        download(&url, "untrusted.txt", "")
    );
    let config = setup.config_with_admin(&admin, &extra);
    let server = Server::start(&config);
    wait_for("the HTTPS download blocks", Duration::from_secs(20), || {
        blocked(&server, "over-tls.dl.test")
    });
    let message = wait_failure(&config, &server, "untrusted.txt", "certificate");
    assert!(
        message.contains("UnknownIssuer") || message.contains("unknown issuer"),
        "{message}"
    );
    assert!(!setup.path("feeds/untrusted.txt").exists());
}

#[test]
fn download_pull_fetches_now_and_keeps_the_file_on_failure() {
    let setup = Setup::new();
    let publisher = Publisher::start(setup.dir.path(), "http", None);
    publisher.publish("list.txt", &list("now", 50, &[]));
    let base = format!("http://127.0.0.1:{}", publisher.port);
    let config = setup.config(&format!(
        "{}{}",
        download(
            &format!("http://member:s3cret@127.0.0.1:{}/list.txt", publisher.port),
            "dl.txt",
            ""
        ),
        download(&format!("{base}/missing.txt"), "gone.txt", "")
    ));
    let config = config.to_str().unwrap();
    let pull = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["download", "pull"])
            .args(args)
            .args(["--config", config])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = pull(&["--file", "dl.txt"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "dl.txt: new list written (200, 751 bytes written)"
    );
    assert!(
        std::fs::read_to_string(setup.path("feeds/dl.txt"))
            .unwrap()
            .contains("now-49.dl.test")
    );
    // Again: asked conditionally, unchanged.
    let (code, out, _) = pull(&["--file", "dl.txt"]);
    assert_eq!(
        (code, out.trim()),
        (0, "dl.txt: unchanged (304 not modified)")
    );
    assert_eq!(publisher.count("/list.txt", 304), 1);
    // All of them: the missing one fails, says why without the key, and
    // leaves nothing behind.
    let (code, out, err) = pull(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("dl.txt: unchanged"), "{out}");
    assert!(err.contains("gone.txt") && err.contains("404"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!setup.path("feeds/gone.txt").exists());
    let (code, _, err) = pull(&["--file", "nope.txt"]);
    assert_eq!(code, 64, "{err}");
}
