//! The recipes shown in docs/recipes.md are files of the repository: every
//! ```toml block is the file named last before it (in its heading or the
//! sentence that introduces it), whole or an exact run of its lines, and every
//! example file loads with `cpia check`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{stderr, stdout};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (line number, text) of every ```toml block, with the text between the
/// previous block and this one.
fn toml_blocks(doc: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut before = String::new();
    let mut block: Option<(usize, String)> = None;
    let mut in_other = false;
    for (n, line) in doc.lines().enumerate() {
        match (&mut block, in_other) {
            (Some((start, text)), _) => {
                if line == "```" {
                    out.push((*start, std::mem::take(text), std::mem::take(&mut before)));
                    block = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            (None, true) => in_other = line != "```",
            (None, false) => {
                if line == "```toml" {
                    block = Some((n + 1, String::new()));
                } else if line.starts_with("```") {
                    in_other = true;
                } else {
                    before.push_str(line);
                    before.push('\n');
                }
            }
        }
    }
    out
}

/// The last `recipes/….toml` or `examples/recipes/….toml` named in `text`.
fn last_file(text: &str) -> Option<String> {
    let re = regex::Regex::new(r"`((?:examples/)?recipes/[A-Za-z0-9_./-]+\.toml)`").unwrap();
    re.captures_iter(text).last().map(|c| c[1].to_string())
}

/// Whether `block` is `file` or a contiguous run of its lines.
fn is_excerpt(block: &str, file: &str) -> bool {
    if block == file {
        return true;
    }
    let (b, f): (Vec<&str>, Vec<&str>) = (block.lines().collect(), file.lines().collect());
    !b.is_empty() && f.windows(b.len()).any(|w| w == b.as_slice())
}

#[test]
fn every_recipe_block_in_the_docs_is_a_file_of_the_repository() {
    let path = repo().join("docs/recipes.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let blocks = toml_blocks(&doc);
    assert!(
        blocks.len() >= 12,
        "found only {} toml blocks",
        blocks.len()
    );
    let mut shown = BTreeSet::new();
    for (line, block, before) in &blocks {
        let at = format!("{}:{line}", path.display());
        let rel = last_file(before).unwrap_or_else(|| {
            panic!("{at}: no `recipes/….toml` or `examples/recipes/….toml` named before this block")
        });
        let file = std::fs::read_to_string(repo().join(&rel))
            .unwrap_or_else(|e| panic!("{at}: the block names {rel}: {e}"));
        assert!(
            is_excerpt(block, &file),
            "{at}: the block differs from {rel}; copy the file into the docs (or the docs into the file)"
        );
        shown.insert(rel);
    }
    // Every example file is shown, so none is left behind when the docs change.
    for e in std::fs::read_dir(repo().join("examples/recipes")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let rel = format!(
                "examples/recipes/{}",
                p.file_name().unwrap().to_string_lossy()
            );
            assert!(
                shown.contains(&rel),
                "{rel} is not shown in docs/recipes.md"
            );
        }
    }
}

#[test]
fn the_example_recipes_check() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = common::process::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_cpia"))
            .arg("check")
            .args(&files)
            .current_dir(repo()),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("ok: "))
            .count(),
        files.len()
    );
}

#[test]
fn a_changed_block_is_caught() {
    let file = "a = 1\nb = 2\nc = 3\n";
    assert!(is_excerpt(file, file));
    assert!(is_excerpt("b = 2\nc = 3\n", file));
    assert!(!is_excerpt("a = 1\nc = 3\n", file));
    assert!(!is_excerpt("b = 2\n", "a = 1\nb = 20\n"));
    let blocks =
        toml_blocks("### X (`recipes/x.toml`)\n\n```toml\na = 1\n```\n\n```\n```toml\n```\n");
    assert_eq!(blocks.len(), 1);
    assert_eq!(last_file(&blocks[0].2).as_deref(), Some("recipes/x.toml"));
}
