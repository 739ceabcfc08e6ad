//! One view of a fleet: three nodes with different node ids write to one
//! real PostgreSQL, and a fourth, reporting-only instance (`server.listen
//! = []`) shows each organisation, through the review API and the CLI,
//! every one of its records from every node and none of another's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::fleet::{PASSWORD, Postgres, rows};
use crate::harness::{Server, Setup, http_get, query_from, run, wait_for};
use crate::hitlog::{TOKEN_A, TOKEN_B, TOKEN_OPERATOR, sha};
use crate::upstream::{Authority, example_zone};

/// A member of the fleet: council-a holds 127.0.0.0/8, school-b
/// 127.0.0.3/32, the same on every node. `reporting`: no DNS listener and
/// no hit log of its own, only the fleet's store.
fn member(auth: SocketAddr, pg: &Postgres, id: &str, reporting: bool) -> (Setup, PathBuf) {
    let setup = Setup::new();
    setup.write("feeds/malware.txt", "evil.example.test\n");
    setup.write("pg-password", &format!("{PASSWORD}\n"));
    let config = setup.config_with_admin(
        &format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR)),
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{auth}\"]\ntimeout_ms = 2000\n\
             [[organisation]]\nid = \"council-a\"\nname = \"Council A\"\n\
             networks = [\"127.0.0.0/8\"]\ntoken_sha256 = \"{}\"\n\
             [[organisation]]\nid = \"school-b\"\nname = \"School B\"\n\
             networks = [\"127.0.0.3/32\"]\ntoken_sha256 = \"{}\"\n\
             [hitlog]\nenabled = {}\ncoalesce_after = 0\npostgres = \"{}\"\n\
             postgres_password_file = \"pg-password\"\n",
            sha(TOKEN_A),
            sha(TOKEN_B),
            !reporting,
            pg.url("disable"),
        ),
    );
    let listen = if reporting { "[]" } else { "[\"127.0.0.1:0\"]" };
    setup.edit_config(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n",
        &format!("[server]\nlisten = {listen}\nnode_id = \"{id}\"\n"),
    );
    (setup, config)
}

