//! Hit records: one per blocked (or allowed-by-exception) query, written
//! to SQLite and optionally streamed as JSON lines.
//!
//! The query path describes a hit with borrowed fields ([`HitRef`]) and
//! hands it to [`HitSender::send`], which copies the text into one
//! allocation ([`PackedHit`]) and never waits: the record goes into a
//! bounded channel, and when the channel is full it is dropped and
//! counted (`portcullis_hitlog_dropped_total`). One writer thread
//! ([`writer`]) binds each record straight from its packed form and
//! drains the channel in batches, one
//! SQLite transaction per batch, so a burst costs one commit, not one per
//! record. A record counts as written (`portcullis_hitlog_written_total`)
//! once its transaction has committed; in WAL mode with
//! `synchronous=NORMAL` that survives a crash of the process (not of the
//! machine: the last transactions before a power cut may be lost).
//!
//! [`store`] owns the schema, retention and the review queries that the
//! CLI and the admin API share; with `[hitlog] postgres`, [`forward`]
//! sends every record on to the fleet's store ([`postgres`]), and
//! [`reader`] has the CLI and the API read that instead.

pub mod forward;
mod jsonl;
pub mod postgres;
pub mod reader;
mod record;
pub mod store;
pub mod writer;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::{Deserialize, Serialize};

// The clock helpers lived here; callers elsewhere still name them so.
pub use crate::clock::{format_ts, now_ms, parse_time, parse_ts};
pub use record::{AsHitRef, HitRef, PackedHit};
pub use writer::{HitLog, spawn};

/// Where in the answer the listed name or address was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The query name itself.
    Qname,
    /// A CNAME or DNAME target in the answer.
    Cname,
    /// An A or AAAA address in the answer.
    AnswerIp,
    /// The client's own address (an RPZ client-IP trigger).
    ClientIp,
    /// The name of a name server of the zone that answered (an RPZ
    /// NSDNAME trigger).
    Nsdname,
    /// The address of a name server of the zone that answered (an RPZ
    /// NSIP trigger).
    Nsip,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Qname => "qname",
            Stage::Cname => "cname",
            Stage::AnswerIp => "answer_ip",
            Stage::ClientIp => "client_ip",
            Stage::Nsdname => "nsdname",
            Stage::Nsip => "nsip",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        [
            Stage::Qname,
            Stage::Cname,
            Stage::AnswerIp,
            Stage::ClientIp,
            Stage::Nsdname,
            Stage::Nsip,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The transport the query arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Dot,
    /// DNS over HTTPS (RFC 8484), HTTP/1.1 or HTTP/2.
    Doh,
    /// DNS over QUIC (RFC 9250).
    Doq,
    Other,
}

impl Transport {
    /// Every transport, in the metrics' index order.
    pub const ALL: [Transport; 6] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Dot,
        Transport::Doh,
        Transport::Doq,
        Transport::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Dot => "dot",
            Transport::Doh => "doh",
            Transport::Doq => "doq",
            Transport::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Transport {
        Transport::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .unwrap_or(Transport::Other)
    }

    /// Its index in [`Transport::ALL`].
    pub fn index(self) -> usize {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Dot => 2,
            Transport::Doh => 3,
            Transport::Doq => 4,
            Transport::Other => 5,
        }
    }

    /// Encrypted between client and resolver (responses are padded).
    pub fn encrypted(self) -> bool {
        matches!(self, Transport::Dot | Transport::Doh | Transport::Doq)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hit record (docs/architecture.md "Hit records").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The record's number in the store: the reference a security team
    /// looks up. Absent until the record is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Milliseconds since the Unix epoch (UTC); RFC 3339 in JSON.
    #[serde(with = "rfc3339_ms")]
    pub ts: i64,
    /// The client's organisation; `None` for clients in no organisation
    /// (served only with `allow_unknown_clients`).
    pub org: Option<String>,
    pub client: IpAddr,
    pub transport: Transport,
    /// The query name, normalised (lower case, no trailing dot).
    pub qname: String,
    pub qtype: String,
    pub stage: Stage,
    /// The listed name (or address) that matched.
    pub matched: String,
    pub feed: String,
    pub category: String,
    /// The feed's own id for the indicator (STIX id, RPZ detail), if any.
    pub indicator: Option<String>,
    /// The action taken: a block action, `log` (monitor mode) or `allow`
    /// (an allow entry let the query through).
    pub action: String,
    /// Queries the record stands for: 1, or more when the writer
    /// coalesced repeats or a flood of like hits into it (`qname` is then
    /// the first of them, `ts` its time and `last_ts` the last one's). A
    /// coalesced record that folded a single repeat has 1 and a `last_ts`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeats: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339_ms_opt"
    )]
    pub last_ts: Option<i64>,
    /// The resolver node that answered (`server.node_id`); absent in
    /// records written before nodes were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::format_ts(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        crate::clock::parse_ts(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }
}

