//! Version 7's interned records: the upgrade from a `hits` table, the
//! index the listing reads through, and the writer's cache of ids.
use super::tests::{downgrade_to_6, pragma};
use super::*;
use crate::clock::DAY_MS;
use crate::hitlog::Hit;
use crate::hitlog::store::Filter;
use crate::hitlog::store::test_support::hit;

/// Everything a reader can see of the records: the listing, one
/// organisation's listing, a record by id, the count and a report.
fn seen(s: &Store) -> (Vec<Hit>, Vec<Hit>, Option<Hit>, u64, u64) {
    let all = s.hits(&Filter::default(), None, 100).unwrap().hits;
    let b = Filter {
        org: Some("b".into()),
        ..Filter::default()
    };
    let of_b = s.hits(&b, None, 100).unwrap().hits;
    let one = s.get(3, None).unwrap();
    let total = s
        .report(&Filter::default(), 0, 40 * DAY_MS, 5)
        .unwrap()
        .total;
    (all, of_b, one, s.count().unwrap(), total)
}

#[test]
fn a_version_6_database_moves_to_interned_records_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hits.sqlite");
    let t0 = 35 * DAY_MS;
    {
        let mut s = Store::open_writer(&path, None).unwrap();
        let mut batch: Vec<Hit> = (0..40)
            .map(|i| {
                let org = ["a", "b", ""][i as usize % 3];
                let mut h = hit(
                    t0 + i * 1000,
                    org,
                    "10.0.0.1",
                    "x.evil.example",
                    "evil.example",
                );
                if i % 2 == 0 {
                    h.feed = "stix.json".into();
                    h.indicator = Some(format!("indicator--{i}"));
                    h.action = "refused".into();
                }
                h
            })
            .collect();
        batch[5].repeats = 70;
        batch[5].last_ts = Some(t0 + 50_000);
        s.insert(&batch[..20]).unwrap();
        s.roll_up().unwrap();
        s.set_node("pdns-lon-1");
        s.insert(&batch[20..]).unwrap();
        downgrade_to_6(&s.conn);
    }
    let old = Store::open_reader(&path).unwrap();
    assert_eq!(old.version, 6);
    let before = seen(&old);
    assert_eq!(before.0.len(), 40);
    assert_eq!(before.1.len(), 13, "every third record is b's");
    assert_eq!(before.4, 40 + 69, "a report counts the queries");
    let nodes: Vec<_> = before.0.iter().map(|h| h.node.as_deref()).collect();
    assert_eq!(nodes[..20], [Some("pdns-lon-1"); 20]);
    assert_eq!(nodes[20..], [None; 20]);
    drop(old);

    let mut s = Store::open_writer(&path, None).unwrap();
    let kind: String = s
        .conn
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'hits'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kind, "view");
    let interned: (i64, i64) = s
        .conn
        .query_row(
            "SELECT (SELECT count(*) FROM hit_orgs), (SELECT count(*) FROM hit_labels)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(interned, (3, 4), "a, b and none; two feeds times two nodes");
    assert_eq!(seen(&s), before);
    assert_eq!(seen(&Store::open_reader(&path).unwrap()), before);
    // The roll-up goes on from its mark: the 20 records after it, once.
    assert_eq!(s.roll_up().unwrap(), 20);
    let ids = s
        .insert(&[hit(
            t0 + 90_000,
            "b",
            "10.0.0.9",
            "y.evil.example",
            "evil.example",
        )])
        .unwrap();
    assert_eq!(ids, [41], "ids go on from the old table's");
    let after = seen(&Store::open_reader(&path).unwrap());
    assert_eq!(after.1[0].client.to_string(), "10.0.0.9");
    assert_eq!(after.4, 40 + 69 + 1);
}

#[test]
fn an_organisations_listing_is_read_through_its_index() {
    let (_dir, s) = crate::hitlog::store::test_support::store();
    let filter = Filter {
        org: Some("a".into()),
        since: Some(0),
        until: Some(DAY_MS),
        ..Filter::default()
    };
    let mut sql =
        String::from("EXPLAIN QUERY PLAN SELECT id, ts, org, feed, node FROM hits WHERE 1 = 1");
    let mut args = Vec::new();
    s.push_filter_and_ids(&mut sql, &mut args, &filter, None, None)
        .unwrap();
    sql.push_str(" ORDER BY id DESC LIMIT 10");
    let plan: Vec<String> = s
        .conn
        .prepare(&sql)
        .unwrap()
        .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("; ");
    assert!(plan.contains("INDEX hit_rows_org"), "{plan}");
    assert!(!plan.contains("SCAN r"), "{plan}");
}

