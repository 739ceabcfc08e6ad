//! `portcullis check` against the running resolver: what the live list,
//! a client's organisation and (with `resolve`) a real resolution make of
//! one name, by the code that answers queries, with no side effects.
//!
//! The list explanation is the offline one, run over the list being
//! served (last-good copies of broken feeds included, marked as such).
//! The organisation's judgement is `Handler::judge`. A resolution goes
//! through `Handler::answer` exactly as a query from that client would,
//! CNAME and answer-address policy included; inside `CHECKING` (a task-local) the
//! hits it decides are collected for the report instead of going to the
//! hit log or the block counters (a check is not a query from that
//! client, and must not show in its organisation's records), and the
//! query counters are not touched either.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use serde::Serialize;

use super::Handler;
use super::capture::Collect;
use super::decide::{Attribution, Judgement, Via};
use crate::formats::Verdict;
use crate::hitlog::{Hit, Transport};
use crate::orgs::OrgId;

tokio::task_local! {
    /// Set while a check resolves: decisions land here, not in the hit log.
    pub(super) static CHECKING: RefCell<Vec<Hit>>;
}

/// Whether the current task is a check (see the module doc).
pub(super) fn checking() -> bool {
    CHECKING.try_with(|_| ()).is_ok()
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub name: String,
    pub qtype: RecordType,
    /// As a query from this address (its organisation by network).
    pub client: Option<IpAddr>,
    /// As a query from this organisation (by id), wherever it comes from.
    pub org: Option<String>,
    /// Also resolve it, and apply CNAME and answer-address policy.
    pub resolve: bool,
}

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0:?} is not a domain name: {1}")]
    Name(String, String),
    #[error("no organisation has the id {0:?}")]
    UnknownOrg(String),
    // Which organisation the client is in is not said: an organisation's
    // token may ask, and must not learn another's networks.
    #[error("client {client} is not in organisation {asked:?}")]
    OrgMismatch { client: IpAddr, asked: String },
}

/// The answer to a check (the admin API's JSON).
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub name: String,
    /// The blocklist generation the check read.
    pub generation: u64,
    /// The list's account of the name, as `portcullis check --offline`
    /// prints it.
    pub explanation: String,
    /// The feed whose entry decides, if one does.
    pub feed: Option<String>,
    /// That feed failed its last reload and serves its last good
    /// contents (the reason).
    pub feed_last_good: Option<String>,
    /// The organisation whose policy applies; `None`: no organisation.
    pub organisation: Option<String>,
    /// What that organisation makes of the name itself, in a sentence.
    pub decision: String,
    pub resolution: Option<Resolution>,
}

/// A live resolution of the name, as the client would get it.
#[derive(Debug, Serialize)]
pub struct Resolution {
    pub rcode: String,
    pub answers: Vec<String>,
    pub authorities: Vec<String>,
    /// Extended DNS errors: (code, text).
    pub ede: Vec<(u16, String)>,
    /// The hits the resolution decided (what the hit log would have got):
    /// the query name, a CNAME target or an answer address.
    pub decisions: Vec<Hit>,
}

impl Handler {
    /// Check `req` against the live list and policy (see the module doc).
    pub async fn check_live(&self, req: &CheckRequest) -> Result<CheckReport, CheckError> {
        let name = crate::domain::normalize(&req.name)
            .map_err(|e| CheckError::Name(req.name.clone(), e.to_string()))?;
        let org = self.check_org(req)?;
        let list = self.blocklist.load();
        let explanation = list
            .explain(&name)
            .map_err(|e| CheckError::Name(req.name.clone(), e.to_string()))?;
        let text = crate::summary::explanation(&list, &explanation);
        let feed = explanation.winner.map(|m| list.feed(&m).name.clone());
        let generation = list.generation();
        drop(list);
        let feed_last_good = feed.as_deref().and_then(|f| self.last_good_reason(f));
        let org_id = org.map(|o| self.policy.load().orgs.id(o).to_owned());
        let decision = self.name_decision(&name, org, req);
        let resolution = if req.resolve {
            Some(self.resolve_as(&name, req, org).await)
        } else {
            None
        };
        Ok(CheckReport {
            name,
            generation,
            explanation: text,
            feed,
            feed_last_good,
            organisation: org_id,
            decision,
            resolution,
        })
    }

    /// The organisation a check speaks for: by id, or by the client's
    /// address; both must agree.
    fn check_org(&self, req: &CheckRequest) -> Result<Option<OrgId>, CheckError> {
        let policy = self.policy.load();
        let by_id = match &req.org {
            Some(id) => Some(
                policy
                    .orgs
                    .by_id(id)
                    .ok_or_else(|| CheckError::UnknownOrg(id.clone()))?,
            ),
            None => None,
        };
        let by_client = req
            .client
            .and_then(|ip| policy.orgs.lookup(ip.to_canonical()));
        match (by_id, req.client) {
            (Some(id), Some(client)) if by_client != Some(id) => Err(CheckError::OrgMismatch {
                client,
                asked: policy.orgs.id(id).to_owned(),
            }),
            (Some(id), _) => Ok(Some(id)),
            (None, _) => Ok(by_client),
        }
    }

    fn last_good_reason(&self, feed: &str) -> Option<String> {
        let status = self.health.reload.as_ref()?;
        let status = status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = status.feeds.get(feed)?;
        result.error.clone().filter(|_| result.kept_previous)
    }

