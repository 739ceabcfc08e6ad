//! One layer's RPZ `rpz-nsdname` triggers: names of name servers, each an
//! exact entry (`ns1.example`) or a below-only one (`*.example`).
//!
//! Real policy zones list a few hundred of these at most, against millions
//! of query names, and they are consulted only for answers that nothing
//! else decided. So they sit in a hash map by name rather than in an
//! automaton of their own: a lookup probes the name, then each ancestor,
//! one hash each. The slots and their folding are the automaton's (see
//! the `blocklist` module doc): at one name an exact entry beats a
//! below-only one for the name itself, allow beats block, then the first
//! feed wins.

use std::collections::HashMap;

use super::EntryMeta;
use super::merge::{below_rank, exact_rank};

/// Name -> (exact slot, below slot); a slot is `1 + metadata index`, or 0.
#[derive(Debug, Default)]
pub struct NsNames {
    slots: HashMap<Box<str>, (u32, u32)>,
}

/// What decides a name server's name: the metadata index and how many
/// labels of the name the listed one has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsNameMatch {
    pub meta: u32,
    pub depth: u8,
    pub at_name: bool,
}

impl NsNames {
    /// Fold `(name, metadata index)` pairs, in feed order.
    pub fn build<'a>(
        pairs: impl IntoIterator<Item = (&'a str, u32)>,
        metas: &[EntryMeta],
    ) -> NsNames {
        let mut slots: HashMap<Box<str>, (u32, u32)> = HashMap::new();
        for (name, meta) in pairs {
            let Some(m) = metas.get(meta as usize) else {
                continue;
            };
            let (exact, below) = slots.entry(name.into()).or_default();
            let better = |slot: u32, rank: fn(&EntryMeta) -> u8| {
                let held = slot.checked_sub(1).map_or(0, |i| rank(&metas[i as usize]));
                rank(m) > held
            };
            if better(*exact, exact_rank) {
                *exact = meta + 1;
            }
            if better(*below, below_rank) {
                *below = meta + 1;
            }
        }
        NsNames { slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every (name, exact slot, below slot), for the snapshot.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32, u32)> {
        self.slots.iter().map(|(n, (e, b))| (&**n, *e, *b))
    }

    /// From the snapshot's slots, each checked against the table size.
    pub fn from_slots(slots: Vec<(String, u32, u32)>, metas: usize) -> Option<NsNames> {
        let fits = |s: u32| s as usize <= metas;
        slots
            .into_iter()
            .map(|(n, e, b)| (fits(e) && fits(b)).then(|| (n.into_boxed_str(), (e, b))))
            .collect::<Option<HashMap<_, _>>>()
            .map(|slots| NsNames { slots })
    }

    /// The most specific entry for `name` (lower case, no trailing dot):
    /// its exact slot, else the below slot of the nearest ancestor.
    pub fn lookup(&self, name: &str) -> Option<NsNameMatch> {
        if self.slots.is_empty() {
            return None;
        }
        let depth = |n: &str| u8::try_from(n.split('.').count()).unwrap_or(u8::MAX);
        if let Some((exact, _)) = self.slots.get(name)
            && *exact != 0
        {
            return Some(NsNameMatch {
                meta: exact - 1,
                depth: depth(name),
                at_name: true,
            });
        }
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some((_, below)) = self.slots.get(parent)
                && *below != 0
            {
                return Some(NsNameMatch {
                    meta: below - 1,
                    depth: depth(parent),
                    at_name: false,
                });
            }
            rest = parent;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Scope, Verdict};
    use crate::policy::Action;

    fn meta(scope: Scope, verdict: Verdict) -> EntryMeta {
        EntryMeta {
            verdict,
            scope,
            feed: 0,
            category: 0,
            detail: None,
            action: Action::Nxdomain,
            answer: None,
        }
    }

    #[test]
    fn the_most_specific_name_wins_and_allow_beats_block_at_one_name() {
        let metas = [
            meta(Scope::Exact, Verdict::Block),
            meta(Scope::Below, Verdict::Block),
            meta(Scope::Exact, Verdict::Allow),
            meta(Scope::Below, Verdict::Allow),
        ];
        let names = NsNames::build(
            [
                ("ns1.evil.example", 0),
                ("evil.example", 1),
                ("ok.evil.example", 2),
                ("bad.example", 1),
                ("bad.example", 3),
            ],
            &metas,
        );
        let found = |n: &str| names.lookup(n).map(|m| (m.meta, m.depth, m.at_name));
        assert_eq!(found("ns1.evil.example"), Some((0, 3, true)));
        assert_eq!(found("ns2.evil.example"), Some((1, 2, false)));
        assert_eq!(found("a.b.evil.example"), Some((1, 2, false)));
        assert_eq!(found("ok.evil.example"), Some((2, 3, true)));
        // Below-only: the listed name itself is not covered.
        assert_eq!(found("evil.example"), None);
        // The allow of the same name wins its below slot.
        assert_eq!(found("ns.bad.example"), Some((3, 2, false)));
        assert_eq!(found("example"), None);
        assert_eq!(found("other.test"), None);
    }

    #[test]
    fn slots_from_a_snapshot_past_the_table_are_refused() {
        assert!(NsNames::from_slots(vec![("a.example".into(), 1, 0)], 1).is_some());
        assert!(NsNames::from_slots(vec![("a.example".into(), 2, 0)], 1).is_none());
    }
}
