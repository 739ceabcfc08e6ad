//! The compiler: feeds_dir (plus the allow and protected lists) in, a
//! [`Blocklist`] out, remembering each feed's last good parse.
//!
//! * Only changed feeds are re-parsed. A feed is unchanged when its size
//!   and modification time match the cached parse, or, when they do not,
//!   its content hash does (a `touch` or an rsync that rewrote the same
//!   bytes). A feed whose contents change by the clock (STIX validity) is
//!   re-parsed once that time has come.
//! * **Last good** (DESIGN.md "Feeds and reload"): a feed that fails to
//!   parse, or that shrinks by more than `max_shrink` at once, keeps its
//!   previous contents, and the error is reported for that feed; the other
//!   feeds still update. A deleted file is removed: deleting is deliberate,
//!   truncation is not.
//! * The merge is redone every time (it also applies the protected names
//!   and the configured actions, which may have changed).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::feed::{FeedBuilder, FeedSource, ParsedFeed, Protected};
use super::merge::{MergeError, MergeSettings, Suppressed, merge, merge_ranges, shard_ranges};
use super::{Blocklist, Layer, OWN_LAYER_MIN};
use crate::config::Config;
use crate::feeds::{self, FeedError, Format, ParseReport};

/// A compile that produced no usable list.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot list feeds_dir {path}: {source}")]
    FeedsDir { path: PathBuf, source: io::Error },
    #[error("protected-name list: {0}")]
    Protected(FeedError),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// Size, modification time and content hash of a feed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub hash: u64,
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
    /// Why the feed could not be (re)loaded this time.
    pub error: Option<String>,
    /// Whether the entries in the list are a previous, last-good parse.
    pub kept_previous: bool,
    /// Whether this compile re-parsed the feed (false: cache reused).
    pub parsed: bool,
    /// Its addresses in the answer-IP policy (of `parse.addresses`).
    pub addresses_used: usize,
}

/// Everything `portcullis compile` prints.
#[derive(Debug, Clone, Default)]
pub struct CompileReport {
    pub feeds: Vec<FeedReport>,
    pub protected_names: usize,
    pub entries: usize,
    /// Addresses and ranges in the answer-IP policy.
    pub addresses: usize,
    pub fst_bytes: usize,
    pub elapsed: Duration,
    /// When the contents change by the clock (earliest STIX validity edge).
    pub next_change: Option<SystemTime>,
    /// Fingerprints of every input, taken before any was read: a file
    /// that changes during the compile no longer matches and triggers the
    /// next rebuild.
    pub inputs: BTreeMap<String, Fingerprint>,
}

impl CompileReport {
    /// Feeds whose entries are in the list (fresh or last good).
    pub fn feeds_loaded(&self) -> usize {
        self.feeds
            .iter()
            .filter(|f| f.error.is_none() || f.kept_previous)
            .count()
    }

    /// Feeds that failed this time (with or without a last good copy).
    pub fn feeds_failed(&self) -> usize {
        self.feeds.iter().filter(|f| f.error.is_some()).count()
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
        protected.sources.push(path.clone());
    }
    Ok(protected)
}

/// FNV-1a: a change detector for files and settings, not a security check.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over a file's bytes, read in blocks.
fn content_hash(path: &Path) -> io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut h = FNV_SEED;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h = fnv1a(h, &buf[..n]);
    }
}

/// A cached feed: its last good parse and the file it came from.
struct Cached {
    feed: Arc<ParsedFeed>,
    fingerprint: Fingerprint,
}

/// Parse one feed file.
fn parse_feed(
    path: &Path,
    source: impl FnOnce(Format) -> FeedSource,
    format: Option<Format>,
    max_entries: Option<usize>,
) -> Result<ParsedFeed, String> {
    let format = match format {
        Some(f) => f,
        None => feeds::detect(path).map_err(|e| e.to_string())?,
    };
    let started = Instant::now();
    let mut builder = FeedBuilder::new(source(format));
    let report =
        feeds::parse_file(path, format, &mut |i| builder.add(i)).map_err(|e| e.to_string())?;
    tracing::debug!(feed = %path.display(), lines = report.lines, parse_ms = started.elapsed().as_millis() as u64, "feed parsed");
    if let Some(max) = max_entries
        && report.loaded > max
    {
        return Err(format!(
            "feed {} has {} entries, more than its max_entries {max}",
            path.display(),
            report.loaded
        ));
    }
    for r in &report.first_rejects {
        tracing::warn!(feed = %path.display(), line = r.line, reason = %r.error, "feed line rejected");
    }
    Ok(builder.finish(report))
}

