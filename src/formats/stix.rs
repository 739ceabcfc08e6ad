//! STIX 2.0 and 2.1 indicators (JSON: a bundle, one object, or an array).
//!
//! Only `indicator` objects are read; `observed-data` and everything else
//! describe or relate, they do not indicate, and are ignored. An indicator
//! becomes blocklist entries when its STIX pattern is one or more
//! comparisons joined by OR, each `path = 'value'` on one of:
//!
//! * `domain-name:value`: a subtree entry for the domain;
//! * `url:value`: the host, **only** when the URL is nothing but a host
//!   (`http://evil.example/` or `evil.example`). A URL with a path names
//!   one resource, often on a shared host (`dropbox.com/s/...`); blocking
//!   the whole host for it would take down the hoster, so it is skipped;
//! * `ipv4-addr:value`, `ipv6-addr:value`: an address or CIDR range, an
//!   address indicator for the answer-IP policy.
//!
//! Patterns with AND, FOLLOWEDBY, qualifiers (WITHIN, REPEATS, START/STOP),
//! other operators, or other object types are skipped and counted by kind.
//!
//! `revoked: true` removes an indicator, and so does a `valid_until` in the
//! past; a `valid_from` in the future keeps it out until then. When one id
//! appears in several versions, the latest `modified` wins. The category
//! is the first of `indicator_types` (2.1), `labels` (2.0) or the first
//! kill-chain phase name; the STIX id is the entry's detail, carried into
//! hit records.
//!
//! This file owns the document, versions and validity; reading a pattern
//! is in `pattern`.

mod pattern;

use std::collections::HashMap;
use std::io::Read;
use std::time::SystemTime;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use self::pattern::{PatternError, parse_pattern, url_host};
use super::{Indicator, LineError, ParseCounts, ReadError, Scope};
use crate::domain;

