//! dnsmasq configuration lines, as blocklists for dnsmasq are written.
//! Every `/name/` covers the name and all names below it (dnsmasq's own
//! meaning), and one line may list several names (`/a/b/`).
//!
//! | line | meaning here |
//! |---|---|
//! | `address=/name/#`, `/0.0.0.0`, `/::` | block (configured action) |
//! | `address=/name/` | NXDOMAIN |
//! | `address=/name/192.0.2.1` | answer with that address (sinkhole) |
//! | `server=/name/`, `local=/name/` | NXDOMAIN ("answer from local data only") |
//! | `server=/name/#` | exception: resolve normally |
//! | `server=/name/1.2.3.4` | forwarding, not blocking: skipped |
//!
//! Other dnsmasq options in the file are skipped, not rejected.

use std::net::IpAddr;

use super::{Indicator, LineError, LineOutcome, Scope, Verdict};
use crate::domain;
use crate::policy::Action;

pub(super) fn parse_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    let text = line.split('#').next().unwrap_or("");
    // `#` is also the "null address" value, so only strip real comments.
    let text = if line.trim_start().starts_with('#') {
        ""
    } else if text.contains('/') {
        line.trim()
    } else {
        text.trim()
    };
    if text.is_empty() {
        return Ok(LineOutcome::Empty);
    }
    let Some((key, value)) = text.split_once('=') else {
        return Ok(LineOutcome::Skipped("dnsmasq option"));
    };
    let key = key.trim();
    if !matches!(key, "address" | "server" | "local") {
        return Ok(LineOutcome::Skipped("dnsmasq option"));
    }
    let value = value.trim();
    let rest = value
        .strip_prefix('/')
        .ok_or_else(|| LineError::Syntax(format!("{key}= value must start with /")))?;
    let Some((domains, target)) = rest.rsplit_once('/') else {
        return Err(LineError::Syntax("missing closing /".into()));
    };
    let target = target.trim();
    let (verdict, action, local) = match (key, target) {
        ("address", "#") => (Verdict::Block, None, None),
        ("address", "") => (Verdict::Block, Some(Action::Nxdomain), None),
        ("address", addr) => {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| LineError::Syntax(format!("{addr:?} is not an address")))?;
            if ip.is_unspecified() {
                (Verdict::Block, None, None)
            } else {
                (Verdict::Block, Some(Action::Sinkhole), Some(ip))
            }
        }
        (_, "") => (Verdict::Block, Some(Action::Nxdomain), None),
        ("server", "#") => (Verdict::Allow, None, None),
        _ => return Ok(LineOutcome::Skipped("dnsmasq forwarding rule")),
    };
    let mut names = Vec::new();
    for d in domains.split('/').filter(|d| !d.is_empty()) {
        names.push(domain::normalize(d)?);
    }
    if names.is_empty() {
        return Err(LineError::MissingColumn("domain"));
    }
    let count = names.len();
    for name in names {
        let mut indicator = Indicator::block(name, Scope::Subtree);
        indicator.verdict = verdict;
        indicator.action = action;
        indicator.local = local.into_iter().collect();
        sink(indicator);
    }
    Ok(LineOutcome::Loaded(count))
}

#[cfg(test)]
mod tests {
    use super::super::{Format, parse_full};
    use super::*;

    #[test]
    fn golden_dnsmasq() {
        let text = "# dnsmasq\naddress=/ads.example/#\naddress=/a.example/b.example/0.0.0.0\n\
                    address=/nx.example/\naddress=/sink.example/192.0.2.9\nserver=/local-only.example/\n\
                    local=/lan.example/\nserver=/ok.example/#\nserver=/fwd.example/10.0.0.1\n\
                    cache-size=1000\naddress=ads.example/#\naddress=/bad name.example/#\n";
        let (got, report) = parse_full(text, Format::Dnsmasq);
        let rows: Vec<(&str, Verdict, Option<Action>, usize)> = got
            .iter()
            .map(|((n, _, v, ..), a, l)| (n.as_str(), *v, *a, l.len()))
            .collect();
        assert_eq!(
            rows,
            [
                ("ads.example", Verdict::Block, None, 0),
                ("a.example", Verdict::Block, None, 0),
                ("b.example", Verdict::Block, None, 0),
                ("nx.example", Verdict::Block, Some(Action::Nxdomain), 0),
                ("sink.example", Verdict::Block, Some(Action::Sinkhole), 1),
                (
                    "local-only.example",
                    Verdict::Block,
                    Some(Action::Nxdomain),
                    0
                ),
                ("lan.example", Verdict::Block, Some(Action::Nxdomain), 0),
                ("ok.example", Verdict::Allow, None, 0),
            ]
        );
        assert!(got.iter().all(|((_, s, ..), ..)| *s == Scope::Subtree));
        assert_eq!(report.skipped.get("dnsmasq forwarding rule"), Some(&1));
        assert_eq!(report.skipped.get("dnsmasq option"), Some(&1));
        assert_eq!(report.rejected, 2);
    }
}