    /// The organisation's judgement of the name itself, in words.
    fn name_decision(&self, name: &str, org: Option<OrgId>, req: &CheckRequest) -> String {
        let policy = self.policy.load();
        if org.is_none()
            && !policy.allow_unknown_clients
            && (req.client.is_some() || req.org.is_some())
        {
            return "refused: the client is in no organisation".to_owned();
        }
        let Ok(qname) = Name::from_ascii(name) else {
            return "not listed".to_owned();
        };
        // An RPZ client-IP trigger decides before the name, as it does
        // for a query.
        let by_client = req.client.and_then(|c| self.check_client(c, &qname));
        let client_trigger = by_client.as_ref().map(|l| {
            format!(
                "the client's address is listed (client-IP trigger {}, feed {}), which decides \
                 before the name",
                l.address.map(|n| n.to_string()).unwrap_or_default(),
                l.feed
            )
        });
        let Some(listed) = by_client.or_else(|| self.check(&qname)) else {
            return "not listed: resolves normally (CNAME targets and answer addresses are \
                    checked when it resolves)"
                .to_owned();
        };
        let owner = org.map_or_else(
            || "no organisation".to_owned(),
            |o| policy.orgs.id(o).to_owned(),
        );
        if let Some(why) = &client_trigger
            && listed.verdict == Verdict::Allow
        {
            return format!("passes: {why}; a PASSTHRU exempts this client from all policy");
        }
        let decision = Self::judged(&policy, org, name, &listed, &owner);
        match client_trigger {
            Some(why) => format!("{decision}: {why}"),
            None => decision,
        }
    }

    fn judged(
        policy: &crate::server::ClientPolicy,
        org: Option<OrgId>,
        name: &str,
        listed: &super::decide::Listed,
        owner: &str,
    ) -> String {
        match Handler::judge(policy, org, name, listed) {
            Judgement::Excepted(Some(entry)) => {
                format!("passes: {owner}'s allow entry {entry} (its whole answer is not inspected)")
            }
            Judgement::Excepted(None) => {
                "passes: an allow entry (its whole answer is not inspected)".to_owned()
            }
            Judgement::Blocks(action) if listed.verdict == Verdict::Block => format!(
                "blocked with {} for {owner} ({}, feed {})",
                action.as_str(),
                listed.category,
                listed.feed
            ),
            Judgement::Blocks(action) => format!(
                "{} for {owner} ({}, feed {})",
                action.as_str(),
                listed.category,
                listed.feed
            ),
        }
    }

    /// Resolve `name` as the client would, collecting the decisions.
    async fn resolve_as(&self, name: &str, req: &CheckRequest, org: Option<OrgId>) -> Resolution {
        let src = SocketAddr::new(req.client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0);
        // An organisation named without an address is attributed as a
        // roaming key would be; an address alone by its networks.
        let attribution = match (req.client, org) {
            (None, Some(org)) => Attribution::Key(org),
            _ => Attribution::Address,
        };
        let via = Via {
            transport: Transport::Other,
            attribution,
        };
        let mut query = Message::new(1, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        let fqdn = Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root());
        query.add_query(Query::query(fqdn, req.qtype));
        // With EDNS, as stub resolvers ask: the answer carries its EDE.
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(1232);
        query.edns = Some(edns);
        let failed = |why: String| Resolution {
            rcode: "none".into(),
            answers: Vec::new(),
            authorities: Vec::new(),
            ede: vec![(0, why)],
            decisions: Vec::new(),
        };
        let bytes = match query.to_vec() {
            Ok(b) => b,
            Err(e) => return failed(format!("cannot build the query: {e}")),
        };
        let request = match Request::from_bytes(bytes, src, Protocol::Tcp) {
            Ok(r) => r,
            Err(e) => return failed(format!("cannot read the query back: {e}")),
        };
        let collect = Collect::default();
        let decisions = CHECKING
            .scope(RefCell::new(Vec::new()), async {
                let _ = self.answer(&request, collect.clone(), via).await;
                CHECKING.with(|c| c.take())
            })
            .await;
        let Some(wire) = collect.take() else {
            return Resolution {
                decisions,
                ..failed("no answer is sent (the drop action)".into())
            };
        };
        match Message::from_vec(&wire) {
            Ok(msg) => Resolution {
                // The mnemonic (NXDOMAIN), as dig prints it.
                rcode: format!("{:?}", msg.metadata.response_code).to_uppercase(),
                answers: msg.answers.iter().map(ToString::to_string).collect(),
                authorities: msg.authorities.iter().map(ToString::to_string).collect(),
                ede: edes(&msg),
                decisions,
            },
            Err(e) => Resolution {
                decisions,
                ..failed(format!("the answer does not parse: {e}"))
            },
        }
    }
}

/// The extended DNS errors (RFC 8914) in a response.
fn edes(msg: &Message) -> Vec<(u16, String)> {
    let Some(edns) = msg.edns.as_ref() else {
        return Vec::new();
    };
    edns.options()
        .as_ref()
        .iter()
        .filter_map(|(code, option)| {
            if u16::from(*code) != 15 {
                return None;
            }
            let hickory_proto::rr::rdata::opt::EdnsOption::Unknown(_, bytes) = option else {
                return None;
            };
            let info = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
            let text = bytes.get(2..).unwrap_or_default();
            Some((info, String::from_utf8_lossy(text).into_owned()))
        })
        .collect()
}