#[test]
fn a_failed_batch_forgets_the_organisations_it_added() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hits.sqlite");
    let mut s = Store::open_writer(&path, Some(64 * 1024)).unwrap();
    let mut n = 0;
    // Fill the capped file until a batch that brings a new organisation
    // fails, as a full disk does: its hit_orgs row is rolled back with it.
    loop {
        let batch: Vec<Hit> = (0..50)
            .map(|i| {
                hit(
                    i,
                    &format!("org-{n}"),
                    "10.0.0.1",
                    &format!("n{n}-{i}.example"),
                    "x.example",
                )
            })
            .collect();
        if s.insert(&batch).is_err() {
            break;
        }
        n += 1;
        assert!(n < 2_000, "the cap never bit");
    }
    let lost = format!("org-{n}");
    s.conn
        .query_row("PRAGMA max_page_count = 100000", [], |_| Ok(()))
        .unwrap();
    s.insert(&[hit(5, &lost, "10.0.0.2", "y.example", "x.example")])
        .unwrap();
    let filter = Filter {
        org: Some(lost.clone()),
        ..Filter::default()
    };
    let page = s.hits(&filter, None, 10).unwrap();
    assert_eq!(
        page.hits.len(),
        1,
        "a record under a rolled-back id would vanish"
    );
    assert_eq!(page.hits[0].org.as_deref(), Some(lost.as_str()));
    assert_eq!(s.count().unwrap(), 50 * n + 1);
}

#[test]
fn an_upgrade_near_the_cap_leaves_the_file_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hits.sqlite");
    {
        let mut s = Store::open_writer(&path, None).unwrap();
        let batch: Vec<Hit> = (0..20_000)
            .map(|i| {
                hit(
                    i,
                    "a",
                    "10.0.0.1",
                    &format!("n{i}.phish.example"),
                    "phish.example",
                )
            })
            .collect();
        s.insert(&batch).unwrap();
        s.roll_up().unwrap();
        downgrade_to_6(&s.conn);
        s.conn.execute_batch("VACUUM").unwrap();
    }
    // A cap the version 6 file just fits in: the copy alone outgrows it.
    let v6_bytes = std::fs::metadata(&path).unwrap().len();
    let cap = v6_bytes + 2 * PAGE_SIZE as u64;
    let mut s = Store::open_writer(&path, Some(cap)).unwrap();
    let bytes = pragma(&s, "page_count") * pragma(&s, "page_size");
    assert!(bytes as u64 <= cap, "{bytes} bytes against a cap of {cap}");
    assert_eq!(
        pragma(&s, "max_page_count") * PAGE_SIZE,
        cap as i64 / PAGE_SIZE * PAGE_SIZE
    );
    assert_eq!(s.count().unwrap(), 20_000);
    s.insert(&[hit(
        30_000,
        "b",
        "10.0.0.2",
        "late.phish.example",
        "phish.example",
    )])
    .unwrap();
    assert_eq!(Store::open_reader(&path).unwrap().count().unwrap(), 20_001);
}

#[test]
fn labels_whose_columns_join_to_the_same_text_stay_apart() {
    let (_dir, mut s) = crate::hitlog::store::test_support::store();
    let mut first = hit(1, "a", "10.0.0.1", "x.bad.example", "bad.example");
    first.feed = "ab".into();
    first.category = "c".into();
    let mut second = first.clone();
    second.ts = 2;
    second.feed = "a".into();
    second.category = "bc".into();
    s.insert(&[first, second.clone()]).unwrap();
    s.insert(&[second]).unwrap();
    let page = s.hits(&Filter::default(), None, 10).unwrap();
    let got: Vec<_> = page
        .hits
        .iter()
        .map(|h| (h.feed.as_str(), h.category.as_str()))
        .collect();
    assert_eq!(got, [("a", "bc"), ("a", "bc"), ("ab", "c")]);
    let labels: i64 = s
        .conn
        .query_row("SELECT count(*) FROM hit_labels", [], |r| r.get(0))
        .unwrap();
    assert_eq!(labels, 2);
}
