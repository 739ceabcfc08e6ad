//! The compiler: feeds_dir (plus the allow and protected lists) in, a
//! [`Blocklist`] out, with a report of what each feed contributed.
//!
//! `Compiler::compile` runs the steps in order: fingerprint the inputs,
//! read the protected names, refresh each feed from its cache
//! ([`feed_cache`]), reuse or reload each big feed's layers, and merge
//! the small feeds.
//!
//! * Only changed feeds are re-parsed (see [`super::fingerprint`]). A feed
//!   whose contents change by the clock (STIX validity) is re-parsed once
//!   that time has come.
//! * A feed that fails, shrinks too far, cannot be read or is a symbolic
//!   link to nothing keeps its last good contents ([`feed_cache`]); the
//!   serving resolver keeps that copy across restarts
//!   ([`super::last_good`]). A deleted feed stays until a SIGHUP confirms
//!   the deletion (`blocklist.deleted_feeds = "keep"`, the default) or
//!   goes at once (`"remove"`).
//! * The merge is redone every time (it also applies the protected names
//!   and the configured actions, which may have changed).

mod feed_cache;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use self::feed_cache::{Adopted, Cached, CachedLayer, build_own_layers};
use super::feed::{FeedSource, ParsedFeed, Protected};
use super::fingerprint::{Fingerprint, fingerprint, fingerprint_inputs, settings_key};
use super::last_good::LastGood;
use super::merge::{MergeError, MergeSettings, Suppressed, merge};
use super::{Blocklist, Layer, OWN_LAYER_MIN};
use crate::config::Config;
use crate::config::DeletedFeeds;
use crate::formats::{self, Bounds, FeedError, Format, ParseCounts};

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

/// What one feed contributed to a compile.
#[derive(Debug, Clone, Default)]
pub struct FeedResult {
    pub name: String,
    pub path: PathBuf,
    /// None when the format could not be determined.
    pub format: Option<Format>,
    pub parse: ParseCounts,
    pub suppressed: Suppressed,
    /// Why the feed could not be (re)loaded this time.
    pub error: Option<String>,
    /// Whether the entries in the list are a previous, last-good parse.
    pub kept_previous: bool,
    /// Whether this compile re-parsed the feed (false: cache reused).
    pub parsed: bool,
    /// Its addresses in the answer-IP policy (of `parse.addresses`).
    pub addresses_used: usize,
    /// The file looks like it is still being written in place: it is read
    /// once it has been quiet until then (`blocklist.settle_ms`).
    pub settling_until: Option<SystemTime>,
}

/// Everything `portcullis compile` prints.
#[derive(Debug, Clone, Default)]
pub struct CompileSummary {
    pub feeds: Vec<FeedResult>,
    pub protected_names: usize,
    pub entries: usize,
    /// Addresses and ranges in the answer-IP policy.
    pub addresses: usize,
    pub fst_bytes: usize,
    pub elapsed: Duration,
    /// When the compile started: every file it read was read after.
    pub started: Option<Instant>,
    /// When the contents change by the clock (earliest STIX validity edge).
    pub next_change: Option<SystemTime>,
    /// Fingerprints of every input, taken before any was read: a file
    /// that changes during the compile no longer matches and triggers the
    /// next reload.
    pub inputs: BTreeMap<String, Fingerprint>,
}

impl CompileSummary {
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
        // A symbolic link whose target is gone is still a feed: dropping it
        // silently would lift its entries without a word.
        let path = entry.path();
        if is_feed_file_name(name) && (path.is_file() || path.is_symlink()) {
            files.push(path);
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
        let format = formats::detect(path)?;
        let report = formats::parse_file(path, format, Bounds::default(), &mut |i| {
            protected.insert(&i.name)
        })?;
        if report.rejected > 0 {
            tracing::warn!(file = %path.display(), rejected = report.rejected, "protected-name list has lines that are not names");
        }
        protected.sources.push(path.clone());
    }
    Ok(protected)
}

/// What one feed file contributes to the list: its parse, still to be
/// merged, or a big feed's layers already built (adopted from a snapshot)
/// that go into the list as they are.
enum FeedContribution {
    Feed(Arc<ParsedFeed>),
    Layers(Vec<Arc<Layer>>),
}

/// Turns feeds_dir into blocklists, keeping each feed's last good parse
/// and each big feed's layer.
pub struct Compiler {
    config: Arc<Config>,
    cache: HashMap<PathBuf, Cached>,
    layers: HashMap<String, CachedLayer>,
    adopted: HashMap<PathBuf, Adopted>,
    /// The serving resolver's copies of each feed's last good version.
    last_good: Option<LastGood>,
    /// This compile takes deleted feeds out for good (SIGHUP).
    confirm_deletions: bool,
}

impl Compiler {
    pub fn new(config: Arc<Config>) -> Compiler {
        Compiler {
            config,
            cache: HashMap::new(),
            layers: HashMap::new(),
            adopted: HashMap::new(),
            last_good: None,
            confirm_deletions: false,
        }
    }

    /// Keep every accepted feed's last good copy in state_dir, and judge
    /// feeds against those copies after a restart (the serving resolver;
    /// `portcullis compile` reads the feeds as they are).
    /// Build with `config` from now on (a config reload). Parsed feeds
    /// are kept unless the feed settings changed: a feed's `format` is
    /// not part of the parse cache's key.
    pub fn set_config(&mut self, config: Arc<Config>) {
        if Arc::ptr_eq(&config, &self.config) {
            return;
        }
        if format!("{:?}", config.feeds) != format!("{:?}", self.config.feeds) {
            self.cache.clear();
            self.layers.clear();
        }
        self.config = config;
    }

    pub fn keep_last_good(&mut self) {
        self.last_good = Some(LastGood::open(&self.config.blocklist.state_dir));
    }

