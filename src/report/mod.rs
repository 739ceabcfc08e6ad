//! Hit records and organisation reports rendered for people and tools:
//! an aligned text table, CSV, JSON, and a self-contained HTML report.
//!
//! The data comes from [`crate::hitlog::store`]; this module only formats
//! it, so the CLI and the admin API show the same numbers.

mod html;

use std::fmt::Write as _;

use crate::hitlog::store::Report;
use crate::hitlog::{Hit, format_ts};

/// Output formats of `portcullis logs` and `portcullis report` (the
/// command line's `--format` and the review API's `format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
    Html,
}

/// An aligned text table; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

const HIT_COLUMNS: [&str; 16] = [
    "ref",
    "ts",
    "org",
    "client",
    "transport",
    "qname",
    "qtype",
    "stage",
    "matched",
    "feed",
    "category",
    "indicator",
    "action",
    "repeats",
    "last_ts",
    "node",
];

fn hit_cells(h: &Hit) -> Vec<String> {
    vec![
        h.id.map(|i| i.to_string()).unwrap_or_default(),
        format_ts(h.ts),
        h.org.clone().unwrap_or_default(),
        h.client.to_string(),
        h.transport.as_str().to_owned(),
        h.qname.clone(),
        h.qtype.clone(),
        h.stage.as_str().to_owned(),
        h.matched.clone(),
        h.feed.clone(),
        h.category.clone(),
        h.indicator.clone().unwrap_or_default(),
        h.action.clone(),
        h.repeats.to_string(),
        h.last_ts.map(format_ts).unwrap_or_default(),
        h.node.clone().unwrap_or_default(),
    ]
}

/// Hit records in `format` (`Html` is not offered for records). JSON is
/// one object per line, like the hit stream.
pub fn hits(records: &[Hit], format: OutputFormat) -> Result<String, csv::Error> {
    Ok(match format {
        OutputFormat::Json | OutputFormat::Html => {
            let mut out = String::new();
            for h in records {
                out.push_str(&serde_json::to_string(h).map_err(std::io::Error::from)?);
                out.push('\n');
            }
            out
        }
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(HIT_COLUMNS)?;
            for h in records {
                w.write_record(hit_cells(h))?;
            }
            csv_string(w)?
        }
        OutputFormat::Table => {
            let short = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12];
            let headers: Vec<&str> = short.iter().map(|i| HIT_COLUMNS[*i]).collect();
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|h| {
                    let cells = hit_cells(h);
                    short.iter().map(|i| cells[*i].clone()).collect()
                })
                .collect();
            table(&headers, &rows)
        }
    })
}

fn csv_string(w: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A report in `format`.
pub fn report(r: &Report, format: OutputFormat) -> Result<String, csv::Error> {
    Ok(match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(r).map_err(std::io::Error::from)?;
            s.push('\n');
            s
        }
        OutputFormat::Csv => report_csv(r)?,
        OutputFormat::Table => report_text(r),
        OutputFormat::Html => html::report(r),
    })
}

fn scope(r: &Report) -> String {
    match &r.org {
        Some(org) => format!("organisation {org}"),
        None => "all organisations".to_owned(),
    }
}

/// One titled table of a report.
struct Section {
    caption: &'static str,
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

/// A report's tables, in order, shared by the text and HTML forms. The
/// per-organisation table is there only in operator-wide reports.
fn sections(r: &Report) -> Vec<Section> {
    let mut out = Vec::new();
    if !r.by_org.is_empty() {
        out.push(Section {
            caption: "By organisation",
            headers: &["org", "hits"],
            rows: r
                .by_org
                .iter()
                .map(|c| vec![c.key.clone(), c.hits.to_string()])
                .collect(),
        });
    }
    out.push(Section {
        caption: "By category and feed",
        headers: &["category", "feed", "hits"],
        rows: r
            .by_category
            .iter()
            .map(|c| vec![c.category.clone(), c.feed.clone(), c.hits.to_string()])
            .collect(),
    });
    out.push(Section {
        caption: "By action",
        headers: &["action", "hits"],
        rows: r
            .by_action
            .iter()
            .map(|c| vec![c.key.clone(), c.hits.to_string()])
            .collect(),
    });
    out.push(Section {
        caption: "Top blocked names",
        headers: &[
            "name",
            "category",
            "hits",
            "clients",
            "first seen",
            "last seen",
        ],
        rows: r
            .top_names
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.category.clone(),
                    n.hits.to_string(),
                    n.clients.to_string(),
                    format_ts(n.first_seen),
                    format_ts(n.last_seen),
                ]
            })
            .collect(),
    });
    out.push(Section {
        caption: "Top clients (the machines to clean up)",
        headers: &["client", "org", "hits", "names", "first seen", "last seen"],
        rows: r
            .top_clients
            .iter()
            .map(|c| {
                vec![
                    c.client.clone(),
                    c.org.clone().unwrap_or_default(),
                    c.hits.to_string(),
                    c.names.to_string(),
                    format_ts(c.first_seen),
                    format_ts(c.last_seen),
                ]
            })
            .collect(),
    });
    out
}

