//! The zone-transfer client: AXFR (RFC 5936) and IXFR (RFC 1995) over TCP,
//! TSIG-signed (RFC 8945) when a key is configured, built from
//! hickory-proto's message and TSIG types.
//!
//! hickory-net's `Client::zone_transfer` is not used: it panics when the
//! SOA's MNAME is not the zone name (every real RPZ), cannot tell a
//! finished up-to-date IXFR from a timeout, has one timeout for the whole
//! transfer, and drops messages when its 8-slot channel is full. This
//! reads one message at a time with a timeout per message, a deadline
//! for the whole transfer and caps on records and bytes, and verifies
//! each message's TSIG, chained (RFC 8945 5.3.1). hickory's verifier
//! wants a TSIG on every message: a primary that signs only every Nth
//! message (allowed by RFC 8945, done by some old servers) fails the
//! check; NSD 4 and BIND 9 sign every one.
//!
//! Only the records an RPZ acts on are kept (CNAME, A, AAAA), written as
//! master-file lines with escaped, ASCII owner names; SOA and NS at the
//! apex, RRSIGs and other local data are dropped here.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// What a transfer brought.
#[derive(Debug)]
pub enum Xfr {
    /// IXFR: the primary has nothing newer than our serial.
    UpToDate { serial: u32 },
    /// AXFR, or an IXFR the primary answered with the whole zone: the
    /// zone's SOA and every other record in it, in the order sent, as
    /// master-file lines (text is a third of the memory of `Record`s).
    Full {
        soa: Record,
        lines: String,
        count: usize,
    },
    /// IXFR: the new SOA and, per version step, (deleted, added).
    Incremental {
        soa: Record,
        diffs: Vec<(Vec<Record>, Vec<Record>)>,
    },
}

/// Why a transfer failed; the zone held stays.
#[derive(Debug, thiserror::Error)]
pub enum XfrError {
    #[error("{primary}: {what}: {source}")]
    Io {
        primary: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{primary}: no answer within {secs} s ({what})")]
    Timeout {
        primary: SocketAddr,
        what: &'static str,
        secs: u64,
    },
    #[error("{primary}: TSIG check of the response failed: {message}")]
    Tsig {
        primary: SocketAddr,
        message: String,
    },
    #[error("{primary}: transfer refused: {rcode}{tsig}")]
    Refused {
        primary: SocketAddr,
        rcode: ResponseCode,
        tsig: String,
    },
    #[error("{primary}: malformed transfer: {message}")]
    Malformed {
        primary: SocketAddr,
        message: String,
    },
    /// The increment cannot be used (it does not fit the zone held, or
    /// the primary's serial is behind ours): transfer the whole zone.
    #[error("{primary}: {message}")]
    NeedsAxfr {
        primary: SocketAddr,
        message: String,
    },
    /// Writing the zone or its state here failed: no transfer helps.
    #[error("{message}")]
    Local { message: String },
}

impl XfrError {
    /// Whether an AXFR from the same primary may succeed where this
    /// (IXFR) attempt failed: not when the primary refused our key.
    pub fn axfr_may_help(&self) -> bool {
        match self {
            XfrError::Tsig { .. } | XfrError::Local { .. } => false,
            XfrError::Refused { rcode, tsig, .. } => {
                tsig.is_empty() && *rcode != ResponseCode::NotAuth
            }
            _ => true,
        }
    }
}

/// Bounds on one transfer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wait for each message at most this long.
    pub per_message: Duration,
    /// The whole transfer at most this long.
    pub deadline: Duration,
    pub max_records: usize,
    pub max_bytes: usize,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn soa_serial(record: &Record) -> Option<u32> {
    match &record.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    }
}

/// Transfer `zone` from `primary`: IXFR from `current` (our SOA record)
/// when given, else AXFR, within `limits`.
pub async fn transfer(
    primary: SocketAddr,
    zone: &Name,
    current: Option<&Record>,
    signer: Option<&TSigner>,
    limits: Limits,
) -> Result<Xfr, XfrError> {
    timeout(
        limits.deadline,
        transfer_within(primary, zone, current, signer, limits),
    )
    .await
    .map_err(|_| XfrError::Timeout {
        primary,
        what: "the whole transfer",
        secs: limits.deadline.as_secs(),
    })?
}

