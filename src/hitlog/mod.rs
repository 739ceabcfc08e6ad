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
//! CLI and the admin API share.

mod jsonl;
pub mod store;
pub mod writer;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::{Deserialize, Serialize};

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
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Qname => "qname",
            Stage::Cname => "cname",
            Stage::AnswerIp => "answer_ip",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        [Stage::Qname, Stage::Cname, Stage::AnswerIp]
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
    Other,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Transport {
        match s {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            _ => Transport::Other,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hit record (DESIGN.md "Hit records").
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
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds, UTC (`2026-11-26T10:15:00.123Z`).
pub fn format_ts(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parse RFC 3339 (any offset) to milliseconds since the epoch.
pub fn parse_ts(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A point in time as an operator writes it: a duration back from `now`
/// (`24h`, `7d`, `90min`), an RFC 3339 time, a UTC date (`2026-11-01`),
/// or `now`.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    if let Some(ts) = parse_ts(text) {
        return Ok(ts);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        let t = date.midnight().assume_utc();
        return Ok(t.unix_timestamp() * 1000);
    }
    Err(format!(
        "{text:?} is not a time: use a duration back from now (24h, 7d), \
         an RFC 3339 time (2026-11-01T08:00:00Z) or a date (2026-11-01)"
    ))
}

mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_ts(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }
}

/// Counters shared by the senders, the writer and whoever reports on them.
/// Plain atomics so that tests and `/readyz` can read them; the Prometheus
/// series are fed from the same events.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records committed to the database.
    pub written: AtomicU64,
    /// Records dropped because the channel was full.
    pub dropped_full: AtomicU64,
    /// Records lost because the database could not take them.
    pub dropped_store: AtomicU64,
    /// Failed database operations (open, write, retention).
    pub errors: AtomicU64,
}

impl Counters {
    pub fn dropped(&self) -> u64 {
        self.dropped_full.load(Ordering::Relaxed) + self.dropped_store.load(Ordering::Relaxed)
    }
}

/// A hit record with every field borrowed: what the query path hands
/// over (nothing is copied unless the hit log is on), and what the store
/// writes, from a [`Hit`] or straight from a [`PackedHit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitRef<'a> {
    pub ts: i64,
    pub org: Option<&'a str>,
    pub client: IpAddr,
    pub transport: Transport,
    pub qname: &'a str,
    pub qtype: &'a str,
    pub stage: Stage,
    pub matched: &'a str,
    pub feed: &'a str,
    pub category: &'a str,
    pub indicator: Option<&'a str>,
    pub action: &'a str,
}

/// Anything that holds a hit record.
pub trait AsHitRef {
    fn as_hit_ref(&self) -> HitRef<'_>;
}

impl AsHitRef for Hit {
    fn as_hit_ref(&self) -> HitRef<'_> {
        HitRef {
            ts: self.ts,
            org: self.org.as_deref(),
            client: self.client,
            transport: self.transport,
            qname: &self.qname,
            qtype: &self.qtype,
            stage: self.stage,
            matched: &self.matched,
            feed: &self.feed,
            category: &self.category,
            indicator: self.indicator.as_deref(),
            action: &self.action,
        }
    }
}

impl<T: AsHitRef> AsHitRef for Box<T> {
    fn as_hit_ref(&self) -> HitRef<'_> {
        (**self).as_hit_ref()
    }
}

/// A hit on its way to the writer: the text fields one after another in
/// one string. Why: every allocation the query path makes is freed on the
/// writer thread, and glibc makes such a cross-thread free (and the next
/// allocation on the query path) several times dearer than a local one;
/// a [`Hit`] has up to eight strings, this has one. The writer binds the
/// fields straight from it: unpacking each record into a [`Hit`] first
/// was a fifth of the writer's time (allocations, and copies of strings
/// no longer in the cache by the time SQLite read them).
#[derive(Debug)]
pub struct PackedHit {
    ts: i64,
    client: IpAddr,
    transport: Transport,
    stage: Stage,
    has_org: bool,
    has_indicator: bool,
    /// Where each text field ends in `text`, in [`PackedHit::pack`]'s order.
    ends: [u32; 8],
    text: String,
}

