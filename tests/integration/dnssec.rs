//! DNSSEC validation against a signed lab hierarchy built at test time by
//! real tools (tests/lab/signed-lab.sh: dnssec-keygen and dnssec-signzone,
//! served by NSD on 127.0.54.x:53), with the lab root's DS as the trust
//! anchor. Binding port 53 needs root, as in CI; without root or without
//! the tools the test says why it is skipped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::harness::{
    Server, Setup, Transport, a_records, ede, exchange, http_get, metric, run, scrape,
};

/// The running lab; stopped when dropped.
pub struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    /// Build and start the lab, or say why not.
    pub fn start() -> Option<Lab> {
        let missing: Vec<&str> = ["dnssec-keygen", "dnssec-signzone", "nsd"]
            .into_iter()
            .filter(|tool| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .map_or(true, |o| !o.status.success())
            })
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "SKIPPED DNSSEC lab tests: {} not installed (scripts/test-deps.sh installs them)",
                missing.join(", ")
            );
            return None;
        }
        if std::net::UdpSocket::bind(("127.0.54.250", 53)).is_err() {
            eprintln!("SKIPPED DNSSEC lab tests: cannot bind port 53 on 127.0.54.x (needs root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("bash")
            .arg(script())
            .arg(dir.path())
            .status()
            .expect("run signed-lab.sh");
        assert!(status.success(), "the signed lab did not start");
        Some(Lab { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A validating Unbound on 127.0.54.9:`port` over the same lab.
    pub fn start_unbound(&self, port: u16) {
        self.unbound("--unbound", port);
    }

    /// A non-validating Unbound on 127.0.54.9:`port`: an upstream for
    /// forward mode, which validates for itself.
    pub fn start_unbound_plain(&self, port: u16) {
        self.unbound("--unbound-plain", port);
    }

    fn unbound(&self, how: &str, port: u16) {
        let status = Command::new("bash")
            .arg(script())
            .arg(how)
            .arg(self.dir.path())
            .arg(port.to_string())
            .status()
            .expect("run signed-lab.sh --unbound");
        assert!(status.success(), "Unbound ({how}) did not start on the lab");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("--stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/signed-lab.sh")
}

/// The resolver config for recursion over the lab.
pub fn lab_resolver(anchor: &Path, extra: &str) -> String {
    format!(
        "[resolver]\nmode = \"recursive\"\nroot_hints = [\"127.0.54.1\"]\n\
         allow_server_networks = [\"127.0.54.0/24\"]\ndnssec = \"validate\"\n\
         trust_anchors = \"{}\"\n{extra}",
        anchor.display()
    )
}

/// A query with the DNSSEC header and EDNS bits chosen.
#[derive(Clone, Copy, Default)]
pub struct Bits {
    pub do_bit: bool,
    pub ad: bool,
    pub cd: bool,
}

pub fn ask(server: SocketAddr, name: &str, rtype: RecordType, t: Transport, bits: Bits) -> Message {
    let mut msg = Message::new(0x5a5a, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.metadata.authentic_data = bits.ad;
    msg.metadata.checking_disabled = bits.cd;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(bits.do_bit);
    msg.set_edns(edns);
    let reply = exchange(server, &msg.to_vec().unwrap(), t)
        .unwrap_or_else(|e| panic!("no answer for {name} over {t:?}: {e}"));
    Message::from_vec(&reply).expect("response parses")
}

fn has(msg: &Message, section: &str, rtype: RecordType) -> bool {
    let records = match section {
        "answer" => &msg.answers,
        _ => &msg.authorities,
    };
    records.iter().any(|r| r.record_type() == rtype)
}

const DO: Bits = Bits {
    do_bit: true,
    ad: false,
    cd: false,
};

/// One lab serves every case: its addresses are fixed, so two tests could
/// not each run one at the same time.
#[test]
fn validation_over_the_signed_lab_and_beside_unbound() {
    let Some(lab) = Lab::start() else { return };
    // Recursive mode from the lab root, anchored by the root's DS. Each
    // case is asked over TCP after UDP, so the TCP answers come from the
    // answer store, which has to keep AD, the RRSIGs and the denial proofs
    // as validation left them; hickory's caches are kept as small as they
    // go, so that they hold as little of it as possible.
    portcullis_cases(&lab_resolver(
        &lab.path("root.ds"),
        "negative_trust_anchors = [\"ntabroken.test\"]\ncache_size = 1\n",
    ));
    // Forward mode to a recursor that does not validate, anchored by the
    // root's DNSKEY: Portcullis validates what comes back.
    const PLAIN_PORT: u16 = 5398;
    lab.start_unbound_plain(PLAIN_PORT);
    portcullis_cases(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"127.0.54.9:{PLAIN_PORT}\"]\n\
         dnssec = \"validate\"\ntrust_anchors = \"{}\"\n\
         negative_trust_anchors = [\"ntabroken.test\"]\n",
        lab.path("root.anchor").display()
    ));
    same_answers_as_unbound(&lab);
}

/// Every case, over UDP and TCP, against Portcullis with `resolver`.
fn portcullis_cases(resolver: &str) {
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.example.test\n");
    let config = setup.config(resolver);
    let server = Server::start(&config);
    let addr = server.addr;

    for t in [Transport::Udp, Transport::Tcp] {
        // A secure answer: AD and RRSIGs with DO; AD alone with AD; neither
        // for a plain query.
        let r = ask(addr, "www.example.test.", RecordType::A, t, DO);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t:?} {r}");
        assert!(r.metadata.authentic_data, "{t:?} secure answer has AD: {r}");
        assert_eq!(a_records(&r), ["192.0.2.10"]);
        assert!(
            has(&r, "answer", RecordType::RRSIG),
            "{t:?} RRSIG with DO: {r}"
        );
        let echoed = r.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        assert!(echoed, "{t:?} DO is echoed (RFC 3225): {r}");
        let r = ask(
            addr,
            "www.example.test.",
            RecordType::A,
            t,
            Bits {
                ad: true,
                ..Bits::default()
            },
        );
        assert!(
            r.metadata.authentic_data,
            "{t:?} AD when asked with AD: {r}"
        );
        assert!(
            !has(&r, "answer", RecordType::RRSIG),
            "{t:?} no RRSIG without DO: {r}"
        );
        let r = ask(addr, "www.example.test.", RecordType::A, t, Bits::default());
        assert!(!r.metadata.authentic_data, "{t:?} no AD unasked: {r}");

        // Secure denial, NSEC and NSEC3.
        for (name, proof) in [
            ("nonexistent.example.test.", RecordType::NSEC),
            ("nonexistent.nsec3.test.", RecordType::NSEC3),
        ] {
            let r = ask(addr, name, RecordType::A, t, DO);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NXDomain,
                "{t:?} {name}: {r}"
            );
            assert!(
                r.metadata.authentic_data,
                "{t:?} {name} secure NXDOMAIN: {r}"
            );
            assert!(
                has(&r, "authority", proof),
                "{t:?} {name} carries its proof: {r}"
            );
        }
        let r = ask(addr, "www.example.test.", RecordType::TXT, t, DO);
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{t:?} NODATA: {r}"
        );
        assert!(
            r.answers.is_empty() && r.metadata.authentic_data,
            "{t:?} secure NODATA: {r}"
        );
        let r = ask(addr, "www.nsec3.test.", RecordType::A, t, DO);
        assert!(r.metadata.authentic_data, "{t:?} NSEC3 zone secure: {r}");

        // Bogus answers: SERVFAIL with the extended error saying why.
        for (name, code) in [
            ("www.bogus.test.", 6),
            ("www.expired.test.", 7),
            ("www.future.test.", 8),
            ("www.nokey.test.", 9),
            ("www.nosig.test.", 10),
            ("nonexistent.nonsec.test.", 12),
        ] {
            let r = ask(addr, name, RecordType::A, t, DO);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::ServFail,
                "{t:?} {name}: {r}"
            );
            let (info, text) = ede(&r).unwrap_or_else(|| panic!("{t:?} {name} has EDE: {r}"));
            assert_eq!(info, code, "{t:?} {name}: {text}");
            assert!(text.contains("test"), "{t:?} {name} names the zone: {text}");
        }

        // CD: the client validates; the data comes back, without AD.
        let cd = Bits { cd: true, ..DO };
        let r = ask(addr, "www.bogus.test.", RecordType::A, t, cd);
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{t:?} CD: {r}"
        );
        assert_eq!(a_records(&r), ["192.0.2.30"]);
        assert!(!r.metadata.authentic_data);

        // Insecure: an unsigned delegation and an algorithm we cannot check.
        for (name, ip) in [
            ("www.insecure.test.", "192.0.2.70"),
            ("www.unknownalg.test.", "192.0.2.100"),
            ("www.ed448.test.", "192.0.2.80"),
        ] {
            let r = ask(addr, name, RecordType::A, t, DO);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NoError,
                "{t:?} {name}: {r}"
            );
            assert_eq!(a_records(&r), [ip], "{t:?} {name}");
            assert!(!r.metadata.authentic_data, "{t:?} {name} insecure: {r}");
        }

        // A negative trust anchor: broken signatures tolerated, no AD.
        let r = ask(addr, "www.ntabroken.test.", RecordType::A, t, DO);
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{t:?} NTA: {r}"
        );
        assert_eq!(a_records(&r), ["192.0.2.90"]);
        assert!(!r.metadata.authentic_data);

        // A blocked name in a signed zone: the block answer, never AD.
        let r = ask(
            addr,
            "evil.example.test.",
            RecordType::A,
            t,
            Bits { ad: true, ..DO },
        );
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NXDomain,
            "{t:?} blocked: {r}"
        );
        assert_eq!(ede(&r).map(|e| e.0), Some(15), "{t:?} {r}");
        assert!(
            !r.metadata.authentic_data,
            "{t:?} a block answer never has AD: {r}"
        );
        let echoed = r.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        assert!(echoed, "{t:?} a block answer echoes DO too: {r}");
    }

    // The packet cache keys on DO and CD (and RD, AD): an answer cached for
    // a DO=0 query is not served to DO=1 without its RRSIGs, and bogus data
    // given to a CD=1 client is never cached for anyone. The DO=1 question
    // misses the packet cache and is answered by the answer store, which
    // kept the DO=0 client's answer whole: RRSIGs and AD come back.
    for _ in 0..3 {
        let r = ask(
            addr,
            "mail.example.test.",
            RecordType::A,
            Transport::Udp,
            Bits::default(),
        );
        assert!(!has(&r, "answer", RecordType::RRSIG) && !r.metadata.authentic_data);
    }
    let r = ask(
        addr,
        "mail.example.test.",
        RecordType::A,
        Transport::Udp,
        DO,
    );
    assert!(
        has(&r, "answer", RecordType::RRSIG) && r.metadata.authentic_data,
        "{r}"
    );
    let cd = Bits { cd: true, ..DO };
    for _ in 0..3 {
        let r = ask(addr, "www.future.test.", RecordType::A, Transport::Udp, cd);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
    }
    let r = ask(addr, "www.future.test.", RecordType::A, Transport::Udp, DO);
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "CD=0 after CD=1: {r}"
    );

    // RFC 8198: after a validated NXDOMAIN, other names in its NSEC range
    // are denied from it without asking the upstream, with the proof.
    let aggressive = || {
        metric(
            &scrape(&server),
            "portcullis_dnssec_aggressive_nxdomain_total",
            &[],
        )
    };
    let before = aggressive();
    for name in ["nx-aggr-1.example.test.", "nx-aggr-2.example.test."] {
        let r = ask(addr, name, RecordType::A, Transport::Udp, DO);
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}: {r}"
        );
        assert!(r.metadata.authentic_data, "{name}: {r}");
        assert!(has(&r, "authority", RecordType::NSEC), "{name}: {r}");
        assert!(has(&r, "authority", RecordType::RRSIG), "{name}: {r}");
    }
    assert_eq!(aggressive() - before, 2.0, "both from the cached range");
    // Not for NSEC3 ranges, not with CD, not for names that exist.
    let before = aggressive();
    let r = ask(
        addr,
        "nx-aggr-1.nsec3.test.",
        RecordType::A,
        Transport::Udp,
        DO,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r}");
    let cd = Bits { cd: true, ..DO };
    let r = ask(
        addr,
        "nx-aggr-3.example.test.",
        RecordType::A,
        Transport::Udp,
        cd,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r}");
    let r = ask(
        addr,
        "mail.example.test.",
        RecordType::A,
        Transport::Udp,
        DO,
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
    assert_eq!(aggressive(), before);

    // Metrics by validation state and by extended error code.
    let text = scrape(&server);
    let answers = |state| {
        metric(
            &text,
            "portcullis_dnssec_answers_total",
            &[("state", state)],
        )
    };
    assert!(answers("secure") >= 10.0, "{text}");
    assert!(answers("insecure") >= 6.0, "{text}");
    assert!(answers("bogus") >= 8.0, "{text}");
    for code in ["6", "7", "8", "9", "10", "12"] {
        let bogus = metric(&text, "portcullis_dnssec_bogus_total", &[("ede", code)]);
        assert!(bogus >= 2.0, "EDE {code}: {text}");
    }
    // One bogus zone is not an unready resolver.
    let (status, _, body) = http_get(server.admin(), "/readyz", None);
    assert_eq!(status, 200, "{body}");

    // The log names the zone and the reason.
    assert!(
        server.log_contains("DNSSEC validation failed"),
        "{}",
        server.log()
    );
    assert!(
        server.log_contains("zone=expired.test."),
        "{}",
        server.log()
    );
    assert!(
        server.log_contains("every signature has expired"),
        "{}",
        server.log()
    );
}

