//! Merge parsed feeds into one [`Blocklist`].
//!
//! Each feed's entries are already sorted, so the merge is a k-way merge
//! of sorted runs (no global sort), folding every group of equal keys into
//! its two slots by the precedence rules and streaming the result into an
//! in-memory `fst::MapBuilder`. Protected names are applied here, so a
//! change to the protected lists needs no re-parse; so are the category
//! and default actions, which depend on the config rather than the feed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use super::feed::{LocalMeta, ParsedFeed, Protected};
use super::{EntryMeta, FeedInfo, Layer};
use crate::domain;
use crate::formats::{Scope, Verdict};
use crate::policy::{Action, choose_action};
use crate::prefix::PrefixMap;

/// Category of entries whose feed gives none and whose config sets none.
pub const DEFAULT_CATEGORY: &str = "uncategorised";
/// How many suppressed names a feed report keeps verbatim.
const SUPPRESSED_KEPT: usize = 5;
pub(super) const CONTESTED: u32 = 1 << 31;

/// Per-feed suppression tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suppressed {
    pub count: usize,
    pub first: Vec<String>,
}

/// A merge that could not produce a list.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("building the automaton failed: {0}")]
    Fst(#[from] fst::Error),
    #[error("too many distinct {what} (at most {max})")]
    TooMany { what: &'static str, max: usize },
    #[error("a layer-building thread panicked")]
    Panicked,
}

/// Config the merge applies.
#[derive(Debug, Clone, Default)]
pub struct MergeSettings {
    pub by_category: BTreeMap<String, Action>,
    pub default_action: Action,
    /// Categories whose address indicators are used in every feed.
    pub answer_ip_categories: BTreeSet<String>,
}

impl MergeSettings {
    /// The settings a config gives every merge.
    pub fn of(config: &crate::config::Config) -> MergeSettings {
        MergeSettings {
            by_category: config.actions.clone(),
            default_action: config.blocklist.default_action,
            answer_ip_categories: config
                .blocklist
                .answer_ip_categories
                .iter()
                .cloned()
                .collect(),
        }
    }
}

/// Global tables being filled while feeds are merged.
#[derive(Default)]
struct Tables {
    categories: Vec<Box<str>>,
    category_ids: HashMap<Box<str>, u16>,
    details: Vec<Box<str>>,
    detail_ids: HashMap<Box<str>, u32>,
    answers: Vec<Box<[IpAddr]>>,
    answer_ids: HashMap<Box<[IpAddr]>, u32>,
    metas: Vec<EntryMeta>,
    meta_ids: HashMap<EntryMeta, u32>,
}

impl Tables {
    fn category(&mut self, name: &str) -> Result<u16, MergeError> {
        if let Some(id) = self.category_ids.get(name) {
            return Ok(*id);
        }
        let id = u16::try_from(self.categories.len()).map_err(|_| MergeError::TooMany {
            what: "categories",
            max: usize::from(u16::MAX),
        })?;
        self.categories.push(name.into());
        self.category_ids.insert(name.into(), id);
        Ok(id)
    }

    fn detail(&mut self, text: &str) -> u32 {
        if let Some(id) = self.detail_ids.get(text) {
            return *id;
        }
        let id = self.details.len() as u32;
        self.details.push(text.into());
        self.detail_ids.insert(text.into(), id);
        id
    }

    fn answer(&mut self, addrs: &[IpAddr]) -> u32 {
        if let Some(id) = self.answer_ids.get(addrs) {
            return *id;
        }
        let id = self.answers.len() as u32;
        self.answers.push(addrs.into());
        self.answer_ids.insert(addrs.into(), id);
        id
    }

    fn meta(&mut self, meta: EntryMeta) -> Result<u32, MergeError> {
        if let Some(id) = self.meta_ids.get(&meta) {
            return Ok(*id);
        }
        let id = self.metas.len() as u32;
        if id >= CONTESTED - 1 {
            return Err(MergeError::TooMany {
                what: "metadata entries",
                max: (CONTESTED - 2) as usize,
            });
        }
        self.metas.push(meta);
        self.meta_ids.insert(meta, id);
        Ok(id)
    }

    /// Global metadata for one feed-local entry kind.
    fn global(
        &mut self,
        feed: &ParsedFeed,
        feed_id: u16,
        local: &LocalMeta,
        settings: &MergeSettings,
    ) -> Result<u32, MergeError> {
        let source = &feed.source;
        let category_name = source
            .category
            .as_deref()
            .or(local.category.map(|c| feed.string(c)))
            .unwrap_or(DEFAULT_CATEGORY);
        // The operator's per-feed setting, then the format's own meaning,
        // then the category's action, then the default.
        let action = choose_action(
            source.action.or(local.action),
            category_name,
            &settings.by_category,
            settings.default_action,
        );
        let category = self.category(category_name)?;
        let detail = local.detail.map(|d| self.detail(feed.string(d)));
        let answer = local.answer.map(|a| self.answer(feed.answer(a)));
        self.meta(EntryMeta {
            verdict: local.verdict,
            scope: local.scope,
            feed: feed_id,
            category,
            detail,
            action,
            answer,
        })
    }
}

/// Rank of an entry for a query at exactly its name; 0 = does not apply.
pub(super) fn exact_rank(e: &EntryMeta) -> u8 {
    match (e.scope, e.verdict) {
        (Scope::Exact, Verdict::Allow) => 4,
        (Scope::Exact, Verdict::Block) => 3,
        (Scope::Subtree, Verdict::Allow) => 2,
        (Scope::Subtree, Verdict::Block) => 1,
        (Scope::Below, _) => 0,
    }
}

/// Rank of an entry for a query below its name; 0 = does not apply.
pub(super) fn below_rank(e: &EntryMeta) -> u8 {
    match (e.scope, e.verdict) {
        (Scope::Exact, _) => 0,
        (_, Verdict::Allow) => 2,
        (_, Verdict::Block) => 1,
    }
}

/// The winning entry of a group for one slot, encoded (see the module doc
/// of `blocklist`). The group is in feed order, so the first of equal
/// ranks wins.
fn fold_slot(group: &[u32], metas: &[EntryMeta], rank: fn(&EntryMeta) -> u8) -> u32 {
    let rank_of = |m: &u32| rank(&metas[*m as usize]);
    let mut winner: Option<&u32> = None;
    for m in group {
        if rank_of(m) > winner.map_or(0, rank_of) {
            winner = Some(m);
        }
    }
    let Some(w) = winner else { return 0 };
    let contested = group.iter().any(|m| rank_of(m) > 0 && m != w);
    (w + 1) | if contested { CONTESTED } else { 0 }
}

/// Merge `feeds` (in precedence order for ties) into one layer. Returns
/// the layer and, per feed, what protected names suppressed.
pub fn merge(
    feeds: &[Arc<ParsedFeed>],
    protected: &Protected,
    settings: &MergeSettings,
) -> Result<(Layer, Vec<Suppressed>), MergeError> {
    let ranges: Vec<Range<usize>> = feeds.iter().map(|f| 0..f.len()).collect();
    merge_ranges(feeds, &ranges, protected, settings, false)
}

/// Split one big feed at first-label (TLD) boundaries into up to `n`
/// ranges of about equal size. Every ancestor of a name shares its TLD, so
/// each range can become a layer of its own and be built in parallel.
pub fn shard_ranges(feed: &ParsedFeed, n: usize) -> Vec<Range<usize>> {
    let entries = feed.entries();
    let first_label = |i: usize| {
        let key = feed.key(&entries[i]);
        let end = key
            .iter()
            .position(|b| *b == domain::KEY_SEPARATOR)
            .unwrap_or(key.len());
        &key[..end]
    };
    let mut ranges = Vec::new();
    let mut start = 0;
    for part in 1..n.max(1) {
        let mut cut = (entries.len() * part / n).max(start);
        while cut < entries.len() && cut > 0 && first_label(cut) == first_label(cut - 1) {
            cut += 1;
        }
        if cut > start && cut < entries.len() {
            ranges.push(start..cut);
            start = cut;
        }
    }
    ranges.push(start..entries.len());
    ranges
}

/// Merge the given entry ranges of `feeds` into one layer; `own` marks a
/// layer that holds (part of) one big feed.
pub fn merge_ranges(
    feeds: &[Arc<ParsedFeed>],
    ranges: &[Range<usize>],
    protected: &Protected,
    settings: &MergeSettings,
    own: bool,
) -> Result<(Layer, Vec<Suppressed>), MergeError> {
    let started = Instant::now();
    let mut tables = Tables::default();
    let mut remap: Vec<Vec<u32>> = Vec::with_capacity(feeds.len());
    let mut infos = Vec::with_capacity(feeds.len());
    for (i, feed) in feeds.iter().enumerate() {
        let feed_id = u16::try_from(i).map_err(|_| MergeError::TooMany {
            what: "feeds",
            max: usize::from(u16::MAX),
        })?;
        let ids = feed
            .metas()
            .iter()
            .map(|local| tables.global(feed, feed_id, local, settings))
            .collect::<Result<Vec<u32>, MergeError>>()?;
        remap.push(ids);
        infos.push(FeedInfo {
            name: feed.source.name.clone(),
            format: feed.source.format,
        });
    }

    let addresses = merge_addresses(feeds, ranges, &remap, &tables, settings);
    let clients = merge_clients(feeds, ranges, &remap, &tables, ParsedFeed::clients);
    let ns_addresses = merge_clients(feeds, ranges, &remap, &tables, ParsedFeed::ns_nets);
    // Like addresses, a big feed's NS names go with its first shard.
    let ns_names = super::ns_names::NsNames::build(
        feeds
            .iter()
            .enumerate()
            .filter(|(f, _)| ranges[*f].start == 0)
            .flat_map(|(f, feed)| {
                let remap = &remap[f];
                feed.ns_names()
                    .iter()
                    .map(move |(name, local)| (&**name, remap[*local as usize]))
            }),
        &tables.metas,
    );

    let mut suppressed = vec![Suppressed::default(); feeds.len()];
    let mut heap: BinaryHeap<Reverse<(&[u8], usize, usize)>> =
        BinaryHeap::with_capacity(feeds.len());
    for (f, feed) in feeds.iter().enumerate() {
        let start = ranges[f].start;
        if let Some(e) = feed.entries().get(start).filter(|_| start < ranges[f].end) {
            heap.push(Reverse((feed.key(e), f, start)));
        }
    }
    // Sized up front: growing a 10 M-name layer's automaton and hashes by
    // doubling copied each several times over. An automaton takes about
    // 16 bytes a name (docs/performance.md); the spare is given back below.
    let keys: usize = ranges.iter().map(|r| r.len()).sum();
    let mut builder = fst::MapBuilder::new(Vec::with_capacity(keys * 16))?;
    let mut hashes = Vec::with_capacity(keys);
    let mut names = 0;
    let mut group: Vec<u32> = Vec::new();
    while let Some(Reverse((key, _, _))) = heap.peek().copied() {
        group.clear();
        while let Some(Reverse((k, f, pos))) = heap.peek().copied() {
            if k != key {
                break;
            }
            heap.pop();
            let feed = &feeds[f];
            let entry = feed.entries()[pos];
            let meta = remap[f][entry.meta as usize];
            let m = &tables.metas[meta as usize];
            if m.verdict == Verdict::Block
                && !feed.source.trusted
                && protected.suppresses_key(key, m.scope)
            {
                let s = &mut suppressed[f];
                s.count += 1;
                if s.first.len() < SUPPRESSED_KEPT {
                    s.first.push(domain::name_from_key(key));
                }
            } else {
                group.push(meta);
            }
            if let Some(next) = feed
                .entries()
                .get(pos + 1)
                .filter(|_| pos + 1 < ranges[f].end)
            {
                heap.push(Reverse((feed.key(next), f, pos + 1)));
            }
        }
        if group.is_empty() {
            continue;
        }
        let exact = fold_slot(&group, &tables.metas, exact_rank);
        let below = fold_slot(&group, &tables.metas, below_rank);
        if exact | below == 0 {
            continue;
        }
        builder.insert(key, (u64::from(exact) << 32) | u64::from(below))?;
        hashes.push(super::filter::key_hash(key));
        names += 1;
    }
    let mut bytes = builder.into_inner()?;
    bytes.shrink_to_fit();
    let map = fst::Map::new(super::FstBytes::Owned(bytes))?;
    tracing::debug!(
        names,
        took_ms = started.elapsed().as_millis() as u64,
        "feeds merged"
    );
    let tlds = Layer::tld_bounds(&map);
    let tld_keys = Layer::lists_a_tld(&map);
    let list = Layer {
        map,
        metas: tables.metas,
        feeds: infos,
        categories: tables.categories,
        details: tables.details,
        answers: tables.answers,
        addresses,
        clients,
        ns_names,
        ns_addresses,
        filter: super::filter::KeyFilter::build(hashes),
        tlds,
        tld_keys,
        entries: names,
        own,
    };
    Ok((list, suppressed))
}

/// The address indicators of `feeds` that take part in the answer-IP
/// policy: those of feeds that opted in, of enabled categories, and of
/// exception lists. A big feed's addresses go with its first shard only.
/// At one network allow beats block, then the first feed wins.
fn merge_addresses(
    feeds: &[Arc<ParsedFeed>],
    ranges: &[Range<usize>],
    remap: &[Vec<u32>],
    tables: &Tables,
    settings: &MergeSettings,
) -> PrefixMap<u32> {
    let mut addresses = PrefixMap::default();
    let metas = &tables.metas;
    for (f, feed) in feeds.iter().enumerate() {
        if ranges[f].start != 0 {
            continue;
        }
        for (net, local) in feed.nets() {
            let meta = remap[f][*local as usize];
            let m = &metas[meta as usize];
            let category = &tables.categories[usize::from(m.category)];
            let enabled = feed.source.answer_ip
                || feed.source.allow_only
                || settings.answer_ip_categories.contains(&**category);
            if enabled {
                addresses.insert_with(*net, meta, |old, new| {
                    metas[*old as usize].verdict == Verdict::Block
                        && metas[*new as usize].verdict == Verdict::Allow
                });
            }
        }
    }
    addresses
}

/// The RPZ client-IP or NSIP triggers of `feeds`, as `table` gives them
/// (always in force: such a trigger is explicit policy). As for
/// addresses: a big feed's go with its first shard, and at one network
/// allow beats block, then the first feed wins.
fn merge_clients(
    feeds: &[Arc<ParsedFeed>],
    ranges: &[Range<usize>],
    remap: &[Vec<u32>],
    tables: &Tables,
    table: fn(&ParsedFeed) -> &[(IpNet, u32)],
) -> PrefixMap<u32> {
    let mut clients = PrefixMap::default();
    let metas = &tables.metas;
    for (f, feed) in feeds.iter().enumerate() {
        if ranges[f].start != 0 {
            continue;
        }
        for (net, local) in table(feed) {
            let meta = remap[f][*local as usize];
            clients.insert_with(*net, meta, |old, new| {
                metas[*old as usize].verdict == Verdict::Block
                    && metas[*new as usize].verdict == Verdict::Allow
            });
        }
    }
    clients
}

#[cfg(test)]
pub(crate) mod tests;
