//! Parsing and validation, through [`Config::from_str`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("/etc/portcullis/portcullis.toml"))
}

#[test]
fn empty_config_gets_the_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.listen, [SocketAddr::from(([127, 0, 0, 1], 5353))]);
    assert!(!c.server.allow_unknown_clients);
    assert_eq!(c.resolver.mode, ResolverMode::Recursive);
    assert_eq!(
        c.blocklist.feeds_dir,
        Path::new("/etc/portcullis/blocklists")
    );
    assert_eq!(c.blocklist.state_dir, Path::new("/etc/portcullis/state"));
    assert_eq!(c.blocklist.policy_ttl, 300);
    assert_eq!(c.blocklist.default_action, Action::Nxdomain);
    assert_eq!(
        c.admin.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9153)))
    );
    assert_eq!(c.hitlog.retention_days, 90);
}

#[test]
fn every_design_key_is_accepted() {
    let c = parse(
        r#"
        [server]
        listen = ["127.0.0.1:5353", "[::1]:5353"]
        allow_unknown_clients = false
        [resolver]
        mode = "forward"
        upstreams = ["9.9.9.9:53", "149.112.112.112"]
        root_hints = []
        [blocklist]
        feeds_dir = "blocklists"
        state_dir = "/var/lib/portcullis"
        allow = ["allow.txt"]
        protected = ["protected.txt"]
        policy_ttl = 300
        default_action = "nxdomain"
        [actions]
        malware = "refused"
        phishing = "nodata"
        [[feed]]
        file = "partner.txt"
        format = "plain"
        category = "malware"
        action = "nxdomain"
        [[organisation]]
        id = "council-a"
        name = "Council A"
        networks = ["10.1.0.0/16", "2001:db8:1::/48"]
        token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        [admin]
        listen = "127.0.0.1:9153"
        operator_token_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
        [hitlog]
        retention_days = 90
        jsonl = "/var/log/portcullis/hits.jsonl"
        "#,
    )
    .unwrap();
    assert_eq!(
        c.resolver.upstreams[1],
        SocketAddr::from(([149, 112, 112, 112], 53))
    );
    assert_eq!(
        c.blocklist.allow,
        [PathBuf::from("/etc/portcullis/allow.txt")]
    );
    assert_eq!(c.blocklist.state_dir, Path::new("/var/lib/portcullis"));
    assert_eq!(c.actions["malware"], Action::Refused);
    assert_eq!(c.organisations[0].networks.len(), 2);
}

