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
//! This module owns reading the file (gzip or plain, BOM, CRLF, invalid
//! UTF-8), detecting the format, and the shared types. Each format module
//! owns one syntax and its native meaning (blocklists/README.md has the
//! table). Nothing here decides what an entry finally *does*: the compiler
//! combines the format's meaning with the config.

mod adblock;
mod dnsmasq;
mod hosts;
mod plain;
mod rpz;
pub mod stix;
mod tsv;
mod unbound;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Deserialize;

use crate::domain::NameError;
use crate::policy::Action;

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

/// One entry from a feed, borrowing what it can from the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator<'a> {
    /// Normalised name (see [`crate::domain::normalize`]); empty for an
    /// address indicator.
    pub name: String,
    /// An address indicator: the listed address or range, for the
    /// answer-IP policy (TSV/plain IP lines, STIX `ipv4-addr`/`ipv6-addr`,
    /// RPZ `rpz-ip` triggers). Its `scope` means nothing.
    pub net: Option<IpNet>,
    pub scope: Scope,
    pub verdict: Verdict,
    /// The feed's own category for this entry, if the format carries one.
    pub category: Option<&'a str>,
    /// Family, indicator id or other detail the feed gives for the entry.
    pub detail: Option<&'a str>,
    /// The format's own action for the entry (RPZ `CNAME *.` = NODATA,
    /// Unbound `refuse`, ...); `None` leaves it to the config.
    pub action: Option<Action>,
    /// Addresses to answer with (hosts `1.2.3.4 name`, RPZ local data,
    /// dnsmasq `address=/name/1.2.3.4`); implies the sinkhole action.
    pub local: Vec<IpAddr>,
}

impl<'a> Indicator<'a> {
    /// A subtree block with nothing else set: what most threat feeds say.
    pub fn block(name: String, scope: Scope) -> Indicator<'a> {
        Indicator {
            name,
            net: None,
            scope,
            verdict: Verdict::Block,
            category: None,
            detail: None,
            action: None,
            local: Vec::new(),
        }
    }

    /// A block of an address or range (host bits cleared).
    pub fn address(net: IpNet) -> Indicator<'a> {
        Indicator {
            net: Some(crate::prefix::canonical(net)),
            ..Indicator::block(String::new(), Scope::Exact)
        }
    }
}

/// An address (`192.0.2.1`, `2001:db8::1`) or a range in CIDR form
/// (`192.0.2.0/24`), as IP feeds write them.
pub fn parse_net(text: &str) -> Option<IpNet> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    text.parse::<IpNet>().ok()
}

/// A feed file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One name a line, `#` comments; `*.name` means below-only.
    Plain,
    /// `domain<TAB>category<TAB>family`, as maltrail-derived lists use.
    Tsv,
    /// `/etc/hosts` style: `0.0.0.0 name [name...]`.
    Hosts,
    /// AdBlock-style DNS rules: `||name^`, `@@||name^`.
    Adblock,
    /// dnsmasq `address=/name/...`, `server=/name/`, `local=/name/`.
    Dnsmasq,
    /// Unbound `local-zone: "name." type`.
    Unbound,
    /// A Response Policy Zone in master-file syntax.
    Rpz,
    /// STIX 2.0/2.1 JSON: a bundle, one object, or an array of objects.
    Stix,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Tsv => "tsv",
            Format::Hosts => "hosts",
            Format::Adblock => "adblock",
            Format::Dnsmasq => "dnsmasq",
            Format::Unbound => "unbound",
            Format::Rpz => "rpz",
            Format::Stix => "stix",
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
    /// The line is not valid syntax for the feed's format.
    Syntax(String),
    /// Valid syntax whose meaning we do not implement; never guessed at.
    Unsupported(String),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Name(e) => write!(f, "not a valid domain name: {e}"),
            LineError::NotUtf8 => write!(f, "line is not valid UTF-8"),
            LineError::MissingColumn(c) => write!(f, "missing {c} column"),
            LineError::Syntax(s) => write!(f, "syntax: {s}"),
            LineError::Unsupported(s) => write!(f, "unsupported: {s}"),
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
    /// Lines read (for STIX: objects read).
    pub lines: usize,
    pub loaded: usize,
    pub rejected: usize,
    /// The first [`REJECTS_KEPT`] rejected lines.
    pub first_rejects: Vec<Reject>,
    /// Of `loaded`, how many are address indicators (answer-IP policy).
    pub addresses: usize,
    /// Valid entries not turned into blocklist entries, by kind.
    pub skipped: BTreeMap<String, usize>,
    /// STIX indicators marked `revoked`.
    pub revoked: usize,
    /// STIX indicators whose `valid_until` has passed.
    pub expired: usize,
    /// STIX indicators whose `valid_from` is still to come.
    pub not_yet_valid: usize,
    /// The next time the feed's contents change by the clock alone (the
    /// earliest future `valid_until` or `valid_from`): a rebuild is due then.
    pub next_change: Option<SystemTime>,
}

