//! Aggressive use of the DNSSEC-validated cache (RFC 8198), for NSEC.
//!
//! A validated NXDOMAIN proves a whole range of names absent: its NSEC
//! records say "nothing exists between this owner and the next name",
//! and another says the same of the zone's wildcard. Kept for their TTL
//! (capped by the SOA's negative TTL), those ranges answer any later
//! query for a name inside them with a secure NXDOMAIN without asking the
//! upstream: a random-subdomain flood against a signed zone is answered
//! here after its first few names.
//!
//! What it does not do, by choice:
//! * NSEC3. Its ranges are over hashes: answering from them means hashing
//!   each query name with the zone's salt and iterations, one more cost
//!   on the query path for a gain that opt-out and RFC 9276's short
//!   ranges make small; Unbound's aggressive NSEC covers NSEC only too.
//! * NODATA (a name that exists without the asked type) and wildcard
//!   answers: only NXDOMAIN is synthesised.
//! * Names below an owner in the range: a delegation or DNAME there moves
//!   the name to another zone or target (the fault PowerDNS had with
//!   DNAME), so such a range is not used.
//!
//! Only answers hickory validated as secure are learned, and only queries
//! that want validation (not CD) are answered, with every record of the
//! proof so a validating stub can check it again. The map is behind a
//! mutex taken only on an upstream cache miss (never on the UDP fast path
//! or the packet cache), briefly, by queries alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::dnssec::Proof;
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Answer;
use crate::dnssec::Security;

/// Ranges kept over all zones; past this, new ones are not learned until
/// old ones expire (a zone with many names cannot grow the map for good).
pub const MAX_RANGES: usize = 100_000;

/// One zone's proofs.
struct Zone {
    /// The SOA and its signatures, for the negative answer.
    soa: Vec<Record>,
    soa_until: Instant,
    /// Owner -> what its NSEC says, in canonical order (hickory's `Name`
    /// orders as RFC 4034 6.1 does).
    ranges: BTreeMap<Name, Range>,
}

struct Range {
    next: Name,
    /// The NSEC record and its signatures.
    records: Vec<Record>,
    until: Instant,
}

#[derive(Default)]
pub struct AggressiveNsec {
    zones: Mutex<HashMap<Name, Zone>>,
}

impl AggressiveNsec {
    /// Learn the ranges a validated NXDOMAIN proves.
    pub fn learn(&self, answer: &Answer, now: Instant) {
        if answer.rcode != ResponseCode::NXDomain || answer.security != Security::Secure {
            return;
        }
        let Some(soa_record) = answer
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && r.proof == Proof::Secure)
        else {
            return;
        };
        let RData::SOA(soa) = &soa_record.data else {
            return;
        };
        let zone_name = soa_record.name.to_lowercase();
        let negative_ttl = soa_record.ttl.min(soa.minimum);
        let mut zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total: usize = zones.values().map(|z| z.ranges.len()).sum();
        if total >= MAX_RANGES {
            // Full: make room from what has expired (here, not on lookups,
            // which only ever look at the ranges they need).
            for zone in zones.values_mut() {
                zone.ranges.retain(|_, r| r.until > now);
            }
            total = zones.values().map(|z| z.ranges.len()).sum();
        }
        let zone = zones.entry(zone_name.clone()).or_insert_with(|| Zone {
            soa: Vec::new(),
            soa_until: now,
            ranges: BTreeMap::new(),
        });
        zone.soa = signed(&answer.authorities, &soa_record.name, RecordType::SOA);
        zone.soa_until = now + secs(negative_ttl);
        let mut room = MAX_RANGES.saturating_sub(total);
        for record in &answer.authorities {
            let RData::DNSSEC(DNSSECRData::NSEC(nsec)) = &record.data else {
                continue;
            };
            if record.proof != Proof::Secure || !zone_name.zone_of(&record.name) {
                continue;
            }
            let owner = record.name.to_lowercase();
            if room == 0 && !zone.ranges.contains_key(&owner) {
                break;
            }
            let ttl = record.ttl.min(negative_ttl);
            let range = Range {
                next: nsec.next_domain_name().to_lowercase(),
                records: signed(&answer.authorities, &record.name, RecordType::NSEC),
                until: now + secs(ttl),
            };
            if zone.ranges.insert(owner, range).is_none() {
                room = room.saturating_sub(1);
            }
        }
    }

    /// A secure NXDOMAIN for `qname` from the ranges learned, if they
    /// prove it: a range covers the name and another the wildcard at its
    /// closest encloser.
    pub fn answer(&self, qname: &Name, now: Instant) -> Option<Answer> {
        let qname = qname.to_lowercase();
        let mut zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        let zone_name = zone_for(&zones, &qname)?;
        let zone = zones.get_mut(&zone_name)?;
        if zone.soa_until <= now {
            zones.remove(&zone_name);
            return None;
        }
        let (owner, range) = covering(zone, &qname, now)?;
        let encloser = closest_encloser(&qname, owner, &range.next);
        if !zone_name.zone_of(&encloser) {
            return None;
        }
        let wildcard = Name::from_ascii("*").ok()?.append_domain(&encloser).ok()?;
        let (wild_owner, wild_range) = covering(zone, &wildcard, now)?;
        let mut authorities = with_ttl(&zone.soa, zone.soa_until, now);
        authorities.extend(with_ttl(&range.records, range.until, now));
        if wild_owner != owner {
            authorities.extend(with_ttl(&wild_range.records, wild_range.until, now));
        }
        Some(Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities,
            security: Security::Secure,
            stale: false,
        })
    }

    /// Ranges held now, in all zones.
    #[cfg(test)]
    pub fn ranges(&self) -> usize {
        let zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        zones.values().map(|z| z.ranges.len()).sum()
    }
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

