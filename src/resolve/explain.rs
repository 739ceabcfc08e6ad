//! Explaining a bogus answer: hickory's validator keeps its reasons, so
//! the records (and, for EDE 9, the zone's keys and its parent's DS) are
//! fetched again and read. Only failed answers pay for it.

use std::time::Instant;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::recursor::Recursor;

use super::negative::answer_of;
use super::{Answer, Upstream, forward};
use crate::dnssec::{self, Security};

impl Upstream {
    /// A failure the signatures do not explain may be a zone whose keys
    /// do not match the DS its parent publishes (EDE 9, DNSKEY Missing).
    /// Only bogus answers pay for the two lookups, from the recursor's
    /// cache when it has them.
    pub(super) async fn explain_keys(
        &self,
        recursor: &Recursor<TokioRuntimeProvider>,
        bogus: &mut dnssec::Bogus,
    ) {
        if bogus.ede != dnssec::ede::DNSSEC_BOGUS {
            return;
        }
        let zone = bogus.zone.clone();
        let lookup =
            |rtype| recursor.resolve(Query::query(zone.clone(), rtype), Instant::now(), true);
        if let (Ok(keys), Ok(digests)) = (
            lookup(RecordType::DNSKEY).await,
            lookup(RecordType::DS).await,
        ) {
            dnssec::keys_match_parent(bogus, &keys.answers, &digests.answers);
        }
    }

    /// Forward mode: hickory's resolver found the answer bogus and kept
    /// the data; ask again, validating without the cache, to get the
    /// records and their proofs, and read the reason from them. A bogus
    /// answer comes back without its records: forward mode sends CD
    /// queries upstream unvalidated, so no client here may have them.
    pub(super) async fn explain_forward(
        &self,
        forwarder: &forward::Forwarder,
        name: &Name,
        rtype: RecordType,
        now: u32,
    ) -> Answer {
        let ntas = &self.negative_trust_anchors;
        let generic = || dnssec::Bogus {
            ede: dnssec::ede::DNSSEC_BOGUS,
            zone: name.clone(),
            reason: "the answer failed validation",
        };
        let query = Query::query(name.clone(), rtype);
        let (security, answer_records) = match forwarder.validated(query).await {
            Some(Ok(response)) => (
                dnssec::security(name, &response.answers, &response.authorities, now, ntas),
                Some(response),
            ),
            Some(Err(NetError::Dns(DnsError::Nsec { response, .. }))) => (
                dnssec::bogus_negative(name, &response.authorities, now, ntas),
                Some(*response),
            ),
            _ => (Security::Bogus(generic()), None),
        };
        match (security, answer_records) {
            (Security::Bogus(mut bogus), _) => {
                if bogus.ede == dnssec::ede::DNSSEC_BOGUS {
                    let zone = bogus.zone.clone();
                    let keys = forwarder
                        .unvalidated(Query::query(zone.clone(), RecordType::DNSKEY), true)
                        .await;
                    let digests = forwarder
                        .unvalidated(Query::query(zone, RecordType::DS), true)
                        .await;
                    if let (Ok(keys), Ok(digests)) = (keys, digests) {
                        dnssec::keys_match_parent(&mut bogus, &keys.answers, &digests.answers);
                    }
                }
                refused(bogus)
            }
            // Below a negative trust anchor: the data, as insecure.
            (Security::Insecure, Some(response)) => answer_of(&response, Security::Insecure),
            // Valid on a second look (a key rolled between the two): still
            // refused, as the cached resolver saw it.
            _ => refused(generic()),
        }
    }
}

fn refused(bogus: dnssec::Bogus) -> Answer {
    Answer {
        rcode: ResponseCode::ServFail,
        answers: Vec::new(),
        authorities: Vec::new(),
        security: Security::Bogus(bogus),
        stale: false,
    }
}
