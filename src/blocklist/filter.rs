//! A cache-resident negative filter in front of each layer's automaton.
//!
//! The fst walk costs about one cache miss per transition, and most
//! queries are not listed, yet walk deep (`www.google.com` shares its
//! prefixes with listed names). A binary fuse filter (`xorf`, 8-bit
//! fingerprints, about 9 bits and a 1/256 false-positive rate per key)
//! over the layer's keys answers "certainly not listed" for every label
//! boundary of a query name in a handful of probes into about a megabyte;
//! only when some prefix may be a key does the walk run. The automaton
//! stays the source of truth: a false positive costs one walk, never a
//! wrong answer.
//!
//! A query's prefixes are hashed as the filter probes them, labels right
//! to left (TLD first) as the walk takes them, each lower-cased; the first
//! "maybe" ends the probing and starts the walk. A label is hashed a
//! machine word at a time, lower-cased eight bytes at once: a multiply per
//! byte, each waiting on the last, was a quarter of the lookup's own
//! profile samples. A stored key's labels (split at the separator) go
//! through the same [`hash_label`] in [`key_hash`]. The snapshot stores
//! filters built with it: change it and bump the snapshot version.

use xorf::{BinaryFuse8, Descriptor, Filter};

use crate::domain::KEY_SEPARATOR;

const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const K: u64 = 0x9e37_79b9_7f4a_7c15;
const ONES: u64 = 0x0101_0101_0101_0101;

/// The 128-bit product folded to 64 bits: one multiply mixes every bit
/// of both halves.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// ASCII upper case to lower case in all eight bytes; other bytes kept.
#[inline]
fn lower(word: u64) -> u64 {
    let low7 = word & (0x7f * ONES);
    let from_a = low7.wrapping_add(0x3f * ONES); // high bit set from 'A'
    let past_z = low7.wrapping_add(0x25 * ONES); // high bit set past 'Z'
    let upper = from_a & !past_z & !word & (0x80 * ONES);
    word | (upper >> 2)
}

#[inline]
fn read32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

#[inline]
fn read64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Whether any of the eight bytes is the separator.
#[inline]
fn holds_separator(word: u64) -> bool {
    let x = word ^ (u64::from(KEY_SEPARATOR) * ONES);
    x.wrapping_sub(ONES) & !x & (0x80 * ONES) != 0
}

/// The hash after one more label, and whether the label holds the
/// separator byte (read from the same words). Every byte is read (words
/// may overlap at the end) and the length is mixed in, so distinct labels
/// give distinct inputs to the multiplies.
#[inline]
fn hash_label(mut hash: u64, label: &[u8]) -> (u64, bool) {
    let n = label.len();
    let mut dotted = false;
    let last = if n > 8 {
        let mut at = 0;
        while at + 8 < n {
            let word = read64(label, at);
            dotted |= holds_separator(word);
            hash = fold(hash ^ lower(word), K);
            at += 8;
        }
        read64(label, n - 8)
    } else if n >= 4 {
        (read32(label, 0) << 32) | read32(label, n - 4)
    } else if n > 0 {
        (u64::from(label[0]) << 16) | (u64::from(label[n / 2]) << 8) | u64::from(label[n - 1])
    } else {
        0
    };
    dotted |= holds_separator(last);
    // The length picks the multiplier, kept odd.
    (
        fold(hash ^ lower(last), K.wrapping_add((n as u64) << 1)),
        dotted,
    )
}

fn push_label(hash: u64, label: &[u8]) -> u64 {
    hash_label(hash, label).0
}

/// The hash of a stored key (reversed labels, each closed by the separator).
pub fn key_hash(key: &[u8]) -> u64 {
    let key = key.strip_suffix(&[KEY_SEPARATOR]).unwrap_or(key);
    key.split(|b| *b == KEY_SEPARATOR).fold(SEED, push_label)
}

/// The filter of one layer.
pub struct KeyFilter(BinaryFuse8);

/// The parts a snapshot stores: the descriptor fields and the fingerprints.
pub struct FilterParts {
    pub seed: u64,
    pub segment_length: u32,
    pub segment_length_mask: u32,
    pub segment_count_length: u32,
}

