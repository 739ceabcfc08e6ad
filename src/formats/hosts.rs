//! Hosts files: `ADDRESS NAME [NAME...]`, `#` comments (whole line or
//! inline). Each name is an exact entry, as the hosts file means it.
//!
//! A null address (`0.0.0.0`, `127.0.0.1`, `::`, `::1`) is the blocklist
//! convention for "block": the entry takes the configured action. Any
//! other address is local data: the name is answered with that address
//! (the sinkhole action). The loopback names every hosts file starts with
//! (`localhost`, `broadcasthost`, ...) are skipped, not rejected.

use std::net::IpAddr;

use super::{Indicator, LineError, LineOutcome, Scope};
use crate::domain;
use crate::policy::Action;

const HOUSEKEEPING: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

fn is_null(addr: IpAddr) -> bool {
    addr.is_unspecified() || addr.is_loopback()
}

pub(super) fn parse_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    let text = line.split('#').next().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(LineOutcome::Empty);
    }
    let mut tokens = text.split_whitespace();
    let addr_text = tokens.next().unwrap_or("");
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| LineError::Syntax(format!("{addr_text:?} is not an IP address")))?;
    let names: Vec<&str> = tokens.collect();
    if names.is_empty() {
        return Err(LineError::MissingColumn("host name"));
    }
    // Validate every name first: a line is loaded whole or not at all.
    let mut normalised = Vec::with_capacity(names.len());
    for name in &names {
        if HOUSEKEEPING.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        normalised.push(domain::normalize(name)?);
    }
    if normalised.is_empty() {
        return Ok(LineOutcome::Skipped("hosts housekeeping (localhost)"));
    }
    let count = normalised.len();
    for name in normalised {
        let mut indicator = Indicator::block(name, Scope::Exact);
        if !is_null(addr) {
            indicator.action = Some(Action::Sinkhole);
            indicator.local = vec![addr];
        }
        sink(indicator);
    }
    Ok(LineOutcome::Loaded(count))
}

#[cfg(test)]
mod tests {
    use super::super::{Format, parse_full};
    use super::*;

    #[test]
    fn golden_hosts() {
        let text = "# hosts\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n0.0.0.0 0.0.0.0\n\
                    0.0.0.0 Ads.Example.COM. tracker.example # inline\r\n\
                    127.0.0.1\tspy.example\n:: v6null.example\n192.0.2.7 redirect.example\n\
                    0.0.0.0 bad_name!.example\nnot-an-ip evil.example\n0.0.0.0\n0.0.0.0 last.exam";
        let (got, report) = parse_full(text, Format::Hosts);
        let names: Vec<(&str, Scope, Option<Action>, &[IpAddr])> = got
            .iter()
            .map(|((n, s, ..), a, l)| (n.as_str(), *s, *a, l.as_slice()))
            .collect();
        let sinkhole: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            names,
            [
                ("ads.example.com", Scope::Exact, None, &[][..]),
                ("tracker.example", Scope::Exact, None, &[][..]),
                ("spy.example", Scope::Exact, None, &[][..]),
                ("v6null.example", Scope::Exact, None, &[][..]),
                (
                    "redirect.example",
                    Scope::Exact,
                    Some(Action::Sinkhole),
                    &[sinkhole][..]
                ),
                ("last.exam", Scope::Exact, None, &[][..]),
            ]
        );
        assert_eq!(
            report.skipped.get("hosts housekeeping (localhost)"),
            Some(&3)
        );
        let lines: Vec<usize> = report.first_rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, [9, 10, 11]);
    }
}
