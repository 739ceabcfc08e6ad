//! The hit store at scale: ten million records, then the report and the
//! log listing over them.
//!
//! The data set (deterministic, built once into
//! `target/bench-hitlog/hits.sqlite` and reused; delete it to reload):
//! 30 days, 100 organisations with 80 clients each. Every client beacons
//! to 1-3 of 2,000 malware names about 20 times a day (an infected
//! machine calling its C2): about 9.5 million records. On top, 500,000
//! one-off lookups of 200,000 phishing names by random clients. Building
//! it goes through `Store::insert` in the writer's batch size, so the
//! build rate is the writer's sustained rate; it is printed.
//!
//! `cargo bench --bench hitlog`; `HITLOG_BENCH_WRITER_ONLY=1` stops after
//! the writer's two bursts (first pass and repeated names), before the
//! data set is built.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{Tlp, WhereSighted};
use portcullis::hitlog::store::{Filter, SightingCursor, SightingView, Store};
use portcullis::hitlog::writer::{MAX_BATCH, ROLLUP_CHUNK, ROLLUP_MAX_PENDING};
use portcullis::hitlog::{Hit, Stage, Transport};
use portcullis::share::{Sharer, stix};

const DAY: i64 = 86_400_000;
/// Days of data; `HITLOG_BENCH_DAYS=3` builds a tenth for a quick look.
fn days() -> i64 {
    std::env::var("HITLOG_BENCH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(30)
}
const ORGS: u32 = 100;
const CLIENTS_PER_ORG: u32 = 80;
const BEACONS_PER_DAY: u32 = 20;
const ONE_OFFS: usize = 500_000;

fn path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target
        .join("bench-hitlog")
        .join(format!("hits-{}d.sqlite", days()))
}

fn hit(ts: i64, org: u32, client: u32, matched: String, category: &str, feed: &str) -> Hit {
    Hit {
        id: None,
        ts,
        org: Some(format!("org-{org:03}")),
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            10,
            org as u8,
            (client / 250) as u8,
            (client % 250) as u8 + 1,
        )),
        transport: Transport::Udp,
        qname: format!("www.{matched}"),
        qtype: "A".into(),
        stage: Stage::Qname,
        matched,
        feed: feed.into(),
        category: category.into(),
        indicator: None,
        action: "nxdomain".into(),
        repeats: 1,
        last_ts: None,
        node: None,
    }
}

/// Build the data set unless it is there; returns (path, first day's ms).
fn dataset() -> (PathBuf, i64) {
    let path = path();
    let start = 1_790_000_000_000 / DAY * DAY; // a fixed UTC midnight
    // A data set an older schema wrote is brought up to date the way the
    // writer does it.
    if path.exists() {
        let _ = Store::open_writer(&path, None);
    }
    if let Ok(store) = Store::open_reader(&path)
        && store.count().unwrap_or(0) >= days() as u64 * 330_000
    {
        return (path, start);
    }
    let _ = std::fs::remove_file(&path);
    let mut store = Store::open_writer(&path, None).expect("create the bench database");
    let mut rng = fastrand::Rng::with_seed(7);
    // Each client's beacon names.
    let infections: Vec<(u32, u32, Vec<u32>)> = (0..ORGS)
        .flat_map(|o| (0..CLIENTS_PER_ORG).map(move |c| (o, c)))
        .map(|(o, c)| {
            let k = 1 + (o + c) % 3;
            (o, c, (0..k).map(|_| rng.u32(0..2000)).collect())
        })
        .collect();
    let feeds = ["urlhaus.txt", "threatfox.tsv", "partner-stix.json"];
    let built = Instant::now();
    let mut total = 0usize;
    let mut pending = 0u64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flush = |batch: &mut Vec<Hit>, store: &mut Store| {
        store.insert(batch).expect("insert");
        total += batch.len();
        pending += batch.len() as u64;
        batch.clear();
        // Roll up as a busy writer does: when the backlog is at its bound.
        if pending >= ROLLUP_MAX_PENDING {
            store.roll_up().expect("roll up");
            pending = 0;
        }
    };
    for day in 0..days() {
        let mut today = Vec::new();
        for (o, c, names) in &infections {
            for n in names {
                for _ in 0..BEACONS_PER_DAY {
                    today.push((rng.i64(0..DAY), *o, *c, Some(*n)));
                }
            }
        }
        for _ in 0..ONE_OFFS / 30 {
            today.push((
                rng.i64(0..DAY),
                rng.u32(0..ORGS),
                rng.u32(0..CLIENTS_PER_ORG),
                None,
            ));
        }
        today.sort_unstable_by_key(|t| t.0);
        for (t, o, c, n) in today {
            let ts = start + day * DAY + t;
            let h = match n {
                Some(n) => hit(
                    ts,
                    o,
                    c,
                    format!("c2-{n}.malware{}.example", n % 97),
                    "malware",
                    feeds[(n % 3) as usize],
                ),
                None => hit(
                    ts,
                    o,
                    c,
                    format!("login-{}.phish.example", rng.u32(0..200_000)),
                    "phishing",
                    "phishtank.txt",
                ),
            };
            batch.push(h);
            if batch.len() == MAX_BATCH {
                flush(&mut batch, &mut store);
            }
        }
    }
    flush(&mut batch, &mut store);
    store.roll_up().expect("roll up");
    let secs = built.elapsed().as_secs_f64();
    eprintln!(
        "built {total} records in {secs:.1} s: {:.0} records/s through Store::insert (batches of {MAX_BATCH})",
        total as f64 / secs
    );
    (path, start)
}

