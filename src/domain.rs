//! Domain names as Portcullis stores and compares them.
//!
//! One normaliser is shared by every feed parser, the allow and protected
//! lists and the `check` command, so that a name is spelt the same way
//! wherever it is stored or looked up (docs/architecture.md "Matching and precedence"):
//! ASCII lower case, no trailing dot, internationalised labels as A-labels
//! (punycode), `\DDD` and `\X` escapes decoded, RFC 1035 lengths enforced.
//!
//! The blocklist is keyed by the *reversed-label* form (`www.example.com` ->
//! `com.example.www.`). Every label is closed by a `.`, so the key of
//! `example.com` (`com.example.`) is a prefix of the keys of the names below
//! it and never of `com.examples.`: a suffix match is a byte-prefix match that
//! ends on a label boundary.
//!
//! Stored labels hold only letters, digits, `-` and `_` (underscores appear
//! in real service names such as `_dmarc`). A query label with any other
//! byte simply cannot match a stored one.

use std::fmt;

/// Longest name in presentation form without the trailing dot (RFC 1035
/// 3.1: 255 octets on the wire, which is 253 characters of text).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// The byte that closes every label in a reversed key.
pub const KEY_SEPARATOR: u8 = b'.';

/// Why a piece of text is not a domain name we can store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Nothing left after trimming (or only the root `.`).
    Empty,
    /// An empty label, as in `a..b` or `.a`.
    EmptyLabel,
    /// A label longer than 63 octets.
    LabelTooLong { len: usize },
    /// A name longer than 253 characters.
    NameTooLong { len: usize },
    /// A character that DNS host names and service labels do not use.
    BadCharacter { ch: char },
    /// An IP address where a name was expected.
    IpAddress,
    /// A `\` escape that is cut short or out of range.
    BadEscape,
    /// An internationalised name that IDNA cannot convert to A-labels.
    Idna,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "empty name"),
            NameError::EmptyLabel => write!(f, "empty label (two dots in a row?)"),
            NameError::LabelTooLong { len } => {
                write!(f, "label of {len} octets (at most {MAX_LABEL_LEN})")
            }
            NameError::NameTooLong { len } => {
                write!(f, "name of {len} characters (at most {MAX_NAME_LEN})")
            }
            NameError::BadCharacter { ch } => {
                write!(f, "character {ch:?} is not allowed in a name")
            }
            NameError::IpAddress => write!(f, "an IP address, not a domain name"),
            NameError::BadEscape => write!(f, "malformed \\ escape"),
            NameError::Idna => write!(f, "internationalised name cannot be converted to A-labels"),
        }
    }
}

impl std::error::Error for NameError {}

/// Normalise a name from a feed, a config list or the command line.
///
/// Returns the presentation form: lower case, no trailing dot, A-labels.
pub fn normalize(input: &str) -> Result<String, NameError> {
    if already_normal(input) {
        return Ok(input.to_owned());
    }
    normalize_slowly(input)
}

/// [`normalize`] for a name not yet in its form.
fn normalize_slowly(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if is_ip(trimmed) {
        return Err(NameError::IpAddress);
    }
    let unescaped;
    let text = if trimmed.contains('\\') {
        unescaped = unescape(trimmed)?;
        unescaped.as_str()
    } else {
        trimmed
    };
    let mut name = if text.is_ascii() {
        text.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(text).map_err(|_| NameError::Idna)?
    };
    if name.ends_with('.') {
        name.pop();
    }
    // Again on the result: an escape (`\050`) or a full-width digit that
    // IDNA maps to ASCII can turn text into an address.
    if is_ip(&name) {
        return Err(NameError::IpAddress);
    }
    validate(&name)?;
    Ok(name)
}

