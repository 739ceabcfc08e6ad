//! Query names the blocklist listed lately, with the entry that decided
//! each, so that a listed name asked again is found with one probe
//! instead of a walk of the automaton.
//!
//! Beaconing malware asks for its C2 name every few seconds, and a blocked
//! tracker is asked on every page. The walk for a listed name visits a
//! node of the automaton per byte, and with a list of a million names each
//! node is a likely cache miss: about a quarter of the core at 145,000
//! repeated blocked queries a second. A probe here is one hash and one or
//! two misses.
//!
//! What is held, and for how long:
//! - only names the list matched, keyed by the lower-cased wire name (the
//!   name is kept and compared, so a hash collision is a miss, never
//!   another name's entry); clean names repeat through the packet cache;
//! - with the blocklist generation they were found under, and used only
//!   while it is still the one in force: a reload, an RPZ increment or a
//!   compile after a config change brings a new generation, which empties
//!   it in effect;
//! - the [`Match`] only: the organisation's judgement, the response and
//!   the hit record are made for each query as before.
//!
//! A name is held from its second walk, not its first. A bitmap of name
//! hashes (the doorkeeper, lock-free) marks the names walked once; a name
//! whose mark is not set is not held, so most names never asked before
//! (a first pass over a list, random subdomains under a listed domain, and
//! every clean name, which is never held) cost one bit test and no lock.
//! Before the doorkeeper, the probe, the insert and the eviction for names
//! never asked again took 5% of a core in a first pass of listed names.
//! The marks are cleared when half the bits are set; a held name whose
//! mark went is walked once more.
//!
//! Shards of a plain mutex, as the packet cache: a lookup holds one for a
//! hash probe and a compare; nothing else (no reload, no log write) ever
//! takes them. Each shard forgets its oldest name when full (first in,
//! first out: a hit does not refresh a name).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustc_hash::FxBuildHasher;

use crate::blocklist::Match;

const SHARDS: usize = 64;

/// Names held at once: about 16 MiB when full (the table's slot, the
/// queue's and the name, some 120 bytes a name). The oldest first out,
/// by when each name was first held.
pub const CAPACITY: usize = 131_072;

struct Entry {
    /// The lower-cased wire name.
    name: Box<[u8]>,
    generation: u64,
    found: Match,
}

#[derive(Default)]
struct Shard {
    /// Name hash -> entry; a colliding name replaces the entry.
    entries: HashMap<u64, Entry, FxBuildHasher>,
    /// The hashes in `entries`, oldest first: once full, the oldest goes.
    order: VecDeque<u64>,
}

/// Marks in the doorkeeper: 128 KiB, so that its bit tests stay in the
/// core's own cache.
const DOOR_BITS: usize = 1 << 20;

pub struct ListedMemo {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    door: Doorkeeper,
}

/// Names walked once, by a bit of their hash.
struct Doorkeeper {
    words: Box<[AtomicU64]>,
    /// Bits set since the last clear.
    set: AtomicUsize,
}

impl Doorkeeper {
    fn new(bits: usize) -> Doorkeeper {
        Doorkeeper {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            set: AtomicUsize::new(0),
        }
    }

    fn at(&self, hash: u64) -> (&AtomicU64, u64) {
        let bit = hash as usize % (self.words.len() * 64);
        (&self.words[bit / 64], 1 << (bit % 64))
    }

    fn is_marked(&self, hash: u64) -> bool {
        let (word, mask) = self.at(hash);
        word.load(Ordering::Relaxed) & mask != 0
    }

