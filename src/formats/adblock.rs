//! AdBlock-style DNS rules, the subset DNS blockers (AdGuard Home,
//! Pi-hole, Blocky) share: `||name^` blocks the name and every name below
//! it; `@@||name^` makes the same an exception; `!` and `#` lines are
//! comments; `[Adblock ...]` is a header. A bare host name is an exact
//! entry, as in a hosts file.
//!
//! Anything else is rejected and counted, never guessed at: rules with
//! `$` modifiers (`$important`, `$client`, `$dnstype`, ...), regular
//! expressions, `*` wildcards, `|` anchors without `||`, paths, and
//! cosmetic (`##`) rules. A rule without the closing `^` would also match
//! longer host names (`||ex.com` matches `ex.community` in AdBlock), which
//! no DNS entry can express, so it is rejected too.

use super::{Indicator, LineError, LineOutcome, Scope, Verdict};
use crate::domain;

pub(super) fn parse_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    let text = line.trim();
    if text.is_empty()
        || text.starts_with('!')
        || text.starts_with('#') && !text.starts_with("##")
        || text.starts_with('[')
    {
        return Ok(LineOutcome::Empty);
    }
    if text.contains("##") || text.contains("#@#") || text.contains("#?#") {
        return Err(LineError::Unsupported(
            "cosmetic (element hiding) rule".into(),
        ));
    }
    if let Some((_, modifiers)) = text.split_once('$') {
        return Err(LineError::Unsupported(format!(
            "modifier ${modifiers} (only plain ||name^ rules are loaded)"
        )));
    }
    if text.starts_with('/') {
        return Err(LineError::Unsupported("regular-expression rule".into()));
    }
    let (verdict, rule) = match text.strip_prefix("@@") {
        Some(rest) => (Verdict::Allow, rest),
        None => (Verdict::Block, text),
    };
    let (scope, host) = if let Some(rest) = rule.strip_prefix("||") {
        let host = rest
            .strip_suffix("^|")
            .or_else(|| rest.strip_suffix('^'))
            .ok_or_else(|| {
                LineError::Unsupported(
                    "rule without the closing ^ also matches longer names".into(),
                )
            })?;
        (Scope::Subtree, host)
    } else if rule.starts_with('|') {
        return Err(LineError::Unsupported("| anchor (use ||name^)".into()));
    } else {
        (Scope::Exact, rule)
    };
    if host.contains('*') {
        return Err(LineError::Unsupported("* wildcard inside a rule".into()));
    }
    if host.contains('/') || host.contains(':') {
        return Err(LineError::Unsupported(
            "URL or port in a rule (DNS sees host names only)".into(),
        ));
    }
    let mut indicator = Indicator::block(domain::normalize(host)?, scope);
    indicator.verdict = verdict;
    sink(indicator);
    Ok(LineOutcome::Loaded(1))
}

#[cfg(test)]
mod tests {
    use super::super::{Format, LineError, parse_str};
    use super::*;

    #[test]
    fn golden_adblock() {
        let text = "[Adblock Plus 2.0]\n! Title: test\n||Ads.Example.com^\n@@||good.ads.example.com^\n\
                    ||end.example^|\nbare.example\n||imp.example^$important\n||noanchor.example\n\
                    /ads[0-9]+/\n||wild*.example^\nexample.com##.banner\n|http.example^\n||path.example/x^\n\
                    @@||xn--bcher-kva.example^\n";
        let (got, report) = parse_str(text, Format::Adblock);
        let names: Vec<(&str, Scope, Verdict)> = got
            .iter()
            .map(|(n, s, v, ..)| (n.as_str(), *s, *v))
            .collect();
        assert_eq!(
            names,
            [
                ("ads.example.com", Scope::Subtree, Verdict::Block),
                ("good.ads.example.com", Scope::Subtree, Verdict::Allow),
                ("end.example", Scope::Subtree, Verdict::Block),
                ("bare.example", Scope::Exact, Verdict::Block),
                ("xn--bcher-kva.example", Scope::Subtree, Verdict::Allow),
            ]
        );
        assert_eq!(report.rejected, 7);
        let first = &report.first_rejects[0];
        assert_eq!(first.line, 7);
        assert!(
            matches!(&first.error, LineError::Unsupported(m) if m.contains("$important")),
            "{first:?}"
        );
        assert!(
            matches!(&report.first_rejects[1].error, LineError::Unsupported(m) if m.contains("closing ^"))
        );
    }
}
