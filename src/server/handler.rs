//! The hickory `RequestHandler`: one query from packet to answer.
//!
//! 1. sanity: one question, a QUERY opcode, class IN, EDNS version 0;
//! 2. organisation by client address; unknown clients are refused unless
//!    the config allows them;
//! 3. the blocklist walk on the question name (a `load()` guard, dropped
//!    before any `.await`);
//! 4. the organisation's own exceptions (allow list, action overrides);
//! 5. a block response and a hit record, or the upstream's answer.
//!
//! Nothing here takes a lock or blocks: the blocklist is behind an
//! `ArcSwap`, the org map is immutable, and hit records go into a bounded
//! channel that drops (and counts) rather than waits. A failure to resolve
//! becomes SERVFAIL, never an error out of the handler.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::inspect;
use super::packet_cache::{MAX_UDP_PAYLOAD, PacketCache, Question};
use super::response::{BlockSettings, block_answer, blocked_ede, write_block};
use crate::blocklist::{Blocklist, BlocklistHandle, Match};
use crate::feeds::Verdict;
use crate::hitlog::{HitRef, HitSender, Stage, Transport, now_ms};
use crate::metrics;
use crate::orgs::{OrgId, OrgMap};
use crate::policy::Action;
use crate::resolve::Upstream;

/// Everything a query needs, shared by all tasks.
pub struct Handler {
    pub blocklist: BlocklistHandle,
    pub orgs: Arc<OrgMap>,
    pub upstream: Arc<Upstream>,
    pub block: BlockSettings,
    pub allow_unknown_clients: bool,
    pub hits: HitSender,
    /// Record queries an allow entry let through.
    pub log_allowed: bool,
    pub metrics: QueryMetrics,
    pub health: Arc<crate::health::Health>,
}

/// What the blocklist matched, copied out of the guard.
struct Listed {
    verdict: Verdict,
    action: Action,
    /// The listed name; for an address entry, the name that resolved into
    /// the listed network (it owns the block answer's SOA).
    listed: Name,
    /// The listed network, for an address entry.
    address: Option<IpNet>,
    /// The feed's own answer addresses (empty for most entries).
    local: Vec<std::net::IpAddr>,
    generation: u64,
    feed: String,
    category: String,
    indicator: Option<String>,
    ede: EdnsOption,
}

/// How a query ended, for `portcullis_queries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered from upstream (any rcode but SERVFAIL).
    Answered,
    /// Answered from upstream, and no blocklist entry matched anything in
    /// it: the response may go in the packet cache. Counted as answered.
    Clean,
    /// A block response, or none for `drop`.
    Blocked,
    /// The client is in no organisation.
    Refused,
    /// The upstream failed.
    Servfail,
    /// Not a query we serve: bad opcode, class, EDNS version, form.
    Rejected,
}

const OUTCOMES: [&str; 5] = ["answered", "blocked", "refused", "servfail", "rejected"];

impl Outcome {
    /// Its index in [`OUTCOMES`].
    fn label(self) -> usize {
        match self {
            Outcome::Answered | Outcome::Clean => 0,
            Outcome::Blocked => 1,
            Outcome::Refused => 2,
            Outcome::Servfail => 3,
            Outcome::Rejected => 4,
        }
    }
}

/// What the query name's own check decided before resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryName {
    /// No entry matched it.
    Unlisted,
    /// A monitor-mode entry matched it: answered as if unlisted, recorded.
    Monitored,
    /// An exception matched it: its whole answer passes uninspected.
    Excepted,
}
/// Counter handles made once, so the query path is an atomic add.
pub struct QueryMetrics {
    /// [transport][outcome]; transport 0 = udp, 1 = tcp, 2 = other.
    queries: [[::metrics::Counter; 5]; 3],
    duration: ::metrics::Histogram,
    refused_clients: ::metrics::Counter,
    upstream_errors: ::metrics::Counter,
    /// Packet cache lookups: [hit, miss].
    packet_cache: [::metrics::Counter; 2],
}

