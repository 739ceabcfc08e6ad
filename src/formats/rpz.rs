//! Response Policy Zones (draft-vixie-dnsop-dns-rpz) in RFC 1035
//! master-file syntax: `$ORIGIN`, `$TTL`, `;` comments, `( ... )`
//! continuations, owner names relative to the origin or absolute under it,
//! a blank owner repeating the previous one.
//!
//! QNAME triggers: `name` is an exact entry, `*.name` covers the names below
//! `name`. Response IP triggers (`32.1.2.0.192.rpz-ip` = 192.0.2.1/32,
//! `48.zz.db8.2001.rpz-ip` = 2001:db8::/48) become address indicators for
//! the answer-IP policy, with the same actions (their local data is not
//! supported and is skipped). Policy actions:
//!
//! | record | meaning here |
//! |---|---|
//! | `CNAME .` | NXDOMAIN |
//! | `CNAME *.` | NODATA |
//! | `CNAME rpz-passthru.` (or the name itself) | exception |
//! | `CNAME rpz-drop.` | drop |
//! | `A` / `AAAA` local data | answer with those addresses |
//!
//! Consecutive A/AAAA records of one owner make one answer set; records of
//! one owner that are not consecutive are separate entries and the first
//! wins. `rpz-client-ip` triggers (`32.2.0.0.127.rpz-client-ip`) match the
//! client's source address, `rpz-nsdname` triggers (`ns.example.rpz-nsdname`,
//! `*.example.rpz-nsdname`) the names of the answering zone's name servers
//! and `rpz-nsip` triggers (same form as `rpz-ip`) their addresses, with
//! the same actions (see `server::name_servers`). Local data on these
//! triggers, `CNAME` redirects to other names, `rpz-tcp-only`, and other
//! local-data types are skipped and counted by kind. SOA and NS at the
//! apex are the zone's own records.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Indicator, LineError, LineOutcome, LineParser, Scope, Subject, Verdict};
use crate::domain;
use crate::policy::Action;

/// Cheap test used by format detection: `owner [ttl] [class] TYPE rdata`
/// with an RPZ-ish type.
pub(super) fn looks_like_record(line: &str) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().take(5).collect();
    tokens
        .iter()
        .skip(1)
        .any(|t| t.eq_ignore_ascii_case("CNAME") || t.eq_ignore_ascii_case("SOA"))
}

#[derive(Default)]
pub(super) struct RpzParser {
    /// Zone origin without the trailing dot, lower case.
    origin: Option<String>,
    /// Owner of the previous record, as written (for blank owners).
    last_owner: Option<String>,
    /// A record cut by an open parenthesis, waiting for its `)`.
    continued: Option<String>,
    /// Local data being gathered for one owner.
    pending: Option<(String, Scope, Vec<IpAddr>)>,
    /// `<zone> serial <N>` once the apex SOA is read: every entry's
    /// indicator, so a hit names the zone version that listed it.
    detail: Option<std::rc::Rc<str>>,
}

