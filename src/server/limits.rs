//! Limits on what one client can take: its query rate, the UDP responses
//! sent to its address block (response rate limiting), and the queries
//! it, or one zone, may have waiting on the upstream.
//!
//! Everything here is a fixed table of atomics indexed by a keyed hash:
//! no allocation, no lock, and no state that grows with the number of
//! addresses a flood comes from (a spoofed flood from a million sources
//! fills nothing). Two keys that share a slot share its budget; the
//! tables are sized so that this is rare among real clients, and the key
//! is seeded per process so that nobody can aim at another's slot. A limit
//! that is not configured costs nothing on the query path.
//!
//! * **Client rate** (`limits.client_qps`, per organisation with
//!   `[[organisation]] client_qps`): a token bucket per client address
//!   block (`client_prefix_v4`/`_v6`, so a NAT gateway or a /56 home
//!   counts as one). Over it, a query is answered REFUSED, TC=1 (so a real
//!   client comes back over TCP, where the source cannot be spoofed) or
//!   not at all, as `limits.over_limit` says.
//! * **Response rate limiting** (`limits.rrl_responses_per_second`), in
//!   BIND's sense: UDP responses per second per client block and response
//!   kind (the same answer, the same zone's NXDOMAIN, errors). Past it,
//!   every `rrl_slip`-th response goes out truncated (TC=1, no records)
//!   and the rest are dropped: a spoofed victim receives almost nothing,
//!   and a real client retries over TCP.
//! * **Upstream queries waiting**: in all, per client and per zone (the
//!   query name less its first label, so `<random>.victim.example` counts
//!   against `victim.example`). Past a cap the query gets SERVFAIL at
//!   once: a random-subdomain flood against one zone fills its own share,
//!   not the resolver, and other names keep resolving.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::rr::Name;

use crate::config::{LimitsConfig, Organisation, OverLimit};
use crate::orgs::{OrgId, OrgMap};
use crate::telemetry;

/// Token-bucket slots (a power of two): 2 MiB.
const BUCKETS: usize = 1 << 18;
/// Waiting-query counter slots (a power of two): 256 KiB.
const COUNTERS: usize = 1 << 16;

/// A query rate: tokens per second and the bucket's depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// What to do with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Refuse,
    Truncate,
    Drop,
}

/// What to do with a UDP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    Send,
    /// Send it truncated: header and question, TC set.
    Slip,
    Drop,
}

/// Token buckets in a fixed table. Each slot packs the time of its last
/// update (ms since `epoch`, wrapping every 49 days) and its tokens in
/// thousandths.
struct Buckets {
    slots: Box<[AtomicU64]>,
    epoch: Instant,
}

