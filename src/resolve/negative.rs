//! Negative answers and failures: hickory reports NXDOMAIN, NODATA and
//! failed denial proofs as errors; these turn them back into answers that
//! keep their SOA and NSEC or NSEC3 proofs, or into an [`UpstreamError`].

use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, Record};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::recursor::RecursorError;

use super::{Answer, Upstream, UpstreamError};
use crate::config::DnssecMode;
use crate::dnssec::{self, Security};

impl Upstream {
    /// A forward-mode error. `validated`: the answer went through the
    /// validator (not the uncached path for CD and `process`).
    pub(super) fn forward_error(
        &self,
        name: &Name,
        e: NetError,
        now: u32,
        validated: bool,
    ) -> Result<Answer, UpstreamError> {
        match e {
            NetError::Dns(DnsError::Nsec {
                response, proof, ..
            }) => Ok(self.failed_denial(name, &response, proof.is_insecure(), now)),
            NetError::Dns(DnsError::NoRecordsFound(records)) => {
                let authorities = negative_records(records.soa, records.authorities);
                let security = if validated {
                    self.judge(name, &[], &authorities, now)
                } else {
                    Security::Indeterminate
                };
                Ok(negative(records.response_code, authorities, security))
            }
            NetError::Timeout => Err(UpstreamError::Timeout),
            other => Err(UpstreamError::Failed(other.to_string())),
        }
    }

    /// A recursive-mode error.
    pub(super) fn recursor_error(
        &self,
        name: &Name,
        e: RecursorError,
        now: u32,
    ) -> Result<Answer, UpstreamError> {
        match e {
            RecursorError::Net(NetError::Dns(DnsError::Nsec {
                response, proof, ..
            })) => Ok(self.failed_denial(name, &response, proof.is_insecure(), now)),
            RecursorError::Net(NetError::Dns(DnsError::NoRecordsFound(records))) => {
                let authorities = negative_records(records.soa, records.authorities);
                let security = self.judge(name, &[], &authorities, now);
                Ok(negative(records.response_code, authorities, security))
            }
            RecursorError::Negative(data) => {
                let rcode = if data.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let authorities = negative_records(data.soa, data.authorities);
                let security = self.judge(name, &[], &authorities, now);
                Ok(negative(rcode, authorities, security))
            }
            e if e.is_no_records_found() || e.is_nx_domain() => {
                let rcode = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let soa = e.into_soa();
                Ok(negative(
                    rcode,
                    negative_records(soa, None),
                    Security::Indeterminate,
                ))
            }
            e if e.is_timeout() || matches!(e, RecursorError::Timeout) => {
                Err(UpstreamError::Timeout)
            }
            other => Err(UpstreamError::Failed(other.to_string())),
        }
    }

    /// A negative answer whose NSEC or NSEC3 proof hickory could not
    /// accept: insecure (opt-out, too many iterations) or bogus (which the
    /// handler refuses unless the client set CD).
    fn failed_denial(
        &self,
        name: &Name,
        response: &DnsResponse,
        insecure: bool,
        now: u32,
    ) -> Answer {
        let authorities = response.authorities.clone();
        let security = if insecure || self.dnssec != DnssecMode::Validate {
            Security::Insecure
        } else {
            dnssec::bogus_negative(name, &authorities, now, &self.negative_trust_anchors)
        };
        negative(response.metadata.response_code, authorities, security)
    }
}

/// An upstream response as an [`Answer`].
pub(super) fn answer_of(response: &DnsResponse, security: Security) -> Answer {
    Answer {
        rcode: response.metadata.response_code,
        answers: response.answers.clone(),
        authorities: response.authorities.clone(),
        security,
        stale: false,
    }
}

/// A negative answer's authority section: the SOA first, then the NSEC or
/// NSEC3 records and signatures that prove it.
fn negative_records(
    soa: Option<Box<Record<SOA>>>,
    more: Option<std::sync::Arc<[Record]>>,
) -> Vec<Record> {
    let mut authorities: Vec<Record> = Vec::new();
    if let Some(soa) = soa {
        authorities.push(soa.into_record_of_rdata());
    }
    for record in more.iter().flat_map(|m| m.iter()) {
        if !authorities.contains(record) {
            authorities.push(record.clone());
        }
    }
    authorities
}

/// NXDOMAIN, or NODATA (NOERROR) for any other negative rcode.
fn negative(rcode: ResponseCode, authorities: Vec<Record>, security: Security) -> Answer {
    Answer {
        rcode: if rcode == ResponseCode::NXDomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        },
        answers: Vec::new(),
        authorities,
        security,
        stale: false,
    }
}
