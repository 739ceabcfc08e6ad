//! The answer store: the last good answer to each question, packed,
//! served while fresh to every transport, and kept past its TTL for
//! serve-stale (RFC 8767, `resolver.serve_stale_secs`), when it is given
//! with TTL 30 and EDE 3 (Stale Answer) if the upstream cannot answer in
//! time.
//!
//! Why it answers fresh questions too: hickory's recursor keeps every
//! answer as a decoded message, twice when validating (its own cache and
//! the validator's), and the NODATA of its NS probe beside it, about
//! 8 KiB a new name in all. Answering from here lets hickory's caches
//! shrink to a working set of delegations and keys (`resolver.cache_size`),
//! as Unbound's small message and key caches do; a name then costs its
//! packed records here and its response in the UDP packet cache.
//!
//! When a question's answer has expired, the upstream is asked as usual;
//! if it has not answered within `resolver.stale_answer_after_ms`, or
//! fails, the client gets the stale answer while the resolution goes on
//! in the background and refreshes the store when it lands. While the
//! upstream is failing (its last resolution failed or was too slow, and
//! none has succeeded since) or the name itself failed in the last 30 s
//! (RFC 8767's failure recheck), stale answers go out at once and one
//! refresh per name runs behind them. With serve-stale off an answer
//! leaves the store when its TTL runs out.
//!
//! Only what could be answered again is kept: NOERROR and NXDOMAIN
//! answers that are not bogus, to clients that did not set CD (a CD
//! query always goes to the upstream). A fresh answer keeps the
//! validation state it was stored with, and its TTLs fall with its age;
//! a stale answer never carries AD: its signatures may have expired with
//! it. The store is bounded in bytes and evicts the least used entries
//! first (moka, which hickory's own cache uses). An answer is kept as its
//! records in wire form and decoded when it is served: as hickory's
//! structures a signed answer took about 1.3 KiB, three to four times its
//! wire size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use super::{Answer, Upstream, UpstreamError};
use crate::dnssec::Security;

/// TTL of a stale answer (RFC 8767 section 4 recommends 30 s).
pub const STALE_TTL: u32 = 30;

/// How long after a failure a name's stale answer goes out without
/// waiting for the upstream (RFC 8767's failure recheck timer).
const FAILURE_RECHECK: Duration = Duration::from_secs(30);

/// Bytes charged per entry beyond its packed records, for the size
/// bound: the key, the entry and moka's bookkeeping.
const ENTRY_BYTES: u32 = 160;

type Key = (LowerName, RecordType);

/// An answer's records in wire form (no name compression), answers
/// first.
struct Packed {
    rcode: ResponseCode,
    answers: u16,
    authorities: u16,
    wire: Box<[u8]>,
}

impl Packed {
    /// None when a record does not encode (it came from a decoded
    /// message, so it should) or there are too many to count.
    fn pack(answer: &Answer) -> Option<Packed> {
        let mut wire = Vec::with_capacity(256);
        let mut encoder = BinEncoder::new(&mut wire);
        for record in answer.answers.iter().chain(&answer.authorities) {
            record.emit(&mut encoder).ok()?;
        }
        Some(Packed {
            rcode: answer.rcode,
            answers: u16::try_from(answer.answers.len()).ok()?,
            authorities: u16::try_from(answer.authorities.len()).ok()?,
            wire: wire.into_boxed_slice(),
        })
    }

    fn unpack(&self) -> Option<(Vec<Record>, Vec<Record>)> {
        let mut decoder = BinDecoder::new(&self.wire);
        let mut read = |count: u16| -> Option<Vec<Record>> {
            (0..count)
                .map(|_| Record::read(&mut decoder).ok())
                .collect()
        };
        let answers = read(self.answers)?;
        let authorities = read(self.authorities)?;
        Some((answers, authorities))
    }
}

