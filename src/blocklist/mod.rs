//! The compiled blocklist: an `fst::Map` over reversed-label names plus a
//! small table of entry metadata, and the lock-free holder queries read it
//! through.
//!
//! # Layout
//!
//! Keys are names with their labels reversed and every label closed by a
//! `.` (`example.com` -> `com.example.`; see [`crate::domain`]). The `u64`
//! value of a key packs two *slots*:
//!
//! * the **exact** slot (high 32 bits): what applies to a query for exactly
//!   this name: an exact entry if there is one, else a subtree entry;
//! * the **below** slot (low 32 bits): what applies to names strictly below
//!   this one: subtree and below-only (`*.name`) entries.
//!
//! A slot is `0` when empty, else `1 + index` into the metadata table, with
//! bit 31 set when another entry lost to the winner at that slot (so
//! `check` can say which precedence rule decided).
//!
//! # Lookup
//!
//! One walk of the reversed query name through the automaton
//! ([`Blocklist::lookup`]): at each label boundary where a key ends, the
//! below slot is a candidate; at the end of the name, the exact slot is.
//! The deepest candidate is the most specific entry and wins. There is no
//! per-suffix re-walk and no allocation.
//!
//! # Precedence (docs/architecture.md "Matching and precedence")
//!
//! Most specific name first; at the same name an exact entry beats a
//! subtree entry; then allow beats block. The last two are settled when the
//! slots are filled at compile time ([`merge`], which folds each slot); the first by the walk.
//!
//! # Quirks
//!
//! * Metadata indexes are limited to 2^31 - 1, far above any real feed set.
//! * The blocklist is immutable. A reload makes a new one and swaps it
//!   into the [`BlocklistHandle`]; queries in flight keep the old one.
//!
//! Over 400 lines: this layout description and the `Layer` and
//! `Blocklist` types it describes, which every sibling module reads.

mod compiler;
mod feed;
mod filter;
mod fingerprint;
pub mod increments;
pub mod last_good;
mod lookup;
mod mask;
mod merge;
mod ns_names;
pub mod snapshot;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::formats::{Format, Scope, Verdict};
use crate::policy::Action;
use crate::prefix::PrefixMap;

pub use compiler::{
    CompileError, CompileSummary, Compiler, FeedResult, compile, feed_files, is_feed_file_name,
    load_protected,
};
pub use feed::{FeedBuilder, FeedSource, ParsedFeed, Protected};
use filter::KeyFilter;
pub use fingerprint::{Fingerprint, fingerprint_inputs, inputs_match, settings_match};
pub use lookup::{Explanation, Match, Step};
pub use merge::{
    DEFAULT_CATEGORY, MergeError, MergeSettings, Suppressed, merge, merge_ranges, shard_ranges,
};
use ns_names::NsNames;

/// Feeds with at least this many entries get a layer of their own.
pub const OWN_LAYER_MIN: usize = 50_000;

/// The automaton's bytes: built in memory, or mapped from a snapshot file.
pub enum FstBytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl AsRef<[u8]> for FstBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            FstBytes::Owned(v) => v,
            FstBytes::Mapped(m) => m,
        }
    }
}

/// Shared, hot-swappable blocklist. Queries `load()` it (no lock, no
/// allocation); a reload `store()`s a new one.
pub type BlocklistHandle = Arc<ArcSwap<Blocklist>>;

/// Metadata of one distinct (feed, category, verdict, scope, action,
/// detail) combination; many entries share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryMeta {
    pub verdict: Verdict,
    pub scope: Scope,
    /// Index into its layer's feeds.
    pub feed: u16,
    /// Index into the category names.
    pub category: u16,
    /// Index into the detail strings (family, indicator id), if any.
    pub detail: Option<u32>,
    /// The action chosen at compile time (feed setting, else the format's
    /// own, else the category's, else the default).
    pub action: Action,
    /// Index into the local-data answer sets (sinkhole addresses the feed
    /// itself gave), if any.
    pub answer: Option<u32>,
}

/// A feed as the compiled list remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedInfo {
    /// File name in feeds_dir, or `allow:<file>` for exception lists.
    pub name: String,
    pub format: Format,
}