#[test]
fn unknown_key_is_named_with_the_file() {
    let err = parse("[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/portcullis/portcullis.toml"), "{err}");
    assert!(err.contains("lisen"), "{err}");
    let err = parse("[blocklists]\n").unwrap_err().to_string();
    assert!(err.contains("blocklists"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let err = parse("[resolver]\nmode = \"forward\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolver.upstreams"), "{err}");
    let err = parse("[resolver]\nmode = \"forward\"\nupstreams = [\"nine\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolver.upstreams[0]"), "{err}");
    let err = parse("[resolver]\nmode = \"iterative\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("iterative"), "{err}");
    let err = parse("[hitlog]\ncoalesce_after = 101\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("hitlog.coalesce_after"), "{err}");
    assert_eq!(
        parse("[hitlog]\ncoalesce_after = 100\n")
            .unwrap()
            .hitlog
            .coalesce_after,
        100
    );
    let err = parse("[blocklist]\ndefault_action = \"sinkhole\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sinkhole_ipv4"), "{err}");
    let err = parse("[[organisation]]\nid = \"a\"\n[[organisation]]\nid = \"a\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("organisation[1].id"), "{err}");
    let err = parse("[[organisation]]\nid = \"a\"\ntoken_sha256 = \"secret\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("organisation[0].token_sha256"), "{err}");
    let err = parse("[[organisation]]\nid = \"a\"\nnetworks = [\"10.0.0.0/33\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("networks"), "{err}");
    let err = parse(
        "[[taxii]]\nname = \"a\"\nurl = \"http://taxii.example/api1/\"\ncollection = \"c\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("taxii[0].url") && err.contains("https"),
        "{err}"
    );
    let err = parse("[[taxii]]\nname = \"a\"\nurl = \"https://taxii.example/api1/\"\ncollection = \"c\"\npassword = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown field `password`"),
        "passwords never in the config: {err}"
    );
    let err = parse("[[taxii]]\nname = \"a\"\nurl = \"https://t.example/\"\ncollection = \"c\"\npassword_env = \"P\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("taxii[0].username"), "{err}");
    let err = parse("[resolver]\nroot_hints = [\"127.0.0.1:5300\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolver.root_hints[0]"), "{err}");
}

/// A config file in a temporary folder with a `feeds` folder beside it
/// holding `present.txt`.
fn with_feeds_dir(extra: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::create_dir(dir.path().join("feeds")).expect("feeds folder");
    std::fs::write(dir.path().join("feeds/present.txt"), "a.example\n").expect("feed file");
    let text = format!("[blocklist]\nfeeds_dir = \"feeds\"\n{extra}");
    let config = Config::from_str(&text, &dir.path().join("p.toml"));
    (dir, config)
}

#[test]
fn a_feed_file_missing_from_feeds_dir_is_a_warning_naming_key_and_file() {
    let (dir, c) = with_feeds_dir(
        "[[feed]]\nfile = \"present.txt\"\ncategory = \"malware\"\n\
         [[feed]]\nfile = \"malwre.txt\"\ncategory = \"malware\"\n",
    );
    let c = c.unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(w.starts_with("key `feed[1].file`: "), "{w}");
    assert!(w.contains("\"malwre.txt\""), "{w}");
    assert!(
        w.contains(&dir.path().join("feeds").display().to_string()),
        "{w}"
    );
    // The settings are kept: they apply once the file arrives.
    assert!(c.feed_settings("malwre.txt").is_some());
}

#[test]
fn a_feed_file_is_not_checked_without_feeds_dir_or_when_taxii_writes_it() {
    let c = parse("[[feed]]\nfile = \"partner.txt\"\n").unwrap();
    assert!(c.warnings.is_empty(), "no feeds_dir: {:?}", c.warnings);
    let (_dir, c) = with_feeds_dir(
        "[[feed]]\nfile = \"taxii-ais.json\"\ncategory = \"malware\"\n\
         [[taxii]]\nname = \"ais\"\nurl = \"https://taxii.example/api1/\"\ncollection = \"c\"\n",
    );
    let c = c.unwrap();
    assert!(c.warnings.is_empty(), "pulled later: {:?}", c.warnings);
}

#[test]
fn a_feed_file_the_compiler_skips_is_an_error() {
    for name in ["README.md", "list.txt.part", ".hidden"] {
        let err = parse(&format!("[[feed]]\nfile = \"{name}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feed[0].file") && err.contains(name) && err.contains("never read"),
            "{err}"
        );
    }
}

#[test]
fn an_organisation_sinkholing_without_addresses_is_named() {
    let org = "[[organisation]]\nid = \"a\"\n\
               [[organisation]]\nid = \"council-b\"\nactions = { malware = \"sinkhole\" }\n";
    let err = parse(org).unwrap_err().to_string();
    assert!(err.contains("organisation[1].actions.malware"), "{err}");
    assert!(err.contains("\"council-b\""), "{err}");
    assert!(err.contains("sinkhole_ipv4"), "{err}");
    let c = parse(&format!("[blocklist]\nsinkhole_ipv6 = \"::1\"\n{org}")).unwrap();
    assert_eq!(c.organisations[1].actions["malware"], Action::Sinkhole);
}

#[test]
fn upstreams_in_recursive_mode_are_a_warning() {
    let c = parse("[resolver]\nupstreams = [\"9.9.9.9\"]\n").unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with("key `resolver.upstreams`: ")
            && c.warnings[0].contains("recursive"),
        "{:?}",
        c.warnings
    );
    let c = parse("[resolver]\nmode = \"forward\"\nupstreams = [\"9.9.9.9\"]\n").unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(parse("").unwrap().warnings.is_empty());
}

#[test]
fn an_open_resolver_and_a_clear_text_admin_off_loopback_are_warned_about() {
    let warnings = |text: &str| parse(text).unwrap().warnings;
    // Loopback only: nothing to say.
    assert!(warnings("[server]\nallow_unknown_clients = true\n").is_empty());
    let open = warnings(
        "[server]\nlisten = [\"127.0.0.1:53\", \"0.0.0.0:53\"]\nallow_unknown_clients = true\n",
    );
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        open[0].contains("server.allow_unknown_clients")
            && open[0].contains("0.0.0.0:53")
            && !open[0].contains("127.0.0.1:53")
            && open[0].contains("open resolver"),
        "{open:?}"
    );
    // Members only: the same listener is no open resolver.
    assert!(warnings("[server]\nlisten = [\"0.0.0.0:53\"]\n").is_empty());
    let admin = warnings("[admin]\nlisten = \"[::]:9153\"\n");
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert!(
        admin[0].contains("admin.listen") && admin[0].contains("TLS proxy"),
        "{admin:?}"
    );
}