async fn transfer_within(
    primary: SocketAddr,
    zone: &Name,
    current: Option<&Record>,
    signer: Option<&TSigner>,
    limits: Limits,
) -> Result<Xfr, XfrError> {
    let per_message = limits.per_message;
    let malformed = |message: String| XfrError::Malformed { primary, message };
    let qtype = if current.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    let id: u16 = rand_id();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    let mut question = Query::query(zone.clone(), qtype);
    question.set_query_class(DNSClass::IN);
    query.add_query(question);
    if let Some(soa) = current {
        query.add_authority(soa.clone());
    }
    let mut verifier = match signer {
        Some(s) => query
            .finalize(s, unix_now())
            .map_err(|e| malformed(format!("cannot sign the request: {e}")))?,
        None => None,
    };
    let wire = query
        .to_vec()
        .map_err(|e| malformed(format!("cannot encode the request: {e}")))?;
    let secs = per_message.as_secs();
    let io = |what: &'static str| {
        move |source| XfrError::Io {
            primary,
            what,
            source,
        }
    };
    let mut stream = timeout(per_message, TcpStream::connect(primary))
        .await
        .map_err(|_| XfrError::Timeout {
            primary,
            what: "connect",
            secs,
        })?
        .map_err(io("connect"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&(wire.len() as u16).to_be_bytes());
    framed.extend_from_slice(&wire);
    stream.write_all(&framed).await.map_err(io("send"))?;
    // Read in large blocks: a length prefix and a message each cost a
    // wake-up and a system call otherwise, which left a million-record
    // transfer waiting on its own reads.
    let mut stream = tokio::io::BufReader::with_capacity(1 << 18, stream);

    let ours = current.and_then(soa_serial);
    let mut collector = Collector::new(zone.clone(), ours, limits);
    let mut buf = Vec::new();
    loop {
        let len = timeout(per_message, stream.read_u16())
            .await
            .map_err(|_| XfrError::Timeout {
                primary,
                what: "next message",
                secs,
            })?
            .map_err(io("reading the transfer (cut short?)"))?;
        buf.resize(usize::from(len), 0);
        timeout(per_message, stream.read_exact(&mut buf))
            .await
            .map_err(|_| XfrError::Timeout {
                primary,
                what: "message body",
                secs,
            })?
            .map_err(io("reading the transfer (cut short?)"))?;
        let message = match verifier.as_mut() {
            Some(v) => match v.verify(&buf) {
                Ok(response) => response.into_message(),
                Err(e) => {
                    // Say what the primary said, if it said something.
                    if let Ok(m) = Message::from_vec(&buf)
                        && m.metadata.response_code != ResponseCode::NoError
                    {
                        return Err(refused(primary, &m));
                    }
                    return Err(XfrError::Tsig {
                        primary,
                        message: e.to_string(),
                    });
                }
            },
            None => Message::from_vec(&buf)
                .map_err(|e| malformed(format!("a message does not parse: {e}")))?,
        };
        if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
            return Err(malformed(
                "a message that is not the answer to our request".into(),
            ));
        }
        if message.metadata.response_code != ResponseCode::NoError {
            return Err(refused(primary, &message));
        }
        for record in message.answers {
            if let Some(done) = collector.push(record).map_err(malformed)? {
                return Ok(done);
            }
        }
        match collector.lone_soa() {
            Some(Lone::UpToDate(serial)) => return Ok(Xfr::UpToDate { serial }),
            Some(Lone::Behind(theirs)) => {
                return Err(XfrError::NeedsAxfr {
                    primary,
                    message: format!(
                        "the primary's serial {theirs} is not newer than ours {}: \
                         transferring the whole zone",
                        ours.unwrap_or(0)
                    ),
                });
            }
            None => {}
        }
    }
}

