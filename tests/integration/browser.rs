//! The review web page in a real browser: headless Chromium loads it from
//! the admin listener, signs in with an organisation's token (passed in
//! the URL fragment, as a link from the operator would), runs the page's
//! script against the API, and dumps the resulting DOM.
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