#[test]
fn a_fleet_store_and_node_id_are_read_and_a_password_in_the_url_is_refused() {
    let c = parse(
        "[server]\nnode_id = \"pdns-lon-1\"\n[hitlog]\n\
         postgres = \"postgres://portcullis@db.example:5432/hits?sslmode=require\"\n\
         postgres_password_file = \"pg.pass\"\npostgres_ca_file = \"/etc/ssl/db-ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(c.server.node_id, "pdns-lon-1");
    let pg = c.hitlog.postgres.unwrap();
    assert_eq!(
        pg.password_file.as_deref(),
        Some(Path::new("/etc/portcullis/pg.pass"))
    );
    assert_eq!(pg.ca_file.as_deref(), Some(Path::new("/etc/ssl/db-ca.pem")));
    // Without one, the host name.
    let id = parse("").unwrap().server.node_id;
    assert!(!id.is_empty() && id.len() <= 64, "{id:?}");

    for (text, key, says) in [
        (
            "[hitlog]\npostgres = \"postgres://portcullis:hunter2@db.example/hits\"\n",
            "hitlog.postgres",
            "password",
        ),
        (
            "[hitlog]\npostgres = \"postgres://db.example\"\n",
            "hitlog.postgres",
            "database name",
        ),
        (
            "[hitlog]\npostgres = \"postgres://db.example/hits?sslmode=sometimes\"\n",
            "hitlog.postgres",
            "connection string",
        ),
        (
            "[hitlog]\npostgres_password_file = \"pg.pass\"\n",
            "hitlog.postgres_password_file",
            "without hitlog.postgres",
        ),
        (
            "[server]\nnode_id = \"node one\"\n",
            "server.node_id",
            "not a node id",
        ),
        (
            "[server]\nnode_id = \"\"\n",
            "server.node_id",
            "not a node id",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        assert!(
            !err.contains("hunter2"),
            "the password is not repeated: {err}"
        );
    }
}

#[test]
fn dnstap_needs_one_collector_and_something_to_send() {
    let c =
        parse("[server]\nnode_id = \"n1\"\n[dnstap]\nsocket = \"/run/portcullis/dnstap.sock\"\n")
            .unwrap();
    let d = c.dnstap.unwrap();
    assert_eq!(
        d.target,
        DnstapTarget::Unix(PathBuf::from("/run/portcullis/dnstap.sock"))
    );
    assert_eq!(d.identity, "n1", "the node id by default");
    assert!(d.client_response && !d.client_query && !d.only_policy);
    assert!(parse("").unwrap().dnstap.is_none());
    for (text, says) in [
        ("[dnstap]\n", "needs a collector"),
        (
            "[dnstap]\nsocket = \"/s\"\ntcp = \"127.0.0.1:6000\"\n",
            "choose one",
        ),
        (
            "[dnstap]\ntcp = \"127.0.0.1:6000\"\nqueue = 0\n",
            "dnstap.queue",
        ),
        (
            "[dnstap]\ntcp = \"127.0.0.1:6000\"\nclient_response = false\n",
            "nothing would be sent",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn an_empty_listen_is_a_reporting_instance_and_needs_the_admin_listener() {
    let c = parse(
        "[server]\nlisten = []\n[hitlog]\nenabled = false\npostgres = \"host=db.example dbname=hits\"\n",
    )
    .unwrap();
    assert!(c.server.is_reporting_only());
    // Recording nothing while reading the fleet is the point here.
    assert!(
        c.warnings.iter().all(|w| !w.contains("hitlog.postgres")),
        "{:?}",
        c.warnings
    );
    let error = parse("[server]\nlisten = []\n[admin]\nlisten = \"\"\n")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("server.listen") && error.contains("admin.listen"),
        "{error}"
    );
    assert!(!parse("").unwrap().server.is_reporting_only());
}

#[test]
fn a_download_is_a_source_and_the_feed_settings_of_its_file() {
    let c = parse(
        "[[download]]\nurl = \"https://lists.example/pro.txt\"\nfile = \"pro.txt\"\n\
         format = \"wildcard\"\ncategory = \"ads\"\nca_file = \"ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(c.downloads[0].interval_secs, 3600);
    assert_eq!(c.downloads[0].max_bytes, c.blocklist.max_feed_mib << 20);
    assert_eq!(
        c.downloads[0].ca_file.as_deref(),
        Some(Path::new("/etc/portcullis/ca.pem"))
    );
    let settings = c.feed_settings("pro.txt").unwrap();
    assert_eq!(settings.format, Some(crate::formats::Format::Wildcard));
    assert_eq!(settings.category.as_deref(), Some("ads"));

    let err = |text: &str| parse(text).unwrap_err().to_string();
    let e = err("[[download]]\nurl = \"http://lists.example/a.txt\"\nfile = \"a.txt\"\n");
    assert!(e.contains("download[0].url") && e.contains("https"), "{e}");
    let e = err("[[download]]\nurl = \"https://lists.example/a.txt\"\nfile = \"../a.txt\"\n");
    assert!(e.contains("download[0].file"), "{e}");
    let e = err(
        "[[download]]\nurl = \"https://lists.example/a.txt\"\nfile = \"a.txt\"\ninterval_secs = 5\n",
    );
    assert!(e.contains("download[0].interval_secs"), "{e}");
    // A loopback mirror may be polled every second.
    parse("[[download]]\nurl = \"http://127.0.0.1:8080/a.txt\"\nfile = \"a.txt\"\ninterval_secs = 1\n")
        .unwrap();
    let e = err(
        "[[download]]\nurl = \"https://lists.example/a.txt\"\nfile = \"a.txt\"\n\
         [[feed]]\nfile = \"a.txt\"\ncategory = \"x\"\n",
    );
    assert!(
        e.contains("download[0].file") && e.contains("[[feed]]"),
        "{e}"
    );
    let e = err(
        "[[download]]\nurl = \"https://a.example/a.txt\"\nfile = \"a.txt\"\n\
         [[download]]\nurl = \"https://b.example/a.txt\"\nfile = \"a.txt\"\n",
    );
    assert!(
        e.contains("download[1].file") && e.contains("two downloads"),
        "{e}"
    );
    let e =
        err("[[download]]\nurl = \"https://lists.example/a.txt\"\nfile = \"a.txt\"\nsecret = 1\n");
    assert!(e.contains("unknown field `secret`"), "{e}");
}

#[test]
fn structured_errors_and_sharing_settings_are_checked() {
    let c = parse(
        "[blocklist]\nstructured_errors = true\nerror_contact = [\"mailto:soc@example.gov.uk\"]\n\
         error_organisation = \"Example CERT\"\n",
    )
    .unwrap();
    let s = c.blocklist.structured_errors.unwrap();
    assert_eq!(s.contact, ["mailto:soc@example.gov.uk"]);
    assert_eq!(s.organisation.as_deref(), Some("Example CERT"));
    assert!(parse("").unwrap().blocklist.structured_errors.is_none());
    let share = parse("[share]\nwhere_sighted = \"service\"\ntlp = \"amber+strict\"\n")
        .unwrap()
        .share;
    assert_eq!(share.where_sighted, WhereSighted::Service);
    assert_eq!(share.tlp, Tlp::AmberStrict);
    let share = parse("").unwrap().share;
    assert_eq!(
        (share.where_sighted, share.tlp, share.taxii),
        (WhereSighted::Organisation, Tlp::Amber, true)
    );
    for (text, says) in [
        (
            "[blocklist]\nstructured_errors = true\nerror_contact = [\"https://example.org\"]\n",
            "blocklist.error_contact",
        ),
        (
            "[blocklist]\nerror_contact = [\"mailto:a@b.example\"]\n",
            "set blocklist.structured_errors = true",
        ),
        (
            "[blocklist]\nstructured_errors = true\nerror_organisation = \"\"\n",
            "blocklist.error_organisation",
        ),
        ("[share]\nname = \" \"\n", "share.name"),
        ("[share]\ntlp = \"white\"\n", "tlp"),
        ("[share]\nwhere_sighted = \"nobody\"\n", "where_sighted"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
}