impl ParseReport {
    pub fn reject(&mut self, line: usize, error: LineError) {
        self.rejected += 1;
        if self.first_rejects.len() < REJECTS_KEPT {
            self.first_rejects.push(Reject { line, error });
        }
    }

    pub fn skip(&mut self, kind: &str) {
        *self.skipped.entry(kind.to_owned()).or_default() += 1;
    }

    fn note_change(&mut self, at: SystemTime) {
        if self.next_change.is_none_or(|t| at < t) {
            self.next_change = Some(at);
        }
    }
}

/// What a line parser made of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Comment, blank, header: nothing to count.
    Empty,
    /// This many indicators went to the sink.
    Loaded(usize),
    /// Valid, but not something the blocklist acts on.
    Skipped(&'static str),
}

/// A parser for a line-oriented format. Most are stateless; RPZ keeps the
/// origin, TTL and owner of the lines before.
trait LineParser {
    fn line(
        &mut self,
        line: &str,
        sink: &mut dyn FnMut(Indicator<'_>),
    ) -> Result<Outcome, LineError>;

    /// Flush anything held back for the next line; returns the count.
    fn finish(&mut self, _sink: &mut dyn FnMut(Indicator<'_>)) -> usize {
        0
    }
}

/// Adapts a stateless `fn(&str) -> ...` to [`LineParser`].
type LineFn = fn(&str, &mut dyn FnMut(Indicator<'_>)) -> Result<Outcome, LineError>;
struct Stateless(LineFn);

impl LineParser for Stateless {
    fn line(
        &mut self,
        line: &str,
        sink: &mut dyn FnMut(Indicator<'_>),
    ) -> Result<Outcome, LineError> {
        (self.0)(line, sink)
    }
}

/// A feed that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot read feed {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("feed {path} matches no known format (looked at its first lines)")]
    UnknownFormat { path: PathBuf },
    #[error("feed {path} is not a STIX document: {message}")]
    Stix { path: PathBuf, message: String },
}

/// Open a feed file, transparently un-gzipping it (by magic bytes, not name).
fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::with_capacity(1 << 16, File::open(path)?);
    let magic = file.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(file);
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            Prefetch::spawn(gz),
        )))
    } else {
        Ok(Box::new(file))
    }
}

