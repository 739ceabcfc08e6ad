//! One feed, parsed: its entries as sorted reversed-label keys with
//! feed-local metadata. This is what the compiler caches per feed file, so
//! a reload re-parses only the feeds that changed and merges the rest as
//! they are.
//!
//! Keys live back to back in one arena: a million small boxes would cost
//! time to make and leave a fragmented heap the process cannot give back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::config::FeedConfig;
use crate::domain;
use crate::formats::{Format, Indicator, ParseCounts, Scope, Subject, Verdict};
use crate::policy::Action;

/// The interning maps hash a feed's category, detail and metadata on every
/// line: SipHash was a tenth of a big feed's parse. foldhash is seeded per
/// map, so a hostile feed still cannot aim collisions at it.
type Interned<K> = HashMap<K, u32, foldhash::fast::RandomState>;

/// A file the compiler read, with what applies to its entries: the
/// operator's `[[feed]]` entry ([`FeedConfig`], what was written) resolved
/// for this file, the detected format, and whether it is an allow list.
/// Built only by [`FeedSource::feed`] and [`FeedSource::allow_list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSource {
    /// File name in feeds_dir, or `allow:<file>` for an exception list.
    pub name: String,
    pub format: Format,
    /// Overrides the feed's own categories.
    pub category: Option<String>,
    /// Overrides the format's and the category's action.
    pub action: Option<Action>,
    /// May list protected names (`[[feed]] trusted = true`).
    pub trusted: bool,
    /// An exception list: every entry becomes an allow.
    pub allow_only: bool,
    /// Its address indicators take part in the answer-IP policy
    /// (`[[feed]] answer_ip = true`); off by default.
    pub answer_ip: bool,
}

impl FeedSource {
    /// A file in feeds_dir and its `[[feed]]` entry, if it has one. The
    /// format is set once the file has been read.
    pub fn feed(name: String, settings: Option<&FeedConfig>) -> FeedSource {
        FeedSource {
            name,
            format: Format::Plain,
            category: settings.and_then(|s| s.category.clone()),
            action: settings.and_then(|s| s.action),
            trusted: settings.is_some_and(|s| s.trusted),
            allow_only: false,
            answer_ip: settings.is_some_and(|s| s.answer_ip),
        }
    }

    /// An exception list (`blocklist.allow`): every entry becomes an allow.
    pub fn allow_list(file_name: &str) -> FeedSource {
        FeedSource {
            name: format!("allow:{file_name}"),
            format: Format::Plain,
            category: Some("allow".to_owned()),
            action: None,
            trusted: false,
            allow_only: true,
            // An exception never hurts; addresses in an allow list always
            // exempt answers.
            answer_ip: true,
        }
    }
}

/// Metadata of an entry as the feed gave it (indexes are feed-local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalMeta {
    pub verdict: Verdict,
    pub scope: Scope,
    pub category: Option<u32>,
    pub detail: Option<u32>,
    /// The format's own action, if any.
    pub action: Option<Action>,
    pub answer: Option<u32>,
}

/// One entry waiting for the merge: its key is `arena[start..start+len]`.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry {
    pub start: u32,
    pub len: u8,
    pub meta: u32,
}

/// A parsed feed, entries sorted by key (ties in file order).
#[derive(Debug)]
pub struct ParsedFeed {
    pub source: FeedSource,
    pub report: ParseCounts,
    arena: Vec<u8>,
    entries: Vec<RawEntry>,
    metas: Vec<LocalMeta>,
    strings: Vec<Box<str>>,
    answers: Vec<Box<[IpAddr]>>,
    /// Address indicators with their local metadata, in file order.
    nets: Vec<(IpNet, u32)>,
    /// RPZ client-IP triggers with their local metadata, in file order.
    clients: Vec<(IpNet, u32)>,
    /// RPZ NSDNAME triggers (name, local metadata), in file order.
    ns_names: Vec<(Box<str>, u32)>,
    /// RPZ NSIP triggers with their local metadata, in file order.
    ns_nets: Vec<(IpNet, u32)>,
}

