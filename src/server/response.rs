//! Building block responses (docs/architecture.md "Block responses").
//!
//! A negative block answer carries a synthesised SOA in the authority
//! section, owned by the listed name, so that clients and downstream caches
//! keep the answer for the policy TTL rather than forever or not at all (as
//! RPZ servers do). When the query had EDNS, the response carries an
//! Extended DNS Error (RFC 8914) with info-code 15 "Blocked" and a short
//! text naming the category and, unless configured off, the feed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, HINFO, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use smallvec::SmallVec;

use super::question::{OPT, Question};
use crate::policy::Action;

/// RFC 8914 4.16: "Blocked".
pub const EDE_BLOCKED: u16 = 15;
/// The EDNS option code of Extended DNS Errors (RFC 8914 2).
pub const EDE_OPTION_CODE: u16 = 15;

/// Primary-server and mailbox names in the synthesised SOA. `.invalid`
/// (RFC 6761) so nothing ever tries to reach them.
static SOA_MNAME: LazyLock<Name> = LazyLock::new(|| name("portcullis.invalid."));
static SOA_RNAME: LazyLock<Name> = LazyLock::new(|| name("hostmaster.portcullis.invalid."));

fn name(text: &str) -> Name {
    // Both names are constants that parse; a failure is a programming error
    // caught by the unit tests below.
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

/// Settings that shape block responses.
#[derive(Debug, Clone)]
pub struct BlockSettings {
    pub policy_ttl: u32,
    pub sinkhole_ipv4: Option<Ipv4Addr>,
    pub sinkhole_ipv6: Option<Ipv6Addr>,
    pub ede_names_feed: bool,
    /// The EDE text as structured JSON, with these contacts.
    pub structured: Option<StructuredText>,
}

/// The records and code of a block response (everything but the header
/// flags and EDNS, which the handler adds).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

/// The SOA a negative block answer carries: owned by the listed name,
/// serial = blocklist generation, minimum and TTL = the policy TTL.
pub fn policy_soa(listed: Name, ttl: u32, generation: u64) -> Record {
    let serial = (generation % u64::from(u32::MAX)) as u32;
    let soa = SOA::new(
        SOA_MNAME.clone(),
        SOA_RNAME.clone(),
        serial,
        3600,
        600,
        86_400,
        ttl,
    );
    Record::from_rdata(listed, ttl, RData::SOA(soa))
}

/// Build the records for a blocking action. `Drop` and `Log` never get here.
///
/// `local` holds the feed's own answer addresses for the entry (RPZ local
/// data, a hosts line's address); when present they replace the configured
/// sinkhole addresses.
pub fn block_answer(
    action: Action,
    qname: &Name,
    qtype: RecordType,
    listed: Name,
    local: &[IpAddr],
    settings: &BlockSettings,
    generation: u64,
) -> BlockAnswer {
    let ttl = settings.policy_ttl;
    let negative = |rcode| BlockAnswer {
        rcode,
        answers: Vec::new(),
        authorities: vec![policy_soa(listed.clone(), ttl, generation)],
    };
    match action {
        Action::Nxdomain | Action::Drop | Action::Log => negative(ResponseCode::NXDomain),
        Action::Nodata => negative(ResponseCode::NoError),
        Action::Refused => BlockAnswer {
            rcode: ResponseCode::Refused,
            answers: Vec::new(),
            authorities: Vec::new(),
        },
        Action::Sinkhole => {
            let data = sinkhole_addresses(qtype, local, settings);
            if data.is_empty() {
                return negative(ResponseCode::NoError);
            }
            BlockAnswer {
                rcode: ResponseCode::NoError,
                answers: data
                    .into_iter()
                    .map(|ip| {
                        let data = match ip {
                            IpAddr::V4(a) => RData::A(A(a)),
                            IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                        };
                        Record::from_rdata(qname.clone(), ttl, data)
                    })
                    .collect(),
                authorities: Vec::new(),
            }
        }
    }
}

/// The addresses a sinkhole answer to `qtype` carries: the feed's own
/// (`local`) of that family when it has any, else the configured sinkhole
/// of that family; none for other types (the answer is then NODATA).
fn sinkhole_addresses(
    qtype: RecordType,
    local: &[IpAddr],
    settings: &BlockSettings,
) -> SmallVec<[IpAddr; 2]> {
    if local.is_empty() {
        let configured = match qtype {
            RecordType::A => settings.sinkhole_ipv4.map(IpAddr::V4),
            RecordType::AAAA => settings.sinkhole_ipv6.map(IpAddr::V6),
            _ => None,
        };
        return configured.into_iter().collect();
    }
    local
        .iter()
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            _ => false,
        })
        .copied()
        .collect()
}

