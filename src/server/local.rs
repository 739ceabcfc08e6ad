//! Names the resolver answers itself, never upstream:
//!
//! * `resolver.arpa` (RFC 9462, Discovery of Designated Resolvers): an
//!   SVCB query for `_dns.resolver.arpa` gets one record per encrypted
//!   listener, so Windows 11, iOS and macOS move from clear DNS to DoT or
//!   DoH on their own. The special-use name is never forwarded; without
//!   encrypted listeners (or without `server.tls_name`, the name the
//!   certificate holds and the clients check) the answer is empty.
//! * `use-application-dns.net`, the browsers' canary (Firefox's "DoH
//!   canary domain"): NXDOMAIN tells a browser the network does not want
//!   it to switch to its own DoH provider, which would bypass protective
//!   DNS. On by default; `server.application_dns_canary = false` resolves
//!   it like any other name.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::svcb::{Alpn, IpHint, SVCB, SvcParamKey, SvcParamValue, Unknown};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// SvcParamKey 7, `dohpath` (RFC 9461); hickory has no variant for it.
const DOHPATH: u16 = 7;

/// RFC 9462 suggests a day: the endpoints change with the config only.
const DDR_TTL: u32 = 86_400;

/// The encrypted endpoints to advertise, from the config.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// The name in the certificate, which clients verify.
    pub name: Option<Name>,
    pub dot: Vec<SocketAddr>,
    pub doh: Vec<SocketAddr>,
    pub doq: Vec<SocketAddr>,
}

/// What the resolver answers for its own names.
#[derive(Debug, Clone)]
pub struct LocalNames {
    canary: Option<LowerName>,
    resolver_arpa: LowerName,
    ddr_name: LowerName,
    ddr: Vec<Record>,
}

/// A local answer: its rcode and records.
pub struct Local<'a> {
    pub rcode: ResponseCode,
    pub answers: &'a [Record],
}

impl LocalNames {
    /// `canary`: answer `use-application-dns.net` with NXDOMAIN.
    pub fn new(canary: bool, endpoints: &Endpoints) -> LocalNames {
        let name = |s: &str| LowerName::from(Name::from_ascii(s).expect("a valid constant name"));
        LocalNames {
            canary: canary.then(|| name("use-application-dns.net.")),
            resolver_arpa: name("resolver.arpa."),
            ddr_name: name("_dns.resolver.arpa."),
            ddr: ddr_records(endpoints),
        }
    }

    /// The local answer for `qname`, or `None` for a name to resolve.
    pub fn answer(&self, qname: &LowerName, qtype: RecordType) -> Option<Local<'_>> {
        if self.canary.as_ref() == Some(qname) {
            return Some(Local {
                rcode: ResponseCode::NXDomain,
                answers: &[],
            });
        }
        if !self.resolver_arpa.zone_of(qname) {
            return None;
        }
        let answers: &[Record] = if *qname == self.ddr_name && qtype == RecordType::SVCB {
            &self.ddr
        } else {
            &[]
        };
        let exists = *qname == self.ddr_name || *qname == self.resolver_arpa;
        Some(Local {
            rcode: if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            },
            answers,
        })
    }
}

impl Default for LocalNames {
    fn default() -> Self {
        LocalNames::new(true, &Endpoints::default())
    }
}

/// One SVCB record per encrypted transport, in order of preference:
/// DoT, DoH, DoQ (the first listed address's port for each).
fn ddr_records(endpoints: &Endpoints) -> Vec<Record> {
    let Some(target) = &endpoints.name else {
        return Vec::new();
    };
    let owner = Name::from_ascii("_dns.resolver.arpa.").expect("a valid constant name");
    let (v4, v6) = hints(endpoints);
    let transports: [(&[SocketAddr], &[&str], bool); 3] = [
        (&endpoints.dot, &["dot"], false),
        (&endpoints.doh, &["h2", "http/1.1"], true),
        (&endpoints.doq, &["doq"], false),
    ];
    let mut records = Vec::new();
    for (addrs, alpn, doh) in transports {
        let Some(first) = addrs.first() else {
            continue;
        };
        let mut params = vec![
            (
                SvcParamKey::Alpn,
                SvcParamValue::Alpn(Alpn(alpn.iter().map(|s| s.to_string()).collect())),
            ),
            (SvcParamKey::Port, SvcParamValue::Port(first.port())),
        ];
        if !v4.is_empty() {
            params.push((
                SvcParamKey::Ipv4Hint,
                SvcParamValue::Ipv4Hint(IpHint(v4.clone())),
            ));
        }
        if !v6.is_empty() {
            params.push((
                SvcParamKey::Ipv6Hint,
                SvcParamValue::Ipv6Hint(IpHint(v6.clone())),
            ));
        }
        if doh {
            params.push((
                SvcParamKey::Unknown(DOHPATH),
                SvcParamValue::Unknown(Unknown(b"/dns-query{?dns}".to_vec())),
            ));
        }
        let priority = u16::try_from(records.len() + 1).unwrap_or(u16::MAX);
        records.push(Record::from_rdata(
            owner.clone(),
            DDR_TTL,
            RData::SVCB(SVCB::new(priority, target.clone(), params)),
        ));
    }
    records
}

