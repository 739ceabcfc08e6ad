//! Feed parsers: one per format, all producing the same [`Indicator`].
//!
//! A parser reads lines and hands each indicator to a sink as it goes, so
//! a million-line feed is never held in memory as indicators; the blocklist
//! compiler turns each into a key straight away. A line that is not valid
//! for its format is rejected and counted with its line number and reason,
//! and the rest of the file still loads (DESIGN.md "Names and matching").
//!
//! This module owns reading the file (gzip or plain, BOM, CRLF, invalid
//! UTF-8) and picking the format; the per-format modules own one line each.
//! It does not decide what an indicator *does*: that is the compiler's job.

mod plain;
mod tsv;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::NameError;

/// How many rejected lines a report keeps verbatim; the rest are counted.
pub const REJECTS_KEPT: usize = 5;

/// Whether an entry covers the names below it (DESIGN.md "Names and matching").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The name only (hosts lines, RPZ `name`).
    Exact,
    /// The name and every name below it (threat feeds, AdBlock `||name^`).
    Subtree,
    /// Only the names below it (`*.name` wildcards, RPZ `*.name`).
    Below,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Exact => "exact",
            Scope::Subtree => "subtree",
            Scope::Below => "below-only",
        })
    }
}

/// Whether an entry blocks or makes an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Block,
    Allow,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Block => "block",
            Verdict::Allow => "allow",
        })
    }
}

/// One entry from a feed, borrowed from the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator<'a> {
    /// Normalised name (see [`crate::domain::normalize`]).
    pub name: String,
    pub scope: Scope,
    pub verdict: Verdict,
    /// The feed's own category for this line, if the format carries one.
    pub category: Option<&'a str>,
    /// Family, indicator id or other detail the feed gives for the line.
    pub detail: Option<&'a str>,
}

/// A feed file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One name a line, `#` comments; `*.name` means below-only.
    Plain,
    /// `domain<TAB>category<TAB>family`, as maltrail-derived lists use.
    Tsv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Tsv => "tsv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one line was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    Name(NameError),
    NotUtf8,
    MissingColumn(&'static str),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Name(e) => write!(f, "not a valid domain name: {e}"),
            LineError::NotUtf8 => write!(f, "line is not valid UTF-8"),
            LineError::MissingColumn(c) => write!(f, "missing {c} column"),
        }
    }
}

impl From<NameError> for LineError {
    fn from(e: NameError) -> Self {
        LineError::Name(e)
    }
}

/// A rejected line, kept for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: usize,
    pub error: LineError,
}

/// What parsing one feed produced, apart from the indicators themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseReport {
    pub lines: usize,
    pub loaded: usize,
    pub rejected: usize,
    /// The first [`REJECTS_KEPT`] rejected lines.
    pub first_rejects: Vec<Reject>,
}

impl ParseReport {
    fn reject(&mut self, line: usize, error: LineError) {
        self.rejected += 1;
        if self.first_rejects.len() < REJECTS_KEPT {
            self.first_rejects.push(Reject { line, error });
        }
    }
}

/// A feed that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot read feed {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("feed {path} matches no known format (looked at its first lines)")]
    UnknownFormat { path: PathBuf },
}

/// Open a feed file, transparently un-gzipping it (by magic bytes, not name).
fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::with_capacity(1 << 16, File::open(path)?);
    let magic = file.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(file);
        Ok(Box::new(BufReader::with_capacity(1 << 16, gz)))
    } else {
        Ok(Box::new(file))
    }
}

/// Guess a format from the first meaningful lines of a file.
pub fn detect(path: &Path) -> Result<Format, FeedError> {
    let io_err = |source| FeedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = open(path).map_err(io_err)?;
    let mut head = String::new();
    reader
        .take(64 * 1024)
        .read_to_string(&mut head)
        .or_else(|e| {
            // A multi-byte character cut by `take` is not a reason to give up.
            if e.kind() == io::ErrorKind::InvalidData {
                Ok(0)
            } else {
                Err(e)
            }
        })
        .map_err(io_err)?;
    detect_text(&head).ok_or_else(|| FeedError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

fn detect_text(head: &str) -> Option<Format> {
    let mut saw_plain = false;
    for line in head.lines().take(200) {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('\t') {
            return Some(Format::Tsv);
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if plain::looks_like_name(first) {
            saw_plain = true;
        }
    }
    saw_plain.then_some(Format::Plain)
}

/// Parse a whole feed file, handing every indicator to `sink`.
pub fn parse_file(
    path: &Path,
    format: Format,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseReport, FeedError> {
    let reader = open(path).map_err(|source| FeedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_reader(reader, format, sink).map_err(|source| FeedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse feed text from any reader (tests and fuzzing use this directly).
pub fn parse_reader(
    mut reader: impl BufRead,
    format: Format,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> io::Result<ParseReport> {
    let mut report = ParseReport::default();
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        report.lines += 1;
        let line_no = report.lines;
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
        let parsed = match format {
            Format::Plain => plain::parse_line(line),
            Format::Tsv => tsv::parse_line(line, line_no),
        };
        match parsed {
            Ok(Some(indicator)) => {
                report.loaded += 1;
                sink(indicator);
            }
            Ok(None) => {}
            Err(error) => report.reject(line_no, error),
        }
    }
    Ok(report)
}

/// An indicator as owned values, for test assertions.
#[cfg(test)]
pub(crate) type OwnedIndicator = (String, Scope, Verdict, Option<String>, Option<String>);

/// Parse a string (for tests): returns the indicators as owned values.
#[cfg(test)]
pub(crate) fn parse_str(text: &str, format: Format) -> (Vec<OwnedIndicator>, ParseReport) {
    let mut out = Vec::new();
    let report = parse_reader(text.as_bytes(), format, &mut |i| {
        out.push((
            i.name,
            i.scope,
            i.verdict,
            i.category.map(str::to_owned),
            i.detail.map(str::to_owned),
        ))
    })
    .expect("reading from memory cannot fail");
    (out, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_tsv_and_plain_by_content() {
        assert_eq!(
            detect_text("# c\nevil.com\tmalware\temotet\n"),
            Some(Format::Tsv)
        );
        assert_eq!(
            detect_text("# c\n\nevil.com\nbad.org # x\n"),
            Some(Format::Plain)
        );
        assert_eq!(detect_text("<html><body>404</body></html>\n"), None);
        assert_eq!(detect_text(""), None);
    }

    #[test]
    fn reads_gzip_by_magic_bytes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"evil.example\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(detect(&path).unwrap(), Format::Plain);
        let mut names = Vec::new();
        let report = parse_file(&path, Format::Plain, &mut |i| names.push(i.name)).unwrap();
        assert_eq!(names, ["evil.example"]);
        assert_eq!(report.loaded, 1);
    }

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
