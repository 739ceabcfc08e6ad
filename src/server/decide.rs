//! The decision on one query: what the blocklist says about its name, a
//! CNAME target or an address in its answer ([`Listed`]), what the
//! client's organisation makes of that ([`Judgement`]), and the block
//! counter and hit record that follow. Both the full path and the byte
//! fast path decide here, so they count and record alike.

use std::net::IpAddr;

use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use ipnet::IpNet;

use super::Handler;
use super::client_policy::ClientPolicy;
use super::inspect;
use super::response::blocked_ede;
use crate::blocklist::{Blocklist, Match};
use crate::formats::Verdict;
use crate::hitlog::{HitRef, Stage, Transport, now_ms};
use crate::orgs::OrgId;
use crate::policy::Action;
use crate::telemetry;

/// One query as the decision and its hit record see it: who asked, over
/// what, from which organisation, and for which type. Made once per query
/// and copied down the path. The name is not in it: each path holds it in
/// its own form (the wire bytes, hickory's `Name`), and the hit log's
/// spelling of it is made only when there is a hit to record.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryContext {
    pub client: IpAddr,
    pub transport: Transport,
    /// `None` for a client in no organisation that the config lets in.
    pub org: Option<OrgId>,
    pub qtype: RecordType,
}

impl QueryContext {
    /// A decoded request's context, its client in `org`.
    pub fn of(
        request: &Request,
        transport: Transport,
        org: Option<OrgId>,
        qtype: RecordType,
    ) -> QueryContext {
        QueryContext {
            client: request.src().ip().to_canonical(),
            transport,
            org,
            qtype,
        }
    }
}

/// How a query reached us, beyond its source address: the transport, and
/// whether a roaming key (a DoH path, a DoT or DoQ server name) named the
/// organisation it speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    pub transport: Transport,
    pub attribution: Attribution,
}

/// Whose policy a query is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// The organisation whose networks hold the source address.
    Address,
    /// The organisation whose roaming key the client presented; it wins
    /// over the address (the key is the stronger claim).
    Key(OrgId),
    /// A roaming key no organisation holds: refused, never judged by
    /// anyone's policy.
    UnknownKey,
}

impl Via {
    pub const UDP: Via = Via::address(Transport::Udp);

    /// Attributed by source address.
    pub const fn address(transport: Transport) -> Via {
        Via {
            transport,
            attribution: Attribution::Address,
        }
    }

    /// What hickory's own listeners know: the protocol alone.
    pub fn of_protocol(protocol: Protocol) -> Via {
        Via::address(match protocol {
            Protocol::Udp => Transport::Udp,
            Protocol::Tcp => Transport::Tcp,
            _ => Transport::Other,
        })
    }
}

/// What the blocklist matched, copied out of the guard.
pub(super) struct Listed {
    pub verdict: Verdict,
    action: Action,
    /// The listed name; for an address entry, the name that resolved into
    /// the listed network (it owns the block answer's SOA).
    pub name: Name,
    /// The listed network, for an address entry.
    pub address: Option<IpNet>,
    /// For an NSDNAME entry: the listed name-server name (`name` is then
    /// the name the block answer speaks for).
    pub ns_name: Option<String>,
    /// The feed's own answer addresses (empty for most entries).
    pub local: Vec<std::net::IpAddr>,
    pub generation: u64,
    pub feed: String,
    pub category: String,
    indicator: Option<String>,
    pub ede: EdnsOption,
}

impl Listed {
    pub fn evidence(&self) -> Evidence<'_> {
        Evidence {
            feed: &self.feed,
            category: &self.category,
            indicator: self.indicator.as_deref(),
        }
    }
}

/// What a hit record says of the entry that matched, borrowed: from a
/// [`Listed`], or on the fast path straight from the blocklist's guard.
#[derive(Debug, Clone, Copy)]
pub(super) struct Evidence<'a> {
    pub feed: &'a str,
    pub category: &'a str,
    pub indicator: Option<&'a str>,
}