impl ParsedFeed {
    pub fn entries(&self) -> &[RawEntry] {
        &self.entries
    }

    pub fn key(&self, e: &RawEntry) -> &[u8] {
        &self.arena[e.start as usize..e.start as usize + usize::from(e.len)]
    }

    pub fn metas(&self) -> &[LocalMeta] {
        &self.metas
    }

    pub fn string(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }

    pub fn answer(&self, id: u32) -> &[IpAddr] {
        &self.answers[id as usize]
    }

    /// Address indicators (answer-IP policy) with their local metadata.
    pub fn nets(&self) -> &[(IpNet, u32)] {
        &self.nets
    }

    /// Client-IP triggers (RPZ `rpz-client-ip`) with their local metadata.
    pub fn clients(&self) -> &[(IpNet, u32)] {
        &self.clients
    }

    /// Name-server name triggers (RPZ `rpz-nsdname`): (name, local
    /// metadata); the scope is in the metadata.
    pub fn ns_names(&self) -> &[(Box<str>, u32)] {
        &self.ns_names
    }

    /// Name-server address triggers (RPZ `rpz-nsip`).
    pub fn ns_nets(&self) -> &[(IpNet, u32)] {
        &self.ns_nets
    }

    /// Number of name entries (what sizes a layer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Names and addresses together (for the shrink and size guards).
    pub fn indicators(&self) -> usize {
        self.entries.len()
            + self.nets.len()
            + self.clients.len()
            + self.ns_names.len()
            + self.ns_nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the feed's contents change by the clock alone (STIX validity).
    pub fn next_change(&self) -> Option<SystemTime> {
        self.report.next_change
    }

    /// Approximate heap bytes held, for the operator's memory figures.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<RawEntry>()
            + self.nets.capacity() * std::mem::size_of::<(IpNet, u32)>()
    }
}

/// Collects a feed's indicators into a [`ParsedFeed`].
pub struct FeedBuilder {
    source: FeedSource,
    arena: Vec<u8>,
    entries: Vec<RawEntry>,
    metas: Vec<LocalMeta>,
    meta_ids: Interned<LocalMeta>,
    strings: Vec<Box<str>>,
    string_ids: Interned<Box<str>>,
    answers: Vec<Box<[IpAddr]>>,
    answer_ids: Interned<Box<[IpAddr]>>,
    nets: Vec<(IpNet, u32)>,
    clients: Vec<(IpNet, u32)>,
    ns_names: Vec<(Box<str>, u32)>,
    ns_nets: Vec<(IpNet, u32)>,
}

impl FeedBuilder {
    pub fn new(source: FeedSource) -> FeedBuilder {
        FeedBuilder {
            source,
            arena: Vec::new(),
            entries: Vec::new(),
            metas: Vec::new(),
            meta_ids: Interned::default(),
            strings: Vec::new(),
            string_ids: Interned::default(),
            answers: Vec::new(),
            answer_ids: Interned::default(),
            nets: Vec::new(),
            clients: Vec::new(),
            ns_names: Vec::new(),
            ns_nets: Vec::new(),
        }
    }

