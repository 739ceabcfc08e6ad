//! Config reload without a restart, under a stream of queries: SIGHUP
//! adds an organisation and its token, changes an action and removes a
//! network; a broken edit changes nothing and says what `config check`
//! says; a change to the file alone is picked up too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, http_get, metric, query_from, run, scrape, wait_for};
use crate::hitlog::{TOKEN_A, TOKEN_OPERATOR, sha};
use crate::upstream::{Authority, example_zone};

const TOKEN_C: &str = "token-for-college-c";

fn organisations(extra: &str) -> String {
    format!(
        "[[organisation]]\nid = \"council-a\"\nname = \"Council A\"\n\
         networks = [\"127.0.0.1/32\", \"127.0.0.2/32\"]\ntoken_sha256 = \"{}\"\n\
         [[organisation]]\nid = \"school-b\"\nname = \"School B\"\n\
         networks = [\"127.0.0.3/32\"]\n{extra}",
        sha(TOKEN_A)
    )
}

fn rcode(server: &Server, source: &str, name: &str) -> ResponseCode {
    query_from(server.addr, source, name, RecordType::A)
        .metadata
        .response_code
}

/// How many times the log says `needle`.
fn count(server: &Server, needle: &str) -> usize {
    server.log().matches(needle).count()
}

#[test]
fn organisations_tokens_actions_and_networks_change_with_sighup_and_a_broken_edit_changes_nothing()
{
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\n");
    let head = format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
         [[feed]]\nfile = \"malware.txt\"\ncategory = \"malware\"\n",
        auth.addr
    );
    let config = setup.config_with_admin(
        &format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR)),
        &format!("{head}{}", organisations("")),
    );
    setup.edit_config(
        "allow_unknown_clients = true",
        "allow_unknown_clients = false",
    );
    let original = std::fs::read_to_string(&config).unwrap();
    let server = Server::start(&config);
    assert_eq!(
        rcode(&server, "127.0.0.4", "www.example.test."),
        ResponseCode::Refused
    );
    assert_eq!(
        rcode(&server, "127.0.0.2", "evil.example.test."),
        ResponseCode::NXDomain
    );
    let (status, _, _) = http_get(server.admin(), "/api/v1/orgs/college-c/hits", Some(TOKEN_C));
    assert_eq!(status, 401);

    // A stream of queries from council-a's 127.0.0.1 through every reload:
    // each one answered, blocked or not.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr;
    let stream = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                let (name, want) = if n.is_multiple_of(2) {
                    ("evil.example.test.", ResponseCode::NXDomain)
                } else {
                    ("www.example.test.", ResponseCode::NoError)
                };
                let r = query_from(addr, "127.0.0.1", name, RecordType::A);
                assert_eq!(r.metadata.response_code, want, "query {n} for {name}");
                n += 1;
            }
            n
        })
    };

    // Add college-c and its token, make school-b's malware NODATA, take
    // 127.0.0.2 from council-a; SIGHUP.
    let edited = original
        .replace(
            "networks = [\"127.0.0.1/32\", \"127.0.0.2/32\"]",
            "networks = [\"127.0.0.1/32\"]",
        )
        .replace(
            "networks = [\"127.0.0.3/32\"]\n",
            &format!(
                "networks = [\"127.0.0.3/32\"]\nactions = {{ malware = \"nodata\" }}\n\
                 [[organisation]]\nid = \"college-c\"\nname = \"College C\"\n\
                 networks = [\"127.0.0.4/32\"]\ntoken_sha256 = \"{}\"\n",
                sha(TOKEN_C)
            ),
        );
    assert_ne!(edited, original);
    std::fs::write(&config, &edited).unwrap();
    // The write alone reloads it; SIGHUP is the operator's way too.
    server.signal("HUP");
    wait_for("the config reloaded", Duration::from_secs(10), || {
        server.log_contains("config reloaded")
    });
    let (status, _, body) = http_get(server.admin(), "/api/v1/orgs/college-c/hits", Some(TOKEN_C));
    assert_eq!(status, 200, "the new token works at once: {body}");
    assert_eq!(
        rcode(&server, "127.0.0.4", "evil.example.test."),
        ResponseCode::NXDomain,
        "college-c's client is answered and blocked"
    );
    assert_eq!(
        rcode(&server, "127.0.0.2", "www.example.test."),
        ResponseCode::Refused,
        "the removed network's client is refused"
    );
    let r = query_from(
        server.addr,
        "127.0.0.3",
        "evil.example.test.",
        RecordType::A,
    );
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "school-b: nodata"
    );
    assert!(r.answers.is_empty());
    let reloads = count(&server, "config reloaded");

    // A broken edit: refused with config check's message; nothing changes.
    let broken = edited.replace(
        "networks = [\"127.0.0.4/32\"]",
        "networks = [\"not-a-network\"]",
    );
    std::fs::write(&config, &broken).unwrap();
    wait_for("the broken edit refused", Duration::from_secs(10), || {
        server.log_contains("config reload refused")
    });
    let (code, _, check) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    // Its first line (the file, line and column) and its last (the
    // reason) are in the log line, which escapes the lines between.
    let first = check
        .lines()
        .next()
        .and_then(|l| l.split_once("error: "))
        .map(|(_, m)| m.trim())
        .unwrap_or_else(|| panic!("config check's message: {check}"));
    let last = check.trim_end().lines().last().unwrap_or("").trim();
    assert!(
        first.contains("line 30") && last.contains("invalid IP address"),
        "{check}"
    );
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap_or("");
    assert!(
        line.contains(first) && line.contains(last),
        "the log says what config check says ({first} ... {last}):\n{line}"
    );
    server.signal("HUP");
    wait_for("the SIGHUP refused too", Duration::from_secs(10), || {
        count(&server, "config reload refused") >= 2
    });
    assert_eq!(count(&server, "config reloaded"), reloads);
    assert_eq!(
        rcode(&server, "127.0.0.4", "evil.example.test."),
        ResponseCode::NXDomain,
        "college-c stays"
    );
    let (status, _, _) = http_get(server.admin(), "/api/v1/orgs/college-c/hits", Some(TOKEN_C));
    assert_eq!(status, 200, "its token too");
    assert!(
        metric(
            &scrape(&server),
            "portcullis_config_reloads_total",
            &[("result", "error")]
        ) >= 2.0
    );

    // A file change alone: school-b lets evil.example.test through now;
    // the hit log starts a JSON stream without a restart; a changed
    // listener is named as needing a restart and keeps serving.
    let jsonl = setup.path("hits.jsonl");
    let fixed = edited
        .replace(
            "actions = { malware = \"nodata\" }",
            "allow = [\"evil.example.test\"]",
        )
        .replacen(
            "listen = [\"127.0.0.1:0\"]",
            "listen = [\"127.0.0.1:1\"]",
            1,
        )
        + &format!("[hitlog]\njsonl = {:?}\n", jsonl.to_str().unwrap());
    let tmp = setup.path("portcullis.toml.new");
    std::fs::write(&tmp, &fixed).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    wait_for("the file change reloaded", Duration::from_secs(10), || {
        count(&server, "config reloaded") > reloads
    });
    assert!(server.log_contains("[server] changed and needs a restart"));
    let r = query_from(
        server.addr,
        "127.0.0.3",
        "evil.example.test.",
        RecordType::A,
    );
    assert_eq!(
        crate::harness::a_records(&r),
        ["192.0.2.66"],
        "school-b gets the upstream's answer, no longer the block"
    );
    assert_eq!(crate::harness::ede(&r), None, "no block EDE");
    // The writer takes new settings between batches, after the reload.
    wait_for("the hit log's new settings", Duration::from_secs(5), || {
        server.log_contains("hit log settings reloaded")
    });
    assert!(!server.log_contains("[hitlog] changed and needs a restart"));
    // A name college-c has not asked yet: a repeat of an earlier query
    // would be folded into a counted record until its window ends.
    assert_eq!(
        rcode(&server, "127.0.0.4", "again.evil.example.test."),
        ResponseCode::NXDomain
    );
    wait_for(
        "college-c's block in the JSON stream",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&jsonl)
                .unwrap_or_default()
                .contains("\"org\":\"college-c\"")
        },
    );

    stop.store(true, Ordering::Relaxed);
    let answered = stream.join().expect("every streamed query was answered");
    assert!(answered > 10, "{answered}");
}