impl Buckets {
    fn new(slots: usize) -> Buckets {
        Buckets {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u32 {
        // +1: a slot's 0 means "never used", a full bucket.
        (self.epoch.elapsed().as_millis() as u32).wrapping_add(1)
    }

    /// Take a token from `key`'s bucket; false when it is empty.
    fn take(&self, key: u64, rate: Rate) -> bool {
        let slot = &self.slots[key as usize & (self.slots.len() - 1)];
        let now = self.now_ms();
        let full = u64::from(rate.burst.max(1)) * 1000;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let tokens = if current == 0 {
                full
            } else {
                let last = (current >> 32) as u32;
                let held = current & 0xFFFF_FFFF;
                let elapsed = u64::from(now.wrapping_sub(last));
                (held + elapsed * u64::from(rate.per_second)).min(full)
            };
            if tokens < 1000 {
                return false;
            }
            let next = (u64::from(now) << 32) | (tokens - 1000);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// Counts of queries waiting, in a fixed table, and in all.
struct Waiting {
    slots: Box<[AtomicU32]>,
    total: AtomicU32,
}

/// Which cap a query met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Total,
    Client,
    Zone,
}

impl Cap {
    /// Its `limit` label in the metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Cap::Total => "upstream_total",
            Cap::Client => "upstream_client",
            Cap::Zone => "upstream_zone",
        }
    }
}

/// A query's place among those waiting; given back on drop.
pub struct Place<'a> {
    waiting: &'a Waiting,
    client: usize,
    zone: usize,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.waiting.slots[self.client].fetch_sub(1, Ordering::Relaxed);
        self.waiting.slots[self.zone].fetch_sub(1, Ordering::Relaxed);
        self.waiting.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The configured limits, and the state they keep.
pub struct Limits {
    /// Mixed into every key: a per-process secret.
    salt: u64,
    client: Option<ClientRate>,
    rrl: Option<Rrl>,
    waiting: Waiting,
    caps: UpstreamCaps,
    /// `limited[limit][org]`; the last column is "no organisation".
    counters: Vec<Vec<::metrics::Counter>>,
}

#[derive(Debug, Clone, Copy)]
struct UpstreamCaps {
    total: u32,
    client: u32,
    zone: u32,
}

struct ClientRate {
    buckets: Buckets,
    default: Option<Rate>,
    /// Per organisation, by `OrgId`; `None`: the default.
    by_org: Vec<Option<Rate>>,
    prefix_v4: u8,
    prefix_v6: u8,
    over: OverLimit,
}

struct Rrl {
    buckets: Buckets,
    rate: Rate,
    slip: u32,
    sequence: AtomicU32,
    prefix_v4: u8,
    prefix_v6: u8,
}

/// The metric labels of `Limits::counters`' rows.
const LIMIT_LABELS: [&str; 6] = [
    "client_rate",
    "rrl_slip",
    "rrl_drop",
    "upstream_total",
    "upstream_client",
    "upstream_zone",
];

impl Limits {
    pub fn new(config: &LimitsConfig, organisations: &[Organisation]) -> Limits {
        let rate = |qps: u32| {
            (qps > 0).then_some(Rate {
                per_second: qps,
                burst: qps.saturating_mul(config.burst_factor.max(1)),
            })
        };
        let by_org: Vec<Option<Rate>> = organisations
            .iter()
            .map(|o| o.client_qps.and_then(rate))
            .collect();
        let default = rate(config.client_qps);
        let client =
            (default.is_some() || by_org.iter().any(Option::is_some)).then(|| ClientRate {
                buckets: Buckets::new(BUCKETS),
                default,
                by_org,
                prefix_v4: config.client_prefix_v4,
                prefix_v6: config.client_prefix_v6,
                over: config.over_limit,
            });
        let rrl = rate(config.rrl_responses_per_second).map(|rate| Rrl {
            buckets: Buckets::new(BUCKETS),
            rate,
            slip: config.rrl_slip,
            sequence: AtomicU32::new(0),
            prefix_v4: config.rrl_prefix_v4,
            prefix_v6: config.rrl_prefix_v6,
        });
        let mut orgs: Vec<&str> = organisations.iter().map(|o| o.id.as_str()).collect();
        orgs.push("");
        let counters = LIMIT_LABELS
            .iter()
            .map(|limit| {
                orgs.iter()
                    .map(|org| {
                        ::metrics::counter!(telemetry::LIMITED, "limit" => *limit, "org" => org.to_string())
                    })
                    .collect()
            })
            .collect();
        Limits {
            salt: std::collections::hash_map::RandomState::new().hash_one(0u64),
            client,
            rrl,
            waiting: Waiting {
                slots: (0..COUNTERS).map(|_| AtomicU32::new(0)).collect(),
                total: AtomicU32::new(0),
            },
            caps: UpstreamCaps {
                total: config.max_upstream_queries,
                client: config.max_upstream_per_client,
                zone: config.max_upstream_per_zone,
            },
            counters,
        }
    }

    fn count(&self, limit: usize, org: Option<OrgId>) {
        let row = &self.counters[limit];
        let column = org.map_or(row.len() - 1, |o| usize::from(o.0).min(row.len() - 1));
        row[column].increment(1);
    }

    fn hasher(&self) -> impl Hasher {
        let mut h = rustc_hash::FxHasher::default();
        h.write_u64(self.salt);
        h
    }

