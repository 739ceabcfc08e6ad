//! Negative answers and failures: hickory reports NXDOMAIN, NODATA and
//! failed denial proofs as errors; these turn them back into answers that
//! keep their SOA and NSEC or NSEC3 proofs, or into an [`UpstreamError`].

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::recursor::RecursorError;

use super::{Answer, Upstream, UpstreamError};
use crate::config::DnssecMode;
use crate::dnssec::{self, Security};

impl Upstream {
    pub(super) fn forward_error(
        &self,
        name: &Name,
        e: NetError,
        now: u32,
    ) -> Result<Answer, UpstreamError> {
        match e {
            NetError::Dns(DnsError::DnssecBogus) => Err(UpstreamError::Bogus(dnssec::Bogus {
                ede: dnssec::ede::DNSSEC_BOGUS,
                zone: name.clone(),
                reason: "the answer failed validation",
            })),
            NetError::Dns(DnsError::Nsec {
                response, proof, ..
            }) => {
                let authorities = response.authorities.clone();
                let security = if proof.is_insecure() || self.dnssec != DnssecMode::Validate {
                    Security::Insecure
                } else {
                    dnssec::bogus_negative(name, &authorities, now, &self.negative_trust_anchors)
                };
                if let Security::Bogus(bogus) = security {
                    return Err(UpstreamError::Bogus(bogus));
                }
                Ok(Answer {
                    rcode: response.metadata.response_code,
                    answers: Vec::new(),
                    authorities,
                    security,
                })
            }
            NetError::Dns(DnsError::NoRecordsFound(records)) => {
                let (rcode, authorities) =
                    negative_records(records.response_code, records.soa, records.authorities);
                let security = match self.dnssec {
                    DnssecMode::Validate => {
                        dnssec::security(name, &[], &authorities, now, &self.negative_trust_anchors)
                    }
                    _ => Security::Indeterminate,
                };
                Ok(Answer {
                    rcode,
                    answers: Vec::new(),
                    authorities,
                    security,
                })
            }
            other => negative_from_net(other, |answers, authorities| match self.dnssec {
                DnssecMode::Validate => dnssec::security(
                    name,
                    answers,
                    authorities,
                    now,
                    &self.negative_trust_anchors,
                ),
                _ => Security::Indeterminate,
            }),
        }
    }

    pub(super) fn recursor_error(
        &self,
        name: &Name,
        e: RecursorError,
        now: u32,
        judge: &dyn Fn(&[Record], &[Record]) -> Security,
    ) -> Result<Answer, UpstreamError> {
        match e {
            RecursorError::Net(NetError::Dns(DnsError::Nsec {
                response, proof, ..
            })) => {
                let authorities = response.authorities.clone();
                let security = if proof.is_insecure() || self.dnssec != DnssecMode::Validate {
                    Security::Insecure
                } else {
                    dnssec::bogus_negative(name, &authorities, now, &self.negative_trust_anchors)
                };
                Ok(Answer {
                    rcode: response.metadata.response_code,
                    answers: Vec::new(),
                    authorities,
                    security,
                })
            }
            RecursorError::Net(NetError::Dns(DnsError::NoRecordsFound(records))) => {
                let (rcode, authorities) =
                    negative_records(records.response_code, records.soa, records.authorities);
                let security = judge(&[], &authorities);
                Ok(Answer {
                    rcode,
                    answers: Vec::new(),
                    authorities,
                    security,
                })
            }
            RecursorError::Negative(data) => {
                let nx = data.is_nx_domain();
                let rcode = if nx {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let (rcode, authorities) = negative_records(rcode, data.soa, data.authorities);
                let security = judge(&[], &authorities);
                Ok(Answer {
                    rcode,
                    answers: Vec::new(),
                    authorities,
                    security,
                })
            }
            other => negative_from_recursor(other),
        }
    }
}

/// An upstream response as an [`Answer`].
pub(super) fn answer_of(response: &hickory_proto::op::DnsResponse, security: Security) -> Answer {
    Answer {
        rcode: response.metadata.response_code,
        answers: response.answers.clone(),
        authorities: response.authorities.clone(),
        security,
    }
}

/// A negative answer's rcode and authority section: the SOA first, then
/// the NSEC or NSEC3 records and signatures that prove it.
fn negative_records(
    rcode: ResponseCode,
    soa: Option<Box<hickory_proto::rr::Record<hickory_proto::rr::rdata::SOA>>>,
    more: Option<std::sync::Arc<[Record]>>,
) -> (ResponseCode, Vec<Record>) {
    let mut authorities: Vec<Record> = Vec::new();
    if let Some(soa) = soa {
        authorities.push(soa.into_record_of_rdata());
    }
    for record in more.iter().flat_map(|m| m.iter()) {
        if !authorities.contains(record) {
            authorities.push(record.clone());
        }
    }
    let rcode = if rcode == ResponseCode::NXDomain {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    (rcode, authorities)
}

fn negative(nx: bool, soa: Option<Record>, security: Security) -> Answer {
    Answer {
        rcode: if nx {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        },
        answers: Vec::new(),
        authorities: soa.into_iter().collect(),
        security,
    }
}

pub(super) fn negative_from_net(
    e: NetError,
    judge: impl Fn(&[Record], &[Record]) -> Security,
) -> Result<Answer, UpstreamError> {
    if e.is_no_records_found() {
        let nx = e.is_nx_domain();
        let soa = e.into_soa().map(|soa| soa.into_record_of_rdata());
        let security = judge(&[], soa.as_slice());
        return Ok(negative(nx, soa, security));
    }
    if matches!(e, NetError::Timeout) {
        return Err(UpstreamError::Timeout);
    }
    Err(UpstreamError::Failed(e.to_string()))
}

fn negative_from_recursor(e: RecursorError) -> Result<Answer, UpstreamError> {
    if e.is_no_records_found() || e.is_nx_domain() {
        let nx = e.is_nx_domain();
        let soa = e.into_soa().map(|soa| soa.into_record_of_rdata());
        return Ok(negative(nx, soa, Security::Indeterminate));
    }
    if e.is_timeout() || matches!(e, RecursorError::Timeout) {
        return Err(UpstreamError::Timeout);
    }
    Err(UpstreamError::Failed(e.to_string()))
}
