//! The query-time walk through the automata, and its verbose twin for
//! `portcullis check`.
//!
//! Each layer is walked once; each walk yields its most specific
//! applicable entry. Across layers the deeper entry wins; at the same
//! depth the higher rank (exact before subtree, allow before block), then
//! the earlier layer. That is the same order the merge uses inside a
//! layer, so splitting feeds into layers never changes a decision.

use fst::raw::Output;

use super::merge::{CONTESTED, below_rank, exact_rank};
use super::{Blocklist, EntryMeta, Layer};
use crate::domain::{self, KEY_SEPARATOR};

/// The entry that decides a query, as indexes into the blocklist's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Which layer holds the entry.
    pub layer: u8,
    pub(super) meta: u32,
    /// How many labels (from the right) of the query name the entry's name has.
    pub depth: u8,
    /// Whether another entry at the same name lost to this one.
    pub contested: bool,
    /// Whether the entry was found at the full query name (its exact slot).
    pub at_name: bool,
}

fn slot(value: u64, exact: bool) -> u32 {
    if exact {
        (value >> 32) as u32
    } else {
        value as u32
    }
}

fn decode(slot: u32, layer: u8, metas: usize, depth: u8, at_name: bool) -> Option<Match> {
    let index = slot & !CONTESTED;
    // An index past the table can only come from a damaged snapshot that
    // passed its checksum; it is ignored rather than trusted.
    (index != 0 && (index as usize) <= metas).then(|| Match {
        layer,
        meta: index - 1,
        depth,
        contested: slot & CONTESTED != 0,
        at_name,
    })
}

impl Layer {
    /// The most specific applicable entry in this layer.
    fn walk<'l, I>(&self, labels: I, layer: u8) -> Option<Match>
    where
        I: Iterator<Item = &'l [u8]>,
    {
        let fst = self.map.as_fst();
        let mut node = fst.root();
        let mut out = Output::zero();
        let mut best = None;
        let mut depth: u8 = 0;
        let mut labels = labels.peekable();
        while let Some(label) = labels.next() {
            // A dot inside a wire label can never be part of a stored label;
            // feeding it as a separator would misalign the walk.
            if label.contains(&KEY_SEPARATOR) {
                return best;
            }
            let bytes = label.iter().map(u8::to_ascii_lowercase);
            for byte in bytes.chain(std::iter::once(KEY_SEPARATOR)) {
                let Some(i) = node.find_input(byte) else {
                    return best;
                };
                let t = node.transition(i);
                out = out.cat(t.out);
                node = fst.node(t.addr);
            }
            depth = depth.saturating_add(1);
            if node.is_final() {
                let value = out.cat(node.final_output()).value();
                let at_name = labels.peek().is_none();
                if let Some(m) = decode(
                    slot(value, at_name),
                    layer,
                    self.metas.len(),
                    depth,
                    at_name,
                ) {
                    best = Some(m);
                }
            }
        }
        best
    }
}

impl Blocklist {
    fn rank(&self, m: &Match) -> u8 {
        let meta = self.meta(m);
        if m.at_name {
            exact_rank(meta)
        } else {
            below_rank(meta)
        }
    }

    /// The entry that decides `labels` (given right to left: TLD first, no
    /// root label), or `None` when no listed name covers it.
    ///
    /// Bytes are lower-cased on the way in, so a raw wire name works too.
    pub fn lookup<'l, I>(&self, labels: I) -> Option<Match>
    where
        I: Iterator<Item = &'l [u8]> + Clone,
    {
        self.lookup_by(|| labels.clone())
    }

