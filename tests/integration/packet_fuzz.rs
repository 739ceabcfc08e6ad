//! Malformed DNS messages against the running resolver, over UDP and TCP:
//! random bytes, truncated queries, compression loops, bad counts, odd
//! opcodes, classes and types, EDNS edge cases, responses, bit flips.
//! After each batch a normal query and a blocked one must be answered
//! correctly; at the end the log holds no panic and the resident memory
//! has not grown.
//!
//! `PORTCULLIS_PACKET_FUZZ` sets the number of messages (20,000 in the
//! test suite; `scripts/fuzz/packets.sh` sends 1,000,000) and
//! `PORTCULLIS_PACKET_FUZZ_SEED` the seed, which a failure prints.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::forward::forwarder;
use crate::harness::{Transport, a_records, build_query, query};

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A well-formed query to start from.
fn seed_query(rng: &mut Rng) -> Vec<u8> {
    let names = [
        "www.example.test.",
        "evil.example.test.",
        "a.b.c.d.evil.example.test.",
        "example.test.",
        ".",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::TXT,
    ];
    let msg = build_query(
        names[rng.below(names.len())],
        types[rng.below(types.len())],
        rng.below(2) == 0,
    );
    msg.to_vec().unwrap()
}

/// One malformed message, of one of the kinds above.
fn malformed(rng: &mut Rng) -> Vec<u8> {
    let mut q = seed_query(rng);
    match rng.below(10) {
        // Random bytes.
        0 => (0..rng.below(600)).map(|_| rng.byte()).collect(),
        // Truncated anywhere.
        1 => {
            q.truncate(rng.below(q.len()));
            q
        }
        // A compression loop in the question: a pointer to itself, or two
        // pointers to each other.
        2 => {
            let mut m = q[..12].to_vec();
            m[4..6].copy_from_slice(&[0, 1]);
            if rng.below(2) == 0 {
                m.extend_from_slice(&[0xC0, 12]);
            } else {
                m.extend_from_slice(&[1, b'a', 0xC0, 16, 0xC0, 12]);
            }
            m.extend_from_slice(&[0, 1, 0, 1]);
            m
        }
        // Counts that lie.
        3 => {
            for count in &mut q[4..12] {
                if rng.below(3) == 0 {
                    *count = rng.byte();
                }
            }
            q
        }
        // Odd opcodes, classes and types.
        4 => {
            q[2] = (q[2] & 0x87) | ((rng.byte() & 0x0F) << 3);
            let end = q.len() - if q[11] == 1 { 11 } else { 0 };
            let (t, c) = (end - 4, end - 2);
            let odd = [
                0u16,
                41,
                250,
                251,
                252,
                253,
                254,
                255,
                65535,
                rng.next() as u16,
            ];
            q[t..t + 2].copy_from_slice(&odd[rng.below(odd.len())].to_be_bytes());
            q[c..c + 2].copy_from_slice(&odd[rng.below(odd.len())].to_be_bytes());
            q
        }
        // EDNS edge cases: versions, payload sizes, options that lie about
        // their length, two OPTs, an OPT with a name.
        5 => {
            let mut m = build_query("www.example.test.", RecordType::A, false)
                .to_vec()
                .unwrap();
            let opts = rng.below(3) + 1;
            m[10..12].copy_from_slice(&(opts as u16).to_be_bytes());
            for _ in 0..opts {
                if rng.below(4) == 0 {
                    m.extend_from_slice(&[1, b'x', 0]);
                } else {
                    m.push(0);
                }
                m.extend_from_slice(&41u16.to_be_bytes());
                m.extend_from_slice(&(rng.next() as u16).to_be_bytes());
                m.extend_from_slice(&[rng.byte(), rng.byte(), rng.byte() & 0x80, 0]);
                let option: Vec<u8> = (0..rng.below(20)).map(|_| rng.byte()).collect();
                let claimed = if rng.below(2) == 0 {
                    option.len() as u16
                } else {
                    rng.next() as u16
                };
                m.extend_from_slice(&claimed.to_be_bytes());
                m.extend_from_slice(&option);
            }
            m
        }
        // A response (QR set), maybe with records: never answered.
        6 => {
            q[2] |= 0x80;
            q
        }
        // Bit flips.
        7 => {
            for _ in 0..rng.below(8) + 1 {
                let i = rng.below(q.len());
                q[i] ^= 1 << rng.below(8);
            }
            q
        }
        // Labels of odd lengths and bytes.
        8 => {
            let mut m = q[..12].to_vec();
            m[4..6].copy_from_slice(&[0, 1]);
            m[10..12].fill(0);
            for _ in 0..rng.below(130) {
                let len = rng.below(70);
                m.push(len as u8);
                m.extend((0..len).map(|_| rng.byte()));
            }
            m.push(0);
            m.extend_from_slice(&[0, 1, 0, 1]);
            m
        }
        // Trailing garbage after a good query.
        _ => {
            q.extend((0..rng.below(100) + 1).map(|_| rng.byte()));
            q
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn still_answers(addr: SocketAddr, transport: Transport, seed: u64, sent: usize) {
    let reply = query(addr, "www.example.test.", RecordType::A, transport, true);
    assert_eq!(
        a_records(&reply),
        ["192.0.2.10"],
        "seed {seed:#x}, after {sent}"
    );
    let reply = query(addr, "evil.example.test.", RecordType::A, transport, true);
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "seed {seed:#x}, after {sent}"
    );
}

/// Send `batch` over one TCP connection, reconnecting whenever the server
/// closes it (as it may on garbage).
fn send_tcp(addr: SocketAddr, batch: &[Vec<u8>]) {
    let mut stream: Option<TcpStream> = None;
    for message in batch {
        let s = match &mut stream {
            Some(s) => s,
            None => {
                let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                    continue;
                };
                stream.insert(s)
            }
        };
        let mut framed = (message.len().min(65535) as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&message[..message.len().min(65535)]);
        if s.write_all(&framed).is_err() {
            stream = None;
        }
    }
}

#[test]
fn malformed_messages_by_the_thousand_change_nothing() {
    let count: usize = std::env::var("PORTCULLIS_PACKET_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("PORTCULLIS_PACKET_FUZZ_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let mut rng = Rng(seed);
    let (_setup, _auth, server) = forwarder(&[("threats.txt", "evil.example.test\n")], "");
    let addr = server.addr;
    still_answers(addr, Transport::Udp, seed, 0);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let batch = 2_000;
    let mut sent = 0;
    let mut baseline = 0;
    let mut drain = [0u8; 2048];
    while sent < count {
        let n = batch.min(count - sent);
        let messages: Vec<Vec<u8>> = (0..n).map(|_| malformed(&mut rng)).collect();
        let (tcp, udp_part) = messages.split_at(n / 20);
        for m in udp_part {
            // A full send buffer drops the message, as a network would.
            let _ = udp.send_to(m, addr);
            while udp.recv(&mut drain).is_ok() {}
        }
        send_tcp(addr, tcp);
        sent += n;
        still_answers(addr, Transport::Udp, seed, sent);
        if (sent / batch) % 5 == 0 {
            still_answers(addr, Transport::Tcp, seed, sent);
        }
        if baseline == 0 && sent >= 4 * batch.min(count) {
            baseline = rss_kib(server.pid());
        }
    }
    still_answers(addr, Transport::Tcp, seed, sent);
    let log = server.log();
    assert!(
        !log.contains("panicked"),
        "seed {seed:#x}: a panic in the log:\n{log}"
    );
    // Memory: flat after the first batches (caches and buffers warmed).
    let end = rss_kib(server.pid());
    if baseline > 0 {
        assert!(
            end < baseline + 16 * 1024,
            "seed {seed:#x}: RSS grew from {baseline} KiB to {end} KiB"
        );
    }
    eprintln!("{sent} malformed messages (seed {seed:#x}); RSS {baseline} -> {end} KiB");
}