    fn intern_string(&mut self, s: &str) -> u32 {
        if let Some(id) = self.string_ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.into());
        self.string_ids.insert(s.into(), id);
        id
    }

    fn intern_answer(&mut self, mut addrs: Vec<IpAddr>) -> u32 {
        addrs.sort();
        addrs.dedup();
        let addrs = addrs.into_boxed_slice();
        if let Some(id) = self.answer_ids.get(&addrs) {
            return *id;
        }
        let id = self.answers.len() as u32;
        self.answers.push(addrs.clone());
        self.answer_ids.insert(addrs, id);
        id
    }

    fn intern_meta(&mut self, meta: LocalMeta) -> u32 {
        if let Some(id) = self.meta_ids.get(&meta) {
            return *id;
        }
        let id = self.metas.len() as u32;
        self.metas.push(meta);
        self.meta_ids.insert(meta, id);
        id
    }

    /// Take in what `later` collected from the next part of the same file
    /// (see `formats::split`), as if its indicators had been added here:
    /// the parsed feed is the one a single pass would have made.
    pub fn append(&mut self, later: FeedBuilder) {
        let strings: Vec<u32> = later
            .strings
            .iter()
            .map(|s| self.intern_string(s))
            .collect();
        let answers: Vec<u32> = later
            .answers
            .iter()
            .map(|a| self.intern_answer(a.to_vec()))
            .collect();
        let metas: Vec<u32> = later
            .metas
            .iter()
            .map(|m| {
                self.intern_meta(LocalMeta {
                    category: m.category.map(|c| strings[c as usize]),
                    detail: m.detail.map(|d| strings[d as usize]),
                    answer: m.answer.map(|a| answers[a as usize]),
                    ..*m
                })
            })
            .collect();
        let meta = |local: u32| metas[local as usize];
        let base = self.arena.len();
        self.arena.extend_from_slice(&later.arena);
        for e in later.entries {
            // As in `add`: a key past 4 GiB of names is not kept.
            let Ok(start) = u32::try_from(base + e.start as usize) else {
                break;
            };
            self.entries.push(RawEntry {
                start,
                meta: meta(e.meta),
                ..e
            });
        }
        let remap = |v: Vec<(IpNet, u32)>| v.into_iter().map(|(n, m)| (n, meta(m)));
        self.nets.extend(remap(later.nets));
        self.clients.extend(remap(later.clients));
        self.ns_nets.extend(remap(later.ns_nets));
        self.ns_names
            .extend(later.ns_names.into_iter().map(|(n, m)| (n, meta(m))));
    }

    /// Add one indicator. Names are normalised by the parsers, so a key is
    /// at most 254 bytes and the arena offset fits in u32 for any feed
    /// under 4 GiB of names.
    pub fn add(&mut self, indicator: Indicator<'_>) {
        let verdict = if self.source.allow_only {
            Verdict::Allow
        } else {
            indicator.verdict
        };
        let category = indicator.category.map(|c| self.intern_string(c));
        let detail = indicator.detail.map(|d| self.intern_string(d));
        let answer = (!indicator.local.is_empty()).then(|| self.intern_answer(indicator.local));
        let meta = LocalMeta {
            verdict,
            scope: indicator.scope,
            category,
            detail,
            action: indicator.action,
            answer,
        };
        let meta = self.intern_meta(meta);
        match (indicator.net, indicator.subject) {
            (Some(net), Subject::Query) => return self.nets.push((net, meta)),
            (Some(net), Subject::Client) => return self.clients.push((net, meta)),
            (Some(net), Subject::NameServer) => return self.ns_nets.push((net, meta)),
            (None, Subject::NameServer) => {
                return self.ns_names.push((indicator.name.into(), meta));
            }
            // A client trigger is an address; a name has no client form.
            (None, Subject::Client) => return,
            (None, Subject::Query) => {}
        }
        let Ok(start) = u32::try_from(self.arena.len()) else {
            return;
        };
        for label in indicator.name.rsplit('.') {
            self.arena.extend_from_slice(label.as_bytes());
            self.arena.push(domain::KEY_SEPARATOR);
        }
        let len = u8::try_from(self.arena.len() - start as usize).unwrap_or(u8::MAX);
        self.entries.push(RawEntry { start, len, meta });
    }

    /// Sort and seal. Ties keep file order (the arena offset is the order).
    pub fn finish(mut self, mut report: ParseCounts) -> ParsedFeed {
        report.addresses = self.nets.len();
        report.name_servers = self.ns_names.len() + self.ns_nets.len();
        self.nets.shrink_to_fit();
        let started = std::time::Instant::now();
        self.entries = sort::sorted(std::mem::take(&mut self.entries), &self.arena);
        self.arena = sort::in_order(&self.arena, &mut self.entries);
        report.apexes_open = apexes_open(&self.arena, &self.entries, &self.metas);
        self.entries.shrink_to_fit();
        tracing::debug!(feed = %self.source.name, entries = self.entries.len(), sort_ms = started.elapsed().as_millis() as u64, "feed sorted");
        ParsedFeed {
            source: self.source,
            report,
            arena: self.arena,
            entries: self.entries,
            metas: self.metas,
            strings: self.strings,
            answers: self.answers,
            nets: self.nets,
            clients: self.clients,
            ns_names: self.ns_names,
            ns_nets: self.ns_nets,
        }
    }
}

