//! Increments put live without a compile: the changes of an RPZ IXFR to a
//! big zone, blocking within milliseconds of the transfer instead of after
//! the seconds a compile of the whole zone takes.
//!
//! Every list that goes live passes through here ([`Increments::publish`]
//! for a compile, [`Increments::apply`] for an increment), so the two can
//! never undo each other. The live list is the last compiled one (the
//! *base*) plus, per zone with pending changes, a mask over the zone's own
//! layers that hides each changed owner's entry, and a small layer holding
//! those owners' entries as they are now. The zone file is still edited
//! and compiled as before; a compile that started after the file holding
//! every pending change was written has them all in its layers, and the
//! zone's increment is dropped when it goes live.
//!
//! Only what can be applied exactly is applied here: query-name triggers
//! with a policy action (`CNAME .`, `CNAME *.`, PASSTHRU, DROP) of a zone
//! big enough for layers of its own. Local data (A/AAAA, of which an
//! increment may change part of a set), address and name-server triggers,
//! and small zones wait for the compile as before.
//!
//! One difference while an increment is pending: at one name, an entry of
//! another feed with the same rank now wins over the zone's changed entry
//! (its layer comes first), where the compile would credit the feed that
//! comes first in feeds_dir. Both block; the hit may name the other feed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::feed::{FeedBuilder, FeedSource};
use super::mask::Mask;
use super::merge::{MergeSettings, merge};
use super::{Blocklist, BlocklistHandle, Layer, load_protected};
use crate::config::Config;
use crate::formats::{self, Format, ParseCounts, Scope, Subject, Verdict};
use crate::policy::Action;

/// The list's increments and the handle queries read.
pub struct Increments {
    handle: BlocklistHandle,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The list served from the feeds (the last compile's, or the
    /// snapshot's), without increments.
    base: Option<Arc<Blocklist>>,
    /// The config the base was built with: an increment overlays its
    /// layers, so it is built with the same settings.
    config: Option<Arc<Config>>,
    /// Pending increments by feed name (the zone).
    zones: BTreeMap<String, ZoneChanges>,
}

/// An owner of a policy zone: the trigger's name, and whether it is the
/// below-only `*.name`.
type Owner = (String, bool);

/// One zone's changes since its last compile.
struct ZoneChanges {
    /// Each changed owner's entry now; `None`: deleted.
    entries: HashMap<Owner, Option<Entry>>,
    mask: Arc<Mask>,
    layer: Arc<Layer>,
    /// When the zone file holding every change was written; `None` while
    /// a change is not in the file yet.
    written: Option<Instant>,
    /// A later increment could not be applied here: it is only in the
    /// zone file, so no further increment of this zone goes live (it
    /// would be built on entries that increment changed) until a compile
    /// has read the file and dropped this one.
    frozen: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    verdict: Verdict,
    action: Option<Action>,
    detail: Option<String>,
}

/// Why an increment was left to the compile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotApplied {
    #[error("the zone has no layers of its own (a small zone compiles quickly)")]
    NotBig,
    #[error("the increment changes {0}, which only a compile applies exactly")]
    Unsupported(String),
    #[error("the increment's records do not parse: {0}")]
    Parse(String),
    #[error("building the increment's layer failed: {0}")]
    Build(String),
    #[error("an earlier increment of the zone waits for its compile")]
    Frozen,
    #[error("no list has gone live yet")]
    NoList,
}