/// One kept answer.
pub struct Kept {
    packed: Packed,
    /// What validation said when it was stored; never bogus.
    security: Security,
    stored: Instant,
    fresh_until: Instant,
    /// ms since the store's epoch of the last failed refresh (0: none).
    failed_at: AtomicU64,
    /// A refresh is under way: one per name at a time.
    refreshing: AtomicBool,
}

impl Kept {
    fn expired(&self, now: Instant) -> bool {
        now >= self.fresh_until
    }

    /// The answer while it is fresh, with every TTL lowered by the time
    /// it has been kept; None if the kept copy does not decode, which
    /// would be a fault in [`Packed`].
    fn fresh_answer(&self, now: Instant) -> Option<Answer> {
        let held =
            u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX);
        self.answer(|ttl| ttl.saturating_sub(held), self.security.clone(), false)
    }

    /// The answer as served stale; an error only if the kept copy does
    /// not decode, which would be a fault in [`Packed`].
    pub fn stale_answer(&self) -> Result<Answer, UpstreamError> {
        self.answer(|_| STALE_TTL, Security::Indeterminate, true)
            .ok_or_else(|| {
                UpstreamError::Failed("the kept stale answer does not decode".to_string())
            })
    }

    /// The kept records decoded, each TTL passed through `ttl`.
    fn answer(&self, ttl: impl Fn(u32) -> u32, security: Security, stale: bool) -> Option<Answer> {
        let (mut answers, mut authorities) = self.packed.unpack()?;
        for record in answers.iter_mut().chain(&mut authorities) {
            record.ttl = ttl(record.ttl);
        }
        Some(Answer {
            rcode: self.packed.rcode,
            answers,
            authorities,
            security,
            stale,
        })
    }
}

/// Expiry of an entry: its TTL plus the window, measured from each write.
struct Window(Duration);

impl moka::Expiry<Key, Arc<Kept>> for Window {
    fn expire_after_create(&self, _: &Key, kept: &Arc<Kept>, now: Instant) -> Option<Duration> {
        Some(kept.fresh_until.saturating_duration_since(now) + self.0)
    }

    fn expire_after_update(
        &self,
        key: &Key,
        kept: &Arc<Kept>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, kept, now)
    }
}

/// The kept answers, and whether the upstream is failing: its last
/// resolution failed, or outlasted `answer_after`, and none has succeeded
/// since.
pub struct AnswerStore {
    cache: moka::sync::Cache<Key, Arc<Kept>>,
    /// How long a client waits for the upstream before a stale answer.
    answer_after: Duration,
    epoch: Instant,
    failing: AtomicBool,
}

/// What the store says about a question before it is asked upstream.
pub enum Plan {
    /// Nothing kept: ask the upstream, and keep what it says.
    Ask,
    /// Kept and still fresh: answer from the store.
    Fresh(Arc<Kept>),
    /// Expired: ask, but answer stale if the upstream is slow or fails.
    Race(Arc<Kept>),
    /// Expired and the upstream is failing: answer stale now.
    Now(Arc<Kept>),
}

