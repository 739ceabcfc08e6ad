//! Text output of `portcullis compile` and `portcullis check`.
//!
//! Kept apart from the compiler so the compiler returns data and the CLI
//! decides how to show it.

use std::fmt::Write;

use crate::blocklist::{Blocklist, CompileSummary, Explanation};
use crate::formats::{Scope, Verdict};

/// The compile summary: one row per feed, its rejects and suppressions.
pub fn compile_summary(report: &CompileSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<7} {:>10} {:>9} {:>10}",
        "feed", "format", "loaded", "rejected", "suppressed"
    );
    for feed in &report.feeds {
        let format = feed.format.map_or("?", |f| f.as_str());
        let _ = writeln!(
            out,
            "{:<32} {:<7} {:>10} {:>9} {:>10}",
            feed.name, format, feed.parse.loaded, feed.parse.rejected, feed.suppressed.count
        );
        if let Some(error) = &feed.error {
            let _ = writeln!(out, "  error: {error} (feed not loaded)");
        }
        for r in &feed.parse.first_rejects {
            let _ = writeln!(out, "  line {}: {}", r.line, r.error);
        }
        if feed.parse.rejected > feed.parse.first_rejects.len() {
            let _ = writeln!(
                out,
                "  ... and {} more rejected lines",
                feed.parse.rejected - feed.parse.first_rejects.len()
            );
        }
        if feed.suppressed.count > 0 {
            let _ = writeln!(
                out,
                "  suppressed by protected names: {}{}",
                feed.suppressed.first.join(", "),
                if feed.suppressed.count > feed.suppressed.first.len() {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        if feed.parse.addresses > 0 {
            let _ = writeln!(
                out,
                "  addresses: {} listed, {} in the answer-IP policy{}",
                feed.parse.addresses,
                feed.addresses_used,
                if feed.addresses_used == 0 {
                    " (off: set answer_ip = true in its [[feed]] or list its category in blocklist.answer_ip_categories)"
                } else {
                    ""
                }
            );
        }
        if feed.parse.name_servers > 0 {
            let _ = writeln!(
                out,
                "  name-server triggers (rpz-nsdname, rpz-nsip): {}",
                feed.parse.name_servers
            );
        }
        if feed.parse.apexes_open > 0 {
            let _ = writeln!(
                out,
                "  below-only rules (*.name): {} leave their own name open{}",
                feed.parse.apexes_open,
                if feed.format == Some(crate::formats::Format::Plain) {
                    " (a wildcard-domains list? set format = \"wildcard\" in its [[feed]])"
                } else {
                    ""
                }
            );
        }
        if !feed.parse.skipped.is_empty() {
            let kinds: Vec<String> = feed
                .parse
                .skipped
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  skipped: {}", kinds.join(", "));
        }
        let p = &feed.parse;
        if p.revoked + p.expired + p.not_yet_valid > 0 {
            let _ = writeln!(
                out,
                "  not loaded: {} revoked, {} expired, {} not yet valid",
                p.revoked, p.expired, p.not_yet_valid
            );
        }
        if let Some(next) = p.next_change {
            let when = time::OffsetDateTime::from(next)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let _ = writeln!(out, "  contents change by validity at {when}");
        }
    }
    let per_entry = if report.entries == 0 {
        0.0
    } else {
        report.fst_bytes as f64 / report.entries as f64
    };
    let _ = writeln!(out, "protected names: {}", report.protected_names);
    let _ = writeln!(
        out,
        "compiled {} names into {} bytes ({per_entry:.1} bytes/name) in {} ms",
        report.entries,
        report.fst_bytes,
        report.elapsed.as_millis()
    );
    if report.addresses > 0 {
        let _ = writeln!(
            out,
            "answer-IP policy: {} addresses and ranges",
            report.addresses
        );
    }
    out
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Block => "BLOCKED",
        Verdict::Allow => "ALLOWED (exception)",
    }
}

/// The decision for one name and the story behind it.
pub fn explanation(list: &Blocklist, e: &Explanation) -> String {
    let mut out = String::new();
    let Some(winner) = e.winner else {
        let _ = writeln!(out, "{}: not listed (resolves normally)", e.name);
        for step in &e.steps {
            let _ = writeln!(
                out,
                "  {} is listed ({} {}) but does not cover this name",
                step.listed, step.meta.scope, step.meta.verdict
            );
        }
        return out;
    };
    let meta = list.meta(&winner);
    let _ = write!(out, "{}: {}", e.name, verdict_word(meta.verdict));
    if meta.verdict == Verdict::Block {
        let _ = write!(out, ", action {}", meta.action);
    }
    let _ = writeln!(out);
    for step in &e.steps {
        let decides = step.applies && step.found == winner;
        let feed = list.feed(&step.found);
        let _ = write!(
            out,
            "  {} {:<10} {:<5} {} (feed {}, {} format, category {}",
            if decides { "=>" } else { "  " },
            step.meta.scope.to_string(),
            step.meta.verdict.to_string(),
            step.listed,
            feed.name,
            feed.format,
            list.category(&step.found),
        );
        if let Some(detail) = list.detail(&step.found) {
            let _ = write!(out, ", {detail}");
        }
        let _ = writeln!(
            out,
            "){}",
            if step.applies {
                ""
            } else {
                " - does not apply to this name"
            }
        );
    }
    let mut rules = vec!["the most specific listed name decides"];
    if winner.at_name && meta.scope == Scope::Exact {
        rules.push("an exact entry beats a subtree entry at the same name");
    }
    if winner.contested {
        rules.push(if meta.verdict == Verdict::Allow {
            "an allow (exception) entry beats a block entry at the same name"
        } else {
            "other entries at the same name lost by precedence (exact before subtree, then allow before block, then feed order)"
        });
    }
    let _ = writeln!(out, "  rule: {}", rules.join("; "));
    out
}
