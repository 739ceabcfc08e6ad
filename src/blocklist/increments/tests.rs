use std::time::Duration;

use super::*;
use crate::blocklist::feed::Protected;
use crate::blocklist::merge::merge_ranges;
use crate::blocklist::merge::tests::{feed, source};
use crate::formats::Indicator;

const ZONE: &str = "rpz.test";

fn config() -> Arc<Config> {
    Arc::new(Config::from_str("", std::path::Path::new("/nonexistent/p.toml")).unwrap())
}

fn rule(name: &str, scope: Scope, action: Action) -> Indicator<'static> {
    let mut i = Indicator::block(name.into(), scope);
    i.action = Some(action);
    i
}

/// A compiled list: the zone in a layer of its own, and a small feed in
/// the shared layer.
fn compiled() -> Blocklist {
    let zone = feed(
        FeedSource {
            format: Format::Rpz,
            ..source(ZONE)
        },
        vec![
            rule("gone.example", Scope::Exact, Action::Nxdomain),
            rule("kept.example", Scope::Exact, Action::Nxdomain),
            rule("parent.example", Scope::Below, Action::Nxdomain),
            rule("child.parent.example", Scope::Exact, Action::Nodata),
            rule("wild.example", Scope::Below, Action::Nxdomain),
        ],
    );
    let ranges = vec![0..zone.len(); 1];
    let settings = MergeSettings::of(&config());
    let (own, _) = merge_ranges(&[zone], &ranges, &Protected::default(), &settings, true).unwrap();
    let small = feed(
        source("small.txt"),
        vec![Indicator::block("small.example".into(), Scope::Subtree)],
    );
    let (shared, _) = merge(&[small], &Protected::default(), &settings).unwrap();
    Blocklist::from_layers(vec![Arc::new(own), Arc::new(shared)])
}

fn lines(list: &[&str]) -> Vec<String> {
    list.iter().map(|l| l.to_string()).collect()
}

const SOA: &str = "rpz.test. 300 IN SOA ns.rpz.test. admin.rpz.test. 2 3600 600 86400 300";

/// (action, feed, detail) of what decides `name`, if anything.
fn decides(list: &Blocklist, name: &str) -> Option<(Action, String, Option<String>)> {
    let m = list.lookup_str(name)?;
    Some((
        list.meta(&m).action,
        list.feed(&m).name.clone(),
        list.detail(&m).map(str::to_owned),
    ))
}

#[test]
fn an_increment_changes_the_live_list_as_its_compile_would() {
    let handle = crate::blocklist::empty_handle();
    let increments = Increments::new(Arc::clone(&handle));
    let (compiled_list, live) = increments.publish(compiled(), config(), Instant::now(), &[]);
    assert_eq!(live.generation(), 1);
    // The snapshot is written from the compiled list: same generation.
    assert_eq!(compiled_list.generation(), 1);
    assert!(!live.is_masked());
    assert!(decides(&live, "gone.example").is_some());

    let steps = vec![(
        lines(&[
            "gone.example.rpz.test. 300 IN CNAME .",
            "child.parent.example.rpz.test. 300 IN CNAME *.",
            "*.wild.example.rpz.test. 300 IN CNAME .",
        ]),
        lines(&[
            "new.example.rpz.test. 300 IN CNAME .",
            "*.wild.example.rpz.test. 300 IN CNAME *.",
        ]),
    )];
    let owners = increments.apply(ZONE, SOA, &steps).unwrap();
    assert_eq!(owners, 5);
    let live = handle.load_full();
    assert_eq!(live.generation(), 2);
    assert!(live.is_masked());
    // Deleted: nothing decides it any more.
    assert_eq!(decides(&live, "gone.example"), None);
    // Added: blocks, credited to the zone, naming the new serial.
    assert_eq!(
        decides(&live, "new.example"),
        Some((
            Action::Nxdomain,
            ZONE.to_owned(),
            Some("rpz.test serial 2".to_owned())
        ))
    );
    // A deleted exact rule lets the parent's below-only rule decide.
    assert_eq!(
        decides(&live, "child.parent.example").map(|d| d.0),
        Some(Action::Nxdomain)
    );
    // A changed rule: the new action.
    assert_eq!(
        decides(&live, "a.wild.example").map(|d| d.0),
        Some(Action::Nodata)
    );
    // Untouched rules and other feeds are as they were.
    assert_eq!(
        decides(&live, "kept.example").map(|d| d.0),
        Some(Action::Nxdomain)
    );
    assert_eq!(
        decides(&live, "x.small.example").map(|d| d.1),
        Some("small.txt".to_owned())
    );
    // `check`'s explanation hides the deleted entry too.
    let explained = live.explain("gone.example").unwrap();
    assert!(explained.steps.is_empty(), "{:?}", explained.steps);

    // A second increment builds on the first.
    let steps = vec![(
        lines(&["new.example.rpz.test. 300 IN CNAME ."]),
        lines(&["gone.example.rpz.test. 300 IN CNAME rpz-drop."]),
    )];
    increments.apply(ZONE, SOA, &steps).unwrap();
    let live = handle.load_full();
    assert_eq!(decides(&live, "new.example"), None);
    assert_eq!(
        decides(&live, "gone.example").map(|d| d.0),
        Some(Action::Drop)
    );
    assert_eq!(
        decides(&live, "a.wild.example").map(|d| d.0),
        Some(Action::Nodata)
    );
    assert_eq!(increments.pending(), 4);
}