/// A big feed's own layer, reusable while the feed and the settings that
/// shaped it are unchanged.
struct CachedLayer {
    feed: Arc<ParsedFeed>,
    settings: u64,
    /// One layer per TLD range (see [`shard_ranges`]).
    layers: Vec<Arc<Layer>>,
    suppressed: Suppressed,
}

/// A big feed's layer taken over from the snapshot at start-up: used as
/// it is while the file is unchanged, so the first reload after a restart
/// need not re-parse and rebuild it.
struct Adopted {
    fingerprint: Fingerprint,
    layers: Vec<Arc<Layer>>,
    format: Format,
    /// The settings the layers were built with (see `settings_key`).
    settings: u64,
    report: ParseReport,
    suppressed: Suppressed,
}

impl Adopted {
    /// Names in its layers and addresses in its parse (the shrink guard
    /// compares both together).
    fn indicators(&self) -> usize {
        self.layers.iter().map(|l| l.entries()).sum::<usize>() + self.report.addresses
    }
}

/// What one input contributes to the merge.
enum Unit {
    Feed(Arc<ParsedFeed>),
    Layers(Vec<Arc<Layer>>),
}

/// What a big feed's layers depend on besides the feed itself: the
/// actions, the per-feed settings, the answer-IP categories and the
/// protected names.
fn settings_key(config: &Config, inputs: &BTreeMap<String, Fingerprint>) -> u64 {
    let mut text = format!(
        "{:?}|{:?}|{:?}|{:?}",
        config.actions,
        config.blocklist.default_action,
        config.feeds,
        config.blocklist.answer_ip_categories
    );
    for path in &config.blocklist.protected {
        let hash = inputs.get(&path.display().to_string()).map(|f| f.hash);
        text.push_str(&format!("|{hash:?}"));
    }
    fnv1a(FNV_SEED, text.as_bytes())
}

/// Build a big feed's layers, one per TLD range, in parallel (the fst
/// build is the slow part of a compile, and it is sequential per automaton).
fn build_own_layers(
    feed: &Arc<ParsedFeed>,
    protected: &Protected,
    settings: &MergeSettings,
    settings_key: u64,
) -> Result<CachedLayer, MergeError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let ranges = shard_ranges(feed, threads);
    let feeds = std::slice::from_ref(feed);
    let results: Vec<Result<(Layer, Vec<Suppressed>), MergeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|range| {
                let range = std::slice::from_ref(range);
                scope.spawn(move || merge_ranges(feeds, range, protected, settings, true))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(MergeError::Panicked)))
            .collect()
    });
    let mut layers = Vec::with_capacity(results.len());
    let mut suppressed = Suppressed::default();
    for result in results {
        let (layer, mut s) = result?;
        layers.push(Arc::new(layer));
        let s = s.pop().unwrap_or_default();
        suppressed.count += s.count;
        suppressed.first.extend(s.first);
    }
    suppressed.first.truncate(5);
    Ok(CachedLayer {
        feed: Arc::clone(feed),
        settings: settings_key,
        layers,
        suppressed,
    })
}

/// Turns feeds_dir into blocklists, keeping each feed's last good parse
/// and each big feed's layer.
pub struct Compiler {
    config: Arc<Config>,
    cache: HashMap<PathBuf, Cached>,
    layers: HashMap<String, CachedLayer>,
    adopted: HashMap<PathBuf, Adopted>,
}

impl Compiler {
    pub fn new(config: Arc<Config>) -> Compiler {
        Compiler {
            config,
            cache: HashMap::new(),
            layers: HashMap::new(),
            adopted: HashMap::new(),
        }
    }