    /// Compile, taking deleted feeds out for good (SIGHUP): with
    /// `blocklist.deleted_feeds = "keep"` a deleted feed is otherwise
    /// served from its last good copy until then.
    pub fn compile_confirming_deletions(
        &mut self,
    ) -> Result<(Blocklist, CompileSummary), CompileError> {
        self.confirm_deletions = true;
        let result = self.compile();
        self.confirm_deletions = false;
        result
    }

    /// Take over the big-feed layers of a snapshot whose inputs still match
    /// (the caller checks that with [`inputs_match`](super::inputs_match)).
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
                report: ParseCounts::default(),
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
    pub fn compile(&mut self) -> Result<(Blocklist, CompileSummary), CompileError> {
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

        let bounds = Bounds {
            max_bytes: config.blocklist.max_feed_mib << 20,
            max_entries: config.blocklist.max_feed_entries,
        };
        let mut jobs: Vec<(PathBuf, FeedSource, Option<Format>, Bounds)> = Vec::new();
        let mut files = files;
        // A feed deleted from feeds_dir whose last good copy is kept stays
        // a job (served from the copy, with the reason) until confirmed.
        if let Some(kept) = self.last_good.as_mut() {
            let remove =
                self.confirm_deletions || config.blocklist.deleted_feeds == DeletedFeeds::Remove;
            let gone: Vec<String> = kept
                .feeds()
                .filter(|name| !files.iter().any(|f| f.file_name() == Some(name.as_ref())))
                .map(str::to_owned)
                .collect();
            for name in gone {
                if remove {
                    tracing::info!(feed = %name, "feed deletion confirmed; its entries are lifted");
                    if let Err(error) = kept.forget(&name) {
                        tracing::warn!(feed = %name, %error, "cannot remove the feed's last good copy");
                    }
                } else {
                    files.push(dir.join(name));
                }
            }
        }
        for path in files {
            let name = file_name(&path);
            let settings = config.feed_settings(&name);
            let source = FeedSource::feed(name, settings);
            let max_entries = settings.and_then(|s| s.max_entries);
            jobs.push((
                path,
                source,
                settings.and_then(|s| s.format),
                Bounds {
                    max_entries: max_entries.unwrap_or(bounds.max_entries),
                    ..bounds
                },
            ));
        }
        for path in &config.blocklist.allow {
            let source = FeedSource::allow_list(&file_name(path));
            jobs.push((path.clone(), source, None, bounds));
        }

        // Deleted feeds leave the cache (and the list).
        self.cache
            .retain(|path, _| jobs.iter().any(|(p, ..)| p == path));

        let now = SystemTime::now();
        let settings = MergeSettings::of(&config);
        // What a layer's contents depend on besides its feed: the actions
        // and the protected names.
        let settings_key = settings_key(&config, &inputs);
        self.adopted
            .retain(|path, _| jobs.iter().any(|(p, ..)| p == path));
        let mut contributions = Vec::new();
        let mut reports = Vec::new();
        for (path, source, format, bounds) in jobs {
            if let Some(a) = self.adopted.get(&path)
                && a.settings == settings_key
                && a.report.next_change.is_none_or(|t| t > now)
                && fingerprint(&path, Some(&a.fingerprint))
                    .is_some_and(|now| now.hash == a.fingerprint.hash)
            {
                reports.push(FeedResult {
                    name: source.name.clone(),
                    path: path.clone(),
                    format: Some(a.format),
                    parse: a.report.clone(),
                    suppressed: a.suppressed.clone(),
                    ..FeedResult::default()
                });
                contributions.push(FeedContribution::Layers(a.layers.clone()));
                continue;
            }
            // The content hash taken with the inputs, if the file has not
            // moved since: a big file is not read twice for it.
            let input = inputs.get(&path.display().to_string()).copied();
            let (feed, mut report) = self.refresh(&path, source, format, bounds, now, input);
            match feed {
                Some(feed) => {
                    self.adopted.remove(&path);
                    contributions.push(FeedContribution::Feed(feed));
                }
                None => {
                    // Last good for an adopted feed is its adopted layer.
                    if let Some(a) = self.adopted.get(&path) {
                        report.kept_previous = true;
                        contributions.push(FeedContribution::Layers(a.layers.clone()));
                    }
                }
            }
            reports.push(report);
        }
        let feeds: Vec<Arc<ParsedFeed>> = contributions
            .iter()
            .filter_map(|u| match u {
                FeedContribution::Feed(f) => Some(Arc::clone(f)),
                FeedContribution::Layers(_) => None,
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
        for contribution in &contributions {
            let feed = match contribution {
                FeedContribution::Layers(adopted) => {
                    layers.extend(adopted.iter().cloned());
                    continue;
                }
                FeedContribution::Feed(feed) if feed.len() >= OWN_LAYER_MIN => feed,
                FeedContribution::Feed(_) => continue,
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
        // The next validity edge, or the time a feed still being written
        // will have settled: the reloader comes back then.
        let next_change = feeds
            .iter()
            .filter_map(|f| f.next_change())
            .chain(reports.iter().filter_map(|r| r.settling_until))
            .min();
        let report = CompileSummary {
            feeds: reports,
            protected_names: protected.len(),
            entries: list.entries(),
            addresses: list.addresses(),
            fst_bytes: list.fst_bytes(),
            elapsed: started.elapsed(),
            started: Some(started),
            next_change,
            inputs,
        };
        Ok((list, report))
    }
}

/// Compile once (the `compile` and `check` commands, and tests).
pub fn compile(config: &Config) -> Result<(Blocklist, CompileSummary), CompileError> {
    Compiler::new(Arc::new(config.clone())).compile()
}
