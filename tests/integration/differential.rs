//! Differential test against Unbound: the same RPZ zone and the same
//! upstream given to Unbound (Debian's package, started here on loopback)
//! and to Portcullis must give the same rcode and answer section for every
//! query in the table. Differences we chose are listed in `DELIBERATE`
//! with the reason, and checked to still be differences.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::{Server, Setup, Transport, build_query, exchange};
use crate::upstream::{Authority, zone_head};

/// The policy: every RPZ trigger kind the table covers.
const RPZ: &str = "$TTL 300\n\
@ IN SOA localhost. root.localhost. 1 3600 600 86400 300\n\
@ IN NS localhost.\n\
nx.diff.test CNAME .\n\
*.wild.diff.test CNAME .\n\
pass.wild.diff.test CNAME rpz-passthru.\n\
nodata.diff.test CNAME *.\n\
*.nodata-below.diff.test CNAME *.\n\
local.diff.test A 192.0.2.99\n\
local.diff.test AAAA 2001:db8::99\n\
local4.diff.test A 192.0.2.98\n\
tree.diff.test CNAME .\n\
*.tree.diff.test CNAME .\n\
ok.tree.diff.test CNAME rpz-passthru.\n\
target.diff.test CNAME .\n\
*.target.diff.test CNAME .\n";

/// The upstream: every name of `QUERIES` answers A, AAAA, TXT and MX, so
/// a block is visible for each type.
fn upstream_zone() -> String {
    let mut zone = zone_head("diff.test.", "127.0.0.1");
    for (i, name) in QUERIES.iter().enumerate() {
        zone.push_str(&format!(
            "{name}.diff.test. IN A 198.51.100.{i}\n\
             {name}.diff.test. IN AAAA 2001:db8:1::{i:x}\n\
             {name}.diff.test. IN TXT \"{name}\"\n\
             {name}.diff.test. IN MX 10 mail.clean.diff.test.\n"
        ));
    }
    // CNAME-target triggers: clean names pointing at listed ones, one
    // alias per query type so that no answer comes from a cached chain.
    for (alias, target) in ALIASES {
        for t in TYPES {
            let t = t.to_string().to_ascii_lowercase();
            zone.push_str(&format!(
                "{alias}-{t}.diff.test. IN CNAME {target}.diff.test.\n"
            ));
        }
    }
    zone.push_str("z.wild.diff.test. IN A 198.51.100.200\n");
    for t in TYPES {
        let t = t.to_string().to_ascii_lowercase();
        zone.push_str(&format!(
            "chain1-{t}.diff.test. IN CNAME chain2-{t}.diff.test.\n\
             chain2-{t}.diff.test. IN CNAME target.diff.test.\n"
        ));
    }
    zone
}

/// CNAME-target cases: alias -> target (a `-<type>` suffix is added).
const ALIASES: &[(&str, &str)] = &[
    ("alias-nx", "nx"),
    ("alias-wild", "z.wild"),
    ("alias-nodata", "nodata"),
    ("alias-local", "local"),
    ("alias-pass", "pass.wild"),
    ("alias-clean", "clean"),
    ("alias-deep", "deep.target"),
    ("chain1", "(two links) target"),
];

/// Query names of the table (each in the upstream zone); each is asked
/// for A, AAAA, TXT and MX.
const QUERIES: &[&str] = &[
    "nx",
    "sub.nx",
    "wild",
    "a.wild",
    "b.c.wild",
    "pass.wild",
    "sub.pass.wild",
    "nodata",
    "sub.nodata",
    "nodata-below",
    "x.nodata-below",
    "local",
    "sub.local",
    "local4",
    "tree",
    "x.tree",
    "ok.tree",
    "y.ok.tree",
    "target",
    "deep.target",
    "clean",
    "www.clean",
];

const TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::TXT,
    RecordType::MX,
];

