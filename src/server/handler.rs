//! The hickory `RequestHandler`: one query from packet to answer.
//!
//! 1. sanity: one question, a QUERY opcode, class IN, EDNS version 0;
//! 2. organisation by client address; unknown clients are refused unless
//!    the config allows them;
//! 3. the blocklist walk on the question name (a `load()` guard, dropped
//!    before any `.await`);
//! 4. a block response, or the upstream's answer.
//!
//! Nothing here takes a lock or blocks: the blocklist is behind an
//! `ArcSwap`, the org map is immutable. A failure to resolve becomes
//! SERVFAIL, never an error out of the handler.

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::response::{BlockSettings, block_answer, blocked_ede};
use crate::blocklist::BlocklistHandle;
use crate::feeds::Verdict;
use crate::orgs::OrgMap;
use crate::policy::Action;
use crate::resolve::Upstream;

/// Largest UDP response we offer (the DNS flag day 2020 figure).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Everything a query needs, shared by all tasks.
pub struct Handler {
    pub blocklist: BlocklistHandle,
    pub orgs: Arc<OrgMap>,
    pub upstream: Arc<Upstream>,
    pub block: BlockSettings,
    pub allow_unknown_clients: bool,
}

/// What the blocklist decided, copied out of the guard.
struct Blocked {
    action: Action,
    listed: Name,
    /// The feed's own answer addresses (empty for most entries).
    local: Vec<std::net::IpAddr>,
    generation: u64,
    ede: EdnsOption,
}

impl Handler {
    fn check(&self, qname: &Name) -> Option<Blocked> {
        let list = self.blocklist.load();
        // The labels on the stack (a name has at most 127), so each layer
        // can walk them without an allocation.
        let mut labels: [&[u8]; 128] = [&[]; 128];
        let mut n = 0;
        for label in qname.iter().take(labels.len()) {
            labels[n] = label;
            n += 1;
        }
        let found = list.lookup(labels[..n].iter().rev().copied())?;
        let meta = list.meta(&found);
        if meta.verdict == Verdict::Allow {
            return None;
        }
        let feed = self
            .block
            .ede_names_feed
            .then(|| list.feed(&found).name.as_str());
        Some(Blocked {
            action: meta.action,
            listed: qname.trim_to(usize::from(found.depth)),
            local: list.answer(&found).to_vec(),
            generation: list.generation(),
            ede: blocked_ede(list.category(&found), feed),
        })
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

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        let mut edns = response_edns(request);
        if request.metadata.op_code != OpCode::Query {
            return send_code(request, handle, ResponseCode::NotImp, edns.as_ref()).await;
        }
        // RFC 6891 6.1.3: we speak EDNS version 0 only.
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return send_code(request, handle, ResponseCode::BADVERS, edns.as_ref()).await;
        }
        let Ok(info) = request.request_info() else {
            return send_code(request, handle, ResponseCode::FormErr, edns.as_ref()).await;
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN
            || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        {
            return send_code(request, handle, ResponseCode::Refused, edns.as_ref()).await;
        }
        let org = self.orgs.lookup(info.src.ip());
        if org.is_none() && !self.allow_unknown_clients {
            tracing::debug!(client = %info.src, "refused: client in no organisation");
            return send_code(request, handle, ResponseCode::Refused, edns.as_ref()).await;
        }

        let qname: &Name = query.name();
        let qtype = query.query_type();
        let blocked = self.check(qname);
        if let Some(blocked) = blocked {
            tracing::debug!(client = %info.src, %qname, %qtype, listed = %blocked.listed, action = %blocked.action, "blocked");
            match blocked.action {
                Action::Drop => {
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.response_code = ResponseCode::NoError;
                    return ResponseInfo::from(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    });
                }
                // Monitor mode: answer as if unlisted. The hit record that
                // makes this useful comes with the hit log (issue #5).
                Action::Log => {
                    tracing::debug!(client = %info.src, %qname, listed = %blocked.listed, "monitor-mode hit (action log)")
                }
                action => {
                    let answer = block_answer(
                        action,
                        qname,
                        qtype,
                        blocked.listed,
                        &blocked.local,
                        &self.block,
                        blocked.generation,
                    );
                    if let Some(edns) = edns.as_mut() {
                        edns.options_mut().insert(blocked.ede);
                    }
                    let mut metadata = Metadata::response_from_request(&request.metadata);
                    metadata.response_code = answer.rcode;
                    return send(
                        request,
                        handle,
                        metadata,
                        edns.as_ref(),
                        &answer.answers,
                        &answer.authorities,
                    )
                    .await;
                }
            }
        }

        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        match self.upstream.resolve(query.name(), qtype, dnssec_ok).await {
            Ok(answer) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = answer.rcode;
                send(
                    request,
                    handle,
                    metadata,
                    edns.as_ref(),
                    &answer.answers,
                    &answer.authorities,
                )
                .await
            }
            Err(error) => {
                tracing::debug!(%qname, %qtype, %error, "upstream failed");
                send_code(request, handle, ResponseCode::ServFail, edns.as_ref()).await
            }
        }
    }
}
