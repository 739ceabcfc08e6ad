//! The web pages in a real browser, headless Chromium dumping the DOM:
//!
//! * the review page, loaded from the admin listener, signed in with an
//!   organisation's token (passed in the URL fragment, as a link from the
//!   operator would), its script run against the API;
//! * the block page, reached the way a user's browser reaches it: the
//!   resolver answers a listed name with the sinkhole address, and the
//!   browser asks that address for the site.
//!
//! Chromium comes from Debian's `chromium` package (`.ci/run` and
//! `scripts/test-deps.sh` install it); set `PORTCULLIS_CHROMIUM` to use
//! another binary.

use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Transport, query, query_from};
use crate::hitlog::{TOKEN_A, TOKEN_B, two_orgs};

fn chromium() -> String {
    if let Ok(path) = std::env::var("PORTCULLIS_CHROMIUM") {
        return path;
    }
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate.to_owned();
        }
    }
    panic!(
        "no Chromium found: install Debian's chromium package (scripts/test-deps.sh does) \
         or set PORTCULLIS_CHROMIUM"
    );
}

/// The page's DOM after its scripts ran, as Chromium serialises it.
fn rendered(url: &str) -> String {
    rendered_with(url, &[])
}

pub fn rendered_with(url: &str, extra_args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox", // CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            // Virtual time runs on while fetches are pending, so the dump
            // comes after the API calls have answered.
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra_args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_review_page_lists_the_organisations_hits_and_nothing_of_the_other() {
    let (_setup, _auth, server) = two_orgs("");
    // council-a (127.0.0.1, 127.0.0.2) and school-b (127.0.0.3) block
    // different names, so each name says whose it is.
    for (source, name) in [
        ("127.0.0.1", "www.evil.example.test."),
        ("127.0.0.2", "www.evil.example.test."),
        ("127.0.0.3", "c2.example.test."),
    ] {
        let r = query_from(server.addr, source, name, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    let r = query(
        server.addr,
        "phish.example.test.",
        RecordType::A,
        Transport::Tcp,
        true,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    std::thread::sleep(Duration::from_millis(300));

    let admin = server.admin();
    let dom = rendered(&format!("http://{admin}/#token={TOKEN_A}"));
    assert!(
        dom.contains("Organisation: Council A"),
        "signed in as council-a:\n{dom}"
    );
    assert!(dom.contains("www.evil.example.test"), "{dom}");
    assert!(dom.contains("phish.example.test"), "{dom}");
    assert!(dom.contains("127.0.0.2"), "{dom}");
    assert!(dom.contains("3 blocked queries"), "the report: {dom}");
    assert!(dom.contains("<svg"), "the chart: {dom}");
    assert!(
        !dom.contains("c2.example.test"),
        "school-b's name leaked:\n{dom}"
    );
    assert!(
        !dom.contains("127.0.0.3"),
        "school-b's client leaked:\n{dom}"
    );
    assert!(!dom.contains("School B"), "school-b listed:\n{dom}");

    let dom = rendered(&format!("http://{admin}/#token={TOKEN_B}"));
    assert!(dom.contains("c2.example.test"), "{dom}");
    assert!(!dom.contains("www.evil.example.test"), "{dom}");

    // A wrong token shows the sign-in form and the API's refusal.
    let dom = rendered(&format!("http://{admin}/#token=not-a-token"));
    assert!(dom.contains("the token is not valid"), "{dom}");
    assert!(!dom.contains("www.evil.example.test"));
}

#[test]
fn a_sinkholed_browser_sees_the_block_page_with_a_reference_in_the_hit_log() {
    use crate::harness::{Server, Setup, http_get, run};
    use crate::upstream::{Authority, example_zone};
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\n");
    // The sinkhole address is this host, where the block page listens.
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
         [blocklist]\nsinkhole_ipv4 = \"127.0.0.1\"\nsinkhole_ipv6 = \"::1\"\n\
         [actions]\nmalware = \"sinkhole\"\n\
         [[feed]]\nfile = \"malware.txt\"\ncategory = \"malware\"\n\
         [[organisation]]\nid = \"council-a\"\nname = \"Council A\"\nnetworks = [\"127.0.0.0/8\"]\n\
         [block_page]\nlisten = \"127.0.0.1:0\"\n\
         contact = \"Call the Council A service desk on 0100 000 000\"\n",
        auth.addr
    ));
    let server = Server::start(&config);
    let page = server.listener("block page");

    // The browser's lookup goes through the resolver and gets the sinkhole.
    let r = query_from(
        server.addr,
        "127.0.0.1",
        "www.evil.example.test.",
        RecordType::A,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let sinkhole = crate::harness::a_records(&r);
    assert_eq!(sinkhole, ["127.0.0.1"]);
    // Chromium goes where that answer says (its own resolver cannot be
    // pointed at a port, so the answer is handed over as a mapping rule).
    let rule = format!(
        "--host-resolver-rules=MAP www.evil.example.test {}:{}",
        sinkhole[0],
        page.port()
    );
    let dom = rendered_with("http://www.evil.example.test/login.php?x=1", &[rule]);
    assert!(dom.contains("This site has been blocked"), "{dom}");
    assert!(dom.contains("www.evil.example.test"), "{dom}");
    assert!(dom.contains("Council A"), "{dom}");
    assert!(dom.contains("0100 000 000"), "the contact line: {dom}");
    let field = |id: &str| {
        let start = dom
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no {id} on the page: {dom}"));
        let rest = &dom[start..];
        let rest = &rest[rest.find('>').unwrap() + 1..];
        rest[..rest.find('<').unwrap()].to_owned()
    };
    assert_eq!(field("category"), "malware");
    let reference = field("reference");
    // The security team finds that reference in the hit log.
    let (code, out, err) = run(&["logs", "--format", "json", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|h| h["id"].as_i64().map(|id| id.to_string()).as_deref() == Some(reference.as_str()))
        .unwrap_or_else(|| panic!("reference {reference} not in the hit log:\n{out}"));
    assert_eq!(record["qname"], "www.evil.example.test");
    assert_eq!(record["action"], "sinkhole");
    assert_eq!(record["org"], "council-a");

    // No tracking, nothing external, not cached; a visit with no record
    // still explains the block, without a reference.
    let (status, headers, body) = http_get(page, "/", None);
    assert_eq!(status, 403);
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("default-src 'none'"));
    assert_eq!(header("cache-control"), "no-store");
    assert!(header("set-cookie").is_empty());
    assert!(body.contains("none found"), "{body}");
    assert!(
        !body.contains("<script") && !body.contains("src="),
        "{body}"
    );
}
