//! Sharing back. A resolver with two organisations blocks a scripted set
//! of queries (a plain feed, a STIX feed, a monitor-mode feed, an
//! organisation's exception); then its sightings are read as the
//! community would: the TAXII collections by the OASIS taxii2-client and
//! by a second Portcullis's `[[taxii]]` puller, `portcullis share`'s
//! bundle by the OASIS validator and stix2 and uploaded to medallion, and
//! the structured block reason by dig. Counts are checked against the hit
//! log's own records, organisation separation against the other tokens.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::harness::{Server, Setup, http_get, metric, query_from, run, scrape, wait_for};
use crate::hitlog::{TOKEN_A, TOKEN_B, TOKEN_OPERATOR, sha};
use crate::upstream::wildcard_upstream;

const STIX_ID: &str = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";

fn python_tools() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import stix2, stix2validator, taxii2client"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED sharing test: stix2-validator and taxii2-client are not installed \
             (scripts/test-deps.sh installs them)"
        );
    }
    ok
}

fn client(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/share/client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn taxii_get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, headers, body) = http_get(server.admin(), path, token);
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    assert_eq!(
        content_type, "application/taxii+json;version=2.1",
        "{path}: {body}"
    );
    (status, serde_json::from_str(&body).unwrap())
}

fn of_type<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["type"] == kind).collect()
}

/// Sightings by the listed name they are of, through the indicators.
fn sightings_by_name(objects: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut name_of: BTreeMap<String, String> = BTreeMap::new();
    for i in of_type(objects, "indicator") {
        name_of.insert(
            i["id"].as_str().unwrap().into(),
            i["name"].as_str().unwrap().into(),
        );
    }
    for r in of_type(objects, "relationship") {
        let made = &name_of[r["source_ref"].as_str().unwrap()];
        name_of.insert(r["target_ref"].as_str().unwrap().into(), made.clone());
    }
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in of_type(objects, "sighting") {
        let name = name_of[s["sighting_of_ref"].as_str().unwrap()].clone();
        out.entry(name).or_default().push(s.clone());
    }
    out
}

/// What the hit log holds for one organisation: per listed name, the
/// count and the first and last time.
fn hit_log(server: &Server, org: &str, token: &str) -> BTreeMap<String, (u64, String, String)> {
    let (status, _, body) = http_get(
        server.admin(),
        &format!("/api/v1/orgs/{org}/hits?limit=1000"),
        Some(token),
    );
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let mut out: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
    for h in page["hits"].as_array().unwrap() {
        let ts = h["ts"].as_str().unwrap().to_owned();
        let e = out
            .entry(h["matched"].as_str().unwrap().to_owned())
            .or_insert((0, ts.clone(), ts.clone()));
        e.0 += 1;
        e.1 = e.1.clone().min(ts.clone());
        e.2 = e.2.clone().max(ts);
    }
    out
}

