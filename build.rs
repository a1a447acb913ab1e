//! Compiles the shipped recipes into the binary: every `.toml` under
//! `recipes/` becomes an entry of `$OUT_DIR/catalog_files.rs`, a sorted list of
//! (path relative to `recipes/`, `include_str!` of the file), read by
//! `src/catalog.rs`. Generated from the folder, so a new recipe file cannot be
//! forgotten.

use std::path::{Path, PathBuf};

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("recipes");
    // A directory here makes Cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed=recipes");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut entries: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|abs| {
            let rel = abs.strip_prefix(&root).expect("under recipes/");
            let rel: Vec<String> = rel
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_str()
                        .expect("UTF-8 recipe path")
                        .to_string()
                })
                .collect();
            (rel.join("/"), abs)
        })
        .collect();
    entries.sort();
    let mut out = String::from("&[\n");
    for (rel, abs) in entries {
        let abs = abs.to_str().expect("UTF-8 recipe path");
        out.push_str(&format!("    ({rel:?}, include_str!({abs:?})),\n"));
    }
    out.push_str("]\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("catalog_files.rs");
    std::fs::write(dest, out).expect("writing catalog_files.rs");
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading recipes/").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}
