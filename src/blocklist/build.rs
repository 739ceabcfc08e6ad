//! Compile feeds into a [`Blocklist`].
//!
//! Indicators stream in from the parsers; each becomes a reversed-label key
//! and an interned metadata index straight away, so memory during a compile
//! is about one key per indicator. `finish` sorts the keys (stably, so among
//! equals the earlier feed wins), folds every group of equal keys into its
//! two slots by the precedence rules, and streams the result into an
//! in-memory `fst::MapBuilder`.
//!
//! Protected names are applied here, before anything reaches the map: a
//! block indicator that would take down a protected name is suppressed and
//! counted against its feed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Blocklist, EntryMeta, FeedInfo};
use crate::config::Config;
use crate::domain;
use crate::feeds::{self, FeedError, Format, Indicator, ParseReport, Scope, Verdict};
use crate::policy::{Action, choose_action};

/// Category of entries whose feed gives none and whose config sets none.
pub const DEFAULT_CATEGORY: &str = "uncategorised";
/// How many suppressed names a feed report keeps verbatim.
const SUPPRESSED_KEPT: usize = 5;
const CONTESTED: u32 = 1 << 31;

/// A compile that produced no usable list.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot list feeds_dir {path}: {source}")]
    FeedsDir { path: PathBuf, source: io::Error },
    #[error("protected-name list: {0}")]
    Protected(FeedError),
    #[error("building the automaton failed: {0}")]
    Fst(#[from] fst::Error),
    #[error("too many distinct {what} (at most {max})")]
    TooMany { what: &'static str, max: usize },
}

/// Names no feed may take down (DESIGN.md "Protected names").
#[derive(Debug, Default, Clone)]
pub struct Protected {
    names: HashSet<String>,
    /// Every name strictly above a protected one (`google.com`, `com` for
    /// `mail.google.com`).
    ancestors: HashSet<String>,
}

impl Protected {
    pub fn insert(&mut self, name: &str) {
        for (i, n) in domain::self_and_ancestors(name).enumerate() {
            if i == 0 {
                self.names.insert(n.to_owned());
            } else if !self.ancestors.insert(n.to_owned()) {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Would a block entry for `name` with `scope` cover a protected name?
    pub fn suppresses(&self, name: &str, scope: Scope) -> bool {
        match scope {
            Scope::Exact => self.names.contains(name),
            Scope::Subtree => self.names.contains(name) || self.ancestors.contains(name),
            Scope::Below => self.ancestors.contains(name),
        }
    }
}

/// Where a feed's entries come from and what its config says about them.
#[derive(Debug, Clone)]
pub struct FeedSource {
    pub name: String,
    pub format: Format,
    /// Overrides the feed's own category column.
    pub category: Option<String>,
    pub action: Option<Action>,
    /// May list protected names (`[[feed]] trusted = true`).
    pub trusted: bool,
}

/// One indicator waiting for the sort: its key lives in the builder's
/// arena. No per-key allocation: a million small boxes cost time to make
/// and leave a fragmented heap that the process cannot give back.
#[derive(Clone, Copy)]
struct RawEntry {
    /// Offset of the key in the arena; also the insertion order, which
    /// breaks ties so that earlier feeds win among equals.
    start: u32,
    len: u8,
    meta: u32,
}

/// Per-feed suppression tally.
#[derive(Debug, Clone, Default)]
pub struct Suppressed {
    pub count: usize,
    pub first: Vec<String>,
}

/// Accumulates indicators; [`Builder::finish`] makes the blocklist.
pub struct Builder {
    by_category: BTreeMap<String, Action>,
    default_action: Action,
    protected: Protected,
    sources: Vec<FeedSource>,
    /// Allow-list feeds turn every entry into an exception.
    allow_only: Vec<bool>,
    suppressed: Vec<Suppressed>,
    categories: Vec<Box<str>>,
    category_ids: HashMap<Box<str>, u16>,
    details: Vec<Box<str>>,
    detail_ids: HashMap<Box<str>, u32>,
    answers: Vec<Box<[std::net::IpAddr]>>,
    answer_ids: HashMap<Box<[std::net::IpAddr]>, u32>,
    metas: Vec<EntryMeta>,
    meta_ids: HashMap<EntryMeta, u32>,
    entries: Vec<RawEntry>,
    /// Every key, back to back.
    arena: Vec<u8>,
    /// Set when an intern table overflowed; reported by `finish`.
    overflow: Option<(&'static str, usize)>,
}

impl Builder {
    pub fn new(
        by_category: BTreeMap<String, Action>,
        default_action: Action,
        protected: Protected,
    ) -> Builder {
        Builder {
            by_category,
            default_action,
            protected,
            sources: Vec::new(),
            allow_only: Vec::new(),
            suppressed: Vec::new(),
            categories: Vec::new(),
            category_ids: HashMap::new(),
            details: Vec::new(),
            detail_ids: HashMap::new(),
            answers: Vec::new(),
            answer_ids: HashMap::new(),
            metas: Vec::new(),
            meta_ids: HashMap::new(),
            entries: Vec::new(),
            arena: Vec::new(),
            overflow: None,
        }
    }

    /// Register a feed; its entries are then added with the returned id.
    pub fn add_feed(&mut self, source: FeedSource) -> u16 {
        self.add_source(source, false)
    }

    /// Register an exception list: every entry becomes an allow.
    pub fn add_allow_list(&mut self, source: FeedSource) -> u16 {
        self.add_source(source, true)
    }

    fn add_source(&mut self, source: FeedSource, allow_only: bool) -> u16 {
        let id = u16::try_from(self.sources.len()).unwrap_or_else(|_| {
            self.overflow = Some(("feeds", usize::from(u16::MAX)));
            u16::MAX
        });
        self.sources.push(source);
        self.allow_only.push(allow_only);
        self.suppressed.push(Suppressed::default());
        id
    }

    /// Add one indicator from feed `feed`. Returns false when a protected
    /// name suppressed it.
    pub fn add(&mut self, feed: u16, indicator: Indicator<'_>) -> bool {
        let f = usize::from(feed);
        let verdict = if self.allow_only[f] {
            Verdict::Allow
        } else {
            indicator.verdict
        };
        if verdict == Verdict::Block
            && !self.sources[f].trusted
            && self.protected.suppresses(&indicator.name, indicator.scope)
        {
            let s = &mut self.suppressed[f];
            s.count += 1;
            if s.first.len() < SUPPRESSED_KEPT {
                s.first.push(indicator.name);
            }
            return false;
        }
        let source = &self.sources[f];
        let category_name = source
            .category
            .as_deref()
            .or(indicator.category)
            .unwrap_or(DEFAULT_CATEGORY);
        // The operator's per-feed setting, then the format's own meaning,
        // then the category's action, then the default.
        let action = choose_action(
            source.action.or(indicator.action),
            category_name,
            &self.by_category,
            self.default_action,
        );
        let category = intern_category(
            &mut self.categories,
            &mut self.category_ids,
            &mut self.overflow,
            category_name,
        );
        let detail = indicator.detail.map(|d| self.intern_detail(d));
        let answer = (!indicator.local.is_empty()).then(|| self.intern_answer(indicator.local));
        let meta = EntryMeta {
            answer,
            verdict,
            scope: indicator.scope,
            feed,
            category,
            detail,
            action,
        };
        let meta = self.intern_meta(meta);
        let Ok(start) = u32::try_from(self.arena.len()) else {
            self.overflow = Some(("bytes of names", u32::MAX as usize));
            return false;
        };
        for label in indicator.name.rsplit('.') {
            self.arena.extend_from_slice(label.as_bytes());
            self.arena.push(domain::KEY_SEPARATOR);
        }
        // A normalised name is at most 253 characters, so its key is at most 254.
        let len = u8::try_from(self.arena.len() - start as usize).unwrap_or(u8::MAX);
        self.entries.push(RawEntry { start, len, meta });
        true
    }

    fn intern_detail(&mut self, detail: &str) -> u32 {
        if let Some(id) = self.detail_ids.get(detail) {
            return *id;
        }
        let id = self.details.len() as u32;
        self.details.push(detail.into());
        self.detail_ids.insert(detail.into(), id);
        id
    }

    fn intern_answer(&mut self, mut addrs: Vec<std::net::IpAddr>) -> u32 {
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

    fn intern_meta(&mut self, meta: EntryMeta) -> u32 {
        if let Some(id) = self.meta_ids.get(&meta) {
            return *id;
        }
        let id = self.metas.len() as u32;
        if id >= CONTESTED - 1 {
            self.overflow = Some(("metadata entries", (CONTESTED - 2) as usize));
            return 0;
        }
        self.metas.push(meta);
        self.meta_ids.insert(meta, id);
        id
    }

    /// Per-feed suppression counts, in feed id order.
    pub fn suppressed(&self) -> &[Suppressed] {
        &self.suppressed
    }

    /// Sort, merge by precedence and build the automaton.
    pub fn finish(mut self) -> Result<(Blocklist, Vec<Suppressed>), CompileError> {
        if let Some((what, max)) = self.overflow {
            return Err(CompileError::TooMany { what, max });
        }
        let t0 = Instant::now();
        let arena = std::mem::take(&mut self.arena);
        let key = |e: &RawEntry| &arena[e.start as usize..e.start as usize + usize::from(e.len)];
        self.entries
            .sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.start.cmp(&b.start)));
        let sorted = t0.elapsed();
        let mut builder = fst::MapBuilder::memory();
        let mut names = 0;
        let mut start = 0;
        let metas = &self.metas;
        while start < self.entries.len() {
            let k = key(&self.entries[start]);
            let end = start
                + self.entries[start..]
                    .iter()
                    .take_while(|e| key(e) == k)
                    .count();
            let group = &self.entries[start..end];
            let exact = fold_slot(group, metas, exact_rank);
            let below = fold_slot(group, metas, below_rank);
            builder.insert(k, (u64::from(exact) << 32) | u64::from(below))?;
            names += 1;
            start = end;
        }
        drop(std::mem::take(&mut self.entries));
        drop(arena);
        let mut bytes = builder.into_inner()?;
        bytes.shrink_to_fit();
        let map = fst::Map::new(bytes)?;
        tracing::debug!(
            sort_ms = sorted.as_millis() as u64,
            build_ms = (t0.elapsed() - sorted).as_millis() as u64,
            names,
            "automaton built"
        );
        let feeds = self
            .sources
            .iter()
            .map(|s| FeedInfo {
                name: s.name.clone(),
                format: s.format,
            })
            .collect();
        let list = Blocklist {
            map,
            metas: self.metas,
            feeds,
            categories: self.categories,
            details: self.details,
            answers: self.answers,
            entries: names,
            generation: 0,
        };
        Ok((list, self.suppressed))
    }
}

fn intern_category(
    categories: &mut Vec<Box<str>>,
    ids: &mut HashMap<Box<str>, u16>,
    overflow: &mut Option<(&'static str, usize)>,
    name: &str,
) -> u16 {
    if let Some(id) = ids.get(name) {
        return *id;
    }
    let Ok(id) = u16::try_from(categories.len()) else {
        *overflow = Some(("categories", usize::from(u16::MAX)));
        return 0;
    };
    categories.push(name.into());
    ids.insert(name.into(), id);
    id
}

/// Rank of an entry for a query at exactly its name; 0 = does not apply.
fn exact_rank(e: &EntryMeta) -> u8 {
    match (e.scope, e.verdict) {
        (Scope::Exact, Verdict::Allow) => 4,
        (Scope::Exact, Verdict::Block) => 3,
        (Scope::Subtree, Verdict::Allow) => 2,
        (Scope::Subtree, Verdict::Block) => 1,
        (Scope::Below, _) => 0,
    }
}

/// Rank of an entry for a query below its name; 0 = does not apply.
fn below_rank(e: &EntryMeta) -> u8 {
    match (e.scope, e.verdict) {
        (Scope::Exact, _) => 0,
        (_, Verdict::Allow) => 2,
        (_, Verdict::Block) => 1,
    }
}

/// The winning entry of a group for one slot, encoded (see the module doc
/// of `blocklist`). The first of equal ranks wins: feeds keep their order.
fn fold_slot(group: &[RawEntry], metas: &[EntryMeta], rank: fn(&EntryMeta) -> u8) -> u32 {
    let rank_of = |e: &RawEntry| rank(&metas[e.meta as usize]);
    let mut winner: Option<&RawEntry> = None;
    for e in group {
        if rank_of(e) > winner.map_or(0, rank_of) {
            winner = Some(e);
        }
    }
    let Some(w) = winner else { return 0 };
    let contested = group.iter().any(|e| rank_of(e) > 0 && e.meta != w.meta);
    (w.meta + 1) | if contested { CONTESTED } else { 0 }
}

/// What one feed contributed to a compile.
#[derive(Debug, Clone, Default)]
pub struct FeedReport {
    pub name: String,
    pub path: PathBuf,
    /// None when the format could not be determined.
    pub format: Option<Format>,
    pub parse: ParseReport,
    pub suppressed: Suppressed,
    /// Why the feed could not be loaded at all.
    pub error: Option<String>,
}

/// Everything `portcullis compile` prints.
#[derive(Debug, Clone, Default)]
pub struct CompileReport {
    pub feeds: Vec<FeedReport>,
    pub protected_names: usize,
    pub entries: usize,
    pub fst_bytes: usize,
    pub elapsed: Duration,
}

impl CompileReport {
    /// Feeds that loaded (the compile is useless when none did).
    pub fn feeds_loaded(&self) -> usize {
        self.feeds.iter().filter(|f| f.error.is_none()).count()
    }
}

/// Is this file in feeds_dir a feed? Temporary names are not (a download
/// in progress must not be half-read), nor is documentation.
pub fn is_feed_file_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with('~')
        || name.ends_with(".md")
        || name.starts_with("README"))
}

/// The feed files in a directory, sorted by name.
pub fn feed_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_feed_file_name(name) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Read the protected-name lists named in the config.
pub fn load_protected(paths: &[PathBuf]) -> Result<Protected, FeedError> {
    let mut protected = Protected::default();
    for path in paths {
        let format = feeds::detect(path)?;
        let report = feeds::parse_file(path, format, &mut |i| protected.insert(&i.name))?;
        if report.rejected > 0 {
            tracing::warn!(file = %path.display(), rejected = report.rejected, "protected-name list has lines that are not names");
        }
    }
    Ok(protected)
}

/// Compile every feed in `feeds_dir` plus the allow and protected lists.
pub fn compile(config: &Config) -> Result<(Blocklist, CompileReport), CompileError> {
    let started = Instant::now();
    let protected = load_protected(&config.blocklist.protected).map_err(CompileError::Protected)?;
    let protected_names = protected.len();
    let mut builder = Builder::new(
        config.actions.clone(),
        config.blocklist.default_action,
        protected,
    );
    let mut reports = Vec::new();

    let dir = &config.blocklist.feeds_dir;
    let files = feed_files(dir).map_err(|source| CompileError::FeedsDir {
        path: dir.clone(),
        source,
    })?;
    for path in files {
        let name = file_name(&path);
        let settings = config.feed_settings(&name);
        let report = load_one(
            &mut builder,
            &path,
            name.clone(),
            settings.and_then(|s| s.format),
            |format| FeedSource {
                name,
                format,
                category: settings.and_then(|s| s.category.clone()),
                action: settings.and_then(|s| s.action),
                trusted: settings.is_some_and(|s| s.trusted),
            },
            settings.and_then(|s| s.max_entries),
            false,
        );
        reports.push(report);
    }
    for path in &config.blocklist.allow {
        let name = format!("allow:{}", file_name(path));
        let report = load_one(
            &mut builder,
            path,
            name.clone(),
            None,
            |format| FeedSource {
                name,
                format,
                category: Some("allow".to_owned()),
                action: None,
                trusted: false,
            },
            None,
            true,
        );
        reports.push(report);
    }

    let (list, suppressed) = builder.finish()?;
    // Feeds that failed never registered a source, so match by name.
    for (info, s) in list.feeds().iter().zip(suppressed) {
        if let Some(r) = reports.iter_mut().find(|r| r.name == info.name) {
            r.suppressed = s;
        }
    }
    let report = CompileReport {
        feeds: reports,
        protected_names,
        entries: list.entries(),
        fst_bytes: list.fst_bytes(),
        elapsed: started.elapsed(),
    };
    Ok((list, report))
}

fn load_one(
    builder: &mut Builder,
    path: &Path,
    name: String,
    format: Option<Format>,
    source: impl FnOnce(Format) -> FeedSource,
    max_entries: Option<usize>,
    allow: bool,
) -> FeedReport {
    let mut report = FeedReport {
        name,
        path: path.to_path_buf(),
        ..FeedReport::default()
    };
    let format = match format.map_or_else(|| feeds::detect(path), Ok) {
        Ok(f) => f,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.format = Some(format);
    let id = if allow {
        builder.add_allow_list(source(format))
    } else {
        builder.add_feed(source(format))
    };
    // A feed that fails half-way must not leave half its entries behind.
    let mark = (builder.entries.len(), builder.arena.len());
    let parsed = feeds::parse_file(path, format, &mut |i| {
        builder.add(id, i);
    })
    .map_err(|e| e.to_string())
    .and_then(|parse| match max_entries {
        Some(max) if parse.loaded > max => Err(format!(
            "feed {} has {} entries, more than its max_entries {max}; not loaded",
            path.display(),
            parse.loaded
        )),
        _ => Ok(parse),
    });
    match parsed {
        Ok(parse) => {
            report.parse = parse;
            for r in &report.parse.first_rejects {
                tracing::warn!(feed = %report.path.display(), line = r.line, reason = %r.error, "feed line rejected");
            }
        }
        Err(e) => {
            builder.entries.truncate(mark.0);
            builder.arena.truncate(mark.1);
            builder.suppressed[usize::from(id)] = Suppressed::default();
            report.error = Some(e);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_names_suppress_equal_and_above_but_not_below() {
        let mut p = Protected::default();
        p.insert("mail.google.com");
        assert!(p.suppresses("mail.google.com", Scope::Subtree));
        assert!(p.suppresses("google.com", Scope::Subtree));
        assert!(p.suppresses("com", Scope::Subtree));
        assert!(!p.suppresses("evil.mail.google.com", Scope::Subtree));
        assert!(!p.suppresses("docs.google.com", Scope::Subtree));
        // An exact entry only takes down its own name.
        assert!(p.suppresses("mail.google.com", Scope::Exact));
        assert!(!p.suppresses("google.com", Scope::Exact));
        // `*.google.com` covers mail.google.com; `*.mail.google.com` does not.
        assert!(p.suppresses("google.com", Scope::Below));
        assert!(!p.suppresses("mail.google.com", Scope::Below));
    }

    #[test]
    fn suppressed_indicators_are_counted_per_feed() {
        let mut p = Protected::default();
        p.insert("blogspot.com");
        let mut b = Builder::new(BTreeMap::new(), Action::Nxdomain, p);
        let feed = b.add_feed(FeedSource {
            name: "f".into(),
            format: Format::Plain,
            category: None,
            action: None,
            trusted: false,
        });
        let ind = |n: &str| Indicator::block(n.into(), Scope::Subtree);
        assert!(!b.add(feed, ind("blogspot.com")));
        assert!(b.add(feed, ind("evil.blogspot.com")));
        let (list, suppressed) = b.finish().unwrap();
        assert_eq!(suppressed[0].count, 1);
        assert_eq!(suppressed[0].first, ["blogspot.com"]);
        assert!(list.lookup_str("evil.blogspot.com").is_some());
        assert!(list.lookup_str("blogspot.com").is_none());
    }

    #[test]
    fn temporary_and_doc_files_are_not_feeds() {
        for name in [
            ".hidden",
            "x.tmp",
            "x.part",
            "x~",
            "README.md",
            "README",
            "notes.md",
        ] {
            assert!(!is_feed_file_name(name), "{name}");
        }
        for name in ["threats.txt", "list.tsv.gz", "hosts"] {
            assert!(is_feed_file_name(name), "{name}");
        }
    }

    #[test]
    fn actions_follow_feed_then_category_then_default() {
        let mut by_category = BTreeMap::new();
        by_category.insert("phishing".to_owned(), Action::Nodata);
        let mut b = Builder::new(by_category, Action::Nxdomain, Protected::default());
        let tsv = b.add_feed(FeedSource {
            name: "t".into(),
            format: Format::Tsv,
            category: None,
            action: None,
            trusted: false,
        });
        let forced = b.add_feed(FeedSource {
            name: "f".into(),
            format: Format::Plain,
            category: None,
            action: Some(Action::Refused),
            trusted: false,
        });
        let ind = |n: &str, c| Indicator {
            category: Some(c),
            ..Indicator::block(n.into(), Scope::Subtree)
        };
        b.add(tsv, ind("phish.example", "phishing"));
        b.add(tsv, ind("mal.example", "malware"));
        b.add(forced, ind("forced.example", "phishing"));
        let (list, _) = b.finish().unwrap();
        let action = |n: &str| list.meta(&list.lookup_str(n).unwrap()).action;
        assert_eq!(action("phish.example"), Action::Nodata);
        assert_eq!(action("mal.example"), Action::Nxdomain);
        assert_eq!(action("forced.example"), Action::Refused);
    }

    #[test]
    fn format_actions_sit_between_the_feed_setting_and_the_category() {
        let mut by_category = BTreeMap::new();
        by_category.insert("malware".to_owned(), Action::Refused);
        let mut b = Builder::new(by_category, Action::Nxdomain, Protected::default());
        let rpz = b.add_feed(FeedSource {
            name: "r".into(),
            format: Format::Rpz,
            category: Some("malware".into()),
            action: None,
            trusted: false,
        });
        let monitor = b.add_feed(FeedSource {
            name: "m".into(),
            format: Format::Rpz,
            category: None,
            action: Some(Action::Log),
            trusted: false,
        });
        let nodata = |n: &str| Indicator {
            action: Some(Action::Nodata),
            ..Indicator::block(n.into(), Scope::Exact)
        };
        b.add(rpz, nodata("a.example"));
        b.add(rpz, Indicator::block("b.example".into(), Scope::Exact));
        b.add(monitor, nodata("c.example"));
        let sink = Indicator {
            action: Some(Action::Sinkhole),
            local: vec!["192.0.2.1".parse().unwrap()],
            ..Indicator::block("d.example".into(), Scope::Exact)
        };
        b.add(rpz, sink);
        let (list, _) = b.finish().unwrap();
        let meta = |n: &str| *list.meta(&list.lookup_str(n).unwrap());
        assert_eq!(meta("a.example").action, Action::Nodata);
        assert_eq!(meta("b.example").action, Action::Refused);
        assert_eq!(meta("c.example").action, Action::Log);
        assert_eq!(meta("d.example").action, Action::Sinkhole);
        assert_eq!(
            list.answer(&meta("d.example")),
            ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }
}
