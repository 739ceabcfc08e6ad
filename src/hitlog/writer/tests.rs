//! Tests of the writer thread: batching, shutdown and lost records.

use super::*;
use crate::clock::DAY_MS;
use crate::hitlog::AsHitRef;
use crate::hitlog::{Stage, Transport};

pub(super) fn packed(i: i64) -> Box<PackedHit> {
    Box::new(PackedHit::pack(&hit(i).as_hit_ref()))
}

pub(super) fn hit(i: i64) -> Hit {
    Hit {
        id: None,
        ts: now_ms() + i,
        org: Some("a".into()),
        client: "10.0.0.1".parse().unwrap(),
        transport: Transport::Udp,
        qname: format!("n{i}.evil.example"),
        qtype: "A".into(),
        stage: Stage::Qname,
        matched: "evil.example".into(),
        feed: "f".into(),
        category: "malware".into(),
        indicator: None,
        action: "nxdomain".into(),
        repeats: 1,
        last_ts: None,
        node: None,
    }
}

/// Every record written as it is: the tests that count records.
pub(super) const NO_COALESCE: coalesce::Settings = coalesce::Settings {
    after: 0,
    window_ms: 60_000,
};

/// A writer on `database` as `spawn` makes one, without its thread.
pub(super) fn writer(database: &std::path::Path) -> Writer {
    let mut w = Writer {
        settings: Settings {
            database: database.to_path_buf(),
            jsonl: None,
            retention_days: 1,
            capacity: 100,
            max_bytes: None,
            coalesce: NO_COALESCE,
            forwarding: false,
            node: None,
            yield_to_queries: false,
        },
        store: None,
        identity: None,
        last_open: None,
        jsonl: None,
        counters: Arc::new(Counters::default()),
        failures: Failures::default(),
        pending: Pending::default(),
        sightings: Pending::default(),
        coalescer: Coalescer::new(NO_COALESCE),
        evict_logged: None,
    };
    w.open_store();
    w
}

#[test]
fn close_writes_everything_queued_to_the_store_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        database: dir.path().join("hits.sqlite"),
        jsonl: Some(dir.path().join("hits.jsonl")),
        retention_days: 1,
        capacity: 20_000,
        max_bytes: None,
        coalesce: NO_COALESCE,
        forwarding: false,
        node: None,
        yield_to_queries: false,
    };
    let log = spawn(settings.clone()).unwrap();
    let tx = log.sender();
    for i in 0..10_000 {
        tx.send(hit(i).as_hit_ref());
    }
    let counters = Arc::clone(log.counters());
    assert!(log.close(Duration::from_secs(30)));
    assert_eq!(counters.written.load(Ordering::Relaxed), 10_000);
    assert_eq!(counters.dropped(), 0);
    let store = Store::open_reader(&settings.database).unwrap();
    assert_eq!(store.count().unwrap(), 10_000);
    assert_eq!(
        store.rolled_up().unwrap(),
        Some(10_000),
        "close brings the roll-up up to date"
    );
    let lines = std::fs::read_to_string(dir.path().join("hits.jsonl")).unwrap();
    let first: Hit = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(
        first.id,
        Some(1),
        "the stream carries the store's reference"
    );
    assert_eq!(lines.lines().count(), 10_000);
    // After close, nothing can be queued: it is counted, not lost silently.
    tx.send(hit(0).as_hit_ref());
    assert_eq!(counters.dropped(), 1);
}

#[test]
fn the_writer_gathers_only_when_it_is_keeping_up() {
    assert_eq!(gather_for(false, false), GATHER);
    assert_eq!(gather_for(true, false), Duration::ZERO);
    assert_eq!(gather_for(false, true), Duration::ZERO);
}

#[test]
fn a_batch_can_fill_up_whatever_the_channel_size() {
    assert_eq!(batch_limit(65_536), MAX_BATCH);
    assert_eq!(batch_limit(1_000), 500);
    assert_eq!(batch_limit(1), 1);
}

