//! The full list from feed to blocklist: parse, sort, merge, the automata
//! and the negative filters, as `serve` and `compile` do it (the goal is
//! under 2 s). Prints the size per name: automata, filters and metadata.
//!
//! The list is threat-domains.tsv.gz (1,062,258 names) from the folder
//! `PORTCULLIS_BENCH_DATA` names (default ../shared/data), or a generated
//! list of the same size when that file is absent.
//!
//! `cargo bench --bench compile`

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::blocklist;
use portcullis::config::Config;

fn setup(work: &Path) -> Config {
    let feeds = work.join("feeds");
    std::fs::create_dir_all(&feeds).expect("feeds dir");
    let shared = std::env::var_os("PORTCULLIS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
        .join("threat-domains.tsv.gz");
    if shared.exists() {
        std::os::unix::fs::symlink(&shared, feeds.join("threat-domains.tsv.gz")).expect("link");
    } else {
        eprintln!("no shared threat list: generating a list of the same size");
        let names: Vec<String> = (0..1_062_258)
            .map(|i| format!("h{i:x}.d{}.example{}", i % 9973, i % 7))
            .collect();
        std::fs::write(feeds.join("generated.txt"), names.join("\n")).expect("write list");
    }
    let toml = "[blocklist]\nfeeds_dir = \"feeds\"\nstate_dir = \"state\"\n";
    Config::from_str(toml, &work.join("portcullis.toml")).expect("config")
}

fn bench(c: &mut Criterion) {
    let work = tempfile::tempdir().expect("temp dir");
    let config = setup(work.path());
    let (list, report) = blocklist::compile(&config).expect("compile");
    let names = report.entries;
    let bytes = list.fst_bytes() + list.filter_bytes();
    eprintln!(
        "{names} names: automata {} bytes + filters {} bytes = {:.1} bytes per name",
        list.fst_bytes(),
        list.filter_bytes(),
        bytes as f64 / names as f64
    );
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(names as u64));
    g.bench_function("full_list", |b| {
        b.iter(|| blocklist::compile(&config).expect("compile").0.entries())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
