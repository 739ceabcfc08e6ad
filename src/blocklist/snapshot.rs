//! The compiled blocklist on disk, so a restart serves at once.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0   8  magic "PCULSNAP"
//! 8   4  format version
//! 12  4  CRC-32 of everything from byte 32 to the end
//! 16  8  length of the metadata (JSON)
//! 24  8  length of the fst region
//! 32  .. metadata, zero padding to a multiple of 8, then the fst region:
//!        each layer's automaton, each padded to a multiple of 8
//! ```
//!
//! The file is written to a temporary name, synced and renamed, so a crash
//! leaves the old snapshot or the new one, never half of one. On load the
//! header, the lengths, the checksum and the automaton are all checked; a
//! snapshot that fails any check is ignored with a warning, never trusted.
//! The fst part is memory-mapped: the kernel pages it in on demand and
//! can drop it under pressure, and a restart costs no parse.
//!
//! Over 400 lines because writing and loading share the layout above and
//! must change together.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::filter::{FilterParts, KeyFilter};
use super::{Blocklist, EntryMeta, FeedInfo, Fingerprint, FstBytes, Layer};
use crate::formats::{Format, Scope, Verdict};
use crate::policy::Action;
use crate::prefix::PrefixMap;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"PCULSNAP";
/// Bump when the layout or the meaning of the metadata changes, or the
/// filters' key hash (version 6: hashed a word at a time; 7: an odd
/// multiplier per label length; 8: name-server triggers).
pub const VERSION: u32 = 8;
const HEADER: usize = 32;
pub const FILE_NAME: &str = "blocklist.snapshot";

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {path} is not a Portcullis snapshot (bad magic)")]
    Magic { path: PathBuf },
    #[error(
        "snapshot {path} has format version {got}, this build reads {expected}; it will be rebuilt from the feeds"
    )]
    Version {
        path: PathBuf,
        expected: u32,
        got: u32,
    },
    #[error("snapshot {path} is truncated or its lengths are inconsistent")]
    Truncated { path: PathBuf },
    #[error("snapshot {path} fails its checksum (corrupted on disk?)")]
    Checksum { path: PathBuf },
    #[error("snapshot {path} metadata is unreadable: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("snapshot {path} automaton is invalid: {source}")]
    Fst { path: PathBuf, source: fst::Error },
}

/// An [`EntryMeta`] as stored: (allow?, scope code, feed, category,
/// detail, action, answer).
type StoredMeta = (bool, u8, u16, u16, Option<u32>, Action, Option<u32>);

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    entries: usize,
    feeds: Vec<(String, Format)>,
    categories: Vec<String>,
    details: Vec<String>,
    answers: Vec<Vec<IpAddr>>,
    metas: Vec<StoredMeta>,
    /// Where the layer's automaton sits in the fst region.
    fst_offset: u64,
    fst_len: u64,
    /// A big feed's own layer (or one TLD range of it).
    own: bool,
    /// Answer-IP policy: (network, metadata index).
    #[serde(default)]
    addresses: Vec<(IpNet, u32)>,
    /// RPZ client-IP triggers: (network, metadata index).
    #[serde(default)]
    clients: Vec<(IpNet, u32)>,
    /// RPZ NSDNAME triggers: (name, exact slot, below slot).
    #[serde(default)]
    ns_names: Vec<(String, u32, u32)>,
    /// RPZ NSIP triggers: (network, metadata index).
    #[serde(default)]
    ns_addresses: Vec<(IpNet, u32)>,
    /// The negative filter: its descriptor (seed, segment length, mask,
    /// segment count length) and where its fingerprints sit in the region.
    #[serde(default)]
    filter: Option<StoredFilter>,
}

