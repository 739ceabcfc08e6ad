//! The configs an operator copies: the shipped config/portcullis.toml and
//! every `toml` example in the README must load as they are written.

use std::path::Path;

use portcullis::config::Config;

#[test]
fn the_shipped_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.toml");
    if let Err(e) = Config::load(&path) {
        panic!("{}: {e}", path.display());
    }
}

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim() == "```toml" => current = Some((i + 1, String::new())),
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_toml_example_in_the_readme_loads() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let blocks = toml_blocks(&text);
    assert!(blocks.len() >= 3, "the README shows its config examples");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (line, block) in &blocks {
        let path = dir.path().join(format!("readme-{line}.toml"));
        std::fs::write(&path, block).expect("write the example");
        if let Err(e) = Config::load(&path) {
            failures.push(format!("README.md line {line}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
