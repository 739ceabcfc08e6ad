//! Entries hidden in a layer: what an applied increment (an RPZ IXFR)
//! removed or replaced in a big feed's layers until the next full compile
//! of that feed builds them again (see [`super::increments`]).
//!
//! A hidden slot is as if empty: the walk goes on to a less specific
//! candidate of the same layer, exactly as if the entry had never been
//! built. Only a big feed's own layers are ever masked, so a key's slots
//! there hold that feed's entries alone.

use std::collections::HashSet;

use crate::domain::KEY_SEPARATOR;

/// Keys (reversed labels, see [`crate::domain`]) whose exact or below
/// slot is hidden.
#[derive(Debug, Default, Clone)]
pub struct Mask {
    exact: HashSet<Box<[u8]>>,
    below: HashSet<Box<[u8]>>,
}

/// The key of a normalised name.
pub fn key_of(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    for label in name.rsplit('.') {
        key.extend_from_slice(label.as_bytes());
        key.push(KEY_SEPARATOR);
    }
    key
}

impl Mask {
    /// Hide `name`'s exact slot (`below` false) or its below slot.
    pub fn hide(&mut self, name: &str, below: bool) {
        let key = key_of(name).into_boxed_slice();
        if below {
            self.below.insert(key);
        } else {
            self.exact.insert(key);
        }
    }

    /// Whether the slot of `key` that applies (the exact slot at the
    /// query name itself, else the below slot) is hidden.
    #[inline]
    pub fn hides(&self, key: &[u8], at_name: bool) -> bool {
        if at_name {
            self.exact.contains(key)
        } else {
            self.below.contains(key)
        }
    }
}
