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
//! Keys are hashed as the walk reads them: labels right to left, each
//! lower-cased and closed by the key separator (see [`crate::domain`]), so
//! one pass over a query name gives the hash of every prefix, probed as it
//! is made.

use xorf::{BinaryFuse8, Descriptor, Filter};

use crate::domain::KEY_SEPARATOR;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over key bytes; the filter avalanches it (murmur3 finaliser)
/// before use, and distinct keys only need distinct hashes.
#[inline]
fn step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

/// The hash of a stored key (reversed labels, each closed by the separator).
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(FNV_OFFSET, |h, b| step(h, *b))
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

    /// False: no label-boundary prefix of the name (`labels` right to
    /// left, TLD first, as the walk takes them) is a key of this layer.
    /// Hashes as it goes and stops at the first prefix that may be a key;
    /// stops at a label holding the separator byte, as the walk does.
    #[inline]
    pub fn may_match<'l>(&self, labels: impl Iterator<Item = &'l [u8]>) -> bool {
        let mut hash = FNV_OFFSET;
        for label in labels {
            if label.contains(&KEY_SEPARATOR) {
                return false;
            }
            for b in label {
                hash = step(hash, b.to_ascii_lowercase());
            }
            hash = step(hash, KEY_SEPARATOR);
            if self.0.contains(&hash) {
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

    /// Rebuild from stored parts. The fingerprints must be as many as the
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
        filter.may_match(name.rsplit('.').map(str::as_bytes))
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