/// Cases where Portcullis answers differently: (name, type, why). Each
/// must still differ, so the list cannot go stale.
const DELIBERATE: &[(&str, RecordType, &str)] = &[
    // The RPZ draft: a trigger without `*.` matches that name only, so
    // below a PASSTHRU for `pass.wild` the `*.wild` trigger still applies.
    // Unbound 1.17 builds RPZ on its local zones, where the passthru zone
    // `pass.wild` also covers every name below it; BIND and PowerDNS
    // block these names, as we do.
    (PASS_BELOW, RecordType::A, UNBOUND_PASSTHRU),
    (PASS_BELOW, RecordType::AAAA, UNBOUND_PASSTHRU),
    (PASS_BELOW, RecordType::TXT, UNBOUND_PASSTHRU),
    (PASS_BELOW, RecordType::MX, UNBOUND_PASSTHRU),
    (OK_BELOW, RecordType::A, UNBOUND_PASSTHRU),
    (OK_BELOW, RecordType::AAAA, UNBOUND_PASSTHRU),
    (OK_BELOW, RecordType::TXT, UNBOUND_PASSTHRU),
    (OK_BELOW, RecordType::MX, UNBOUND_PASSTHRU),
    // A no-data answer behind a CNAME (z.wild has only an A record):
    // hickory-resolver 0.26 hands back a no-data answer without the
    // CNAME, so the listed target is never seen and the client gets
    // NOERROR with no records where Unbound gives the CNAME and NXDOMAIN.
    // Either way no address is returned; the difference is the missing
    // hit record. Closing it means taking the raw upstream message.
    ("alias-wild", RecordType::AAAA, NODATA_CHAIN),
    ("alias-wild", RecordType::TXT, NODATA_CHAIN),
    ("alias-wild", RecordType::MX, NODATA_CHAIN),
];
const PASS_BELOW: &str = "sub.pass.wild";
const OK_BELOW: &str = "y.ok.tree";
const UNBOUND_PASSTHRU: &str =
    "an exact PASSTHRU covers only its own name (RPZ draft); Unbound applies it to the subtree";
const NODATA_CHAIN: &str =
    "hickory-resolver drops the CNAME of a no-data answer, so the target is not inspected";

/// What the comparison looks at: the rcode and the answer section as
/// (owner, type, rdata), in order; TTLs separately (they tick down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub rcode: ResponseCode,
    pub answers: Vec<String>,
}

pub(crate) fn seen(msg: &Message) -> Seen {
    Seen {
        rcode: msg.metadata.response_code,
        answers: msg
            .answers
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect(),
    }
}

pub(crate) fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, String> {
    let msg = build_query(name, rtype, true);
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let reply = exchange(server, &bytes, Transport::Udp).map_err(|e| e.to_string())?;
    Message::from_vec(&reply).map_err(|e| e.to_string())
}

pub(crate) fn unbound_binary() -> PathBuf {
    ["/usr/sbin/unbound", "/usr/local/sbin/unbound"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("Unbound is not installed: run scripts/test-deps.sh (apt-get install unbound)")
        })
}

/// Unbound on a free loopback port: with the RPZ, forwarding to
/// `upstream`, or iterating from root hints.
pub(crate) struct Unbound {
    child: Child,
    pub addr: SocketAddr,
}

/// Where an Unbound gets its answers.
pub(crate) enum Upstream<'a> {
    Forward(SocketAddr),
    /// Iterate from this root server (a hints file is written for it).
    Root(&'a str),
}

impl Unbound {
    fn start(dir: &Path, upstream: SocketAddr, rpz: &Path) -> Unbound {
        Unbound::start_on(
            dir,
            "127.0.0.1",
            Upstream::Forward(upstream),
            Some(rpz),
            "clean.diff.test.",
        )
    }

