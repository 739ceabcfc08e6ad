//! RPZ's name-server triggers: `rpz-nsdname` (the names of the name
//! servers of the zone that holds an answer) and `rpz-nsip` (their
//! addresses).
//!
//! Which zone, and how its name servers are found, is the same in both
//! resolver modes: the zone is the closest enclosing zone cut of the
//! query name (and of each CNAME target after it), found by asking the
//! upstream for `NS` at the name and, where that is negative, at the
//! zone its SOA names (unless the name is an alias) or else one label
//! up; the servers are that NS set (the first 16 in name order) and, for
//! NSIP, their A and AAAA records. At most 8 names of a CNAME chain are
//! checked. Every one of these lookups
//! goes through the upstream's cache, so a zone costs its lookups once
//! per TTL. A forwarder never sees the delegation path, and the
//! recursor's is not exposed, so asking is what works in both; it also
//! means the check sees the zone's own NS set (the child's), where an
//! iterating resolver checks the delegation it followed (the parent's).
//!
//! Only the zone that holds the name is checked, not its parents: an
//! iterator such as Unbound checks every delegation it follows, which
//! depends on what it has cached; ours gives the same answer every time.
//!
//! The triggers come last in RPZ's precedence: only an answer that the
//! query name, the client's address, a CNAME target and the answer's
//! addresses all left alone is inspected, and nothing is asked at all
//! while no feed lists a name-server trigger. When a lookup fails (no
//! answer, SERVFAIL, REFUSED, a bogus answer) the answer goes out
//! unchecked (a protective resolver that failed closed
//! would fail every name of a zone whose servers are slow), and it is
//! not put in the packet cache, so the next query checks again.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::Handler;
use super::decide::{Listed, QueryContext, plain};
use super::inspect;
use crate::hitlog::Stage;
use crate::policy::Action;

/// A blocked answer: the chain's records before the name that blocks,
/// that name, the entry and the action.
pub(super) type AnswerBlock = (Vec<Record>, Name, Listed, Action);

/// Names of one answer (the query name and its CNAME targets) whose
/// zones are checked, at most.
const MAX_OWNERS: usize = 8;
/// Name servers of one zone that are checked, at most (the first in
/// name order).
const MAX_SERVERS: usize = 16;

/// A zone and the names of its name servers (lower case, sorted).
struct ZoneServers {
    apex: Name,
    servers: Vec<Name>,
}

/// A lookup for the name-server check did not answer.
struct LookupFailed;

impl Handler {
    /// The first name-server trigger that blocks this answer: for the
    /// query name's zone, then each CNAME target's, its servers' names
    /// (NSDNAME) before their addresses (NSIP). Monitor-mode and
    /// exception hits are recorded on the way, as in `inspect_answer`.
    /// `touched` is set when an entry matched or a lookup failed.
    pub(super) async fn inspect_name_servers(
        &self,
        cx: QueryContext,
        qname: &Name,
        answers: &[Record],
        checking_disabled: bool,
        touched: &mut bool,
    ) -> Option<AnswerBlock> {
        let (names, addresses) = self.blocklist.load().ns_triggers();
        if !names && !addresses {
            return None;
        }
        let owners = std::iter::once(qname)
            .chain(inspect::cname_chain(qname, answers).map(|(_, target)| target))
            .take(MAX_OWNERS);
        let mut checked: Vec<Name> = Vec::new();
        for owner in owners {
            let zone = match self.zone_servers(owner, checking_disabled).await {
                Ok(Some(zone)) => zone,
                Ok(None) => continue,
                Err(LookupFailed) => {
                    *touched = true;
                    continue;
                }
            };
            if checked.contains(&zone.apex) {
                continue;
            }
            let block = |listed: Listed, stage, touched: &mut bool| {
                *touched = true;
                let action = self.blocks_in_answer(cx, stage, qname, owner, &listed)?;
                Some((
                    inspect::chain_to(qname, answers, owner),
                    owner.clone(),
                    listed,
                    action,
                ))
            };
            if names {
                for server in &zone.servers {
                    let Some(listed) = self.check_ns_name(server, owner) else {
                        continue;
                    };
                    if let Some(blocked) = block(listed, Stage::Nsdname, touched) {
                        return Some(blocked);
                    }
                }
            }
            if addresses {
                for server in &zone.servers {
                    let Ok(ips) = self.addresses_of(server, checking_disabled).await else {
                        *touched = true;
                        continue;
                    };
                    for ip in ips {
                        let Some(listed) = self.check_ns_address(ip, owner) else {
                            continue;
                        };
                        if let Some(blocked) = block(listed, Stage::Nsip, touched) {
                            return Some(blocked);
                        }
                    }
                }
            }
            checked.push(zone.apex);
        }
        None
    }