#[test]
fn a_channel_filled_again_and_again_loses_nothing() {
    // A small channel, filled to the brim three times: every record
    // is written, none dropped.
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("hits.sqlite");
    let log = spawn(Settings {
        database: database.clone(),
        jsonl: None,
        retention_days: 1,
        capacity: 1000,
        max_bytes: None,
        coalesce: NO_COALESCE,
        forwarding: false,
        node: None,
        yield_to_queries: false,
    })
    .unwrap();
    let sender = log.sender();
    let counters = Arc::clone(log.counters());
    for round in 0..3u64 {
        for i in 0..1000 {
            sender.send(hit((round * 1000 + i) as i64).as_hit_ref());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while counters.written.load(Ordering::Relaxed) < (round + 1) * 1000 {
            assert!(
                Instant::now() < deadline,
                "the writer did not drain the channel"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(log.close(Duration::from_secs(60)));
    assert_eq!(counters.dropped(), 0);
    assert_eq!(
        Store::open_reader(&database).unwrap().count().unwrap(),
        3000
    );
}

#[test]
fn an_unopenable_database_counts_every_record_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be.
    let database = dir.path().join("hits.sqlite");
    std::fs::create_dir(&database).unwrap();
    let log = spawn(Settings {
        database,
        jsonl: None,
        retention_days: 1,
        capacity: 100,
        max_bytes: None,
        coalesce: NO_COALESCE,
        forwarding: false,
        node: None,
        yield_to_queries: false,
    })
    .unwrap();
    for i in 0..50 {
        log.sender().send(hit(i).as_hit_ref());
    }
    let counters = Arc::clone(log.counters());
    assert!(log.close(Duration::from_secs(30)));
    assert_eq!(counters.written.load(Ordering::Relaxed), 0);
    assert_eq!(counters.dropped(), 50);
    assert!(counters.errors.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_flood_is_written_as_counted_records_and_every_query_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        database: dir.path().join("hits.sqlite"),
        jsonl: Some(dir.path().join("hits.jsonl")),
        retention_days: 1,
        capacity: 20_000,
        max_bytes: None,
        coalesce: coalesce::Settings {
            after: 5,
            window_ms: 60_000,
        },
        forwarding: false,
        node: None,
        yield_to_queries: false,
    };
    let log = spawn(settings.clone()).unwrap();
    let tx = log.sender();
    // One client, 10,000 random names under one listed name.
    for i in 0..10_000 {
        tx.send(hit(i).as_hit_ref());
    }
    let counters = Arc::clone(log.counters());
    // Close writes the run still being folded.
    assert!(log.close(Duration::from_secs(30)));
    let written = counters.written.load(Ordering::Relaxed);
    let coalesced = counters.coalesced.load(Ordering::Relaxed);
    assert_eq!(written, 6, "five as they came and one for the rest");
    assert_eq!(written + coalesced, 10_000);
    assert_eq!(counters.dropped(), 0);
    let store = Store::open_reader(&settings.database).unwrap();
    let page = store
        .hits(&super::super::store::Filter::default(), None, 10)
        .unwrap();
    let newest = &page.hits[0];
    assert_eq!(newest.repeats, 9_995);
    assert_eq!(
        newest.qname, "n5.evil.example",
        "named by the first it folds"
    );
    assert!(newest.last_ts.unwrap() >= newest.ts);
    let report = store
        .report(
            &super::super::store::Filter::default(),
            now_ms() - DAY_MS,
            now_ms() + DAY_MS,
            5,
        )
        .unwrap();
    assert_eq!(report.total, 10_000, "reports count queries, not records");
    // The stream carries the same counted record.
    let lines = std::fs::read_to_string(dir.path().join("hits.jsonl")).unwrap();
    let last: Hit = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!((last.id, last.repeats), (newest.id, 9_995));
}

#[test]
fn at_the_size_cap_the_oldest_rolled_up_records_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("hits.sqlite");
    let mut w = writer(&database);
    let cap = 4u64 << 20;
    w.settings.max_bytes = Some(cap);
    w.store = None;
    w.open_store();
    let mut sent = 0i64;
    // Write and roll up until well past what the cap holds.
    for _ in 0..40 {
        let mut batch: Vec<_> = (sent..sent + 5_000).map(packed).collect();
        sent += 5_000;
        w.write(&mut batch);
        w.roll_up(u64::MAX);
    }
    let written = w.counters.written.load(Ordering::Relaxed);
    let evicted = w.counters.evicted.load(Ordering::Relaxed);
    assert_eq!(written, sent as u64, "nothing lost at the cap");
    assert_eq!(w.counters.dropped(), 0);
    assert!(evicted > 0, "the cap never bit");
    let size = std::fs::metadata(&database).unwrap().len();
    assert!(size <= cap, "{size} bytes over a cap of {cap}");
    let store = Store::open_reader(&database).unwrap();
    assert_eq!(store.count().unwrap(), written - evicted);
    // The newest record is kept; the daily counts keep the evicted ones.
    let page = store
        .hits(&super::super::store::Filter::default(), None, 1)
        .unwrap();
    assert_eq!(page.hits[0].qname, format!("n{}.evil.example", sent - 1));
    let report = store
        .report(
            &super::super::store::Filter::default(),
            now_ms() - DAY_MS,
            now_ms() + DAY_MS,
            5,
        )
        .unwrap();
    assert_eq!(report.total, written);
}

/// Pin this thread to the CPU it is on; threads it starts inherit that.
fn pin_to_one_cpu() {
    #[allow(unsafe_code)]
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read it.
    unsafe {
        let cpu = libc::sched_getcpu().max(0) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn yielding(database: std::path::PathBuf, capacity: usize) -> Settings {
    Settings {
        database,
        jsonl: None,
        retention_days: 1,
        capacity,
        max_bytes: None,
        coalesce: NO_COALESCE,
        forwarding: false,
        node: None,
        yield_to_queries: true,
    }
}

#[test]
fn a_yielding_writer_waits_at_idle_priority_and_still_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = spawn(yielding(dir.path().join("hits.sqlite"), 1000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let tid = loop {
        if let Some(tid) = log.writer_tid() {
            break tid;
        }
        assert!(Instant::now() < deadline, "the writer never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    // Without the right to come back from idle priority (not root, no
    // RLIMIT_NICE) the writer must never be put there.
    let may = log.yields();
    while may && !priority::is_idle(tid) {
        assert!(
            Instant::now() < deadline,
            "the writer was not put at idle priority"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(priority::is_idle(tid), may);
    for i in 0..100 {
        log.sender().send(hit(i).as_hit_ref());
    }
    let counters = Arc::clone(log.counters());
    while counters.written.load(Ordering::Relaxed) < 100 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(25),
            "an idle writer on a quiet machine did not write"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(log.close(Duration::from_secs(30)));
    assert_eq!(counters.backlog(), 0);
}

#[test]
fn a_flood_past_half_the_channel_brings_the_writer_back_to_catch_up() {
    // The sender, the writer and the keeper on one CPU, the sender busy
    // 10 us for each record like a worker answering queries: a writer
    // left at idle priority would get almost none of that CPU and the
    // channel would overflow. The keeper must give it its share back.
    pin_to_one_cpu();
    let dir = tempfile::tempdir().unwrap();
    let log = spawn(yielding(dir.path().join("hits.sqlite"), 32_768)).unwrap();
    if !log.yields() {
        eprintln!("skipped: this process may not return a thread from idle priority");
        return;
    }
    let sender = log.sender();
    let counters = Arc::clone(log.counters());
    let records = 100_000;
    for i in 0..records {
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_micros(10) {
            std::hint::spin_loop();
        }
        sender.send(hit(i).as_hit_ref());
    }
    assert!(log.close(Duration::from_secs(60)));
    assert_eq!(counters.dropped(), 0, "the channel overflowed");
    assert_eq!(counters.written.load(Ordering::Relaxed), records as u64);
    assert!(counters.catch_ups.load(Ordering::Relaxed) >= 1);
}