#[test]
fn a_compile_that_read_the_zone_file_drops_the_increment() {
    let handle = crate::blocklist::empty_handle();
    let increments = Increments::new(Arc::clone(&handle));
    increments.publish(compiled(), config(), Instant::now(), &[]);
    let steps = vec![(Vec::new(), lines(&["new.example.rpz.test. 300 IN CNAME ."]))];
    increments.apply(ZONE, SOA, &steps).unwrap();
    // A compile that started before the file was written does not carry
    // it: the increment stays on top (the compiled list lacks the name).
    let before = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    increments.written(ZONE);
    let (compiled_list, live) = increments.publish(compiled(), config(), before, &[]);
    assert!(decides(&compiled_list, "new.example").is_none());
    assert!(decides(&live, "new.example").is_some());
    // Nor does one that kept the zone's previous contents.
    let (_, live) = increments.publish(compiled(), config(), Instant::now(), &[ZONE]);
    assert!(decides(&live, "new.example").is_some());
    // One that started after the write read it: the increment goes.
    let (_, live) = increments.publish(compiled(), config(), Instant::now(), &[]);
    assert!(!live.is_masked());
    assert_eq!(live.layers().len(), 2);
    assert_eq!(increments.pending(), 0);
    assert_eq!(live.generation(), 5, "every store is a new generation");
}

#[test]
fn what_an_increment_cannot_apply_exactly_is_left_to_the_compile() {
    let handle = crate::blocklist::empty_handle();
    let increments = Increments::new(Arc::clone(&handle));
    increments.publish(compiled(), config(), Instant::now(), &[]);
    let refused = |added: &[&str]| {
        increments
            .apply(ZONE, SOA, &[(Vec::new(), lines(added))])
            .unwrap_err()
    };
    assert!(matches!(
        refused(&["sink.example.rpz.test. 300 IN A 192.0.2.1"]),
        NotApplied::Unsupported(_)
    ));
    assert!(matches!(
        refused(&["32.1.2.0.192.rpz-ip.rpz.test. 300 IN CNAME ."]),
        NotApplied::Unsupported(_)
    ));
    assert!(matches!(
        refused(&["ns.example.rpz-nsdname.rpz.test. 300 IN CNAME ."]),
        NotApplied::Unsupported(_)
    ));
    assert!(matches!(
        refused(&["redirect.example.rpz.test. 300 IN CNAME walled.example."]),
        NotApplied::Unsupported(_)
    ));
    assert!(matches!(
        refused(&["bad!.example.rpz.test. 300 IN CNAME ."]),
        NotApplied::Parse(_)
    ));
    // A zone in the shared layer: its keys there are not its alone.
    assert_eq!(
        increments
            .apply(
                "small.txt",
                SOA,
                &[(Vec::new(), lines(&["x.example.small.txt. 300 IN CNAME ."]))]
            )
            .unwrap_err(),
        NotApplied::NotBig
    );
    // Nothing was stored: still the first generation, unmasked.
    let live = handle.load_full();
    assert_eq!(live.generation(), 1);
    assert!(!live.is_masked());
}

#[test]
fn after_a_start_from_the_snapshot_increments_build_on_the_snapshot_not_on_each_other() {
    let handle = crate::blocklist::empty_handle();
    let increments = Increments::new(Arc::clone(&handle));
    let mut snapshot = compiled();
    snapshot.set_generation(7);
    let live = increments.seed(snapshot, config());
    assert_eq!(live.generation(), 7);
    let add = vec![(Vec::new(), lines(&["new.example.rpz.test. 300 IN CNAME ."]))];
    increments.apply(ZONE, SOA, &add).unwrap();
    assert!(decides(&handle.load_full(), "new.example").is_some());
    let delete = vec![(lines(&["new.example.rpz.test. 300 IN CNAME ."]), Vec::new())];
    increments.apply(ZONE, SOA, &delete).unwrap();
    let live = handle.load_full();
    assert_eq!(decides(&live, "new.example"), None);
    assert_eq!(
        live.layers().len(),
        3,
        "the base's two layers and one increment"
    );
    assert_eq!(live.generation(), 9);
}

#[test]
fn after_a_refused_increment_the_zone_waits_for_its_compile() {
    let handle = crate::blocklist::empty_handle();
    let increments = Increments::new(Arc::clone(&handle));
    increments.publish(compiled(), config(), Instant::now(), &[]);
    let add = |name: &str| {
        vec![(
            Vec::new(),
            lines(&[&format!("{name}.example.rpz.test. 300 IN CNAME .")]),
        )]
    };
    increments.apply(ZONE, SOA, &add("first")).unwrap();
    // An increment with local data goes to the zone file only; one built
    // on top of the first would miss what it changed.
    let local = vec![(
        lines(&["first.example.rpz.test. 300 IN CNAME ."]),
        lines(&["first.example.rpz.test. 300 IN A 192.0.2.1"]),
    )];
    assert!(matches!(
        increments.apply(ZONE, SOA, &local),
        Err(NotApplied::Unsupported(_))
    ));
    assert_eq!(
        increments.apply(ZONE, SOA, &add("third")),
        Err(NotApplied::Frozen)
    );
    // The compile that read the file (after both were written) takes over.
    increments.written(ZONE);
    std::thread::sleep(Duration::from_millis(2));
    increments.publish(compiled(), config(), Instant::now(), &[]);
    assert_eq!(increments.pending(), 0);
    increments.apply(ZONE, SOA, &add("fourth")).unwrap();
    assert!(decides(&handle.load_full(), "fourth.example").is_some());
}
