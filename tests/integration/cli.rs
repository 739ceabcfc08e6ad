//! `portcullis compile`, `check` and `config check`: their output, exit
//! codes, logging and config warnings.

use crate::harness::{Setup, run};

fn setup_with_feeds() -> (Setup, String) {
    let setup = Setup::new();
    setup.write(
        "feeds/threats.tsv",
        "evil.example.test\tmalware\ttestbot\nblogspot.test\tmalware\tfree-hoster\nbad line here\tmalware\tx\n",
    );
    setup.write("feeds/list.txt", "host.example.test\n*.wild.example.test\n");
    setup.write("allow.txt", "good.evil.example.test\n");
    setup.write("protected.txt", "blogspot.test\n");
    let config = setup.config("[blocklist]\nallow = [\"allow.txt\"]\nprotected = [\"protected.txt\"]\n[[feed]]\nfile = \"list.txt\"\ncategory = \"adware\"\n");
    let config = config.to_str().unwrap().to_owned();
    (setup, config)
}

#[test]
fn compile_reports_feeds_rejects_and_suppressions() {
    let (_setup, config) = setup_with_feeds();
    let (code, out, err) = run(&["compile", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("row for {name}:\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("threats.tsv"),
        ["threats.tsv", "tsv", "2", "1", "1"],
        "{out}"
    );
    assert_eq!(
        row("list.txt"),
        ["list.txt", "plain", "2", "0", "0"],
        "{out}"
    );
    assert_eq!(
        row("allow:allow.txt"),
        ["allow:allow.txt", "plain", "1", "0", "0"],
        "{out}"
    );
    assert!(out.contains("line 3: not a valid domain name"), "{out}");
    assert!(
        out.contains("suppressed by protected names: blogspot.test"),
        "{out}"
    );
    assert!(out.contains("protected names: 1"), "{out}");
    assert!(out.contains("compiled 4 names"), "{out}");
}

#[test]
fn compile_fails_when_no_feed_loads() {
    let setup = Setup::new();
    setup.write("feeds/junk", "<html></html>\n");
    let config = setup.config("");
    let (code, out, err) = run(&["compile", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no feed could be loaded"), "{err}");
    assert!(out.contains("matches no known format"), "{out}");
}

#[test]
fn check_explains_hits_misses_and_precedence() {
    let (_setup, config) = setup_with_feeds();
    let (code, out, _) = run(&[
        "check",
        "A.B.Evil.Example.Test.",
        "--offline",
        "--config",
        &config,
    ]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("a.b.evil.example.test: BLOCKED, action nxdomain"),
        "{out}"
    );
    assert!(out.contains("=> subtree    block evil.example.test (feed threats.tsv, tsv format, category malware, testbot)"), "{out}");
    assert!(out.contains("most specific listed name decides"), "{out}");

    let (_, out, _) = run(&[
        "check",
        "x.good.evil.example.test",
        "--offline",
        "--config",
        &config,
    ]);
    assert!(
        out.starts_with("x.good.evil.example.test: ALLOWED (exception)"),
        "{out}"
    );
    assert!(out.contains("feed allow:allow.txt"), "{out}");

    let (_, out, _) = run(&[
        "check",
        "notevil.example.test",
        "--offline",
        "--config",
        &config,
    ]);
    assert!(out.starts_with("notevil.example.test: not listed"), "{out}");

    // An exact (here: below-only) entry seen but not applying is shown as such.
    let (_, out, _) = run(&[
        "check",
        "wild.example.test",
        "--offline",
        "--config",
        &config,
    ]);
    assert!(out.starts_with("wild.example.test: not listed"), "{out}");
    assert!(
        out.contains("wild.example.test is listed (below-only block) but does not cover this name"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "check",
        "a.wild.example.test",
        "--offline",
        "--config",
        &config,
    ]);
    assert!(
        out.contains("BLOCKED") && out.contains("category adware"),
        "{out}"
    );

    let (_, out, _) = run(&["check", "blogspot.test", "--offline", "--config", &config]);
    assert!(
        out.contains("not listed"),
        "protected name suppressed: {out}"
    );

    let (code, _, err) = run(&["check", "not a name", "--offline", "--config", &config]);
    assert_eq!(code, 64);
    assert!(err.contains("not a domain name"), "{err}");
}

#[test]
fn config_check_validates_without_serving() {
    let (setup, config) = setup_with_feeds();
    let (code, out, err) = run(&["config", "check", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("config OK") && out.contains("4 names"),
        "{out}"
    );
    // A feed that cannot be read in any format is a problem (exit 1).
    setup.write("feeds/junk.bin", "<html></html>\n");
    let (code, out, _) = run(&["config", "check", "--config", &config]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("problem: feed junk.bin") && out.contains("no known format"),
        "{out}"
    );
    // A bad config exits 64 and names the key.
    let bad = setup.write(
        "bad.toml",
        "[server]\nlisten = []\n[admin]\nlisten = \"\"\n",
    );
    let (code, _, err) = run(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("server.listen"), "{err}");
    // A misspelt key: the parser's message, with the line, said once.
    let typo = setup.write("typo.toml", "[blocklist]\ndir = \"feeds\"\n");
    let (code, _, err) = run(&["config", "check", "--config", typo.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("line 2") && err.contains("`feeds_dir`"),
        "{err}"
    );
    assert_eq!(err.matches("unknown field `dir`").count(), 1, "{err}");
}

#[test]
fn config_check_reads_the_sources_secrets_and_roots() {
    let setup = Setup::new();
    setup.write("xfr.key", "not base64 at all!\n");
    setup.write("ca.pem", "-----BEGIN NOTHING-----\n");
    let config = setup.write(
        "portcullis.toml",
        "[blocklist]\nfeeds_dir = \"feeds\"\nallow_empty = true\n\
         [[rpz]]\nzone = \"rpz.example.org\"\nprimaries = [\"192.0.2.53\"]\n\
         tsig_name = \"k\"\ntsig_secret_file = \"xfr.key\"\n\
         [[download]]\nurl = \"https://lists.example.org/a.txt\"\nfile = \"a.txt\"\nca_file = \"ca.pem\"\n",
    );
    let (code, out, _) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 downloads, 1 RPZ zones"), "{out}");
    assert!(
        out.contains("problem: rpz rpz.example.org: the TSIG secret in")
            && out.contains("not base64"),
        "{out}"
    );
    assert!(out.contains("problem: download a.txt: ca_file"), "{out}");
    // A good key and no CA file: all well.
    setup.write("xfr.key", "cG9ydGN1bGxpcy10ZXN0LXRzaWctc2VjcmV0LTMyYg==\n");
    setup.edit_config("ca_file = \"ca.pem\"\n", "");
    let (code, out, _) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn config_check_names_a_fleet_store_secret_it_cannot_read() {
    let setup = Setup::new();
    setup.write("feeds/list.txt", "evil.example.test\n");
    let config = setup.config(
        "[hitlog]\nenabled = false\n\
         postgres = \"postgres://portcullis@127.0.0.1:5432/hits\"\n\
         postgres_password_file = \"missing.pass\"\n",
    );
    let (code, out, err) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("problem: hitlog.postgres: password file") && out.contains("missing.pass"),
        "{out}"
    );
    assert!(
        out.contains("warning:") && out.contains("nothing is forwarded"),
        "{out}"
    );
    setup.write("missing.pass", "s3cret\n");
    let (code, out, err) = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("s3cret"),
        "the secret is never printed: {out}"
    );
}

#[test]
fn every_command_logs_at_the_configs_level() {
    let (setup, config) = setup_with_feeds();
    // At info the compiler's per-feed timings (debug) stay out of stderr.
    let (code, out, err) = run(&["compile", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("feed parsed"), "{err}");
    setup.edit_config("level = \"info\"", "level = \"debug\"");
    for args in [
        &["compile", "--config", &config][..],
        &[
            "check",
            "evil.example.test",
            "--offline",
            "--config",
            &config,
        ],
        &["config", "check", "--config", &config],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(err.contains("feed parsed"), "{args:?} logs at debug: {err}");
    }
}

#[test]
fn config_warnings_are_logged_and_listed_by_config_check() {
    let (setup, config) = setup_with_feeds();
    // Upstreams mean nothing in recursive mode; a [[feed]] entry for a file
    // that is not (yet) in feeds_dir applies to nothing today.
    setup.edit_config("[resolver]\n", "[resolver]\nupstreams = [\"192.0.2.53\"]\n");
    setup.edit_config("[[feed]]", "[[feed]]\nfile = \"later.txt\"\n[[feed]]");
    let (code, out, err) = run(&["config", "check", "--config", &config]);
    assert_eq!(code, 0, "warnings are not problems: {out}{err}");
    assert!(
        out.contains("warning: key `resolver.upstreams`") && out.contains("recursive"),
        "{out}"
    );
    assert!(
        out.contains("warning: key `feed[0].file`") && out.contains("later.txt"),
        "{out}"
    );
    let (code, out, err) = run(&["compile", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("WARN") && err.contains("resolver.upstreams"),
        "{err}"
    );
}
