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
//! Steps 3 and 4, and the hit record, are decided in [`super::decide`];
//! a UDP query may be answered before all this from its bytes
//! ([`super::fast_path`]); [`super::query_metrics`] counts how each ended.
//!
//! Nothing here takes a lock or blocks: the blocklist is behind an
//! `ArcSwap`, so is the client policy (organisations, limits; swapped by a
//! config reload), and hit records go into a bounded
//! channel that drops (and counts) rather than waits. A failure to resolve
//! becomes SERVFAIL, never an error out of the handler.
//!
//! (Over 400 lines: the full path, from sanity checks to the upstream's
//! answer, reads as one piece.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::client_policy::PolicyHandle;
use super::decide::{Attribution, Listed, QueryContext, Via, plain};
use super::limits::{Verdict, write_limited};
use super::local::LocalNames;
use super::packet_cache::MAX_UDP_PAYLOAD;
use super::query_metrics::{QueryMetrics, QueryOutcome};
use super::response::{self, block_answer};
use crate::blocklist::BlocklistHandle;
use crate::dnssec::{self, Security};
use crate::hitlog::{HitSender, Stage};
use crate::policy::Action;
use crate::resolve::Upstream;

mod notify;

/// Everything a query needs, shared by all tasks.
pub struct Handler {
    pub blocklist: BlocklistHandle,
    /// Organisations, block settings, limits: what a config reload swaps.
    pub policy: PolicyHandle,
    pub upstream: Arc<Upstream>,
    pub hits: HitSender,
    pub metrics: QueryMetrics,
    pub health: Arc<crate::health::Health>,
    /// Names answered here, never sent upstream.
    pub local: LocalNames,
    /// dnstap output, when configured.
    pub tap: Option<crate::dnstap::Tap>,
    /// The RPZ zones a NOTIFY may name, and their primaries.
    pub notify: Arc<crate::sources::rpz::NotifyTargets>,
    /// Listed names asked lately and their entries, for the fast path.
    pub listed_memo: super::listed_memo::ListedMemo,
}

/// What the query name's own check decided before resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QnameCheck {
    /// No entry matched it.
    Unlisted,
    /// A monitor-mode entry matched it: answered as if unlisted, recorded.
    Monitored,
    /// An exception matched it: its whole answer passes uninspected.
    Excepted,
}

/// Where and how a query is blocked: the name the block response speaks
/// for, after the CNAMEs that led there from the query name (none when it
/// is the query name), the entry, and the action this client's
/// organisation takes.
struct Block<'a> {
    chain: &'a [Record],
    name: &'a Name,
    listed: Listed,
    action: Action,
}

fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut edns = Edns::new();
        edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        edns.set_version(0);
        // RFC 3225: the DO bit is copied into the response.
        edns.set_dnssec_ok(req.flags().dnssec_ok);
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
) -> (ResponseInfo, QueryOutcome) {
    let edns = response_edns(request);
    let info = send_code(request, handle, code, edns.as_ref()).await;
    (info, QueryOutcome::Rejected)
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        let via = Via::of_protocol(request.protocol());
        self.serve(request, handle, via).await.0
    }
}

