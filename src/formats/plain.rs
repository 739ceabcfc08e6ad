//! Plain domain lists: one name a line, `#` starts a comment (whole line or
//! after the name). A threat list entry covers the name and everything below
//! it (subtree); `*.name` covers only the names below `name`. A line that
//! is an address or a CIDR range is an address indicator (answer-IP policy).
//!
//! The wildcard format is the same syntax read as its publishers mean it:
//! `*.name` is the name and everything below it.

use super::{Indicator, LineError, LineOutcome, Scope};
use crate::domain;

pub(super) fn parse_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    parse_with(line, Scope::Below, sink)
}

/// A wildcard-domains list line: `*.name` is the name and everything below
/// it, as the lists' publishers and dnscrypt-proxy mean it.
pub(super) fn parse_wildcard_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    parse_with(line, Scope::Subtree, sink)
}

fn parse_with(
    line: &str,
    star_scope: Scope,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    let text = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(LineOutcome::Empty);
    }
    if let Some(net) = super::parse_net(text) {
        sink(Indicator::address(net));
        return Ok(LineOutcome::Loaded(1));
    }
    let (scope, name) = match text.strip_prefix("*.") {
        Some(rest) => (star_scope, rest),
        None => (Scope::Subtree, text),
    };
    sink(Indicator::block(domain::normalize(name)?, scope));
    Ok(LineOutcome::Loaded(1))
}

/// Cheap test used by format detection: could this token be a name?
pub(super) fn looks_like_name(token: &str) -> bool {
    let token = token.strip_prefix("*.").unwrap_or(token);
    token.contains('.') && domain::normalize(token).is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::{Format, parse_str};
    use super::*;
    use crate::domain::NameError;

    /// From the `feed_plain` fuzz target: `::` is an address (the IPv6
    /// unspecified one), read as an address indicator, never as a name.
    #[test]
    fn an_ipv6_address_line_is_an_address_not_a_name() {
        let (got, report) = parse_str("::\n", Format::Plain);
        let names: Vec<&str> = got.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(names, ["::/128"]);
        assert_eq!(report.rejected, 0);
    }

    #[test]
    fn a_wildcard_list_blocks_the_name_and_below() {
        let text = "# Title: wildcard\n*.evil.example\nbare.example\n192.0.2.1\n";
        let (got, report) = parse_str(text, Format::Wildcard);
        let names: Vec<(&str, Scope)> = got.iter().map(|(n, s, ..)| (n.as_str(), *s)).collect();
        assert_eq!(
            names,
            [
                ("evil.example", Scope::Subtree),
                ("bare.example", Scope::Subtree),
                ("192.0.2.1/32", Scope::Exact),
            ]
        );
        assert_eq!(report.rejected, 0);
    }

    #[test]
    fn golden_plain_list() {
        let text = "# comment\n\nEvil.Example.\nbad.example # inline\n*.wild.example\n\
                    _sip._tcp.example\nbücher.example\n192.0.2.1\nnot a name\n\
                    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\ntruncated.exa";
        let (got, report) = parse_str(text, Format::Plain);
        let names: Vec<(&str, Scope)> = got.iter().map(|(n, s, ..)| (n.as_str(), *s)).collect();
        assert_eq!(
            names,
            [
                ("evil.example", Scope::Subtree),
                ("bad.example", Scope::Subtree),
                ("wild.example", Scope::Below),
                ("_sip._tcp.example", Scope::Subtree),
                ("xn--bcher-kva.example", Scope::Subtree),
                ("192.0.2.1/32", Scope::Exact),
                ("truncated.exa", Scope::Subtree),
            ]
        );
        assert_eq!(report.lines, 11);
        assert_eq!(
            report.addresses, 0,
            "counted when the builder seals the feed"
        );
        assert_eq!(report.rejected, 2);
        let reasons: Vec<(usize, &LineError)> = report
            .first_rejects
            .iter()
            .map(|r| (r.line, &r.error))
            .collect();
        assert_eq!(
            reasons[0],
            (9, &LineError::Name(NameError::BadCharacter { ch: ' ' }))
        );
        assert_eq!(
            reasons[1],
            (10, &LineError::Name(NameError::LabelTooLong { len: 64 }))
        );
    }
}
