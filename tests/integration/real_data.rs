//! The national-scale list: all 1,062,258 threat domains from the data
//! folder that `PORTCULLIS_BENCH_DATA` names (by default `shared/data`
//! beside the checkout, as the benches use), served by the real binary.
//! Skipped with a message when that folder is absent (the always-run
//! paths use small fixtures).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, Transport, a_records, query};
use crate::upstream::Authority;

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTCULLIS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join("threat-domains.tsv.gz").is_file() && dir.join("popular-fqdns.txt").is_file() {
        Some(dir)
    } else {
        eprintln!("SKIPPED real-data test: {} not found", dir.display());
        None
    }
}

/// Every listed name in the gzip TSV, lower case, read independently of
/// the parsers under test.
fn listed_names(path: &std::path::Path) -> Vec<String> {
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap());
    BufReader::new(gz)
        .lines()
        .map(|l| l.unwrap())
        .filter_map(|l| l.split('\t').next().map(|d| d.trim().to_ascii_lowercase()))
        .filter(|d| !d.is_empty() && !d.starts_with('#'))
        .collect()
}

#[test]
fn full_threat_list_blocks_listed_names_and_passes_popular_ones() {
    let Some(data) = shared_data() else { return };
    let threats = data.join("threat-domains.tsv.gz");
    let listed: HashSet<String> = listed_names(&threats).into_iter().collect();
    assert!(listed.len() > 1_000_000, "the full list: {}", listed.len());

    // A wildcard root: every name that reaches the upstream resolves.
    let root = "$TTL 60\n. IN SOA ns. host. 1 3600 600 86400 60\n. IN NS ns.\nns. IN A 127.0.0.1\n*. IN A 192.0.2.1\n*.*. IN A 192.0.2.1\n";
    let auth = Authority::start("127.0.0.1:0".parse().unwrap(), &[(".", root.to_owned())]);
    let setup = Setup::new();
    std::os::unix::fs::symlink(&threats, setup.path("feeds/threat-domains.tsv.gz")).unwrap();
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\n",
        auth.addr
    ));
    let server = Server::start(&config);

    // A sample of listed names (every 500th, deterministic) and a child of each.
    let mut sample: Vec<&String> = listed.iter().collect();
    sample.sort();
    for name in sample.iter().step_by(500) {
        if hickory_proto::rr::Name::from_ascii(name.as_str()).is_err() {
            continue;
        }
        let reply = query(
            server.addr,
            &format!("{name}."),
            RecordType::A,
            Transport::Udp,
            false,
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name} is listed"
        );
        let reply = query(
            server.addr,
            &format!("x1.{name}."),
            RecordType::A,
            Transport::Udp,
            false,
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "x1.{name} is below a listed name"
        );
    }

    // Every popular name resolves unless it is at or under a listed name.
    let popular = std::fs::read_to_string(data.join("popular-fqdns.txt")).unwrap();
    let (mut resolved, mut blocked) = (0, 0);
    for fqdn in popular
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let fqdn = fqdn.to_ascii_lowercase();
        if hickory_proto::rr::Name::from_ascii(&fqdn).is_err() {
            continue;
        }
        // Answered by the resolver itself, never forwarded: discovery
        // (RFC 9462) and the browsers' DoH canary (NXDOMAIN, by default).
        if fqdn == "resolver.arpa"
            || fqdn.ends_with(".resolver.arpa")
            || fqdn == "use-application-dns.net"
        {
            continue;
        }
        let under_listed =
            std::iter::successors(Some(fqdn.as_str()), |n| n.split_once('.').map(|(_, r)| r))
                .any(|suffix| listed.contains(suffix));
        let reply = query(
            server.addr,
            &format!("{fqdn}."),
            RecordType::A,
            Transport::Udp,
            false,
        );
        if under_listed {
            blocked += 1;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NXDomain,
                "{fqdn} is under a listed name"
            );
        } else {
            resolved += 1;
            assert_eq!(
                a_records(&reply),
                ["192.0.2.1"],
                "{fqdn} is not listed and must resolve"
            );
        }
    }
    assert!(
        resolved > 15_000,
        "most popular names resolve ({resolved} resolved, {blocked} blocked)"
    );
    eprintln!("real data: {resolved} popular names resolved, {blocked} blocked as listed");
}