    /// The NSDNAME entry for a name server, if any; the block answer
    /// speaks for `owner`.
    fn check_ns_name(&self, server: &Name, owner: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let name = plain(server);
        let (found, listed_name) = list.lookup_ns_name(&name)?;
        let mut listed = self.listed(&list, &found, owner.clone(), None);
        listed.ns_name = Some(listed_name.to_owned());
        Some(listed)
    }

    /// The NSIP entry for a name server's address, if any.
    fn check_ns_address(&self, ip: IpAddr, owner: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let (found, net) = list.lookup_ns_address(ip)?;
        Some(self.listed(&list, &found, owner.clone(), Some(net)))
    }

    /// The zone that holds `name` and its name servers; `None` for a
    /// name in the root zone (its servers are no one's policy) or when no
    /// NS set was found.
    async fn zone_servers(
        &self,
        name: &Name,
        checking_disabled: bool,
    ) -> Result<Option<ZoneServers>, LookupFailed> {
        let mut at = name.to_lowercase();
        // Each step goes at least one label up.
        for _ in 0..=name.num_labels() {
            if at.is_root() {
                return Ok(None);
            }
            let answer = self
                .ask(&LowerName::from(&at), RecordType::NS, checking_disabled)
                .await?;
            let mut servers: Vec<Name> = answer
                .answers
                .iter()
                .filter(|r| r.name == at)
                .filter_map(|r| match &r.data {
                    RData::NS(ns) => Some(ns.0.to_lowercase()),
                    _ => None,
                })
                .collect();
            if !servers.is_empty() {
                servers.sort();
                servers.dedup();
                servers.truncate(MAX_SERVERS);
                return Ok(Some(ZoneServers { apex: at, servers }));
            }
            // A negative answer's SOA names the zone: go straight there.
            // Not behind a CNAME: that SOA is the target's zone's.
            let alias = answer
                .answers
                .iter()
                .any(|r| r.name == at && matches!(r.data, RData::CNAME(_)));
            let zone = answer
                .authorities
                .iter()
                .filter(|_| !alias)
                .find(|r| matches!(r.data, RData::SOA(_)) && r.name != at && r.name.zone_of(&at))
                .map(|r| r.name.to_lowercase());
            at = zone.unwrap_or_else(|| at.base_name());
        }
        Ok(None)
    }

    /// A name server's addresses (A, then AAAA).
    async fn addresses_of(
        &self,
        server: &Name,
        checking_disabled: bool,
    ) -> Result<Vec<IpAddr>, LookupFailed> {
        let name = LowerName::from(server);
        let mut out = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let answer = self.ask(&name, rtype, checking_disabled).await?;
            out.extend(inspect::addresses(&answer.answers).map(|(ip, _)| ip));
        }
        Ok(out)
    }

    /// One lookup for the check. An answer the upstream could not give
    /// (SERVFAIL, REFUSED, a bogus one) is a failed lookup, not a name
    /// without servers.
    async fn ask(
        &self,
        name: &LowerName,
        rtype: RecordType,
        checking_disabled: bool,
    ) -> Result<crate::resolve::Answer, LookupFailed> {
        let answer = self
            .upstream
            .answer(name, rtype, checking_disabled)
            .await
            .map_err(|_| LookupFailed)?;
        let answered = matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        if !answered || matches!(answer.security, crate::dnssec::Security::Bogus(_)) {
            return Err(LookupFailed);
        }
        Ok(answer)
    }
}
