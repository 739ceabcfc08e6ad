//! Each feed's cache between compiles: its last good parse, a big feed's
//! built layers, and the layers adopted from a snapshot at start-up; and
//! when a new parse may replace the last good one.
//!
//! **Last good** (docs/architecture.md "Data flow of a reload"): a feed that
//! fails to parse, or that shrinks by more than `max_shrink` at once, keeps
//! its previous contents, and the error is reported for that feed; the
//! other feeds still update.

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{Compiler, FeedResult};
use crate::blocklist::Layer;
use crate::blocklist::feed::{FeedBuilder, FeedSource, ParsedFeed, Protected};
use crate::blocklist::fingerprint::{Fingerprint, content_hash};
use crate::blocklist::merge::{MergeError, MergeSettings, Suppressed, merge_ranges, shard_ranges};
use crate::formats::{self, Bounds, Format, ParseCounts};

/// When a file modified within the last `settle_ms` will have settled, if
/// it looks written in place: its status-change time is its modification
/// time (a rename into place, the supported drop, changes only the
/// former, and such a file is read at once).
fn settling(meta: &std::fs::Metadata, settle_ms: u64, now: SystemTime) -> Option<SystemTime> {
    use std::os::unix::fs::MetadataExt;
    if settle_ms == 0 {
        return None;
    }
    let modified = meta.modified().ok()?;
    let changed_after_write =
        (meta.ctime() - meta.mtime()) * 1_000_000_000 + (meta.ctime_nsec() - meta.mtime_nsec());
    let until = modified + std::time::Duration::from_millis(settle_ms);
    (until > now && changed_after_write < 1_000_000).then_some(until)
}

/// How to parse a feed's last good copy instead of the feed.
pub(super) struct Fallback {
    source: FeedSource,
    format: Option<Format>,
    bounds: Bounds,
}

/// A cached feed: its last good parse and the file it came from.
pub(super) struct Cached {
    pub(super) feed: Arc<ParsedFeed>,
    pub(super) fingerprint: Fingerprint,
}

/// A plain feed file of at least twice this many bytes is parsed in
/// parts, one a thread (a 10 M-name list took 4-5 s on one core).
const PART_BYTES: u64 = 16 << 20;

/// Parse one feed file.
fn parse_feed(
    path: &Path,
    source: impl FnOnce(Format) -> FeedSource,
    format: Option<Format>,
    bounds: Bounds,
) -> Result<ParsedFeed, String> {
    let format = match format {
        Some(f) => f,
        None => formats::detect(path).map_err(|e| e.to_string())?,
    };
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let (builder, report) =
        parse_in_parts(path, source(format), format, bounds, threads, PART_BYTES)?;
    tracing::debug!(feed = %path.display(), lines = report.lines, parse_ms = started.elapsed().as_millis() as u64, "feed parsed");
    // The stream stops just past the bound; a file that ends there is
    // over it too.
    if report.loaded > bounds.max_entries {
        return Err(format!(
            "feed {} has {} entries, more than its max_entries {}",
            path.display(),
            report.loaded,
            bounds.max_entries
        ));
    }
    for r in &report.first_rejects {
        tracing::warn!(feed = %path.display(), line = r.line, reason = %r.error, "feed line rejected");
    }
    Ok(builder.finish(report))
}

/// Parse `path` in the parts `formats::split` makes of it, each on a
/// thread of its own, and join them in file order.
pub(super) fn parse_in_parts(
    path: &Path,
    source: FeedSource,
    format: Format,
    bounds: Bounds,
    threads: usize,
    part_bytes: u64,
) -> Result<(FeedBuilder, ParseCounts), String> {
    let parts =
        formats::split(path, format, bounds, threads, part_bytes).map_err(|e| e.to_string())?;
    if parts.len() < 2 {
        let mut builder = FeedBuilder::new(source);
        let report = formats::parse_file(path, format, bounds, &mut |i| builder.add(i))
            .map_err(|e| e.to_string())?;
        return Ok((builder, report));
    }
    let results: Vec<Result<(FeedBuilder, ParseCounts), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| {
                let source = source.clone();
                scope.spawn(move || {
                    let mut builder = FeedBuilder::new(source);
                    formats::parse_part(path, format, part, bounds, &mut |i| builder.add(i))
                        .map(|report| (builder, report))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(format!("parsing {} panicked", path.display())))
            })
            .collect()
    });
    let mut results = results.into_iter();
    let (mut builder, mut report) = results
        .next()
        .unwrap_or_else(|| Err(format!("{} split into no parts", path.display())))?;
    for result in results {
        let (later, counts) = result?;
        builder.append(later);
        report.absorb(counts);
    }
    Ok((builder, report))
}

