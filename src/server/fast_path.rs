//! The UDP fast path: a query answered straight from its bytes, without
//! decoding the message: from the packet cache, or with a block response
//! written in place. The full path ([`super::handler`]) answers anything
//! else; the tests (`fast_path/tests.rs`) hold the two to the same
//! response and hit record.

use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::Handler;
use super::client_policy::ClientPolicy;
use super::decide::{Evidence, Judgement, QueryContext, plain};
use super::listed_memo::Key;
use super::packet_cache::{PacketCache, Question};
use super::query_metrics::QueryOutcome;
use super::response::{WireBlock, write_block, write_blocked_ede, write_minimal_any};
use crate::hitlog::{Stage, Transport};
use crate::orgs::OrgId;
use crate::policy::Action;

thread_local! {
    /// The block answer's EDE payload, written again for each block: one
    /// buffer per worker thread instead of an allocation per answer.
    static EDE_PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The query name and its last `depth` labels as [`plain`] spells them,
/// straight from the wire; `None` when a label needs escaping (anything
/// but letters, digits, `_`, and `-` after a label's first byte), which
/// only hickory's `Name` spells.
fn plain_from_wire(question: &Question, packet: &[u8], depth: u8) -> Option<(String, String)> {
    let mut text = String::with_capacity(question.name().len());
    let skip = usize::from(question.label_count().saturating_sub(depth));
    let mut listed_at = 0;
    for (i, label) in question.labels(packet).enumerate() {
        if i > 0 {
            text.push('.');
        }
        if i == skip {
            listed_at = text.len();
        }
        for (j, &b) in label.iter().enumerate() {
            if !(b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && j > 0)) {
                return None;
            }
            text.push(char::from(b.to_ascii_lowercase()));
        }
    }
    let matched = text[listed_at..].to_owned();
    Some((text, matched))
}

impl Handler {
    /// The answer to a UDP query written to `out` straight from its bytes,
    /// when one can be: from the packet `cache`, or a block response. The
    /// query is read once ([`Question`]) and the client's organisation
    /// looked up once for both. Returns the length (0 for `drop`: send
    /// nothing), or `None` for the full path: an unusual query, a client
    /// to be refused, shutting down, or neither path applies.
    pub fn answer_from_bytes(
        &self,
        cache: Option<&PacketCache>,
        packet: &[u8],
        src: SocketAddr,
        out: &mut [u8],
    ) -> Option<usize> {
        let question = Question::parse(packet)?;
        let policy = self.policy.load();
        let org = policy.orgs.lookup(src.ip());
        if org.is_none() && !policy.allow_unknown_clients {
            return None;
        }
        // A client-IP trigger decides every query of this client, cached
        // or not: the full path applies it.
        if self
            .blocklist
            .load()
            .lookup_client(src.ip().to_canonical())
            .is_some()
        {
            return None;
        }
        if let Some(cache) = cache
            && let Some(len) = self.answer_cached(cache, &question, packet, out)
        {
            return Some(len);
        }
        if question.qtype() == u16::from(RecordType::ANY) && !question.dnssec_ok() {
            return self.answer_any(&question, packet, out);
        }
        self.answer_blocked(&policy, &question, org, packet, src, out)
    }

    /// The minimal answer to ANY (RFC 8482), written from the bytes so that
    /// its owner name is compressed (hickory's response builder writes it
    /// out in full). Only for a name no entry lists: a listed one takes the
    /// full path, which blocks or records it.
    fn answer_any(&self, question: &Question, packet: &[u8], out: &mut [u8]) -> Option<usize> {
        if DNSClass::from(question.qclass()) != DNSClass::IN
            || self
                .blocklist
                .load()
                .lookup(question.labels(packet).rev())
                .is_some()
        {
            return None;
        }
        let _in_flight = self.health.lifecycle.enter()?;
        let started = Instant::now();
        let len = write_minimal_any(out, packet, question)?;
        self.metrics
            .record(Transport::Udp, QueryOutcome::Answered, started);
        Some(len)
    }

    /// The block response, when the query name is listed and blocks for
    /// this client with a plain action (nxdomain, nodata, refused,
    /// sinkhole, drop): the hit is counted and recorded as on the full
    /// path. `None` for a name not listed, an exception, monitor mode, a
    /// non-IN class or a zone transfer. Nothing is counted or recorded
    /// before it is sure to answer.
    fn answer_blocked(
        &self,
        policy: &ClientPolicy,
        question: &Question,
        org: Option<OrgId>,
        packet: &[u8],
        src: SocketAddr,
        out: &mut [u8],
    ) -> Option<usize> {
        let qtype = RecordType::from(question.qtype());
        if DNSClass::from(question.qclass()) != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return None;
        }
        let started = Instant::now();
        let list = self.blocklist.load();
        let generation = list.generation();
        let key = Key::of(&packet[question.name()]);
        let found = match self.listed_memo.get(&key, generation) {
            Some(found) => found,
            None => {
                let found = list.lookup(question.labels(packet).rev())?;
                self.listed_memo.put(&key, generation, found);
                found
            }
        };
        let _in_flight = self.health.lifecycle.enter()?;
        // The hit log's spellings of the query and listed names; the
        // response itself is written from the bytes, so the entry's name
        // is not needed as a `Name`.
        let (name, matched) = match plain_from_wire(question, packet, found.depth) {
            Some(names) => names,
            None => {
                let qname = Name::read(&mut BinDecoder::new(&packet[12..])).ok()?;
                let listed = qname.trim_to(usize::from(found.depth));
                (plain(&qname), plain(&listed))
            }
        };
        // The entry's parts are read in place, under the guard: nothing of
        // it is copied for a query that blocks here.
        let meta = list.meta(&found);
        let evidence = Evidence::of(&list, &found);
        let judged = Handler::judge_entry(
            policy,
            org,
            &name,
            meta.verdict,
            evidence.category,
            meta.action,
        );
        let action = match judged {
            Judgement::Blocks(Action::Log) | Judgement::Excepted(_) => return None,
            Judgement::Blocks(action) => action,
        };
        let len = match action {
            Action::Drop => 0,
            _ => EDE_PAYLOAD.with_borrow_mut(|ede| {
                write_blocked_ede(
                    ede,
                    evidence.category,
                    policy.block.ede_names_feed.then_some(evidence.feed),
                    &policy.block,
                );
                let block = WireBlock {
                    action,
                    depth: found.depth,
                    local: list.answer(&found),
                    generation,
                    ede,
                };
                write_block(out, packet, question, &block, &policy.block)
            })?,
        };
        let cx = QueryContext {
            client: src.ip().to_canonical(),
            transport: Transport::Udp,
            org,
            qtype,
        };
        self.count_block(cx, Stage::Qname, &name, evidence, action, &matched);
        self.metrics
            .record(Transport::Udp, QueryOutcome::Blocked, started);
        Some(len)
    }

    /// The packet cache's answer: its length, or `None` on a miss (or
    /// when shutting down).
    fn answer_cached(
        &self,
        cache: &PacketCache,
        question: &Question,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let _in_flight = self.health.lifecycle.enter()?;
        let started = Instant::now();
        let generation = self.blocklist.load().generation();
        let Some(len) = cache.answer(question, packet, generation, started, out) else {
            self.metrics.packet_cache(false);
            return None;
        };
        self.metrics.packet_cache(true);
        self.metrics
            .record(Transport::Udp, QueryOutcome::Clean, started);
        Some(len)
    }
}

#[cfg(test)]
mod tests;