#[derive(Serialize, Deserialize)]
struct StoredFilter {
    seed: u64,
    segment_length: u32,
    segment_length_mask: u32,
    segment_count_length: u32,
    offset: u64,
    len: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    generation: u64,
    layers: Vec<LayerMeta>,
    /// The inputs the list was built from (path -> size, mtime ns, hash).
    fingerprints: BTreeMap<String, (u64, Option<u128>, u64)>,
    /// When an entry's validity window opens or closes next (ms since the
    /// epoch), so that a restart from the snapshot reloads once it has
    /// passed. Absent in older snapshots: read as none.
    #[serde(default)]
    next_change_ms: Option<u64>,
}

fn scope_code(s: Scope) -> u8 {
    match s {
        Scope::Exact => 0,
        Scope::Subtree => 1,
        Scope::Below => 2,
    }
}

fn scope_from(code: u8) -> Option<Scope> {
    Some(match code {
        0 => Scope::Exact,
        1 => Scope::Subtree,
        2 => Scope::Below,
        _ => return None,
    })
}

fn nanos(t: std::time::SystemTime) -> Option<u128> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

/// Write the list (and the fingerprints of the feeds it came from).
pub fn save(
    dir: &Path,
    list: &Blocklist,
    fingerprints: &BTreeMap<String, Fingerprint>,
    next_change: Option<std::time::SystemTime>,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut region_len = 0u64;
    let mut layers = Vec::new();
    for layer in list.layers() {
        let fst_len = layer.fst_bytes() as u64;
        let fst_offset = region_len;
        region_len += fst_len.div_ceil(8) * 8;
        let filter = layer.filter.as_ref().map(|f| {
            let (parts, fingerprints) = f.parts();
            let stored = StoredFilter {
                seed: parts.seed,
                segment_length: parts.segment_length,
                segment_length_mask: parts.segment_length_mask,
                segment_count_length: parts.segment_count_length,
                offset: region_len,
                len: fingerprints.len() as u64,
            };
            region_len += (fingerprints.len() as u64).div_ceil(8) * 8;
            stored
        });
        layers.push(LayerMeta {
            entries: layer.entries,
            feeds: layer
                .feeds
                .iter()
                .map(|f| (f.name.clone(), f.format))
                .collect(),
            categories: layer.categories.iter().map(|c| c.to_string()).collect(),
            details: layer.details.iter().map(|d| d.to_string()).collect(),
            answers: layer.answers.iter().map(|a| a.to_vec()).collect(),
            metas: layer
                .metas
                .iter()
                .map(|m| {
                    (
                        m.verdict == Verdict::Allow,
                        scope_code(m.scope),
                        m.feed,
                        m.category,
                        m.detail,
                        m.action,
                        m.answer,
                    )
                })
                .collect(),
            fst_offset,
            fst_len,
            own: layer.own,
            addresses: layer.addresses.iter().map(|(n, m)| (n, *m)).collect(),
            clients: layer.clients.iter().map(|(n, m)| (n, *m)).collect(),
            ns_names: layer
                .ns_names
                .iter()
                .map(|(n, e, b)| (n.to_owned(), e, b))
                .collect(),
            ns_addresses: layer.ns_addresses.iter().map(|(n, m)| (n, *m)).collect(),
            filter,
        });
    }
    let meta = Meta {
        generation: list.generation(),
        layers,
        fingerprints: fingerprints
            .iter()
            .map(|(p, f)| (p.clone(), (f.size, f.modified.and_then(nanos), f.hash)))
            .collect(),
        next_change_ms: next_change
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
    };
    let meta = serde_json::to_vec(&meta).map_err(io::Error::other)?;
    let pad = |n: usize| (8 - n % 8) % 8;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);
    crc.update(&[0u8; 8][..pad(meta.len())]);
    for layer in list.layers() {
        for bytes in region_parts(layer) {
            crc.update(bytes);
            crc.update(&[0u8; 8][..pad(bytes.len())]);
        }
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    header.extend_from_slice(&region_len.to_le_bytes());

    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let written = (|| {
        let mut file = io::BufWriter::new(File::create(&tmp)?);
        file.write_all(&header)?;
        file.write_all(&meta)?;
        file.write_all(&[0u8; 8][..pad(meta.len())])?;
        for layer in list.layers() {
            for bytes in region_parts(layer) {
                file.write_all(bytes)?;
                file.write_all(&[0u8; 8][..pad(bytes.len())])?;
            }
        }
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(error) = written {
        // A half-written temporary file on a full disk would take the
        // space the hit log needs; the old snapshot stays as it was.
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    Ok(path)
}

/// A layer's parts of the region, in order: the automaton, then the
/// filter's fingerprints (when it has a filter).
fn region_parts(layer: &Layer) -> impl Iterator<Item = &[u8]> {
    std::iter::once(layer.map.as_fst().as_bytes()).chain(layer.filter.as_ref().map(|f| f.parts().1))
}

/// Map the file read-only.
#[allow(unsafe_code)]
fn map(file: &File) -> io::Result<memmap2::Mmap> {
    // SAFETY: the snapshot is only ever replaced by rename, never written
    // in place, so the mapped pages do not change under us; a file that
    // another process truncates would fault, which the snapshot's owner
    // (this service's StateDirectory) does not do.
    unsafe { memmap2::Mmap::map(file) }
}

/// A snapshot as loaded: the list and the fingerprints it was built from.
pub struct Loaded {
    pub list: Blocklist,
    pub fingerprints: BTreeMap<String, Fingerprint>,
    /// The next validity edge of an entry in it (STIX `valid_from` and
    /// `valid_until`), which may have passed while the resolver was down.
    pub next_change: Option<std::time::SystemTime>,
}

/// Load and check a snapshot.
pub fn load(dir: &Path) -> Result<Loaded, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let io_err = |source| SnapshotError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io_err)?;
    let mapped = map(&file).map_err(io_err)?;
    let bytes: &[u8] = &mapped;
    if bytes.len() < HEADER {
        return Err(SnapshotError::Truncated { path });
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::Magic { path });
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let version = u32_at(8);
    if version != VERSION {
        return Err(SnapshotError::Version {
            path,
            expected: VERSION,
            got: version,
        });
    }
    let crc = u32_at(12);
    let meta_len =
        usize::try_from(u64_at(16)).map_err(|_| SnapshotError::Truncated { path: path.clone() })?;
    let region_len =
        usize::try_from(u64_at(24)).map_err(|_| SnapshotError::Truncated { path: path.clone() })?;
    let pad = (8 - meta_len % 8) % 8;
    let region_start = HEADER
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(pad));
    if region_start.and_then(|s| s.checked_add(region_len)) != Some(bytes.len()) {
        return Err(SnapshotError::Truncated { path });
    }
    let region_start = region_start.unwrap_or(bytes.len());
    if crc32fast::hash(&bytes[HEADER..]) != crc {
        return Err(SnapshotError::Checksum { path });
    }
    let bad = |message: String| SnapshotError::Metadata {
        path: path.clone(),
        message,
    };
    let meta: Meta = serde_json::from_slice(&bytes[HEADER..HEADER + meta_len])
        .map_err(|e| bad(e.to_string()))?;
    drop(file);
    let mut layers = Vec::with_capacity(meta.layers.len());
    for layer in meta.layers {
        let mut metas = Vec::with_capacity(layer.metas.len());
        for (allow, scope, feed, category, detail, action, answer) in layer.metas {
            let scope = scope_from(scope).ok_or_else(|| bad(format!("scope code {scope}")))?;
            let in_range = usize::from(feed) < layer.feeds.len()
                && usize::from(category) < layer.categories.len()
                && detail.is_none_or(|d| (d as usize) < layer.details.len())
                && answer.is_none_or(|a| (a as usize) < layer.answers.len());
            if !in_range {
                return Err(bad("an entry points past a table".into()));
            }
            let verdict = if allow {
                Verdict::Allow
            } else {
                Verdict::Block
            };
            metas.push(EntryMeta {
                verdict,
                scope,
                feed,
                category,
                detail,
                action,
                answer,
            });
        }
        let (offset, len) = (
            usize::try_from(layer.fst_offset),
            usize::try_from(layer.fst_len),
        );
        let (Ok(offset), Ok(len)) = (offset, len) else {
            return Err(bad("layer offsets out of range".into()));
        };
        if offset.checked_add(len).is_none_or(|end| end > region_len) {
            return Err(bad("a layer lies outside the fst region".into()));
        }
        let mapped =
            map_range(&path, region_start + offset, len).map_err(|source| SnapshotError::Io {
                path: path.clone(),
                source,
            })?;
        let map = fst::Map::new(FstBytes::Mapped(mapped)).map_err(|source| SnapshotError::Fst {
            path: path.clone(),
            source,
        })?;
        let filter = match layer.filter {
            None => None,
            Some(f) => {
                let start = usize::try_from(f.offset).ok().filter(|o| *o <= region_len);
                let end = start.and_then(|s| s.checked_add(usize::try_from(f.len).ok()?));
                let (Some(start), Some(end)) = (start, end.filter(|e| *e <= region_len)) else {
                    return Err(bad("a filter lies outside the region".into()));
                };
                let parts = FilterParts {
                    seed: f.seed,
                    segment_length: f.segment_length,
                    segment_length_mask: f.segment_length_mask,
                    segment_count_length: f.segment_count_length,
                };
                let fingerprints = &bytes[region_start + start..region_start + end];
                Some(
                    KeyFilter::from_parts(parts, fingerprints)
                        .ok_or_else(|| bad("a filter's descriptor does not fit it".into()))?,
                )
            }
        };
        let table = |pairs: Vec<(IpNet, u32)>| {
            let mut map = PrefixMap::default();
            for (net, meta) in pairs {
                if meta as usize >= metas.len() {
                    return Err(bad("an address points past a table".into()));
                }
                map.insert_with(net, meta, |_, _| false);
            }
            Ok(map)
        };
        let addresses = table(layer.addresses)?;
        let clients = table(layer.clients)?;
        let ns_addresses = table(layer.ns_addresses)?;
        let ns_names = super::NsNames::from_slots(layer.ns_names, metas.len())
            .ok_or_else(|| bad("a name-server name points past a table".into()))?;
        layers.push(Arc::new(Layer {
            tlds: Layer::tld_bounds(&map),
            tld_keys: Layer::lists_a_tld(&map),
            map,
            addresses,
            clients,
            ns_names,
            ns_addresses,
            filter,
            metas,
            feeds: layer
                .feeds
                .into_iter()
                .map(|(name, format)| FeedInfo { name, format })
                .collect(),
            categories: layer.categories.into_iter().map(Into::into).collect(),
            details: layer.details.into_iter().map(Into::into).collect(),
            answers: layer.answers.into_iter().map(Into::into).collect(),
            entries: layer.entries,
            own: layer.own,
        }));
    }
    let fingerprints = meta
        .fingerprints
        .into_iter()
        .map(|(p, (size, modified, hash))| {
            let modified = modified.and_then(|n| {
                let secs = u64::try_from(n / 1_000_000_000).ok()?;
                Some(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::new(secs, (n % 1_000_000_000) as u32),
                )
            });
            (
                p,
                Fingerprint {
                    size,
                    modified,
                    hash,
                },
            )
        })
        .collect();
    let mut list = Blocklist::from_layers(layers);
    list.set_generation(meta.generation);
    let next_change = meta
        .next_change_ms
        .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    Ok(Loaded {
        list,
        fingerprints,
        next_change,
    })
}

/// Map `len` bytes of a file from `offset` (which is a multiple of 8; the
/// mapping itself starts on a page boundary and is trimmed by memmap2).
#[allow(unsafe_code)]
fn map_range(path: &Path, offset: usize, len: usize) -> io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: as in `map`: the file is replaced by rename, never rewritten.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset as u64)
            .len(len)
            .map(&file)
    }
}

#[cfg(test)]
mod tests;