fn counts(objects: &[Value]) -> BTreeMap<String, (u64, String, String)> {
    sightings_by_name(objects)
        .into_iter()
        .map(|(name, s)| {
            assert_eq!(s.len(), 1, "one sighting a day for {name}");
            let s = &s[0];
            (
                name,
                (
                    s["count"].as_u64().unwrap(),
                    s["first_seen"].as_str().unwrap().to_owned(),
                    s["last_seen"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// A request line and headers as given (plus the operator's token), on
/// the admin listener; returns the status and body.
fn raw_request(server: &Server, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.admin()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = if head.starts_with("POST") { "{}" } else { "" };
    write!(
        stream,
        "{head}Authorization: Bearer {TOKEN_OPERATOR}\r\n\r\n{body}"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn block(server: &Server, from: &str, name: &str, times: usize) {
    for _ in 0..times {
        let r = query_from(server.addr, from, name, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
}

#[test]
fn sightings_are_shared_over_taxii_and_as_a_bundle_and_block_reasons_are_structured() {
    if !python_tools() || !crate::taxii::available() {
        return;
    }
    let (auth, _) = wildcard_upstream("test.");
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.test\nphish.test\n");
    setup.write("feeds/watch.txt", "watch.test\n");
    setup.write(
        "feeds/cti.json",
        &serde_json::json!({
            "type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
            "objects": [{
                "type": "indicator", "spec_version": "2.1", "id": STIX_ID,
                "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z",
                "pattern": "[domain-name:value = 'stix-evil.test']", "pattern_type": "stix",
                "valid_from": "2026-11-01T00:00:00Z", "indicator_types": ["malicious-activity"]
            }]
        })
        .to_string(),
    );
    let config = setup.config_with_admin(
        &format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR)),
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
             [[feed]]\nfile = \"threats.txt\"\ncategory = \"malware\"\n\
             [[feed]]\nfile = \"watch.txt\"\ncategory = \"watch\"\naction = \"log\"\n\
             [[feed]]\nfile = \"cti.json\"\ncategory = \"phishing\"\n\
             [[organisation]]\nid = \"council-a\"\nname = \"Council A\"\n\
             networks = [\"127.0.0.1/32\"]\ntoken_sha256 = \"{}\"\n\
             [[organisation]]\nid = \"school-b\"\nname = \"School B\"\n\
             networks = [\"127.0.0.2/32\"]\ntoken_sha256 = \"{}\"\nallow = [\"ok.evil.test\"]\n\
             [hitlog]\ncoalesce_after = 0\n\
             [share]\nname = \"Example CERT PDNS\"\ntlp = \"green\"\n",
            auth.addr,
            sha(TOKEN_A),
            sha(TOKEN_B)
        ),
    );
    setup.edit_config(
        "[blocklist]\n",
        "[blocklist]\nstructured_errors = true\nerror_contact = [\"mailto:soc@example.gov.uk\"]\n\
         error_organisation = \"Example CERT\"\n",
    );
    let server = Server::start(&config);

    // The scripted day: council-a 5 for evil.test (one below it), 1 for the
    // STIX name, 2 monitored; school-b 4 for evil.test, 1 for phish.test,
    // and one let through by its exception (no hit, no sighting).
    block(&server, "127.0.0.1", "evil.test.", 3);
    block(&server, "127.0.0.1", "www.evil.test.", 2);
    block(&server, "127.0.0.1", "stix-evil.test.", 1);
    for _ in 0..2 {
        let r = query_from(server.addr, "127.0.0.1", "watch.test.", RecordType::A);
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "monitor mode"
        );
    }
    block(&server, "127.0.0.2", "evil.test.", 4);
    block(&server, "127.0.0.2", "phish.test.", 1);
    let r = query_from(server.addr, "127.0.0.2", "ok.evil.test.", RecordType::A);
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "the exception"
    );
    wait_for("13 records written", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= 13.0
    });

    // The structured block reason, as dig prints it.
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &server.addr.port().to_string(),
            "+tries=1",
            "+time=5",
            "phish.test",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("EDE: 15 (Blocked)")
            && text.contains(
                r#"{"c":["mailto:soc@example.gov.uk"],"j":"protective DNS: category malware, feed threats.txt","l":"en","o":"Example CERT","s":1}"#
            ),
        "{text}"
    );

    // TAXII: discovery, the API root, the collections a token may read.
    let (status, discovery) = taxii_get(&server, "/taxii2/", Some(TOKEN_A));
    assert_eq!(status, 200);
    assert_eq!(discovery["api_roots"][0], "/taxii2/sightings/");
    let (status, _) = taxii_get(&server, "/taxii2/", None);
    assert_eq!(status, 401);
    let (_, mine) = taxii_get(&server, "/taxii2/sightings/collections/", Some(TOKEN_A));
    let mine = mine["collections"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["title"], "Sightings: Council A");
    assert_eq!(
        (mine[0]["can_read"].clone(), mine[0]["can_write"].clone()),
        (true.into(), false.into())
    );
    let (_, all) = taxii_get(
        &server,
        "/taxii2/sightings/collections/",
        Some(TOKEN_OPERATOR),
    );
    let all = all["collections"].as_array().unwrap().clone();
    assert_eq!(all.len(), 3, "each organisation's and the operator's");
    let b_id = all
        .iter()
        .find(|c| c["title"] == "Sightings: School B")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let all_id = all
        .iter()
        .find(|c| c["title"] == "Sightings: all organisations")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Separation: A's token on B's collection is refused, logged, counted.
    let denied_before = metric(
        &scrape(&server),
        "portcullis_api_denied_total",
        &[("reason", "other_org")],
    );
    for path in [
        format!("/taxii2/sightings/collections/{b_id}/objects/"),
        format!("/taxii2/sightings/collections/{all_id}/"),
    ] {
        let (status, error) = taxii_get(&server, &path, Some(TOKEN_A));
        assert_eq!(status, 403, "{path}");
        assert_eq!(error["http_status"], "403");
    }
    assert_eq!(
        metric(
            &scrape(&server),
            "portcullis_api_denied_total",
            &[("reason", "other_org")]
        ),
        denied_before + 2.0
    );
    assert!(server.log_contains("asked for another organisation's data"));
    let (status, _) = taxii_get(
        &server,
        "/taxii2/sightings/collections/nope/objects/",
        Some(TOKEN_A),
    );
    assert_eq!(status, 404);
    let (status, _) = taxii_get(
        &server,
        &format!("/taxii2/sightings/collections/{b_id}/objects/?limit=0"),
        Some(TOKEN_B),
    );
    assert_eq!(status, 400);

    // The OASIS client reads each organisation's collection, two objects
    // a page; the counts are the hit log's.
    let url = format!("http://{}/taxii2/", server.admin());
    for (token, org, names) in [
        (
            TOKEN_A,
            "council-a",
            // phish.test: dig's query above.
            vec!["evil.test", "phish.test", "stix-evil.test", "watch.test"],
        ),
        (TOKEN_B, "school-b", vec!["evil.test", "phish.test"]),
    ] {
        let read = client(&["taxii", &url, token, "2"]);
        let collections = read["api_roots"][0]["collections"].as_array().unwrap();
        assert_eq!(collections.len(), 1);
        assert_eq!(
            read["api_roots"][0]["versions"][0],
            "application/taxii+json;version=2.1"
        );
        let objects = collections[0]["objects"].as_array().unwrap();
        let shared = counts(objects);
        assert_eq!(shared.keys().map(String::as_str).collect::<Vec<_>>(), names);
        assert_eq!(shared, hit_log(&server, org, token), "{org}");
        // Pages of two repeat what their sightings refer to; the manifest
        // (one page) lists each object once.
        let manifest = collections[0]["manifest"].as_array().unwrap();
        let ids = |list: &[Value]| -> std::collections::BTreeSet<String> {
            list.iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(manifest), ids(objects));
        assert_eq!(manifest.len(), ids(objects).len());
        // Each organisation is named where it saw; the other never.
        let identities: std::collections::BTreeSet<&str> = of_type(objects, "identity")
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        let me = if org == "council-a" {
            "Council A"
        } else {
            "School B"
        };
        assert!(identities.contains(&me) && identities.contains(&"Example CERT PDNS"));
        assert_eq!(identities.len(), 2, "{identities:?}");
    }
    // The STIX entry's sighting is of the feed's own indicator.
    let read = client(&["taxii", &url, TOKEN_A, "100"]);
    let objects = read["api_roots"][0]["collections"][0]["objects"]
        .as_array()
        .unwrap();
    let stix = &sightings_by_name(objects)["stix-evil.test"][0];
    assert_eq!(stix["sighting_of_ref"], STIX_ID);
    assert!(
        objects
            .iter()
            .all(|o| o["object_marking_refs"].as_array().is_none_or(|m| m
                == &vec![Value::from(
                    "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"
                )]))
    );

    // One object by its id; a wrong media type; writing.
    let col = mine[0]["id"].as_str().unwrap();
    let sighting_id = stix["id"].as_str().unwrap();
    let (status, one) = taxii_get(
        &server,
        &format!("/taxii2/sightings/collections/{col}/objects/{sighting_id}/"),
        Some(TOKEN_A),
    );
    assert_eq!(status, 200);
    assert_eq!(one["objects"].as_array().unwrap().len(), 1);
    assert_eq!(&one["objects"][0], stix);
    let (status, body) = raw_request(
        &server,
        &format!(
            "GET /taxii2/sightings/collections/{col}/objects/ HTTP/1.0\r\nAccept: application/taxii+json;version=2.0\r\n"
        ),
    );
    assert!(
        status == 406 && body.contains("\"http_status\":\"406\""),
        "{body}"
    );
    let (status, body) = raw_request(
        &server,
        &format!(
            "POST /taxii2/sightings/collections/{col}/objects/ HTTP/1.0\r\nContent-Length: 2\r\n"
        ),
    );
    assert_eq!(status, 405, "{body}");

    // added_after: nothing changed since the last sighting's time.
    let last = of_type(objects, "sighting")
        .iter()
        .map(|s| s["modified"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    let (status, empty) = taxii_get(
        &server,
        &format!("/taxii2/sightings/collections/{col}/objects/?added_after={last}"),
        Some(TOKEN_A),
    );
    assert_eq!((status, empty["more"].clone()), (200, false.into()));
    assert!(empty.get("objects").is_none(), "{empty}");
    // A new hit: its sighting comes again, with the new count.
    block(&server, "127.0.0.1", "evil.test.", 1);
    // 13 scripted, dig's, and this one.
    wait_for("the new record", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= 15.0
    });
    let (_, again) = taxii_get(
        &server,
        &format!("/taxii2/sightings/collections/{col}/objects/?added_after={last}"),
        Some(TOKEN_A),
    );
    let again = again["objects"].as_array().unwrap();
    let sightings = of_type(again, "sighting");
    assert_eq!(sightings.len(), 1);
    assert_eq!(sightings[0]["count"], 6);

    // `portcullis share`: the operator's bundle, valid for the OASIS
    // validator without a warning, parsed by stix2.
    let bundle = setup.path("sightings.json");
    let (code, _, err) = run(&[
        "share",
        "--since",
        "1d",
        "-o",
        bundle.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6 sightings"), "{err}");
    let checked = client(&["validate", bundle.to_str().unwrap()]);
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["errors"], serde_json::json!([]), "{checked}");
    assert_eq!(checked["warnings"], serde_json::json!([]), "{checked}");
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let exported = exported["objects"].as_array().unwrap();
    assert_eq!(checked["parsed"], exported.len());
    assert_eq!(
        counts(
            &exported
                .iter()
                .filter(|o| {
                    o["type"] != "sighting"
                        || o["where_sighted_refs"][0]
                            != of_type(exported, "identity")
                                .iter()
                                .find(|i| i["name"] == "School B")
                                .unwrap()["id"]
                })
                .cloned()
                .collect::<Vec<_>>()
        ),
        hit_log(&server, "council-a", TOKEN_A)
    );
    // One organisation's, and a bad --org.
    let (code, out, _) = run(&[
        "share",
        "--org",
        "school-b",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let theirs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        counts(theirs["objects"].as_array().unwrap()),
        hit_log(&server, "school-b", TOKEN_B)
    );
    assert!(
        !out.contains("Council A") && !out.contains("127.0.0."),
        "{out}"
    );
    let (code, _, err) = run(&[
        "share",
        "--org",
        "nobody",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");

    // Uploaded to a TAXII 2.1 server (medallion), every object lands.
    let medallion = crate::taxii::start_medallion(setup.dir.path());
    let uploaded = client(&[
        "upload",
        &medallion.api_root,
        crate::taxii::COLLECTION,
        crate::taxii::USER,
        crate::taxii::PASSWORD,
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(uploaded["failure"], 0, "{uploaded}");
    assert_eq!(uploaded["success"], exported.len(), "{uploaded}");
    assert_eq!(uploaded["ids"].as_array().unwrap().len(), exported.len());

    // A second Portcullis pulls the operator's collection as a monitor
    // feed and lists every name that was sighted.
    let second = Setup::new();
    second.write("operator.token", &format!("{TOKEN_OPERATOR}\n"));
    let second_config = second.config(&format!(
        "[[taxii]]\nname = \"peer\"\nurl = \"http://{}/taxii2/sightings/\"\ncollection = \"{all_id}\"\n\
         token_file = \"{}\"\npoll_interval_secs = 3600\npage_size = 2\n\
         [[feed]]\nfile = \"taxii-peer.json\"\naction = \"log\"\n",
        server.admin(),
        second.path("operator.token").display()
    ));
    let second_config = second_config.to_str().unwrap();
    let (code, out, err) = run(&["taxii", "pull", "--config", second_config]);
    assert_eq!(code, 0, "{out}{err}");
    for name in ["evil.test", "phish.test", "stix-evil.test", "watch.test"] {
        let (_, out, _) = run(&["check", name, "--offline", "--config", second_config]);
        assert!(
            out.contains("taxii-peer.json") && out.contains("log"),
            "{name}: {out}"
        );
    }
    let (_, out, _) = run(&[
        "check",
        "ok.evil.test",
        "--offline",
        "--config",
        second_config,
    ]);
    assert!(
        out.contains("taxii-peer.json"),
        "below a sighted name: {out}"
    );
}

#[test]
fn the_anonymous_collection_names_no_organisation_client_or_query() {
    if !python_tools() {
        return;
    }
    let (auth, _) = wildcard_upstream("test.");
    let setup = Setup::new();
    setup.write("feeds/threats.txt", "evil.test\n");
    let config = setup.config_with_admin(
        &format!("operator_token_sha256 = \"{}\"", sha(TOKEN_OPERATOR)),
        &format!(
            "[resolver]\nmode = \"forward\"\nupstreams = [\"{}\"]\ntimeout_ms = 2000\n\
             [[organisation]]\nid = \"council-a\"\nname = \"Council A\"\n\
             networks = [\"127.0.0.1/32\"]\ntoken_sha256 = \"{}\"\n\
             [[organisation]]\nid = \"school-b\"\nname = \"School B\"\n\
             networks = [\"127.0.0.2/32\"]\ntoken_sha256 = \"{}\"\n\
             [hitlog]\ncoalesce_after = 0\n[share]\nwhere_sighted = \"service\"\n",
            auth.addr,
            sha(TOKEN_A),
            sha(TOKEN_B)
        ),
    );
    let server = Server::start(&config);
    block(&server, "127.0.0.1", "secret-host.evil.test.", 2);
    block(&server, "127.0.0.2", "evil.test.", 3);
    wait_for("5 records written", Duration::from_secs(20), || {
        metric(&scrape(&server), "portcullis_hitlog_written_total", &[]) >= 5.0
    });
    let url = format!("http://{}/taxii2/", server.admin());
    let read = client(&["taxii", &url, TOKEN_OPERATOR, "1"]);
    let all = read["api_roots"][0]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"] == "Sightings: all organisations")
        .unwrap()
        .clone();
    let objects = all["objects"].as_array().unwrap();
    let text = serde_json::to_string(objects).unwrap();
    for secret in [
        "Council A",
        "School B",
        "council-a",
        "school-b",
        "127.0.0.",
        "secret-host",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let sightings = of_type(objects, "sighting");
    assert_eq!(sightings.len(), 1, "one sighting for both organisations");
    assert_eq!(sightings[0]["count"], 5);
    let identities = of_type(objects, "identity");
    assert_eq!(identities.len(), 1);
    assert_eq!(sightings[0]["where_sighted_refs"][0], identities[0]["id"]);
}
