//! The last good copy of every feed, kept across restarts in
//! `state_dir/last-good/`: the bytes of the version last accepted, and a
//! manifest with its entry count (the shrink guard's baseline).
//!
//! Without it, the compiler's memory of a feed ended with the process: a
//! small feed truncated or corrupted while the resolver was stopped was
//! accepted at the next start as if it were the new truth, and a feed
//! deleted by mistake took its entries with it. With it, a restart judges
//! a feed exactly as a running resolver would: a file that fails to parse,
//! shrinks past `max_shrink`, cannot be read, or is gone is served from
//! its last good copy, and the reason is reported.
//!
//! Only the serving resolver keeps copies (`portcullis compile` reads the
//! feeds as they are). Copies are written to a temporary name and renamed,
//! the manifest last, so a crash leaves the old copy or the new one.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const DIR: &str = "last-good";
const MANIFEST: &str = "manifest.json";

/// What is kept of one feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Names and addresses the accepted version held.
    pub indicators: usize,
    /// Its content hash (the fingerprint's), to skip copying it again.
    pub hash: u64,
}

/// The last-good directory and its manifest.
#[derive(Debug)]
pub struct LastGood {
    dir: PathBuf,
    manifest: BTreeMap<String, Kept>,
}

impl LastGood {
    /// Open `state_dir/last-good`. A manifest that cannot be read is
    /// logged and treated as empty: the feeds are then judged as on a
    /// first start.
    pub fn open(state_dir: &Path) -> LastGood {
        let dir = state_dir.join(DIR);
        let manifest = match std::fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, dir = %dir.display(), "last-good manifest unreadable; starting without it");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "last-good manifest unreadable; starting without it");
                BTreeMap::new()
            }
        };
        LastGood { dir, manifest }
    }

    pub fn get(&self, feed: &str) -> Option<&Kept> {
        self.manifest.get(feed)
    }

    /// The copy of `feed`, when one is kept and still on disk.
    pub fn copy(&self, feed: &str) -> Option<PathBuf> {
        self.manifest.get(feed)?;
        let path = self.dir.join(feed);
        path.is_file().then_some(path)
    }

    /// Feeds with a copy kept.
    pub fn feeds(&self) -> impl Iterator<Item = &str> {
        self.manifest.keys().map(String::as_str)
    }

    /// Keep `source` as the last good copy of `feed`, unless the same
    /// content is kept already.
    pub fn save(&mut self, feed: &str, source: &Path, kept: Kept) -> io::Result<()> {
        if self.manifest.get(feed) == Some(&kept) && self.dir.join(feed).is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{feed}.tmp"));
        let copied =
            std::fs::copy(source, &tmp).and_then(|_| std::fs::rename(&tmp, self.dir.join(feed)));
        if let Err(error) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        self.manifest.insert(feed.to_owned(), kept);
        self.write_manifest()
    }

    /// Stop keeping `feed` (its deletion was confirmed).
    pub fn forget(&mut self, feed: &str) -> io::Result<()> {
        if self.manifest.remove(feed).is_none() {
            return Ok(());
        }
        let _ = std::fs::remove_file(self.dir.join(feed));
        self.write_manifest()
    }

    fn write_manifest(&self) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{MANIFEST}.tmp"));
        let text = serde_json::to_vec_pretty(&self.manifest).map_err(io::Error::other)?;
        let written = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(MANIFEST)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_and_its_count_survive_a_reopen_and_forget_removes_both() {
        let state = tempfile::tempdir().unwrap();
        let feed = state.path().join("list.txt");
        std::fs::write(&feed, "a.example\nb.example\n").unwrap();
        let mut kept = LastGood::open(state.path());
        assert!(kept.copy("list.txt").is_none());
        let k = Kept {
            indicators: 2,
            hash: 42,
        };
        kept.save("list.txt", &feed, k.clone()).unwrap();
        // The feed changes; the copy does not.
        std::fs::write(&feed, "").unwrap();
        let reopened = LastGood::open(state.path());
        assert_eq!(reopened.get("list.txt"), Some(&k));
        let copy = reopened.copy("list.txt").unwrap();
        assert_eq!(
            std::fs::read_to_string(copy).unwrap(),
            "a.example\nb.example\n"
        );
        let mut reopened = reopened;
        reopened.forget("list.txt").unwrap();
        assert!(LastGood::open(state.path()).get("list.txt").is_none());
        assert!(!state.path().join("last-good/list.txt").exists());
    }

    #[test]
    fn a_broken_manifest_is_an_empty_one() {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("last-good")).unwrap();
        std::fs::write(state.path().join("last-good/manifest.json"), "{not json").unwrap();
        assert_eq!(LastGood::open(state.path()).feeds().count(), 0);
    }
}
