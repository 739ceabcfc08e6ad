//! The TAXII 2.1 client against a real TAXII server: OASIS's medallion
//! (PyPI), started here on loopback with its memory backend, seeded with
//! indicators made by the stix2 library. Skipped with a message when
//! medallion or stix2 is not installed (.ci/run installs both).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Setup, run};

pub const COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";
pub const USER: &str = "reader";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Medallion {
    child: Child,
    pub api_root: String,
}

impl Drop for Medallion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import medallion, stix2"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("medallion")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    if !ok {
        eprintln!(
            "SKIPPED TAXII test: medallion and stix2 are not installed (pip install medallion stix2)"
        );
    }
    ok
}

pub fn start_medallion(dir: &Path) -> Medallion {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api_root = format!("http://127.0.0.1:{port}/api1/");
    let data = serde_json::json!({
        "/discovery": {"title": "Portcullis test", "default": api_root, "api_roots": [api_root]},
        "api1": {
            "information": {"title": "api1", "versions": ["application/taxii+json;version=2.1"], "max_content_length": 9765625},
            "status": [],
            "collections": [{
                "id": COLLECTION, "title": "threats", "can_read": true, "can_write": true,
                "media_types": ["application/stix+json;version=2.1"], "objects": [], "manifest": []
            }]
        }
    });
    std::fs::write(dir.join("medallion-data.json"), data.to_string()).unwrap();
    let config = serde_json::json!({
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": dir.join("medallion-data.json"),
        },
        "users": {USER: PASSWORD},
        // Small pages, so that paging with more/next is exercised.
        "taxii": {"max_page_size": 2}
    });
    std::fs::write(dir.join("medallion.json"), config.to_string()).unwrap();
    let child = Command::new("medallion")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(dir.join("medallion.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start medallion");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "medallion did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Medallion { child, api_root }
}

fn seed(m: &Medallion, first: usize, count: usize) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/taxii/seed.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            &m.api_root,
            USER,
            PASSWORD,
            COLLECTION,
            &first.to_string(),
            &count.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seeding failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pulls_a_collection_with_paging_and_added_after() {
    if !available() {
        return;
    }
    let setup = Setup::new();
    let medallion = start_medallion(setup.dir.path());
    let seeded = seed(&medallion, 0, 5);
    assert_eq!(seeded["success_count"], 6);
    setup.write("taxii.pass", &format!("{PASSWORD}\n"));
    let config = setup.config(&format!(
        "[[taxii]]\nname = \"threats\"\nurl = \"{}\"\ncollection = \"{COLLECTION}\"\nusername = \"{USER}\"\n\
         password_file = \"taxii.pass\"\npoll_interval_secs = 3600\npage_size = 100\n",
        medallion.api_root
    ));
    let config = config.to_str().unwrap();

    let (code, out, err) = run(&["taxii", "pull", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("threats: 6 objects received in 3 pages, 6 in"),
        "{out}"
    );
    let bundle_path = setup.path("feeds/taxii-threats.json");
    assert!(bundle_path.is_file());
    assert!(
        !std::fs::read_dir(setup.path("feeds")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no temporary file left behind"
    );

    // The pulled bundle is an ordinary feed.
    let (_, out, _) = run(&["compile", "--config", config]);
    let row = out
        .lines()
        .find(|l| l.starts_with("taxii-threats.json"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().take(3).collect::<Vec<_>>(),
        ["taxii-threats.json", "stix", "5"],
        "{out}"
    );
    assert!(out.contains("url-with-path 1"), "{out}");
    let id = seeded["ids"][3].as_str().unwrap();
    let (_, out, _) = run(&[
        "check",
        "www.taxii-3.example.test",
        "--offline",
        "--config",
        config,
    ]);
    assert!(
        out.contains("BLOCKED") && out.contains(id),
        "check names the STIX id {id}: {out}"
    );

    // A second pull asks only for what was added since.
    seed(&medallion, 100, 3);
    let (code, out, err) = run(&["taxii", "pull", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("threats: 3 objects received in 2 pages, 9 in"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "check",
        "taxii-101.example.test",
        "--offline",
        "--config",
        config,
    ]);
    assert!(out.contains("BLOCKED"), "{out}");
    let (_, out, _) = run(&[
        "check",
        "taxii-0.example.test",
        "--offline",
        "--config",
        config,
    ]);
    assert!(out.contains("BLOCKED"), "earlier objects are kept: {out}");

    // Wrong credentials: a clear error, and the bundle is left as it was.
    let before = std::fs::read(&bundle_path).unwrap();
    setup.write("taxii.pass", "wrong\n");
    let (code, _, err) = run(&["taxii", "pull", "--config", config]);
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("credentials"), "{err}");
    assert_eq!(std::fs::read(&bundle_path).unwrap(), before);

    // A missing credential file names the file.
    std::fs::remove_file(setup.path("taxii.pass")).unwrap();
    let (code, _, err) = run(&["taxii", "pull", "--config", config]);
    assert_eq!(code, 1);
    assert!(err.contains("taxii.pass"), "{err}");
}
