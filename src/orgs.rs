//! Client address -> member organisation, by longest prefix.
//!
//! One hash map per prefix length in use, probed from the longest length
//! down: a lookup costs at most one probe per distinct length (33 for IPv4,
//! 129 for IPv6, in practice a handful), however many organisations and
//! networks are configured. IPv4-mapped IPv6 clients (`::ffff:10.1.2.3`,
//! as a dual-stack socket reports them) are matched as IPv4.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Organisation;

/// Index of an organisation in the config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrgId(pub u16);

/// The immutable map built from config.
#[derive(Debug, Default)]
pub struct OrgMap {
    /// (prefix length, network address bits -> org), longest length first.
    v4: Vec<(u8, HashMap<u32, OrgId>)>,
    v6: Vec<(u8, HashMap<u128, OrgId>)>,
    ids: Vec<String>,
}

/// Two organisations claiming the same network.
#[derive(Debug, thiserror::Error)]
#[error("network {network} is claimed by both organisation {first:?} and {second:?}")]
pub struct DuplicateNetwork {
    pub network: IpNet,
    pub first: String,
    pub second: String,
}

fn mask4(bits: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

impl OrgMap {
    /// Build the map. Overlapping prefixes are fine (longest wins); the same
    /// prefix in two organisations is a config error.
    pub fn new(orgs: &[Organisation]) -> Result<OrgMap, DuplicateNetwork> {
        let mut v4: HashMap<u8, HashMap<u32, OrgId>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, OrgId>> = HashMap::new();
        let mut ids = Vec::new();
        for (i, org) in orgs.iter().enumerate() {
            let id = OrgId(u16::try_from(i).unwrap_or(u16::MAX));
            ids.push(org.id.clone());
            for net in &org.networks {
                let previous = match net {
                    IpNet::V4(n) => {
                        let key = mask4(u32::from(n.network()), n.prefix_len());
                        v4.entry(n.prefix_len()).or_default().insert(key, id)
                    }
                    IpNet::V6(n) => {
                        let key = mask6(u128::from(n.network()), n.prefix_len());
                        v6.entry(n.prefix_len()).or_default().insert(key, id)
                    }
                };
                if let Some(prev) = previous.filter(|p| *p != id) {
                    return Err(DuplicateNetwork {
                        network: *net,
                        first: orgs[usize::from(prev.0)].id.clone(),
                        second: org.id.clone(),
                    });
                }
            }
        }
        let mut v4: Vec<_> = v4.into_iter().collect();
        let mut v6: Vec<_> = v6.into_iter().collect();
        v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(OrgMap { v4, v6, ids })
    }

    /// The organisation whose most specific network holds `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<OrgId> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&mask4(bits, *len)).copied())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask6(bits, *len)).copied())
            }
        }
    }

    pub fn id(&self, org: OrgId) -> &str {
        &self.ids[usize::from(org.0)]
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
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
    fn the_same_network_in_two_organisations_is_an_error() {
        let err = OrgMap::new(&[org("a", &["10.0.0.0/8"]), org("b", &["10.0.0.0/8"])]).unwrap_err();
        assert!(err.to_string().contains("\"a\" and \"b\""), "{err}");
    }
}
