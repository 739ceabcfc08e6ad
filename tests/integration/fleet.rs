//! A fleet's hit store: nodes forwarding their records to a real
//! PostgreSQL (Debian's postgresql package, an unprivileged cluster made
//! by `initdb` in a temporary directory and run by `pg_ctl` on loopback),
//! through an outage and a kill -9. Without the PostgreSQL binaries the
//! test says why it is skipped; CI installs them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::harness::{Server, Setup, http_get, metric, scrape, wait_for};
use crate::upstream::{Authority, example_zone};

pub const PASSWORD: &str = "fleet-secret";

/// A PostgreSQL cluster of its own, serving TCP in the clear and with
/// TLS (a certificate for 127.0.0.1 from a test CA, [`Postgres::ca`]);
/// stopped and removed when dropped.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    ca: PathBuf,
    /// Root may not run PostgreSQL: then its files belong to `postgres`
    /// and its commands run as that user.
    as_user: Option<&'static str>,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Make and start a cluster with a `portcullis` role (password
    /// [`PASSWORD`], scram over TCP) and a `hits` database, or say why not.
    pub fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists());
        let Some(bin) = bin else {
            eprintln!("skipped: no PostgreSQL server binaries (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let root = is_root();
        let as_user = root.then_some("postgres");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::create_dir(&data).unwrap();
            chown_postgres(&data);
            chown_postgres(&pwfile);
        }
        let port = free_port();
        let pki_dir = dir.path().join("pki");
        std::fs::create_dir(&pki_dir).unwrap();
        let pki = crate::encrypted::Pki::new(&pki_dir);
        let pg = Postgres {
            bin,
            data,
            port,
            ca: pki.ca.clone(),
            as_user,
            _dir: dir,
        };
        let initdb = pg.tool("initdb");
        let out = pg.run(
            &initdb,
            &[
                "-D",
                &pg.data.display().to_string(),
                "-U",
                "portcullis",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        // The server's certificate and key, owned by the server's user
        // and private, as PostgreSQL insists.
        std::fs::copy(&pki.chain, pg.data.join("server.crt")).unwrap();
        std::fs::copy(&pki.key, pg.data.join("server.key")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                pg.data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        if root {
            chown_postgres(&pg.data);
        }
        pg.ctl_start();
        let createdb = pg.tool("createdb");
        let out = pg.run(
            &createdb,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "portcullis",
                "hits",
            ],
        );
        assert!(out.status.success(), "createdb: {}", text(&out));
        Some(pg)
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run a PostgreSQL tool")
    }

    fn ctl_start(&self) {
        let out = self.run(
            &self.tool("pg_ctl"),
            &[
                "-D",
                &self.data.display().to_string(),
                "-w",
                "-l",
                &self.data.join("log").display().to_string(),
                "-o",
                &format!(
                    "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
                     -c fsync=off -c ssl=on",
                    self.port
                ),
                "start",
            ],
        );
        assert!(out.status.success(), "pg_ctl start: {}", text(&out));
    }

    fn ctl_stop(&self) {
        let out = self.run(
            &self.tool("pg_ctl"),
            &[
                "-D",
                &self.data.display().to_string(),
                "-w",
                "-m",
                "fast",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// One value from a query, as text.
    pub fn value(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "portcullis", "-d", "hits", "-At", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn count(&self, sql: &str) -> u64 {
        let v = self.value(sql);
        v.parse().unwrap_or_else(|_| panic!("{sql} gave {v:?}"))
    }

    pub fn url(&self, sslmode: &str) -> String {
        format!(
            "postgres://portcullis@127.0.0.1:{}/hits?sslmode={sslmode}",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run(
            &self.tool("pg_ctl"),
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_postgres(path: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {} to postgres", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A node: its own state, its node id, forwarding to `pg` (over TLS
/// checked against the test CA when `tls`).
fn node(auth: SocketAddr, pg: &Postgres, id: &str, tls: bool) -> (Setup, PathBuf) {
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\n");
    setup.write("pg-password", &format!("{PASSWORD}\n"));
    let store = if tls {
        format!(
            "postgres = \"{}\"\npostgres_ca_file = \"{}\"\n",
            pg.url("require"),
            pg.ca.display()
        )
    } else {
        format!("postgres = \"{}\"\n", pg.url("disable"))
    };
    let config = setup.config(&format!(
        "[resolver]\nmode = \"forward\"\nupstreams = [\"{auth}\"]\ntimeout_ms = 2000\n\
         [hitlog]\ncoalesce_after = 0\n{store}postgres_password_file = \"pg-password\"\n"
    ));
    setup.edit_config("[server]\n", &format!("[server]\nnode_id = \"{id}\"\n"));
    (setup, config)
}

/// Send `n` blocked queries (each a new name, so each a record) from
/// `threads` sockets; returns how many were answered.
fn blocked(server: SocketAddr, tag: &str, threads: usize, n: usize) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    crate::hitlog::stream_blocked_tagged(server, tag, threads, n, stop)
        .into_iter()
        .map(|w| w.join().unwrap())
        .sum()
}

pub fn written(server: &Server) -> u64 {
    metric(&scrape(server), "portcullis_hitlog_written_total", &[]) as u64
}

/// `node`'s rows; 0 before the first node has made the schema.
pub fn rows(pg: &Postgres, node: &str) -> u64 {
    if pg.value("SELECT to_regclass('hits') IS NOT NULL") != "t" {
        return 0;
    }
    pg.count(&format!("SELECT count(*) FROM hits WHERE node = '{node}'"))
}

/// Every record of `node` is in PostgreSQL once, in the order the node
/// wrote them, and the roll-ups count each query once.
fn assert_whole(pg: &Postgres, node: &str, expected: u64) {
    assert_eq!(rows(pg, node), expected, "{node}'s rows");
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM (SELECT DISTINCT epoch, seq FROM hits WHERE node = '{node}') k"
        )),
        expected,
        "{node}: each record once"
    );
    // Sequence and time agree: what was written later has a later seq.
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM (SELECT ts, lag(ts) OVER (PARTITION BY epoch ORDER BY seq) \
             AS before FROM hits WHERE node = '{node}') t WHERE ts < before - interval '1 second'"
        )),
        0,
        "{node}: order kept"
    );
}

#[test]
fn nodes_forward_every_record_to_postgresql_once_through_an_outage_and_a_kill() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let (_a_setup, a_config) = node(auth.addr, &pg, "node-a", false);
    let (b_setup, b_config) = node(auth.addr, &pg, "node-b", true);
    let a = Server::start(&a_config);
    let b = Server::start(&b_config);

    // Both nodes write; both land, each under its own node id.
    assert_eq!(blocked(a.addr, "a1", 2, 500), 1000);
    assert_eq!(blocked(b.addr, "b1", 2, 300), 600);
    wait_for(
        "node-a's records in PostgreSQL",
        Duration::from_secs(30),
        || written(&a) == 1000 && rows(&pg, "node-a") == 1000,
    );
    wait_for(
        "node-b's records in PostgreSQL",
        Duration::from_secs(30),
        || written(&b) == 600 && rows(&pg, "node-b") == 600,
    );
    assert_whole(&pg, "node-a", 1000);
    assert_whole(&pg, "node-b", 600);
    // node-b's connection is TLS, node-a's is not, as each asked.
    assert_eq!(
        pg.value(
            "SELECT string_agg(s.ssl::text, ',' ORDER BY s.ssl) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'portcullis'"
        ),
        "false,true"
    );
    assert_eq!(
        pg.value("SELECT DISTINCT matched || ' ' || action || ' ' || stage FROM hits"),
        "evil.example.test nxdomain qname"
    );
    assert_eq!(pg.count("SELECT sum(n) FROM hits_daily"), 1600);
    // `logs` on either node reads the fleet's store: both nodes' records.
    let (code, out, err) = crate::harness::run(&[
        "logs",
        "--config",
        &a_config.display().to_string(),
        "--format",
        "json",
        "--limit",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1600);
    assert_eq!(out.matches("\"node\":\"node-a\"").count(), 1000);
    assert_eq!(out.matches("\"node\":\"node-b\"").count(), 600);
    assert_eq!(pg.count("SELECT sum(n) FROM hits_daily_feeds"), 1600);
    assert_eq!(pg.count("SELECT sum(n) FROM hits_daily_sightings"), 1600);
    assert_eq!(
        pg.count("SELECT max(version) FROM portcullis_migrations"),
        3,
        "the schema was made by the binary"
    );

    // PostgreSQL goes away under a stream of blocked queries: DNS answers
    // every one, the records wait in the node's own database, /readyz
    // says so and the node stays ready.
    pg.ctl_stop();
    assert_eq!(blocked(a.addr, "a2", 2, 1000), 2000);
    wait_for(
        "the outage's records written locally",
        Duration::from_secs(20),
        || written(&a) == 3000,
    );
    wait_for("the spool counted", Duration::from_secs(20), || {
        metric(&scrape(&a), "portcullis_hitlog_spooled_records", &[]) == 2000.0
    });
    // (The node is not ready only because its upstream has not been
    // asked: every query was blocked.)
    let (_, _, body) = http_get(a.admin(), "/readyz", None);
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings = readiness["warnings"].to_string();
    assert!(
        warnings.contains("PostgreSQL") && warnings.contains("2000 records spooled"),
        "{body}"
    );
    assert!(
        !readiness["problems"].to_string().contains("PostgreSQL"),
        "{body}"
    );
    assert!(metric(&scrape(&a), "portcullis_hitlog_forward_errors_total", &[]) >= 1.0);

    // node-b is killed while its records are spooled; it loses none.
    assert_eq!(blocked(b.addr, "b2", 2, 200), 400);
    wait_for(
        "node-b's spooled records written",
        Duration::from_secs(20),
        || written(&b) == 1000,
    );
    b.kill_hard();

    // PostgreSQL is back: everything arrives, once and in order.
    pg.ctl_start();
    wait_for("node-a's spool forwarded", Duration::from_secs(40), || {
        rows(&pg, "node-a") == 3000
    });
    assert_whole(&pg, "node-a", 3000);
    wait_for("node-a's spool empty", Duration::from_secs(20), || {
        let m = scrape(&a);
        metric(&m, "portcullis_hitlog_spooled_records", &[]) == 0.0
            && metric(&m, "portcullis_hitlog_spool_oldest_age_seconds", &[]) == 0.0
    });
    let (_, _, body) = http_get(a.admin(), "/readyz", None);
    assert!(!body.contains("PostgreSQL"), "{body}");
    assert_eq!(rows(&pg, "node-b"), 600, "node-b is down");
    let b = Server::start(&b_setup.path("portcullis.toml"));
    wait_for(
        "node-b's spool forwarded after the kill",
        Duration::from_secs(40),
        || rows(&pg, "node-b") == 1000,
    );
    assert_whole(&pg, "node-b", 1000);
    assert_eq!(pg.count("SELECT sum(n) FROM hits_daily"), 4000);
    drop(b);
    drop(a);
}