impl<'a> Evidence<'a> {
    /// The entry `found` names in `list`.
    pub fn of(list: &'a Blocklist, found: &Match) -> Evidence<'a> {
        Evidence {
            feed: list.feed(found).name.as_str(),
            category: list.category(found),
            indicator: list.detail(found),
        }
    }
}

/// An organisation's view of a listed entry.
pub(super) enum Judgement<'a> {
    /// An exception lets it through: the global allow list, or this
    /// organisation's own entry (given).
    Excepted(Option<&'a str>),
    Blocks(Action),
}

/// The hit record's `matched`: the listed name, or for an address entry
/// the address (a single one as itself, a range in CIDR form).
fn matched_text(listed: &Listed) -> String {
    if let Some(ns) = &listed.ns_name {
        return ns.clone();
    }
    match listed.address {
        Some(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_string(),
        Some(net) => net.to_string(),
        None => plain(&listed.name),
    }
}

/// A name as the hit log stores it: lower case, no trailing dot.
pub(super) fn plain(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

impl Handler {
    pub(super) fn check(&self, qname: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let found = inspect::lookup_name(&list, qname)?;
        Some(self.listed(&list, &found, qname.trim_to(usize::from(found.depth)), None))
    }

    /// What the blocklist says about a match, copied out of the guard.
    pub(super) fn listed(
        &self,
        list: &Blocklist,
        found: &Match,
        listed: Name,
        address: Option<IpNet>,
    ) -> Listed {
        let meta = list.meta(found);
        let evidence = Evidence::of(list, found);
        let (feed, category) = (evidence.feed, evidence.category);
        Listed {
            verdict: meta.verdict,
            action: meta.action,
            name: listed,
            address,
            ns_name: None,
            local: list.answer(found).to_vec(),
            generation: list.generation(),
            ede: {
                let policy = self.policy.load();
                blocked_ede(
                    category,
                    policy.block.ede_names_feed.then_some(feed),
                    &policy.block,
                )
            },
            feed: feed.to_owned(),
            category: category.to_owned(),
            indicator: evidence.indicator.map(str::to_owned),
        }
    }

    /// The client-IP trigger for this client, if any (the block response
    /// speaks for `qname`). Costs nothing while no feed has one.
    pub(super) fn check_client(&self, client: IpAddr, qname: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let (found, net) = list.lookup_client(client)?;
        Some(self.listed(&list, &found, qname.clone(), Some(net)))
    }

    /// The answer-IP policy's entry for an address in the answer, owned by
    /// `owner`.
    fn check_address(&self, ip: IpAddr, owner: &Name) -> Option<Listed> {
        let list = self.blocklist.load();
        let (found, net) = list.lookup_address(ip)?;
        Some(self.listed(&list, &found, owner.clone(), Some(net)))
    }

    /// Hand a hit record to the writer (never waits); `qname` is the
    /// query name as the hit log spells it.
    fn record(
        &self,
        cx: QueryContext,
        stage: Stage,
        qname: &str,
        evidence: Evidence<'_>,
        matched: &str,
        action: &str,
    ) {
        let policy = self.policy.load();
        let hit = HitRef {
            ts: now_ms(),
            org: cx.org.map(|o| policy.orgs.id(o)),
            client: cx.client,
            transport: cx.transport,
            qname,
            qtype: cx.qtype.into(),
            stage,
            matched,
            feed: evidence.feed,
            category: evidence.category,
            indicator: evidence.indicator,
            action,
            repeats: 1,
            last_ts: None,
        };
        // A check's decisions go to the check's report, not the hit log.
        let checked = super::check::CHECKING.try_with(|c| {
            c.borrow_mut()
                .push(crate::hitlog::PackedHit::pack(&hit).unpack())
        });
        if checked.is_err() && self.hits.is_enabled() {
            self.hits.send(hit);
        }
        if checked.is_err() && self.tap.is_some() {
            crate::dnstap::note(crate::dnstap::PolicyNote {
                stage,
                matched: matched.into(),
                feed: evidence.feed.into(),
                action: action.into(),
            });
        }
    }

    /// What this client's organisation makes of a listed entry found at
    /// `checked` (no side effects).
    pub(super) fn judge<'a>(
        client_policy: &'a ClientPolicy,
        org: Option<OrgId>,
        checked: &str,
        listed: &Listed,
    ) -> Judgement<'a> {
        Handler::judge_entry(
            client_policy,
            org,
            checked,
            listed.verdict,
            &listed.category,
            listed.action,
        )
    }

    /// [`Handler::judge`] of an entry's parts: its verdict, category and
    /// the action its feed gives.
    pub(super) fn judge_entry<'a>(
        client_policy: &'a ClientPolicy,
        org: Option<OrgId>,
        checked: &str,
        verdict: Verdict,
        category: &str,
        action: Action,
    ) -> Judgement<'a> {
        let policy = org.map(|o| client_policy.orgs.policy(o));
        let org_allow = policy.and_then(|p| p.allowed(checked));
        if verdict == Verdict::Allow || org_allow.is_some() {
            return Judgement::Excepted(org_allow);
        }
        Judgement::Blocks(policy.and_then(|p| p.action(category)).unwrap_or(action))
    }

    /// Count a block and record its hit.
    pub(super) fn count_block(
        &self,
        cx: QueryContext,
        stage: Stage,
        qname: &str,
        evidence: Evidence<'_>,
        action: Action,
        matched: &str,
    ) {
        if !super::check::checking() {
            ::metrics::counter!(telemetry::BLOCKS, "category" => evidence.category.to_owned(), "action" => action.as_str())
                .increment(1);
        }
        self.record(cx, stage, qname, evidence, matched, action.as_str());
    }

    /// What this client's organisation does with a listed name found at
    /// `stage` (the query name, or a CNAME target `checked`): `None` when
    /// an exception lets it through, else the action. Records the hit.
    pub(super) fn decide(
        &self,
        cx: QueryContext,
        stage: Stage,
        qname: &str,
        checked: &str,
        listed: &Listed,
    ) -> Option<Action> {
        let policy = self.policy.load();
        match Handler::judge(&policy, cx.org, checked, listed) {
            Judgement::Excepted(org_allow) => {
                // An exception let it through; with log_allowed, say so.
                if policy.log_allowed || super::check::checking() {
                    let matched = org_allow.map_or_else(|| matched_text(listed), str::to_owned);
                    self.record(cx, stage, qname, listed.evidence(), &matched, "allow");
                }
                None
            }
            Judgement::Blocks(action) => {
                let matched = matched_text(listed);
                self.count_block(cx, stage, qname, listed.evidence(), action, &matched);
                Some(action)
            }
        }
    }

    /// The action an entry found in an answer (at `name`, for the query
    /// `qname`) takes for this client: `None` when it lets the answer
    /// through (an exception, or monitor mode, whose hit is recorded here
    /// and the inspection goes on).
    pub(super) fn blocks_in_answer(
        &self,
        cx: QueryContext,
        stage: Stage,
        qname: &Name,
        name: &Name,
        listed: &Listed,
    ) -> Option<Action> {
        let (query, checked) = (plain(qname), plain(name));
        match self.decide(cx, stage, &query, &checked, listed) {
            Some(Action::Log) | None => None,
            action => action,
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
    pub(super) fn inspect_answer(
        &self,
        cx: QueryContext,
        qname: &Name,
        answers: &[Record],
        touched: &mut bool,
    ) -> Option<(Vec<Record>, Name, Listed, Action)> {
        let blocks = |stage, name: &Name, listed: &Listed| {
            self.blocks_in_answer(cx, stage, qname, name, listed)
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
