//! Feed parsers: one per format, all producing the same [`Indicator`].
//!
//! A parser reads a feed and hands each indicator to a sink as it goes, so
//! a million-line feed is never held in memory as indicators; the blocklist
//! compiler turns each into a key straight away. A line that is not valid
//! for its format is rejected and counted with its line number and reason;
//! a line that is valid but not something we act on (a forwarding rule, an
//! IP trigger, a STIX file-hash pattern) is *skipped* and counted by kind.
//! Neither stops the rest of the file from loading.
//!
//! This module owns the driver: it reads a file line by line (BOM, CRLF,
//! invalid UTF-8) and hands each line to its format's parser. Opening the
//! file (gzip or plain) is in `read`, detecting the format in `detect`,
//! and the shared types in `types`. Each format module owns one syntax and
//! its native meaning (blocklists/README.md has the table). Nothing here
//! decides what an entry finally *does*: the compiler combines the
//! format's meaning with the config.

mod adblock;
mod detect;
mod dnsmasq;
mod hosts;
mod plain;
mod read;
mod rpz;
pub mod stix;
mod tsv;
mod types;
mod unbound;

use std::io::{self, BufRead, Read};
#[cfg(test)]
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::time::SystemTime;

#[cfg(test)]
use crate::policy::Action;
pub use detect::{detect, detect_text};
use read::open;
pub use types::{
    FeedError, Format, Indicator, LineError, LineOutcome, ParseCounts, REJECTS_KEPT, ReadError,
    Reject, Scope, Subject, Verdict, parse_net,
};

