//! RPZ name-server triggers (`rpz-nsdname`, `rpz-nsip`) against Unbound,
//! on a delegation hierarchy of our own: a root, the TLD `nst.` and leaf
//! zones, each an in-process authority on its own loopback address on port
//! 53 (an iterator speaks to port 53 only, so this needs root, as in CI).
//!
//! Unbound iterates the hierarchy with the RPZ. Portcullis answers twice:
//! recursive from the same root, and forwarding to a second Unbound that
//! iterates without any policy (so the name-server lookups go through a
//! forwarder, as they do in forward mode). Both must give Unbound's rcode
//! and answer section for every case; differences we chose are listed
//! with the reason and must still differ.

use std::collections::BTreeSet;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::differential::{Unbound, Upstream, ask, seen};
use crate::harness::{Server, Setup};
use crate::upstream::Authority;

const ROOT: &str = "127.0.55.1";
const TLD: &str = "127.0.55.2";
/// Serves most leaf zones.
const LEAF: &str = "127.0.55.3";
/// Serves `ipbad.nst.` (its server's address is an NSIP trigger).
const IPBAD: &str = "127.0.55.4";
/// Serves `sub.good.nst.` (delegated from a clean zone).
const SUB: &str = "127.0.55.5";
/// Serves `netbad.nst.` (inside an NSIP range).
const NETBAD: &str = "127.0.55.6";
/// The Unbounds listen here.
const RECURSORS: &str = "127.0.55.9";

/// The policy: NSDNAME exact, below-only and PASSTHRU; NSIP address and
/// range; and query-name rules that must win over them.
const RPZ: &str = "$TTL 300\n\
@ IN SOA localhost. root.localhost. 1 3600 600 86400 300\n\
@ IN NS localhost.\n\
ns1.evil-dns.nst.rpz-nsdname CNAME .\n\
*.evilhost.nst.rpz-nsdname CNAME .\n\
ok.evilhost.nst.rpz-nsdname CNAME rpz-passthru.\n\
ns.nodata-dns.nst.rpz-nsdname CNAME *.\n\
32.4.55.0.127.rpz-nsip CNAME .\n\
31.6.55.0.127.rpz-nsip CNAME *.\n\
www.passed.nst CNAME rpz-passthru.\n\
listed.bad.nst CNAME *.\n";

/// (zone, its name server, that server's address, the authority serving
/// the zone).
const ZONES: &[(&str, &str, &str)] = &[
    ("good.nst.", "ns1.good-dns.nst.", LEAF),
    ("bad.nst.", "ns1.evil-dns.nst.", LEAF),
    ("wild.nst.", "ns.x.evilhost.nst.", LEAF),
    ("excepted.nst.", "ok.evilhost.nst.", LEAF),
    ("nodata.nst.", "ns.nodata-dns.nst.", LEAF),
    ("passed.nst.", "ns1.evil-dns.nst.", LEAF),
    ("ipbad.nst.", "ns.clean-dns.nst.", IPBAD),
    ("netbad.nst.", "ns.other-dns.nst.", NETBAD),
    ("sub.good.nst.", "ns.y.evilhost.nst.", SUB),
];

/// What a case must give (ours and Unbound's alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// NOERROR with the zone's record (after a CNAME for the alias).
    Answer,
    Nxdomain,
    /// NOERROR, no records.
    Nodata,
}
use Outcome::{Answer, Nodata, Nxdomain};

/// (query name, what decides it, the outcome); each is asked for A, AAAA
/// and TXT.
const CASES: &[(&str, &str, Outcome)] = &[
    ("www.good.nst.", "clean zone: the answer", Answer),
    ("good.nst.", "clean zone apex: the answer", Answer),
    ("www.bad.nst.", "NSDNAME exact: NXDOMAIN", Nxdomain),
    ("bad.nst.", "NSDNAME exact, at the apex", Nxdomain),
    (
        "missing.bad.nst.",
        "NSDNAME over a name that does not exist",
        Nxdomain,
    ),
    (
        "listed.bad.nst.",
        "a QNAME rule (NODATA) wins over NSDNAME",
        Nodata,
    ),
    ("www.wild.nst.", "NSDNAME below-only: NXDOMAIN", Nxdomain),
    (
        "www.excepted.nst.",
        "NSDNAME PASSTHRU beats the below-only rule",
        Answer,
    ),
    ("www.nodata.nst.", "NSDNAME with NODATA", Nodata),
    ("www.ipbad.nst.", "NSIP address: NXDOMAIN", Nxdomain),
    ("www.netbad.nst.", "NSIP range: NODATA", Nodata),
    (
        "www.passed.nst.",
        "a QNAME PASSTHRU ends policy evaluation",
        Answer,
    ),
    (
        "other.passed.nst.",
        "NSDNAME beside that PASSTHRU",
        Nxdomain,
    ),
    (
        "www.sub.good.nst.",
        "a child zone's servers, under a clean parent",
        Nxdomain,
    ),
    ("alias.good.nst.", "a CNAME into a blocked zone", Nxdomain),
];

const TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::TXT];

/// Cases where Portcullis answers differently: (name, why). Each must
/// still differ for every type, so the list cannot go stale.
const DELIBERATE: &[(&str, &str)] = &[];

/// Start the hierarchy; `None` (the test is skipped, and says so) where
/// port 53 cannot be bound.
fn start_hierarchy() -> Option<Vec<Authority>> {
    if std::net::UdpSocket::bind((ROOT, 53)).is_err() {
        eprintln!(
            "SKIPPED name-server trigger tests: cannot bind {ROOT}:53 (needs root or CAP_NET_BIND_SERVICE)"
        );
        return None;
    }
    let soa = |origin: &str| {
        format!(
            "$TTL 300\n{origin} IN SOA a.root-servers. hostmaster.root-servers. 1 3600 600 86400 60\n"
        )
    };
    let root = soa(".")
        + &format!(
            ". IN NS a.root-servers.\na.root-servers. IN A {ROOT}\n\
             tld.root-servers. IN A {TLD}\nnst. IN NS tld.root-servers.\n"
        );
    // Every leaf zone's server is a name in the TLD zone itself, so no
    // delegation depends on glue.
    let mut tld = soa("nst.") + "nst. IN NS tld.root-servers.\n";
    let mut servers = BTreeSet::new();
    for (zone, server, address) in ZONES {
        if *zone == "sub.good.nst." {
            continue;
        }
        tld.push_str(&format!("{zone} IN NS {server}\n"));
        if servers.insert(*server) {
            tld.push_str(&format!("{server} IN A {address}\n"));
        }
    }
    let leaf = |zone: &str, server: &str| {
        let mut text = soa(zone)
            + &format!(
                "{zone} IN NS {server}\n{zone} IN A 198.51.100.1\n{zone} IN AAAA 2001:db8:5::1\n\
                 {zone} IN TXT \"apex\"\n"
            );
        for host in ["www", "listed", "other"] {
            text.push_str(&format!(
                "{host}.{zone} IN A 198.51.100.2\n{host}.{zone} IN AAAA 2001:db8:5::2\n\
                 {host}.{zone} IN TXT \"{host}\"\n"
            ));
        }
        text
    };
    let mut by_address: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    for (zone, server, address) in ZONES {
        let mut text = leaf(zone, server);
        if *zone == "good.nst." {
            // The child zone, and a name that leads into a blocked zone.
            text.push_str(
                "sub.good.nst. IN NS ns.y.evilhost.nst.\nalias.good.nst. IN CNAME www.bad.nst.\n",
            );
        }
        match by_address.iter_mut().find(|(a, _)| a == address) {
            Some((_, zones)) => zones.push((zone, text)),
            None => by_address.push((address, vec![(zone, text)])),
        }
    }
    tld.push_str(&format!("ns.y.evilhost.nst. IN A {SUB}\n"));
    let mut authorities = vec![
        Authority::start(format!("{ROOT}:53").parse().unwrap(), &[(".", root)]),
        Authority::start(format!("{TLD}:53").parse().unwrap(), &[("nst.", tld)]),
    ];
    for (address, zones) in by_address {
        authorities.push(Authority::start(
            format!("{address}:53").parse().unwrap(),
            &zones,
        ));
    }
    Some(authorities)
}

