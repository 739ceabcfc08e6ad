use super::*;
use crate::blocklist::settings_match;

#[test]
fn temporary_and_doc_files_are_not_feeds() {
    for name in [
        ".hidden",
        "x.tmp",
        "x.part",
        "x~",
        "README.md",
        "README",
        "notes.md",
    ] {
        assert!(!is_feed_file_name(name), "{name}");
    }
    for name in ["threats.txt", "list.tsv.gz", "hosts"] {
        assert!(is_feed_file_name(name), "{name}");
    }
}

fn setup() -> (tempfile::TempDir, Compiler) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("feeds")).unwrap();
    // These tests rewrite feeds in place and compile at once: no settling.
    let text = "[blocklist]\nfeeds_dir = \"feeds\"\nmax_shrink = 0.5\nsettle_ms = 0\n";
    let config = Config::from_str(text, &dir.path().join("p.toml")).unwrap();
    (dir, Compiler::new(Arc::new(config)))
}

fn names(n: usize, prefix: &str) -> String {
    (0..n).map(|i| format!("{prefix}{i}.example\n")).collect()
}

#[test]
fn unchanged_feeds_are_not_reparsed() {
    let (dir, mut c) = setup();
    std::fs::write(dir.path().join("feeds/a.txt"), names(10, "a")).unwrap();
    std::fs::write(dir.path().join("feeds/b.txt"), names(10, "b")).unwrap();
    let (_, r) = c.compile().unwrap();
    assert!(r.feeds.iter().all(|f| f.parsed));
    std::fs::write(dir.path().join("feeds/b.txt"), names(12, "b")).unwrap();
    let (list, r) = c.compile().unwrap();
    let parsed: Vec<(&str, bool)> = r
        .feeds
        .iter()
        .map(|f| (f.name.as_str(), f.parsed))
        .collect();
    assert_eq!(parsed, [("a.txt", false), ("b.txt", true)]);
    assert_eq!(list.entries(), 22);
    // Same bytes rewritten (new mtime): the hash says unchanged.
    std::fs::write(dir.path().join("feeds/a.txt"), names(10, "a")).unwrap();
    let (_, r) = c.compile().unwrap();
    assert!(!r.feeds[0].parsed);
}

#[test]
fn broken_and_truncated_feeds_keep_their_last_good_contents() {
    let (dir, mut c) = setup();
    let a = dir.path().join("feeds/a.txt");
    std::fs::write(&a, names(10, "a")).unwrap();
    std::fs::write(dir.path().join("feeds/b.txt"), names(4, "b")).unwrap();
    c.compile().unwrap();
    // Truncated to 3 of 10 entries: held back.
    std::fs::write(&a, names(3, "a")).unwrap();
    std::fs::write(dir.path().join("feeds/b.txt"), names(5, "b")).unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(r.feeds[0].kept_previous);
    assert!(
        r.feeds[0]
            .error
            .as_deref()
            .unwrap()
            .contains("shrank from 10 to 3"),
        "{:?}",
        r.feeds[0].error
    );
    assert!(list.lookup_str("a9.example").is_some());
    assert!(
        list.lookup_str("b4.example").is_some(),
        "the other feed still updated"
    );
    // Garbage: no format detected; previous contents kept.
    std::fs::write(&a, "<html>502 Bad Gateway</html>\n").unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(
        r.feeds[0].kept_previous
            && r.feeds[0]
                .error
                .as_deref()
                .unwrap()
                .contains("no known format")
    );
    assert!(list.lookup_str("a9.example").is_some());
    // A real shrink within the limit goes through.
    std::fs::write(&a, names(6, "a")).unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(r.feeds[0].error.is_none());
    assert!(list.lookup_str("a9.example").is_none() && list.lookup_str("a5.example").is_some());
    // Deletion is deliberate: the entries go.
    std::fs::remove_file(&a).unwrap();
    let (list, r) = c.compile().unwrap();
    assert_eq!(r.feeds.len(), 1);
    assert!(list.lookup_str("a5.example").is_none());
}

