//! The blocklist lookup against the full list: what one query costs.
//!
//! The list is the 1,062,258-name threat list from ../shared/data,
//! compiled by the real compiler (or, without ../shared, a generated list
//! of the same size). Groups: misses (popular FQDNs that are not listed),
//! hits (listed names), deep (four labels below a listed name) and a 99:1
//! mix of misses and hits. Each group runs our lookup (labels taken from a
//! parsed wire name onto the stack, as the handler does, then one walk
//! per layer) and, as the baseline, a `HashSet<String>` probed with every
//! suffix of the (already lower-case) name.
//!
//! `cargo bench --bench lookup`

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::rr::Name;
use portcullis::blocklist::{self, Blocklist};
use portcullis::config::Config;

const QUERIES: usize = 10_000;

fn data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("threat-domains.tsv.gz").exists().then_some(dir)
}

/// The listed names and a compiled list of them.
fn list(work: &Path) -> (Vec<String>, Blocklist) {
    let feeds = work.join("feeds");
    std::fs::create_dir_all(&feeds).expect("feeds dir");
    let names: Vec<String> = match data() {
        Some(dir) => {
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
        None => {
            eprintln!("../shared/data is absent: generating a list of the same size");
            let names: Vec<String> = (0..1_062_258)
                .map(|i| format!("h{i:x}.d{}.example{}", i % 9973, i % 7))
                .collect();
            std::fs::write(feeds.join("generated.txt"), names.join("\n")).expect("write list");
            names
        }
    };
    let toml = "[blocklist]\nfeeds_dir = \"feeds\"\nstate_dir = \"state\"\n";
    let config = Config::from_str(toml, &work.join("portcullis.toml")).expect("config");
    let (list, report) = blocklist::compile(&config).expect("compile");
    eprintln!(
        "{} names compiled into {} bytes",
        report.entries,
        list.fst_bytes()
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
    let mut labels: [&[u8]; 128] = [&[]; 128];
    let mut n = 0;
    for label in name.iter().take(labels.len()) {
        labels[n] = label;
        n += 1;
    }
    list.lookup(labels[..n].iter().rev().copied()).is_some()
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
