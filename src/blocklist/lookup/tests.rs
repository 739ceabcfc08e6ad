use crate::blocklist::merge::tests::{feed, source};
use crate::blocklist::{MergeSettings, Protected, merge};
use crate::formats::{Indicator, Scope, Verdict};

use super::*;

fn ind(name: &str, scope: Scope, verdict: Verdict) -> Indicator<'static> {
    Indicator {
        net: None,
        verdict,
        ..Indicator::block(name.into(), scope)
    }
}

fn list(entries: &[(&str, Scope, Verdict)]) -> Blocklist {
    let indicators = entries.iter().map(|(n, s, v)| ind(n, *s, *v)).collect();
    let f = feed(source("test.txt"), indicators);
    let layer = merge(&[f], &Protected::default(), &MergeSettings::default())
        .unwrap()
        .0;
    Blocklist::from_layers(vec![std::sync::Arc::new(layer)])
}

fn verdict(list: &Blocklist, name: &str) -> Option<(Verdict, Scope, u8)> {
    list.lookup_str(name).map(|m| {
        let meta = list.meta(&m);
        (meta.verdict, meta.scope, m.depth)
    })
}

use Scope::*;
use Verdict::*;

#[test]
fn label_boundaries_are_respected() {
    let l = list(&[("example.com", Subtree, Block)]);
    assert_eq!(verdict(&l, "example.com"), Some((Block, Subtree, 2)));
    assert_eq!(verdict(&l, "a.b.example.com"), Some((Block, Subtree, 2)));
    assert_eq!(verdict(&l, "notexample.com"), None);
    assert_eq!(verdict(&l, "example.community"), None);
    assert_eq!(verdict(&l, "examples.com"), None);
    assert_eq!(verdict(&l, "com"), None);
    assert_eq!(verdict(&l, "EXAMPLE.COM."), Some((Block, Subtree, 2)));
    assert_eq!(
        l.lookup(std::iter::empty()),
        None,
        "the root is never listed here"
    );
}

#[test]
fn a_whole_tld_is_found_and_lists_without_one_probe_from_the_second_label() {
    // No bare TLD: the filter is probed from the second label on.
    let without = list(&[("example.com", Subtree, Block)]);
    assert!(!without.layers[0].tld_keys);
    assert_eq!(verdict(&without, "com"), None);
    assert_eq!(
        verdict(&without, "a.example.com"),
        Some((Block, Subtree, 2))
    );
    let l = list(&[("zip", Subtree, Block), ("example.com", Subtree, Block)]);
    assert!(l.layers[0].tld_keys);
    assert!(l.layers[0].filter.is_some());
    assert_eq!(verdict(&l, "zip"), Some((Block, Subtree, 1)));
    assert_eq!(verdict(&l, "a.b.ZIP"), Some((Block, Subtree, 1)));
    assert_eq!(verdict(&l, "www.example.com"), Some((Block, Subtree, 2)));
    // Inside the layer's TLD range (com. to zip.), so the filter decides.
    assert_eq!(verdict(&l, "x.net"), None);
    assert_eq!(verdict(&l, "zio"), None);
    // Exact at the TLD: the TLD itself, not its children.
    let l = list(&[("zip", Exact, Block), ("a.example", Exact, Block)]);
    assert!(l.layers[0].tld_keys);
    assert_eq!(verdict(&l, "zip"), Some((Block, Exact, 1)));
    assert_eq!(verdict(&l, "x.zip"), None);
}

#[test]
fn names_of_any_depth_are_judged_through_the_filter() {
    let l = list(&[("example.com", Subtree, Block), ("ip6.arpa", Exact, Block)]);
    assert!(l.layers[0].filter.is_some());
    // 60 labels below a listed name: past what the filter's old
    // fixed array of prefixes held (40), and past an ip6.arpa name's 34.
    let deep = format!("{}example.com", "a.".repeat(60));
    assert_eq!(verdict(&l, &deep), Some((Block, Subtree, 2)));
    let clean = format!("{}example.net", "a.".repeat(60));
    assert_eq!(verdict(&l, &clean), None);
    let reverse = format!("{}ip6.arpa", "0.".repeat(32));
    assert_eq!(verdict(&l, &reverse), None, "exact: the name itself only");
    assert_eq!(verdict(&l, "ip6.arpa"), Some((Block, Exact, 2)));
}

#[test]
fn wire_labels_are_case_folded_and_dotted_labels_never_match() {
    let l = list(&[("example.com", Subtree, Block)]);
    let labels: [&[u8]; 3] = [b"COM", b"Example", b"www"];
    assert!(l.lookup(labels.into_iter()).is_some());
    // A label `a.example` under com (one label with a dot inside it) is
    // not example.com's child.
    let labels: [&[u8]; 2] = [b"com", b"example.a"];
    assert_eq!(l.lookup(labels.into_iter()), None);
}