    fn block_key(&self, ip: IpAddr, v4: u8, v6: u8, kind: u8) -> impl Hasher {
        let mut h = self.hasher();
        h.write_u8(kind);
        match ip.to_canonical() {
            IpAddr::V4(a) => h.write_u32(u32::from(a) & mask32(v4)),
            IpAddr::V6(a) => h.write_u128(u128::from(a) & mask128(v6)),
        }
        h
    }

    /// Whether any query rate is configured (else [`Limits::query`] always
    /// passes, and callers need not look the organisation up for it).
    #[inline]
    pub fn rates_clients(&self) -> bool {
        self.client.is_some()
    }

    /// Whether response rate limiting is on.
    #[inline]
    pub fn rates_responses(&self) -> bool {
        self.rrl.is_some()
    }

    /// Whether a query from `client` (of `org`) is within its rate. UDP
    /// and the stream transports have a bucket each, so a client told to
    /// come back over TCP (TC) can. Nothing to do, and no cost beyond the
    /// branch, when no rate is set.
    #[inline]
    pub fn query(&self, client: IpAddr, org: Option<OrgId>, udp: bool) -> Verdict {
        let Some(limit) = &self.client else {
            return Verdict::Pass;
        };
        let rate = org
            .and_then(|o| limit.by_org.get(usize::from(o.0)).copied().flatten())
            .or(limit.default);
        let Some(rate) = rate else {
            return Verdict::Pass;
        };
        let key = self
            .block_key(client, limit.prefix_v4, limit.prefix_v6, u8::from(udp))
            .finish();
        if limit.buckets.take(key, rate) {
            return Verdict::Pass;
        }
        self.count(0, org);
        match limit.over {
            OverLimit::Refused => Verdict::Refuse,
            OverLimit::Truncate => Verdict::Truncate,
            OverLimit::Drop => Verdict::Drop,
        }
    }

    /// Response rate limiting for a UDP response `wire` to `client`.
    #[inline]
    pub fn response(&self, client: IpAddr, wire: &[u8], orgs: &OrgMap) -> Sending {
        let Some(rrl) = &self.rrl else {
            return Sending::Send;
        };
        let Some(kind) = response_kind(wire) else {
            return Sending::Send;
        };
        let mut key = self.block_key(client, rrl.prefix_v4, rrl.prefix_v6, 2);
        key.write_u8(kind as u8);
        match kind {
            // The same answer again and again.
            Kind::Answer | Kind::Nodata => hash_name(&mut key, wire, 0),
            // NXDOMAIN for names under one zone (random subdomains).
            Kind::Nxdomain => hash_name(&mut key, wire, 1),
            Kind::Error => {}
        }
        if rrl.buckets.take(key.finish(), rrl.rate) {
            return Sending::Send;
        }
        let org = orgs.lookup(client);
        let slip = rrl.slip > 0
            && rrl
                .sequence
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(rrl.slip);
        if slip {
            self.count(1, org);
            Sending::Slip
        } else {
            self.count(2, org);
            Sending::Drop
        }
    }

    /// A place among the queries waiting on the upstream, or the cap that
    /// is full. `zone` is the query name less its first label.
    pub fn wait_upstream(
        &self,
        client: IpAddr,
        org: Option<OrgId>,
        qname: &Name,
    ) -> Result<Place<'_>, Cap> {
        let waiting = &self.waiting;
        let mask = waiting.slots.len() - 1;
        let client_slot = self.block_key(client, 32, 64, 4).finish() as usize & mask;
        let mut zone = self.hasher();
        zone.write_u8(5);
        hash_zone_of(&mut zone, qname);
        let zone_slot = zone.finish() as usize & mask;
        let total = waiting.total.fetch_add(1, Ordering::Relaxed);
        let client_n = waiting.slots[client_slot].fetch_add(1, Ordering::Relaxed);
        let zone_n = waiting.slots[zone_slot].fetch_add(1, Ordering::Relaxed);
        let place = Place {
            waiting,
            client: client_slot,
            zone: zone_slot,
        };
        let full = if total >= self.caps.total {
            Some(Cap::Total)
        } else if client_n >= self.caps.client {
            Some(Cap::Client)
        } else if zone_n >= self.caps.zone {
            Some(Cap::Zone)
        } else {
            None
        };
        match full {
            None => Ok(place),
            Some(cap) => {
                // Dropping the place gives back what was counted.
                drop(place);
                let row = LIMIT_LABELS
                    .iter()
                    .position(|l| *l == cap.label())
                    .unwrap_or(3);
                self.count(row, org);
                Err(cap)
            }
        }
    }
}