/// How many below-only block rules (`*.name`) leave their apex open: no
/// rule of the same feed blocks `name` itself. Tells the operator when a
/// list read as plain may have meant `format = "wildcard"`.
fn apexes_open(arena: &[u8], entries: &[RawEntry], metas: &[LocalMeta]) -> usize {
    let key = |e: &RawEntry| &arena[e.start as usize..e.start as usize + usize::from(e.len)];
    let blocks = |e: &&RawEntry, scope: Scope| {
        let meta = &metas[e.meta as usize];
        meta.verdict == Verdict::Block && meta.scope == scope
    };
    if !entries.iter().any(|e| blocks(&e, Scope::Below)) {
        return 0;
    }
    let subtree: std::collections::HashSet<&[u8]> = entries
        .iter()
        .filter(|e| blocks(e, Scope::Subtree))
        .map(key)
        .collect();
    let exact: std::collections::HashSet<&[u8]> = entries
        .iter()
        .filter(|e| blocks(e, Scope::Exact))
        .map(key)
        .collect();
    let covered = |k: &[u8]| {
        exact.contains(k)
            || k.iter()
                .enumerate()
                .filter(|(_, b)| **b == domain::KEY_SEPARATOR)
                .any(|(i, _)| subtree.contains(&k[..=i]))
    };
    entries
        .iter()
        .filter(|e| blocks(e, Scope::Below))
        .filter(|e| !covered(key(e)))
        .count()
}

/// Names no feed may take down (docs/architecture.md "Protected names"),
/// held as reversed-label keys so the merge can test keys directly.
#[derive(Debug, Default, Clone)]
pub struct Protected {
    names: std::collections::HashSet<Vec<u8>>,
    /// Every name strictly above a protected one (`google.com`, `com` for
    /// `mail.google.com`).
    ancestors: std::collections::HashSet<Vec<u8>>,
    /// The files it was read from, for messages.
    pub sources: Vec<PathBuf>,
}

impl Protected {
    pub fn insert(&mut self, name: &str) {
        let key = domain::reversed_key(name);
        // Every proper prefix of the key that ends on a label boundary is
        // an ancestor.
        for (i, b) in key.iter().enumerate().take(key.len() - 1) {
            if *b == domain::KEY_SEPARATOR && !self.ancestors.insert(key[..=i].to_vec()) {
                // Already there: so are all shorter ones.
            }
        }
        self.names.insert(key);
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Would a block entry at `key` with `scope` cover a protected name?
    pub fn suppresses_key(&self, key: &[u8], scope: Scope) -> bool {
        match scope {
            Scope::Exact => self.names.contains(key),
            Scope::Subtree => self.names.contains(key) || self.ancestors.contains(key),
            Scope::Below => self.ancestors.contains(key),
        }
    }

    /// The same test on a presentation-form name.
    pub fn suppresses(&self, name: &str, scope: Scope) -> bool {
        self.suppresses_key(&domain::reversed_key(name), scope)
    }
}

mod sort;
#[cfg(test)]
mod tests;