    /// Take over the big-feed layers of a snapshot whose inputs still match
    /// (the caller checks that with [`inputs_match`]).
    pub fn adopt(&mut self, list: &Blocklist, fingerprints: &BTreeMap<String, Fingerprint>) {
        for layer in list.layers() {
            let [feed] = layer.feeds() else { continue };
            if !layer.is_own() {
                continue;
            }
            let path = self.config.blocklist.feeds_dir.join(&feed.name);
            let Some(fp) = fingerprints.get(&path.display().to_string()) else {
                continue;
            };
            let settings = settings_key(&self.config, fingerprints);
            let adopted = self.adopted.entry(path).or_insert_with(|| Adopted {
                fingerprint: *fp,
                layers: Vec::new(),
                format: feed.format,
                settings,
                report: ParseReport::default(),
                suppressed: Suppressed::default(),
            });
            adopted.layers.push(Arc::clone(layer));
            adopted.report.loaded += layer.entries();
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Compile now. Unchanged feeds are reused from the cache.
    pub fn compile(&mut self) -> Result<(Blocklist, CompileReport), CompileError> {
        let started = Instant::now();
        let config = Arc::clone(&self.config);
        let inputs = fingerprint_inputs(&config);
        let protected =
            load_protected(&config.blocklist.protected).map_err(CompileError::Protected)?;
        let dir = &config.blocklist.feeds_dir;
        let files = feed_files(dir).map_err(|source| CompileError::FeedsDir {
            path: dir.clone(),
            source,
        })?;

        let mut jobs: Vec<(PathBuf, FeedSource, Option<Format>, Option<usize>)> = Vec::new();
        for path in files {
            let name = file_name(&path);
            let settings = config.feed_settings(&name);
            let source = FeedSource {
                name,
                format: Format::Plain,
                category: settings.and_then(|s| s.category.clone()),
                action: settings.and_then(|s| s.action),
                trusted: settings.is_some_and(|s| s.trusted),
                allow_only: false,
                answer_ip: settings.is_some_and(|s| s.answer_ip),
            };
            jobs.push((
                path,
                source,
                settings.and_then(|s| s.format),
                settings.and_then(|s| s.max_entries),
            ));
        }
        for path in &config.blocklist.allow {
            let source = FeedSource {
                name: format!("allow:{}", file_name(path)),
                format: Format::Plain,
                category: Some("allow".to_owned()),
                action: None,
                trusted: false,
                allow_only: true,
                // An exception never hurts; addresses in an allow list
                // always exempt answers.
                answer_ip: true,
            };
            jobs.push((path.clone(), source, None, None));
        }

        // Deleted feeds leave the cache (and the list).
        self.cache
            .retain(|path, _| jobs.iter().any(|(p, ..)| p == path));

        let now = SystemTime::now();
        let settings = MergeSettings {
            by_category: config.actions.clone(),
            default_action: config.blocklist.default_action,
            answer_ip_categories: config
                .blocklist
                .answer_ip_categories
                .iter()
                .cloned()
                .collect(),
        };
        // What a layer's contents depend on besides its feed: the actions
        // and the protected names.
        let settings_key = settings_key(&config, &inputs);
        self.adopted
            .retain(|path, _| jobs.iter().any(|(p, ..)| p == path));
        let mut units = Vec::new();
        let mut reports = Vec::new();
        for (path, source, format, max_entries) in jobs {
            if let Some(a) = self.adopted.get(&path)
                && a.settings == settings_key
                && a.report.next_change.is_none_or(|t| t > now)
                && fingerprint(&path, Some(&a.fingerprint))
                    .is_some_and(|now| now.hash == a.fingerprint.hash)
            {
                reports.push(FeedReport {
                    name: source.name.clone(),
                    path: path.clone(),
                    format: Some(a.format),
                    parse: a.report.clone(),
                    suppressed: a.suppressed.clone(),
                    ..FeedReport::default()
                });
                units.push(Unit::Layers(a.layers.clone()));
                continue;
            }
            let (feed, mut report) = self.refresh(&path, source, format, max_entries, now);
            match feed {
                Some(feed) => {
                    self.adopted.remove(&path);
                    units.push(Unit::Feed(feed));
                }
                None => {
                    // Last good for an adopted feed is its adopted layer.
                    if let Some(a) = self.adopted.get(&path) {
                        report.kept_previous = true;
                        units.push(Unit::Layers(a.layers.clone()));
                    }
                }
            }
            reports.push(report);
        }
        let feeds: Vec<Arc<ParsedFeed>> = units
            .iter()
            .filter_map(|u| match u {
                Unit::Feed(f) => Some(Arc::clone(f)),
                Unit::Layers(_) => None,
            })
            .collect();

        let small: Vec<Arc<ParsedFeed>> = feeds
            .iter()
            .filter(|f| f.len() < OWN_LAYER_MIN)
            .cloned()
            .collect();
        self.layers.retain(|name, _| {
            feeds
                .iter()
                .any(|f| &f.source.name == name && f.len() >= OWN_LAYER_MIN)
        });
        let mut layers = Vec::new();
        let mut suppressed_by_feed: Vec<(String, Suppressed)> = Vec::new();
        for unit in &units {
            let feed = match unit {
                Unit::Layers(adopted) => {
                    layers.extend(adopted.iter().cloned());
                    continue;
                }
                Unit::Feed(feed) if feed.len() >= OWN_LAYER_MIN => feed,
                Unit::Feed(_) => continue,
            };
            let reusable = self
                .layers
                .get(&feed.source.name)
                .is_some_and(|c| Arc::ptr_eq(&c.feed, feed) && c.settings == settings_key);
            if !reusable {
                let entry = build_own_layers(feed, &protected, &settings, settings_key)?;
                self.layers.insert(feed.source.name.clone(), entry);
            }
            if let Some(cached) = self.layers.remove(&feed.source.name) {
                layers.extend(cached.layers.iter().cloned());
                suppressed_by_feed.push((feed.source.name.clone(), cached.suppressed.clone()));
                // From now on the layers are this feed's cached (and last
                // good) contents; the parse is let go, which returns the
                // big feed's keys to the system.
                if !feed.source.allow_only {
                    let path = config.blocklist.feeds_dir.join(&feed.source.name);
                    if let Some(parsed) = self.cache.remove(&path) {
                        self.adopted.insert(
                            path,
                            Adopted {
                                fingerprint: parsed.fingerprint,
                                layers: cached.layers,
                                format: feed.source.format,
                                settings: settings_key,
                                report: feed.report.clone(),
                                suppressed: cached.suppressed,
                            },
                        );
                    }
                }
            }
        }
        if !small.is_empty() {
            let (layer, suppressed) = merge(&small, &protected, &settings)?;
            layers.push(Arc::new(layer));
            suppressed_by_feed.extend(small.iter().map(|f| f.source.name.clone()).zip(suppressed));
        }
        let list = Blocklist::from_layers(layers);
        for (name, s) in suppressed_by_feed {
            if let Some(r) = reports.iter_mut().find(|r| r.name == name) {
                r.suppressed = s;
            }
        }
        let used = list.addresses_by_feed();
        for r in &mut reports {
            r.addresses_used = used.get(r.name.as_str()).copied().unwrap_or(0);
        }
        let next_change = feeds.iter().filter_map(|f| f.next_change()).min();
        let report = CompileReport {
            feeds: reports,
            protected_names: protected.len(),
            entries: list.entries(),
            addresses: list.addresses(),
            fst_bytes: list.fst_bytes(),
            elapsed: started.elapsed(),
            next_change,
            inputs,
        };
        Ok((list, report))
    }

    /// The feed to merge for one file: a fresh parse, the cached one, or
    /// the last good one after a failure.
    fn refresh(
        &mut self,
        path: &Path,
        source: FeedSource,
        format: Option<Format>,
        max_entries: Option<usize>,
        now: SystemTime,
    ) -> (Option<Arc<ParsedFeed>>, FeedReport) {
        let mut report = FeedReport {
            name: source.name.clone(),
            path: path.to_path_buf(),
            ..FeedReport::default()
        };
        let cached = self.cache.get(path);
        let meta = std::fs::metadata(path);
        let (size, modified) = match &meta {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => (0, None),
        };
        let expired = cached.is_some_and(|c| c.feed.next_change().is_some_and(|t| t <= now));
        let same_settings = cached.is_some_and(|c| {
            let s = &c.feed.source;
            s.category == source.category
                && s.action == source.action
                && s.trusted == source.trusted
                && s.answer_ip == source.answer_ip
        });
        if let Some(c) = cached.filter(|_| same_settings && !expired)
            && c.fingerprint.size == size
            && c.fingerprint.modified == modified
        {
            report.format = Some(c.feed.source.format);
            report.parse = c.feed.report.clone();
            return (Some(Arc::clone(&c.feed)), report);
        }
        let hash = match meta.and_then(|_| content_hash(path)) {
            Ok(h) => h,
            Err(e) => {
                return self.keep_previous(
                    path,
                    report,
                    format!("cannot read {}: {e}", path.display()),
                );
            }
        };
        let fingerprint = Fingerprint {
            size,
            modified,
            hash,
        };
        if let Some(c) = self
            .cache
            .get_mut(path)
            .filter(|_| same_settings && !expired)
            && c.fingerprint.hash == hash
        {
            c.fingerprint = fingerprint;
            report.format = Some(c.feed.source.format);
            report.parse = c.feed.report.clone();
            return (Some(Arc::clone(&c.feed)), report);
        }
        report.parsed = true;
        // Same bytes, re-parsed because validity times passed: entries that
        // expired are meant to go, so the shrink guard does not apply.
        let known_hash = self
            .cache
            .get(path)
            .map(|c| c.fingerprint.hash)
            .or_else(|| self.adopted.get(path).map(|a| a.fingerprint.hash));
        let clock_only = known_hash == Some(hash);
        let parsed = parse_feed(
            path,
            |f| FeedSource {
                format: f,
                ..source
            },
            format,
            max_entries,
        );
        let feed = match parsed {
            Ok(feed) => feed,
            Err(error) => return self.keep_previous(path, report, error),
        };
        report.format = Some(feed.source.format);
        report.parse = feed.report.clone();
        let previous = self
            .cache
            .get(path)
            .map(|c| c.feed.indicators())
            .or_else(|| self.adopted.get(path).map(Adopted::indicators))
            .unwrap_or(0);
        let max_shrink = self.config.blocklist.max_shrink;
        if !clock_only
            && previous > 0
            && (feed.indicators() as f64) < previous as f64 * (1.0 - max_shrink)
        {
            let error = format!(
                "feed {} shrank from {previous} to {} entries, more than max_shrink {:.0}% at once (a truncated download?); \
                 keeping the previous contents",
                path.display(),
                feed.indicators(),
                max_shrink * 100.0
            );
            return self.keep_previous(path, report, error);
        }
        let feed = Arc::new(feed);
        self.cache.insert(
            path.to_path_buf(),
            Cached {
                feed: Arc::clone(&feed),
                fingerprint,
            },
        );
        (Some(feed), report)
    }

    fn keep_previous(
        &self,
        path: &Path,
        mut report: FeedReport,
        error: String,
    ) -> (Option<Arc<ParsedFeed>>, FeedReport) {
        let previous = self.cache.get(path).map(|c| Arc::clone(&c.feed));
        report.kept_previous = previous.is_some();
        if let Some(feed) = &previous {
            report.format = Some(feed.source.format);
            report.parse = feed.report.clone();
            tracing::warn!(feed = %report.name, %error, "feed not updated; serving its last good contents");
        } else if let Some(a) = self.adopted.get(path) {
            // The caller serves the adopted layers as the last good copy.
            report.format = Some(a.format);
            report.parse = a.report.clone();
            tracing::warn!(feed = %report.name, %error, "feed not updated; serving its last good contents");
        } else {
            tracing::error!(feed = %report.name, %error, "feed not loaded");
        }
        report.error = Some(error);
        (previous, report)
    }
}

/// Every file the blocklist depends on: feeds, allow and protected lists.
pub fn inputs(config: &Config) -> std::io::Result<Vec<PathBuf>> {
    let mut files = feed_files(&config.blocklist.feeds_dir)?;
    files.extend(config.blocklist.allow.iter().cloned());
    files.extend(config.blocklist.protected.iter().cloned());
    Ok(files)
}

/// Fingerprint every input (hashing each; used when writing a snapshot).
pub fn fingerprint_inputs(config: &Config) -> BTreeMap<String, Fingerprint> {
    let mut out = BTreeMap::new();
    for path in inputs(config).unwrap_or_default() {
        if let Some(fp) = fingerprint(&path, None) {
            out.insert(path.display().to_string(), fp);
        }
    }
    out.insert(CONFIG_KEY.to_owned(), config_fingerprint(config));
    out
}

/// A pseudo-input: the config settings the compiled list depends on.
const CONFIG_KEY: &str = "<config>";

fn config_fingerprint(config: &Config) -> Fingerprint {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        config.actions,
        config.feeds,
        config.blocklist.default_action,
        config.blocklist.allow,
        config.blocklist.protected
    );
    Fingerprint {
        size: 0,
        modified: None,
        hash: fnv1a(FNV_SEED, text.as_bytes()),
    }
}

/// Size and mtime always; the content hash only when `known` does not
/// already match on size and mtime.
fn fingerprint(path: &Path, known: Option<&Fingerprint>) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    let (size, modified) = (meta.len(), meta.modified().ok());
    if let Some(k) = known.filter(|k| k.size == size && k.modified == modified) {
        return Some(*k);
    }
    let hash = content_hash(path).ok()?;
    Some(Fingerprint {
        size,
        modified,
        hash,
    })
}

