//! The HTML report: one self-contained file (inline style and SVG, no
//! scripts, nothing fetched), so it can be mailed and opened anywhere.
//! Built with maud, which escapes every value it interpolates: names and
//! categories come from feeds and queries.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{Report, format_ts, scope, sections};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}.chart{max-width:720px;width:100%}";

pub(super) fn report(r: &Report) -> String {
    let title = format!("Portcullis: blocked queries for {}", scope(r));
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                p { (format_ts(r.since)) " to " (format_ts(r.until)) }
                p {
                    strong { (r.total) } " blocked queries, " (r.distinct_names) " names, "
                    (r.distinct_clients) " clients."
                }
                h2 { "Per day" }
                (timeline_svg(r))
                @for section in sections(r) {
                    h2 { (section.caption) }
                    table {
                        thead { tr { @for h in section.headers { th { (h) } } } }
                        tbody {
                            @if section.rows.is_empty() {
                                tr { td colspan=(section.headers.len()) { "none" } }
                            }
                            @for row in &section.rows {
                                tr { @for cell in row { td { (cell) } } }
                            }
                        }
                    }
                }
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

/// The per-day timeline as an inline SVG bar chart.
fn timeline_svg(r: &Report) -> Markup {
    let (w, h, pad) = (720.0_f64, 200.0_f64, 30.0_f64);
    let max = r.timeline.iter().map(|d| d.hits).max().unwrap_or(0).max(1) as f64;
    let n = r.timeline.len().max(1) as f64;
    let bar = (w - 2.0 * pad) / n;
    let one = |v: f64| format!("{v:.1}");
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h) } role="img"
            aria-label="Blocked queries per day" class="chart" {
            line x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) stroke="#888" {}
            text x="2" y="14" font-size="11" { (max as u64) }
            @for (i, d) in r.timeline.iter().enumerate() {
                @let bh = (d.hits as f64 / max) * (h - 2.0 * pad);
                rect x=(one(pad + i as f64 * bar)) y=(one(h - pad - bh))
                    width=(one((bar * 0.8).max(1.0))) height=(one(bh)) fill="#b03a2e" {
                    title { (d.day) ": " (d.hits) }
                }
            }
            @if let (Some(first), Some(last)) = (r.timeline.first(), r.timeline.last()) {
                text x=(pad) y=(h - 8.0) font-size="11" { (first.day) }
                text x=(w - pad) y=(h - 8.0) font-size="11" text-anchor="end" { (last.day) }
            }
        }
    }
}