fn refused(primary: SocketAddr, message: &Message) -> XfrError {
    let tsig = message
        .signature()
        .and_then(|t| t.data.error)
        .map(|e| {
            format!(
                " (TSIG error {e:?}: the key name, algorithm or secret differs from the primary's)"
            )
        })
        .unwrap_or_else(|| {
            if message.metadata.response_code == ResponseCode::NotAuth {
                " (NOTAUTH: the primary does not accept our key, or wants one)".to_owned()
            } else {
                String::new()
            }
        });
    XfrError::Refused {
        primary,
        rcode: message.metadata.response_code,
        tsig,
    }
}

fn rand_id() -> u16 {
    // Not a security boundary (TCP, and TSIG where it matters); distinct
    // enough to tell our answer from a stray one.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Half {
    /// After the first SOA.
    Start,
    /// AXFR-style: records until the closing SOA.
    Whole,
    /// IXFR: deletions of a step, then its additions.
    Deleting,
    Adding,
}

/// A message that held only the primary's SOA.
enum Lone {
    UpToDate(u32),
    Behind(u32),
}

/// A record an RPZ acts on, as a master-file line: the owner and target
/// escaped and in A-labels (`Name::to_ascii`), so that the RPZ parser
/// reads back exactly this record. `None` for every other type.
pub fn master_line(record: &Record) -> Option<String> {
    let mut line = String::new();
    write_master_line(&mut line, record).then(|| {
        line.pop();
        line
    })
}

/// [`master_line`] appended to `out`, with a newline; false (nothing
/// written) for a type the RPZ does not act on. A full transfer writes a
/// million of these: no allocation per record.
pub fn write_master_line(out: &mut String, record: &Record) -> bool {
    use std::fmt::Write as _;
    let (rtype, target) = match &record.data {
        RData::CNAME(target) => ("CNAME", Some(&target.0)),
        RData::A(_) => ("A", None),
        RData::AAAA(_) => ("AAAA", None),
        _ => return false,
    };
    write_ascii_name(out, &record.name);
    let _ = write!(out, " {} IN {rtype} ", record.ttl);
    match (&record.data, target) {
        (_, Some(target)) => write_ascii_name(out, target),
        (RData::A(a), _) => {
            let _ = write!(out, "{}", a.0);
        }
        (RData::AAAA(a), _) => {
            let _ = write!(out, "{}", a.0);
        }
        _ => {}
    }
    out.push('\n');
    true
}

/// `Name::to_ascii`, written into `out` (escaped A-labels, a trailing
/// dot for an absolute name).
fn write_ascii_name(out: &mut String, name: &Name) {
    for (i, raw) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match hickory_proto::rr::domain::Label::from_raw_bytes(raw) {
            Ok(label) => {
                let _ = label.write_ascii(out);
            }
            // A label off the wire is at most 63 bytes: never taken.
            Err(_) => out.push_str(&String::from_utf8_lossy(raw)),
        }
    }
    if name.is_root() || name.is_fqdn() {
        out.push('.');
    }
}

/// Reads the record stream and says when it is complete (RFC 1995 2,
/// RFC 5936 2.2): AXFR is SOA(S), records, SOA(S); IXFR is SOA(S), then
/// per step SOA(old), deletions, SOA(new), additions, then SOA(S).
struct Collector {
    zone: Name,
    ours: Option<u32>,
    limits: Limits,
    soa: Option<Record>,
    new: u32,
    half: Half,
    lines: String,
    count: usize,
    diffs: Vec<(Vec<Record>, Vec<Record>)>,
    deleted: Vec<Record>,
    added: Vec<Record>,
    /// Records seen after the first SOA (all types).
    seen: usize,
    /// Bytes held in the increments (approximate).
    held: usize,
}

impl Collector {
    fn new(zone: Name, ours: Option<u32>, limits: Limits) -> Collector {
        Collector {
            zone,
            ours,
            limits,
            soa: None,
            new: 0,
            half: Half::Start,
            lines: String::new(),
            count: 0,
            diffs: Vec::new(),
            deleted: Vec::new(),
            added: Vec::new(),
            seen: 0,
            held: 0,
        }
    }

