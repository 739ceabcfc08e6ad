//! The types every feed format shares: the [`Indicator`] a parser emits,
//! the [`Format`] names, what a parse reports, and why a line or a whole
//! file could not be loaded.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Deserialize;

use crate::domain::NameError;
use crate::policy::Action;

/// How many rejected lines a report keeps verbatim; the rest are counted.
pub const REJECTS_KEPT: usize = 5;

/// Whether an entry covers the names below it (docs/architecture.md
/// "Matching and precedence").
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

/// What an entry is matched against (RPZ's trigger kinds beyond the
/// query name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Subject {
    /// A name entry: the query name and its CNAME targets; an address
    /// entry: the addresses in the answer (RPZ QNAME and response IP).
    #[default]
    Query,
    /// An address entry matched against the client's source address
    /// (RPZ `rpz-client-ip`).
    Client,
    /// Matched against the name servers of the zone that holds the
    /// answer: a name entry against their names (`rpz-nsdname`), an
    /// address entry against their addresses (`rpz-nsip`).
    NameServer,
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
    /// What the entry is matched against: the query (its name, CNAME
    /// targets and answer addresses), the client's address, or the name
    /// servers of the zone that answers.
    pub subject: Subject,
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
            subject: Subject::Query,
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
    // Every line of a name feed comes here first; a name almost always
    // has a letter past `f` and is turned away without a parse.
    let could_be = |b: u8| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/');
    if !text.bytes().all(could_be) {
        return None;
    }
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
    /// The "wildcard domains" lists (hagezi, StevenBlack's DNSCrypt files):
    /// one `*.name` a line, meaning the name and everything below it, as
    /// dnscrypt-proxy reads them.
    Wildcard,
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
            Format::Wildcard => "wildcard",
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
pub struct ParseCounts {
    /// Lines read (for STIX: objects read).
    pub lines: usize,
    pub loaded: usize,
    pub rejected: usize,
    /// The first [`REJECTS_KEPT`] rejected lines.
    pub first_rejects: Vec<Reject>,
    /// Of `loaded`, how many are address indicators (answer-IP policy).
    pub addresses: usize,
    /// Of `loaded`, how many are name-server triggers (RPZ `rpz-nsdname`
    /// and `rpz-nsip`).
    pub name_servers: usize,
    /// Valid entries not turned into blocklist entries, by kind.
    pub skipped: BTreeMap<String, usize>,
    /// STIX indicators marked `revoked`.
    pub revoked: usize,
    /// STIX indicators whose `valid_until` has passed.
    pub expired: usize,
    /// STIX indicators whose `valid_from` is still to come.
    pub not_yet_valid: usize,
    /// Below-only rules (`*.name`) whose apex no rule of the same feed
    /// blocks: names the publisher may have meant to block that resolve.
    pub apexes_open: usize,
    /// The next time the feed's contents change by the clock alone (the
    /// earliest future `valid_until` or `valid_from`): a reload is due then.
    pub next_change: Option<SystemTime>,
}

impl ParseCounts {
    pub fn reject(&mut self, line: usize, error: LineError) {
        self.rejected += 1;
        if self.first_rejects.len() < REJECTS_KEPT {
            self.first_rejects.push(Reject { line, error });
        }
    }

    pub fn skip(&mut self, kind: &str) {
        *self.skipped.entry(kind.to_owned()).or_default() += 1;
    }

    /// Add the counts of a later part of the same file (see
    /// [`super::split`]).
    pub fn absorb(&mut self, later: ParseCounts) {
        self.lines += later.lines;
        self.loaded += later.loaded;
        self.rejected += later.rejected;
        let room = REJECTS_KEPT.saturating_sub(self.first_rejects.len());
        self.first_rejects
            .extend(later.first_rejects.into_iter().take(room));
        self.addresses += later.addresses;
        self.name_servers += later.name_servers;
        for (kind, n) in later.skipped {
            *self.skipped.entry(kind).or_default() += n;
        }
        self.revoked += later.revoked;
        self.expired += later.expired;
        self.not_yet_valid += later.not_yet_valid;
        self.apexes_open += later.apexes_open;
        if let Some(at) = later.next_change {
            self.note_change(at);
        }
    }

    pub(super) fn note_change(&mut self, at: SystemTime) {
        if self.next_change.is_none_or(|t| at < t) {
            self.next_change = Some(at);
        }
    }
}

/// What a line parser made of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// Comment, blank, header: nothing to count.
    Empty,
    /// This many indicators went to the sink.
    Loaded(usize),
    /// Valid, but not something the blocklist acts on.
    Skipped(&'static str),
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

/// Why a reader could not be parsed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Stix(String),
}