impl KeyFilter {
    /// Build from the hashes of a layer's keys. `None` when the filter
    /// cannot be built (an empty layer; construction failing, which
    /// xorf retries internally): the layer is then always walked.
    pub fn build(mut hashes: Vec<u64>) -> Option<KeyFilter> {
        if hashes.is_empty() {
            return None;
        }
        // Two keys with one hash would be a duplicate to the filter.
        hashes.sort_unstable();
        hashes.dedup();
        BinaryFuse8::try_from(&hashes).ok().map(KeyFilter)
    }

    /// False: no label-boundary prefix of the query (`labels` right to
    /// left, TLD first), from the `from`th (0 for the first label alone),
    /// is a key of this layer.
    ///
    /// Each prefix is hashed as it is probed: nothing is stored, and the
    /// first "maybe" ends the hashing. An earlier version hashed every
    /// prefix into an array first, once for all layers; zeroing that array,
    /// and hashing labels past a hit, made a miss in the lookup bench 77 ns
    /// against 57 ns now. A name whose TLD two layers hold is hashed
    /// twice, which costs less than that. A label holding the separator
    /// byte ends the prefixes, as it ends a walk: no key runs through it.
    #[inline]
    pub fn may_match<'l>(&self, labels: impl Iterator<Item = &'l [u8]>, from: usize) -> bool {
        let mut hash = SEED;
        for (i, label) in labels.enumerate() {
            let (next, dotted) = hash_label(hash, label);
            if dotted {
                return false;
            }
            hash = next;
            if i >= from && self.0.contains(&hash) {
                return true;
            }
        }
        false
    }

    /// Size of the fingerprints, for the memory figures.
    pub fn bytes(&self) -> usize {
        self.0.fingerprints.len()
    }

    pub fn parts(&self) -> (FilterParts, &[u8]) {
        let d = &self.0.descriptor;
        (
            FilterParts {
                seed: d.seed,
                segment_length: d.segment_length,
                segment_length_mask: d.segment_length_mask,
                segment_count_length: d.segment_count_length,
            },
            &self.0.fingerprints,
        )
    }

    /// Reload from stored parts. The fingerprints must be as many as the
    /// descriptor addresses (checked, so a damaged snapshot cannot make a
    /// probe read out of bounds).
    pub fn from_parts(parts: FilterParts, fingerprints: &[u8]) -> Option<KeyFilter> {
        let needed =
            (parts.segment_count_length as usize).checked_add(2 * parts.segment_length as usize)?;
        if fingerprints.len() < needed || parts.segment_length_mask >= parts.segment_length.max(1) {
            return None;
        }
        Some(KeyFilter(BinaryFuse8 {
            descriptor: Descriptor {
                seed: parts.seed,
                segment_length: parts.segment_length,
                segment_length_mask: parts.segment_length_mask,
                segment_count_length: parts.segment_count_length,
            },
            fingerprints: fingerprints.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reversed_key;

    fn matches(filter: &KeyFilter, name: &str) -> bool {
        filter.may_match(name.rsplit('.').map(str::as_bytes), 0)
    }

    #[test]
    fn a_query_matches_the_keys_of_its_prefixes_and_rarely_anything_else() {
        let names = ["evil.example", "com", "deep.bad.example.org"];
        let filter =
            KeyFilter::build(names.iter().map(|n| key_hash(&reversed_key(n))).collect()).unwrap();
        // No false negatives, whatever the case of the query.
        for q in [
            "evil.example",
            "WWW.Evil.Example",
            "google.com",
            "a.deep.bad.example.org",
        ] {
            assert!(matches(&filter, q), "{q}");
        }
        // Unlisted names: with 8-bit fingerprints about 1 in 256 probes is
        // a false positive; of 10,000 names of 3 labels, well under 3%.
        let false_positives = (0..10_000)
            .filter(|i| matches(&filter, &format!("host{i}.site{i}.example")))
            .count();
        assert!(false_positives < 300, "{false_positives}");
    }

    proptest::proptest! {
        /// The hash a query makes of each of its prefixes is the hash the
        /// compiler made of that prefix's key, whatever the case and the
        /// label lengths (1 to 63, so every word-reading branch is taken):
        /// a filter holding only that key matches the query from there.
        #[test]
        fn query_prefixes_hash_as_their_keys(
            labels in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        b'a'..=b'z',
                        b'A'..=b'Z',
                        proptest::sample::select(b"@[`{-_09".to_vec()),
                        0x80u8..=0xff,
                    ],
                    1..64,
                ),
                1..8,
            )
        ) {
            let query: Vec<&[u8]> = labels.iter().rev().map(Vec::as_slice).collect();
            let mut key = Vec::new();
            for (i, label) in query.iter().enumerate() {
                key.extend(label.iter().map(u8::to_ascii_lowercase));
                key.push(KEY_SEPARATOR);
                let filter = KeyFilter::build(vec![key_hash(&key)]).unwrap();
                proptest::prop_assert!(filter.may_match(query.iter().copied(), i), "prefix {}", i);
            }
        }
    }

    #[test]
    fn labels_that_differ_in_one_byte_or_in_length_hash_apart() {
        let base = b"abcdefghijklmnopq".to_vec();
        let mut seen = std::collections::HashSet::new();
        for len in 0..base.len() {
            assert!(seen.insert(push_label(SEED, &base[..len])), "length {len}");
            for at in 0..len {
                let mut other = base[..len].to_vec();
                other[at] = b'z';
                assert!(
                    seen.insert(push_label(SEED, &other)),
                    "length {len}, byte {at}"
                );
            }
        }
        assert_eq!(push_label(SEED, b"WwW-X"), push_label(SEED, b"www-x"));
    }

    #[test]
    fn words_are_lower_cased_as_each_byte_would_be() {
        for b in 0..=255u8 {
            for at in 0..8 {
                // The byte alone, and among neighbours either side of 'A'-'Z'.
                for fill in [0u8, b'@', b'A', b'Z', b'[', 0xc1, 0xff] {
                    let mut bytes = [fill; 8];
                    bytes[at] = b;
                    let expected = bytes.map(|c| c.to_ascii_lowercase());
                    assert_eq!(
                        lower(u64::from_le_bytes(bytes)),
                        u64::from_le_bytes(expected),
                        "byte {b:#x} at {at} among {fill:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn names_of_any_depth_are_probed_to_the_last_label_and_a_dotted_label_ends_them() {
        // An ip6.arpa name has 34 labels; the hashes have no depth limit.
        let deep: Vec<String> = (0..100).map(|i| format!("l{i}")).collect();
        let mut key = Vec::new();
        for label in &deep {
            key.extend_from_slice(label.as_bytes());
            key.push(KEY_SEPARATOR);
        }
        let filter = KeyFilter::build(vec![key_hash(&key)]).unwrap();
        assert!(filter.may_match(deep.iter().map(|l| l.as_bytes()), 0));
        assert!(filter.may_match(deep.iter().map(|l| l.as_bytes()), 99));
        assert!(!filter.may_match(deep.iter().map(|l| l.as_bytes()), 100));
        // A label with the separator in it ends the prefixes, as it ends a
        // walk: nothing past it is probed.
        let filter = KeyFilter::build(vec![key_hash(b"com.")]).unwrap();
        let dotted = [&b"com"[..], b"a.b", b"x"];
        assert!(filter.may_match(dotted.into_iter(), 0));
        assert!(!filter.may_match(dotted.into_iter(), 1));
        // Wherever the separator sits in a label of any length.
        for len in 1..=63 {
            for at in 0..len {
                let mut label = vec![b'x'; len];
                label[at] = KEY_SEPARATOR;
                assert!(hash_label(SEED, &label).1, "length {len}, at {at}");
            }
            assert!(!hash_label(SEED, &vec![b'x'; len]).1, "length {len}");
        }
    }

    #[test]
    fn stored_parts_round_trip_and_bad_parts_are_refused() {
        let hashes: Vec<u64> = (0..5000u64)
            .map(|i| key_hash(format!("k{i}.").as_bytes()))
            .collect();
        let filter = KeyFilter::build(hashes.clone()).unwrap();
        let (parts, fingerprints) = filter.parts();
        let copy = KeyFilter::from_parts(parts, fingerprints).unwrap();
        assert!(hashes.iter().all(|h| copy.0.contains(h)));
        let (parts, fingerprints) = filter.parts();
        assert!(KeyFilter::from_parts(parts, &fingerprints[..10]).is_none());
    }
}