fn report_text(r: &Report) -> String {
    let mut out = format!(
        "Blocked queries for {}, {} to {}\n\n{} hits, {} names, {} clients\n",
        scope(r),
        format_ts(r.since),
        format_ts(r.until),
        r.total,
        r.distinct_names,
        r.distinct_clients
    );
    for section in sections(r) {
        let _ = write!(out, "\n{}\n", section.caption);
        out.push_str(&table(section.headers, &section.rows));
    }
    out.push_str("\nPer day\n");
    let rows: Vec<_> = r
        .timeline
        .iter()
        .map(|d| vec![d.day.clone(), d.hits.to_string()])
        .collect();
    out.push_str(&table(&["day", "hits"], &rows));
    out
}

/// One CSV with a `section` column, so a spreadsheet can filter by it.
fn report_csv(r: &Report) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "section",
        "key",
        "detail",
        "hits",
        "count",
        "first_seen",
        "last_seen",
    ])?;
    let no = String::new;
    w.write_record([
        "total".into(),
        scope(r),
        no(),
        r.total.to_string(),
        no(),
        format_ts(r.since),
        format_ts(r.until),
    ])?;
    for c in &r.by_org {
        w.write_record(["org", &c.key, "", &c.hits.to_string(), "", "", ""])?;
    }
    for c in &r.by_category {
        w.write_record([
            "category",
            &c.category,
            &c.feed,
            &c.hits.to_string(),
            "",
            "",
            "",
        ])?;
    }
    for c in &r.by_action {
        w.write_record(["action", &c.key, "", &c.hits.to_string(), "", "", ""])?;
    }
    for n in &r.top_names {
        w.write_record([
            "name",
            &n.name,
            &n.category,
            &n.hits.to_string(),
            &n.clients.to_string(),
            &format_ts(n.first_seen),
            &format_ts(n.last_seen),
        ])?;
    }
    for c in &r.top_clients {
        w.write_record([
            "client",
            &c.client,
            c.org.as_deref().unwrap_or(""),
            &c.hits.to_string(),
            &c.names.to_string(),
            &format_ts(c.first_seen),
            &format_ts(c.last_seen),
        ])?;
    }
    for d in &r.timeline {
        w.write_record(["day", &d.day, "", &d.hits.to_string(), "", "", ""])?;
    }
    csv_string(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::store::{DayCount, NameRow};

    fn sample() -> Report {
        Report {
            org: Some("council-a".into()),
            since: 0,
            until: 2 * 86_400_000,
            total: 3,
            distinct_names: 1,
            distinct_clients: 1,
            by_org: vec![],
            by_category: vec![],
            by_action: vec![],
            top_names: vec![NameRow {
                name: "<script>.evil.example".into(),
                category: "malware".into(),
                hits: 3,
                clients: 1,
                first_seen: 0,
                last_seen: 1,
            }],
            top_clients: vec![],
            timeline: vec![
                DayCount {
                    day: "1970-01-01".into(),
                    hits: 3,
                },
                DayCount {
                    day: "1970-01-02".into(),
                    hits: 0,
                },
            ],
        }
    }

    #[test]
    fn the_html_report_is_self_contained_and_escaped() {
        let html = report(&sample(), OutputFormat::Html).unwrap();
        assert!(html.contains("<svg"));
        assert_eq!(html.matches("<rect").count(), 2);
        assert!(!html.contains("<script"), "names are escaped");
        assert!(html.contains("&lt;script&gt;.evil.example"));
        assert!(!html.contains("src="), "nothing is fetched");
        assert!(!html.contains("href="), "nothing is linked");
    }

    #[test]
    fn csv_quotes_and_sections() {
        let csv = report(&sample(), OutputFormat::Csv).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(&rows[0][0], "total");
        assert_eq!(&rows[0][3], "3");
        assert!(
            rows.iter()
                .any(|r| &r[0] == "name" && &r[1] == "<script>.evil.example")
        );
        assert_eq!(rows.iter().filter(|r| &r[0] == "day").count(), 2);
    }
}