    /// After a message: a lone SOA equal to ours means no change; one
    /// older than ours (or incomparable) means the primary went back.
    fn lone_soa(&self) -> Option<Lone> {
        let ours = self.ours?;
        if self.soa.is_none() || self.seen != 0 {
            return None;
        }
        match SerialNumber::new(self.new).partial_cmp(&SerialNumber::new(ours)) {
            Some(std::cmp::Ordering::Equal) => Some(Lone::UpToDate(self.new)),
            Some(std::cmp::Ordering::Greater) => None,
            _ => Some(Lone::Behind(self.new)),
        }
    }

    fn line(&mut self, record: &Record) -> Result<(), String> {
        if write_master_line(&mut self.lines, record) {
            self.count += 1;
        }
        if self.lines.len() > self.limits.max_bytes {
            return Err(format!(
                "the zone passes {} bytes (blocklist.max_feed_mib); refused",
                self.limits.max_bytes
            ));
        }
        Ok(())
    }

    fn keep(&mut self, deleting: bool, record: Record) -> Result<(), String> {
        if !matches!(record.data, RData::CNAME(_) | RData::A(_) | RData::AAAA(_)) {
            return Ok(());
        }
        self.held += 64 + record.name.len();
        if self.held > self.limits.max_bytes {
            return Err(format!(
                "the increment passes {} bytes; refused",
                self.limits.max_bytes
            ));
        }
        if deleting {
            self.deleted.push(record);
        } else {
            self.added.push(record);
        }
        Ok(())
    }

    fn push(&mut self, record: Record) -> Result<Option<Xfr>, String> {
        let serial = soa_serial(&record);
        let Some(first) = &self.soa else {
            let Some(serial) = serial else {
                return Err("the first record is not the zone's SOA".into());
            };
            if record.name != self.zone {
                return Err(format!(
                    "the SOA is for {}, not for {}",
                    record.name, self.zone
                ));
            }
            self.new = serial;
            self.soa = Some(record);
            return Ok(None);
        };
        self.seen += 1;
        if self.seen > self.limits.max_records {
            return Err(format!(
                "more than {} records (max_entries or blocklist.max_feed_entries); refused",
                self.limits.max_records
            ));
        }
        // Records outside the zone have no place in it (RFC 5936 3.2).
        if serial.is_none() && !self.zone.zone_of(&record.name) {
            return Ok(None);
        }
        match (self.half, serial) {
            (Half::Start, Some(s)) if s == self.new => {
                // SOA(S) SOA(S): an IXFR saying "no change", or a zone
                // with nothing in it, which no RPZ is (it has an NS).
                return if self.ours == Some(s) {
                    Ok(Some(Xfr::UpToDate { serial: s }))
                } else {
                    Err("a zone with no records at all; refused".into())
                };
            }
            (Half::Start, Some(s)) if Some(s) == self.ours => self.half = Half::Deleting,
            (Half::Start, Some(s)) => {
                return Err(format!(
                    "an increment from serial {s}, where ours is {:?}",
                    self.ours
                ));
            }
            (Half::Start, None) => {
                self.half = Half::Whole;
                self.line(&record)?;
            }
            (Half::Whole, Some(s)) if s == self.new => {
                return Ok(Some(Xfr::Full {
                    soa: first.clone(),
                    lines: std::mem::take(&mut self.lines),
                    count: self.count,
                }));
            }
            (Half::Whole, Some(_)) => return Err("an SOA inside the zone".into()),
            (Half::Whole, None) => self.line(&record)?,
            (Half::Deleting, Some(_)) => self.half = Half::Adding,
            (Half::Deleting, None) => self.keep(true, record)?,
            (Half::Adding, Some(s)) => {
                self.diffs.push((
                    std::mem::take(&mut self.deleted),
                    std::mem::take(&mut self.added),
                ));
                if s == self.new {
                    return Ok(Some(Xfr::Incremental {
                        soa: first.clone(),
                        diffs: std::mem::take(&mut self.diffs),
                    }));
                }
                self.half = Half::Deleting;
            }
            (Half::Adding, None) => self.keep(false, record)?,
        }
        Ok(None)
    }
}

/// Parse a TSIG algorithm name as BIND and NSD write it.
pub fn tsig_algorithm(name: &str) -> Option<hickory_proto::rr::rdata::tsig::TsigAlgorithm> {
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