mod rfc3339_ms_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => super::rfc3339_ms::serialize(ms, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => crate::clock::parse_ts(&text).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time"))
            }),
        }
    }
}

/// Counters shared by the senders, the writer and whoever reports on them.
/// Plain atomics so that tests and `/readyz` can read them; the Prometheus
/// series are fed from the same events.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records handed to the writer's channel.
    pub sent: AtomicU64,
    /// Records the writer has taken from the channel.
    pub taken: AtomicU64,
    /// Times the writer left idle priority to catch up with its backlog
    /// ([`writer::priority`]).
    pub catch_ups: AtomicU64,
    /// Records committed to the database.
    pub written: AtomicU64,
    /// Records dropped because the channel was full.
    pub dropped_full: AtomicU64,
    /// Records lost because the database could not take them.
    pub dropped_store: AtomicU64,
    /// Hits folded into another record by the coalescer (not written as
    /// records of their own; counted in that record's `repeats`).
    pub coalesced: AtomicU64,
    /// Old records deleted to keep the database under its size cap.
    pub evicted: AtomicU64,
    /// Failed database operations (open, write, retention).
    pub errors: AtomicU64,
}

impl Counters {
    pub fn dropped(&self) -> u64 {
        self.dropped_full.load(Ordering::Relaxed) + self.dropped_store.load(Ordering::Relaxed)
    }

    /// Records waiting in the channel for the writer.
    pub fn backlog(&self) -> u64 {
        let taken = self.taken.load(Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed).saturating_sub(taken)
    }
}

/// The query path's end of the channel. Cheap to clone.
#[derive(Clone)]
pub struct HitSender {
    /// Boxed: the channel allocates (and touches) every slot up front,
    /// so a slot of a whole record would hold several MB of a
    /// 65,536-record channel resident for good; a box is 8 bytes.
    tx: Option<SyncSender<Box<PackedHit>>>,
    counters: Arc<Counters>,
}

impl HitSender {
    /// A sender that records nothing (commands and tests without a log).
    pub fn disabled() -> HitSender {
        HitSender {
            tx: None,
            counters: Arc::default(),
        }
    }

    /// A sender and the receiving end of its channel of `capacity`
    /// records (the writer's; tests read it directly).
    pub fn channel(capacity: usize) -> (HitSender, Receiver<Box<PackedHit>>) {
        let (tx, rx) = sync_channel(capacity);
        let sender = HitSender {
            tx: Some(tx),
            counters: Arc::default(),
        };
        (sender, rx)
    }

    /// Queue a record; never waits. A full channel drops it and counts.
    pub fn send(&self, hit: HitRef<'_>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Box::new(PackedHit::pack(&hit))) {
            Ok(()) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::HITLOG_DROPPED, "reason" => "channel_full")
                    .increment(1);
            }
            // The writer has stopped (shutdown): nothing can record it.
            Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped_store.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::HITLOG_DROPPED, "reason" => "stopped")
                    .increment(1);
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_serialises_with_the_design_field_names() {
        let hit = Hit {
            id: None,
            ts: 0,
            org: Some("council-a".into()),
            client: "10.1.2.3".parse().unwrap(),
            transport: Transport::Udp,
            qname: "www.evil.example".into(),
            qtype: "A".into(),
            stage: Stage::AnswerIp,
            matched: "evil.example".into(),
            feed: "urlhaus.txt".into(),
            category: "malware".into(),
            indicator: None,
            action: "nxdomain".into(),
            repeats: 1,
            last_ts: None,
            node: None,
        };
        let json = serde_json::to_value(&hit).unwrap();
        assert_eq!(json["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["stage"], "answer_ip");
        assert_eq!(json["transport"], "udp");
        assert!(json.get("id").is_none());
        assert!(json.get("repeats").is_none(), "a single query says nothing");
        let back: Hit = serde_json::from_value(json).unwrap();
        assert_eq!(back, hit);
        let coalesced = Hit {
            repeats: 250,
            last_ts: Some(59_999),
            ..hit
        };
        let json = serde_json::to_value(&coalesced).unwrap();
        assert_eq!(json["repeats"], 250);
        assert_eq!(json["last_ts"], "1970-01-01T00:00:59.999Z");
        let back: Hit = serde_json::from_value(json).unwrap();
        assert_eq!(back, coalesced);
    }
}