#[test]
fn most_specific_entry_wins() {
    let l = list(&[
        ("example.com", Subtree, Block),
        ("good.example.com", Subtree, Allow),
    ]);
    assert_eq!(verdict(&l, "x.good.example.com"), Some((Allow, Subtree, 3)));
    assert_eq!(verdict(&l, "bad.example.com"), Some((Block, Subtree, 2)));
    let l = list(&[
        ("example.com", Subtree, Allow),
        ("bad.example.com", Subtree, Block),
    ]);
    assert_eq!(verdict(&l, "x.bad.example.com"), Some((Block, Subtree, 3)));
    assert_eq!(verdict(&l, "example.com"), Some((Allow, Subtree, 2)));
}

#[test]
fn exact_beats_subtree_at_the_same_name() {
    let l = list(&[
        ("example.com", Subtree, Block),
        ("example.com", Exact, Allow),
    ]);
    assert_eq!(verdict(&l, "example.com"), Some((Allow, Exact, 2)));
    assert_eq!(verdict(&l, "www.example.com"), Some((Block, Subtree, 2)));
    // and the other way round: an exact block under a subtree allow
    let l = list(&[
        ("example.com", Subtree, Allow),
        ("example.com", Exact, Block),
    ]);
    assert_eq!(verdict(&l, "example.com"), Some((Block, Exact, 2)));
    assert_eq!(verdict(&l, "www.example.com"), Some((Allow, Subtree, 2)));
}

#[test]
fn allow_beats_block_at_the_same_name_and_scope() {
    for order in [[Block, Allow], [Allow, Block]] {
        let l = list(&[
            ("example.com", Subtree, order[0]),
            ("example.com", Subtree, order[1]),
        ]);
        assert_eq!(verdict(&l, "example.com"), Some((Allow, Subtree, 2)));
        assert_eq!(verdict(&l, "a.example.com"), Some((Allow, Subtree, 2)));
        assert!(l.lookup_str("example.com").unwrap().contested);
    }
}

#[test]
fn exact_entries_do_not_cover_children_and_wildcards_skip_the_apex() {
    let l = list(&[
        ("host.example.com", Exact, Block),
        ("wild.example.com", Below, Block),
    ]);
    assert_eq!(verdict(&l, "host.example.com"), Some((Block, Exact, 3)));
    assert_eq!(verdict(&l, "a.host.example.com"), None);
    assert_eq!(verdict(&l, "wild.example.com"), None);
    assert_eq!(verdict(&l, "a.wild.example.com"), Some((Block, Below, 3)));
    // An exact entry deeper than a subtree one does not hide the subtree
    // for names below it.
    let l = list(&[
        ("example.com", Subtree, Block),
        ("www.example.com", Exact, Allow),
    ]);
    assert_eq!(verdict(&l, "www.example.com"), Some((Allow, Exact, 3)));
    assert_eq!(verdict(&l, "a.www.example.com"), Some((Block, Subtree, 2)));
}

#[test]
fn layers_combine_as_one_list_would() {
    use std::sync::Arc;
    let entries = [
        ("example.com", Subtree, Block),
        ("good.example.com", Subtree, Allow),
        ("host.example.com", Exact, Block),
        ("example.com", Exact, Allow),
        ("wild.example.com", Below, Block),
    ];
    let one = list(&entries);
    // Every way of splitting the entries over two layers, both orders.
    for mask in 0u32..(1 << entries.len()) {
        let (a, b): (Vec<_>, Vec<_>) = entries
            .iter()
            .enumerate()
            .partition(|(i, _)| mask & (1 << i) != 0);
        let layer = |part: Vec<(usize, &(&str, Scope, Verdict))>| {
            let indicators = part.iter().map(|(_, (n, s, v))| ind(n, *s, *v)).collect();
            Arc::new(
                merge(
                    &[feed(source("x"), indicators)],
                    &Protected::default(),
                    &MergeSettings::default(),
                )
                .unwrap()
                .0,
            )
        };
        let (la, lb) = (layer(a), layer(b));
        for layers in [vec![la.clone(), lb.clone()], vec![lb, la]] {
            let split = Blocklist::from_layers(layers);
            for q in [
                "example.com",
                "a.example.com",
                "good.example.com",
                "x.good.example.com",
                "host.example.com",
                "a.host.example.com",
                "wild.example.com",
                "a.wild.example.com",
                "other.com",
            ] {
                assert_eq!(
                    verdict(&split, q),
                    verdict(&one, q),
                    "{q} with mask {mask:05b}"
                );
            }
        }
    }
}

#[test]
fn explain_lists_every_listed_ancestor() {
    let l = list(&[
        ("example.com", Subtree, Block),
        ("good.example.com", Exact, Allow),
    ]);
    let e = l.explain("Good.Example.com.").unwrap();
    assert_eq!(e.name, "good.example.com");
    let listed: Vec<(&str, bool)> = e
        .steps
        .iter()
        .map(|s| (s.listed.as_str(), s.applies))
        .collect();
    // A subtree entry fills both slots with the same entry: shown once.
    assert_eq!(listed, [("example.com", true), ("good.example.com", true)]);
    assert_eq!(e.winner.unwrap().depth, 3);
    // An exact entry above the name is shown as not applying.
    let l = list(&[("example.com", Exact, Block)]);
    let e = l.explain("www.example.com").unwrap();
    assert!(!e.steps[0].applies);
    assert_eq!(e.winner, None);
}
