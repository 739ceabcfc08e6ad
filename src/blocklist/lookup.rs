//! The query-time walk through the automata, and its verbose twin for
//! `portcullis check`.
//!
//! Each layer is walked once; each walk yields its most specific
//! applicable entry. Across layers the deeper entry wins; at the same
//! depth the higher rank (exact before subtree, allow before block), then
//! the earlier layer. That is the same order the merge uses inside a
//! layer, so splitting feeds into layers never changes a decision.

use fst::raw::Output;

use super::mask::Mask;
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
    /// The most specific applicable entry in this layer, less what `mask`
    /// hides. A masked layer (rare: between an RPZ increment and the next
    /// compile) walks a copy of this code that keeps the key so far;
    /// the unmasked copy has no trace of it in its loop.
    fn walk<'l, I>(&self, labels: I, layer: u8, mask: Option<&Mask>) -> Option<Match>
    where
        I: Iterator<Item = &'l [u8]>,
    {
        match mask {
            None => self.walk_with::<I, false>(labels, layer, None),
            Some(mask) => self.walk_with::<I, true>(labels, layer, Some(mask)),
        }
    }

    fn walk_with<'l, I, const MASKED: bool>(
        &self,
        labels: I,
        layer: u8,
        mask: Option<&Mask>,
    ) -> Option<Match>
    where
        I: Iterator<Item = &'l [u8]>,
    {
        let fst = self.map.as_fst();
        let mut node = fst.root();
        let mut out = Output::zero();
        let mut best = None;
        let mut depth: u8 = 0;
        let mut labels = labels.peekable();
        // The key so far, for the mask (never grown unmasked).
        let mut key = Vec::new();
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
                if MASKED {
                    key.push(byte);
                }
                let t = node.transition(i);
                out = out.cat(t.out);
                node = fst.node(t.addr);
            }
            depth = depth.saturating_add(1);
            if node.is_final() {
                let value = out.cat(node.final_output()).value();
                let at_name = labels.peek().is_none();
                if MASKED && mask.is_some_and(|m| m.hides(&key, at_name)) {
                    continue;
                }
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
    pub(super) fn rank(&self, m: &Match) -> u8 {
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
            let Some(found) = layer.walk(labels(), i as u8, self.mask(i)) else {
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
                let hidden = |at_name| self.mask(li).is_some_and(|m| m.hides(&key, at_name));
                // The slot that applies here first; the other only when it
                // holds a different entry (a subtree entry fills both).
                let n = layer.metas.len();
                let applying = decode(slot(value, is_name), li as u8, n, depth, is_name);
                let other = decode(slot(value, !is_name), li as u8, n, depth, !is_name);
                for (found, applies) in [(applying, true), (other, false)] {
                    let Some(m) = found else { continue };
                    if hidden(applies == is_name) {
                        continue;
                    }
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
mod tests;
