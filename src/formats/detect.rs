//! Format detection: which syntax a feed is in, from its first lines.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use super::read::open;
use super::{FeedError, Format, parse_net, plain, rpz};

/// `*.name` lines, and no bare name, that make a list a wildcard-domains
/// list without a header saying so.
const WILDCARD_LINES: usize = 20;

/// Guess a format from the first meaningful lines of a file.
pub fn detect(path: &Path) -> Result<Format, FeedError> {
    let io_err = |source| FeedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = open(path, 1 << 20).map_err(io_err)?;
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
    // A list whose every name line is `*.name` is a wildcard-domains list,
    // when there are enough of them to tell (a hand-written plain list of
    // one or two `*.name` lines means below-only) or its header says so.
    let (mut starred, mut bare) = (0usize, 0usize);
    let header_says_wildcard = head.lines().take(50).any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with('#') && (l.contains("wildcard domain") || l.contains("wildcard-domain"))
    });
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
        if plain::looks_like_name(first) {
            saw_plain = true;
            if first.starts_with("*.") {
                starred += 1;
            } else {
                bare += 1;
            }
        } else if parse_net(first).is_some() {
            saw_plain = true;
        }
    }
    if bare == 0 && (starred >= WILDCARD_LINES || starred > 0 && header_says_wildcard) {
        return Some(Format::Wildcard);
    }
    // An empty list (or one of comments only) is a valid plain list with
    // no entries; the shrink guard decides whether to believe it.
    (saw_plain || !saw_anything).then_some(Format::Plain)
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
                "# Title: Pro DNS Blocklist\n# Format: Wildcard domains\n*.evil.com\n*.bad.org\n",
                Format::Wildcard,
            ),
            ("evil.com\n*.wild.example\n", Format::Plain),
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
        let many: String = (0..20).map(|i| format!("*.n{i}.example\n")).collect();
        assert_eq!(detect_text(&many), Some(Format::Wildcard));
        assert_eq!(detect_text(&many[..many.len() / 2]), Some(Format::Plain));
        // A header that mentions a wildcard entry is not a wildcard list.
        assert_eq!(
            detect_text("# plain list with a wildcard entry\n*.a.example\n"),
            Some(Format::Plain)
        );
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
}
