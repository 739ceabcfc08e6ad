//! Unbound `local-zone:` lines (the form Unbound blocklists are shipped
//! in). A local zone covers its name and every name below it.
//!
//! | type | meaning here |
//! |---|---|
//! | `always_nxdomain`, `static`, `redirect` without data | NXDOMAIN |
//! | `always_nodata` | NODATA |
//! | `refuse`, `always_refuse` | REFUSED |
//! | `deny`, `always_deny`, `inform_deny` | drop |
//! | `always_null` | answer 0.0.0.0 / :: |
//! | `transparent`, `typetransparent`, `always_transparent` | exception (resolve normally) |
//! | `inform` | monitor mode (log) |
//!
//! `server:` and `local-data:` lines are skipped; other types are
//! rejected with their name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Indicator, LineError, LineOutcome, Scope, Verdict};
use crate::domain;
use crate::policy::Action;

pub(super) fn parse_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    let text = line.split('#').next().unwrap_or("").trim();
    if text.is_empty() || text == "server:" {
        return Ok(LineOutcome::Empty);
    }
    let Some(rest) = text.strip_prefix("local-zone:") else {
        if text.starts_with("local-data:") || text.starts_with("local-data-ptr:") {
            return Ok(LineOutcome::Skipped("unbound local-data"));
        }
        return Ok(LineOutcome::Skipped("unbound option"));
    };
    let rest = rest.trim();
    let (name, kind) = match rest.strip_prefix('"') {
        Some(quoted) => quoted
            .split_once('"')
            .ok_or_else(|| LineError::Syntax("unterminated quote".into()))?,
        None => rest
            .split_once(char::is_whitespace)
            .ok_or(LineError::MissingColumn("zone type"))?,
    };
    let kind = kind.trim();
    let (verdict, action, local) = match kind {
        "always_nxdomain" | "static" | "redirect" => {
            (Verdict::Block, Some(Action::Nxdomain), Vec::new())
        }
        "always_nodata" => (Verdict::Block, Some(Action::Nodata), Vec::new()),
        "refuse" | "always_refuse" => (Verdict::Block, Some(Action::Refused), Vec::new()),
        "deny" | "always_deny" | "inform_deny" => (Verdict::Block, Some(Action::Drop), Vec::new()),
        "always_null" => (
            Verdict::Block,
            Some(Action::Sinkhole),
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
        ),
        "inform" => (Verdict::Block, Some(Action::Log), Vec::new()),
        "transparent" | "typetransparent" | "always_transparent" => {
            (Verdict::Allow, None, Vec::new())
        }
        "" => return Err(LineError::MissingColumn("zone type")),
        other => return Err(LineError::Unsupported(format!("local-zone type {other:?}"))),
    };
    let mut indicator = Indicator::block(domain::normalize(name)?, Scope::Subtree);
    indicator.verdict = verdict;
    indicator.action = action;
    indicator.local = local;
    sink(indicator);
    Ok(LineOutcome::Loaded(1))
}

#[cfg(test)]
mod tests {
    use super::super::{Format, parse_full};
    use super::*;

    #[test]
    fn golden_unbound() {
        let text = "server:\n  local-zone: \"NX.example.\" always_nxdomain\n  local-zone: \"null.example\" always_null\n\
                    local-zone: refuse.example refuse\nlocal-zone: \"static.example.\" static\n\
                    local-zone: \"ok.example.\" transparent # exception\n\
                    local-data: \"x.example. A 192.0.2.1\"\nlocal-zone: \"odd.example.\" nodefault\n\
                    local-zone: \"noquote.example.\nverbosity: 1\n";
        let (got, report) = parse_full(text, Format::Unbound);
        let rows: Vec<(&str, Verdict, Option<Action>, usize)> = got
            .iter()
            .map(|((n, _, v, ..), a, l)| (n.as_str(), *v, *a, l.len()))
            .collect();
        assert_eq!(
            rows,
            [
                ("nx.example", Verdict::Block, Some(Action::Nxdomain), 0),
                ("null.example", Verdict::Block, Some(Action::Sinkhole), 2),
                ("refuse.example", Verdict::Block, Some(Action::Refused), 0),
                ("static.example", Verdict::Block, Some(Action::Nxdomain), 0),
                ("ok.example", Verdict::Allow, None, 0),
            ]
        );
        assert_eq!(report.skipped.get("unbound local-data"), Some(&1));
        assert_eq!(report.skipped.get("unbound option"), Some(&1));
        assert_eq!(report.rejected, 2);
    }
}