#[test]
fn a_big_feed_keeps_its_layers_not_its_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("feeds")).unwrap();
    std::fs::write(dir.path().join("protected.txt"), "").unwrap();
    let text =
        "[blocklist]\nfeeds_dir = \"feeds\"\nprotected = [\"protected.txt\"]\nsettle_ms = 0\n";
    let config = Config::from_str(text, &dir.path().join("p.toml")).unwrap();
    let mut c = Compiler::new(Arc::new(config));
    let big = dir.path().join("feeds/big.txt");
    std::fs::write(&big, names(OWN_LAYER_MIN + 10, "big")).unwrap();
    let (_, r) = c.compile().unwrap();
    assert!(r.feeds[0].parsed);
    assert!(c.cache.is_empty(), "the big feed's parse is not kept");
    let (list, r) = c.compile().unwrap();
    assert!(!r.feeds[0].parsed, "its layers are reused");
    assert_eq!(r.feeds[0].parse.loaded, OWN_LAYER_MIN + 10);
    assert!(list.lookup_str("big3.example").is_some());
    // The protected names changed: the layers are rebuilt with them.
    std::fs::write(dir.path().join("protected.txt"), "www.big3.example\n").unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(r.feeds[0].parsed);
    assert_eq!(r.feeds[0].suppressed.count, 1);
    assert!(list.lookup_str("big3.example").is_none());
}

#[test]
fn a_restart_adopts_big_layers_from_the_snapshot() {
    let (dir, mut c) = setup();
    let big = dir.path().join("feeds/big.txt");
    std::fs::write(&big, names(OWN_LAYER_MIN + 10, "big")).unwrap();
    std::fs::write(dir.path().join("feeds/small.txt"), names(5, "s")).unwrap();
    let (mut list, report) = c.compile().unwrap();
    let own = list.layers().iter().filter(|l| l.is_own()).count();
    assert!(
        own >= 1 && own + 1 == list.layers().len(),
        "the big feed has its own layers"
    );
    list.set_generation(1);
    let state = dir.path().join("state");
    super::super::snapshot::save(&state, &list, &report.inputs, None).unwrap();
    let loaded = super::super::snapshot::load(&state).unwrap();
    // A new process: adopt, then a small feed changes.
    let mut c = Compiler::new(Arc::clone(&c.config));
    assert!(settings_match(c.config(), &loaded.fingerprints));
    c.adopt(&loaded.list, &loaded.fingerprints);
    std::fs::write(dir.path().join("feeds/small.txt"), names(6, "s")).unwrap();
    let (list, report) = c.compile().unwrap();
    let parsed: Vec<(&str, bool)> = report
        .feeds
        .iter()
        .map(|f| (f.name.as_str(), f.parsed))
        .collect();
    assert_eq!(
        parsed,
        [("big.txt", false), ("small.txt", true)],
        "the big feed was not re-parsed"
    );
    assert!(list.lookup_str("big0.example").is_some() && list.lookup_str("s5.example").is_some());
    // A broken big feed keeps its adopted layer as its last good.
    std::fs::write(&big, "<html>oops</html>\n").unwrap();
    let (list, report) = c.compile().unwrap();
    assert!(report.feeds[0].kept_previous);
    assert!(list.lookup_str("big7.example").is_some());
    // A real change is parsed.
    std::fs::write(&big, names(OWN_LAYER_MIN + 20, "big")).unwrap();
    let (list, report) = c.compile().unwrap();
    assert!(report.feeds[0].parsed && report.feeds[0].error.is_none());
    assert!(
        list.lookup_str(&format!("big{}.example", OWN_LAYER_MIN + 15))
            .is_some()
    );
}

#[test]
fn an_expired_stix_indicator_leaves_at_the_next_compile_without_a_file_change() {
    let (dir, mut c) = setup();
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let bundle = format!(
        r#"{{"type": "bundle", "objects": [{{"type": "indicator", "id": "indicator--x",
            "pattern": "[domain-name:value = 'short-lived.example']", "valid_from": "2020-01-01T00:00:00Z",
            "valid_until": "{until}"}}]}}"#
    );
    std::fs::write(dir.path().join("feeds/cti.json"), bundle).unwrap();
    let (list, report) = c.compile().unwrap();
    assert!(list.lookup_str("short-lived.example").is_some());
    let due = report
        .next_change
        .expect("a reload is scheduled for the expiry");
    std::thread::sleep(
        due.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(50),
    );
    let (list, report) = c.compile().unwrap();
    assert!(
        report.feeds[0].parsed,
        "re-parsed because its contents changed by the clock"
    );
    assert_eq!(report.feeds[0].parse.expired, 1, "{:?}", report.feeds[0]);
    assert!(list.lookup_str("short-lived.example").is_none());
}

#[test]
fn a_broken_feed_without_a_previous_parse_is_just_missing() {
    let (dir, mut c) = setup();
    std::fs::write(dir.path().join("feeds/junk"), "<html></html>\n").unwrap();
    let (list, r) = c.compile().unwrap();
    assert_eq!(list.entries(), 0);
    assert_eq!((r.feeds_loaded(), r.feeds_failed()), (0, 1));
}