impl QueryMetrics {
    /// Take the handles from the installed recorder (no-ops without one).
    pub fn new() -> QueryMetrics {
        let per = |t: &'static str| {
            OUTCOMES
                .map(|o| ::metrics::counter!(metrics::QUERIES, "transport" => t, "outcome" => o))
        };
        QueryMetrics {
            queries: [per("udp"), per("tcp"), per("other")],
            duration: ::metrics::histogram!(metrics::QUERY_DURATION),
            refused_clients: ::metrics::counter!(metrics::REFUSED_CLIENTS),
            upstream_errors: ::metrics::counter!(metrics::UPSTREAM_ERRORS),
            packet_cache: ["hit", "miss"]
                .map(|r| ::metrics::counter!(metrics::PACKET_CACHE, "result" => r)),
        }
    }

    fn counter(&self, transport: Transport, outcome: Outcome) -> &::metrics::Counter {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Other => 2,
        };
        &self.queries[t][outcome.label()]
    }

    fn record(&self, transport: Transport, outcome: Outcome, started: Instant) {
        self.counter(transport, outcome).increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }

    /// A UDP datagram that is not a query we can decode.
    pub(super) fn rejected_udp(&self) {
        self.counter(Transport::Udp, Outcome::Rejected).increment(1);
    }
}

impl Default for QueryMetrics {
    fn default() -> Self {
        QueryMetrics::new()
    }
}

fn transport(protocol: Protocol) -> Transport {
    match protocol {
        Protocol::Udp => Transport::Udp,
        Protocol::Tcp => Transport::Tcp,
        _ => Transport::Other,
    }
}

/// Who asked, for the hit record.
#[derive(Debug, Clone, Copy)]
struct Client {
    ip: IpAddr,
    transport: Transport,
}

fn client(request: &Request) -> Client {
    Client {
        ip: request.src().ip().to_canonical(),
        transport: transport(request.protocol()),
    }
}

/// An organisation's view of a listed entry.
enum Judgement<'a> {
    /// An exception lets it through: the global allow list, or this
    /// organisation's own entry (given).
    Excepted(Option<&'a str>),
    Blocks(Action),
}