/// One automaton with its own metadata tables. A big feed gets a layer of
/// its own, built when that feed changes and reused otherwise; all other
/// feeds share one layer that is cheap to reload (see `compiler`).
pub struct Layer {
    map: fst::Map<FstBytes>,
    metas: Vec<EntryMeta>,
    feeds: Vec<FeedInfo>,
    categories: Vec<Box<str>>,
    details: Vec<Box<str>>,
    answers: Vec<Box<[IpAddr]>>,
    /// Listed addresses and ranges (answer-IP policy) -> metadata index.
    addresses: PrefixMap<u32>,
    /// RPZ client-IP triggers: client networks -> metadata index.
    clients: PrefixMap<u32>,
    /// RPZ NSDNAME triggers: name-server names.
    ns_names: NsNames,
    /// RPZ NSIP triggers: name-server networks -> metadata index.
    ns_addresses: PrefixMap<u32>,
    /// "Certainly not here" for most unlisted names, before the walk;
    /// `None` (an empty layer) means always walk.
    filter: Option<KeyFilter>,
    /// The smallest and largest first label (with its separator) of the
    /// keys: a big feed's layers each hold a TLD range, so a query whose
    /// TLD is outside it skips the layer. Empty for an empty layer.
    tlds: (Box<[u8]>, Box<[u8]>),
    /// Whether some key is a first label alone (a TLD listed whole). Lists
    /// rarely have one; without, a query's first prefix is not probed.
    tld_keys: bool,
    /// Distinct names in the map.
    entries: usize,
    /// Holds (a TLD range of) one big feed, rather than the shared layer
    /// of the small feeds.
    own: bool,
}

impl Layer {
    /// A layer with nothing in it.
    pub fn empty() -> Layer {
        Layer {
            map: fst::Map::new(FstBytes::Owned(fst::Map::default().into_fst().into_inner()))
                .unwrap_or_else(|_| unreachable_empty()),
            metas: Vec::new(),
            feeds: Vec::new(),
            categories: Vec::new(),
            details: Vec::new(),
            answers: Vec::new(),
            addresses: PrefixMap::default(),
            clients: PrefixMap::default(),
            ns_names: NsNames::default(),
            ns_addresses: PrefixMap::default(),
            filter: None,
            tlds: (Box::default(), Box::default()),
            tld_keys: false,
            entries: 0,
            own: false,
        }
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Whether the layer holds (part of) one big feed.
    pub fn is_own(&self) -> bool {
        self.own
    }

    pub fn feeds(&self) -> &[FeedInfo] {
        &self.feeds
    }

    pub fn fst_bytes(&self) -> usize {
        self.map.as_fst().as_bytes().len()
    }

    /// Addresses and ranges in the answer-IP policy.
    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }

    /// The first label range of an automaton's keys (see `tlds`): follow
    /// the smallest (largest) transition from the root to the first
    /// separator.
    fn tld_bounds(map: &fst::Map<FstBytes>) -> (Box<[u8]>, Box<[u8]>) {
        let fst = map.as_fst();
        let edge = |last: bool| {
            let mut node = fst.root();
            let mut out = Vec::new();
            while !node.is_empty() && out.len() < 64 {
                let t = node.transition(if last { node.len() - 1 } else { 0 });
                out.push(t.inp);
                if t.inp == crate::domain::KEY_SEPARATOR {
                    break;
                }
                node = fst.node(t.addr);
            }
            out.into_boxed_slice()
        };
        (edge(false), edge(true))
    }

    /// Whether some key is a bare first label: each path from the root to
    /// its first separator is one first label, and the node after it is
    /// final. The walk visits each distinct first-label prefix once: a few
    /// thousand for real TLDs, whatever the size of the list.
    fn lists_a_tld(map: &fst::Map<FstBytes>) -> bool {
        let fst = map.as_fst();
        let mut todo = vec![(fst.root(), 0usize)];
        while let Some((node, depth)) = todo.pop() {
            for t in node.transitions() {
                let next = fst.node(t.addr);
                if t.inp == crate::domain::KEY_SEPARATOR {
                    if next.is_final() {
                        return true;
                    }
                } else if depth < 64 {
                    todo.push((next, depth + 1));
                }
            }
        }
        false
    }

    /// Whether a query with this first label (lower case, separator
    /// included) can have a key in this layer.
    #[inline]
    fn holds_tld(&self, tld: &[u8]) -> bool {
        tld_within(&self.tlds.0, &self.tlds.1, tld)
    }

    /// Bytes of the negative filter's fingerprints.
    pub fn filter_bytes(&self) -> usize {
        self.filter.as_ref().map_or(0, KeyFilter::bytes)
    }
}

/// `low <= tld <= high`, false for empty bounds. It runs for every layer
/// on every query, so the first byte decides wherever it can: a byte-string
/// comparison is a memcmp call each side.
#[inline]
fn tld_within(low: &[u8], high: &[u8], tld: &[u8]) -> bool {
    match (low.first(), high.first(), tld.first()) {
        (Some(&l), Some(&h), Some(&t)) if l < t && t < h => true,
        (Some(&l), Some(&h), Some(&t)) if t < l || h < t => false,
        (Some(_), Some(_), Some(_)) => low <= tld && tld <= high,
        _ => false,
    }
}