    /// Mark `hash`; whether it was marked already. Past half the bits,
    /// every mark is cleared first (racing clears only clear twice).
    fn mark(&self, hash: u64) -> bool {
        let (word, mask) = self.at(hash);
        if word.fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            return true;
        }
        if self.set.fetch_add(1, Ordering::Relaxed) + 1 >= self.words.len() * 32 {
            self.set.store(0, Ordering::Relaxed);
            for w in self.words.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

impl Default for ListedMemo {
    fn default() -> ListedMemo {
        ListedMemo::new(CAPACITY)
    }
}

/// A wire name (any case) with its hash, made once a query: a miss
/// is walked and then put with the same key.
pub struct Key<'a> {
    name: &'a [u8],
    hash: u64,
}

impl<'a> Key<'a> {
    pub fn of(name: &'a [u8]) -> Key<'a> {
        Key {
            name,
            hash: hash(name),
        }
    }
}

/// The hash of a wire name, lower-cased.
fn hash(name: &[u8]) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    for &b in name {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

impl ListedMemo {
    pub fn new(capacity: usize) -> ListedMemo {
        ListedMemo::with_door(capacity, DOOR_BITS)
    }

    fn with_door(capacity: usize, door_bits: usize) -> ListedMemo {
        ListedMemo {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            door: Doorkeeper::new(door_bits),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        self.shards[(hash >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry that decided `name` (a wire name, any case) under
    /// `generation`, if it is held.
    pub fn get(&self, key: &Key<'_>, generation: u64) -> Option<Match> {
        let (name, hash) = (key.name, key.hash);
        if !self.door.is_marked(hash) {
            return None;
        }
        let shard = self.shard(hash);
        let entry = shard.entries.get(&hash)?;
        (entry.generation == generation && entry.name.eq_ignore_ascii_case(name))
            .then_some(entry.found)
    }

    /// Hold `found` for `name` (a wire name, any case) under `generation`,
    /// if the name was walked before; else only mark it.
    pub fn put(&self, key: &Key<'_>, generation: u64, found: Match) {
        let (name, hash) = (key.name, key.hash);
        if !self.door.mark(hash) {
            return;
        }
        let entry = Entry {
            name: name.to_ascii_lowercase().into_boxed_slice(),
            generation,
            found,
        };
        let mut shard = self.shard(hash);
        // Room first, so that neither the table nor the queue outgrows
        // `per_shard` (and doubles its allocation) for one name.
        if !shard.entries.contains_key(&hash) {
            while shard.entries.len() >= self.per_shard {
                let Some(oldest) = shard.order.pop_front() else {
                    break;
                };
                shard.entries.remove(&oldest);
            }
            shard.order.push_back(hash);
        }
        shard.entries.insert(hash, entry);
    }

    /// Names held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocklist::Blocklist;

    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn found(list: &Blocklist, name: &str) -> Match {
        list.lookup_str(name).expect("listed")
    }

    fn list() -> Blocklist {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
        std::fs::write(dir.path().join("feeds/list.txt"), "evil.example\nc2.test\n").unwrap();
        let config = crate::config::Config::from_str(
            "[blocklist]\nfeeds_dir = \"feeds\"\nstate_dir = \"state\"\n",
            &dir.path().join("portcullis.toml"),
        )
        .unwrap();
        crate::blocklist::compile(&config).unwrap().0
    }

    #[test]
    fn a_held_name_is_found_in_any_case_and_only_under_its_generation() {
        let list = list();
        let memo = ListedMemo::new(1_024);
        let m = found(&list, "www.evil.example");
        assert_eq!(memo.get(&Key::of(&wire("www.evil.example")), 7), None);
        // The first walk only marks the name; the second holds it.
        memo.put(&Key::of(&wire("WWW.Evil.Example")), 7, m);
        assert_eq!(memo.get(&Key::of(&wire("www.evil.example")), 7), None);
        assert!(memo.is_empty());
        memo.put(&Key::of(&wire("www.evil.EXAMPLE")), 7, m);
        assert_eq!(memo.get(&Key::of(&wire("www.evil.example")), 7), Some(m));
        assert_eq!(memo.get(&Key::of(&wire("wWw.EVIL.example")), 7), Some(m));
        // A new list: the entry no longer speaks.
        assert_eq!(memo.get(&Key::of(&wire("www.evil.example")), 8), None);
        // Another name is never given this one's entry.
        assert_eq!(memo.get(&Key::of(&wire("ww.evil.example")), 7), None);
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn a_full_memo_forgets_its_oldest_names() {
        let list = list();
        let memo = ListedMemo::new(SHARDS);
        let m = found(&list, "c2.test");
        for i in 0..10 * SHARDS {
            memo.put(&Key::of(&wire(&format!("n{i}.c2.test"))), 1, m);
            memo.put(&Key::of(&wire(&format!("n{i}.c2.test"))), 1, m);
        }
        assert!(memo.len() <= SHARDS, "{}", memo.len());
        assert!(!memo.is_empty());
        // The newest is still held.
        let last = format!("n{}.c2.test", 10 * SHARDS - 1);
        assert_eq!(memo.get(&Key::of(&wire(&last)), 1), Some(m));
    }

    #[test]
    fn the_marks_clear_when_half_set_and_a_held_name_is_walked_once_more() {
        let list = list();
        let m = found(&list, "c2.test");
        // 256 marks: all cleared when the 128th is set.
        let memo = ListedMemo::with_door(1_024, 256);
        let held = wire("held.c2.test");
        memo.put(&Key::of(&held), 1, m);
        memo.put(&Key::of(&held), 1, m);
        assert_eq!(memo.get(&Key::of(&held), 1), Some(m));
        let mut cleared = false;
        for i in 0..10_000 {
            let before = memo.door.set.load(Ordering::Relaxed);
            memo.put(&Key::of(&wire(&format!("n{i}.c2.test"))), 1, m);
            if memo.door.set.load(Ordering::Relaxed) < before {
                cleared = true;
                break;
            }
        }
        assert!(cleared);
        assert!(
            memo.door
                .words
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == 0)
        );
        // Still in its shard, but unmarked: not found until walked again.
        assert_eq!(memo.get(&Key::of(&held), 1), None);
        memo.put(&Key::of(&held), 1, m);
        assert_eq!(memo.get(&Key::of(&held), 1), Some(m));
    }
}