impl RpzParser {
    fn flush(&mut self, sink: &mut dyn FnMut(Indicator<'_>)) -> usize {
        let detail = self.detail.clone();
        match self.pending.take() {
            Some((name, scope, addrs)) => {
                let mut indicator = Indicator::block(name, scope);
                indicator.detail = detail.as_deref();
                indicator.action = Some(Action::Sinkhole);
                indicator.local = addrs;
                sink(indicator);
                1
            }
            None => 0,
        }
    }

    /// The trigger part of an owner name: relative to the origin.
    fn trigger(&self, owner: &str) -> Result<Option<String>, LineError> {
        if owner == "@" {
            return Ok(None);
        }
        let lower = owner.to_ascii_lowercase();
        let Some(absolute) = lower.strip_suffix('.') else {
            return Ok(Some(lower));
        };
        let Some(origin) = &self.origin else {
            return Err(LineError::Syntax(format!(
                "absolute owner {owner:?} before any $ORIGIN or SOA"
            )));
        };
        if absolute == origin {
            return Ok(None);
        }
        match absolute
            .strip_suffix(origin.as_str())
            .and_then(|r| r.strip_suffix('.'))
        {
            Some(relative) => Ok(Some(relative.to_owned())),
            None => Err(LineError::Syntax(format!(
                "owner {owner:?} is outside the zone {origin}"
            ))),
        }
    }

    fn record(
        &mut self,
        text: &str,
        owner_given: bool,
        sink: &mut dyn FnMut(Indicator<'_>),
    ) -> Result<LineOutcome, LineError> {
        let mut tokens = text.split_whitespace();
        let owner = if owner_given {
            let owner = tokens.next().unwrap_or_default().to_owned();
            self.last_owner = Some(owner.clone());
            owner
        } else {
            self.last_owner
                .clone()
                .ok_or_else(|| LineError::Syntax("record without an owner".into()))?
        };
        let mut rtype = None;
        for token in tokens.by_ref() {
            let upper = token.to_ascii_uppercase();
            if token.chars().next().is_some_and(|c| c.is_ascii_digit())
                || matches!(upper.as_str(), "IN" | "CH" | "HS" | "CS")
            {
                continue;
            }
            rtype = Some(upper);
            break;
        }
        let rtype = rtype.ok_or(LineError::MissingColumn("record type"))?;
        let rdata: Vec<&str> = tokens.collect();
        if rtype == "SOA" && self.origin.is_none() && owner.ends_with('.') {
            self.origin = Some(owner.trim_end_matches('.').to_ascii_lowercase());
        }
        let Some(trigger) = self.trigger(&owner)? else {
            // The zone's own SOA and NS.
            if rtype == "SOA"
                && let (Some(origin), Some(serial)) = (&self.origin, rdata.get(2))
                && serial.parse::<u32>().is_ok()
            {
                self.detail = Some(format!("{origin} serial {serial}").into());
            }
            return Ok(LineOutcome::Empty);
        };
        let detail = self.detail.clone();
        for (suffix, subject, kind) in [
            (".rpz-ip", Subject::Query, "rpz-ip local data"),
            (
                ".rpz-client-ip",
                Subject::Client,
                "rpz-client-ip local data",
            ),
            (".rpz-nsip", Subject::NameServer, "rpz-nsip local data"),
        ] {
            if let Some(address) = trigger.strip_suffix(suffix) {
                let flushed = self.flush(sink);
                let net = rpz_ip(address)?;
                let (verdict, action) = match trigger_policy(&rtype, &rdata, kind)? {
                    Ok(found) => found,
                    Err(skipped) => return Ok(LineOutcome::Skipped(skipped)),
                };
                let mut indicator = Indicator::address(net);
                indicator.subject = subject;
                indicator.detail = detail.as_deref();
                indicator.verdict = verdict;
                indicator.action = (verdict == Verdict::Block).then_some(action);
                sink(indicator);
                return Ok(LineOutcome::Loaded(flushed + 1));
            }
        }
        if let Some(ns) = trigger.strip_suffix(".rpz-nsdname") {
            let flushed = self.flush(sink);
            let (scope, name) = match ns.strip_prefix("*.") {
                Some(rest) => (Scope::Below, rest),
                None => (Scope::Exact, ns),
            };
            let name = domain::normalize(name)?;
            let (verdict, action) = match trigger_policy(&rtype, &rdata, "rpz-nsdname local data")?
            {
                Ok(found) => found,
                Err(skipped) => return Ok(LineOutcome::Skipped(skipped)),
            };
            let mut indicator = Indicator::block(name, scope);
            indicator.subject = Subject::NameServer;
            indicator.detail = detail.as_deref();
            indicator.verdict = verdict;
            indicator.action = (verdict == Verdict::Block).then_some(action);
            sink(indicator);
            return Ok(LineOutcome::Loaded(flushed + 1));
        }
        let (scope, name) = match trigger.strip_prefix("*.") {
            Some(rest) => (Scope::Below, rest),
            None => (Scope::Exact, trigger.as_str()),
        };
        let name = domain::normalize(name)?;
        let mut flushed = 0;
        match rtype.as_str() {
            "A" | "AAAA" => {
                let text = rdata.first().ok_or(LineError::MissingColumn("address"))?;
                let addr: IpAddr = text
                    .parse()
                    .map_err(|_| LineError::Syntax(format!("{text:?} is not an address")))?;
                if (rtype == "A") != addr.is_ipv4() {
                    return Err(LineError::Syntax(format!(
                        "{rtype} record with address {addr}"
                    )));
                }
                match &mut self.pending {
                    Some((n, s, addrs)) if *n == name && *s == scope => {
                        addrs.push(addr);
                        Ok(LineOutcome::Loaded(0))
                    }
                    _ => {
                        let flushed = self.flush(sink);
                        self.pending = Some((name, scope, vec![addr]));
                        Ok(LineOutcome::Loaded(flushed))
                    }
                }
            }
            "CNAME" => {
                flushed += self.flush(sink);
                let target = rdata
                    .first()
                    .ok_or(LineError::MissingColumn("CNAME target"))?
                    .to_ascii_lowercase();
                let (verdict, action) = match policy_action(&target, Some(&name)) {
                    Ok(found) => found,
                    Err(skipped) => return Ok(LineOutcome::Skipped(skipped)),
                };
                let mut indicator = Indicator::block(name, scope);
                indicator.detail = detail.as_deref();
                indicator.verdict = verdict;
                indicator.action = (verdict == Verdict::Block).then_some(action);
                sink(indicator);
                Ok(LineOutcome::Loaded(flushed + 1))
            }
            "SOA" | "NS" => Ok(LineOutcome::Skipped("rpz NS/SOA below the apex")),
            "TXT" | "MX" | "PTR" | "SRV" | "DNAME" | "HTTPS" | "SVCB" | "CAA" => {
                let _ = flushed;
                Ok(LineOutcome::Skipped("rpz local data other than A/AAAA"))
            }
            other => Err(LineError::Syntax(format!("unknown record type {other:?}"))),
        }
    }
}

/// The policy of a trigger that is not a query name (`rpz-ip`,
/// `rpz-client-ip`, `rpz-nsdname`, `rpz-nsip`): a `CNAME` action, or
/// or what is skipped: its local data (counted under `local`),
/// `rpz-tcp-only` or a redirect.
fn trigger_policy(
    rtype: &str,
    rdata: &[&str],
    local: &'static str,
) -> Result<Result<(Verdict, Action), &'static str>, LineError> {
    match (rtype, rdata.first()) {
        ("CNAME", Some(t)) => Ok(policy_action(&t.to_ascii_lowercase(), None)),
        ("CNAME", None) => Err(LineError::MissingColumn("CNAME target")),
        _ => Ok(Err(local)),
    }
}

/// The policy a `CNAME` target (lower case) stands for; `Err` names what
/// is skipped. `owner` is the trigger's name: the old-style PASSTHRU is a
/// CNAME to the name itself (QNAME triggers only).
fn policy_action(target: &str, owner: Option<&str>) -> Result<(Verdict, Action), &'static str> {
    Ok(match target {
        "." => (Verdict::Block, Action::Nxdomain),
        "*." => (Verdict::Block, Action::Nodata),
        "rpz-passthru." => (Verdict::Allow, Action::Nxdomain),
        "rpz-drop." => (Verdict::Block, Action::Drop),
        "rpz-tcp-only." => return Err("rpz-tcp-only action"),
        t if owner.is_some_and(|o| t.trim_end_matches('.') == o) => {
            (Verdict::Allow, Action::Nxdomain)
        }
        _ => return Err("rpz CNAME redirect"),
    })
}

