//! Client address -> member organisation, by longest prefix
//! ([`crate::prefix`]: the cost depends on the number of distinct prefix
//! lengths, not on how many organisations and networks are configured).
//!
//! Each organisation also carries its own policy: names it never has
//! blocked and per-category action overrides. Both are consulted only
//! after the blocklist matched, so they cost nothing on a clean query.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Organisation;
use crate::policy::Action;
use crate::prefix::PrefixMap;

/// Index of an organisation in the config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrgId(pub u16);

/// The immutable map built from config.
#[derive(Debug, Default)]
pub struct OrgMap {
    networks: PrefixMap<OrgId>,
    policies: Vec<OrgPolicy>,
    /// SHA-256 of each roaming key (lower-case hex) -> its organisation.
    roaming: HashMap<String, OrgId>,
}

/// One organisation's identity and its own exceptions to the global policy.
#[derive(Debug, Default)]
pub struct OrgPolicy {
    pub id: String,
    pub name: String,
    /// Normalised names; each covers its subtree.
    allow: HashSet<String>,
    actions: BTreeMap<String, Action>,
    /// Shown on the block page instead of the global contact.
    pub contact: Option<String>,
    /// Removed by a config reload: its slot stays so that every [`OrgId`]
    /// handed out before names the same organisation, but nothing is
    /// attributed to it any more.
    pub retired: bool,
}