/// Whether `input` is already in the form [`normalize`] returns, checked
/// in one pass: nearly every line of a big feed is, and the general path
/// reads each name several times over.
fn already_normal(input: &str) -> bool {
    let bytes = input.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return false;
    }
    let mut label = 0;
    for &b in bytes {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if is_label_byte(b) && label < MAX_LABEL_LEN {
            label += 1;
        } else {
            return false;
        }
    }
    label > 0 && !is_ip(input)
}

/// Whether `text` is an IP address. Only text that could be one is tried
/// (most names have a letter outside a-f, and this runs for every feed
/// line).
fn is_ip(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
        && text.parse::<std::net::IpAddr>().is_ok()
}

/// Check an already lower-case ASCII name against the storage rules.
fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong { len: label.len() });
        }
        // Bytes first (every feed line passes here); chars only to name
        // the bad one.
        if !label.bytes().all(is_label_byte) {
            let ch = label.chars().find(|c| !is_label_char(*c)).unwrap_or('?');
            return Err(NameError::BadCharacter { ch });
        }
    }
    Ok(())
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// Decode RFC 1035 5.1 escapes: `\DDD` (decimal octet) and `\X` (literal X).
/// An escaped dot would put a dot inside a label, which we cannot store, so
/// it is reported as a bad character by `validate` afterwards.
fn unescape(text: &str) -> Result<String, NameError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        match rest {
            [a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
                let value =
                    u32::from(a - b'0') * 100 + u32::from(b - b'0') * 10 + u32::from(c - b'0');
                let byte = u8::try_from(value).map_err(|_| NameError::BadEscape)?;
                if byte == b'.' {
                    return Err(NameError::BadCharacter { ch: '.' });
                }
                out.push(byte);
                i += 4;
            }
            [b'.', ..] => return Err(NameError::BadCharacter { ch: '.' }),
            [x, ..] if !x.is_ascii_digit() => {
                out.push(*x);
                i += 2;
            }
            _ => return Err(NameError::BadEscape),
        }
    }
    String::from_utf8(out).map_err(|_| NameError::BadEscape)
}

/// Reversed-label key of a normalised name: `www.example.com` ->
/// `com.example.www.`, written into `out` (cleared first) so that callers
/// building millions of keys can reuse one buffer.
pub fn reversed_key_into(name: &str, out: &mut Vec<u8>) {
    out.clear();
    for label in name.rsplit('.') {
        out.extend_from_slice(label.as_bytes());
        out.push(KEY_SEPARATOR);
    }
}

/// Reversed-label key of a normalised name, as a new vector.
pub fn reversed_key(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    reversed_key_into(name, &mut out);
    out
}

/// Presentation form of a reversed key prefix: `com.example.` -> `example.com`.
pub fn name_from_key(key: &[u8]) -> String {
    let key = key.strip_suffix(&[KEY_SEPARATOR]).unwrap_or(key);
    let labels: Vec<&[u8]> = key.split(|b| *b == KEY_SEPARATOR).rev().collect();
    String::from_utf8_lossy(&labels.join(&KEY_SEPARATOR)).into_owned()
}

