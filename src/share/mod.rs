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

    /// The identity that saw `row`: its organisation's, or the service's
    /// (anonymous sharing, and clients in no organisation).
    fn where_ref(&self, row: &SightingRow) -> String {
        if self.where_sighted == WhereSighted::Service || row.org.is_empty() {
            stix::service_identity_id(&self.name)
        } else {
            stix::org_identity_id(&self.name, &row.org)
        }
    }

    /// The objects for `rows` (in their order): each sighting, preceded
    /// the first time by what it refers to (the marking, the identities,
    /// this service's indicator for the listed entry, and for a STIX
    /// entry its `derived-from` link to the feed's), so any page or file
    /// of them stands on its own.
    pub fn objects(&self, rows: &[SightingRow]) -> Vec<Shared> {
        let mut out = Vec::with_capacity(rows.len() + 3);
        let mut sent: HashSet<String> = HashSet::new();
        let mut once = |out: &mut Vec<Shared>, object: Value, date_added: i64| {
            let id = object["id"].as_str().unwrap_or_default().to_owned();
            if sent.insert(id) {
                out.push(Shared { object, date_added });
            }
        };
        for row in rows {
            once(&mut out, stix::marking(self.tlp), row.last);
            once(
                &mut out,
                stix::service_identity(&self.name, self.tlp),
                row.last,
            );
            let where_ref = self.where_ref(row);
            if where_ref != stix::service_identity_id(&self.name) {
                let name = self.orgs.get(&row.org).unwrap_or(&row.org);
                once(
                    &mut out,
                    stix::org_identity(&self.name, &row.org, name, self.tlp),
                    row.last,
                );
            }
            once(
                &mut out,
                stix::made_indicator(&self.name, row, self.tlp),
                row.last,
            );
            if stix::is_indicator_id(&row.indicator) {
                once(
                    &mut out,
                    stix::derived_from(&self.name, row, self.tlp),
                    row.last,
                );
            }
            out.push(Shared {
                object: stix::sighting(&self.name, row, &where_ref, self.tlp),
                date_added: row.last,
            });
        }
        out
    }
}