#[derive(Debug, Deserialize)]
struct Object {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    /// A bundle's contents (observed-data uses the same key for a map).
    #[serde(default)]
    objects: Option<Objects>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    pattern_type: Option<String>,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    modified: Option<String>,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_until: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    indicator_types: Vec<String>,
    #[serde(default)]
    kill_chain_phases: Vec<KillChainPhase>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Objects {
    List(Vec<Object>),
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct KillChainPhase {
    phase_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Document {
    Many(Vec<Object>),
    One(Box<Object>),
}

fn timestamp(text: &Option<String>) -> Result<Option<OffsetDateTime>, LineError> {
    text.as_deref()
        .map(|t| {
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|e| LineError::Syntax(format!("timestamp {t:?}: {e}")))
        })
        .transpose()
}

/// Parse a STIX document; `now` decides what is expired.
pub fn parse(
    mut reader: impl Read,
    now: SystemTime,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseCounts, ReadError> {
    let mut text = Vec::new();
    reader.read_to_end(&mut text)?;
    let document: Document =
        serde_json::from_slice(&text).map_err(|e| ReadError::Stix(e.to_string()))?;
    let objects = match document {
        Document::Many(objects) => objects,
        Document::One(bundle) if bundle.kind == "bundle" => match bundle.objects {
            Some(Objects::List(objects)) => objects,
            _ => Vec::new(),
        },
        Document::One(object) => vec![*object],
    };
    let now = OffsetDateTime::from(now);
    let mut report = ParseCounts {
        lines: objects.len(),
        ..ParseCounts::default()
    };

    // Latest version of each indicator id (STIX 2.1 3.6 versioning).
    let mut latest: HashMap<&str, (usize, Option<OffsetDateTime>)> = HashMap::new();
    for (i, object) in objects.iter().enumerate() {
        if object.kind != "indicator" {
            continue;
        }
        let Some(id) = object.id.as_deref() else {
            continue;
        };
        let modified = timestamp(&object.modified).ok().flatten();
        match latest.get(id) {
            Some((_, seen)) if *seen >= modified => {}
            _ => {
                latest.insert(id, (i, modified));
            }
        }
    }

    for (i, object) in objects.iter().enumerate() {
        if object.kind != "indicator" {
            continue;
        }
        let position = i + 1;
        if let Some(id) = object.id.as_deref()
            && latest.get(id).is_some_and(|(winner, _)| *winner != i)
        {
            report.skip("superseded version");
            continue;
        }
        if object.revoked {
            report.revoked += 1;
            continue;
        }
        let (valid_from, valid_until) = match (
            timestamp(&object.valid_from),
            timestamp(&object.valid_until),
        ) {
            (Ok(from), Ok(until)) => (from, until),
            (Err(e), _) | (_, Err(e)) => {
                report.reject(position, e);
                continue;
            }
        };
        if let Some(until) = valid_until {
            if until <= now {
                report.expired += 1;
                continue;
            }
            report.note_change(until.into());
        }
        if let Some(from) = valid_from
            && from > now
        {
            report.not_yet_valid += 1;
            report.note_change(from.into());
            continue;
        }
        if let Some(kind) = object.pattern_type.as_deref().filter(|k| *k != "stix") {
            report.skip(&format!("pattern type {kind}"));
            continue;
        }
        let Some(pattern) = object.pattern.as_deref() else {
            report.reject(position, LineError::MissingColumn("pattern"));
            continue;
        };
        let comparisons = match parse_pattern(pattern) {
            Ok(c) => c,
            Err(PatternError::Skip(kind)) => {
                report.skip(kind);
                continue;
            }
            Err(PatternError::Syntax(message)) => {
                report.reject(position, LineError::Syntax(format!("pattern: {message}")));
                continue;
            }
        };
        let category = object
            .indicator_types
            .first()
            .or(object.labels.first())
            .or(object.kill_chain_phases.first().map(|p| &p.phase_name))
            .map(String::as_str);
        for (path, value) in comparisons {
            let host = match path.as_str() {
                "domain-name:value" => value.as_str(),
                "url:value" => match url_host(&value) {
                    Ok(host) => host,
                    Err(kind) => {
                        report.skip(kind);
                        continue;
                    }
                },
                "ipv4-addr:value" | "ipv6-addr:value" => {
                    match super::parse_net(&value) {
                        Some(net) => {
                            let mut indicator = Indicator::address(net);
                            indicator.category = category;
                            indicator.detail = object.id.as_deref();
                            sink(indicator);
                            report.loaded += 1;
                        }
                        None => report.reject(
                            position,
                            LineError::Syntax(format!("{value:?} is not an address or range")),
                        ),
                    }
                    continue;
                }
                p if p.starts_with("file:hashes") => {
                    report.skip("file-hash");
                    continue;
                }
                other => {
                    report.skip(pattern::unacted_kind(other));
                    continue;
                }
            };
            match domain::normalize(host) {
                Ok(name) => {
                    let mut indicator = Indicator::block(name, Scope::Subtree);
                    indicator.category = category;
                    indicator.detail = object.id.as_deref();
                    sink(indicator);
                    report.loaded += 1;
                }
                Err(e) => report.reject(position, LineError::Name(e)),
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Collected = (String, Option<String>, Option<String>);

    fn collect(json: &str, now: &str) -> (Vec<Collected>, ParseCounts) {
        let now = OffsetDateTime::parse(now, &Rfc3339).unwrap().into();
        let mut out = Vec::new();
        let report = parse(json.as_bytes(), now, &mut |i| {
            out.push((
                i.net.map_or(i.name, |n| n.to_string()),
                i.category.map(str::to_owned),
                i.detail.map(str::to_owned),
            ))
        })
        .unwrap();
        (out, report)
    }

    const BUNDLE: &str = r#"{"type": "bundle", "id": "bundle--1", "spec_version": "2.1", "objects": [
      {"type": "indicator", "spec_version": "2.1", "id": "indicator--a", "pattern_type": "stix",
       "pattern": "[domain-name:value = 'Evil.Example']", "indicator_types": ["malicious-activity"],
       "valid_from": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--old", "pattern": "[domain-name:value = 'old.example']",
       "labels": ["phishing"], "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2021-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--future", "pattern": "[domain-name:value = 'later.example']",
       "valid_from": "2030-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--soon", "pattern": "[domain-name:value = 'soon-gone.example']",
       "kill_chain_phases": [{"kill_chain_name": "lockheed-martin-cyber-kill-chain", "phase_name": "command-and-control"}],
       "valid_from": "2024-01-01T00:00:00Z", "valid_until": "2027-06-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--rev", "pattern": "[domain-name:value = 'revoked.example']",
       "valid_from": "2024-01-01T00:00:00Z", "revoked": true},
      {"type": "indicator", "id": "indicator--v", "modified": "2024-01-01T00:00:00Z",
       "pattern": "[domain-name:value = 'v1.example']", "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--v", "modified": "2024-02-01T00:00:00Z",
       "pattern": "[domain-name:value = 'v2.example']", "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--yara", "pattern_type": "yara", "pattern": "rule x {}",
       "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--ip", "pattern": "[ipv4-addr:value = '192.0.2.1']",
       "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--net", "pattern": "[ipv6-addr:value = '2001:db8:5::/48']",
       "labels": ["c2"], "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--badip", "pattern": "[ipv4-addr:value = '300.1.1.1']",
       "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "indicator", "id": "indicator--bad", "pattern": "[domain-name:value = 'not a name']",
       "valid_from": "2024-01-01T00:00:00Z"},
      {"type": "observed-data", "id": "observed-data--1", "objects": {"0": {"type": "domain-name", "value": "observed.example"}}},
      {"type": "relationship", "id": "relationship--1", "source_ref": "indicator--a", "target_ref": "malware--1"}
    ]}"#;

    #[test]
    fn bundle_validity_revocation_versions_and_categories() {
        let (got, report) = collect(BUNDLE, "2026-11-26T00:00:00Z");
        assert_eq!(
            got,
            [
                (
                    "evil.example".into(),
                    Some("malicious-activity".into()),
                    Some("indicator--a".into())
                ),
                (
                    "soon-gone.example".into(),
                    Some("command-and-control".into()),
                    Some("indicator--soon".into())
                ),
                ("v2.example".into(), None, Some("indicator--v".into())),
                ("192.0.2.1/32".into(), None, Some("indicator--ip".into())),
                (
                    "2001:db8:5::/48".into(),
                    Some("c2".into()),
                    Some("indicator--net".into())
                ),
            ]
        );
        assert_eq!(report.lines, 14);
        assert_eq!(
            (report.revoked, report.expired, report.not_yet_valid),
            (1, 1, 1)
        );
        assert_eq!(report.skipped.get("superseded version"), Some(&1));
        assert_eq!(report.skipped.get("pattern type yara"), Some(&1));
        assert_eq!(report.rejected, 2);
        // The next change is the earliest of the future valid_until (2027-06)
        // and valid_from (2030-01).
        let next = OffsetDateTime::from(report.next_change.unwrap());
        assert_eq!(
            next,
            OffsetDateTime::parse("2027-06-01T00:00:00Z", &Rfc3339).unwrap()
        );
        // Later, the 2027 indicator has expired and the 2030 one is live.
        let (got, report) = collect(BUNDLE, "2031-01-01T00:00:00Z");
        let names: Vec<&str> = got.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "evil.example",
                "later.example",
                "v2.example",
                "192.0.2.1/32",
                "2001:db8:5::/48"
            ]
        );
        assert_eq!(report.expired, 2);
    }

    #[test]
    fn single_object_and_array_documents() {
        let one = r#"{"type": "indicator", "id": "indicator--1", "pattern": "[domain-name:value = 'one.example']", "valid_from": "2024-01-01T00:00:00Z"}"#;
        let (got, _) = collect(one, "2026-01-01T00:00:00Z");
        assert_eq!(got[0].0, "one.example");
        let many = format!("[{one}, {{\"type\": \"malware\", \"id\": \"malware--1\"}}]");
        let (got, report) = collect(&many, "2026-01-01T00:00:00Z");
        assert_eq!(got.len(), 1);
        assert_eq!(report.lines, 2);
        assert!(matches!(
            parse(&b"{not json"[..], SystemTime::now(), &mut |_| {}),
            Err(ReadError::Stix(_))
        ));
    }

    #[test]
    fn patterns_on_objects_we_do_not_act_on_are_skipped_by_kind() {
        let doc = r#"[
          {"type": "indicator", "id": "indicator--nt", "valid_from": "2024-01-01T00:00:00Z",
           "pattern": "[network-traffic:dst_ref.value = '198.51.100.7' OR network-traffic:dst_port = '443']"},
          {"type": "indicator", "id": "indicator--rr", "valid_from": "2024-01-01T00:00:00Z",
           "pattern": "[domain-name:resolves_to_refs[*].value = '198.51.100.8']"},
          {"type": "indicator", "id": "indicator--ok", "valid_from": "2024-01-01T00:00:00Z",
           "pattern": "[domain-name:value = 'ok.example']"}
        ]"#;
        let (got, report) = collect(doc, "2026-01-01T00:00:00Z");
        assert_eq!(got.len(), 1);
        assert_eq!(report.rejected, 0, "{:?}", report.first_rejects);
        assert_eq!(report.skipped.get("network-traffic"), Some(&2));
        assert_eq!(report.skipped.get("domain-name:resolves_to_refs"), Some(&1));
    }
}
