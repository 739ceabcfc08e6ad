//! The blocklist lookup against the full list: what one query costs.
//!
//! The list is the 1,062,258-name threat list from ../shared/data,
//! compiled by the real compiler (or, without ../shared, a generated list
//! of the same size). Groups: misses (popular FQDNs that are not listed),
//! hits (listed names), deep (four labels below a listed name) and a 99:1
//! mix of misses and hits. Each group runs our lookup (the labels of a
//! parsed hickory name read in place, as the handler does: hashed once
//! for every layer's filter, then one walk per layer the filter lets
//! through) and, as the baseline, a `HashSet<String>` probed with every
//! suffix of the (already lower-case) name.
//!
//! The `inspect` groups measure what the answer policy adds after
//! resolution, per answer: following the CNAME chain and looking up each
//! target, and looking up each A/AAAA address in the answer-IP policy
//! (here the 173,000 addresses of threat-ips.tsv.gz, opted in).
//!
//! `cargo bench --bench lookup` (`PORTCULLIS_BENCH_DATA=DIR` reads the
//! data from DIR instead of ../shared/data; `LOOKUP_BENCH_LIST=FILE` takes
//! the listed names from a plain or TSV list instead of the threat list,
//! such as the 5 M and 10 M lists `scripts/bench/grow-list.py` writes)

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record};
use portcullis::blocklist::{self, Blocklist};
use portcullis::config::Config;
use portcullis::server::inspect;

const QUERIES: usize = 10_000;

/// ../shared/data, or the folder `PORTCULLIS_BENCH_DATA` names (the
/// device kit's copy, where the bench binary runs on another machine).
fn data() -> Option<PathBuf> {
    let dir = std::env::var_os("PORTCULLIS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    dir.join("threat-domains.tsv.gz").exists().then_some(dir)
}

/// The listed names and a compiled list of them.
fn list(work: &Path) -> (Vec<String>, Blocklist) {
    let feeds = work.join("feeds");
    std::fs::create_dir_all(&feeds).expect("feeds dir");
    let grown = std::env::var_os("LOOKUP_BENCH_LIST").map(PathBuf::from);
    let names: Vec<String> = match (grown, data()) {
        (Some(file), _) => {
            let name = file.file_name().expect("LOOKUP_BENCH_LIST names a file");
            let _ = std::os::unix::fs::symlink(&file, feeds.join(name));
            std::fs::read_to_string(&file)
                .expect("read LOOKUP_BENCH_LIST")
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split('\t').next())
                .map(str::to_ascii_lowercase)
                .collect()
        }
        (None, Some(dir)) => {
            let file = dir.join("threat-domains.tsv.gz");
            let _ = std::os::unix::fs::symlink(&file, feeds.join("threat-domains.tsv.gz"));
            let mut text = String::new();
            use std::io::Read;
            flate2::read::GzDecoder::new(std::fs::File::open(&file).expect("open list"))
                .read_to_string(&mut text)
                .expect("read list");
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split('\t').next())
                .map(str::to_ascii_lowercase)
                .collect()
        }
        (None, None) => {
            eprintln!("../shared/data is absent: generating a list of the same size");
            let names: Vec<String> = (0..1_062_258)
                .map(|i| format!("h{i:x}.d{}.example{}", i % 9973, i % 7))
                .collect();
            std::fs::write(feeds.join("generated.txt"), names.join("\n")).expect("write list");
            names
        }
    };
    match data() {
        Some(dir) => {
            let ips = dir.join("threat-ips.tsv.gz");
            let _ = std::os::unix::fs::symlink(&ips, feeds.join("threat-ips.tsv.gz"));
        }
        None => {
            let ips: Vec<String> = (0..173_212u32)
                .map(|i| std::net::Ipv4Addr::from(0x0b00_0000 + i * 97).to_string())
                .collect();
            std::fs::write(feeds.join("threat-ips.tsv.gz"), ips.join("\n")).expect("write ips");
        }
    }
    let toml = "[blocklist]\nfeeds_dir = \"feeds\"\nstate_dir = \"state\"\n\
                max_feed_entries = 20000000\nmax_feed_mib = 2048\n\
                [[feed]]\nfile = \"threat-ips.tsv.gz\"\nanswer_ip = true\n";
    let config = Config::from_str(toml, &work.join("portcullis.toml")).expect("config");
    let (list, report) = blocklist::compile(&config).expect("compile");
    eprintln!(
        "{} names compiled into {} bytes, {} addresses in the answer-IP policy",
        report.entries,
        list.fst_bytes(),
        list.addresses()
    );
    (names, list)
}

fn misses(list: &Blocklist) -> Vec<String> {
    let text = match data() {
        Some(dir) => std::fs::read_to_string(dir.join("popular-fqdns.txt")).unwrap_or_default(),
        None => (0..QUERIES)
            .map(|i| format!("www{i}.popular{}.example.org\n", i % 97))
            .collect(),
    };
    text.lines()
        .map(str::to_ascii_lowercase)
        .filter(|n| !n.is_empty() && list.lookup_str(n).is_none())
        .take(QUERIES)
        .collect()
}

/// Our lookup, as the handler does it.
fn ours(list: &Blocklist, name: &Name) -> bool {
    inspect::lookup_name(list, name).is_some()
}

/// The baseline: every suffix at a label boundary in a hash set.
fn baseline(set: &HashSet<String>, name: &str) -> bool {
    let mut rest = name;
    loop {
        if set.contains(rest) {
            return true;
        }
        match rest.split_once('.') {
            Some((_, tail)) => rest = tail,
            None => return false,
        }
    }
}