/// The records of `rtype` at `owner` and the RRSIGs that cover them.
fn signed(records: &[Record], owner: &Name, rtype: RecordType) -> Vec<Record> {
    records
        .iter()
        .filter(|r| &r.name == owner)
        .filter(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(sig)) => sig.input().type_covered == rtype,
            _ => r.record_type() == rtype,
        })
        .cloned()
        .collect()
}

/// The records with their TTL cut to what is left of it.
fn with_ttl(records: &[Record], until: Instant, now: Instant) -> Vec<Record> {
    let left = u32::try_from(until.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX);
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.min(left);
            r
        })
        .collect()
}

/// The deepest zone learned that `qname` is in.
fn zone_for(zones: &HashMap<Name, Zone>, qname: &Name) -> Option<Name> {
    let mut name = qname.clone();
    loop {
        if zones.contains_key(&name) {
            return Some(name);
        }
        if name.is_root() {
            return None;
        }
        name = name.base_name();
    }
}

/// The unexpired range whose owner is before `name` and whose next name
/// is after it (the last range of a zone wraps round to the apex): `name`
/// does not exist. `None` when the name is an owner (it exists) or lies below one
/// (a delegation or DNAME there could move it elsewhere).
fn covering<'z>(zone: &'z Zone, name: &Name, now: Instant) -> Option<(&'z Name, &'z Range)> {
    let (owner, range) = zone.ranges.range(..=name.clone()).next_back()?;
    if range.until <= now || owner == name || owner.zone_of(name) && !is_apex(zone, owner) {
        return None;
    }
    let wraps = range.next <= *owner;
    (wraps || *name < range.next).then_some((owner, range))
}

fn is_apex(zone: &Zone, name: &Name) -> bool {
    zone.soa
        .first()
        .is_some_and(|soa| soa.name.to_lowercase() == *name)
}

/// The closest encloser of a name proved absent by the range `owner` to
/// `next`: the longest of its ancestors that is also an ancestor (or the
/// owner) of either end, since both ends exist.
fn closest_encloser(qname: &Name, owner: &Name, next: &Name) -> Name {
    let a = common_ancestor(qname, owner);
    let b = common_ancestor(qname, next);
    if a.num_labels() >= b.num_labels() {
        a
    } else {
        b
    }
}