impl PackedHit {
    pub fn pack(hit: &HitRef<'_>) -> PackedHit {
        let fields = [
            hit.org.unwrap_or(""),
            hit.qname,
            hit.qtype,
            hit.matched,
            hit.feed,
            hit.category,
            hit.indicator.unwrap_or(""),
            hit.action,
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; 8];
        for (end, field) in ends.iter_mut().zip(fields) {
            text.push_str(field);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        PackedHit {
            ts: hit.ts,
            client: hit.client,
            transport: hit.transport,
            stage: hit.stage,
            has_org: hit.org.is_some(),
            has_indicator: hit.indicator.is_some(),
            ends,
            text,
        }
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// The record as a [`Hit`] (for the JSON-lines stream).
    pub fn unpack(&self) -> Hit {
        let h = self.as_hit_ref();
        Hit {
            id: None,
            ts: h.ts,
            org: h.org.map(str::to_owned),
            client: h.client,
            transport: h.transport,
            qname: h.qname.to_owned(),
            qtype: h.qtype.to_owned(),
            stage: h.stage,
            matched: h.matched.to_owned(),
            feed: h.feed.to_owned(),
            category: h.category.to_owned(),
            indicator: h.indicator.map(str::to_owned),
            action: h.action.to_owned(),
        }
    }
}

impl AsHitRef for PackedHit {
    fn as_hit_ref(&self) -> HitRef<'_> {
        HitRef {
            ts: self.ts,
            org: self.has_org.then(|| self.field(0)),
            client: self.client,
            transport: self.transport,
            qname: self.field(1),
            qtype: self.field(2),
            stage: self.stage,
            matched: self.field(3),
            feed: self.field(4),
            category: self.field(5),
            indicator: self.has_indicator.then(|| self.field(6)),
            action: self.field(7),
        }
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
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::HITLOG_DROPPED, "reason" => "channel_full")
                    .increment(1);
            }
            // The writer has stopped (shutdown): nothing can record it.
            Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped_store.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::HITLOG_DROPPED, "reason" => "stopped")
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
    fn a_packed_hit_reads_and_unpacks_as_the_same_record() {
        let full = Hit {
            id: None,
            ts: 1_795_000_000_123,
            org: Some("council-a".into()),
            client: "2001:db8::1".parse().unwrap(),
            transport: Transport::Tcp,
            qname: "x.évil.example".into(),
            qtype: "AAAA".into(),
            stage: Stage::Cname,
            matched: "évil.example".into(),
            feed: "stix.json".into(),
            category: "c2".into(),
            indicator: Some("indicator--1234".into()),
            action: "sinkhole".into(),
        };
        // No organisation and no indicator are not the same as empty ones.
        let bare = Hit {
            org: None,
            indicator: None,
            feed: String::new(),
            ..full.clone()
        };
        let empty = Hit {
            org: Some(String::new()),
            indicator: Some(String::new()),
            ..bare.clone()
        };
        for hit in [full, bare, empty] {
            let packed = PackedHit::pack(&hit.as_hit_ref());
            assert_eq!(packed.as_hit_ref(), hit.as_hit_ref());
            assert_eq!(packed.unpack(), hit);
        }
    }

    #[test]
    fn timestamps_round_trip_with_milliseconds() {
        let ms = 1_795_000_000_123;
        let text = format_ts(ms);
        assert!(text.ends_with(".123Z"), "{text}");
        assert_eq!(parse_ts(&text), Some(ms));
        assert_eq!(
            parse_ts("2026-11-26T10:00:00+01:00"),
            parse_ts("2026-11-26T09:00:00Z")
        );
        assert_eq!(parse_ts("yesterday"), None);
    }

    #[test]
    fn times_parse_as_durations_dates_or_rfc3339() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_time("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1000));
        assert!(
            parse_time("last tuesday", now)
                .unwrap_err()
                .contains("not a time")
        );
    }

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
        };
        let json = serde_json::to_value(&hit).unwrap();
        assert_eq!(json["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["stage"], "answer_ip");
        assert_eq!(json["transport"], "udp");
        assert!(json.get("id").is_none());
        let back: Hit = serde_json::from_value(json).unwrap();
        assert_eq!(back, hit);
    }
}
