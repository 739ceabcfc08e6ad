//! Trust anchors: the IANA root KSKs built into hickory (key tags 20326
//! and 38696), or a file of DS or DNSKEY records (`resolver.trust_anchors`)
//! for a lab root or an island of trust.
//!
//! The file is read when the config is loaded, so a line that does not
//! parse is a config error naming the file and the line. One record per
//! line, in zone-file form (`owner [ttl] [class] DNSKEY|DS rdata`); `;`
//! starts a comment. A root anchor in the file replaces the built-in root
//! keys; anchors for other names are added to them. A DS anchor names a
//! key by its digest, so the key itself is fetched once at start-up (it
//! needs no validation: the digest authenticates it) and kept if it
//! matches.

use std::path::{Path, PathBuf};

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS};
use hickory_proto::dnssec::{TrustAnchors, Verifier};
use hickory_proto::rr::{LowerName, Name, RData};
use hickory_proto::serialize::txt::Parser;
use hickory_proto::serialize::txt::trust_anchor::{
    Entry as TrustAnchorEntry, Parser as AnchorParser,
};

/// One anchor as written in the file.
#[derive(Debug, Clone)]
pub enum Anchor {
    Key(Name, DNSKEY),
    Digest(Name, DS),
}

impl Anchor {
    pub fn owner(&self) -> &Name {
        match self {
            Anchor::Key(name, _) | Anchor::Digest(name, _) => name,
        }
    }
}

/// A trust-anchor file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("cannot read trust anchor file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no DNSKEY or DS record in it")]
    Empty { path: PathBuf },
    #[error("no DNSKEY of {owner} matches its DS anchor (key tag {key_tag})")]
    NoMatchingKey { owner: Name, key_tag: u16 },
    #[error("cannot fetch the DNSKEY records of {owner} for its DS anchor: {reason}")]
    Fetch { owner: Name, reason: String },
}

/// Read a trust-anchor file.
pub fn read(path: &Path) -> Result<Vec<Anchor>, AnchorError> {
    let text = std::fs::read_to_string(path).map_err(|source| AnchorError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut anchors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split(';').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fail = |reason: String| AnchorError::Line {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        // hickory's zone parser refuses DNSKEY records (it expects to make
        // them) and its anchor parser refuses DS: each gets its own.
        let is_key = content
            .split_whitespace()
            .take(4)
            .any(|t| t.eq_ignore_ascii_case("DNSKEY"));
        if is_key {
            let entries = AnchorParser::new(content)
                .parse()
                .map_err(|e| fail(e.to_string()))?;
            for entry in entries {
                let TrustAnchorEntry::DNSKEY(record) = entry else {
                    return Err(fail("not a DNSKEY record".into()));
                };
                let key = record.data();
                if !key.zone_key() || !key.algorithm().is_supported() {
                    return Err(fail(format!(
                        "the DNSKEY is not a zone key of a supported algorithm ({})",
                        key.algorithm()
                    )));
                }
                anchors.push(Anchor::Key(record.name().clone(), key.clone()));
            }
            continue;
        }
        // The zone parser wants a default TTL; anchors often have none.
        let zone = format!("$TTL 3600\n{content}\n");
        let (_, sets) = Parser::new(zone.as_str(), None, Some(Name::root()))
            .parse()
            .map_err(|e| fail(e.to_string()))?;
        for record in sets.values().flat_map(|set| set.records(false)) {
            match &record.data {
                RData::DNSSEC(DNSSECRData::DS(ds)) => {
                    anchors.push(Anchor::Digest(record.name.clone(), ds.clone()))
                }
                other => {
                    return Err(fail(format!(
                        "a {} record cannot be a trust anchor (DNSKEY or DS only)",
                        other.record_type()
                    )));
                }
            }
        }
    }
    if anchors.is_empty() {
        return Err(AnchorError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(anchors)
}

/// The owners whose DNSKEY records a DS anchor needs fetched.
pub fn digest_owners(anchors: &[Anchor]) -> Vec<Name> {
    let mut owners: Vec<Name> = anchors
        .iter()
        .filter_map(|a| match a {
            Anchor::Digest(name, _) => Some(name.clone()),
            Anchor::Key(..) => None,
        })
        .collect();
    owners.sort();
    owners.dedup();
    owners
}

/// Build hickory's anchor set: the built-in root keys unless the file has
/// a root anchor, plus every key the file names or a DS of it matches
/// among `fetched` (the owners' DNSKEY records).
pub fn build(anchors: &[Anchor], fetched: &[(Name, DNSKEY)]) -> Result<TrustAnchors, AnchorError> {
    let file_has_root = anchors.iter().any(|a| a.owner().is_root());
    let mut set = if file_has_root {
        TrustAnchors::empty()
    } else {
        TrustAnchors::default()
    };
    let mut add = |owner: &Name, key: &DNSKEY| {
        if owner.is_root() {
            set.insert(key.public_key());
        } else {
            set.insert_with_name(key.public_key(), LowerName::from(owner));
        }
    };
    for anchor in anchors {
        match anchor {
            Anchor::Key(owner, key) => add(owner, key),
            Anchor::Digest(owner, ds) => {
                let matching: Vec<&DNSKEY> = fetched
                    .iter()
                    .filter(|(name, key)| {
                        name == owner
                            && key.calculate_key_tag().ok() == Some(ds.key_tag())
                            && ds.covers(owner, key).unwrap_or(false)
                    })
                    .map(|(_, key)| key)
                    .collect();
                if matching.is_empty() {
                    return Err(AnchorError::NoMatchingKey {
                        owner: owner.clone(),
                        key_tag: ds.key_tag(),
                    });
                }
                for key in matching {
                    add(owner, key);
                }
            }
        }
    }
    Ok(set)
}
