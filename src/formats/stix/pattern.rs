//! STIX patterns: the `(path, value)` comparisons of a pattern made only
//! of ORs (anything else is skipped by kind), and the host a `url:value`
//! comparison names, if it names nothing more.

/// The host of a URL that names nothing but a host; otherwise the skip kind.
pub(super) fn url_host(url: &str) -> Result<&str, &'static str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !(tail.is_empty() || tail == "/") {
        return Err("url-with-path");
    }
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return Err("url-with-ip-host");
    }
    Ok(host)
}

#[derive(Debug, PartialEq)]
pub(super) enum PatternError {
    /// A valid pattern we do not reduce to a blocklist entry, by kind.
    Skip(&'static str),
    Syntax(String),
}

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Str(String),
    Op(String),
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, PatternError> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    let quoted =
        |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Result<String, PatternError> {
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(PatternError::Syntax("unterminated string".into())),
                    Some('\\') => match chars.next() {
                        Some(c) => s.push(c),
                        None => return Err(PatternError::Syntax("dangling escape".into())),
                    },
                    Some('\'') => return Ok(s),
                    Some(c) => s.push(c),
                }
            }
        };
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '[' | '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ']' | ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '\'' => {
                chars.next();
                tokens.push(Token::Str(quoted(&mut chars)?));
            }
            '=' | '!' | '<' | '>' => {
                let mut op = String::new();
                while let Some(&c) = chars.peek().filter(|c| matches!(c, '=' | '!' | '<' | '>')) {
                    op.push(c);
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            _ => {
                // An object path or keyword; a path may hold a quoted step
                // (`file:hashes.'SHA-256'`).
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '[' && word.contains(':') {
                        // A list step inside a path: `resolves_to_refs[*]`.
                        for c in chars.by_ref() {
                            word.push(c);
                            if c == ']' {
                                break;
                            }
                        }
                    } else if c == '\'' && word.ends_with('.') {
                        chars.next();
                        word.push('\'');
                        word.push_str(&quoted(&mut chars)?);
                        word.push('\'');
                    } else if c.is_whitespace()
                        || matches!(c, '[' | ']' | '(' | ')' | '=' | '!' | '<' | '>' | '\'')
                    {
                        break;
                    } else {
                        word.push(c);
                        chars.next();
                    }
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// The skip kind for a comparison on a path we do not act on: its object
/// type (or, for a domain name, the property), from a fixed list so a
/// feed cannot grow the report without bound.
pub(super) fn unacted_kind(path: &str) -> &'static str {
    const TYPES: [&str; 14] = [
        "artifact",
        "autonomous-system",
        "directory",
        "email-addr",
        "email-message",
        "mac-addr",
        "mutex",
        "network-traffic",
        "process",
        "software",
        "user-account",
        "windows-registry-key",
        "x509-certificate",
        "file",
    ];
    let (object, property) = path.split_once(':').unwrap_or((path, ""));
    if object == "domain-name" || object == "ipv4-addr" || object == "ipv6-addr" {
        let stem = property.split(['[', '.']).next().unwrap_or("");
        return match (object, stem) {
            ("domain-name", "resolves_to_refs") => "domain-name:resolves_to_refs",
            ("ipv4-addr" | "ipv6-addr", "resolves_to_refs") => "ip-addr:resolves_to_refs",
            ("ipv4-addr" | "ipv6-addr", "belongs_to_refs") => "ip-addr:belongs_to_refs",
            _ => "other-property",
        };
    }
    TYPES
        .into_iter()
        .find(|t| *t == object)
        .unwrap_or("other-object")
}

/// The `(path, value)` comparisons of an all-OR pattern.
pub(super) fn parse_pattern(pattern: &str) -> Result<Vec<(String, String)>, PatternError> {
    let tokens = tokenize(pattern)?;
    let keyword = |k: &str| {
        tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k)))
    };
    if keyword("AND") {
        return Err(PatternError::Skip("and"));
    }
    if keyword("FOLLOWEDBY") {
        return Err(PatternError::Skip("followedby"));
    }
    if ["WITHIN", "REPEATS", "START", "STOP"]
        .iter()
        .any(|k| keyword(k))
    {
        return Err(PatternError::Skip("qualifier"));
    }
    if [
        "NOT",
        "LIKE",
        "MATCHES",
        "IN",
        "ISSUBSET",
        "ISSUPERSET",
        "EXISTS",
    ]
    .iter()
    .any(|k| keyword(k))
        || tokens
            .iter()
            .any(|t| matches!(t, Token::Op(op) if op != "="))
    {
        return Err(PatternError::Skip("operator"));
    }
    let mut depth: i32 = 0;
    let mut out = Vec::new();
    let mut expect_or = false;
    let mut iter = tokens.into_iter();
    while let Some(token) = iter.next() {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth < 0 {
                    return Err(PatternError::Syntax("unbalanced brackets".into()));
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("OR") => {
                if !expect_or {
                    return Err(PatternError::Syntax(
                        "OR without a comparison before it".into(),
                    ));
                }
                expect_or = false;
            }
            Token::Word(path) if !expect_or && path.contains(':') => {
                match (iter.next(), iter.next()) {
                    (Some(Token::Op(op)), Some(Token::Str(value))) if op == "=" => {
                        out.push((path.to_ascii_lowercase(), value))
                    }
                    _ => {
                        return Err(PatternError::Syntax(format!(
                            "comparison on {path} is not `path = 'value'`"
                        )));
                    }
                }
                expect_or = true;
            }
            other => return Err(PatternError::Syntax(format!("unexpected {other:?}"))),
        }
    }
    if depth != 0 || out.is_empty() {
        return Err(PatternError::Syntax(
            "unbalanced brackets or no comparison".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_reduce_only_when_every_part_is_an_or() {
        let ok = |p: &str| parse_pattern(p).unwrap();
        assert_eq!(
            ok("[domain-name:value = 'evil.example']"),
            [("domain-name:value".into(), "evil.example".into())]
        );
        assert_eq!(
            ok(
                "[domain-name:value = 'a.example' OR domain-name:value = 'b.example'] OR [url:value = 'http://c.example/']"
            ),
            [
                ("domain-name:value".to_owned(), "a.example".to_owned()),
                ("domain-name:value".to_owned(), "b.example".to_owned()),
                ("url:value".to_owned(), "http://c.example/".to_owned()),
            ]
        );
        assert_eq!(
            ok("[file:hashes.'SHA-256' = 'ab\\'c']")[0].0,
            "file:hashes.'sha-256'"
        );
        let skip = |p: &str| parse_pattern(p).unwrap_err();
        assert_eq!(
            skip("[file:hashes.'SHA-256' = 'x' AND file:name = 'y']"),
            PatternError::Skip("and")
        );
        assert_eq!(
            skip("[domain-name:value = 'a'] FOLLOWEDBY [domain-name:value = 'b']"),
            PatternError::Skip("followedby")
        );
        assert_eq!(
            skip("[domain-name:value = 'a'] REPEATS 5 TIMES"),
            PatternError::Skip("qualifier")
        );
        assert_eq!(
            skip("[domain-name:value = 'a'] WITHIN 300 SECONDS"),
            PatternError::Skip("qualifier")
        );
        assert_eq!(
            skip("[domain-name:value MATCHES '^a']"),
            PatternError::Skip("operator")
        );
        assert_eq!(
            skip("[domain-name:value != 'a']"),
            PatternError::Skip("operator")
        );
        assert_eq!(
            ok("[domain-name:resolves_to_refs[*].value = '198.51.100.3']")[0].0,
            "domain-name:resolves_to_refs[*].value"
        );
        assert_eq!(
            unacted_kind("domain-name:resolves_to_refs[*].value"),
            "domain-name:resolves_to_refs"
        );
        assert_eq!(
            unacted_kind("network-traffic:dst_ref.value"),
            "network-traffic"
        );
        assert_eq!(unacted_kind("x-custom:thing"), "other-object");
        assert!(matches!(
            skip("[domain-name:value = 'a'"),
            PatternError::Syntax(_)
        ));
        assert!(matches!(
            skip("[domain-name:value = 'a"),
            PatternError::Syntax(_)
        ));
        assert!(matches!(
            skip("domain-name:value 'a'"),
            PatternError::Syntax(_)
        ));
    }

    #[test]
    fn url_hosts_only_when_the_url_is_only_a_host() {
        assert_eq!(url_host("http://evil.example/"), Ok("evil.example"));
        assert_eq!(
            url_host("https://user@evil.example:8443"),
            Ok("evil.example")
        );
        assert_eq!(url_host("evil.example"), Ok("evil.example"));
        assert_eq!(
            url_host("dropbox.com/s/raw/abc/agenda.html"),
            Err("url-with-path")
        );
        assert_eq!(url_host("http://evil.example/?q=1"), Err("url-with-path"));
        assert_eq!(url_host("http://192.0.2.1/"), Err("url-with-ip-host"));
    }
}