    /// Start one on `ip` (a free port); ready once `probe` resolves.
    pub(crate) fn start_on(
        dir: &Path,
        ip: &str,
        upstream: Upstream<'_>,
        rpz: Option<&Path>,
        probe: &str,
    ) -> Unbound {
        std::fs::create_dir_all(dir).expect("unbound dir");
        let port = crate::harness::port_to_reuse(ip.parse().expect("an IPv4 address")).port();
        let tail = match upstream {
            Upstream::Forward(upstream) => format!(
                "forward-zone:\n  name: \".\"\n  forward-addr: {}@{}\n",
                upstream.ip(),
                upstream.port()
            ),
            Upstream::Root(root) => {
                let hints = dir.join("root.hints");
                std::fs::write(
                    &hints,
                    format!(". 3600000 NS a.root-servers.\na.root-servers. 3600000 A {root}\n"),
                )
                .expect("write root hints");
                format!("  root-hints: \"{}\"\n", hints.display())
            }
        };
        // Root hints belong to the server: section, before any other.
        let (server_tail, after) = if tail.starts_with("forward") {
            (String::new(), tail)
        } else {
            (tail, String::new())
        };
        let rpz = rpz.map_or_else(String::new, |rpz| {
            format!(
                "rpz:\n  name: rpz.test.\n  zonefile: \"{}\"\n  rpz-log: no\n",
                rpz.display()
            )
        });
        let conf = dir.join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: {ip}@{port}\n  port: {port}\n  do-daemonize: no\n  \
                 use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{dir}\"\n  \
                 pidfile: \"{dir}/unbound.pid\"\n  module-config: \"respip iterator\"\n  \
                 access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  \
                 qname-minimisation: no\n  num-threads: 1\n  verbosity: 1\n  \
                 local-zone: \"test.\" nodefault\n  domain-insecure: \"test.\"\n{server_tail}\
                 {rpz}{after}",
                dir = dir.display(),
            ),
        )
        .expect("write unbound.conf");
        let child = Command::new(unbound_binary())
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start unbound");
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
        let mut unbound = Unbound { child, addr };
        let deadline = Instant::now() + Duration::from_secs(15);
        while ask(addr, probe, RecordType::A).is_err() {
            if let Ok(Some(status)) = unbound.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = unbound.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("unbound exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "unbound did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        unbound
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_same_rpz_gives_the_same_answers_as_unbound() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("diff.test.", upstream_zone())],
    );
    let setup = Setup::new();
    let rpz = setup.write("feeds/policy.rpz", RPZ);
    let unbound = Unbound::start(setup.dir.path(), auth.addr, &rpz);
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
         [blocklist]\npolicy_ttl = 300\n",
        auth.addr
    ));
    let server = Server::start(&config);

    let mut cases = 0;
    let mut differences = Vec::new();
    let mut deliberate_seen = BTreeSet::new();
    let aliases = ALIASES.iter().map(|(alias, _)| *alias);
    for name in QUERIES.iter().copied().chain(aliases) {
        for rtype in TYPES {
            let fqdn = if QUERIES.contains(&name) {
                format!("{name}.diff.test.")
            } else {
                format!(
                    "{name}-{}.diff.test.",
                    rtype.to_string().to_ascii_lowercase()
                )
            };
            cases += 1;
            let ours = ask(server.addr, &fqdn, rtype).map(|m| seen(&m));
            let theirs = ask(unbound.addr, &fqdn, rtype).map(|m| seen(&m));
            let deliberate = DELIBERATE
                .iter()
                .find(|(n, t, _)| *n == name && *t == rtype);
            match (ours == theirs, deliberate) {
                (true, None) => {}
                (false, Some(_)) => {
                    deliberate_seen.insert((name, rtype));
                }
                (true, Some((_, _, why))) => differences.push(format!(
                    "{fqdn} {rtype}: listed as a deliberate difference ({why}) but both give {ours:?}"
                )),
                (false, None) => differences.push(format!(
                    "{fqdn} {rtype}:\n  portcullis {ours:?}\n  unbound    {theirs:?}"
                )),
            }
        }
    }
    assert!(cases >= 100, "the table has {cases} cases");
    assert!(
        differences.is_empty(),
        "{} of {cases} cases differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(deliberate_seen.len(), DELIBERATE.len());
}

/// Client-IP triggers: the policy a client's own address selects.
const CLIENT_RPZ: &str = "$TTL 300\n\
@ IN SOA localhost. root.localhost. 1 3600 600 86400 300\n\
@ IN NS localhost.\n\
nx.diff.test CNAME .\n\
32.10.0.0.127.rpz-client-ip CNAME .\n\
32.11.0.0.127.rpz-client-ip CNAME *.\n\
32.12.0.0.127.rpz-client-ip CNAME rpz-passthru.\n\
31.14.0.0.127.rpz-client-ip CNAME .\n";

/// (source address, what its trigger does)
const CLIENTS: &[(&str, &str)] = &[
    ("127.0.0.10", "NXDOMAIN for every name"),
    ("127.0.0.11", "NODATA for every name"),
    ("127.0.0.12", "PASSTHRU: even the listed name resolves"),
    ("127.0.0.15", "inside 127.0.0.14/31: NXDOMAIN"),
    ("127.0.0.20", "no trigger: the query-name policy"),
];