/// Ask every case of Portcullis at `ours` and of Unbound; the differences
/// not listed as deliberate, and the deliberate ones seen.
fn compare(
    ours: &Server,
    unbound: &Unbound,
    mode: &str,
) -> (usize, Vec<String>, BTreeSet<(&'static str, RecordType)>) {
    let mut cases = 0;
    let mut differences = Vec::new();
    let mut deliberate_seen = BTreeSet::new();
    for (name, what, outcome) in CASES {
        for rtype in TYPES {
            cases += 1;
            let mine = ask(ours.addr, name, rtype).map(|m| seen(&m));
            let theirs = ask(unbound.addr, name, rtype).map(|m| seen(&m));
            let got = match &mine {
                Ok(s) if s.rcode == ResponseCode::NXDomain => Some(Nxdomain),
                Ok(s) if s.rcode == ResponseCode::NoError && s.answers.is_empty() => Some(Nodata),
                Ok(s) if s.rcode == ResponseCode::NoError => Some(Answer),
                _ => None,
            };
            if got != Some(*outcome) {
                differences.push(format!(
                    "{mode} {name} {rtype} ({what}): expected {outcome:?}, portcullis gave {mine:?}"
                ));
            }
            let deliberate = DELIBERATE.iter().find(|(n, _)| n == name);
            match (mine == theirs, deliberate) {
                (true, None) => {}
                (false, Some(_)) => {
                    deliberate_seen.insert((*name, rtype));
                }
                (true, Some((_, why))) => differences.push(format!(
                    "{mode} {name} {rtype}: listed as a deliberate difference ({why}) but both give {mine:?}"
                )),
                (false, None) => differences.push(format!(
                    "{mode} {name} {rtype} ({what}):\n  portcullis {mine:?}\n  unbound    {theirs:?}"
                )),
            }
        }
    }
    (cases, differences, deliberate_seen)
}

#[test]
fn name_server_triggers_give_the_same_answers_as_unbound_in_both_modes() {
    let Some(_authorities) = start_hierarchy() else {
        return;
    };
    let setup = Setup::new();
    let rpz = setup.write("feeds/name-servers.rpz", RPZ);
    let unbound = Unbound::start_on(
        &setup.dir.path().join("unbound-rpz"),
        RECURSORS,
        Upstream::Root(ROOT),
        Some(&rpz),
        "a.root-servers.",
    );
    let plain = Unbound::start_on(
        &setup.dir.path().join("unbound-plain"),
        RECURSORS,
        Upstream::Root(ROOT),
        None,
        "a.root-servers.",
    );
    let recursive = Server::start(&setup.config(&format!(
        "[resolver]\nmode = \"recursive\"\nroot_hints = [\"{ROOT}\"]\n\
         allow_server_networks = [\"127.0.55.0/24\"]\ntimeout_ms = 3000\n\
         [blocklist]\npolicy_ttl = 300\n"
    )));
    let (mut cases, mut differences, mut deliberate_seen) =
        compare(&recursive, &unbound, "recursive");
    drop(recursive);

    let forward_setup = Setup::new();
    forward_setup.write("feeds/name-servers.rpz", RPZ);
    let admin = format!(
        "operator_token_sha256 = \"{}\"",
        crate::hitlog::sha(crate::hitlog::TOKEN_OPERATOR)
    );
    let config = forward_setup.config_with_admin(
        &admin,
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 3000\n\
         [blocklist]\npolicy_ttl = 300\n",
            plain.addr
        ),
    );
    let forward = Server::start(&config);
    let (n, diff, seen) = compare(&forward, &unbound, "forward");
    cases += n;
    differences.extend(diff);
    deliberate_seen.extend(seen);

    assert!(cases >= 60, "the table has {cases} cases");
    assert!(
        differences.is_empty(),
        "{} of {cases} cases differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(
        deliberate_seen.len(),
        DELIBERATE.len() * TYPES.len(),
        "every deliberate difference still differs, for every type"
    );
    // The triggers did act, and each hit names its trigger.
    let blocked = ask(forward.addr, "www.bad.nst.", RecordType::A).unwrap();
    assert_eq!(blocked.metadata.response_code, ResponseCode::NXDomain);
    crate::harness::wait_for(
        "the name-server hits written",
        Duration::from_secs(20),
        || {
            let out = crate::harness::hit_records(&config);
            let hit = |stage: &str, matched: &str, qname: &str| {
                out.lines().any(|l| {
                    l.contains(&format!("\"stage\":\"{stage}\""))
                        && l.contains(&format!("\"matched\":\"{matched}\""))
                        && l.contains(&format!("\"qname\":\"{qname}\""))
                })
            };
            hit("nsdname", "ns1.evil-dns.nst", "www.bad.nst")
                && hit("nsdname", "evilhost.nst", "www.wild.nst")
                && hit("nsip", "127.0.55.4", "www.ipbad.nst")
                && hit("nsip", "127.0.55.6/31", "www.netbad.nst")
        },
    );
    // `portcullis check` names the trigger for the operator.
    let out = std::process::Command::new(crate::harness::BIN)
        .args([
            "check",
            "www.wild.nst",
            "--client",
            "127.0.0.1",
            "--resolve",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--admin")
        .arg(forward.admin().to_string())
        .env("PORTCULLIS_TOKEN", crate::hitlog::TOKEN_OPERATOR)
        .output()
        .expect("run portcullis check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("nxdomain at nsdname: evilhost.nst (feed name-servers.rpz"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