/// The name and every name above it, most specific first:
/// `a.b.c` -> `a.b.c`, `b.c`, `c`.
pub fn self_and_ancestors(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |n| n.split_once('.').map(|(_, rest)| rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the `feed_tsv` fuzz target: text that becomes an address only
    /// once escapes are read or IDNA maps its digits is an address, so
    /// normalising is idempotent (a normalised name normalises to itself).
    #[test]
    fn what_becomes_an_address_after_mapping_is_an_address() {
        for text in ["22.2.2.2\\0502", "\u{ff12}2.2.2.22", "1.2.3.4", "1.2.3.4."] {
            assert_eq!(normalize(text), Err(NameError::IpAddress), "{text:?}");
        }
        assert_eq!(normalize("22.2.2.22.example").unwrap(), "22.2.2.22.example");
    }

    #[test]
    fn normalises_case_trailing_dot_and_whitespace() {
        assert_eq!(normalize("  WWW.Example.COM. ").unwrap(), "www.example.com");
        assert_eq!(
            normalize("_dmarc.example.com").unwrap(),
            "_dmarc.example.com"
        );
    }

    #[test]
    fn the_one_pass_check_takes_exactly_the_names_already_in_form() {
        let label63 = "a".repeat(63);
        let long = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        let names = [
            "example.com".to_string(),
            "_dmarc.x-y.example".into(),
            "1.2.3.4".into(),
            "1.2.3.4.example".into(),
            "deadbeef".into(),
            "::1".into(),
            "Example.com".into(),
            "example.com.".into(),
            ".example.com".into(),
            "a..b".into(),
            " a.b".into(),
            "bücher.example".into(),
            r"\065bc.example".into(),
            format!("{label63}.example"),
            format!("{label63}a.example"),
            long.clone(),
            format!("{long}b"),
            String::new(),
        ];
        assert_eq!(long.len(), MAX_NAME_LEN);
        for name in &names {
            // Taken only when the full path would return it unchanged,
            // and always then, so the fast path changes nothing but speed.
            let unchanged = normalize_slowly(name).as_deref() == Ok(name.as_str());
            assert_eq!(already_normal(name), unchanged, "{name:?}");
            assert_eq!(normalize(name), normalize_slowly(name), "{name:?}");
        }
    }

    #[test]
    fn converts_idn_to_a_labels() {
        assert_eq!(
            normalize("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize("BÜCHER.example.").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(normalize(r"\065bc.example").unwrap(), "abc.example");
        assert_eq!(normalize(r"a\-b.example").unwrap(), "a-b.example");
        assert_eq!(
            normalize(r"a\.b.example"),
            Err(NameError::BadCharacter { ch: '.' })
        );
        assert_eq!(normalize(r"a\999.example"), Err(NameError::BadEscape));
        assert_eq!(normalize(r"abc\"), Err(NameError::BadEscape));
    }

    #[test]
    fn rejects_what_is_not_a_name() {
        assert_eq!(normalize(""), Err(NameError::Empty));
        assert_eq!(normalize("."), Err(NameError::Empty));
        assert_eq!(normalize("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(normalize("192.0.2.1"), Err(NameError::IpAddress));
        assert_eq!(normalize("2001:db8::1"), Err(NameError::IpAddress));
        assert!(matches!(
            normalize("a b.com"),
            Err(NameError::BadCharacter { ch: ' ' })
        ));
        assert!(matches!(
            normalize("a/b.com"),
            Err(NameError::BadCharacter { .. })
        ));
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(
            normalize(&long_label),
            Err(NameError::LabelTooLong { len: 64 })
        );
    }

    #[test]
    fn name_length_limit_is_253() {
        // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 characters: the longest legal name.
        let longest = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(longest.len(), 253);
        assert_eq!(normalize(&longest).unwrap(), longest);
        let too_long = format!("c{longest}");
        assert_eq!(
            normalize(&too_long),
            Err(NameError::NameTooLong { len: 254 })
        );
    }

    #[test]
    fn reversed_keys_close_every_label() {
        assert_eq!(reversed_key("www.example.com"), b"com.example.www.");
        assert_eq!(reversed_key("com"), b"com.");
        // The boundary case: example.com's key must not prefix examples.com's
        // or notexample.com's, and must prefix a subdomain's.
        let parent = reversed_key("example.com");
        assert!(!reversed_key("examples.com").starts_with(&parent));
        assert!(!reversed_key("notexample.com").starts_with(&parent));
        assert!(!reversed_key("example.community").starts_with(&parent));
        assert!(reversed_key("a.example.com").starts_with(&parent));
        assert_eq!(name_from_key(b"com.example.www."), "www.example.com");
    }

    #[test]
    fn ancestors_walk_up_to_the_tld() {
        let all: Vec<&str> = self_and_ancestors("a.b.c").collect();
        assert_eq!(all, ["a.b.c", "b.c", "c"]);
    }
}
