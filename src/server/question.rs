//! The common query, read in place: one question, opcode QUERY, at most
//! an OPT record without options. The packet cache and the blocked-name
//! fast path answer these from the bytes; anything else (and every
//! error) takes the full path.

use std::ops::Range;

pub(super) const OPT: u16 = 41;
/// Longest cache key: a 255-octet name, type, class, flags, EDNS.
const MAX_KEY: usize = 255 + 4 + 1 + 1 + 2;
/// Header flag bits a response copies from the query (RD, AD, CD).
const ECHOED_FLAGS: u16 = 0x0100 | 0x0020 | 0x0010;

/// Largest UDP response offered (the DNS flag day 2020 figure).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Where the question's parts are in the packet, and the packet cache's
/// key for it.
#[derive(Debug)]
pub struct Question {
    /// The name's wire form, as the client spelt it.
    name: Range<usize>,
    labels: u8,
    qtype: u16,
    qclass: u16,
    /// The OPT's payload size, clamped to what we offer; `None` without
    /// EDNS.
    edns: Option<u16>,
    /// The OPT's DO bit, echoed in the response (RFC 3225).
    dnssec_ok: bool,
    key: [u8; MAX_KEY],
    key_len: usize,
    /// The most a response to it may carry.
    pub limit: usize,
}

impl Question {
    /// Parse the common query shape, or `None` for anything else (which
    /// the full path then handles, errors included).
    pub fn parse(packet: &[u8]) -> Option<Question> {
        let header = packet.get(..12)?;
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        // A query (QR 0), opcode QUERY, one question, no answers or
        // authorities, at most one additional (the OPT).
        if flags & 0x8000 != 0 || flags & 0x7800 != 0 {
            return None;
        }
        if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
            return None;
        }
        let mut key = [0u8; MAX_KEY];
        let mut pos = 12;
        let mut labels = 0u8;
        loop {
            let len = usize::from(*packet.get(pos)?);
            if len & 0xC0 != 0 {
                return None;
            }
            let label = packet.get(pos..pos + 1 + len)?;
            if pos - 12 + label.len() > 255 {
                return None;
            }
            for (k, b) in key[pos - 12..].iter_mut().zip(label) {
                *k = b.to_ascii_lowercase();
            }
            pos += 1 + len;
            if len == 0 {
                break;
            }
            labels += 1;
        }
        let name = 12..pos;
        let type_class = packet.get(pos..pos + 4)?;
        let qtype = u16::from_be_bytes([type_class[0], type_class[1]]);
        let qclass = u16::from_be_bytes([type_class[2], type_class[3]]);
        let mut k = pos - 12;
        key[k..k + 4].copy_from_slice(type_class);
        k += 4;
        pos += 4;
        let [hi, lo] = (flags & ECHOED_FLAGS).to_be_bytes();
        key[k] = hi | lo;
        k += 1;
        let mut edns = None;
        let mut do_bit = false;
        let limit = if count(10) == 1 {
            // The OPT: root owner, type 41, no options, version 0.
            let opt = packet.get(pos..pos + 11)?;
            if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != OPT {
                return None;
            }
            let payload = u16::from_be_bytes([opt[3], opt[4]]).clamp(512, MAX_UDP_PAYLOAD);
            let (version, dnssec_ok) = (opt[6], opt[7] & 0x80 != 0);
            if version != 0 || u16::from_be_bytes([opt[9], opt[10]]) != 0 {
                return None;
            }
            pos += 11;
            key[k] = 1 | if dnssec_ok { 2 } else { 0 };
            do_bit = dnssec_ok;
            key[k + 1..k + 3].copy_from_slice(&payload.to_be_bytes());
            k += 3;
            edns = Some(payload);
            usize::from(payload)
        } else {
            key[k] = 0;
            k += 1;
            512
        };
        if pos != packet.len() {
            return None;
        }
        Some(Question {
            dnssec_ok: do_bit,
            name,
            labels,
            qtype,
            qclass,
            edns,
            key,
            key_len: k,
            limit,
        })
    }

    /// Everything a cached response depends on.
    pub(super) fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// Where the name is in the packet (wire form, no compression).
    pub fn name(&self) -> Range<usize> {
        self.name.clone()
    }

    /// The name's labels, left to right, as sent (not lower-cased).
    pub fn labels<'p>(
        &self,
        packet: &'p [u8],
    ) -> impl DoubleEndedIterator<Item = &'p [u8]> + Clone {
        // A 255-octet name has at most 127 labels.
        let mut starts = [0u16; 128];
        let mut at = self.name.start;
        for start in starts.iter_mut().take(usize::from(self.labels)) {
            *start = at as u16;
            at += 1 + usize::from(packet[at]);
        }
        (0..usize::from(self.labels)).map(move |i| {
            let at = usize::from(starts[i]);
            &packet[at + 1..at + 1 + usize::from(packet[at])]
        })
    }

    /// How many labels the name has (the root has none).
    pub fn label_count(&self) -> u8 {
        self.labels
    }

    pub fn qtype(&self) -> u16 {
        self.qtype
    }

    pub fn qclass(&self) -> u16 {
        self.qclass
    }

    /// The payload size our response offers, when the query had EDNS.
    pub fn edns_payload(&self) -> Option<u16> {
        self.edns
    }

    /// Whether the query set DO.
    pub fn dnssec_ok(&self) -> bool {
        self.dnssec_ok
    }
}
