//! Frame Streams, the framing dnstap travels in, as the sending side of a
//! bidirectional connection (a Unix socket or TCP): READY with our
//! content type, the collector's ACCEPT, START, then data frames (a
//! big-endian length and the payload), and STOP answered by FINISH.

use std::io::{self, Read, Write};

const ACCEPT: u32 = 0x01;
const START: u32 = 0x02;
const STOP: u32 = 0x03;
const READY: u32 = 0x04;
const FINISH: u32 = 0x05;
const FIELD_CONTENT_TYPE: u32 = 0x01;
/// A control frame longer than this is not one a collector sends.
const CONTROL_MAX: usize = 512;

/// A control frame: the escape (a zero length), its length, its type and
/// at most one content-type field.
fn control(kind: u32, content_type: Option<&[u8]>) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if let Some(ct) = content_type {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        body.extend_from_slice(ct);
    }
    let mut frame = 0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Read one control frame; returns its type and its content types.
fn read_control(r: &mut impl Read) -> io::Result<(u32, Vec<Vec<u8>>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if read_u32(r)? != 0 {
        return Err(bad("the collector sent data where a control frame belongs"));
    }
    let len = read_u32(r)? as usize;
    if !(4..=CONTROL_MAX).contains(&len) {
        return Err(bad("a control frame of an impossible length"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let kind = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let mut types = Vec::new();
    let mut rest = &body[4..];
    while rest.len() >= 8 {
        let field = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let n = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let value = rest
            .get(8..8 + n)
            .ok_or_else(|| bad("a control field longer than its frame"))?;
        if field == FIELD_CONTENT_TYPE {
            types.push(value.to_vec());
        }
        rest = &rest[8 + n..];
    }
    Ok((kind, types))
}

/// Open the stream: READY, the collector's ACCEPT of `content_type`,
/// START.
pub fn handshake<S: Read + Write>(s: &mut S, content_type: &[u8]) -> io::Result<()> {
    s.write_all(&control(READY, Some(content_type)))?;
    s.flush()?;
    let (kind, types) = read_control(s)?;
    if kind != ACCEPT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the collector answered READY with control frame {kind}, not ACCEPT"),
        ));
    }
    if !types.is_empty() && !types.iter().any(|t| t == content_type) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the collector does not accept protobuf:dnstap.Dnstap",
        ));
    }
    s.write_all(&control(START, Some(content_type)))?;
    s.flush()
}

/// Append one data frame to `out`.
pub fn data_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Close the stream: STOP, then wait for the collector's FINISH (bounded
/// by the socket's read timeout).
pub fn stop<S: Read + Write>(s: &mut S) -> io::Result<()> {
    s.write_all(&control(STOP, None))?;
    s.flush()?;
    let (kind, _) = read_control(s)?;
    if kind == FINISH {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the collector answered STOP with control frame {kind}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_frame_is_laid_out_as_frame_streams_says() {
        let frame = control(START, Some(b"protobuf:dnstap.Dnstap"));
        // Escape, length 34 (type, field type, field length, 22 bytes),
        // START, CONTENT_TYPE, 22. fstrm_capture takes it (the dnstap
        // integration test).
        let mut expect = vec![
            0, 0, 0, 0, 0, 0, 0, 0x22, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0x16,
        ];
        expect.extend_from_slice(b"protobuf:dnstap.Dnstap");
        assert_eq!(frame, expect);
        let (kind, types) = read_control(&mut &frame[..]).unwrap();
        assert_eq!(kind, START);
        assert_eq!(types, vec![b"protobuf:dnstap.Dnstap".to_vec()]);
    }

    #[test]
    fn a_collector_that_sends_data_or_a_huge_control_frame_is_refused() {
        let data = [0u8, 0, 0, 5, 1, 2, 3, 4, 5];
        assert!(read_control(&mut &data[..]).is_err());
        let huge = [0u8, 0, 0, 0, 0, 0, 0x10, 0];
        assert!(read_control(&mut &huge[..]).is_err());
        let short_field = [
            0u8, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9,
        ];
        assert!(read_control(&mut &short_field[..]).is_err());
    }
}
