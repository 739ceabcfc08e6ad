//! Where log lines go: standard error, one line per event, with control
//! characters escaped.
//!
//! Log lines carry text from outside: query names, a TAXII server's
//! object ids, the organisation id in an API path, a feed's bad line. A
//! newline in any of them would let whoever sent it forge a log line of
//! their choosing (log injection), and a terminal escape would rewrite
//! the operator's screen. The text format writes field values as they
//! are, so every event passes through [`escape`] on its way out; the JSON
//! format escapes inside its strings already and passes unchanged.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Standard error, escaped. `ansi`: the colour codes the formatter adds
/// for a terminal pass through (so does any ESC in a field: an operator
/// watching a terminal trusts it already).
#[derive(Clone, Copy)]
pub struct EscapedStderr {
    pub ansi: bool,
}

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = Escaping;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping { ansi: self.ansi }
    }
}

/// One event's writer. tracing-subscriber formats a whole event into one
/// buffer and writes it with one `write_all`, so each `write` here sees
/// the event entire and its one trailing newline.
pub struct Escaping {
    ansi: bool,
}

impl Write for Escaping {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = escape(buf, self.ansi);
        io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `event` with every control character but a final newline (and ESC,
/// when `ansi`) written as `\n`, `\r`, `\t` or `\xHH`, and DEL as `\x7f`.
pub fn escape(event: &[u8], ansi: bool) -> Vec<u8> {
    let (body, end) = match event.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (event, &b""[..]),
    };
    if !body.iter().any(|&b| needs_escape(b, ansi)) {
        return event.to_vec();
    }
    let mut out = Vec::with_capacity(event.len() + 16);
    for &b in body {
        if !needs_escape(b, ansi) {
            out.push(b);
            continue;
        }
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.extend_from_slice(end);
    out
}

fn needs_escape(b: u8, ansi: bool) -> bool {
    (b < 0x20 && !(ansi && b == 0x1b)) || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_inside_its_event() {
        let event = b"WARN asked_for=x\nINFO forged line\r\x1b[2J\x07\n";
        assert_eq!(
            escape(event, false),
            b"WARN asked_for=x\\nINFO forged line\\r\\x1b[2J\\x07\n".to_vec()
        );
        // On a terminal the formatter's colours pass; the rest does not.
        assert_eq!(
            escape(b"\x1b[33mWARN\x1b[0m a\nb\n", true),
            b"\x1b[33mWARN\x1b[0m a\\nb\n".to_vec()
        );
    }

    #[test]
    fn ordinary_lines_and_utf8_pass_unchanged() {
        for event in [
            &b"INFO listening for UDP on 127.0.0.1:53\n"[..],
            "INFO feed caf\u{e9}.txt: 3 names\n".as_bytes(),
            b"no trailing newline",
            b"",
        ] {
            assert_eq!(escape(event, false), event.to_vec());
        }
        assert_eq!(escape(b"tab\there\x7f\n", false), b"tab\\there\\x7f\n");
    }
}