/// A parser for a line-oriented format. Most are stateless; RPZ keeps the
/// origin, TTL and owner of the lines before.
trait LineParser {
    fn line(
        &mut self,
        line: &str,
        sink: &mut dyn FnMut(Indicator<'_>),
    ) -> Result<LineOutcome, LineError>;

    /// Flush anything held back for the next line; returns the count.
    fn finish(&mut self, _sink: &mut dyn FnMut(Indicator<'_>)) -> usize {
        0
    }
}

/// Adapts a stateless `fn(&str) -> ...` to [`LineParser`].
type LineFn = fn(&str, &mut dyn FnMut(Indicator<'_>)) -> Result<LineOutcome, LineError>;
struct Stateless(LineFn);

impl LineParser for Stateless {
    fn line(
        &mut self,
        line: &str,
        sink: &mut dyn FnMut(Indicator<'_>),
    ) -> Result<LineOutcome, LineError> {
        (self.0)(line, sink)
    }
}

/// How much one feed may hold: checked as it streams, so a hostile or
/// broken file (a gzip bomb, a runaway export) is refused at the limit
/// rather than after it has filled memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Bytes of text, after decompression.
    pub max_bytes: u64,
    /// Entries loaded.
    pub max_entries: usize,
}

impl Default for Bounds {
    /// Four times the largest real feed (a national threat list of a
    /// million names, about 40 MiB of text) in entries, and a GiB of text.
    fn default() -> Bounds {
        Bounds {
            max_bytes: 1 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// Longest line read: far beyond any real feed's. A longer one (a file
/// with no newlines, a bomb of one character) ends the parse with an
/// error instead of growing a buffer without end.
const MAX_LINE: u64 = 64 * 1024;

/// Parse a whole feed file, handing every indicator to `sink`.
pub fn parse_file(
    path: &Path,
    format: Format,
    bounds: Bounds,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseCounts, FeedError> {
    let reader = open(path, bounds.max_bytes).map_err(|e| io_error(path, e))?;
    parse_bounded(reader, format, bounds.max_entries, 1, sink).map_err(|e| read_error(path, e))
}

fn io_error(path: &Path, source: io::Error) -> FeedError {
    FeedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_error(path: &Path, error: ReadError) -> FeedError {
    match error {
        ReadError::Io(source) => io_error(path, source),
        ReadError::Stix(message) => FeedError::Stix {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// How a feed file splits for parsing on up to `n` threads: byte ranges
/// at line starts, each at least `min_part` bytes. One range, the whole
/// file, when it does not split: compressed, small, or in a format whose
/// lines depend on the ones before (RPZ's `$ORIGIN`, STIX); parse that
/// with [`parse_file`].
pub fn split(
    path: &Path,
    format: Format,
    bounds: Bounds,
    n: usize,
    min_part: u64,
) -> Result<Vec<Range<u64>>, FeedError> {
    let io = |e| io_error(path, e);
    match format {
        Format::Rpz | Format::Stix => {
            let size = std::fs::metadata(path).map_err(io)?.len();
            Ok(std::iter::once(0..size).collect())
        }
        Format::Plain
        | Format::Wildcard
        | Format::Tsv
        | Format::Hosts
        | Format::Adblock
        | Format::Dnsmasq
        | Format::Unbound => read::line_parts(path, n, min_part, bounds.max_bytes).map_err(io),
    }
}

/// Parse one part of a plain feed file, as [`split`] gave it. Line
/// numbers are the file's, so rejects read as they would whole.
pub fn parse_part(
    path: &Path,
    format: Format,
    part: &Range<u64>,
    bounds: Bounds,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseCounts, FeedError> {
    let (reader, first_line) = read::open_part(path, part).map_err(|e| io_error(path, e))?;
    parse_bounded(reader, format, bounds.max_entries, first_line, sink)
        .map_err(|e| read_error(path, e))
}

/// Parse feed text from any reader (tests and fuzzing use this directly),
/// within the default entry bound.
pub fn parse_reader(
    reader: impl BufRead,
    format: Format,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseCounts, ReadError> {
    parse_bounded(reader, format, Bounds::default().max_entries, 1, sink)
}

/// The driver; `first_line` is the number of the reader's first line in
/// its file (1 unless it reads a part from [`split`]).
fn parse_bounded(
    mut reader: impl BufRead,
    format: Format,
    max_entries: usize,
    first_line: usize,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseCounts, ReadError> {
    let mut parser: Box<dyn LineParser> = match format {
        Format::Stix => return stix::parse(reader, SystemTime::now(), sink),
        Format::Plain => Box::new(Stateless(plain::parse_line)),
        Format::Wildcard => Box::new(Stateless(plain::parse_wildcard_line)),
        Format::Tsv => Box::new(Stateless(tsv::parse_line)),
        Format::Hosts => Box::new(Stateless(hosts::parse_line)),
        Format::Adblock => Box::new(Stateless(adblock::parse_line)),
        Format::Dnsmasq => Box::new(Stateless(dnsmasq::parse_line)),
        Format::Unbound => Box::new(Stateless(unbound::parse_line)),
        Format::Rpz => Box::new(rpz::RpzParser::default()),
    };
    let mut report = ParseCounts::default();
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        if (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        report.lines += 1;
        let line_no = first_line + report.lines - 1;
        if buf.len() as u64 == MAX_LINE && buf.last() != Some(&b'\n') {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "line {line_no} is longer than {} KiB; refused",
                    MAX_LINE >> 10
                ),
            )));
        }
        if report.loaded > max_entries {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "more than {max_entries} entries by line {line_no} \
                     (max_entries, or blocklist.max_feed_entries); refused"
                ),
            )));
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            report.reject(line_no, LineError::NotUtf8);
            continue;
        };
        let line = if line_no == 1 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let line = line.trim_end_matches(['\n', '\r']);
        // A TSV header names its columns; skip it rather than reject it.
        if line_no == 1
            && format == Format::Tsv
            && line.to_ascii_lowercase().starts_with("domain\t")
        {
            continue;
        }
        match parser.line(line, sink) {
            Ok(LineOutcome::Empty) => {}
            Ok(LineOutcome::Loaded(n)) => report.loaded += n,
            Ok(LineOutcome::Skipped(kind)) => report.skip(kind),
            Err(error) => report.reject(line_no, error),
        }
    }
    report.loaded += parser.finish(sink);
    Ok(report)
}

/// An indicator as owned values, for test assertions.
#[cfg(test)]
pub(crate) type OwnedIndicator = (String, Scope, Verdict, Option<String>, Option<String>);

/// Parse a string (for tests): returns the indicators as owned values.
#[cfg(test)]
pub(crate) fn parse_str(text: &str, format: Format) -> (Vec<OwnedIndicator>, ParseCounts) {
    let (full, report) = parse_full(text, format);
    (full.into_iter().map(|(i, _, _)| i).collect(), report)
}

/// An owned indicator with its native action and local data, for tests.
#[cfg(test)]
pub(crate) type FullIndicator = (OwnedIndicator, Option<Action>, Vec<IpAddr>);

/// Like [`parse_str`], with each indicator's native action and local data.
#[cfg(test)]
pub(crate) fn parse_full(text: &str, format: Format) -> (Vec<FullIndicator>, ParseCounts) {
    let mut out = Vec::new();
    let report = parse_reader(text.as_bytes(), format, &mut |i| {
        out.push((
            (
                i.net.map_or(i.name, |n| n.to_string()),
                i.scope,
                i.verdict,
                i.category.map(str::to_owned),
                i.detail.map(str::to_owned),
            ),
            i.action,
            i.local,
        ))
    })
    .expect("reading from memory cannot fail");
    (out, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_bom_and_crlf() {
        let mut text = b"\xef\xbb\xbfone.example\r\n".to_vec();
        text.extend_from_slice(b"bad\xff.example\r\ntwo.example");
        let mut names = Vec::new();
        let report = parse_reader(&text[..], Format::Plain, &mut |i| names.push(i.name)).unwrap();
        assert_eq!(names, ["one.example", "two.example"]);
        assert_eq!(report.rejected, 1);
        assert_eq!(
            report.first_rejects[0],
            Reject {
                line: 2,
                error: LineError::NotUtf8
            }
        );
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const FORMATS: [Format; 9] = [
        Format::Plain,
        Format::Wildcard,
        Format::Tsv,
        Format::Hosts,
        Format::Adblock,
        Format::Dnsmasq,
        Format::Unbound,
        Format::Rpz,
        Format::Stix,
    ];

    /// Bytes that look a little like feeds, so the parsers get past their
    /// first checks more often than pure noise would.
    fn feedish() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(vec![
            "evil.example",
            "*.",
            "||",
            "^",
            "@@",
            "$important",
            "0.0.0.0 ",
            "address=/",
            "/#",
            "server=/",
            "local-zone: \"",
            "\" refuse",
            " CNAME ",
            " A ",
            "192.0.2.1",
            "$ORIGIN ",
            "(",
            ")",
            ";",
            "#",
            "\t",
            "\n",
            "\r\n",
            " ",
            ".",
            "\\",
            "\u{feff}",
            "bücher",
            "[domain-name:value = '",
            "']",
            "{\"type\":",
            "\"indicator\"",
            "\"pattern\":",
            "[",
            "]",
            "{",
            "}",
            ",",
            "'",
            "\"",
        ]);
        prop::collection::vec(
            prop_oneof![
                pieces.prop_map(|s| s.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 0..8)
            ],
            0..64,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn no_input_makes_any_parser_panic(bytes in feedish()) {
            for format in FORMATS {
                let _ = parse_reader(&bytes[..], format, &mut |indicator| {
                    // Whatever a parser emits is a valid, normalised name,
                    // or a network with its host bits cleared.
                    match indicator.net {
                        Some(net) => assert_eq!(net, crate::prefix::canonical(net)),
                        None => assert_eq!(crate::domain::normalize(&indicator.name).as_deref(), Ok(indicator.name.as_str())),
                    }
                });
            }
            let _ = detect_text(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            for format in FORMATS {
                let _ = parse_reader(&bytes[..], format, &mut |_| {});
            }
        }
    }
}
