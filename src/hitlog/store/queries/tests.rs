//! Tests of listing, paging and time ranges.

use super::*;
use crate::clock::DAY_MS;
use crate::hitlog::store::test_support::{hit, listed, store};

#[test]
fn pages_are_newest_first_and_filtered_by_org_domain_and_client() {
    let (_dir, mut s) = store();
    let mut batch = Vec::new();
    for i in 0..25 {
        batch.push(hit(
            1000 + i,
            "a",
            "10.0.0.1",
            "x.evil.example",
            "evil.example",
        ));
    }
    batch.push(hit(2000, "b", "10.0.0.2", "evil.example", "evil.example"));
    batch.push(hit(
        2001,
        "a",
        "10.0.0.3",
        "notevil.example",
        "notevil.example",
    ));
    s.insert(&batch).unwrap();
    let a = Filter {
        org: Some("a".into()),
        domain: Some("evil.example".into()),
        ..Filter::default()
    };
    let p1 = s.hits(&a, None, 10).unwrap();
    assert_eq!(p1.hits.len(), 10);
    assert_eq!(p1.hits[0].ts, 1024);
    let p2 = s
        .hits(&a, Cursor::parse(p1.next.as_deref().unwrap()), 10)
        .unwrap();
    let p3 = s
        .hits(&a, Cursor::parse(p2.next.as_deref().unwrap()), 10)
        .unwrap();
    assert_eq!(p3.hits.len(), 5);
    assert_eq!(p3.next, None);
    assert_eq!(p3.hits.last().unwrap().ts, 1000);
    // `notevil.example` is not below `evil.example`; org b is not a.
    let all: Vec<_> = [p1, p2, p3].into_iter().flat_map(|p| p.hits).collect();
    assert!(
        all.iter()
            .all(|h| h.org.as_deref() == Some("a") && h.matched == "evil.example")
    );
    let by_client = Filter {
        client: Some("10.0.0.3".parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(s.hits(&by_client, None, 10).unwrap().hits.len(), 1);
    let id = s.hits(&by_client, None, 1).unwrap().hits[0].id.unwrap();
    assert!(s.get(id, Some("a")).unwrap().is_some());
    assert!(
        s.get(id, Some("b")).unwrap().is_none(),
        "another org's record"
    );
}

#[test]
fn time_ranges_are_found_through_the_minutes_even_after_the_clock_steps_back() {
    let (_dir, mut s) = store();
    let t0 = 20 * DAY_MS;
    // Three minutes of records, then the clock steps back an hour for
    // a while (a VM resumed, NTP corrected it), then forward again.
    let mut all: Vec<Hit> = (0..180)
        .map(|i| {
            hit(
                t0 + i * 1000,
                if i % 2 == 0 { "a" } else { "b" },
                "10.0.0.1",
                "x.example",
                "x.example",
            )
        })
        .collect();
    all.extend((0..50).map(|i| {
        hit(
            t0 - 3_600_000 + i * 10,
            "a",
            "10.0.0.2",
            "y.example",
            "y.example",
        )
    }));
    all.extend((0..30).map(|i| hit(t0 + 200_000 + i, "a", "10.0.0.3", "z.example", "z.example")));
    for batch in all.chunks(40) {
        s.insert(batch).unwrap();
    }
    let ids: Vec<i64> = (1..=all.len() as i64).collect();
    let expect = |org: Option<&str>, since: i64, until: i64| -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = all
            .iter()
            .zip(&ids)
            .filter(|(h, _)| h.ts >= since && h.ts < until)
            .filter(|(h, _)| org.is_none() || h.org.as_deref() == org)
            .map(|(h, &id)| (id, h.ts))
            .collect();
        v.reverse();
        v
    };
    let ranges = [
        (t0, t0 + 60_000),
        (t0 + 59_999, t0 + 61_001),
        (t0 - 3_600_000, t0 - 3_599_700),
        (t0 - 3_600_000 + 5, t0 + 1),
        (t0 + 150_000, t0 + 300_000),
        (0, 40 * DAY_MS),
        (t0 + 400_000, t0 + 500_000),
    ];
    for (since, until) in ranges {
        for org in [None, Some("a"), Some("b")] {
            assert_eq!(
                listed(&s, org, since, until),
                expect(org, since, until),
                "{org:?} {since}..{until}"
            );
        }
        let report = s.report(&Filter::default(), since, until, 5).unwrap();
        assert_eq!(
            report.total,
            expect(None, since, until).len() as u64,
            "report {since}..{until}"
        );
    }
    assert_eq!(s.newest_ts().unwrap(), Some(t0 + 200_029));
    // Retention takes the hour before the step, and only it.
    assert_eq!(s.expire(t0 - 1_800_000, 100_000, None).unwrap(), 50);
    let left: i64 = s
        .conn
        .query_row(
            "SELECT count(*) FROM hits_minutes WHERE minute < ?1",
            [minute(t0 - 1_800_000)],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the expired minutes' ranges go with them");
    assert_eq!(listed(&s, None, 0, 40 * DAY_MS).len(), 210);
}

#[test]
fn page_cursors_are_ids_and_old_ones_still_parse() {
    assert_eq!(Cursor::parse("42"), Some(Cursor { id: 42 }));
    assert_eq!(Cursor::parse("1795000000123-42"), Some(Cursor { id: 42 }));
    assert_eq!(Cursor { id: 42 }.to_string(), "42");
    assert_eq!(Cursor::parse("forty-two"), None);
    assert_eq!(Cursor::parse(""), None);
}
