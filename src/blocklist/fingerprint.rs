//! Fingerprints of the compile's inputs: size, modification time and
//! content hash of each feed, allow and protected list, plus a pseudo-input
//! for the config settings the list depends on. They tell whether a feed
//! changed (size and mtime first, the content hash when those differ, so a
//! `touch` or an rsync that rewrote the same bytes is no change) and
//! whether a snapshot still matches its inputs.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::feed_files;
use crate::config::Config;

/// Size, modification time and content hash of a feed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub hash: u64,
}

/// FNV-1a: a change detector for files and settings, not a security check.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// A file's bytes folded eight at a time (FNV-1a's step on words, with a
/// rotation so that high bits reach the low ones), read in blocks: a
/// change detector several times faster than FNV-1a byte by byte, which
/// a compile of a big feed paid for hundreds of milliseconds.
pub(super) fn content_hash(path: &Path) -> io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut h = FNV_SEED;
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        let mut words = buf[..n].chunks_exact(8);
        for word in words.by_ref() {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        }
        h = fnv1a(h, words.remainder());
    }
}

/// Fill `buf` as far as the file allows, so that blocks start at the same
/// offsets whatever the reads return (the hash depends on where words
/// begin).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What a big feed's layers depend on besides the feed itself: the
/// actions, the per-feed settings, the answer-IP categories and the
/// protected names.
pub(super) fn settings_key(config: &Config, inputs: &BTreeMap<String, Fingerprint>) -> u64 {
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
pub(super) fn fingerprint(path: &Path, known: Option<&Fingerprint>) -> Option<Fingerprint> {
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

#[cfg(test)]
mod tests {
    use super::content_hash;

    /// Any change shows: a byte anywhere (the high byte of a word too),
    /// the length, and content across the read blocks.
    #[test]
    fn the_content_hash_sees_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |bytes: &[u8]| {
            let path = dir.path().join("f");
            std::fs::write(&path, bytes).unwrap();
            content_hash(&path).unwrap()
        };
        let base: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let h = hash(&base);
        assert_eq!(h, hash(&base), "the same bytes, the same hash");
        for at in [0, 7, 8, 65_535, 65_536, 131_071, 199_999] {
            let mut changed = base.clone();
            changed[at] ^= 0x80;
            assert_ne!(h, hash(&changed), "a change at {at}");
        }
        assert_ne!(h, hash(&base[..199_999]));
        let mut longer = base.clone();
        longer.push(0);
        assert_ne!(h, hash(&longer));
        assert_ne!(hash(&[0; 8]), hash(&[0; 16]));
    }
}
