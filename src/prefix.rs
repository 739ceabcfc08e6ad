//! Longest-prefix match over IPv4 and IPv6 networks.
//!
//! One hash map per prefix length in use, probed from the longest length
//! down: a lookup costs at most one probe per distinct length (33 for
//! IPv4, 129 for IPv6, in practice a handful), however many networks are
//! held. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, as a dual-stack
//! socket reports clients, or as an answer may carry them) are matched as
//! IPv4.
//!
//! Used for client -> organisation ([`crate::orgs`]) and for the
//! answer-IP policy's listed addresses and ranges ([`crate::blocklist`]).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An immutable-after-build map from networks to values.
#[derive(Debug, Clone)]
pub struct PrefixMap<T> {
    /// (prefix length, network bits -> value), longest length first.
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
    len: usize,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        PrefixMap {
            v4: Vec::new(),
            v6: Vec::new(),
            len: 0,
        }
    }
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

/// A network as its canonical form: host bits cleared, and a v4-mapped
/// IPv6 network (`::ffff:192.0.2.0/120`) as the IPv4 network it means.
pub fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net)
                .trunc(),
            None => net.trunc(),
        },
        _ => net.trunc(),
    }
}

impl<T> PrefixMap<T> {
    /// Networks held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Insert `value` at `net` (host bits are ignored). When the network is
    /// already there, `keep` decides between the old value and the new:
    /// returns the value that lost, or `None` when the network was new.
    pub fn insert_with(
        &mut self,
        net: IpNet,
        value: T,
        keep_new: impl FnOnce(&T, &T) -> bool,
    ) -> Option<T> {
        fn slot<K: std::hash::Hash + Eq, T>(
            tables: &mut Vec<(u8, HashMap<K, T>)>,
            len: u8,
        ) -> &mut HashMap<K, T> {
            let at = match tables.iter().position(|(l, _)| *l <= len) {
                Some(i) if tables[i].0 == len => i,
                Some(i) => {
                    tables.insert(i, (len, HashMap::new()));
                    i
                }
                None => {
                    tables.push((len, HashMap::new()));
                    tables.len() - 1
                }
            };
            &mut tables[at].1
        }
        fn put<K: std::hash::Hash + Eq, T>(
            map: &mut HashMap<K, T>,
            key: K,
            value: T,
            keep_new: impl FnOnce(&T, &T) -> bool,
        ) -> (Option<T>, bool) {
            match map.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(value);
                    (None, true)
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if keep_new(o.get(), &value) {
                        (Some(o.insert(value)), false)
                    } else {
                        (Some(value), false)
                    }
                }
            }
        }
        let (lost, new) = match canonical(net) {
            IpNet::V4(n) => {
                let map = slot(&mut self.v4, n.prefix_len());
                put(
                    map,
                    mask4(u32::from(n.network()), n.prefix_len()),
                    value,
                    keep_new,
                )
            }
            IpNet::V6(n) => {
                let map = slot(&mut self.v6, n.prefix_len());
                put(
                    map,
                    mask6(u128::from(n.network()), n.prefix_len()),
                    value,
                    keep_new,
                )
            }
        };
        if new {
            self.len += 1;
        }
        lost
    }

    /// The value of the most specific network holding `ip`, with that
    /// network.
    pub fn longest(&self, ip: IpAddr) -> Option<(IpNet, &T)> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4.iter().find_map(|(len, map)| {
                    let key = mask4(bits, *len);
                    let v = map.get(&key)?;
                    let net = Ipv4Net::new(key.into(), *len).ok()?;
                    Some((IpNet::V4(net), v))
                })
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6.iter().find_map(|(len, map)| {
                    let key = mask6(bits, *len);
                    let v = map.get(&key)?;
                    let net = Ipv6Net::new(key.into(), *len).ok()?;
                    Some((IpNet::V6(net), v))
                })
            }
        }
    }

    /// Every network and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.iter().flat_map(|(len, map)| {
            map.iter().filter_map(move |(bits, v)| {
                Some((IpNet::V4(Ipv4Net::new((*bits).into(), *len).ok()?), v))
            })
        });
        let v6 = self.v6.iter().flat_map(|(len, map)| {
            map.iter().filter_map(move |(bits, v)| {
                Some((IpNet::V6(Ipv6Net::new((*bits).into(), *len).ok()?), v))
            })
        });
        v4.chain(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_longest_prefix_wins_and_reports_its_network() {
        let mut m = PrefixMap::default();
        for (n, v) in [
            ("10.0.0.0/8", 1),
            ("10.1.2.0/24", 2),
            ("10.1.2.3/32", 3),
            ("2001:db8::/32", 4),
            ("2001:db8:1::/48", 5),
        ] {
            assert_eq!(m.insert_with(net(n), v, |_, _| true), None);
        }
        assert_eq!(m.len(), 5);
        let got = |ip: &str| {
            m.longest(ip.parse().unwrap())
                .map(|(n, v)| (n.to_string(), *v))
        };
        assert_eq!(got("10.9.9.9"), Some(("10.0.0.0/8".into(), 1)));
        assert_eq!(got("10.1.2.4"), Some(("10.1.2.0/24".into(), 2)));
        assert_eq!(got("10.1.2.3"), Some(("10.1.2.3/32".into(), 3)));
        assert_eq!(got("::ffff:10.1.2.4"), Some(("10.1.2.0/24".into(), 2)));
        assert_eq!(got("2001:db8:1::5"), Some(("2001:db8:1::/48".into(), 5)));
        assert_eq!(got("2001:db8:2::5"), Some(("2001:db8::/32".into(), 4)));
        assert_eq!(got("192.0.2.1"), None);
        assert_eq!(got("2001:db9::1"), None);
        assert_eq!(m.iter().count(), 5);
    }

    #[test]
    fn host_bits_and_mapped_networks_are_canonicalised() {
        let mut m = PrefixMap::default();
        m.insert_with(net("192.0.2.77/24"), 'a', |_, _| true);
        assert_eq!(
            m.insert_with(net("::ffff:192.0.2.0/120"), 'b', |_, _| false),
            Some('b')
        );
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.longest("192.0.2.1".parse().unwrap()).map(|(_, v)| *v),
            Some('a')
        );
    }

    #[test]
    fn a_default_route_catches_everything() {
        let mut m = PrefixMap::default();
        m.insert_with(net("0.0.0.0/0"), (), |_, _| true);
        m.insert_with(net("::/0"), (), |_, _| true);
        assert!(m.longest("203.0.113.9".parse().unwrap()).is_some());
        assert!(m.longest("2001:db8::9".parse().unwrap()).is_some());
    }
}