/// The entry a block response written from the bytes speaks for.
#[derive(Debug, Clone, Copy)]
pub struct WireBlock<'a> {
    pub action: Action,
    /// Labels of the listed name: the question's last `depth` labels.
    pub depth: u8,
    /// The feed's own answer addresses (empty for most entries).
    pub local: &'a [IpAddr],
    /// The blocklist generation, the SOA's serial.
    pub generation: u64,
    /// The EDE option's payload, sent when the query had EDNS.
    pub ede: &'a [u8],
}

/// Write the block response to `packet` (read as `question`) into `out`,
/// the same response [`block_answer`] and the handler give, from the bytes:
/// the question copied, the SOA's owner a pointer to the listed name's
/// labels within it (the last `depth`), a sinkhole address's owner a
/// pointer to the question. Returns the length, or `None` when the
/// response would not fit the client's limit (the full path then
/// truncates it).
pub fn write_block(
    out: &mut [u8],
    packet: &[u8],
    question: &Question,
    block: &WireBlock<'_>,
    settings: &BlockSettings,
) -> Option<usize> {
    let WireBlock {
        action,
        depth,
        local,
        generation,
        ede,
    } = *block;
    let qtype = RecordType::from(question.qtype());
    let addresses = match action {
        Action::Sinkhole => sinkhole_addresses(qtype, local, settings),
        _ => SmallVec::new(),
    };
    let (rcode, soa) = match action {
        Action::Nodata => (ResponseCode::NoError, true),
        Action::Refused => (ResponseCode::Refused, false),
        Action::Sinkhole => (ResponseCode::NoError, addresses.is_empty()),
        Action::Nxdomain | Action::Drop | Action::Log => (ResponseCode::NXDomain, true),
    };
    let ttl = settings.policy_ttl.to_be_bytes();
    let mut w = Writer { out, at: 0 };
    // Header: the query's ID, QR, opcode QUERY, RD and CD as asked, RA.
    w.put(&packet[..2])?;
    w.put(&[
        0x80 | (packet[2] & 0x01),
        0x80 | (packet[3] & 0x10) | rcode.low(),
    ])?;
    w.u16(1)?;
    w.u16(addresses.len() as u16)?;
    w.u16(u16::from(soa))?;
    w.u16(u16::from(question.edns_payload().is_some()))?;
    // The question as asked; its end is the type and class.
    w.put(&packet[12..question.name().end + 4])?;
    for ip in &addresses {
        w.u16(0xC00C)?;
        let (rtype, data): (RecordType, &[u8]) = match ip {
            IpAddr::V4(a) => (RecordType::A, &a.octets()),
            IpAddr::V6(a) => (RecordType::AAAA, &a.octets()),
        };
        w.u16(rtype.into())?;
        w.u16(1)?;
        w.put(&ttl)?;
        w.u16(data.len() as u16)?;
        w.put(data)?;
    }
    if soa {
        // The listed name is the question's last `depth` labels.
        let mut owner = 12;
        for _ in 0..question.label_count().saturating_sub(depth) {
            owner += 1 + usize::from(packet[owner]);
        }
        w.u16(0xC000 | owner as u16)?;
        w.u16(RecordType::SOA.into())?;
        w.u16(1)?;
        w.put(&ttl)?;
        let rdlength = w.at;
        w.u16(0)?;
        let mname = w.at;
        w.put(b"\x0aportcullis\x07invalid\x00")?;
        w.put(b"\x0ahostmaster")?;
        w.u16(0xC000 | mname as u16)?;
        let serial = (generation % u64::from(u32::MAX)) as u32;
        for value in [serial, 3600, 600, 86_400, settings.policy_ttl] {
            w.put(&value.to_be_bytes())?;
        }
        let len = (w.at - rdlength - 2) as u16;
        w.out[rdlength..rdlength + 2].copy_from_slice(&len.to_be_bytes());
    }
    if let Some(payload) = question.edns_payload() {
        // OPT: root owner, our payload size, version 0, DO as asked
        // (RFC 3225), the EDE.
        w.put(&[0])?;
        w.u16(OPT)?;
        w.u16(payload)?;
        let do_flag = if question.dnssec_ok() { 0x80 } else { 0 };
        w.put(&[rcode.high(), 0, do_flag, 0])?;
        w.u16(4 + ede.len() as u16)?;
        w.u16(EDE_OPTION_CODE)?;
        w.u16(ede.len() as u16)?;
        w.put(ede)?;
    }
    (w.at <= question.limit).then_some(w.at)
}

