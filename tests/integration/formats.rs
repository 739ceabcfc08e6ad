//! Every feed format dropped into feeds_dir at once (the fixtures in
//! tests/data/feeds/), each blocking exactly what its format says, end to
//! end through the real binary.

use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, Transport, a_records, build_query, ede, query, run};
use crate::upstream::{Authority, example_zone};

fn fixtures_server() -> (Setup, Authority, Server) {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let setup = Setup::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/feeds");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), setup.path("feeds").join(entry.file_name())).unwrap();
    }
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n",
        auth.addr
    ));
    let server = Server::start(&config);
    (setup, auth, server)
}

fn blocked(server: &Server, name: &str, rtype: RecordType) -> (bool, ResponseCode, Vec<String>) {
    let reply = query(server.addr, name, rtype, Transport::Udp, true);
    let blocked = ede(&reply).is_some_and(|(code, _)| code == 15);
    (blocked, reply.metadata.response_code, a_records(&reply))
}

#[test]
fn each_format_blocks_what_it_says() {
    let (setup, _auth, server) = fixtures_server();
    use ResponseCode::*;
    let a = RecordType::A;
    let cases: &[(&str, bool, ResponseCode, &[&str])] = &[
        // hosts: exact entries; a real address is local data
        ("hosts-block.example.test.", true, NXDomain, &[]),
        ("x.hosts-block.example.test.", false, NXDomain, &[]),
        ("hosts-sink.example.test.", true, NoError, &["192.0.2.99"]),
        // adblock: subtree, exceptions, modifier lines rejected
        ("ads.example.test.", true, NXDomain, &[]),
        ("x.ads.example.test.", true, NXDomain, &[]),
        ("ok.ads.example.test.", false, NXDomain, &[]),
        ("imp.example.test.", false, NXDomain, &[]),
        // dnsmasq
        ("x.dm-block.example.test.", true, NXDomain, &[]),
        ("dm-sink.example.test.", true, NoError, &["192.0.2.98"]),
        ("dm-local.example.test.", true, NXDomain, &[]),
        ("dm-forward.example.test.", false, NXDomain, &[]),
        // unbound local-zone types
        ("x.ub-refuse.example.test.", true, Refused, &[]),
        ("ub-nodata.example.test.", true, NoError, &[]),
        // RPZ: exact, below-only wildcard, local data, passthru
        ("rpz-nx.example.test.", true, NXDomain, &[]),
        ("x.rpz-nx.example.test.", false, NXDomain, &[]),
        ("x.rpz-wild.example.test.", true, NoError, &[]),
        ("rpz-wild.example.test.", false, NXDomain, &[]),
        ("rpz-sink.example.test.", true, NoError, &["192.0.2.97"]),
        ("evil.example.test.", true, NXDomain, &[]),
        ("deep.sub.evil.example.test.", true, NXDomain, &[]),
        ("good.evil.example.test.", false, NoError, &["192.0.2.68"]),
        // STIX: the domain indicator blocks; a URL with a path does not
        // take its host down; an expired indicator is not loaded
        ("stix-evil.example.test.", true, NXDomain, &[]),
        ("www.example.test.", false, NoError, &["192.0.2.10"]),
        ("stix-expired.example.test.", false, NXDomain, &[]),
        // plain wildcard
        ("a.pl-wild.example.test.", true, NXDomain, &[]),
        ("pl-wild.example.test.", false, NXDomain, &[]),
    ];
    for (name, want_blocked, rcode, addrs) in cases {
        let got = blocked(&server, name, a);
        assert_eq!((got.0, got.1), (*want_blocked, *rcode), "{name}");
        assert_eq!(got.2, *addrs, "{name}");
    }

    // rpz-drop: no answer at all.
    let msg = build_query("rpz-drop.example.test.", a, true);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server.addr).unwrap();
    let mut buf = [0u8; 512];
    assert!(sock.recv_from(&mut buf).is_err(), "rpz-drop sends nothing");

    // `check` names the feed, the indicator id and the rule.
    let config = setup.path("portcullis.toml");
    let (_, out, _) = run(&[
        "check",
        "stix-evil.example.test",
        "--offline",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.contains("BLOCKED"), "{out}");
    assert!(out.contains("feed stix.json, stix format"), "{out}");
    assert!(
        out.contains("indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"),
        "{out}"
    );
    assert!(out.contains("rule:"), "{out}");
    let (_, out, _) = run(&[
        "check",
        "good.evil.example.test",
        "--offline",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.contains("ALLOWED (exception)") && out.contains("policy.rpz"),
        "{out}"
    );

    // `compile` reports the detected formats, rejects and skips.
    let (code, out, err) = run(&["compile", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for (file, format) in [
        ("adblock.txt", "adblock"),
        ("dnsmasq.conf", "dnsmasq"),
        ("hosts.txt", "hosts"),
        ("policy.rpz", "rpz"),
        ("stix.json", "stix"),
        ("unbound.conf", "unbound"),
        ("wildcards.txt", "plain"),
    ] {
        let row = out
            .lines()
            .find(|l| l.starts_with(file))
            .unwrap_or_else(|| panic!("{file}:\n{out}"));
        assert_eq!(row.split_whitespace().nth(1), Some(format), "{row}");
    }
    assert!(
        out.contains("addresses: 1 listed, 0 in the answer-IP policy (off"),
        "the rpz-ip trigger is an address indicator, unused until enabled: {out}"
    );
    assert!(out.contains("skipped: url-with-path 1"), "{out}");
    assert!(
        out.contains("not loaded: 0 revoked, 1 expired, 0 not yet valid"),
        "{out}"
    );
    assert!(out.contains("modifier $important"), "{out}");
}

#[test]
fn feed_settings_trusted_and_max_entries() {
    let setup = Setup::new();
    setup.write("feeds/cert.txt", "gov.test\n");
    setup.write("feeds/partner.txt", "gov.test\nother.test\n");
    setup.write("feeds/huge.txt", "a.test\nb.test\nc.test\n");
    setup.write("protected.txt", "www.gov.test\n");
    let config = setup.config(
        "[blocklist]\nprotected = [\"protected.txt\"]\n\
         [[feed]]\nfile = \"cert.txt\"\ntrusted = true\n\
         [[feed]]\nfile = \"huge.txt\"\nmax_entries = 2\n",
    );
    let config = config.to_str().unwrap();
    let (code, out, _) = run(&["compile", "--config", config]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("more than its max_entries 2"), "{out}");
    let partner = out.lines().find(|l| l.starts_with("partner.txt")).unwrap();
    assert_eq!(
        partner.split_whitespace().last(),
        Some("1"),
        "partner's gov.test suppressed: {partner}"
    );
    let (_, out, _) = run(&["check", "www.gov.test", "--offline", "--config", config]);
    assert!(
        out.contains("BLOCKED") && out.contains("feed cert.txt"),
        "the trusted feed may list it: {out}"
    );
    let (_, out, _) = run(&["check", "a.test", "--offline", "--config", config]);
    assert!(
        out.contains("not listed"),
        "the oversized feed was refused: {out}"
    );
}
