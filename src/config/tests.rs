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