/// A compiled, immutable blocklist: its layers, consulted together.
pub struct Blocklist {
    layers: Vec<Arc<Layer>>,
    /// Per layer, what an applied increment hides in it; empty (the
    /// usual case) when nothing is hidden anywhere.
    masks: Vec<Option<Arc<mask::Mask>>>,
    /// Increases by one with every swap; 0 is the empty list at start-up.
    generation: u64,
}

impl Blocklist {
    /// A list with nothing in it (before the first compile finishes).
    pub fn empty() -> Blocklist {
        Blocklist::from_layers(Vec::new())
    }

    pub fn from_layers(layers: Vec<Arc<Layer>>) -> Blocklist {
        Blocklist {
            layers,
            masks: Vec::new(),
            generation: 0,
        }
    }

    /// What is hidden in layer `i`, if anything.
    #[inline]
    fn mask(&self, i: usize) -> Option<&mask::Mask> {
        self.masks.get(i)?.as_deref()
    }

    /// Whether some layer has entries hidden by an increment (such a
    /// list is not written as the snapshot: it is not what the feeds
    /// compile to yet).
    pub fn is_masked(&self) -> bool {
        self.masks.iter().any(Option::is_some)
    }

    pub fn layers(&self) -> &[Arc<Layer>] {
        &self.layers
    }

    /// Distinct names over all layers (a name in two layers counts twice).
    pub fn entries(&self) -> usize {
        self.layers.iter().map(|l| l.entries).sum()
    }

    /// Addresses and ranges in the answer-IP policy, over all layers.
    pub fn addresses(&self) -> usize {
        self.layers.iter().map(|l| l.addresses.len()).sum()
    }

    /// Client-IP triggers, over all layers.
    pub fn clients(&self) -> usize {
        self.layers.iter().map(|l| l.clients.len()).sum()
    }

    /// The client-IP trigger for a client address: chosen as
    /// [`Blocklist::lookup_address`] chooses. `None` at once when no feed
    /// has one.
    pub fn lookup_client(&self, ip: IpAddr) -> Option<(Match, IpNet)> {
        if self.layers.iter().all(|l| l.clients.is_empty()) {
            return None;
        }
        self.lookup_prefix(ip, |l| &l.clients)
    }

    /// Whether any feed has a name-server trigger: (NSDNAME, NSIP). While
    /// neither, an answer costs no name-server lookups.
    pub fn ns_triggers(&self) -> (bool, bool) {
        let names = self.layers.iter().any(|l| !l.ns_names.is_empty());
        let addresses = self.layers.iter().any(|l| !l.ns_addresses.is_empty());
        (names, addresses)
    }