fn common_ancestor(a: &Name, b: &Name) -> Name {
    let mut name = a.base_name();
    while !name.zone_of(b) && !name.is_root() {
        name = name.base_name();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::rdata::NSEC;
    use hickory_proto::rr::rdata::SOA;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn nsec(owner: &str, next: &str) -> Record {
        let mut r = Record::from_rdata(
            name(owner),
            300,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(
                name(next),
                [RecordType::A, RecordType::RRSIG, RecordType::NSEC],
            ))),
        );
        r.proof = Proof::Secure;
        r
    }

    /// A secure NXDOMAIN from zone example.test. with these NSECs.
    fn nxdomain(ranges: &[(&str, &str)]) -> Answer {
        let mut soa = Record::from_rdata(
            name("example.test."),
            3600,
            RData::SOA(SOA::new(
                name("ns.example.test."),
                name("admin.example.test."),
                1,
                3600,
                600,
                86400,
                120,
            )),
        );
        soa.proof = Proof::Secure;
        let mut authorities = vec![soa];
        authorities.extend(ranges.iter().map(|(o, n)| nsec(o, n)));
        Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities,
            security: Security::Secure,
            stale: false,
        }
    }

    #[test]
    fn a_learned_range_answers_names_inside_it_and_nothing_else() {
        let cache = AggressiveNsec::default();
        let now = Instant::now();
        // "mail" to "www", and the apex to "mail" (which covers the
        // wildcard *.example.test).
        cache.learn(
            &nxdomain(&[
                ("mail.example.test.", "www.example.test."),
                ("example.test.", "mail.example.test."),
            ]),
            now,
        );
        assert_eq!(cache.ranges(), 2);
        let got = cache.answer(&name("nx-1.example.test."), now).unwrap();
        assert_eq!(got.rcode, ResponseCode::NXDomain);
        assert_eq!(got.security, Security::Secure);
        let types: Vec<_> = got.authorities.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::SOA, RecordType::NSEC, RecordType::NSEC]);
        assert!(
            got.authorities.iter().all(|r| r.ttl <= 120),
            "capped by the SOA minimum"
        );
        // Case does not matter; names outside every range do.
        assert!(cache.answer(&name("NX-2.Example.TEST."), now).is_some());
        for outside in [
            "www.example.test.",
            "mail.example.test.",
            "zzz.example.test.",
            "x.other.test.",
        ] {
            assert!(cache.answer(&name(outside), now).is_none(), "{outside}");
        }
        // Below an existing name: not proved (a cut or DNAME may be there).
        assert!(cache.answer(&name("a.mail.example.test."), now).is_none());
        // Expired with the negative TTL.
        assert!(
            cache
                .answer(&name("nx-1.example.test."), now + secs(121))
                .is_none()
        );
    }

    #[test]
    fn without_the_wildcard_proof_nothing_is_synthesised() {
        let cache = AggressiveNsec::default();
        let now = Instant::now();
        // "*.example.test" sorts before "a": this range does not cover it.
        cache.learn(
            &nxdomain(&[("mail.example.test.", "www.example.test.")]),
            now,
        );
        assert!(cache.answer(&name("nx.example.test."), now).is_none());
        // The last range wraps round to the apex.
        cache.learn(
            &nxdomain(&[
                ("www.example.test.", "example.test."),
                ("example.test.", "a.example.test."),
            ]),
            now,
        );
        assert!(cache.answer(&name("zzz.example.test."), now).is_some());
    }

    #[test]
    fn only_secure_nxdomain_is_learned() {
        let cache = AggressiveNsec::default();
        let now = Instant::now();
        let ranges = [
            ("mail.example.test.", "www.example.test."),
            ("example.test.", "mail.example.test."),
        ];
        let mut insecure = nxdomain(&ranges);
        insecure.security = Security::Insecure;
        cache.learn(&insecure, now);
        let mut nodata = nxdomain(&ranges);
        nodata.rcode = ResponseCode::NoError;
        cache.learn(&nodata, now);
        let mut unproved = nxdomain(&ranges);
        for r in &mut unproved.authorities {
            r.proof = Proof::Indeterminate;
        }
        cache.learn(&unproved, now);
        assert_eq!(cache.ranges(), 0);
    }
}