/// Write the minimal answer to an ANY query (RFC 8482 4.2, the record
/// [`rfc8482_hinfo`] gives) to `packet` into `out`, its owner a pointer
/// to the question: the response is the query plus 21 bytes, so a spoofed
/// ANY amplifies less than twofold. For queries without DO (a DNSSEC
/// client is given a real RRset by the full path).
pub fn write_minimal_any(out: &mut [u8], packet: &[u8], question: &Question) -> Option<usize> {
    let mut w = Writer { out, at: 0 };
    w.put(&packet[..2])?;
    w.put(&[0x80 | (packet[2] & 0x01), 0x80 | (packet[3] & 0x10)])?;
    w.u16(1)?;
    w.u16(1)?;
    w.u16(0)?;
    w.u16(u16::from(question.edns_payload().is_some()))?;
    w.put(&packet[12..question.name().end + 4])?;
    w.u16(0xC00C)?;
    w.u16(RecordType::HINFO.into())?;
    w.u16(1)?;
    w.put(&3600u32.to_be_bytes())?;
    w.u16(9)?;
    w.put(b"\x07RFC8482\x00")?;
    if let Some(payload) = question.edns_payload() {
        w.put(&[0])?;
        w.u16(OPT)?;
        w.u16(payload)?;
        w.put(&[0, 0, 0, 0])?;
        w.u16(0)?;
    }
    (w.at <= question.limit).then_some(w.at)
}

/// Bounds-checked appends to a response buffer.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.at..self.at + bytes.len())?
            .copy_from_slice(bytes);
        self.at += bytes.len();
        Some(())
    }

    fn u16(&mut self, value: u16) -> Option<()> {
        self.put(&value.to_be_bytes())
    }
}

/// The RFC 8914 option: info-code 15 and a UTF-8 text. The text names the
/// category and feed, never a path; with structured errors on, it is the
/// JSON of draft-ietf-dnsop-structured-dns-error instead.
pub fn blocked_ede(category: &str, feed: Option<&str>, settings: &BlockSettings) -> EdnsOption {
    let mut payload = Vec::new();
    write_blocked_ede(&mut payload, category, feed, settings);
    EdnsOption::Unknown(EDE_OPTION_CODE, payload)
}

/// [`blocked_ede`]'s payload (info-code and text) into `out`, which is
/// cleared first: the fast path reuses one buffer, so a block answer
/// allocates nothing for it (the structured text is still formatted).
pub fn write_blocked_ede(
    out: &mut Vec<u8>,
    category: &str,
    feed: Option<&str>,
    settings: &BlockSettings,
) {
    out.clear();
    out.extend_from_slice(&EDE_BLOCKED.to_be_bytes());
    if let Some(structured) = &settings.structured {
        let reason = match feed {
            Some(feed) => format!("category {category}, feed {feed}"),
            None => format!("category {category}"),
        };
        out.extend_from_slice(structured_text(category, &reason, structured).as_bytes());
        return;
    }
    out.extend_from_slice(b"blocked by protective DNS: category ");
    out.extend_from_slice(category.as_bytes());
    if let Some(feed) = feed {
        out.extend_from_slice(b", feed ");
        out.extend_from_slice(feed.as_bytes());
    }
}