/// The specific addresses the encrypted listeners are on (a wildcard
/// address says nothing a client can use).
fn hints(endpoints: &Endpoints) -> (Vec<A>, Vec<AAAA>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let all = endpoints
        .dot
        .iter()
        .chain(&endpoints.doh)
        .chain(&endpoints.doq);
    for addr in all {
        match addr.ip() {
            ip if ip.is_unspecified() => {}
            IpAddr::V4(ip) if !v4.contains(&A(ip)) => v4.push(A(ip)),
            IpAddr::V6(ip) if !v6.contains(&AAAA(ip)) => v6.push(AAAA(ip)),
            _ => {}
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    fn endpoints() -> Endpoints {
        Endpoints {
            name: Some(Name::from_ascii("dns.example.gov.").unwrap()),
            dot: vec!["192.0.2.53:853".parse().unwrap()],
            doh: vec!["[2001:db8::53]:443".parse().unwrap()],
            doq: Vec::new(),
        }
    }

    #[test]
    fn the_canary_is_nxdomain_only_when_on() {
        let on = LocalNames::new(true, &Endpoints::default());
        let local = on
            .answer(&lower("use-application-dns.net."), RecordType::A)
            .unwrap();
        assert_eq!(local.rcode, ResponseCode::NXDomain);
        let off = LocalNames::new(false, &Endpoints::default());
        assert!(
            off.answer(&lower("use-application-dns.net."), RecordType::A)
                .is_none()
        );
        // Only the name itself, not its neighbours.
        assert!(
            on.answer(&lower("x.use-application-dns.net."), RecordType::A)
                .is_none()
        );
    }

    #[test]
    fn ddr_lists_each_encrypted_listener_with_its_alpn_port_and_hints() {
        let local = LocalNames::new(true, &endpoints());
        let answer = local
            .answer(&lower("_dns.resolver.arpa."), RecordType::SVCB)
            .unwrap();
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 2);
        let RData::SVCB(dot) = &answer.answers[0].data else {
            panic!("not SVCB");
        };
        assert_eq!(dot.svc_priority, 1);
        assert_eq!(dot.target_name.to_ascii(), "dns.example.gov.");
        let text = dot.to_string();
        assert!(
            text.contains("alpn=dot") || text.contains("alpn=\"dot\""),
            "{text}"
        );
        assert!(text.contains("port=853"), "{text}");
        assert!(text.contains("192.0.2.53"), "{text}");
        let RData::SVCB(doh) = &answer.answers[1].data else {
            panic!("not SVCB");
        };
        let text = doh.to_string();
        assert!(text.contains("h2") && text.contains("http/1.1"), "{text}");
        assert!(text.contains("port=443"), "{text}");
        // The record must survive the wire.
        let mut message = hickory_proto::op::Message::new(
            1,
            hickory_proto::op::MessageType::Response,
            hickory_proto::op::OpCode::Query,
        );
        message.add_answers(answer.answers.iter().cloned());
        let wire = message.to_vec().unwrap();
        let back = hickory_proto::op::Message::from_vec(&wire).unwrap();
        assert_eq!(back.answers.len(), 2);
    }

    #[test]
    fn other_names_under_resolver_arpa_stay_local() {
        let local = LocalNames::new(true, &endpoints());
        let a = local
            .answer(&lower("_dns.resolver.arpa."), RecordType::A)
            .unwrap();
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
        let other = local
            .answer(&lower("x.resolver.arpa."), RecordType::A)
            .unwrap();
        assert_eq!(other.rcode, ResponseCode::NXDomain);
        assert!(
            local
                .answer(&lower("example.org."), RecordType::A)
                .is_none()
        );
    }

    #[test]
    fn without_a_name_ddr_answers_empty() {
        let local = LocalNames::new(
            true,
            &Endpoints {
                name: None,
                ..endpoints()
            },
        );
        let answer = local
            .answer(&lower("_dns.resolver.arpa."), RecordType::SVCB)
            .unwrap();
        assert!(answer.answers.is_empty());
    }
}