#[test]
fn all_shared_stix_bundles_parse_with_the_expected_counts() {
    use portcullis::formats::{self, Format};
    let Some(data) = shared_data() else { return };
    // Domain indicators per bundle, from reading the bundles independently.
    let expected_domains = [
        ("api-hammering-technique", 0),
        ("blackcat-ransomware", 0),
        ("cloaked-ursa", 18),
        ("conti-ransomware", 0),
        ("crawling-taurus", 0),
        ("darkside-ransomware", 4),
        ("egregor-ransomware", 0),
        ("ekans-ransomware", 1),
        ("emotet", 3),
        ("gobruteforcer", 1),
        ("mulelibra", 27),
        ("owassrf-vulnerability-exploitation", 0),
        ("popping-eagle", 2),
        ("trigona-ransomware", 4),
        ("vicesociety", 0),
        ("zero-day-microsoft-exchange-vulnerabilities", 0),
    ];
    let mut objects = 0;
    let mut skipped = std::collections::BTreeMap::new();
    let mut names = HashSet::new();
    let (mut loaded, mut revoked, mut expired, mut addresses) = (0, 0, 0, 0);
    for (stem, domains) in expected_domains {
        let path = data.join("stix").join(format!("{stem}.json"));
        assert_eq!(formats::detect(&path).unwrap(), Format::Stix, "{stem}");
        let mut ids = Vec::new();
        let mut bundle_addresses = 0;
        let report =
            formats::parse_file(&path, Format::Stix, formats::Bounds::default(), &mut |i| {
                assert!(
                    i.detail.is_some_and(|d| d.starts_with("indicator--")),
                    "the STIX id is kept"
                );
                assert_eq!(i.category, Some("malicious-activity"));
                ids.push(i.detail.map(str::to_owned));
                match i.net {
                    Some(_) => bundle_addresses += 1,
                    None => {
                        names.insert(i.name);
                    }
                }
            })
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(report.loaded - bundle_addresses, domains, "{stem}");
        addresses += bundle_addresses;
        assert_eq!(report.rejected, 0, "{stem}: {:?}", report.first_rejects);
        objects += report.lines;
        loaded += report.loaded;
        revoked += report.revoked;
        expired += report.expired;
        for (kind, n) in report.skipped {
            *skipped.entry(kind).or_insert(0) += n;
        }
    }
    assert_eq!(objects, 7088);
    assert_eq!(loaded, 60 + 56, "60 domains and 56 addresses");
    assert_eq!(addresses, 56, "ipv4-addr/ipv6-addr indicators");
    assert_eq!(names.len(), 53, "distinct domains");
    assert_eq!((revoked, expired), (0, 0));
    let skipped: Vec<(String, usize)> = skipped.into_iter().collect();
    assert_eq!(
        skipped,
        [
            ("and".to_owned(), 6),
            ("directory".to_owned(), 2),
            ("email-addr".to_owned(), 4),
            ("file".to_owned(), 28),
            ("file-hash".to_owned(), 1015),
            ("mutex".to_owned(), 1),
            ("process".to_owned(), 35),
            ("url-with-path".to_owned(), 165),
            ("windows-registry-key".to_owned(), 2),
        ]
    );
}

#[test]
fn restart_serves_the_full_list_from_the_snapshot_before_parsing_feeds() {
    let Some(data) = shared_data() else { return };
    let setup = Setup::new();
    std::os::unix::fs::symlink(
        data.join("threat-domains.tsv.gz"),
        setup.path("feeds/threat-domains.tsv.gz"),
    )
    .unwrap();
    let config = setup.config("[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.0.1:9\"]\n");
    let server = Server::start(&config);
    let snapshot = setup.path("state/blocklist.snapshot");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !snapshot.exists() {
        assert!(std::time::Instant::now() < deadline, "snapshot written");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(server.terminate().success());

    let server = Server::start(&config);
    assert!(
        server.log_contains("blocklist loaded from the snapshot"),
        "{}",
        server.log()
    );
    assert!(
        server.log_contains("entries=1062258"),
        "the full list: {}",
        server.log()
    );
    assert!(
        !server.log_contains("feed loaded"),
        "no feed was parsed before serving:\n{}",
        server.log()
    );
    // Every 1000th listed name (sorted) answers NXDOMAIN with EDE 15.
    let mut listed = listed_names(&data.join("threat-domains.tsv.gz"));
    listed.sort();
    for name in listed.iter().step_by(1000) {
        if hickory_proto::rr::Name::from_ascii(name.as_str()).is_err() {
            continue;
        }
        let reply = query(
            server.addr,
            &format!("{name}."),
            RecordType::A,
            Transport::Udp,
            true,
        );
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert_eq!(crate::harness::ede(&reply).map(|e| e.0), Some(15), "{name}");
    }
}