/// The longest structured text sent whole; past it, `j` and `o` go, as
/// the draft orders for a response that would not fit.
const STRUCTURED_MAX: usize = 300;

/// The parts of the structured text that are the same for every block,
/// as JSON, made once when the config is read: a block answer then
/// writes one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructuredText {
    /// `"c":[...],`, or empty without contacts.
    contact: String,
    /// `"o":"...",`, or empty.
    organisation: String,
}

impl StructuredText {
    pub fn new(config: &crate::config::StructuredErrors) -> StructuredText {
        let json = |v: serde_json::Value| v.to_string();
        StructuredText {
            contact: if config.contact.is_empty() {
                String::new()
            } else {
                format!("\"c\":{},", json(config.contact.clone().into()))
            },
            organisation: config
                .organisation
                .as_ref()
                .map(|o| format!("\"o\":{},", json(o.clone().into())))
                .unwrap_or_default(),
        }
    }
}

/// The draft's I-JSON, minified, its names in order: contacts `c`,
/// justification `j`, the language `l` that `j` and `o` are in, the
/// organisation `o`, and the sub-error `s` for the category.
fn structured_text(category: &str, reason: &str, parts: &StructuredText) -> String {
    let s = sub_error(category);
    let j = serde_json::Value::from(format!("protective DNS: {reason}")).to_string();
    let text = format!(
        "{{{}\"j\":{j},\"l\":\"en\",{}\"s\":{s}}}",
        parts.contact, parts.organisation
    );
    if text.len() <= STRUCTURED_MAX {
        return text;
    }
    format!("{{{}\"s\":{s}}}", parts.contact)
}

/// The draft's sub-error codes: 1 malware, 2 phishing, 3 spam, 4 spyware;
/// any other category is this service's own policy (6, "DNS operator
/// policy").
pub fn sub_error(category: &str) -> u8 {
    match category.to_ascii_lowercase().as_str() {
        "malware" | "c2" | "botnet" | "ransomware" | "cryptojacking" | "exploit" => 1,
        "phishing" | "fraud" | "scam" => 2,
        "spam" => 3,
        "spyware" | "stalkerware" => 4,
        _ => 6,
    }
}

/// The answer to an ANY query (RFC 8482 section 4.2): one HINFO record
/// whose CPU field says why; an hour, as Cloudflare gives it.
pub fn rfc8482_hinfo(qname: &LowerName) -> Record {
    Record::from_rdata(
        Name::from(qname.clone()),
        3600,
        RData::HINFO(HINFO::new("RFC8482".to_owned(), String::new())),
    )
}

/// An RFC 8914 option with `code` and `text`.
pub fn ede(code: u16, text: &str) -> EdnsOption {
    let mut payload = Vec::with_capacity(2 + text.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(text.as_bytes());
    EdnsOption::Unknown(EDE_OPTION_CODE, payload)
}

/// EDE 3: the answer is past its TTL, served because the upstream could
/// not answer (RFC 8767).
pub fn stale_ede() -> EdnsOption {
    ede(3, "stale answer: the upstream did not answer in time")
}

/// EDE 22 or 23 for a resolution that got no answer.
pub fn upstream_ede(error: &crate::resolve::UpstreamError) -> EdnsOption {
    ede(error.ede(), &format!("no answer from upstream: {error}"))
}

/// The RFC 8914 option for a validation failure: its info-code, and a
/// text naming the zone and the reason.
pub fn dnssec_ede(bogus: &crate::dnssec::Bogus) -> EdnsOption {
    let text = format!(
        "DNSSEC validation failed in {}: {}",
        bogus.zone, bogus.reason
    );
    ede(bogus.ede, &text)
}

/// The option code as hickory names it, for reading EDE back.
pub fn ede_code() -> EdnsCode {
    EdnsCode::from(EDE_OPTION_CODE)
}

#[cfg(test)]
mod tests;