/// `n` blocked queries from `source`, each for a new name.
fn blocked_from(server: &Server, source: &str, tag: &str, n: usize) {
    for i in 0..n {
        let r = query_from(
            server.addr,
            source,
            &format!("{tag}-{i}.evil.example.test."),
            RecordType::A,
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}

fn api(server: &Server, path: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = http_get(server.admin(), path, Some(token));
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, json)
}

/// Every record the API lists for `org`, page by page (`limit` a page).
fn all_hits(server: &Server, org: &str, token: &str, limit: usize) -> Vec<serde_json::Value> {
    let mut hits = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = api(
            server,
            &format!("/api/v1/orgs/{org}/hits?limit={limit}&after={after}"),
            token,
        );
        assert_eq!(status, 200, "{page}");
        hits.extend(page["hits"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return hits,
        }
    }
}

/// Records per node among `hits`.
fn by_node(hits: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut nodes = BTreeMap::new();
    for h in hits {
        *nodes
            .entry(h["node"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    nodes
}

#[test]
fn a_reporting_instance_shows_each_organisation_its_records_from_every_node() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let auth = Authority::start(
        "127.0.0.1:0".parse().unwrap(),
        &[("example.test.", example_zone("example.test.", "127.0.0.1"))],
    );
    let nodes: Vec<(Setup, Server)> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|id| {
            let (setup, config) = member(auth.addr, &pg, id, false);
            (setup, Server::start(&config))
        })
        .collect();
    // council-a asks node-a and node-b; school-b asks all three.
    blocked_from(&nodes[0].1, "127.0.0.1", "a0", 20);
    blocked_from(&nodes[0].1, "127.0.0.3", "b0", 10);
    blocked_from(&nodes[1].1, "127.0.0.2", "a1", 15);
    blocked_from(&nodes[1].1, "127.0.0.3", "b1", 5);
    blocked_from(&nodes[2].1, "127.0.0.3", "b2", 12);
    for (node, n) in [("node-a", 30), ("node-b", 20), ("node-c", 12)] {
        wait_for(
            &format!("{node}'s records in PostgreSQL"),
            Duration::from_secs(30),
            || rows(&pg, node) == n,
        );
    }

    let (report_setup, config) = member(auth.addr, &pg, "reports", true);
    let reports = Server::start(&config);
    assert!(reports.log_contains("reporting only"), "{}", reports.log());
    let (status, ready) = api(&reports, "/readyz", TOKEN_OPERATOR);
    assert_eq!(status, 200, "a reporting instance is ready: {ready}");

    // Each organisation sees all of its records, from every node, and
    // only its own; a small page size walks them all.
    let a = all_hits(&reports, "council-a", TOKEN_A, 7);
    assert_eq!(a.len(), 35);
    assert_eq!(
        by_node(&a),
        BTreeMap::from([("node-a".into(), 20), ("node-b".into(), 15)])
    );
    assert!(a.iter().all(|h| h["org"] == "council-a"));
    let b = all_hits(&reports, "school-b", TOKEN_B, 1000);
    assert_eq!(b.len(), 27);
    assert_eq!(
        by_node(&b),
        BTreeMap::from([
            ("node-a".into(), 10),
            ("node-b".into(), 5),
            ("node-c".into(), 12)
        ])
    );
    assert!(
        b.iter()
            .all(|h| h["org"] == "school-b" && h["client"] == "127.0.0.3")
    );
    // One record each, newest first, with fleet-wide reference numbers.
    let ids: BTreeSet<i64> = a
        .iter()
        .chain(&b)
        .map(|h| h["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 62);
    let times: Vec<&str> = a.iter().map(|h| h["ts"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Separation: another organisation's list, or its record by number.
    let (status, _) = api(&reports, "/api/v1/orgs/school-b/hits", TOKEN_A);
    assert_eq!(status, 403);
    let theirs = b[0]["id"].as_i64().unwrap();
    let (status, _) = api(
        &reports,
        &format!("/api/v1/orgs/council-a/hits/{theirs}"),
        TOKEN_A,
    );
    assert_eq!(status, 404);
    let (status, mine) = api(
        &reports,
        &format!("/api/v1/orgs/school-b/hits/{theirs}"),
        TOKEN_B,
    );
    assert_eq!(status, 200);
    assert_eq!(mine, b[0]);
    let (status, _) = api(&reports, "/api/v1/report", TOKEN_A);
    assert_eq!(status, 403);

    // Reports: from the roll-ups, and from raw rows (a domain filter),
    // the same counts; the operator's covers both organisations.
    let (status, report) = api(&reports, "/api/v1/orgs/council-a/report", TOKEN_A);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["total"], 35);
    assert_eq!(report["distinct_names"], 1, "one listed name");
    assert_eq!(report["distinct_clients"], 2);
    assert_eq!(report["top_names"][0]["name"], "evil.example.test");
    assert_eq!(report["top_names"][0]["hits"], 35);
    assert_eq!(report["top_names"][0]["clients"], 2);
    assert_eq!(report["by_action"][0]["hits"], 35);
    let timeline: u64 = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["hits"].as_u64().unwrap())
        .sum();
    assert_eq!(timeline, 35);
    let (status, raw) = api(
        &reports,
        "/api/v1/orgs/council-a/report?domain=evil.example.test",
        TOKEN_A,
    );
    assert_eq!(status, 200, "{raw}");
    for key in [
        "total",
        "distinct_names",
        "distinct_clients",
        "by_category",
        "top_names",
        "top_clients",
        "timeline",
    ] {
        assert_eq!(raw[key], report[key], "{key}");
    }
    let (status, all) = api(&reports, "/api/v1/report", TOKEN_OPERATOR);
    assert_eq!(status, 200);
    assert_eq!(all["total"], 62);
    assert_eq!(all["by_org"][0]["key"], "council-a");
    assert_eq!(all["by_org"][0]["hits"], 35);
    assert_eq!(all["by_org"][1]["hits"], 27);

    // The CLI on the reporting instance reads the same store.
    let (code, out, err) = run(&[
        "logs",
        "--config",
        config.to_str().unwrap(),
        "--org",
        "school-b",
        "--format",
        "json",
        "--limit",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 27, "{out}");
    assert!(out.contains("\"node\":\"node-c\""));
    let (code, out, err) = run(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["total"], 62);

    // Sightings from the fleet's roll-up: over TAXII for an organisation,
    // and the operator's bundle across them.
    let (status, _, body) = http_get(
        reports.admin(),
        "/taxii2/sightings/collections/",
        Some(TOKEN_A),
    );
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = list["collections"][0]["id"].as_str().unwrap().to_owned();
    let mut seen = 0;
    let mut next = String::new();
    loop {
        let (status, _, body) = http_get(
            reports.admin(),
            &format!("/taxii2/sightings/collections/{id}/objects/?limit=1{next}"),
            Some(TOKEN_A),
        );
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for o in page["objects"].as_array().unwrap() {
            if o["type"] == "sighting" {
                seen += o["count"].as_u64().unwrap();
            }
        }
        match page["next"].as_str() {
            Some(n) => next = format!("&next={n}"),
            None => break,
        }
    }
    assert_eq!(seen, 35, "council-a's hits on every node");
    let (code, out, err) = run(&["share", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let bundle: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counted: u64 = bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "sighting")
        .map(|o| o["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 62);

    // Anonymous: reloaded with `where_sighted = "service"`, the operator's
    // collection adds the organisations up, a sighting a page. A second
    // name, seen by both organisations on an old day, is put straight into
    // the roll-up so that there are sums to page through.
    pg.value(
        "INSERT INTO hits_daily_sightings VALUES \
         ('2020-01-01', 'malware.txt', 'other.example.test', '', 'council-a', 'malware', 3, \
          '2020-01-01 09:00Z', '2020-01-01 10:00Z'), \
         ('2020-01-01', 'malware.txt', 'other.example.test', '', 'school-b', 'malware', 4, \
          '2020-01-01 08:00Z', '2020-01-01 11:00Z')",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    report_setup.write(
        "portcullis.toml",
        &format!("{text}\n[share]\nwhere_sighted = \"service\"\n"),
    );
    reports.signal("HUP");
    assert!(
        reports.wait_log("config reloaded", Duration::from_secs(10)),
        "{}",
        reports.log()
    );
    let (_, _, body) = http_get(
        reports.admin(),
        "/taxii2/sightings/collections/",
        Some(TOKEN_OPERATOR),
    );
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let all = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"] == "Sightings: all organisations")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut total, mut sightings, mut next) = (0, 0, String::new());
    loop {
        let (status, _, body) = http_get(
            reports.admin(),
            &format!("/taxii2/sightings/collections/{all}/objects/?limit=1{next}"),
            Some(TOKEN_OPERATOR),
        );
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("Council A") && !body.contains("School B"),
            "{body}"
        );
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for o in page["objects"].as_array().unwrap() {
            if o["type"] == "sighting" {
                total += o["count"].as_u64().unwrap();
                sightings += 1;
            }
        }
        match page["next"].as_str() {
            Some(n) => next = format!("&next={n}"),
            None => break,
        }
    }
    assert_eq!(total, 62 + 7, "both organisations, every node");
    // A sighting a name and UTC day (one more if the run spans midnight).
    assert!((2..=3).contains(&sightings), "{sightings}");
    assert_eq!(
        pg.count("SELECT max(version) FROM portcullis_migrations"),
        3
    );
    drop(reports);
    drop(nodes);
}