/// The hit record's `matched`: the listed name, or for an address entry
/// the address (a single one as itself, a range in CIDR form).
fn matched_text(listed: &Listed) -> String {
    match listed.address {
        Some(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_string(),
        Some(net) => net.to_string(),
        None => plain(&listed.listed),
    }
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

/// A name as the hit log stores it: lower case, no trailing dot.
fn plain(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

impl Handler {
    fn check(&self, qname: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let found = inspect::lookup_name(&list, qname)?;
        Some(self.listed(&list, &found, qname.trim_to(usize::from(found.depth)), None))
    }

    /// What the blocklist says about a match, copied out of the guard.
    fn listed(
        &self,
        list: &Blocklist,
        found: &Match,
        listed: Name,
        address: Option<IpNet>,
    ) -> Listed {
        let meta = list.meta(found);
        let feed = list.feed(found).name.as_str();
        let category = list.category(found);
        Listed {
            verdict: meta.verdict,
            action: meta.action,
            listed,
            address,
            local: list.answer(found).to_vec(),
            generation: list.generation(),
            ede: blocked_ede(category, self.block.ede_names_feed.then_some(feed)),
            feed: feed.to_owned(),
            category: category.to_owned(),
            indicator: list.detail(found).map(str::to_owned),
        }
    }

    /// The answer-IP policy's entry for an address in the answer, owned by
    /// `owner`.
    fn check_address(&self, ip: IpAddr, owner: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let (found, net) = list.lookup_address(ip)?;
        Some(self.listed(&list, &found, owner.clone(), Some(net)))
    }

    /// Hand a hit record to the writer (never waits).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        org: Option<OrgId>,
        client: Client,
        qname: &str,
        qtype: RecordType,
        stage: Stage,
        listed: &Listed,
        matched: &str,
        action: &str,
    ) {
        if !self.hits.is_enabled() {
            return;
        }
        self.hits.send(HitRef {
            ts: now_ms(),
            org: org.map(|o| self.orgs.id(o)),
            client: client.ip,
            transport: client.transport,
            qname,
            qtype: qtype.into(),
            stage,
            matched,
            feed: &listed.feed,
            category: &listed.category,
            indicator: listed.indicator.as_deref(),
            action,
        });
    }

    /// What this client's organisation makes of a listed entry found at
    /// `checked` (no side effects).
    fn judge(&self, org: Option<OrgId>, checked: &str, listed: &Listed) -> Judgement<'_> {
        let policy = org.map(|o| self.orgs.policy(o));
        let org_allow = policy.and_then(|p| p.allowed(checked));
        if listed.verdict == Verdict::Allow || org_allow.is_some() {
            return Judgement::Excepted(org_allow);
        }
        Judgement::Blocks(
            policy
                .and_then(|p| p.action(&listed.category))
                .unwrap_or(listed.action),
        )
    }

    /// Count a block and record its hit.
    #[allow(clippy::too_many_arguments)]
    fn count_block(
        &self,
        org: Option<OrgId>,
        client: Client,
        stage: Stage,
        qname: &str,
        qtype: RecordType,
        listed: &Listed,
        action: Action,
        matched: &str,
    ) {
        ::metrics::counter!(metrics::BLOCKS, "category" => listed.category.clone(), "action" => action.as_str())
            .increment(1);
        self.record(
            org,
            client,
            qname,
            qtype,
            stage,
            listed,
            matched,
            action.as_str(),
        );
    }

    /// What this client's organisation does with a listed name found at
    /// `stage` (the query name, or a CNAME target `checked`): `None` when
    /// an exception lets it through, else the action. Records the hit.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        org: Option<OrgId>,
        client: Client,
        stage: Stage,
        qname: &str,
        checked: &str,
        qtype: RecordType,
        listed: &Listed,
    ) -> Option<Action> {
        match self.judge(org, checked, listed) {
            Judgement::Excepted(org_allow) => {
                // An exception let it through; with log_allowed, say so.
                if self.log_allowed {
                    let matched = org_allow.map_or_else(|| matched_text(listed), str::to_owned);
                    self.record(org, client, qname, qtype, stage, listed, &matched, "allow");
                }
                None
            }
            Judgement::Blocks(action) => {
                let matched = matched_text(listed);
                self.count_block(org, client, stage, qname, qtype, listed, action, &matched);
                Some(action)
            }
        }
    }

    /// The first name in an answer that this client must not reach, in
    /// RPZ's order: each CNAME target along the chain from the query name
    /// (stage `cname`), then each A/AAAA address (stage `answer_ip`; no
    /// cost while no address is listed). Returns the chain's records up to
    /// the name that blocks, that name, and the action: the response is
    /// that name's block response after them. Monitor-mode hits are
    /// recorded on the way and the inspection goes on.
    /// `touched` is set when any entry matched, blocking or not.
    fn inspect_answer(
        &self,
        org: Option<OrgId>,
        request: &Request,
        qname: &Name,
        qtype: RecordType,
        answers: &[Record],
        touched: &mut bool,
    ) -> Option<(Vec<Record>, Name, Listed, Action)> {
        let blocks = |stage, name: &Name, listed: &Listed| {
            let (query, checked) = (plain(qname), plain(name));
            match self.decide(org, client(request), stage, &query, &checked, qtype, listed) {
                Some(Action::Log) | None => None,
                action => action,
            }
        };
        for (_, target) in inspect::cname_chain(qname, answers) {
            let Some(listed) = self.check(target) else {
                continue;
            };
            *touched = true;
            if let Some(action) = blocks(Stage::Cname, target, &listed) {
                let chain = inspect::chain_to(qname, answers, target);
                return Some((chain, target.clone(), listed, action));
            }
        }
        if self.blocklist.load().addresses() == 0 {
            return None;
        }
        for (ip, owner) in inspect::addresses(answers) {
            let Some(listed) = self.check_address(ip, owner) else {
                continue;
            };
            *touched = true;
            if let Some(action) = blocks(Stage::AnswerIp, owner, &listed) {
                let chain = inspect::chain_to(qname, answers, owner);
                return Some((chain, owner.clone(), listed, action));
            }
        }
        None
    }
}

fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut edns = Edns::new();
        edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        edns.set_version(0);
        edns
    })
}

async fn send<R: ResponseHandler>(
    request: &Request,
    mut handle: R,
    mut metadata: Metadata,
    edns: Option<&Edns>,
    answers: &[Record],
    authorities: &[Record],
) -> ResponseInfo {
    metadata.recursion_available = true;
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    let response = builder.build(
        metadata,
        answers.iter(),
        authorities.iter(),
        std::iter::empty(),
        std::iter::empty(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, client = %request.src(), "failed to send response");
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

async fn send_code<R: ResponseHandler>(
    request: &Request,
    handle: R,
    rcode: ResponseCode,
    edns: Option<&Edns>,
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = rcode;
    let mut high;
    let edns = match edns {
        Some(e) if rcode.high() != 0 => {
            high = e.clone();
            high.set_rcode_high(rcode.high());
            Some(&high)
        }
        other => other,
    };
    send(request, handle, metadata, edns, &[], &[]).await
}

/// A query we do not serve, answered with `code`.
async fn reject<R: ResponseHandler>(
    request: &Request,
    handle: R,
    code: ResponseCode,
) -> (ResponseInfo, Outcome) {
    let edns = response_edns(request);
    let info = send_code(request, handle, code, edns.as_ref()).await;
    (info, Outcome::Rejected)
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        self.serve(request, handle).await.0
    }
}

/// Hickory's TCP listener takes its handler by value; this shares ours
/// with the UDP loops.
pub struct Shared(pub Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        self.0.serve(request, handle).await.0
    }
}

impl Handler {
    /// Answer one decoded query, counted in the metrics.
    async fn serve<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> (ResponseInfo, Outcome) {
        let started = Instant::now();
        // Shutting down: new queries are refused so clients move on; the
        // ones in flight finish (see lifecycle).
        let Some(_in_flight) = self.health.lifecycle.enter() else {
            let (info, outcome) = reject(request, handle, ResponseCode::Refused).await;
            self.metrics
                .record(transport(request.protocol()), outcome, started);
            return (info, outcome);
        };
        let (info, outcome) = self.answer(request, handle).await;
        self.metrics
            .record(transport(request.protocol()), outcome, started);
        (info, outcome)
    }