impl Increments {
    pub fn new(handle: BlocklistHandle) -> Arc<Increments> {
        Arc::new(Increments {
            handle,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serve a list loaded from the snapshot, built with `config`'s
    /// settings (checked by the caller), as the base.
    pub fn seed(&self, list: Blocklist, config: Arc<Config>) -> Arc<Blocklist> {
        let mut state = self.state();
        state.base = Some(Arc::new(list));
        state.config = Some(config);
        state.zones.clear();
        let generation = state.base.as_ref().map_or(0, |b| b.generation());
        self.store(&state, generation)
    }

    /// Put a compiled list live as the next generation, with the pending
    /// increments on top. A compile that `started` after a zone's file
    /// holding all its changes was written carries them: that increment
    /// is dropped, unless the compile kept the zone's previous contents
    /// (`kept`: it did not read the file). Returns the compiled list
    /// (what the snapshot holds, with the same generation) and the list
    /// now live.
    pub fn publish(
        &self,
        mut list: Blocklist,
        config: Arc<Config>,
        started: Instant,
        kept: &[&str],
    ) -> (Arc<Blocklist>, Arc<Blocklist>) {
        let mut state = self.state();
        let generation = self.handle.load().generation() + 1;
        list.set_generation(generation);
        let base = Arc::new(list);
        state.base = Some(Arc::clone(&base));
        state.config = Some(config);
        state.zones.retain(|zone, changes| {
            let carried = changes.written.is_some_and(|w| w <= started);
            let in_layers = own_layers(&base, zone).next().is_some();
            (!carried || kept.contains(&zone.as_str())) && in_layers
        });
        let live = self.store(&state, generation);
        (base, live)
    }

    /// Put a zone's increment live: `steps` are the IXFR's (deleted,
    /// added) record lines (master-file lines, absolute owners) in order;
    /// `soa` is the new SOA as a line, so the entries name the new serial.
    /// Until [`Increments::written`], a compile does not drop it. Returns
    /// how many records it changed.
    pub fn apply(
        &self,
        zone: &str,
        soa: &str,
        steps: &[(Vec<String>, Vec<String>)],
    ) -> Result<usize, NotApplied> {
        let mut state = self.state();
        let result = Increments::changes(&state, zone, soa, steps);
        let (entries, changed) = match result {
            Ok(found) => found,
            Err(error) => {
                if let Some(pending) = state.zones.get_mut(zone) {
                    pending.frozen = true;
                }
                return Err(error);
            }
        };
        let config = state.config.clone().ok_or(NotApplied::NoList)?;
        let (mask, layer) = build(&config, zone, &entries)?;
        state.zones.insert(
            zone.to_owned(),
            ZoneChanges {
                entries,
                mask: Arc::new(mask),
                layer: Arc::new(layer),
                written: None,
                frozen: false,
            },
        );
        let generation = self.handle.load().generation() + 1;
        self.store(&state, generation);
        Ok(changed)
    }

    /// The zone's pending entries with `steps` applied, and how many
    /// records they change.
    fn changes(
        state: &State,
        zone: &str,
        soa: &str,
        steps: &[(Vec<String>, Vec<String>)],
    ) -> Result<(HashMap<Owner, Option<Entry>>, usize), NotApplied> {
        let base = state.base.as_ref().ok_or(NotApplied::NoList)?;
        if own_layers(base, zone).next().is_none() {
            return Err(NotApplied::NotBig);
        }
        let pending = state.zones.get(zone);
        if pending.is_some_and(|z| z.frozen) {
            return Err(NotApplied::Frozen);
        }
        let mut entries = pending.map(|z| z.entries.clone()).unwrap_or_default();
        let mut changed = 0;
        for (deleted, added) in steps {
            for (key, _) in parse(zone, "", deleted)? {
                entries.insert(key, None);
                changed += 1;
            }
            for (key, entry) in parse(zone, soa, added)? {
                entries.insert(key, Some(entry));
                changed += 1;
            }
        }
        Ok((entries, changed))
    }

    /// The zone file now holds every change applied to `zone`, and any
    /// increment that was refused.
    pub fn written(&self, zone: &str) {
        if let Some(changes) = self.state().zones.get_mut(zone) {
            changes.written = Some(Instant::now());
        }
    }

    /// Drop `zone`'s increment (its zone file could not take it: a full
    /// transfer follows, and its compile).
    pub fn abandon(&self, zone: &str) {
        let mut state = self.state();
        if state.zones.remove(zone).is_some() {
            let generation = self.handle.load().generation() + 1;
            self.store(&state, generation);
        }
    }

    /// Owners with a pending change, over all zones.
    pub fn pending(&self) -> usize {
        self.state().zones.values().map(|z| z.entries.len()).sum()
    }

    /// Compose the base and the increments, and store it as `generation`.
    /// Runs under the state lock, so stores are in order.
    fn store(&self, state: &State, generation: u64) -> Arc<Blocklist> {
        let Some(base) = state.base.clone() else {
            return self.handle.load_full();
        };
        if state.zones.is_empty() && base.generation() == generation {
            self.handle.store(Arc::clone(&base));
            return base;
        }
        let mut list = Blocklist::from_layers(base.layers.clone());
        list.masks = vec![None; list.layers.len()];
        for (zone, changes) in &state.zones {
            let own: Vec<usize> = own_layers(&base, zone).collect();
            for i in own {
                list.masks[i] = Some(Arc::clone(&changes.mask));
            }
            list.layers.push(Arc::clone(&changes.layer));
            list.masks.push(None);
        }
        list.set_generation(generation);
        let list = Arc::new(list);
        self.handle.store(Arc::clone(&list));
        list
    }
}

/// The indexes of the layers that hold `zone`'s entries alone.
fn own_layers<'a>(list: &'a Blocklist, zone: &'a str) -> impl Iterator<Item = usize> + 'a {
    list.layers
        .iter()
        .enumerate()
        .filter(move |(_, l)| l.own && l.feeds.len() == 1 && l.feeds[0].name == zone)
        .map(|(i, _)| i)
}

/// Read record lines of `zone` as the RPZ parser does; refuse what an
/// increment cannot apply exactly.
fn parse(zone: &str, soa: &str, lines: &[String]) -> Result<Vec<(Owner, Entry)>, NotApplied> {
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let mut text = format!("$ORIGIN {zone}.\n{soa}\n");
    for line in lines {
        if line.split_whitespace().nth(3).is_none_or(|t| t != "CNAME") {
            return Err(NotApplied::Unsupported(format!("local data ({line})")));
        }
        text.push_str(line);
        text.push('\n');
    }
    let mut out = Vec::new();
    let mut unsupported = None;
    let report = formats::parse_reader(text.as_bytes(), Format::Rpz, &mut |i| {
        if i.net.is_some() || i.subject != Subject::Query || !i.local.is_empty() {
            unsupported
                .get_or_insert_with(|| format!("an address or name-server trigger ({})", i.name));
            return;
        }
        out.push((
            (i.name, i.scope == Scope::Below),
            Entry {
                verdict: i.verdict,
                action: i.action,
                detail: i.detail.map(str::to_owned),
            },
        ));
    })
    .map_err(|e| NotApplied::Parse(e.to_string()))?;
    if let Some(what) = unsupported {
        return Err(NotApplied::Unsupported(what));
    }
    if let Some(reject) = report.first_rejects.first() {
        return Err(NotApplied::Parse(reject.error.to_string()));
    }
    if out.len() != lines.len() {
        let skipped: Vec<&str> = report.skipped.keys().map(String::as_str).collect();
        return Err(NotApplied::Unsupported(skipped.join(", ")));
    }
    Ok(out)
}

/// The mask over the zone's layers and the layer of its changed owners,
/// built with the zone's feed settings as the compile would.
fn build(
    config: &Config,
    zone: &str,
    entries: &HashMap<Owner, Option<Entry>>,
) -> Result<(Mask, Layer), NotApplied> {
    let mut mask = Mask::default();
    let source = FeedSource {
        format: Format::Rpz,
        ..FeedSource::feed(zone.to_owned(), config.feed_settings(zone))
    };
    let mut feed = FeedBuilder::new(source);
    let mut ordered: Vec<_> = entries.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    for ((name, below), entry) in ordered {
        mask.hide(name, *below);
        let Some(entry) = entry else { continue };
        let scope = if *below { Scope::Below } else { Scope::Exact };
        let mut indicator = formats::Indicator::block(name.clone(), scope);
        indicator.verdict = entry.verdict;
        indicator.action = entry.action;
        indicator.detail = entry.detail.as_deref();
        feed.add(indicator);
    }
    let feed = Arc::new(feed.finish(ParseCounts::default()));
    let protected = load_protected(&config.blocklist.protected)
        .map_err(|e| NotApplied::Build(e.to_string()))?;
    let (layer, _) = merge(&[feed], &protected, &MergeSettings::of(config))
        .map_err(|e| NotApplied::Build(e.to_string()))?;
    Ok((mask, layer))
}

#[cfg(test)]
mod tests;
