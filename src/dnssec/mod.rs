//! DNSSEC: what hickory's validator concluded about an answer, reduced to
//! one [`Security`] per answer, and for a bogus one the RFC 8914 extended
//! error code and the zone to name in the log.
//!
//! hickory validates (in the recursor and in the forwarding resolver) and
//! marks every record with a proof, but keeps the reason for a failure to
//! itself. The reason is read back here from the data: the RRSIGs that
//! should cover the failed set (none: RRSIGs Missing; all expired or all
//! not yet valid: those codes), and for a negative answer whether any
//! NSEC or NSEC3 came with it. What none of these explain is DNSSEC Bogus.
//! Negative trust anchors (RFC 7646) are applied here too: below one, a
//! bogus answer is treated as insecure.

pub mod anchors;

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::{DnssecSummary, Proof};
use hickory_proto::rr::SerialNumber;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// RFC 8914 extended DNS error codes used for validation failures.
pub mod ede {
    pub const DNSSEC_BOGUS: u16 = 6;
    pub const SIGNATURE_EXPIRED: u16 = 7;
    pub const SIGNATURE_NOT_YET_VALID: u16 = 8;
    pub const DNSKEY_MISSING: u16 = 9;
    pub const RRSIGS_MISSING: u16 = 10;
    pub const NSEC_MISSING: u16 = 12;
}

/// What validation says about one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// A chain of trust from an anchor covers every record: AD may be set.
    Secure,
    /// Provably unsigned (or signed with an algorithm we cannot check, or
    /// below a negative trust anchor): answered as it came, without AD.
    Insecure,
    /// Validation failed: SERVFAIL, unless the client set CD.
    Bogus(Bogus),
    /// Not validated (`dnssec = "off"` or `"process"`).
    Indeterminate,
}

impl Security {
    /// The metric label of each state, in [`Security::index`] order.
    pub const LABELS: [&'static str; 4] = ["secure", "insecure", "bogus", "indeterminate"];

    /// Its position in [`Security::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Security::Secure => 0,
            Security::Insecure => 1,
            Security::Bogus(_) => 2,
            Security::Indeterminate => 3,
        }
    }
}

/// Why an answer is bogus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bogus {
    /// RFC 8914 info-code.
    pub ede: u16,
    /// The zone the failure is in (the signer or the SOA owner), for the
    /// log line and the EDE text.
    pub zone: Name,
    pub reason: &'static str,
}

/// The verdict on an answer: `answers` for a positive one, `authorities`
/// (SOA, NSEC, NSEC3 and their RRSIGs) for a negative one. `now` is Unix
/// seconds; `negative_trust_anchors` are names at and below which a bogus
/// answer counts as insecure.
pub fn security(
    qname: &Name,
    answers: &[Record],
    authorities: &[Record],
    now: u32,
    negative_trust_anchors: &[Name],
) -> Security {
    let section = if answers.is_empty() {
        authorities
    } else {
        answers
    };
    match DnssecSummary::from_records(section.iter()) {
        DnssecSummary::Secure => Security::Secure,
        DnssecSummary::Bogus => {
            if under_anchor(qname, section, negative_trust_anchors) {
                return Security::Insecure;
            }
            Security::Bogus(explain(qname, section, answers.is_empty(), now))
        }
        _ => Security::Insecure,
    }
}

/// A negative answer whose NSEC or NSEC3 proof failed (hickory reports
/// these as an error with the response attached).
pub fn bogus_negative(
    qname: &Name,
    authorities: &[Record],
    now: u32,
    negative_trust_anchors: &[Name],
) -> Security {
    if under_anchor(qname, authorities, negative_trust_anchors) {
        return Security::Insecure;
    }
    Security::Bogus(explain(qname, authorities, true, now))
}

/// Whether the query name, or the owner of any record in the answer (a
/// CNAME chain may leave the zone), is at or below a negative anchor.
fn under_anchor(qname: &Name, section: &[Record], anchors: &[Name]) -> bool {
    anchors.iter().any(|anchor| {
        anchor.zone_of(qname)
            || section
                .iter()
                .filter(|r| r.proof == Proof::Bogus)
                .any(|r| anchor.zone_of(&r.name))
    })
}

fn explain(qname: &Name, section: &[Record], negative: bool, now: u32) -> Bogus {
    let soa_owner = section
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.clone());
    let failed = section
        .iter()
        .find(|r| r.proof == Proof::Bogus && r.record_type() != RecordType::RRSIG);
    let (name, rtype) = match failed {
        Some(r) => (r.name.clone(), r.record_type()),
        None => (qname.clone(), RecordType::SOA),
    };
    let zone_guess = soa_owner.clone().unwrap_or_else(|| name.base_name());
    if negative
        && !section
            .iter()
            .any(|r| matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3))
    {
        return Bogus {
            ede: ede::NSEC_MISSING,
            zone: zone_guess,
            reason: "no NSEC or NSEC3 proves the name or type absent",
        };
    }
    let signatures: Vec<_> = section
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(sig)) if sig.input().type_covered == rtype => {
                Some(sig.input().clone())
            }
            _ => None,
        })
        .collect();
    let Some(first) = signatures.first() else {
        return Bogus {
            ede: ede::RRSIGS_MISSING,
            zone: zone_guess,
            reason: "the records carry no signature",
        };
    };
    let zone = first.signer_name.clone();
    let now = SerialNumber::new(now);
    if signatures.iter().all(|s| s.sig_expiration < now) {
        return Bogus {
            ede: ede::SIGNATURE_EXPIRED,
            zone,
            reason: "every signature has expired",
        };
    }
    if signatures.iter().all(|s| s.sig_inception > now) {
        return Bogus {
            ede: ede::SIGNATURE_NOT_YET_VALID,
            zone,
            reason: "no signature is valid yet",
        };
    }
    Bogus {
        ede: ede::DNSSEC_BOGUS,
        zone,
        reason: "the signatures do not verify against a trusted key",
    }
}

/// A failure the signatures do not explain may be a zone whose keys match
/// no DS its parent publishes: then it is DNSKEY Missing (EDE 9). `keys`
/// and `digests` are the zone's DNSKEY and DS answers, fetched unvalidated.
pub fn keys_match_parent(bogus: &mut Bogus, keys: &[Record], digests: &[Record]) {
    let keys: Vec<_> = keys
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(key)) => Some(key),
            _ => None,
        })
        .collect();
    let digests: Vec<_> = digests
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DS(ds)) => Some(ds),
            _ => None,
        })
        .collect();
    let zone = &bogus.zone;
    let matched = digests.iter().any(|ds| {
        keys.iter().any(|key| {
            key.calculate_key_tag().ok() == Some(ds.key_tag())
                && ds.covers(zone, key).unwrap_or(false)
        })
    });
    if !digests.is_empty() && !matched {
        bogus.ede = ede::DNSKEY_MISSING;
        bogus.reason = "no DNSKEY in the zone matches the DS its parent publishes";
    }
}

/// Drop DNSSEC records (RRSIG, NSEC, NSEC3, DNSKEY, DS) that the client
/// did not ask for (RFC 4035 3.2.1: only with DO), keeping a type the
/// client queried for itself. In place: most answers have none to drop.
pub fn strip(records: &mut Vec<Record>, qtype: RecordType) {
    records.retain(|r| r.record_type() == qtype || !r.record_type().is_dnssec());
}