impl Handler {
    /// Answer one decoded query, counted in the metrics.
    pub(super) async fn serve<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        via: Via,
    ) -> (ResponseInfo, QueryOutcome) {
        let started = Instant::now();
        // Shutting down: new queries are refused so clients move on; the
        // ones in flight finish (see lifecycle).
        let Some(_in_flight) = self.health.lifecycle.enter() else {
            let (info, outcome) = reject(request, handle, ResponseCode::Refused).await;
            self.metrics.record(via.transport, outcome, started);
            return (info, outcome);
        };
        let (info, outcome) = self.answer(request, handle, via).await;
        self.metrics.record(via.transport, outcome, started);
        (info, outcome)
    }

    /// Answer a UDP query; true when the response may go in the packet
    /// cache (see `QueryOutcome::Clean`).
    pub async fn handle_udp<R: ResponseHandler>(&self, request: &Request, handle: R) -> bool {
        self.serve(request, handle, Via::UDP).await.1 == QueryOutcome::Clean
    }

    /// A query over its client's rate (`limits.client_qps`): the length
    /// of the answer written to `out` instead (0: send nothing), or `None`
    /// to go on. Over a stream transport TC means nothing, so it is
    /// REFUSED there.
    pub fn over_rate(
        &self,
        query: &[u8],
        src: SocketAddr,
        transport: crate::hitlog::Transport,
        out: &mut [u8],
    ) -> Option<usize> {
        let policy = self.policy.load();
        if !policy.limits.rates_clients() {
            return None;
        }
        let org = policy.orgs.lookup(src.ip());
        let udp = transport == crate::hitlog::Transport::Udp;
        let truncate = match policy.limits.query(src.ip(), org, udp) {
            Verdict::Pass => return None,
            Verdict::Drop => None,
            Verdict::Truncate => Some(udp),
            Verdict::Refuse => Some(false),
        };
        self.metrics
            .record(transport, QueryOutcome::Refused, Instant::now());
        Some(truncate.map_or(0, |truncate| write_limited(out, query, truncate)))
    }

    pub(super) async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        via: Via,
    ) -> (ResponseInfo, QueryOutcome) {
        let mut edns = response_edns(request);
        if request.metadata.op_code == OpCode::Notify {
            return self.notify(request, handle).await;
        }
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
        let (org, allow_unknown) = {
            let policy = self.policy.load();
            let org = match via.attribution {
                Attribution::Address => policy.orgs.lookup(info.src.ip()),
                // An organisation removed by a reload since the connection
                // was attributed: its key is no longer valid.
                Attribution::Key(org) if policy.orgs.policy(org).retired => None,
                Attribution::Key(org) => Some(org),
                Attribution::UnknownKey => None,
            };
            (org, policy.allow_unknown_clients)
        };
        let unknown_key = match via.attribution {
            Attribution::UnknownKey => true,
            Attribution::Key(_) => org.is_none(),
            Attribution::Address => false,
        };
        if unknown_key {
            tracing::debug!(client = %info.src, transport = %via.transport, "refused: unknown roaming key");
            self.metrics.refused_client();
            let info = send_code(request, handle, ResponseCode::Refused, edns.as_ref()).await;
            return (info, QueryOutcome::Refused);
        }
        if org.is_none() && !allow_unknown {
            tracing::debug!(client = %info.src, "refused: client in no organisation");
            self.metrics.refused_client();
            let info = send_code(request, handle, ResponseCode::Refused, edns.as_ref()).await;
            return (info, QueryOutcome::Refused);
        }

        let qname: &Name = query.name();
        let qtype = query.query_type();
        // Names the resolver answers itself: discovery of its encrypted
        // endpoints (RFC 9462) and the browsers' DoH canary.
        if let Some(local) = self.local.answer(query.name(), qtype) {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = local.rcode;
            let info = send(request, handle, metadata, edns.as_ref(), local.answers, &[]).await;
            return (info, QueryOutcome::Answered);
        }
        let cx = QueryContext::of(request, via.transport, org, qtype);
        // RPZ precedence: a client-IP trigger before the query name's.
        let (stage, listed) = match self.check_client(cx.client, qname) {
            Some(listed) => (Stage::ClientIp, Some(listed)),
            None => (Stage::Qname, self.check(qname)),
        };
        if let Some(listed) = listed {
            let name = plain(qname);
            let Some(action) = self.decide(cx, stage, &name, &name, &listed) else {
                // An exception for the query name covers its whole answer
                // (RPZ: PASSTHRU ends policy evaluation).
                return self
                    .resolve(
                        request,
                        handle,
                        cx,
                        query.name(),
                        edns,
                        QnameCheck::Excepted,
                    )
                    .await;
            };
            tracing::debug!(client = %info.src, %qname, %qtype, listed = %listed.name, %action, "blocked");
            let block = Block {
                chain: &[],
                name: qname,
                listed,
                action,
            };
            match self
                .block_response(request, handle, cx, block, &mut edns)
                .await
            {
                Ok(info) => return (info, QueryOutcome::Blocked),
                // Monitor mode: answered as if unlisted (no EDE).
                Err(handle) => {
                    let (info, _) = self
                        .resolve(
                            request,
                            handle,
                            cx,
                            query.name(),
                            edns,
                            QnameCheck::Monitored,
                        )
                        .await;
                    return (info, QueryOutcome::Blocked);
                }
            }
        }
        self.resolve(
            request,
            handle,
            cx,
            query.name(),
            edns,
            QnameCheck::Unlisted,
        )
        .await
    }

    /// The block response for the block's name, after its `chain` (the
    /// CNAMEs that led from the query name to it; empty for a query-name
    /// block). Hands the response handle back for `log` (monitor mode): the
    /// caller answers normally.
    async fn block_response<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        cx: QueryContext,
        block: Block<'_>,
        edns: &mut Option<Edns>,
    ) -> Result<ResponseInfo, R> {
        let Block {
            chain,
            name: qname,
            listed,
            action,
        } = block;
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
                    cx.qtype,
                    listed.name,
                    &listed.local,
                    &self.policy.load().block,
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

    /// SERVFAIL for a bogus answer, with its extended error when the query
    /// had EDNS.
    async fn send_bogus<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        bogus: &dnssec::Bogus,
        mut edns: Option<Edns>,
    ) -> ResponseInfo {
        if let Some(edns) = &mut edns {
            edns.options_mut().insert(response::dnssec_ede(bogus));
        }
        send_code(request, handle, ResponseCode::ServFail, edns.as_ref()).await
    }

    /// The upstream's answer, or SERVFAIL. Unless the query name was
    /// excepted, a CNAME target or an address in the answer can still
    /// block it.
    async fn resolve<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        cx: QueryContext,
        qname: &LowerName,
        mut edns: Option<Edns>,
        query_name: QnameCheck,
    ) -> (ResponseInfo, QueryOutcome) {
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        // ANY is answered minimally (RFC 8482), so it amplifies nothing:
        // a synthesised HINFO, or, for a DNSSEC client that must be able
        // to validate what it gets, the name's one signed A RRset.
        let qtype = match cx.qtype {
            RecordType::ANY if !dnssec_ok => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::NoError;
                let hinfo = [response::rfc8482_hinfo(qname)];
                let info = send(request, handle, metadata, edns.as_ref(), &hinfo, &[]).await;
                return (info, QueryOutcome::Answered);
            }
            RecordType::ANY => RecordType::A,
            qtype => qtype,
        };
        let checking_disabled = request.metadata.checking_disabled;
        // A place among the queries waiting on the upstream (a cached
        // answer gives it back at once); past a cap, SERVFAIL now.
        let limits = Arc::clone(&self.policy.load().limits);
        let _place = match limits.wait_upstream(cx.client, cx.org, qname) {
            Ok(place) => place,
            Err(cap) => {
                tracing::debug!(client = %cx.client, %qname, limit = cap.label(), "upstream queries capped");
                if let Some(edns) = edns.as_mut() {
                    edns.options_mut().insert(response::ede(0, cap.reason()));
                }
                let info = send_code(request, handle, ResponseCode::ServFail, edns.as_ref()).await;
                return (info, QueryOutcome::Servfail);
            }
        };
        match self.upstream.answer(qname, qtype, checking_disabled).await {
            Ok(mut answer) => {
                if answer.stale {
                    self.metrics.stale_answer();
                    if let Some(edns) = edns.as_mut() {
                        edns.options_mut().insert(response::stale_ede());
                    }
                } else {
                    self.health.upstream_answered();
                    self.metrics.validation(&answer.security);
                }
                if let Security::Bogus(bogus) = &answer.security {
                    tracing::warn!(zone = %bogus.zone, ede = bogus.ede, reason = bogus.reason, %qname, %qtype, cd = checking_disabled, "DNSSEC validation failed");
                    // CD: the client validates for itself (RFC 4035 3.2.2).
                    if !checking_disabled {
                        let info = self.send_bogus(request, handle, bogus, edns).await;
                        return (info, QueryOutcome::Servfail);
                    }
                }
                // RFC 4035 3.2.1: DNSSEC records only for clients that set DO.
                if !dnssec_ok {
                    dnssec::strip(&mut answer.answers, qtype);
                    dnssec::strip(&mut answer.authorities, qtype);
                }
                // A clean name that CNAMEs to a listed one is blocked as the
                // listed one would be, after the chain that led there (RPZ's
                // CNAME-target rule; the rcode speaks for the last name).
                // Then the addresses it resolved to (RPZ's response-IP rule).
                let mut touched = query_name != QnameCheck::Unlisted;
                // Last, the name servers of the zones that answered (RPZ's
                // NSDNAME and NSIP; nothing is asked while none is listed).
                let mut blocked = None;
                if query_name != QnameCheck::Excepted {
                    blocked = self.inspect_answer(cx, qname, &answer.answers, &mut touched);
                    if blocked.is_none() {
                        blocked = self
                            .inspect_name_servers(
                                cx,
                                qname,
                                &answer.answers,
                                checking_disabled,
                                &mut touched,
                            )
                            .await;
                    }
                }
                let handle = match blocked {
                    Some((chain, target, listed, action)) => {
                        tracing::debug!(%qname, %target, listed = %listed.name, address = ?listed.address, %action, "blocked in the answer");
                        let block = Block {
                            chain: &chain,
                            name: &target,
                            listed,
                            action,
                        };
                        match self
                            .block_response(request, handle, cx, block, &mut edns)
                            .await
                        {
                            Ok(info) => return (info, QueryOutcome::Blocked),
                            // `log` is not returned by inspect_answer; kept total.
                            Err(handle) => handle,
                        }
                    }
                    None => handle,
                };
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = answer.rcode;
                // RFC 6840 5.8: AD only for a client that asked with DO or AD.
                metadata.authentic_data = answer.security == Security::Secure
                    && (dnssec_ok || request.metadata.authentic_data);
                let info = send(
                    request,
                    handle,
                    metadata,
                    edns.as_ref(),
                    &answer.answers,
                    &answer.authorities,
                )
                .await;
                // A bogus answer given to a CD client is never cached for
                // others (the packet cache keys on CD too; belt and braces).
                let cacheable =
                    !touched && !answer.stale && !matches!(answer.security, Security::Bogus(_));
                (
                    info,
                    if cacheable {
                        QueryOutcome::Clean
                    } else {
                        QueryOutcome::Answered
                    },
                )
            }
            Err(error) => {
                tracing::debug!(%qname, %qtype, %error, "upstream failed");
                self.metrics.upstream_error();
                self.health.upstream_failed();
                if let Some(edns) = edns.as_mut() {
                    edns.options_mut().insert(response::upstream_ede(&error));
                }
                let info = send_code(request, handle, ResponseCode::ServFail, edns.as_ref()).await;
                (info, QueryOutcome::Servfail)
            }
        }
    }
}