/// The one deliberate difference: (source, name, why).
const PASSTHRU_CLIENT: (&str, &str, &str) = (
    "127.0.0.12",
    "nx",
    "RPZ draft: a matching rule ends policy evaluation, so a client-IP \
     PASSTHRU exempts that client from the query-name rule as well (BIND does \
     the same); Unbound 1.17 goes on to the query-name trigger",
);

fn ask_from(
    server: SocketAddr,
    source: &str,
    name: &str,
    rtype: RecordType,
) -> Result<Seen, String> {
    let msg = build_query(name, rtype, true);
    let sock = UdpSocket::bind((source, 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    sock.send_to(&msg.to_vec().map_err(|e| e.to_string())?, server)
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
    Message::from_vec(&buf[..n])
        .map(|m| seen(&m))
        .map_err(|e| e.to_string())
}

#[test]
fn client_ip_triggers_give_the_same_answers_as_unbound() {
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("diff.test.", upstream_zone())],
    );
    let setup = Setup::new();
    let rpz = setup.write("feeds/clients.rpz", CLIENT_RPZ);
    let unbound = Unbound::start(setup.dir.path(), auth.addr, &rpz);
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
         [blocklist]\npolicy_ttl = 300\n",
        auth.addr
    ));
    let server = Server::start(&config);
    let mut cases = 0;
    let mut differences = Vec::new();
    let mut deliberate_seen = 0;
    for (source, what) in CLIENTS {
        for name in ["clean", "www.clean", "nx", "sub.nx"] {
            for rtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
                let fqdn = format!("{name}.diff.test.");
                cases += 1;
                let ours = ask_from(server.addr, source, &fqdn, rtype);
                let theirs = ask_from(unbound.addr, source, &fqdn, rtype);
                let deliberate = *source == PASSTHRU_CLIENT.0 && name == PASSTHRU_CLIENT.1;
                if deliberate {
                    if ours == theirs {
                        differences.push(format!(
                            "{source} {fqdn} {rtype}: listed as a deliberate difference ({}) but both give {ours:?}",
                            PASSTHRU_CLIENT.2
                        ));
                    } else {
                        deliberate_seen += 1;
                    }
                } else if ours != theirs {
                    differences.push(format!(
                        "{source} ({what}) {fqdn} {rtype}:\n  portcullis {ours:?}\n  unbound    {theirs:?}"
                    ));
                }
            }
        }
    }
    assert!(cases >= 30, "the table has {cases} cases");
    assert!(
        differences.is_empty(),
        "{} of {cases} cases differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(
        deliberate_seen, 3,
        "the deliberate difference, for A, AAAA and TXT"
    );
    // The triggers did act: a blocked client's clean name is NXDOMAIN.
    let blocked = ask_from(server.addr, "127.0.0.10", "clean.diff.test.", RecordType::A).unwrap();
    assert_eq!(blocked.rcode, ResponseCode::NXDomain);
    // A clean answer in the packet cache is not served to a client whose
    // own address is listed.
    for _ in 0..2 {
        let clean = ask_from(
            server.addr,
            "127.0.0.20",
            "www.clean.diff.test.",
            RecordType::MX,
        );
        assert_eq!(clean.unwrap().rcode, ResponseCode::NoError);
    }
    let blocked = ask_from(
        server.addr,
        "127.0.0.15",
        "www.clean.diff.test.",
        RecordType::MX,
    );
    assert_eq!(blocked.unwrap().rcode, ResponseCode::NXDomain);
    crate::harness::wait_for(
        "the client-IP hits written",
        Duration::from_secs(20),
        || {
            crate::harness::hit_records(&config).lines().any(|l| {
                l.contains("\"stage\":\"client_ip\"") && l.contains("\"matched\":\"127.0.0.14/31\"")
            })
        },
    );
    let passed = ask_from(server.addr, "127.0.0.12", "nx.diff.test.", RecordType::A).unwrap();
    assert_eq!(
        (passed.rcode, passed.answers.len()),
        (ResponseCode::NoError, 1)
    );
}