impl AnswerStore {
    pub fn new(window: Duration, answer_after: Duration, max_bytes: u64) -> AnswerStore {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, kept: &Arc<Kept>| {
                let wire = u32::try_from(kept.packed.wire.len()).unwrap_or(u32::MAX);
                ENTRY_BYTES.saturating_add(wire)
            })
            .expire_after(Window(window))
            .build();
        AnswerStore {
            cache,
            answer_after,
            epoch: Instant::now(),
            failing: AtomicBool::new(false),
        }
    }

    pub fn answer_after(&self) -> Duration {
        self.answer_after
    }

    fn ms(&self, at: Instant) -> u64 {
        // +1 so that 0 means "never".
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// What to do for `name`/`rtype`.
    pub fn consult(&self, name: &LowerName, rtype: RecordType) -> Plan {
        let key = (name.clone(), rtype);
        let Some(kept) = self.cache.get(&key) else {
            return Plan::Ask;
        };
        let now = Instant::now();
        if !kept.expired(now) {
            return Plan::Fresh(kept);
        }
        let failing = self.failing.load(Ordering::Relaxed);
        let failed_at = kept.failed_at.load(Ordering::Relaxed);
        let failed_recently = failed_at != 0
            && self.ms(now).saturating_sub(failed_at) < FAILURE_RECHECK.as_millis() as u64;
        if failing || failed_recently {
            Plan::Now(kept)
        } else {
            Plan::Race(kept)
        }
    }

    /// Note a resolution's result: keep a good answer, mark a failure.
    pub fn remember(
        &self,
        name: &LowerName,
        rtype: RecordType,
        result: &Result<Answer, UpstreamError>,
        kept: Option<&Kept>,
    ) {
        let now = Instant::now();
        match result {
            Ok(answer) => {
                self.failing.store(false, Ordering::Relaxed);
                if let Some(ttl) = keepable(answer)
                    && let Some(packed) = Packed::pack(answer)
                {
                    let kept = Kept {
                        packed,
                        security: answer.security.clone(),
                        stored: now,
                        fresh_until: now + Duration::from_secs(u64::from(ttl)),
                        failed_at: AtomicU64::new(0),
                        refreshing: AtomicBool::new(false),
                    };
                    self.cache.insert((name.clone(), rtype), Arc::new(kept));
                }
            }
            Err(_) => {
                self.failing.store(true, Ordering::Relaxed);
                if let Some(kept) = kept {
                    kept.failed_at.store(self.ms(now), Ordering::Relaxed);
                }
            }
        }
    }

    /// Claim the name's one background refresh; false when one runs.
    pub fn start_refresh(kept: &Kept) -> bool {
        !kept.refreshing.swap(true, Ordering::AcqRel)
    }

    pub fn end_refresh(kept: &Kept) {
        kept.refreshing.store(false, Ordering::Release);
    }

    /// Entries kept (for tests and metrics; moka counts lazily).
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl Upstream {
    /// Resolve one question, answering stale (RFC 8767) where the upstream
    /// fails or is slow and an expired answer is kept. A client that set
    /// CD gets no stale data: it asked for what the upstream says now.
    pub async fn answer(
        self: &Arc<Self>,
        name: &LowerName,
        rtype: RecordType,
        checking_disabled: bool,
    ) -> Result<Answer, UpstreamError> {
        let Some(store) = self.store.as_ref().filter(|_| !checking_disabled) else {
            return self.resolve(name, rtype, checking_disabled).await;
        };
        match store.consult(name, rtype) {
            Plan::Fresh(kept) => match kept.fresh_answer(Instant::now()) {
                Some(answer) => {
                    self.store_hits.increment(1);
                    Ok(answer)
                }
                None => self.ask_and_remember(store, name, rtype).await,
            },
            Plan::Ask => self.ask_and_remember(store, name, rtype).await,
            Plan::Now(kept) => {
                self.refresh(name, rtype, &kept);
                kept.stale_answer()
            }
            Plan::Race(kept) => {
                if !AnswerStore::start_refresh(&kept) {
                    // Another query is already asking; it will refresh.
                    return kept.stale_answer();
                }
                let mut refresh = self.spawn_refresh(name, rtype, Arc::clone(&kept));
                tokio::select! {
                    done = &mut refresh => match done {
                        Ok(Ok(answer)) => Ok(answer),
                        // Failed or panicked: the stale answer stands in.
                        _ => kept.stale_answer(),
                    },
                    () = tokio::time::sleep(store.answer_after()) => {
                        // Too slow counts as failing until it answers:
                        // other expired names need not wait too.
                        store.failing.store(true, Ordering::Relaxed);
                        kept.stale_answer()
                    }
                }
            }
        }
    }

    async fn ask_and_remember(
        &self,
        store: &AnswerStore,
        name: &LowerName,
        rtype: RecordType,
    ) -> Result<Answer, UpstreamError> {
        let result = self.resolve(name, rtype, false).await;
        store.remember(name, rtype, &result, None);
        result
    }

    /// Ask again in the background, unless a refresh already runs.
    fn refresh(self: &Arc<Self>, name: &LowerName, rtype: RecordType, kept: &Arc<Kept>) {
        if AnswerStore::start_refresh(kept) {
            drop(self.spawn_refresh(name, rtype, Arc::clone(kept)));
        }
    }

    /// A resolution that outlives the query that started it and keeps
    /// its result; the caller holds the name's refresh claim.
    fn spawn_refresh(
        self: &Arc<Self>,
        name: &LowerName,
        rtype: RecordType,
        kept: Arc<Kept>,
    ) -> tokio::task::JoinHandle<Result<Answer, UpstreamError>> {
        let upstream = Arc::clone(self);
        let name = name.clone();
        tokio::spawn(async move {
            let result = upstream.resolve(&name, rtype, false).await;
            if let Some(store) = &upstream.store {
                store.remember(&name, rtype, &result, Some(&kept));
            }
            AnswerStore::end_refresh(&kept);
            result
        })
    }
}

/// The TTL an answer is fresh for, when it is worth keeping.
fn keepable(answer: &Answer) -> Option<u32> {
    if answer.stale
        || matches!(answer.security, Security::Bogus(_))
        || !matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain)
    {
        return None;
    }
    answer
        .answers
        .iter()
        .chain(&answer.authorities)
        .map(|r: &Record| r.ttl)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RData, rdata::A};

    fn answer(ttl: u32) -> Answer {
        let name = Name::from_ascii("www.example.test.").unwrap();
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                name,
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            )],
            authorities: vec![],
            security: Security::Secure,
            stale: false,
        }
    }

    fn name() -> LowerName {
        LowerName::from(Name::from_ascii("www.example.test.").unwrap())
    }

    #[test]
    fn an_expired_answer_is_served_stale_without_ad_and_with_ttl_30() {
        let store = AnswerStore::new(Duration::from_secs(60), Duration::from_millis(10), 1 << 20);
        assert!(matches!(store.consult(&name(), RecordType::A), Plan::Ask));
        store.remember(&name(), RecordType::A, &Ok(answer(0)), None);
        let Plan::Race(kept) = store.consult(&name(), RecordType::A) else {
            panic!("an expired answer is raced against the upstream");
        };
        let stale = kept.stale_answer().unwrap();
        assert!(stale.stale);
        assert_eq!(stale.security, Security::Indeterminate);
        assert_eq!(stale.answers[0].ttl, STALE_TTL);
        // Another type of the same name is not kept.
        assert!(matches!(
            store.consult(&name(), RecordType::AAAA),
            Plan::Ask
        ));
    }

    #[test]
    fn a_kept_negative_answer_comes_back_whole_with_its_authority() {
        use hickory_proto::rr::rdata::SOA;
        let zone = Name::from_ascii("example.test.").unwrap();
        let soa = SOA::new(
            Name::from_ascii("ns.example.test.").unwrap(),
            Name::from_ascii("hostmaster.example.test.").unwrap(),
            7,
            3600,
            600,
            86400,
            300,
        );
        let negative = Answer {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![Record::from_rdata(zone, 0, RData::SOA(soa))],
            security: Security::Insecure,
            stale: false,
        };
        let store = AnswerStore::new(Duration::from_secs(60), Duration::from_millis(10), 1 << 20);
        store.remember(&name(), RecordType::A, &Ok(negative.clone()), None);
        let Plan::Race(kept) = store.consult(&name(), RecordType::A) else {
            panic!("an expired negative answer is raced against the upstream");
        };
        let stale = kept.stale_answer().unwrap();
        assert_eq!(stale.rcode, ResponseCode::NXDomain);
        assert!(stale.answers.is_empty());
        assert_eq!(stale.authorities.len(), 1);
        assert_eq!(stale.authorities[0].data, negative.authorities[0].data);
        assert_eq!(stale.authorities[0].name, negative.authorities[0].name);
        assert_eq!(stale.authorities[0].ttl, STALE_TTL);
    }

    #[test]
    fn a_fresh_answer_is_not_stored_again_and_a_failure_answers_now() {
        let store = AnswerStore::new(Duration::from_secs(60), Duration::from_millis(10), 1 << 20);
        store.remember(&name(), RecordType::A, &Ok(answer(300)), None);
        assert!(matches!(
            store.consult(&name(), RecordType::A),
            Plan::Fresh(_)
        ));
        store.remember(&name(), RecordType::A, &Ok(answer(0)), None);
        store.remember(&name(), RecordType::MX, &Err(UpstreamError::Timeout), None);
        // The upstream's last resolution failed: no waiting.
        assert!(matches!(
            store.consult(&name(), RecordType::A),
            Plan::Now(_)
        ));
        // It answers again: back to racing.
        store.remember(&name(), RecordType::MX, &Ok(answer(300)), None);
        assert!(matches!(
            store.consult(&name(), RecordType::A),
            Plan::Race(_)
        ));
    }

    #[test]
    fn a_fresh_answer_comes_back_with_its_security_and_ttls_lowered_by_its_age() {
        let store = AnswerStore::new(Duration::ZERO, Duration::from_millis(10), 1 << 20);
        let mut insecure = answer(300);
        insecure.security = Security::Insecure;
        store.remember(&name(), RecordType::A, &Ok(answer(300)), None);
        store.remember(&name(), RecordType::AAAA, &Ok(insecure), None);
        let Plan::Fresh(kept) = store.consult(&name(), RecordType::A) else {
            panic!("a fresh answer is served from the store");
        };
        let later = kept.stored + Duration::from_millis(2_500);
        let fresh = kept.fresh_answer(later).unwrap();
        assert!(!fresh.stale);
        assert_eq!(fresh.security, Security::Secure);
        assert_eq!(fresh.answers[0].ttl, 298);
        assert_eq!(fresh.answers[0].data, answer(300).answers[0].data);
        let Plan::Fresh(kept) = store.consult(&name(), RecordType::AAAA) else {
            panic!("a fresh insecure answer is served from the store");
        };
        assert_eq!(
            kept.fresh_answer(later).unwrap().security,
            Security::Insecure
        );
        // Serve-stale off (window 0): an expired answer is gone, not raced.
        store.remember(&name(), RecordType::MX, &Ok(answer(0)), None);
        assert!(matches!(store.consult(&name(), RecordType::MX), Plan::Ask));
    }

    #[test]
    fn bogus_servfail_and_stale_answers_are_not_kept() {
        let store = AnswerStore::new(Duration::from_secs(60), Duration::from_millis(10), 1 << 20);
        let mut bogus = answer(300);
        bogus.security = Security::Bogus(crate::dnssec::Bogus {
            zone: Name::root(),
            ede: 6,
            reason: "test",
        });
        let mut servfail = answer(300);
        servfail.rcode = ResponseCode::ServFail;
        let mut stale = answer(300);
        stale.stale = true;
        for (i, a) in [bogus, servfail, stale].into_iter().enumerate() {
            store.remember(&name(), RecordType::A, &Ok(a), None);
            assert_eq!(store.len(), 0, "case {i}");
        }
    }

    #[test]
    fn the_store_stays_within_its_byte_bound() {
        let store = AnswerStore::new(
            Duration::from_secs(60),
            Duration::from_millis(10),
            64 * 1024,
        );
        for i in 0..10_000 {
            let name = LowerName::from(Name::from_ascii(format!("n{i}.example.test.")).unwrap());
            store.remember(&name, RecordType::A, &Ok(answer(300)), None);
        }
        let wire = Packed::pack(&answer(300)).unwrap().wire.len() as u64;
        let bound = 64 * 1024 / (u64::from(ENTRY_BYTES) + wire);
        assert!(store.len() <= bound + 1, "{} > {bound}", store.len());
        assert!(store.len() > 0);
    }
}
