//! `portcullis check` against the running resolver: the live list (a
//! broken feed's last good contents included), an organisation's policy
//! by client address or id, a live resolution with CNAME policy, and no
//! trace of the check in the hit log or the block counters.

use std::process::Command;
use std::time::Duration;

use crate::harness::{BIN, Server, metric, scrape, wait_for};
use crate::hitlog::{TOKEN_A, TOKEN_OPERATOR, two_orgs};

/// `portcullis check ARGS --config CONFIG` with `token` in the
/// environment: exit code, stdout, stderr.
fn check(config: &std::path::Path, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    check_at(None, config, token, args)
}

/// [`check`] asking the admin listener at `admin`.
fn check_at(
    admin: Option<std::net::SocketAddr>,
    config: &std::path::Path,
    token: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").args(args).arg("--config").arg(config);
    if let Some(admin) = admin {
        cmd.arg("--admin").arg(admin.to_string());
    }
    cmd.env_remove("PORTCULLIS_TOKEN");
    if let Some(token) = token {
        cmd.env("PORTCULLIS_TOKEN", token);
    }
    let out = cmd.output().expect("run portcullis check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn check_asks_the_running_resolver_with_each_organisations_policy() {
    let (setup, _auth, server) = two_orgs("");
    let config = setup.path("portcullis.toml");
    let op = Some(TOKEN_OPERATOR);
    // The test's config binds port 0; the listener's real address is given.
    let admin = Some(server.admin());

    // By client address: council-a's 127.0.0.1 gets the block.
    let (code, out, err) = check_at(
        admin,
        &config,
        op,
        &["x.evil.example.test", "--client", "127.0.0.1"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("x.evil.example.test: BLOCKED, action nxdomain"),
        "{out}"
    );
    assert!(out.contains("organisation: council-a"), "{out}");
    assert!(
        out.contains("decision: blocked with nxdomain for council-a (malware, feed malware.txt)"),
        "{out}"
    );
    // School B's own allow entry, and its own action for phishing.
    let (_, out, _) = check_at(
        admin,
        &config,
        op,
        &["trusted.evil.example.test", "--org", "school-b", "--json"],
    );
    let r = json(&out);
    assert_eq!(r["organisation"], "school-b");
    assert!(
        r["decision"]
            .as_str()
            .unwrap()
            .starts_with("passes: school-b's allow entry trusted.evil.example.test"),
        "{r}"
    );
    let (_, out, _) = check_at(
        admin,
        &config,
        op,
        &["phish.example.test", "--client", "127.0.0.3", "--json"],
    );
    let r = json(&out);
    assert_eq!(r["organisation"], "school-b", "the more specific network");
    assert!(
        r["decision"]
            .as_str()
            .unwrap()
            .starts_with("blocked with nodata"),
        "{r}"
    );

    // A live resolution: the CNAME chain leads to a listed name.
    setup.write(
        "feeds/phish.txt",
        "phish.example.test\nchain2.example.test\n",
    );
    wait_for("the feed reloaded", Duration::from_secs(15), || {
        let (_, out, _) = check_at(admin, &config, op, &["chain2.example.test", "--json"]);
        json(&out)["feed"] == "phish.txt"
    });
    let (code, out, err) = check_at(
        admin,
        &config,
        op,
        &["chain0.example.test", "--client", "127.0.0.1", "--resolve"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("chain0.example.test: not listed"), "{out}");
    assert!(out.contains("resolved now (A): NXDOMAIN"), "{out}");
    assert!(
        out.contains("nxdomain at cname: chain2.example.test (feed phish.txt, category phishing)"),
        "{out}"
    );
    assert!(out.contains("extended error 15"), "{out}");
    // An unlisted name resolves, and nothing matched along its answer.
    let (_, out, _) = check_at(
        admin,
        &config,
        op,
        &[
            "www.example.test",
            "--org",
            "council-a",
            "--resolve",
            "--type",
            "aaaa",
            "--json",
        ],
    );
    let r = json(&out);
    assert_eq!(r["resolution"]["rcode"], "NOERROR", "{r}");
    assert!(
        r["resolution"]["answers"]
            .to_string()
            .contains("2001:db8::10"),
        "{r}"
    );
    assert_eq!(r["resolution"]["decisions"].as_array().unwrap().len(), 0);

    // A broken feed: the live list still serves its last good contents,
    // and the check says so.
    setup.write(
        "feeds/malware.txt",
        "<html><body>maintenance</body></html>\n",
    );
    wait_for("the broken feed noticed", Duration::from_secs(15), || {
        let (_, out, _) = check_at(admin, &config, op, &["evil.example.test", "--json"]);
        json(&out)["feed_last_good"].is_string()
    });
    let (_, out, _) = check_at(
        admin,
        &config,
        op,
        &["c2.example.test", "--client", "127.0.0.1"],
    );
    assert!(
        out.contains("feed malware.txt serves its last good contents"),
        "{out}"
    );
    assert!(out.contains("decision: blocked with nxdomain"), "{out}");

    // Checks leave no hit record and count no block.
    let text = scrape(&server);
    assert_eq!(metric(&text, "portcullis_hitlog_written_total", &[]), 0.0);
    assert_eq!(metric(&text, "portcullis_blocks_total", &[]), 0.0);
    check_refusals(&config, &server);
}

/// What a check may not do, and its errors.
fn check_refusals(config: &std::path::Path, server: &Server) {
    // An organisation's token checks for its own organisation only.
    let (code, out, _) = check_at(
        Some(server.admin()),
        config,
        Some(TOKEN_A),
        &["x.evil.example.test", "--json"],
    );
    assert_eq!(code, 0);
    assert_eq!(json(&out)["organisation"], "council-a");
    let (code, _, err) = check_at(
        Some(server.admin()),
        config,
        Some(TOKEN_A),
        &["x.evil.example.test", "--org", "school-b"],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("403") && err.contains("council-a"), "{err}");
    // A client outside the organisation named is an error, and does not
    // say whose network it is in.
    let (code, _, err) = check_at(
        Some(server.admin()),
        config,
        Some(TOKEN_A),
        &["x.evil.example.test", "--client", "127.0.0.3"],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("is not in organisation \"council-a\""),
        "{err}"
    );
    assert!(!err.contains("school-b"), "{err}");
    // No token, a bad one, an unknown organisation, a bad name.
    let (code, _, err) = check_at(Some(server.admin()), config, None, &["x.evil.example.test"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("PORTCULLIS_TOKEN") && err.contains("--offline"),
        "{err}"
    );
    let (code, _, err) = check_at(
        Some(server.admin()),
        config,
        Some("wrong"),
        &["x.evil.example.test"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = check_at(
        Some(server.admin()),
        config,
        Some(TOKEN_OPERATOR),
        &["x.example.test", "--org", "nobody"],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("no organisation has the id \"nobody\""),
        "{err}"
    );
    let (code, _, err) = check_at(
        Some(server.admin()),
        config,
        Some(TOKEN_OPERATOR),
        &["not a name"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("not a domain name"), "{err}");
    // --offline and the live options do not mix.
    let (code, _, err) = check_at(
        Some(server.admin()),
        config,
        None,
        &["x.example.test", "--offline", "--resolve"],
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_without_a_running_resolver_says_to_use_offline() {
    let setup = crate::harness::Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config_with_admin("", "");
    // The admin port in the config is 0: nothing to connect to.
    let (code, _, err) = check(&config, Some("t"), &["evil.example.test"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot reach the running resolver") && err.contains("--offline"),
        "{err}"
    );
    let (code, out, err) = check(&config, None, &["evil.example.test", "--offline"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("evil.example.test: BLOCKED"), "{out}");
}

#[test]
fn check_names_a_client_ip_trigger_before_the_name() {
    let (setup, _auth, server) = two_orgs("");
    let config = setup.path("portcullis.toml");
    let admin = Some(server.admin());
    // 127.0.0.9 (council-a): every name it asks is NXDOMAIN; 127.0.0.3
    // (school-b) is exempt from all policy.
    setup.write(
        "feeds/clients.rpz",
        "$TTL 300\n@ IN SOA localhost. root.localhost. 1 3600 600 86400 300\n@ IN NS localhost.\n\
         32.9.0.0.127.rpz-client-ip CNAME .\n32.3.0.0.127.rpz-client-ip CNAME rpz-passthru.\n",
    );
    let decision = |client: &str, name: &str| {
        let (_, out, err) = check_at(
            admin,
            &config,
            Some(TOKEN_OPERATOR),
            &[name, "--client", client, "--json"],
        );
        json(&format!("{out}{err}"))["decision"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    wait_for("the client-IP feed", Duration::from_secs(20), || {
        decision("127.0.0.9", "clean.example.test").contains("client-IP trigger")
    });
    assert_eq!(
        decision("127.0.0.9", "clean.example.test"),
        "blocked with nxdomain for council-a (uncategorised, feed clients.rpz): the client's address \
         is listed (client-IP trigger 127.0.0.9/32, feed clients.rpz), which decides before the name"
    );
    assert_eq!(
        decision("127.0.0.3", "x.evil.example.test"),
        "passes: the client's address is listed (client-IP trigger 127.0.0.3/32, feed \
         clients.rpz), which decides before the name; a PASSTHRU exempts this client from all \
         policy"
    );
    // Another client: the name's own entry, as before.
    assert!(
        decision("127.0.0.1", "x.evil.example.test")
            .starts_with("blocked with nxdomain for council-a (malware"),
    );
}