#[test]
fn a_failed_snapshot_write_leaves_no_temporary_file() {
    let (dir, mut c) = setup();
    std::fs::write(dir.path().join("feeds/small.txt"), names(5, "s")).unwrap();
    let (list, report) = c.compile().unwrap();
    let state = dir.path().join("state");
    // The snapshot's own name is taken by a directory: the write gets as
    // far as the rename and fails there.
    std::fs::create_dir_all(state.join(super::super::snapshot::FILE_NAME).join("x")).unwrap();
    let error = super::super::snapshot::save(&state, &list, &report.inputs, None).unwrap_err();
    assert!(!error.to_string().is_empty());
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [super::super::snapshot::FILE_NAME], "{left:?}");
}

#[test]
fn a_feed_rewritten_in_place_waits_until_it_has_settled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feeds")).unwrap();
    let text = "[blocklist]\nfeeds_dir = \"feeds\"\nsettle_ms = 60000\n";
    let config = crate::config::Config::from_str(text, &dir.path().join("p.toml")).unwrap();
    let mut c = Compiler::new(Arc::new(config));
    let feed = dir.path().join("feeds/f.txt");
    // New: read at once, whatever its age.
    std::fs::write(&feed, names(10, "a")).unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(list.lookup_str("a3.example").is_some());
    assert!(r.feeds[0].settling_until.is_none());
    // Rewritten in place a moment ago: the previous contents stay, and the
    // compile says when to come back.
    std::fs::write(&feed, names(10, "b")).unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(list.lookup_str("a3.example").is_some());
    assert!(list.lookup_str("b3.example").is_none());
    let until = r.feeds[0].settling_until.expect("settling");
    assert_eq!(r.next_change, Some(until));
    assert!(r.feeds[0].error.is_none() && r.feeds[0].kept_previous);
    // Renamed into place (its status changed after it was written): read.
    let staged = dir.path().join("staged");
    std::fs::write(&staged, names(10, "c")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::rename(&staged, &feed).unwrap();
    let (list, r) = c.compile().unwrap();
    assert!(list.lookup_str("c3.example").is_some(), "{:?}", r.feeds[0]);
}

#[test]
fn a_feed_parsed_in_parts_is_the_feed_parsed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tsv");
    // A header, comments, addresses, repeats, categories first seen late,
    // and bad lines at both ends, so a wrong line number or a remapped id
    // shows.
    let mut text = String::from("domain\tcategory\tfamily\nbad..name\n");
    for i in 0..3_000 {
        match i % 7 {
            0 => text.push_str(&format!("# comment {i}\n")),
            1 => text.push_str(&format!("192.0.2.{}\tmalware\tx\n", i % 250)),
            2 => text.push_str(&format!("h{i}.Example.com\tphishing\tkit{}\n", i / 500)),
            3 => text.push_str(&format!("repeat.example\tc{}\n", i / 1000)),
            _ => text.push_str(&format!(
                "n{i}.bad{}.example\tmalware\tfam{}\n",
                i % 13,
                i % 29
            )),
        }
    }
    text.push_str("not a name\tmalware\n");
    std::fs::write(&path, &text).unwrap();
    let lines = text.lines().count();

    let bounds = Bounds::default();
    let parts = formats::split(&path, Format::Tsv, bounds, 4, 1_000).unwrap();
    assert_eq!(parts.len(), 4);
    let parse = |threads| {
        let source = FeedSource::feed("big.tsv".into(), None);
        let (builder, report) =
            feed_cache::parse_in_parts(&path, source, Format::Tsv, bounds, threads, 1_000).unwrap();
        builder.finish(report)
    };
    let (whole, split) = (parse(1), parse(4));
    assert_eq!(split.report, whole.report);
    let rejected: Vec<usize> = split.report.first_rejects.iter().map(|r| r.line).collect();
    assert_eq!(rejected, [2, lines]);
    assert_eq!(split.report.lines, lines);
    let view = |f: &ParsedFeed| -> Vec<(Vec<u8>, Option<String>, Option<String>)> {
        f.entries()
            .iter()
            .map(|e| {
                let meta = f.metas()[e.meta as usize];
                let string = |id: Option<u32>| id.map(|id| f.string(id).to_owned());
                (
                    f.key(e).to_vec(),
                    string(meta.category),
                    string(meta.detail),
                )
            })
            .collect()
    };
    assert_eq!(view(&split), view(&whole));
    assert_eq!(split.metas(), whole.metas());
    assert_eq!(split.nets(), whole.nets());
    assert!(!whole.nets().is_empty());
}