/// Do the settings a big-feed layer depends on (the config and the
/// protected lists) still match the fingerprints a snapshot was built from?
pub fn settings_match(config: &Config, known: &BTreeMap<String, Fingerprint>) -> bool {
    known.get(CONFIG_KEY).map(|f| f.hash) == Some(config_fingerprint(config).hash)
        && config.blocklist.protected.iter().all(|path| {
            let key = path.display().to_string();
            known
                .get(&key)
                .is_some_and(|k| fingerprint(path, Some(k)).is_some_and(|now| now.hash == k.hash))
        })
}

/// Do the inputs still match the fingerprints a snapshot was built from?
pub fn inputs_match(config: &Config, known: &BTreeMap<String, Fingerprint>) -> bool {
    let Ok(files) = inputs(config) else {
        return false;
    };
    if files.len() + 1 != known.len() {
        return false;
    }
    if known.get(CONFIG_KEY).map(|f| f.hash) != Some(config_fingerprint(config).hash) {
        return false;
    }
    files.iter().all(|path| {
        let key = path.display().to_string();
        let Some(k) = known.get(&key) else {
            return false;
        };
        fingerprint(path, Some(k)).is_some_and(|now| now.size == k.size && now.hash == k.hash)
    })
}

/// Compile once (the `compile` and `check` commands, and tests).
pub fn compile(config: &Config) -> Result<(Blocklist, CompileReport), CompileError> {
    Compiler::new(Arc::new(config.clone())).compile()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn setup() -> (tempfile::TempDir, Compiler) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("feeds")).unwrap();
        let text = "[blocklist]\nfeeds_dir = \"feeds\"\nmax_shrink = 0.5\n";
        let config = Config::from_str(text, &dir.path().join("p.toml")).unwrap();
        (dir, Compiler::new(Arc::new(config)))
    }

    fn names(n: usize, prefix: &str) -> String {
        (0..n).map(|i| format!("{prefix}{i}.example\n")).collect()
    }

    #[test]
    fn unchanged_feeds_are_not_reparsed() {
        let (dir, mut c) = setup();
        std::fs::write(dir.path().join("feeds/a.txt"), names(10, "a")).unwrap();
        std::fs::write(dir.path().join("feeds/b.txt"), names(10, "b")).unwrap();
        let (_, r) = c.compile().unwrap();
        assert!(r.feeds.iter().all(|f| f.parsed));
        std::fs::write(dir.path().join("feeds/b.txt"), names(12, "b")).unwrap();
        let (list, r) = c.compile().unwrap();
        let parsed: Vec<(&str, bool)> = r
            .feeds
            .iter()
            .map(|f| (f.name.as_str(), f.parsed))
            .collect();
        assert_eq!(parsed, [("a.txt", false), ("b.txt", true)]);
        assert_eq!(list.entries(), 22);
        // Same bytes rewritten (new mtime): the hash says unchanged.
        std::fs::write(dir.path().join("feeds/a.txt"), names(10, "a")).unwrap();
        let (_, r) = c.compile().unwrap();
        assert!(!r.feeds[0].parsed);
    }

    #[test]
    fn broken_and_truncated_feeds_keep_their_last_good_contents() {
        let (dir, mut c) = setup();
        let a = dir.path().join("feeds/a.txt");
        std::fs::write(&a, names(10, "a")).unwrap();
        std::fs::write(dir.path().join("feeds/b.txt"), names(4, "b")).unwrap();
        c.compile().unwrap();
        // Truncated to 3 of 10 entries: held back.
        std::fs::write(&a, names(3, "a")).unwrap();
        std::fs::write(dir.path().join("feeds/b.txt"), names(5, "b")).unwrap();
        let (list, r) = c.compile().unwrap();
        assert!(r.feeds[0].kept_previous);
        assert!(
            r.feeds[0]
                .error
                .as_deref()
                .unwrap()
                .contains("shrank from 10 to 3"),
            "{:?}",
            r.feeds[0].error
        );
        assert!(list.lookup_str("a9.example").is_some());
        assert!(
            list.lookup_str("b4.example").is_some(),
            "the other feed still updated"
        );
        // Garbage: no format detected; previous contents kept.
        std::fs::write(&a, "<html>502 Bad Gateway</html>\n").unwrap();
        let (list, r) = c.compile().unwrap();
        assert!(
            r.feeds[0].kept_previous
                && r.feeds[0]
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("no known format")
        );
        assert!(list.lookup_str("a9.example").is_some());
        // A real shrink within the limit goes through.
        std::fs::write(&a, names(6, "a")).unwrap();
        let (list, r) = c.compile().unwrap();
        assert!(r.feeds[0].error.is_none());
        assert!(list.lookup_str("a9.example").is_none() && list.lookup_str("a5.example").is_some());
        // Deletion is deliberate: the entries go.
        std::fs::remove_file(&a).unwrap();
        let (list, r) = c.compile().unwrap();
        assert_eq!(r.feeds.len(), 1);
        assert!(list.lookup_str("a5.example").is_none());
    }

    #[test]
    fn a_big_feed_keeps_its_layers_not_its_parse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("feeds")).unwrap();
        std::fs::write(dir.path().join("protected.txt"), "").unwrap();
        let text = "[blocklist]\nfeeds_dir = \"feeds\"\nprotected = [\"protected.txt\"]\n";
        let config = Config::from_str(text, &dir.path().join("p.toml")).unwrap();
        let mut c = Compiler::new(Arc::new(config));
        let big = dir.path().join("feeds/big.txt");
        std::fs::write(&big, names(OWN_LAYER_MIN + 10, "big")).unwrap();
        let (_, r) = c.compile().unwrap();
        assert!(r.feeds[0].parsed);
        assert!(c.cache.is_empty(), "the big feed's parse is not kept");
        let (list, r) = c.compile().unwrap();
        assert!(!r.feeds[0].parsed, "its layers are reused");
        assert_eq!(r.feeds[0].parse.loaded, OWN_LAYER_MIN + 10);
        assert!(list.lookup_str("big3.example").is_some());
        // The protected names changed: the layers are rebuilt with them.
        std::fs::write(dir.path().join("protected.txt"), "www.big3.example\n").unwrap();
        let (list, r) = c.compile().unwrap();
        assert!(r.feeds[0].parsed);
        assert_eq!(r.feeds[0].suppressed.count, 1);
        assert!(list.lookup_str("big3.example").is_none());
    }

    #[test]
    fn a_restart_adopts_big_layers_from_the_snapshot() {
        let (dir, mut c) = setup();
        let big = dir.path().join("feeds/big.txt");
        std::fs::write(&big, names(OWN_LAYER_MIN + 10, "big")).unwrap();
        std::fs::write(dir.path().join("feeds/small.txt"), names(5, "s")).unwrap();
        let (mut list, report) = c.compile().unwrap();
        let own = list.layers().iter().filter(|l| l.is_own()).count();
        assert!(
            own >= 1 && own + 1 == list.layers().len(),
            "the big feed has its own layers"
        );
        list.set_generation(1);
        let state = dir.path().join("state");
        super::super::snapshot::save(&state, &list, &report.inputs).unwrap();
        let loaded = super::super::snapshot::load(&state).unwrap();
        // A new process: adopt, then a small feed changes.
        let mut c = Compiler::new(Arc::clone(&c.config));
        assert!(settings_match(c.config(), &loaded.fingerprints));
        c.adopt(&loaded.list, &loaded.fingerprints);
        std::fs::write(dir.path().join("feeds/small.txt"), names(6, "s")).unwrap();
        let (list, report) = c.compile().unwrap();
        let parsed: Vec<(&str, bool)> = report
            .feeds
            .iter()
            .map(|f| (f.name.as_str(), f.parsed))
            .collect();
        assert_eq!(
            parsed,
            [("big.txt", false), ("small.txt", true)],
            "the big feed was not re-parsed"
        );
        assert!(
            list.lookup_str("big0.example").is_some() && list.lookup_str("s5.example").is_some()
        );
        // A broken big feed keeps its adopted layer as its last good.
        std::fs::write(&big, "<html>oops</html>\n").unwrap();
        let (list, report) = c.compile().unwrap();
        assert!(report.feeds[0].kept_previous);
        assert!(list.lookup_str("big7.example").is_some());
        // A real change is parsed.
        std::fs::write(&big, names(OWN_LAYER_MIN + 20, "big")).unwrap();
        let (list, report) = c.compile().unwrap();
        assert!(report.feeds[0].parsed && report.feeds[0].error.is_none());
        assert!(
            list.lookup_str(&format!("big{}.example", OWN_LAYER_MIN + 15))
                .is_some()
        );
    }

    #[test]
    fn an_expired_stix_indicator_leaves_at_the_next_compile_without_a_file_change() {
        let (dir, mut c) = setup();
        let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
        let until = until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let bundle = format!(
            r#"{{"type": "bundle", "objects": [{{"type": "indicator", "id": "indicator--x",
            "pattern": "[domain-name:value = 'short-lived.example']", "valid_from": "2020-01-01T00:00:00Z",
            "valid_until": "{until}"}}]}}"#
        );
        std::fs::write(dir.path().join("feeds/cti.json"), bundle).unwrap();
        let (list, report) = c.compile().unwrap();
        assert!(list.lookup_str("short-lived.example").is_some());
        let due = report
            .next_change
            .expect("a rebuild is scheduled for the expiry");
        std::thread::sleep(
            due.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(50),
        );
        let (list, report) = c.compile().unwrap();
        assert!(
            report.feeds[0].parsed,
            "re-parsed because its contents changed by the clock"
        );
        assert_eq!(report.feeds[0].parse.expired, 1, "{:?}", report.feeds[0]);
        assert!(list.lookup_str("short-lived.example").is_none());
    }

    #[test]
    fn a_broken_feed_without_a_previous_parse_is_just_missing() {
        let (dir, mut c) = setup();
        std::fs::write(dir.path().join("feeds/junk"), "<html></html>\n").unwrap();
        let (list, r) = c.compile().unwrap();
        assert_eq!(list.entries(), 0);
        assert_eq!((r.feeds_loaded(), r.feeds_failed()), (0, 1));
    }
}