    /// [`Blocklist::lookup`] for labels that can be listed again but not
    /// cloned (hickory's label iterator): `labels` gives them, right to
    /// left, each time it is called.
    pub fn lookup_by<'l, F, I>(&self, labels: F) -> Option<Match>
    where
        F: Fn() -> I,
        I: Iterator<Item = &'l [u8]>,
    {
        // Most names are in no layer: a layer of other TLDs, or its
        // filter, says so without a walk.
        let mut tld = [0u8; 64];
        let tld_len = match labels().next() {
            Some(label) if label.len() < tld.len() => {
                for (d, b) in tld.iter_mut().zip(label) {
                    *d = b.to_ascii_lowercase();
                }
                tld[label.len()] = KEY_SEPARATOR;
                label.len() + 1
            }
            // No label (the root), or one too long to be stored.
            _ => return None,
        };
        let tld = &tld[..tld_len];
        // Only a layer whose TLD range holds the name hashes it, as its
        // filter probes.
        let mut best: Option<Match> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            if !layer.holds_tld(tld) {
                continue;
            }
            if let Some(filter) = &layer.filter
                && !filter.may_match(labels(), usize::from(!layer.tld_keys))
            {
                continue;
            }
            let Some(found) = layer.walk(labels(), i as u8) else {
                continue;
            };
            best = Some(match best {
                None => found,
                Some(b) if found.depth > b.depth => found,
                Some(b) if found.depth < b.depth => b,
                Some(b) => {
                    // Same name: the merge's order decides.
                    let mut winner = if self.rank(&found) > self.rank(&b) {
                        found
                    } else {
                        b
                    };
                    winner.contested = true;
                    winner
                }
            });
        }
        best
    }

    /// Look up a name given as text (it is normalised first). For the CLI
    /// and tests; queries use [`Blocklist::lookup`] on wire labels.
    pub fn lookup_str(&self, name: &str) -> Option<Match> {
        let name = domain::normalize(name).ok()?;
        self.lookup(name.rsplit('.').map(str::as_bytes))
    }

    /// Every listed name on the way from the TLD to `name`, with what each
    /// would decide, and the winner: what `portcullis check` prints.
    pub fn explain(&self, name: &str) -> Result<Explanation, domain::NameError> {
        let name = domain::normalize(name)?;
        let mut steps = Vec::new();
        let labels: Vec<&str> = name.rsplit('.').collect();
        let mut key = Vec::new();
        for (i, label) in labels.iter().enumerate() {
            key.extend_from_slice(label.as_bytes());
            key.push(KEY_SEPARATOR);
            let listed = domain::name_from_key(&key);
            let depth = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let is_name = i + 1 == labels.len();
            for (li, layer) in self.layers.iter().enumerate() {
                let Some(value) = layer.map.get(&key) else {
                    continue;
                };
                // The slot that applies here first; the other only when it
                // holds a different entry (a subtree entry fills both).
                let n = layer.metas.len();
                let applying = decode(slot(value, is_name), li as u8, n, depth, is_name);
                let other = decode(slot(value, !is_name), li as u8, n, depth, !is_name);
                for (found, applies) in [(applying, true), (other, false)] {
                    let Some(m) = found else { continue };
                    if !applies && applying.is_some_and(|a| a.meta == m.meta) {
                        continue;
                    }
                    steps.push(Step {
                        listed: listed.clone(),
                        found: m,
                        meta: *self.meta(&m),
                        applies,
                    });
                }
            }
        }
        let winner = self.lookup(labels.iter().map(|l| l.as_bytes()));
        Ok(Explanation {
            name,
            steps,
            winner,
        })
    }
}

/// One listed name found while explaining a lookup.
#[derive(Debug, Clone)]
pub struct Step {
    /// The listed name.
    pub listed: String,
    pub found: Match,
    pub meta: EntryMeta,
    /// Whether this slot applies to the queried name (an exact slot applies
    /// only to the name itself, a below slot only to names under it).
    pub applies: bool,
}

/// The full story of one lookup.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub name: String,
    pub steps: Vec<Step>,
    pub winner: Option<Match>,
}

#[cfg(test)]
mod tests {
    use crate::blocklist::merge::tests::{feed, source};
    use crate::blocklist::{MergeSettings, Protected, merge};
    use crate::feeds::{Indicator, Scope, Verdict};

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
}