    /// The NSDNAME trigger for a name server's name (lower case, no
    /// trailing dot): the most specific over all layers; at one depth the
    /// higher rank, then the earlier layer. Returns the match and the
    /// listed name.
    pub fn lookup_ns_name<'n>(&self, name: &'n str) -> Option<(Match, &'n str)> {
        let mut best: Option<Match> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let Some(found) = layer.ns_names.lookup(name) else {
                continue;
            };
            let found = Match {
                layer: i as u8,
                meta: found.meta,
                depth: found.depth,
                contested: false,
                at_name: found.at_name,
            };
            let better = match &best {
                None => true,
                Some(b) => {
                    found.depth > b.depth
                        || found.depth == b.depth && self.rank(&found) > self.rank(b)
                }
            };
            if better {
                best = Some(found);
            }
        }
        let found = best?;
        let skip = name.split('.').count() - usize::from(found.depth);
        let listed = name.splitn(skip + 1, '.').last().unwrap_or(name);
        Some((found, listed))
    }

    /// The NSIP trigger for a name server's address, chosen as
    /// [`Blocklist::lookup_address`] chooses.
    pub fn lookup_ns_address(&self, ip: IpAddr) -> Option<(Match, IpNet)> {
        self.lookup_prefix(ip, |l| &l.ns_addresses)
    }

    /// Addresses in use per feed name (for the compile report).
    pub fn addresses_by_feed(&self) -> std::collections::HashMap<&str, usize> {
        let mut out = std::collections::HashMap::new();
        for layer in &self.layers {
            for (_, meta) in layer.addresses.iter() {
                if let Some(m) = layer.metas.get(*meta as usize)
                    && let Some(feed) = layer.feeds.get(usize::from(m.feed))
                {
                    *out.entry(feed.name.as_str()).or_default() += 1;
                }
            }
        }
        out
    }

    /// The entry that decides an answer address: the most specific listed
    /// network holding it over all layers; at one network allow beats
    /// block, then the earlier layer. Costs one hash probe per distinct
    /// prefix length per layer, whatever the number of entries.
    /// [`Match::depth`] is the network's prefix length.
    pub fn lookup_address(&self, ip: IpAddr) -> Option<(Match, IpNet)> {
        self.lookup_prefix(ip, |l| &l.addresses)
    }

    fn lookup_prefix(
        &self,
        ip: IpAddr,
        table: impl Fn(&Layer) -> &PrefixMap<u32>,
    ) -> Option<(Match, IpNet)> {
        let mut best: Option<(Match, IpNet)> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let Some((net, meta)) = table(layer).longest(ip) else {
                continue;
            };
            if *meta as usize >= layer.metas.len() {
                continue;
            }
            let found = Match {
                layer: i as u8,
                meta: *meta,
                depth: net.prefix_len(),
                contested: false,
                at_name: true,
            };
            let better = match &best {
                None => true,
                Some((b, _)) => {
                    found.depth > b.depth
                        || found.depth == b.depth
                            && self.meta(&found).verdict == Verdict::Allow
                            && self.meta(b).verdict == Verdict::Block
                }
            };
            if better {
                best = Some((found, net));
            }
        }
        best
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// Size of the automata in bytes.
    pub fn fst_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.fst_bytes()).sum()
    }

    /// Size of the negative filters in bytes.
    pub fn filter_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.filter_bytes()).sum()
    }

    fn layer(&self, m: &Match) -> &Layer {
        &self.layers[usize::from(m.layer)]
    }

    pub fn meta(&self, m: &Match) -> &EntryMeta {
        &self.layer(m).metas[m.meta as usize]
    }

    pub fn feed(&self, m: &Match) -> &FeedInfo {
        &self.layer(m).feeds[usize::from(self.meta(m).feed)]
    }

    pub fn category(&self, m: &Match) -> &str {
        &self.layer(m).categories[usize::from(self.meta(m).category)]
    }

    pub fn detail(&self, m: &Match) -> Option<&str> {
        self.meta(m)
            .detail
            .map(|d| &*self.layer(m).details[d as usize])
    }

    /// The feed's own answer addresses for an entry (RPZ local data,
    /// hosts lines with a real address).
    pub fn answer(&self, m: &Match) -> &[IpAddr] {
        self.meta(m)
            .answer
            .map_or(&[], |a| &self.layer(m).answers[a as usize])
    }

    /// Every feed in every layer.
    pub fn feeds(&self) -> impl Iterator<Item = &FeedInfo> {
        self.layers.iter().flat_map(|l| l.feeds.iter())
    }
}

/// An empty map always builds; this is never called.
fn unreachable_empty() -> fst::Map<FstBytes> {
    panic!("an empty fst is always valid")
}

/// Make a handle holding an empty list.
pub fn empty_handle() -> BlocklistHandle {
    Arc::new(ArcSwap::from_pointee(Blocklist::empty()))
}

#[cfg(test)]
mod tests {
    use super::tld_within;

    fn reference(low: &[u8], high: &[u8], tld: &[u8]) -> bool {
        !low.is_empty() && low <= tld && tld <= high
    }

    proptest::proptest! {
        /// The first-byte shortcut decides as the byte-string comparison
        /// does, bounds sharing the query's first byte and empty ones too.
        #[test]
        fn the_tld_range_check_is_the_byte_string_comparison(
            low in proptest::collection::vec(b'a'..=b'e', 0..4),
            high in proptest::collection::vec(b'a'..=b'e', 0..4),
            tld in proptest::collection::vec(b'a'..=b'e', 0..4),
        ) {
            proptest::prop_assert_eq!(tld_within(&low, &high, &tld), reference(&low, &high, &tld));
        }
    }

    #[test]
    fn the_tld_range_check_at_its_edges() {
        for (low, high, tld) in [
            (&b"com."[..], &b"net."[..], &b"com."[..]),
            (b"com.", b"net.", b"net."),
            (b"com.", b"net.", b"co."),
            (b"com.", b"net.", b"nets."),
            (b"com.", b"com.", b"com."),
            (b"", b"", b"com."),
            (b"com.", b"net.", b""),
        ] {
            assert_eq!(tld_within(low, high, tld), reference(low, high, tld));
        }
    }
}