impl Cap {
    /// The EDE text a SERVFAIL for this cap carries.
    pub fn reason(self) -> &'static str {
        match self {
            Cap::Total => "too many queries waiting for the upstream",
            Cap::Client => "too many of this client's queries waiting for the upstream",
            Cap::Zone => "too many queries for this zone waiting for the upstream",
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// What a response says, for response rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Answer,
    Nodata,
    Nxdomain,
    Error,
}

fn response_kind(wire: &[u8]) -> Option<Kind> {
    let header = wire.get(..12)?;
    let answers = u16::from_be_bytes([header[6], header[7]]);
    Some(match header[3] & 0x0F {
        0 if answers > 0 => Kind::Answer,
        0 => Kind::Nodata,
        3 => Kind::Nxdomain,
        _ => Kind::Error,
    })
}

/// Hash the question's name (lower case) from offset 12, less its first
/// `skip` labels; a name that does not parse hashes as what was read.
fn hash_name(h: &mut impl Hasher, wire: &[u8], skip: usize) {
    let mut pos = 12;
    let mut label = 0;
    while let Some(&len) = wire.get(pos) {
        let len = usize::from(len);
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        if label >= skip {
            for &b in wire.get(pos..pos + 1 + len).unwrap_or(&[]) {
                h.write_u8(b.to_ascii_lowercase());
            }
        }
        label += 1;
        pos += 1 + len;
    }
}

/// Hash the zone of a query name: the name less its first label, or the
/// name itself when it has two labels or fewer. (Names reach the handler
/// in lower case.)
fn hash_zone_of(h: &mut impl Hasher, name: &Name) {
    let skip = usize::from(name.num_labels() > 2);
    for label in name.iter().skip(skip) {
        h.write_u8(label.len() as u8);
        h.write(label);
    }
}

/// The end of the question (after type and class) in a message whose
/// header says it has one; `None` otherwise.
pub fn question_end(wire: &[u8]) -> Option<usize> {
    if wire.get(4..6)? != [0, 1] {
        return None;
    }
    let mut pos = 12;
    loop {
        let len = usize::from(*wire.get(pos)?);
        if len & 0xC0 != 0 {
            return None;
        }
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    (pos + 4 <= wire.len()).then_some(pos + 4)
}

/// Write to `out` the answer to a query over its client's rate: REFUSED,
/// or (`truncate`) an empty NOERROR with TC set, with the question when it
/// can be read. Returns the length.
pub fn write_limited(out: &mut [u8], query: &[u8], truncate: bool) -> usize {
    // The question when it fits (a name is at most 255 octets, so it does
    // in 512), else the header alone.
    let end = question_end(query)
        .filter(|&e| e <= out.len())
        .unwrap_or(12);
    out[..end].copy_from_slice(&query[..end]);
    // QR, the opcode and RD; RA; REFUSED or TC.
    out[2] = 0x80 | (query[2] & 0x79) | if truncate { 0x02 } else { 0 };
    out[3] = 0x80 | if truncate { 0 } else { 5 };
    let questions = u16::from(end > 12);
    out[4..6].copy_from_slice(&questions.to_be_bytes());
    out[6..12].fill(0);
    end
}

/// Cut a UDP response to its header and question with TC set (RRL's
/// slip); its length.
pub fn slip(wire: &mut [u8]) -> usize {
    let end = question_end(wire).unwrap_or(12);
    wire[2] |= 0x02;
    wire[6..12].fill(0);
    if end == 12 {
        wire[4..6].fill(0);
    }
    end
}

#[cfg(test)]
mod tests;