#[test]
fn a_trust_anchor_file_that_does_not_parse_is_a_config_error_with_its_line() {
    let setup = Setup::new();
    setup.write(
        "anchors.txt",
        "; lab root\n. 300 IN DNSKEY 257 3 13 not-base64!\n",
    );
    let config = setup.config(&lab_resolver(&setup.path("anchors.txt"), ""));
    let config = config.to_str().unwrap();
    let (code, _, err) = run(&["config", "check", "--config", config]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("resolver.trust_anchors"), "{err}");
    assert!(
        err.contains("anchors.txt:2"),
        "names the file and line: {err}"
    );
    setup.write("anchors.txt", "example. 300 IN A 192.0.2.1\n");
    let (code, _, err) = run(&["config", "check", "--config", config]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("anchors.txt:1") && err.contains("DNSKEY or DS"),
        "{err}"
    );
}

/// What is compared between two resolvers: rcode, AD, and the answer
/// section without TTLs (RRSIGs by what they cover and who signed).
fn essence(msg: &Message) -> (ResponseCode, bool, Vec<String>) {
    let mut answers: Vec<String> = msg
        .answers
        .iter()
        .map(|r| match &r.data {
            hickory_proto::rr::RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::RRSIG(
                sig,
            )) => format!(
                "{} RRSIG {} by {}",
                r.name,
                sig.input().type_covered,
                sig.input().signer_name
            ),
            data => format!("{} {} {}", r.name, r.record_type(), data),
        })
        .collect();
    answers.sort();
    (
        msg.metadata.response_code,
        msg.metadata.authentic_data,
        answers,
    )
}