/// A big feed's own layer, reusable while the feed and the settings that
/// shaped it are unchanged.
pub(super) struct CachedLayer {
    pub(super) feed: Arc<ParsedFeed>,
    pub(super) settings: u64,
    /// One layer per TLD range (see [`shard_ranges`]).
    pub(super) layers: Vec<Arc<Layer>>,
    pub(super) suppressed: Suppressed,
}

/// A big feed's layer taken over from the snapshot at start-up: used as
/// it is while the file is unchanged, so the first reload after a restart
/// need not re-parse and reload it.
pub(super) struct Adopted {
    pub(super) fingerprint: Fingerprint,
    pub(super) layers: Vec<Arc<Layer>>,
    pub(super) format: Format,
    /// The settings the layers were built with (see `settings_key`).
    pub(super) settings: u64,
    pub(super) report: ParseCounts,
    pub(super) suppressed: Suppressed,
}

impl Adopted {
    /// Names in its layers and addresses in its parse (the shrink guard
    /// compares both together).
    fn indicators(&self) -> usize {
        self.layers.iter().map(|l| l.entries()).sum::<usize>() + self.report.addresses
    }
}

/// Build a big feed's layers, one per TLD range, in parallel (the fst
/// build is the slow part of a compile, and it is sequential per automaton).
pub(super) fn build_own_layers(
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

impl Compiler {
    /// The feed to merge for one file: a fresh parse, the cached one, or
    /// the last good one after a failure.
    pub(super) fn refresh(
        &mut self,
        path: &Path,
        source: FeedSource,
        format: Option<Format>,
        bounds: Bounds,
        now: SystemTime,
        input: Option<Fingerprint>,
    ) -> (Option<Arc<ParsedFeed>>, FeedResult) {
        let mut report = FeedResult {
            name: source.name.clone(),
            path: path.to_path_buf(),
            ..FeedResult::default()
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
        let fallback = Fallback {
            source: source.clone(),
            format,
            bounds,
        };
        // Written in place and still changing: keep what is served and
        // come back when it has been quiet long enough. (A feed with nothing
        // served yet is read as it is: something beats nothing.)
        if let Ok(m) = &meta
            && let Some(until) = settling(m, self.config.blocklist.settle_ms, now)
            && (self.cache.contains_key(path)
                || self.adopted.contains_key(path)
                || self
                    .last_good
                    .as_ref()
                    .is_some_and(|k| k.get(&source.name).is_some()))
        {
            tracing::info!(feed = %report.name, "feed still being written; reading it once it is quiet");
            report.settling_until = Some(until);
            return self.previous_contents(path, report, fallback);
        }
        let hashed = input
            .filter(|f| meta.is_ok() && f.size == size && f.modified == modified)
            .map(|f| Ok(f.hash));
        let hash = match hashed.unwrap_or_else(|| meta.and_then(|_| content_hash(path))) {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => {
                let error = if path.is_symlink() {
                    format!("{} is a symbolic link whose target is gone", path.display())
                } else {
                    format!(
                        "{} was deleted; its entries stay until a SIGHUP confirms the deletion \
                         (blocklist.deleted_feeds = \"keep\")",
                        path.display()
                    )
                };
                return self.keep_previous(path, report, error, fallback);
            }
            Err(e) => {
                return self.keep_previous(
                    path,
                    report,
                    format!("cannot read {}: {e}", path.display()),
                    fallback,
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
            .or_else(|| self.adopted.get(path).map(|a| a.fingerprint.hash))
            .or_else(|| Some(self.last_good.as_ref()?.get(&source.name)?.hash));
        let clock_only = known_hash == Some(hash);
        let parsed = parse_feed(
            path,
            |f| FeedSource {
                format: f,
                ..source
            },
            format,
            bounds,
        );
        let feed = match parsed {
            Ok(feed) => feed,
            Err(error) => return self.keep_previous(path, report, error, fallback),
        };
        report.format = Some(feed.source.format);
        report.parse = feed.report.clone();
        // The baseline survives restarts: the last good copy's count.
        let previous = self
            .cache
            .get(path)
            .map(|c| c.feed.indicators())
            .or_else(|| self.adopted.get(path).map(Adopted::indicators))
            .or_else(|| {
                let kept = self.last_good.as_ref()?.get(&feed.source.name)?;
                Some(kept.indicators)
            })
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
            return self.keep_previous(path, report, error, fallback);
        }
        let feed = Arc::new(feed);
        if !feed.source.allow_only
            && let Some(kept) = self.last_good.as_mut()
        {
            let copy = crate::blocklist::last_good::Kept {
                indicators: feed.indicators(),
                hash,
            };
            if let Err(error) = kept.save(&feed.source.name, path, copy) {
                tracing::warn!(feed = %feed.source.name, %error, "cannot keep the feed's last good copy");
            }
        }
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
        &mut self,
        path: &Path,
        report: FeedResult,
        error: String,
        fallback: Fallback,
    ) -> (Option<Arc<ParsedFeed>>, FeedResult) {
        let (previous, mut report) = self.previous_contents(path, report, fallback);
        if previous.is_some() || self.adopted.contains_key(path) {
            tracing::warn!(feed = %report.name, %error, "feed not updated; serving its last good contents");
        } else {
            tracing::error!(feed = %report.name, %error, "feed not loaded");
        }
        report.error = Some(error);
        (previous, report)
    }

    /// What a feed served before, for the report: its cached parse (after a
    /// restart, its last good copy from state_dir), or else its adopted
    /// layers, which the caller serves.
    fn previous_contents(
        &mut self,
        path: &Path,
        mut report: FeedResult,
        fallback: Fallback,
    ) -> (Option<Arc<ParsedFeed>>, FeedResult) {
        if !self.cache.contains_key(path) && !self.adopted.contains_key(path) {
            self.restore_last_good(path, fallback);
        }
        let previous = self.cache.get(path).map(|c| Arc::clone(&c.feed));
        if let Some(feed) = &previous {
            report.format = Some(feed.source.format);
            report.parse = feed.report.clone();
        } else if let Some(a) = self.adopted.get(path) {
            report.format = Some(a.format);
            report.parse = a.report.clone();
        }
        report.kept_previous = previous.is_some();
        (previous, report)
    }

    /// After a restart, nothing of a feed is in memory: parse its last
    /// good copy from state_dir and cache it as this path's last good
    /// parse (under the copy's fingerprint, so the file at the path is
    /// still read again each time).
    fn restore_last_good(&mut self, path: &Path, fallback: Fallback) {
        let Fallback {
            source,
            format,
            bounds,
        } = fallback;
        let Some(copy) = self.last_good.as_ref().and_then(|k| k.copy(&source.name)) else {
            return;
        };
        let name = source.name.clone();
        let parsed = parse_feed(
            &copy,
            |f| FeedSource {
                format: f,
                ..source
            },
            format,
            bounds,
        );
        let fingerprint = crate::blocklist::fingerprint::fingerprint(&copy, None);
        match (parsed, fingerprint) {
            (Ok(feed), Some(fingerprint)) => {
                tracing::info!(feed = %name, copy = %copy.display(), entries = feed.indicators(), "restored the feed's last good copy");
                self.cache.insert(
                    path.to_path_buf(),
                    Cached {
                        feed: Arc::new(feed),
                        fingerprint,
                    },
                );
            }
            (Err(error), _) => {
                tracing::error!(feed = %name, copy = %copy.display(), %error, "the feed's last good copy does not parse");
            }
            (Ok(_), None) => {}
        }
    }
}