impl OrgPolicy {
    /// The allow entry covering `name` (normalised, no trailing dot), if any.
    pub fn allowed(&self, name: &str) -> Option<&str> {
        if self.allow.is_empty() {
            return None;
        }
        let mut rest = name;
        loop {
            if let Some(hit) = self.allow.get(rest) {
                return Some(hit);
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// This organisation's action for a category, when it overrides one.
    pub fn action(&self, category: &str) -> Option<Action> {
        self.actions.get(category).copied()
    }
}

/// An organisation table that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum OrgMapError {
    #[error("network {network} is claimed by both organisation {first:?} and {second:?}")]
    Claimed {
        network: IpNet,
        first: String,
        second: String,
    },
    #[error("organisations {first:?} and {second:?} have the same roaming key")]
    SharedKey { first: String, second: String },
    #[error("{0} organisations configured; at most 65535 are supported")]
    TooMany(usize),
}

impl OrgMapError {
    fn too_many(n: usize) -> Self {
        OrgMapError::TooMany(n)
    }
}

impl OrgMap {
    /// Build the map. Overlapping prefixes are fine (longest wins); the same
    /// prefix in two organisations is a config error.
    pub fn new(orgs: &[Organisation]) -> Result<OrgMap, OrgMapError> {
        let mut networks = PrefixMap::default();
        let mut policies = Vec::new();
        let mut roaming = HashMap::new();
        for (i, org) in orgs.iter().enumerate() {
            let id = OrgId(u16::try_from(i).map_err(|_| OrgMapError::too_many(orgs.len()))?);
            policies.push(OrgPolicy {
                id: org.id.clone(),
                name: org.name.clone(),
                allow: org.allow.iter().cloned().collect(),
                actions: org.actions.clone(),
                contact: org.contact.clone(),
                retired: false,
            });
            if let Some(hash) = &org.roaming_key_sha256
                && let Some(first) = roaming.insert(hash.clone(), id)
            {
                return Err(OrgMapError::SharedKey {
                    first: orgs[usize::from(first.0)].id.clone(),
                    second: org.id.clone(),
                });
            }
            for net in &org.networks {
                // Keep the newcomer: what comes back is the earlier claimant.
                let previous = networks.insert_with(*net, id, |_, _| true);
                if let Some(prev) = previous.filter(|p| *p != id) {
                    return Err(OrgMapError::Claimed {
                        network: *net,
                        first: orgs[usize::from(prev.0)].id.clone(),
                        second: org.id.clone(),
                    });
                }
            }
        }
        Ok(OrgMap {
            networks,
            policies,
            roaming,
        })
    }

    /// The organisation whose most specific network holds `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<OrgId> {
        self.networks.longest(ip).map(|(_, id)| *id)
    }

    /// The organisation whose roaming key is `key` (the secret itself; the
    /// config holds its SHA-256).
    pub fn by_roaming_key(&self, key: &str) -> Option<OrgId> {
        if self.roaming.is_empty() {
            return None;
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(key.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            use std::fmt::Write;
            let _ = write!(hex, "{byte:02x}");
        }
        self.roaming.get(&hex).copied()
    }

    /// The organisation with this id.
    pub fn by_id(&self, id: &str) -> Option<OrgId> {
        let i = self
            .policies
            .iter()
            .position(|p| p.id == id && !p.retired)?;
        Some(OrgId(u16::try_from(i).ok()?))
    }

    pub fn id(&self, org: OrgId) -> &str {
        &self.policy(org).id
    }

    pub fn policy(&self, org: OrgId) -> &OrgPolicy {
        &self.policies[usize::from(org.0)]
    }

    pub fn policies(&self) -> &[OrgPolicy] {
        &self.policies
    }

    /// The map for a reloaded config, keeping every id of `self`: an
    /// organisation still configured keeps its index, a removed one stays
    /// as a retired slot (no networks, no keys: nothing is attributed to
    /// it), a new one comes after. A query or a roaming connection that
    /// found its organisation before the reload still names the same one
    /// after it. Returns the map and the organisations in its order (for
    /// what else is indexed by [`OrgId`], the rate limits).
    pub fn reloaded(
        &self,
        orgs: &[Organisation],
    ) -> Result<(OrgMap, Vec<Organisation>), OrgMapError> {
        let mut ordered: Vec<Organisation> =
            Vec::with_capacity(orgs.len().max(self.policies.len()));
        let mut retired = Vec::new();
        for old in &self.policies {
            match orgs.iter().find(|o| o.id == old.id) {
                Some(org) => ordered.push(org.clone()),
                None => {
                    retired.push(ordered.len());
                    ordered.push(Organisation {
                        id: old.id.clone(),
                        name: old.name.clone(),
                        networks: Vec::new(),
                        token_sha256: None,
                        roaming_key_sha256: None,
                        allow: Vec::new(),
                        actions: BTreeMap::new(),
                        contact: None,
                        client_qps: None,
                    });
                }
            }
        }
        for org in orgs {
            if !self.policies.iter().any(|p| p.id == org.id) {
                ordered.push(org.clone());
            }
        }
        let mut map = OrgMap::new(&ordered)?;
        for i in retired {
            map.policies[i].retired = true;
        }
        Ok((map, ordered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(id: &str, nets: &[&str]) -> Organisation {
        Organisation {
            id: id.into(),
            name: id.into(),
            networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            token_sha256: None,
            roaming_key_sha256: None,
            allow: Vec::new(),
            actions: BTreeMap::new(),
            contact: None,
            client_qps: None,
        }
    }

    #[test]
    fn longest_prefix_wins_for_v4_and_v6() {
        let map = OrgMap::new(&[
            org("region", &["10.0.0.0/8", "2001:db8::/32"]),
            org("school", &["10.1.2.0/24", "2001:db8:1::/48"]),
            org("host", &["10.1.2.3/32"]),
        ])
        .unwrap();
        let id = |ip: &str| {
            map.lookup(ip.parse().unwrap())
                .map(|o| map.id(o).to_owned())
        };
        assert_eq!(id("10.9.9.9").as_deref(), Some("region"));
        assert_eq!(id("10.1.2.4").as_deref(), Some("school"));
        assert_eq!(id("10.1.2.3").as_deref(), Some("host"));
        assert_eq!(id("::ffff:10.1.2.4").as_deref(), Some("school"));
        assert_eq!(id("2001:db8:1::5").as_deref(), Some("school"));
        assert_eq!(id("2001:db8:2::5").as_deref(), Some("region"));
        assert_eq!(id("192.0.2.1"), None);
        assert_eq!(id("2001:db9::1"), None);
    }

    #[test]
    fn a_default_route_catches_everything() {
        let map = OrgMap::new(&[org("all", &["0.0.0.0/0", "::/0"])]).unwrap();
        assert!(map.lookup("203.0.113.9".parse().unwrap()).is_some());
        assert!(map.lookup("2001:db8::9".parse().unwrap()).is_some());
    }

    #[test]
    fn an_allow_entry_covers_its_subtree_only() {
        let mut school = org("school", &["10.0.0.0/8"]);
        school.allow = vec!["intranet.example".into()];
        school.actions.insert("adware".into(), Action::Log);
        let map = OrgMap::new(&[school]).unwrap();
        let policy = map.policy(map.lookup("10.1.1.1".parse().unwrap()).unwrap());
        assert_eq!(policy.allowed("intranet.example"), Some("intranet.example"));
        assert_eq!(
            policy.allowed("a.b.intranet.example"),
            Some("intranet.example")
        );
        assert_eq!(policy.allowed("badintranet.example"), None);
        assert_eq!(policy.allowed("example"), None);
        assert_eq!(policy.action("adware"), Some(Action::Log));
        assert_eq!(policy.action("malware"), None);
    }

    #[test]
    fn the_same_network_in_two_organisations_is_an_error() {
        let err = OrgMap::new(&[org("a", &["10.0.0.0/8"]), org("b", &["10.0.0.0/8"])]).unwrap_err();
        assert!(err.to_string().contains("\"a\" and \"b\""), "{err}");
    }

    #[test]
    fn a_reload_keeps_every_id_naming_the_same_organisation() {
        let before =
            OrgMap::new(&[org("a", &["10.0.0.0/8"]), org("b", &["192.0.2.0/24"])]).unwrap();
        let b = before.by_id("b").unwrap();
        // a goes, c comes, b moves to the front of the file.
        let (after, ordered) = before
            .reloaded(&[org("c", &["10.0.0.0/8"]), org("b", &["192.0.2.0/25"])])
            .unwrap();
        assert_eq!(after.by_id("b"), Some(b), "b keeps its id");
        assert_eq!(after.id(b), "b");
        assert_eq!(after.lookup("192.0.2.1".parse().unwrap()), Some(b));
        assert_eq!(after.lookup("192.0.2.200".parse().unwrap()), None);
        // a's slot stays, retired: nothing is attributed to it.
        assert!(after.policy(OrgId(0)).retired);
        assert_eq!(after.by_id("a"), None);
        let c = after.lookup("10.1.1.1".parse().unwrap()).unwrap();
        assert_eq!((after.id(c), c), ("c", OrgId(2)));
        let ids: Vec<&str> = ordered.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // Brought back later, a takes its old slot again.
        let (again, _) = after.reloaded(&[org("a", &["172.16.0.0/12"])]).unwrap();
        assert_eq!(again.by_id("a"), Some(OrgId(0)));
        assert!(again.policy(b).retired && again.policy(c).retired);
    }
}
