//! Tests of the writer thread: batching, shutdown and lost records.

use super::*;
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
    }
}

/// A writer on `database` as `spawn` makes one, without its thread.
pub(super) fn writer(database: &std::path::Path) -> Writer {
    let mut w = Writer {
        settings: Settings {
            database: database.to_path_buf(),
            jsonl: None,
            retention_days: 1,
            capacity: 100,
            max_bytes: None,
        },
        store: None,
        identity: None,
        last_open: None,
        jsonl: None,
        counters: Arc::new(Counters::default()),
        failures: Failures::default(),
        pending: Pending::default(),
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