/// The writer's rate on a first pass over a threat list: every record a
/// new listed name (the blocked-first-pass load of
/// `scripts/bench/peers.sh`), in full batches, with the roll-up as the
/// writer runs it. Printed, not sampled: the store grows as it runs,
/// which is the point.
fn first_pass() {
    const RECORDS: usize = 400_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open_writer(&dir.path().join("hits.sqlite"), None).expect("create");
    let mut rng = fastrand::Rng::with_seed(11);
    let start = 1_790_000_000_000i64;
    let started = Instant::now();
    let (mut inserting, mut rolling_up) = (Duration::ZERO, Duration::ZERO);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    for i in 0..RECORDS {
        let name = format!("{:012x}.bad{}.example", rng.u64(..), i % 1000);
        batch.push(hit(
            start + i as i64 / 33,
            (i % 7) as u32,
            (i % 80) as u32,
            name,
            "malware",
            "threat-domains.tsv",
        ));
        if batch.len() == MAX_BATCH || i + 1 == RECORDS {
            let t = Instant::now();
            store.insert(&batch).expect("insert");
            inserting += t.elapsed();
            batch.clear();
        }
        // Under a steady burst the writer rolls up when the backlog
        // reaches its bound (or the burst ends).
        if (i + 1).is_multiple_of(ROLLUP_MAX_PENDING as usize) || i + 1 == RECORDS {
            let t = Instant::now();
            store.roll_up_at_most(u64::MAX).expect("roll up");
            rolling_up += t.elapsed();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // The sightings roll-up waits for the burst to end, then goes in the
    // writer's chunks.
    let t = Instant::now();
    while store
        .roll_up_sightings_at_most(ROLLUP_CHUNK)
        .expect("sightings roll up")
        == ROLLUP_CHUNK
    {}
    let sightings = t.elapsed();
    store.checkpoint().expect("checkpoint");
    // The records and the three roll-ups, as they would sit on disk.
    let bytes = std::fs::metadata(dir.path().join("hits.sqlite")).map_or(0, |m| m.len());
    eprintln!(
        "first pass: {RECORDS} records, each a new name, in {secs:.2} s: {:.0} records/s \
         ({:.1} µs a record inserting, {:.1} µs rolling up); then the sightings roll-up, \
         {:.1} µs a record; {:.0} MiB database",
        RECORDS as f64 / secs,
        inserting.as_secs_f64() * 1e6 / RECORDS as f64,
        rolling_up.as_secs_f64() * 1e6 / RECORDS as f64,
        sightings.as_secs_f64() * 1e6 / RECORDS as f64,
        bytes as f64 / 1048576.0,
    );
}

/// The writer's rate on repeated blocked queries: 100,000 listed names
/// asked four times over by one client, as `scripts/bench/peers.sh`'s
/// blocked workload asks them. Each 20,000-record roll-up (the writer's
/// chunk) holds 20,000 distinct names, so it adds to existing rows rather
/// than new ones. Printed, like the first pass.
fn repeated() {
    const NAMES: usize = 100_000;
    const ROUNDS: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open_writer(&dir.path().join("hits.sqlite"), None).expect("create");
    let mut rng = fastrand::Rng::with_seed(13);
    let names: Vec<String> = (0..NAMES)
        .map(|i| format!("{:012x}.bad{}.example", rng.u64(..), i % 1000))
        .collect();
    let start = 1_790_000_000_000i64;
    let (mut inserting, mut rolling_up) = (Duration::ZERO, Duration::ZERO);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut pending = 0u64;
    for i in 0..NAMES * ROUNDS {
        let name = names[i % NAMES].clone();
        batch.push(hit(
            start + i as i64 / 100,
            1,
            1,
            name,
            "malware",
            "threat-domains.tsv",
        ));
        if batch.len() == MAX_BATCH || i + 1 == NAMES * ROUNDS {
            let t = Instant::now();
            store.insert(&batch).expect("insert");
            inserting += t.elapsed();
            pending += batch.len() as u64;
            batch.clear();
        }
        if pending >= ROLLUP_MAX_PENDING || i + 1 == NAMES * ROUNDS {
            let t = Instant::now();
            while store.roll_up_at_most(ROLLUP_CHUNK).expect("roll up") == ROLLUP_CHUNK {}
            rolling_up += t.elapsed();
            pending = 0;
        }
    }
    let records = (NAMES * ROUNDS) as f64;
    let t = Instant::now();
    while store
        .roll_up_sightings_at_most(ROLLUP_CHUNK)
        .expect("sightings roll up")
        == ROLLUP_CHUNK
    {}
    let sightings = t.elapsed();
    eprintln!(
        "repeated: {NAMES} names, {ROUNDS} times: {:.1} µs a record inserting, {:.1} µs rolling up; \
         then the sightings roll-up, {:.1} µs a record",
        inserting.as_secs_f64() * 1e6 / records,
        rolling_up.as_secs_f64() * 1e6 / records,
        sightings.as_secs_f64() * 1e6 / records,
    );
}

fn bench(c: &mut Criterion) {
    first_pass();
    repeated();
    if std::env::var_os("HITLOG_BENCH_WRITER_ONLY").is_some() {
        std::process::exit(0);
    }
    let (path, start) = dataset();
    let store = Store::open_reader(&path).expect("open");
    let records = store.count().expect("count");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{records} records, {:.0} MiB database",
        bytes as f64 / 1048576.0
    );
    // The default report: whole days, up to "now" just after the last
    // record, so all from the roll-up.
    let until = start + days() * DAY + 1;
    let since = start;
    let all = Filter::default();
    let one = Filter {
        org: Some("org-042".into()),
        ..Filter::default()
    };
    let r = store.report(&all, since, until, 20).expect("report");
    eprintln!(
        "operator report: {} hits, {} names, {} clients",
        r.total, r.distinct_names, r.distinct_clients
    );
    let mut group = c.benchmark_group("hitlog");
    group.sample_size(10);
    group.bench_function("report_all_orgs_whole_range", |b| {
        b.iter(|| {
            store
                .report(black_box(&all), since, until, 20)
                .expect("report")
        })
    });
    group.bench_function("report_one_org_whole_range", |b| {
        b.iter(|| {
            store
                .report(black_box(&one), since, until, 20)
                .expect("report")
        })
    });
    // An explicit `--since 24h`: a whole day's raw rows (330,000).
    group.bench_function("report_all_orgs_last_24h", |b| {
        b.iter(|| {
            store
                .report(black_box(&all), until - DAY, until, 20)
                .expect("report")
        })
    });
    group.bench_function("logs_one_org_newest_100", |b| {
        b.iter(|| store.hits(black_box(&one), None, 100).expect("hits"))
    });

    // Sharing: the last day's bundle across organisations (what
    // `portcullis share --since 1d` writes), and one TAXII page of 1,000
    // sightings from the middle of the collection.
    let sharer = Sharer::new(
        "bench",
        Tlp::Amber,
        WhereSighted::Organisation,
        (0..ORGS).map(|o| (format!("org-{o:03}"), format!("Organisation {o}"))),
    );
    let bundle = |view: SightingView<'_>, since: i64| {
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .sightings(view, after.as_ref(), Some(since), 50_000)
                .expect("sightings");
            rows.extend(page.rows);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let objects: Vec<_> = sharer
            .objects(&rows)
            .into_iter()
            .map(|s| s.object)
            .collect();
        let n = objects.len();
        (
            rows.len(),
            n,
            serde_json::to_vec(&stix::bundle(objects, 0))
                .expect("json")
                .len(),
        )
    };
    let day_start = start + (days() - 1) * DAY;
    let (rows, objects, bytes) = bundle(SightingView::EachOrg, day_start);
    eprintln!(
        "the last day's bundle: {rows} sightings, {objects} objects, {:.1} MiB of JSON",
        bytes as f64 / 1048576.0
    );
    let (rows, objects, _) = bundle(SightingView::Anonymous, day_start);
    eprintln!("anonymous: {rows} sightings, {objects} objects");
    group.bench_function("share_bundle_last_day_each_org", |b| {
        b.iter(|| bundle(black_box(SightingView::EachOrg), day_start))
    });
    group.bench_function("share_bundle_last_day_anonymous", |b| {
        b.iter(|| bundle(black_box(SightingView::Anonymous), day_start))
    });
    let middle = SightingCursor::after_time(start + days() * DAY / 2);
    group.bench_function("taxii_page_1000_each_org", |b| {
        b.iter(|| {
            let page = store
                .sightings(SightingView::EachOrg, Some(black_box(&middle)), None, 1000)
                .expect("sightings");
            let objects: Vec<_> = sharer
                .objects(&page.rows)
                .into_iter()
                .map(|s| s.object)
                .collect();
            serde_json::to_vec(&objects).expect("json")
        })
    });
    group.bench_function("taxii_page_1000_one_org", |b| {
        b.iter(|| {
            let page = store
                .sightings(SightingView::Org("org-042"), None, None, 1000)
                .expect("sightings");
            let objects: Vec<_> = sharer
                .objects(&page.rows)
                .into_iter()
                .map(|s| s.object)
                .collect();
            serde_json::to_vec(&objects).expect("json")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