/// Differences we expect, and why; the test fails if one stops differing.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "ed448.test.",
    "Unbound validates ED448 (algorithm 16); hickory cannot, so for us the \
     zone is insecure (RFC 6840 5.2): same data, no AD",
)];

fn same_answers_as_unbound(lab: &Lab) {
    const UNBOUND_PORT: u16 = 5399;
    lab.start_unbound(UNBOUND_PORT);
    let unbound: SocketAddr = format!("127.0.54.9:{UNBOUND_PORT}").parse().unwrap();
    let setup = Setup::new();
    let config = setup.config(&lab_resolver(&lab.path("root.anchor"), ""));
    let server = Server::start(&config);

    let zones = [
        "example.test.",
        "nsec3.test.",
        "bogus.test.",
        "expired.test.",
        "future.test.",
        "nokey.test.",
        "insecure.test.",
        "ed448.test.",
        "unknownalg.test.",
        "ntabroken.test.",
        "nosig.test.",
        "nonsec.test.",
    ];
    let mut questions: Vec<(String, RecordType)> = Vec::new();
    for zone in zones {
        questions.push((format!("www.{zone}"), RecordType::A));
        questions.push((format!("www.{zone}"), RecordType::AAAA));
        questions.push((format!("nonexistent.{zone}"), RecordType::A));
        questions.push((zone.to_owned(), RecordType::SOA));
        questions.push((zone.to_owned(), RecordType::NS));
    }
    for name in [
        "mail.example.test.",
        "alias.example.test.",
        "evil.example.test.",
    ] {
        questions.push((name.to_owned(), RecordType::A));
    }
    questions.push(("txt.example.test.".to_owned(), RecordType::TXT));
    let flag_sets = [
        DO,
        Bits {
            ad: true,
            ..Bits::default()
        },
    ];
    let mut compared = 0;
    let (mut both_secure, mut both_servfail) = (0, 0);
    let mut unexpected = Vec::new();
    let mut still_differing = std::collections::BTreeSet::new();
    for (name, rtype) in &questions {
        for bits in flag_sets {
            let ours = essence(&ask(server.addr, name, *rtype, Transport::Udp, bits));
            let theirs = essence(&ask(unbound, name, *rtype, Transport::Udp, bits));
            compared += 1;
            if ours == theirs {
                both_secure += usize::from(ours.1);
                both_servfail += usize::from(ours.0 == ResponseCode::ServFail);
                continue;
            }
            match KNOWN_DIFFERENCES
                .iter()
                .find(|(zone, _)| name.ends_with(zone))
            {
                Some((zone, _)) => {
                    still_differing.insert(*zone);
                }
                None => unexpected.push(format!(
                    "{name} {rtype} do={}: portcullis {ours:?}, unbound {theirs:?}",
                    bits.do_bit
                )),
            }
        }
    }
    assert!(compared >= 60, "{compared} questions compared");
    // The comparison means something only if both validated: secure
    // answers with AD and bogus ones refused alike.
    assert!(both_secure >= 20, "{both_secure} answers secure in both");
    assert!(
        both_servfail >= 10,
        "{both_servfail} answers SERVFAIL in both"
    );
    assert!(
        unexpected.is_empty(),
        "answers differ from Unbound:\n{}",
        unexpected.join("\n")
    );
    for (zone, why) in KNOWN_DIFFERENCES {
        assert!(
            still_differing.contains(zone),
            "{zone} no longer differs from Unbound; drop it from KNOWN_DIFFERENCES ({why})"
        );
    }
}