fn bench(c: &mut Criterion) {
    let work = tempfile::tempdir().expect("temp dir");
    let (names, list) = list(work.path());
    let set: HashSet<String> = names.iter().cloned().collect();
    let mut rng = fastrand::Rng::with_seed(9);
    let hits: Vec<String> = (0..QUERIES)
        .map(|_| names[rng.usize(0..names.len())].clone())
        .collect();
    let deep: Vec<String> = hits.iter().map(|n| format!("a.b.c.d.{n}")).collect();
    let misses = misses(&list);
    let mix: Vec<String> = (0..QUERIES)
        .map(|i| {
            if i % 100 == 0 {
                hits[i].clone()
            } else {
                misses[i % misses.len()].clone()
            }
        })
        .collect();
    for (group, queries, expect_hits) in [
        ("misses", &misses, 0.0),
        ("hits", &hits, 1.0),
        ("deep", &deep, 1.0),
        ("mix_99_1", &mix, 0.01),
    ] {
        // Names as a client would send them: normalised (IDN to A-labels)
        // and within DNS lengths; the rare feed line that is neither is
        // left out of both sides.
        let queries: Vec<String> = queries
            .iter()
            .filter_map(|q| portcullis::domain::normalize(q).ok())
            .filter(|q| Name::from_ascii(q).is_ok())
            .collect();
        let parsed: Vec<Name> = queries
            .iter()
            .filter_map(|q| Name::from_ascii(q).ok())
            .collect();
        let found = parsed.iter().filter(|n| ours(&list, n)).count();
        let found_baseline = queries.iter().filter(|n| baseline(&set, n)).count();
        eprintln!(
            "{group}: {} queries, {found} found (baseline {found_baseline}, expected share {expect_hits})",
            queries.len()
        );
        let mut g = c.benchmark_group(format!("lookup/{group}"));
        g.throughput(Throughput::Elements(queries.len() as u64));
        g.bench_function("fst", |b| {
            b.iter(|| parsed.iter().filter(|n| ours(&list, black_box(n))).count())
        });
        g.bench_function("hashset_suffixes", |b| {
            b.iter(|| {
                queries
                    .iter()
                    .filter(|n| baseline(&set, black_box(n)))
                    .count()
            })
        });
        g.finish();
    }
    bench_inspect(c, &list, &hits, &misses);
}

/// What the handler does with an answer after resolution: follow the
/// CNAME chain, look up each target, then look up each address.
fn inspect_answer(list: &Blocklist, qname: &Name, answers: &[Record]) -> bool {
    for (_, target) in inspect::cname_chain(qname, answers) {
        if inspect::lookup_name(list, target).is_some() {
            return true;
        }
    }
    if list.addresses() == 0 {
        return false;
    }
    inspect::addresses(answers).any(|(ip, _)| list.lookup_address(ip).is_some())
}

/// A query name and the answer records it got.
type Answer = (Name, Vec<Record>);

fn bench_inspect(c: &mut Criterion, list: &Blocklist, hits: &[String], misses: &[String]) {
    let name = |s: &str| Name::from_ascii(format!("{s}.")).ok();
    let a = |owner: &Name, ip: [u8; 4]| {
        Record::from_rdata(
            owner.clone(),
            60,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    };
    let cname = |owner: &Name, target: &Name| {
        Record::from_rdata(owner.clone(), 60, RData::CNAME(CNAME(target.clone())))
    };
    let clean_ip = [192, 0, 2, 1];
    let listed_ip: [u8; 4] = match data() {
        Some(_) => [95, 129, 236, 208],
        None => [11, 0, 0, 0],
    };
    let mut cases: Vec<(&str, Vec<Answer>, bool)> = Vec::new();
    let pairs: Vec<(Name, Name)> = misses
        .iter()
        .zip(misses.iter().skip(1))
        .filter_map(|(q, t)| Some((name(q)?, name(t)?)))
        .take(QUERIES)
        .collect();
    cases.push((
        "no_cname",
        pairs
            .iter()
            .map(|(q, _)| (q.clone(), vec![a(q, clean_ip)]))
            .collect(),
        false,
    ));
    cases.push((
        "cname_clean",
        pairs
            .iter()
            .map(|(q, t)| (q.clone(), vec![cname(q, t), a(t, clean_ip)]))
            .collect(),
        false,
    ));
    cases.push((
        "cname_listed_target",
        pairs
            .iter()
            .zip(hits.iter().filter_map(|h| name(h)))
            .map(|((q, _), t)| (q.clone(), vec![cname(q, &t), a(&t, clean_ip)]))
            .collect(),
        true,
    ));
    cases.push((
        "listed_address",
        pairs
            .iter()
            .map(|(q, _)| (q.clone(), vec![a(q, listed_ip)]))
            .collect(),
        true,
    ));
    for (group, answers, blocked) in cases {
        let found = answers
            .iter()
            .filter(|(q, r)| inspect_answer(list, q, r))
            .count();
        eprintln!(
            "inspect/{group}: {} answers, {found} blocked",
            answers.len()
        );
        assert_eq!(found == answers.len(), blocked, "{group}");
        let mut g = c.benchmark_group(format!("inspect/{group}"));
        g.throughput(Throughput::Elements(answers.len() as u64));
        g.bench_function("answer", |b| {
            b.iter(|| {
                answers
                    .iter()
                    .filter(|(q, r)| inspect_answer(list, black_box(q), black_box(r)))
                    .count()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
