//! What the policy looks at in a query and its answer, as plain functions
//! over a [`Blocklist`] (the handler adds organisations, actions and hit
//! records on top; the `lookup` bench measures these directly).
//!
//! * [`lookup_name`]: the walk for one wire name, labels on the stack;
//! * [`cname_chain`]: the CNAME links from the query name through an
//!   answer, in order (a DNAME answer carries the CNAME synthesised from
//!   it, which is what gets followed);
//! * [`addresses`]: the A/AAAA addresses of an answer with their owners.
//!
//! None of them allocates; an answer without CNAMEs costs one scan.

use std::net::IpAddr;

use hickory_proto::rr::{Name, RData, Record};

use crate::blocklist::{Blocklist, Match};

/// The entry that decides `name`, if any.
pub fn lookup_name(list: &Blocklist, name: &Name) -> Option<Match> {
    // The lookup takes labels right to left, more than once (hashing,
    // then a walk per layer that may hold the name); hickory's iterator
    // is cheap to make again but cannot be cloned.
    list.lookup_by(|| name.iter().rev())
}

/// The CNAME links from `qname` through `answers`: each link's record and
/// the name it points to, in chain order. Stops at a name with no CNAME,
/// and after as many links as the answer has records (a loop ends there).
pub fn cname_chain<'a>(
    qname: &'a Name,
    answers: &'a [Record],
) -> impl Iterator<Item = (&'a Record, &'a Name)> + 'a {
    let mut current = qname;
    let mut left = if answers.iter().any(|r| matches!(r.data, RData::CNAME(_))) {
        answers.len()
    } else {
        0
    };
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let (record, target) = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == *current => Some((r, &c.0)),
            _ => None,
        })?;
        current = target;
        Some((record, target))
    })
}

/// The chain's records from `qname` up to the link that points at
/// `name` (all of them if none does); none when `name` is the query name.
/// Copied only when an answer is blocked.
pub fn chain_to(qname: &Name, answers: &[Record], name: &Name) -> Vec<Record> {
    let mut chain = Vec::new();
    if qname == name {
        return chain;
    }
    for (record, target) in cname_chain(qname, answers) {
        chain.push(record.clone());
        if target == name {
            break;
        }
    }
    chain
}

/// The addresses in an answer, with the name that owns each.
pub fn addresses(answers: &[Record]) -> impl Iterator<Item = (IpAddr, &Name)> {
    answers.iter().filter_map(|r| match &r.data {
        RData::A(a) => Some((IpAddr::V4(a.0), &r.name)),
        RData::AAAA(a) => Some((IpAddr::V6(a.0), &r.name)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn the_chain_is_followed_in_order_whatever_the_record_order() {
        let q = name("a.example.");
        let answers = vec![
            Record::from_rdata(name("c.example."), 60, RData::A(A::new(192, 0, 2, 1))),
            Record::from_rdata(
                name("b.example."),
                60,
                RData::CNAME(CNAME(name("c.example."))),
            ),
            Record::from_rdata(
                name("a.example."),
                60,
                RData::CNAME(CNAME(name("b.example."))),
            ),
        ];
        let targets: Vec<String> = cname_chain(&q, &answers)
            .map(|(_, t)| t.to_string())
            .collect();
        assert_eq!(targets, ["b.example.", "c.example."]);
        let owners = |to: &str| -> Vec<String> {
            chain_to(&q, &answers, &name(to))
                .iter()
                .map(|r| r.name.to_string())
                .collect()
        };
        assert_eq!(owners("b.example."), ["a.example."]);
        assert_eq!(owners("c.example."), ["a.example.", "b.example."]);
        assert!(owners("a.example.").is_empty());
        let addrs: Vec<String> = addresses(&answers)
            .map(|(ip, owner)| format!("{owner} {ip}"))
            .collect();
        assert_eq!(addrs, ["c.example. 192.0.2.1"]);
    }

    #[test]
    fn a_cname_loop_ends() {
        let q = name("a.example.");
        let answers = vec![
            Record::from_rdata(
                name("a.example."),
                60,
                RData::CNAME(CNAME(name("b.example."))),
            ),
            Record::from_rdata(
                name("b.example."),
                60,
                RData::CNAME(CNAME(name("a.example."))),
            ),
        ];
        assert_eq!(cname_chain(&q, &answers).count(), 2);
    }
}