/// A reader fed by a background thread through a small bounded channel:
/// decompression runs a block ahead of the parser, on another core.
struct Prefetch {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Prefetch {
    fn spawn(mut inner: impl Read + Send + 'static) -> Prefetch {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let mut block = vec![0u8; 1 << 18];
                match inner.read(&mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        if tx.send(Ok(block)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Prefetch {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(block)) => {
                    self.current = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The sender is gone: the stream has ended.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Guess a format from the first meaningful lines of a file.
pub fn detect(path: &Path) -> Result<Format, FeedError> {
    let io_err = |source| FeedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = open(path).map_err(io_err)?;
    let mut head = Vec::new();
    reader
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    let head = String::from_utf8_lossy(&head);
    detect_text(&head).ok_or_else(|| FeedError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Content sniffing. Distinctive syntax wins over the plain fallback; the
/// first distinctive line decides.
pub fn detect_text(head: &str) -> Option<Format> {
    let head = head.trim_start_matches('\u{feff}');
    let first = head.trim_start();
    if first.starts_with('{') || first.starts_with('[') && !first.starts_with("[Adblock") {
        return first.contains("\"type\"").then_some(Format::Stix);
    }
    let mut saw_plain = false;
    let mut saw_anything = false;
    for line in head.lines().take(500) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        saw_anything = true;
        if line.starts_with('!')
            || line.starts_with("[Adblock")
            || line.starts_with("||")
            || line.starts_with("@@||")
        {
            return Some(Format::Adblock);
        }
        if ["address=/", "server=/", "local=/"]
            .iter()
            .any(|p| line.starts_with(p))
        {
            return Some(Format::Dnsmasq);
        }
        if line.starts_with("local-zone:") || line == "server:" || line.starts_with("local-data:") {
            return Some(Format::Unbound);
        }
        if line.starts_with("$ORIGIN")
            || line.starts_with("$TTL")
            || line.starts_with(';')
            || rpz::looks_like_record(line)
        {
            return Some(Format::Rpz);
        }
        if line.contains('\t') {
            return Some(Format::Tsv);
        }
        let mut tokens = line.split_whitespace();
        let first = tokens.next().unwrap_or("");
        if first.parse::<IpAddr>().is_ok() && tokens.next().is_some() {
            return Some(Format::Hosts);
        }
        if plain::looks_like_name(first) || parse_net(first).is_some() {
            saw_plain = true;
        }
    }
    // An empty list (or one of comments only) is a valid plain list with
    // no entries; the shrink guard decides whether to believe it.
    (saw_plain || !saw_anything).then_some(Format::Plain)
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
    parse_reader(reader, format, sink).map_err(|e| match e {
        ReadError::Io(source) => FeedError::Io {
            path: path.to_path_buf(),
            source,
        },
        ReadError::Stix(message) => FeedError::Stix {
            path: path.to_path_buf(),
            message,
        },
    })
}

/// Why a reader could not be parsed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Stix(String),
}

/// Parse feed text from any reader (tests and fuzzing use this directly).
pub fn parse_reader(
    mut reader: impl BufRead,
    format: Format,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<ParseReport, ReadError> {
    let mut parser: Box<dyn LineParser> = match format {
        Format::Stix => return stix::parse(reader, SystemTime::now(), sink),
        Format::Plain => Box::new(Stateless(plain::parse_line)),
        Format::Tsv => Box::new(Stateless(tsv::parse_line)),
        Format::Hosts => Box::new(Stateless(hosts::parse_line)),
        Format::Adblock => Box::new(Stateless(adblock::parse_line)),
        Format::Dnsmasq => Box::new(Stateless(dnsmasq::parse_line)),
        Format::Unbound => Box::new(Stateless(unbound::parse_line)),
        Format::Rpz => Box::new(rpz::RpzParser::default()),
    };
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
        // A TSV header names its columns; skip it rather than reject it.
        if line_no == 1
            && format == Format::Tsv
            && line.to_ascii_lowercase().starts_with("domain\t")
        {
            continue;
        }
        match parser.line(line, sink) {
            Ok(Outcome::Empty) => {}
            Ok(Outcome::Loaded(n)) => report.loaded += n,
            Ok(Outcome::Skipped(kind)) => report.skip(kind),
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
pub(crate) fn parse_str(text: &str, format: Format) -> (Vec<OwnedIndicator>, ParseReport) {
    let (full, report) = parse_full(text, format);
    (full.into_iter().map(|(i, _, _)| i).collect(), report)
}

/// An owned indicator with its native action and local data, for tests.
#[cfg(test)]
pub(crate) type FullIndicator = (OwnedIndicator, Option<Action>, Vec<IpAddr>);

/// Like [`parse_str`], with each indicator's native action and local data.
#[cfg(test)]
pub(crate) fn parse_full(text: &str, format: Format) -> (Vec<FullIndicator>, ParseReport) {
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
    fn detects_every_format_by_content() {
        let cases = [
            ("# c\nevil.com\tmalware\temotet\n", Format::Tsv),
            ("# c\n\nevil.com\nbad.org # x\n", Format::Plain),
            ("192.0.2.1\n203.0.113.0/24\n", Format::Plain),
            ("*.evil.com\n", Format::Plain),
            (
                "# hosts\n127.0.0.1 localhost\n0.0.0.0 evil.com\n",
                Format::Hosts,
            ),
            ("! Title: list\n||evil.com^\n", Format::Adblock),
            ("[Adblock Plus 2.0]\n||evil.com^\n", Format::Adblock),
            ("address=/evil.com/#\n", Format::Dnsmasq),
            (
                "server:\n  local-zone: \"evil.com.\" always_nxdomain\n",
                Format::Unbound,
            ),
            ("$ORIGIN rpz.local.\nevil.com CNAME .\n", Format::Rpz),
            ("evil.com CNAME .\n", Format::Rpz),
            ("{\"type\": \"bundle\", \"objects\": []}", Format::Stix),
            ("[{\"type\": \"indicator\"}]", Format::Stix),
        ];
        for (text, format) in cases {
            assert_eq!(detect_text(text), Some(format), "{text:?}");
        }
        assert_eq!(detect_text("<html><body>404</body></html>\n"), None);
        assert_eq!(detect_text("{\"error\": 1}"), None);
        assert_eq!(
            detect_text(""),
            Some(Format::Plain),
            "an empty list is an empty plain list"
        );
        assert_eq!(
            detect_text("# nothing listed today\n\n"),
            Some(Format::Plain)
        );
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

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const FORMATS: [Format; 8] = [
        Format::Plain,
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