/// The network of an `rpz-ip` trigger (without `.rpz-ip`): the prefix
/// length, then the address's octets (IPv4) or 16-bit words (IPv6, `zz`
/// for the `::` run) in reverse order.
fn rpz_ip(text: &str) -> Result<IpNet, LineError> {
    let bad = || LineError::Syntax(format!("{text:?} is not an rpz-ip trigger"));
    let (len, rest) = text.split_once('.').ok_or_else(bad)?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let mut parts: Vec<&str> = rest.split('.').collect();
    parts.reverse();
    let addr: IpAddr = if parts.len() == 4 && len <= 32 {
        parts.join(".").parse().map_err(|_| bad())?
    } else {
        let mut v6 = parts.join(":").replace("zz", "");
        if v6.is_empty() {
            v6.push_str("::");
        }
        if v6.starts_with(':') && !v6.starts_with("::") {
            v6.insert(0, ':');
        }
        if v6.ends_with(':') && !v6.ends_with("::") {
            v6.push(':');
        }
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?.into()
    };
    IpNet::new(addr, len).map_err(|_| bad())
}

/// Remove a `;` comment (outside double quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

impl LineParser for RpzParser {
    fn line(
        &mut self,
        line: &str,
        sink: &mut dyn FnMut(Indicator<'_>),
    ) -> Result<LineOutcome, LineError> {
        let text = strip_comment(line);
        if let Some(mut held) = self.continued.take() {
            held.push(' ');
            held.push_str(text);
            if !text.contains(')') {
                self.continued = Some(held);
                return Ok(LineOutcome::Empty);
            }
            let joined = held.replace(['(', ')'], " ");
            let owner_given = !joined.starts_with(char::is_whitespace);
            return self.record(&joined, owner_given, sink);
        }
        if text.trim().is_empty() {
            return Ok(LineOutcome::Empty);
        }
        if text.contains('(') && !text.contains(')') {
            self.continued = Some(text.to_owned());
            return Ok(LineOutcome::Empty);
        }
        let trimmed = text.trim();
        if let Some(rest) = trimmed.strip_prefix("$ORIGIN") {
            let origin = rest.trim().trim_end_matches('.').to_ascii_lowercase();
            if origin.is_empty() {
                return Err(LineError::MissingColumn("$ORIGIN name"));
            }
            self.origin = Some(origin);
            return Ok(LineOutcome::Empty);
        }
        if trimmed.starts_with("$TTL") {
            return Ok(LineOutcome::Empty);
        }
        if trimmed.starts_with('$') {
            return Err(LineError::Unsupported(format!(
                "directive {}",
                trimmed.split_whitespace().next().unwrap_or("")
            )));
        }
        // Most lines have no parentheses: no copy for them.
        let owner_given = !text.starts_with(char::is_whitespace);
        if text.contains(['(', ')']) {
            return self.record(&text.replace(['(', ')'], " "), owner_given, sink);
        }
        self.record(text, owner_given, sink)
    }

    fn finish(&mut self, sink: &mut dyn FnMut(Indicator<'_>)) -> usize {
        self.flush(sink)
    }
}

#[cfg(test)]
mod tests;