    /// Answer a UDP query; true when the response may go in the packet
    /// cache (see [`Outcome::Clean`]).
    pub async fn handle_udp<R: ResponseHandler>(&self, request: &Request, handle: R) -> bool {
        self.serve(request, handle).await.1 == Outcome::Clean
    }

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
        let org = self.orgs.lookup(src.ip());
        if org.is_none() && !self.allow_unknown_clients {
            return None;
        }
        if let Some(cache) = cache
            && let Some(len) = self.answer_cached(cache, &question, packet, out)
        {
            return Some(len);
        }
        self.answer_blocked(&question, org, packet, src, out)
    }

    /// The block response, when the query name is listed and blocks for
    /// this client with a plain action (nxdomain, nodata, refused,
    /// sinkhole, drop): the hit is counted and recorded as on the full
    /// path. `None` for a name not listed, an exception, monitor mode, a
    /// non-IN class or a zone transfer. Nothing is counted or recorded
    /// before it is sure to answer.
    fn answer_blocked(
        &self,
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
        let found = list.lookup(question.labels(packet).rev())?;
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
        let listed = self.listed(&list, &found, Name::root(), None);
        drop(list);
        let action = match self.judge(org, &name, &listed) {
            Judgement::Blocks(Action::Log) | Judgement::Excepted(_) => return None,
            Judgement::Blocks(action) => action,
        };
        let len = match action {
            Action::Drop => 0,
            _ => {
                let ede = match &listed.ede {
                    EdnsOption::Unknown(_, payload) => payload.as_slice(),
                    _ => &[],
                };
                write_block(
                    out,
                    packet,
                    question,
                    action,
                    found.depth,
                    &listed.local,
                    &self.block,
                    listed.generation,
                    ede,
                )?
            }
        };
        let client = Client {
            ip: src.ip().to_canonical(),
            transport: Transport::Udp,
        };
        self.count_block(
            org,
            client,
            Stage::Qname,
            &name,
            qtype,
            &listed,
            action,
            &matched,
        );
        self.metrics
            .record(Transport::Udp, Outcome::Blocked, started);
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
            self.metrics.packet_cache[1].increment(1);
            return None;
        };
        self.metrics.packet_cache[0].increment(1);
        self.metrics.record(Transport::Udp, Outcome::Clean, started);
        Some(len)
    }

    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> (ResponseInfo, Outcome) {
        let mut edns = response_edns(request);
        if request.metadata.op_code != OpCode::Query {
            return reject(request, handle, ResponseCode::NotImp).await;
        }
        // RFC 6891 6.1.3: we speak EDNS version 0 only.
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return reject(request, handle, ResponseCode::BADVERS).await;
        }
        let Ok(info) = request.request_info() else {
            return reject(request, handle, ResponseCode::FormErr).await;
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN
            || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        {
            return reject(request, handle, ResponseCode::Refused).await;
        }
        let org = self.orgs.lookup(info.src.ip());
        if org.is_none() && !self.allow_unknown_clients {
            tracing::debug!(client = %info.src, "refused: client in no organisation");
            self.metrics.refused_clients.increment(1);
            let info = send_code(request, handle, ResponseCode::Refused, edns.as_ref()).await;
            return (info, Outcome::Refused);
        }

        let qname: &Name = query.name();
        let qtype = query.query_type();
        if let Some(listed) = self.check(qname) {
            let name = plain(qname);
            let Some(action) = self.decide(
                org,
                client(request),
                Stage::Qname,
                &name,
                &name,
                qtype,
                &listed,
            ) else {
                // An exception for the query name covers its whole answer
                // (RPZ: PASSTHRU ends policy evaluation).
                return self
                    .resolve(
                        request,
                        handle,
                        org,
                        query.name(),
                        qtype,
                        edns,
                        QueryName::Excepted,
                    )
                    .await;
            };
            tracing::debug!(client = %info.src, %qname, %qtype, listed = %listed.listed, %action, "blocked");
            match self
                .block_response(
                    request,
                    handle,
                    &[],
                    qname,
                    qtype,
                    listed,
                    action,
                    &mut edns,
                )
                .await
            {
                Ok(info) => return (info, Outcome::Blocked),
                // Monitor mode: answered as if unlisted (no EDE).
                Err(handle) => {
                    let (info, _) = self
                        .resolve(
                            request,
                            handle,
                            org,
                            query.name(),
                            qtype,
                            edns,
                            QueryName::Monitored,
                        )
                        .await;
                    return (info, Outcome::Blocked);
                }
            }
        }
        self.resolve(
            request,
            handle,
            org,
            query.name(),
            qtype,
            edns,
            QueryName::Unlisted,
        )
        .await
    }

    /// The block response for `qname`, after `chain` (the CNAMEs that led
    /// from the query name to it; empty for a query-name block). Hands the
    /// response handle back for `log` (monitor mode): the caller answers
    /// normally.
    #[allow(clippy::too_many_arguments)]
    async fn block_response<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        chain: &[Record],
        qname: &Name,
        qtype: RecordType,
        listed: Listed,
        action: Action,
        edns: &mut Option<Edns>,
    ) -> Result<ResponseInfo, R> {
        match action {
            Action::Drop => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::NoError;
                Ok(ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                }))
            }
            Action::Log => Err(handle),
            action => {
                let answer = block_answer(
                    action,
                    qname,
                    qtype,
                    listed.listed,
                    &listed.local,
                    &self.block,
                    listed.generation,
                );
                if let Some(edns) = edns.as_mut() {
                    edns.options_mut().insert(listed.ede);
                }
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = answer.rcode;
                let answers: Vec<Record> = if chain.is_empty() {
                    answer.answers
                } else {
                    chain.iter().cloned().chain(answer.answers).collect()
                };
                Ok(send(
                    request,
                    handle,
                    metadata,
                    edns.as_ref(),
                    &answers,
                    &answer.authorities,
                )
                .await)
            }
        }
    }

    /// The upstream's answer, or SERVFAIL. Unless the query name was
    /// excepted, a CNAME target or an address in the answer can still
    /// block it.
    #[allow(clippy::too_many_arguments)]
    async fn resolve<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        org: Option<OrgId>,
        qname: &LowerName,
        qtype: RecordType,
        mut edns: Option<Edns>,
        query_name: QueryName,
    ) -> (ResponseInfo, Outcome) {
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        match self.upstream.resolve(qname, qtype, dnssec_ok).await {
            Ok(answer) => {
                self.health.upstream_answered();
                // A clean name that CNAMEs to a listed one is blocked as the
                // listed one would be, after the chain that led there (RPZ's
                // CNAME-target rule; the rcode speaks for the last name).
                // Then the addresses it resolved to (RPZ's response-IP rule).
                let mut touched = query_name != QueryName::Unlisted;
                let blocked = if query_name == QueryName::Excepted {
                    None
                } else {
                    self.inspect_answer(org, request, qname, qtype, &answer.answers, &mut touched)
                };
                let handle = match blocked {
                    Some((chain, target, listed, action)) => {
                        tracing::debug!(%qname, %target, listed = %listed.listed, address = ?listed.address, %action, "blocked in the answer");
                        match self
                            .block_response(
                                request, handle, &chain, &target, qtype, listed, action, &mut edns,
                            )
                            .await
                        {
                            Ok(info) => return (info, Outcome::Blocked),
                            // `log` is not returned by inspect_answer; kept total.
                            Err(handle) => handle,
                        }
                    }
                    None => handle,
                };
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = answer.rcode;
                let info = send(
                    request,
                    handle,
                    metadata,
                    edns.as_ref(),
                    &answer.answers,
                    &answer.authorities,
                )
                .await;
                (
                    info,
                    if touched {
                        Outcome::Answered
                    } else {
                        Outcome::Clean
                    },
                )
            }
            Err(error) => {
                tracing::debug!(%qname, %qtype, %error, "upstream failed");
                self.metrics.upstream_errors.increment(1);
                self.health.upstream_failed();
                let info = send_code(request, handle, ResponseCode::ServFail, edns.as_ref()).await;
                (info, Outcome::Servfail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The blocked-name fast path gives the bytes' worth of the full path:
    //! the same response and the same hit record, for every action, type,
    //! EDNS or not, spelling and client; and it stands aside exactly where
    //! the full path must judge (exceptions, monitor mode, unlisted).

    use std::time::Duration;

    use arc_swap::ArcSwap;
    use hickory_proto::op::{Message, Query};

    use super::*;
    use crate::config::Config;
    use crate::hitlog::{Hit, PackedHit};
    use crate::server::capture::Capture;

    const CONFIG: &str = r#"
[server]
allow_unknown_clients = true
[resolver]
mode = "forward"
upstreams = ["127.0.0.1:9"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
allow = ["allow.txt"]
sinkhole_ipv4 = "192.0.2.53"
sinkhole_ipv6 = "2001:db8::53"
[actions]
phishing = "nodata"
ads = "sinkhole"
spam = "refused"
botnet = "drop"
watch = "log"
[[feed]]
file = "malware.txt"
category = "malware"
[[feed]]
file = "phish.txt"
category = "phishing"
[[feed]]
file = "ads.txt"
category = "ads"
[[feed]]
file = "hosts.txt"
category = "ads"
[[feed]]
file = "spam.txt"
category = "spam"
[[feed]]
file = "botnet.txt"
category = "botnet"
[[feed]]
file = "watch.txt"
category = "watch"
[[organisation]]
id = "council"
name = "Council"
networks = ["127.0.0.0/8"]
allow = ["trusted.evil.example.test"]
actions = { spam = "nxdomain" }
"#;

    fn handler(dir: &std::path::Path, hits: HitSender) -> Handler {
        let feeds = dir.join("feeds");
        std::fs::create_dir_all(&feeds).unwrap();
        for (file, text) in [
            ("malware.txt", "evil.example.test\n"),
            ("phish.txt", "phish.example.test\n"),
            ("ads.txt", "ads.example.test\n"),
            (
                "hosts.txt",
                "10.1.2.3 local.example.test\n::1:2 local.example.test\n",
            ),
            ("spam.txt", "spam.example.test\n"),
            ("botnet.txt", "c2.example.test\n"),
            ("watch.txt", "watched.example.test\n"),
        ] {
            std::fs::write(feeds.join(file), text).unwrap();
        }
        std::fs::write(dir.join("allow.txt"), "ok.evil.example.test\n").unwrap();
        let config = Config::from_str(CONFIG, &dir.join("portcullis.toml")).unwrap();
        let (list, _) = crate::blocklist::compile(&config).unwrap();
        let list: BlocklistHandle = Arc::new(ArcSwap::from_pointee(list));
        Handler {
            blocklist: Arc::clone(&list),
            orgs: Arc::new(OrgMap::new(&config.organisations).unwrap()),
            upstream: Arc::new(Upstream::new(&config.resolver).unwrap()),
            block: BlockSettings {
                policy_ttl: config.blocklist.policy_ttl,
                sinkhole_ipv4: config.blocklist.sinkhole_ipv4,
                sinkhole_ipv6: config.blocklist.sinkhole_ipv6,
                ede_names_feed: true,
            },
            allow_unknown_clients: true,
            hits,
            log_allowed: true,
            metrics: QueryMetrics::new(),
            health: Arc::new(crate::health::Health::new(list, Duration::from_secs(30))),
        }
    }

    fn packet(name: &str, qtype: RecordType, edns: bool, id: u16) -> Vec<u8> {
        let mut msg = Message::query();
        msg.metadata.id = id;
        msg.metadata.recursion_desired = true;
        msg.metadata.checking_disabled = id.is_multiple_of(2);
        // From raw labels: a name may hold bytes no presentation form
        // would let through.
        let labels = name.trim_end_matches('.').split('.').map(str::as_bytes);
        msg.add_query(Query::query(Name::from_labels(labels).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            msg.edns = Some(e);
        }
        msg.to_vec().unwrap()
    }

    fn without_time(packed: &PackedHit) -> Hit {
        let mut hit = packed.unpack();
        hit.ts = 0;
        hit
    }

    #[tokio::test]
    async fn the_fast_path_answers_and_records_as_the_full_path_does() {
        let dir = tempfile::tempdir().unwrap();
        let (hits, received) = HitSender::channel(1024);
        let handler = handler(dir.path(), hits);
        let names = [
            ("evil.example.test.", true),
            ("Deep.SUB.Evil.Example.Test.", true),
            ("phish.example.test.", true),
            ("ads.example.test.", true),
            ("local.example.test.", true),
            ("spam.example.test.", true),
            ("c2.example.test.", true),
            // Labels hickory escapes: the hit record's spelling from `Name`.
            ("*.evil.example.test.", true),
            ("a b.evil.example.test.", true),
            ("-x.evil.example.test.", true),
            // The full path's: exceptions, monitor mode, unlisted.
            ("ok.evil.example.test.", false),
            ("trusted.evil.example.test.", false),
            ("watched.example.test.", false),
            ("clean.example.test.", false),
        ];
        let clients: [SocketAddr; 2] = [
            "127.0.0.1:5353".parse().unwrap(),
            "[2001:db8::9]:53".parse().unwrap(),
        ];
        let mut id = 1u16;
        let mut compared = 0;
        for (name, fast_expected) in names {
            for qtype in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::TXT,
                RecordType::MX,
            ] {
                for edns in [false, true] {
                    for src in clients {
                        id += 1;
                        let wire = packet(name, qtype, edns, id);
                        let what = format!("{name} {qtype} edns={edns} from {src}");
                        let mut out = [0u8; 1232];
                        let fast = handler.answer_from_bytes(None, &wire, src, &mut out);
                        // trusted.evil is an exception for the council only.
                        let expected = fast_expected
                            || (name.starts_with("trusted") && !src.ip().is_loopback());
                        assert_eq!(fast.is_some(), expected, "{what}");
                        let Some(len) = fast else { continue };
                        let fast_hit = received.try_recv().map(|p| without_time(&p));

                        let request =
                            Request::from_bytes(wire.clone(), src, Protocol::Udp).unwrap();
                        let capture = Capture::default();
                        handler.serve(&request, capture.clone()).await;
                        let slow = capture.take();
                        let slow_hit = received.try_recv().map(|p| without_time(&p));
                        assert_eq!(fast_hit.ok(), slow_hit.ok(), "{what}: hit record");
                        let Some(slow) = slow else {
                            assert_eq!(len, 0, "{what}: only drop sends nothing");
                            continue;
                        };
                        let (fast, slow) = (
                            Message::from_vec(&out[..len]).unwrap(),
                            Message::from_vec(&slow).unwrap(),
                        );
                        assert_eq!(fast.metadata, slow.metadata, "{what}");
                        assert_eq!(fast.queries, slow.queries, "{what}");
                        assert_eq!(fast.answers, slow.answers, "{what}");
                        assert_eq!(fast.authorities, slow.authorities, "{what}");
                        assert_eq!(fast.additionals, slow.additionals, "{what}");
                        assert_eq!(fast.edns, slow.edns, "{what}");
                        compared += 1;
                    }
                }
            }
        }
        assert!(received.try_recv().is_err(), "no hit left over");
        // 10 listed names (one with drop) x 4 types x 2 x 2, and the
        // trusted name from outside the council (x 4 x 2).
        assert_eq!(compared, 9 * 4 * 2 * 2 + 4 * 2, "responses compared");
    }

    #[test]
    fn the_fast_path_stands_aside_for_unusual_queries() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let handler = handler(dir.path(), HitSender::disabled());
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut out = [0u8; 1232];
        let good = packet("evil.example.test.", RecordType::A, true, 7);
        assert!(
            handler
                .answer_from_bytes(None, &good, src, &mut out)
                .is_some()
        );
        let mut chaos = Message::from_vec(&good).unwrap();
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert!(
            handler
                .answer_from_bytes(None, &chaos.to_vec().unwrap(), src, &mut out)
                .is_none()
        );
        let axfr = packet("evil.example.test.", RecordType::AXFR, false, 8);
        assert!(
            handler
                .answer_from_bytes(None, &axfr, src, &mut out)
                .is_none()
        );
        // No room for the response: the full path answers (and truncates).
        assert!(
            handler
                .answer_from_bytes(None, &good, src, &mut out[..40])
                .is_none()
        );
        // Shutting down: the full path refuses.
        assert_eq!(
            rt.block_on(handler.health.lifecycle.drain(Duration::ZERO)),
            0
        );
        assert!(
            handler
                .answer_from_bytes(None, &good, src, &mut out)
                .is_none()
        );
    }
}
