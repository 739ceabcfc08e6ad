//! Sharing back: what this service blocked, as STIX 2.1 sightings, for
//! the community its feeds come from (the TAXII collections on the admin
//! listener, and `portcullis share` for a bundle file).
//!
//! One sighting per indicator, day and organisation (or per indicator and
//! day for the whole service, when `[share] where_sighted = "service"`),
//! counted from the hit log's daily roll-up: `count`, `first_seen` and
//! `last_seen` are the hits' own. Monitor-mode hits count (the name was
//! seen); queries let through by an exception are not hits. Client-IP
//! triggers are not shared: what they list is a member's own address.
//!
//! What an object can say is the listed name (never the name asked below
//! it), the feed, and who saw it: the organisation's name, or nobody but
//! the service. No client address leaves.

pub mod stix;

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::config::{Config, Tlp, WhereSighted};
use crate::hitlog::store::{SightingRow, SightingView};

/// Whose sightings: one organisation's, or the service's across them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Org(&'a str),
    All,
}

/// A shared object and when it was added to the collection it is in: a
/// sighting's is its last change (`modified`); an object a sighting refers
/// to takes the first such sighting's.
pub struct Shared {
    pub object: Value,
    pub date_added: i64,
}

/// What the sightings are made with: the service's name, the marking,
/// and the organisations' names.
#[derive(Debug, Clone)]
pub struct Sharer {
    pub name: String,
    pub tlp: Tlp,
    pub where_sighted: WhereSighted,
    /// Organisation id -> its name.
    orgs: HashMap<String, String>,
}

impl Sharer {
    pub fn from_config(config: &Config) -> Sharer {
        Sharer::new(
            &config.share.name,
            config.share.tlp,
            config.share.where_sighted,
            config
                .organisations
                .iter()
                .map(|o| (o.id.clone(), o.name.clone())),
        )
    }

    /// `orgs`: each organisation's id and name.
    pub fn new(
        name: &str,
        tlp: Tlp,
        where_sighted: WhereSighted,
        orgs: impl IntoIterator<Item = (String, String)>,
    ) -> Sharer {
        Sharer {
            name: name.to_owned(),
            tlp,
            where_sighted,
            orgs: orgs.into_iter().collect(),
        }
    }

    /// The rows a scope reads: across organisations, each its own or added
    /// up, as the operator chose.
    pub fn view<'a>(&self, scope: Scope<'a>) -> SightingView<'a> {
        match (scope, self.where_sighted) {
            (Scope::Org(org), _) => SightingView::Org(org),
            (Scope::All, WhereSighted::Organisation) => SightingView::EachOrg,
            (Scope::All, WhereSighted::Service) => SightingView::Anonymous,
        }
    }

    /// The objects for `rows` (in their order): each sighting, preceded
    /// the first time by what it refers to (the marking, the identities,
    /// this service's indicator for the listed entry, and for a STIX
    /// entry its `derived-from` link to the feed's), so any page or file
    /// of them stands on its own.
    pub fn objects(&self, rows: &[SightingRow]) -> Vec<Shared> {
        let ids = stix::Ids::new(&self.name, self.tlp);
        let mut out = Vec::with_capacity(rows.len() * 2 + 3);
        let mut sent: HashSet<String> = HashSet::new();
        let mut org_ids: HashMap<&str, String> = HashMap::new();
        // Each supporting object is built only the first time its id is
        // met: a day's bundle has tens of thousands of sightings.
        for row in rows {
            let at = row.last;
            if out.is_empty() {
                out.push(Shared {
                    object: stix::marking(self.tlp),
                    date_added: at,
                });
                out.push(Shared {
                    object: stix::service_identity(&ids),
                    date_added: at,
                });
            }
            // The identity that saw it: its organisation's, or the
            // service's (anonymous sharing, and clients in none).
            let where_ref = if self.where_sighted == WhereSighted::Service || row.org.is_empty() {
                ids.service_id.clone()
            } else {
                let id = org_ids
                    .entry(row.org.as_str())
                    .or_insert_with(|| stix::org_identity_id(&self.name, &row.org))
                    .clone();
                if sent.insert(id.clone()) {
                    let name = self.orgs.get(&row.org).unwrap_or(&row.org);
                    out.push(Shared {
                        object: stix::org_identity(&ids, &id, name),
                        date_added: at,
                    });
                }
                id
            };
            let made = stix::made_indicator_id(&self.name, row);
            if sent.insert(made.clone()) {
                out.push(Shared {
                    object: stix::made_indicator(&ids, row, &made),
                    date_added: at,
                });
            }
            let of = if stix::is_indicator_id(&row.indicator) {
                let link = stix::derived_from_id(&made, &row.indicator);
                if sent.insert(link) {
                    out.push(Shared {
                        object: stix::derived_from(&ids, row, &made),
                        date_added: at,
                    });
                }
                row.indicator.clone()
            } else {
                made
            };
            out.push(Shared {
                object: stix::sighting(&ids, row, &where_ref, &of),
                date_added: at,
            });
        }
        out
    }
}
