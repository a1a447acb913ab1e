//! The recipes shipped with cpia: every `.toml` under the repository's
//! `recipes/` — the CPIA catalog (one recipe per collection) and the templates
//! they extend — compiled into the binary by `build.rs`, so `cpia init` can
//! write a workspace without the source tree.
//!
//! Files directly in `recipes/` are recipes; files in a sub-folder
//! (`templates/`) are templates, as in a workspace (docs/recipes.md, "Files").

use std::io;
use std::path::{Path, PathBuf};

use crate::recipe::{load_recipe, Diagnostics, Recipe};

/// Every shipped file: (path relative to `recipes/`, `/`-separated; text),
/// sorted by path.
pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));

/// The shipped templates (files in a sub-folder of `recipes/`).
pub fn templates() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES.iter().copied().filter(|(rel, _)| rel.contains('/'))
}

/// The CPIA catalog: one recipe per collection (files directly in `recipes/`).
pub fn recipes() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES.iter().copied().filter(|(rel, _)| !rel.contains('/'))
}

/// The text of the shipped file at `rel` (relative to `recipes/`).
pub fn file(rel: &str) -> Option<&'static str> {
    FILES.iter().find(|(r, _)| *r == rel).map(|(_, text)| *text)
}

/// Loads the shipped recipe `rel` with the normal loader, as if it were
/// `recipes/<rel>` of a workspace; its templates come from the shipped files.
pub fn load(rel: &str) -> Result<Recipe, Diagnostics> {
    let path = Path::new("recipes").join(rel);
    let mut read = |p: &Path| -> io::Result<String> {
        p.strip_prefix("recipes")
            .ok()
            .and_then(|r| r.to_str())
            .and_then(file)
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no shipped file {}", p.display()),
                )
            })
    };
    load_recipe(&path, &mut read)
}

/// The file name a collection's recipe has in the catalog: its name in lower
/// case, every run of other characters than `a-z` and `0-9` replaced by one
/// `-` (`Kumar(MoNuSeg)` → `kumar-monuseg.toml`).
pub fn file_name(collection: &str) -> String {
    let mut slug = String::new();
    for c in collection.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    format!("{slug}.toml")
}

/// Where `rel` goes in a workspace rooted at `root`.
pub fn workspace_path(root: &Path, rel: &str) -> PathBuf {
    rel.split('/')
        .fold(root.join("recipes"), |path, part| path.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The compiled-in list is the folder: no file missing, none stale.
    #[test]
    fn shipped_files_equal_the_recipes_folder() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut on_disk = BTreeMap::new();
        for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
            if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "toml") {
                let rel = e.path().strip_prefix(&root).unwrap();
                let rel: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
                let text = std::fs::read_to_string(e.path()).unwrap();
                on_disk.insert(rel.join("/"), text);
            }
        }
        let shipped: BTreeMap<String, String> = FILES
            .iter()
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .collect();
        assert_eq!(
            shipped.keys().collect::<Vec<_>>(),
            on_disk.keys().collect::<Vec<_>>()
        );
        for (rel, text) in &on_disk {
            assert_eq!(&shipped[rel], text, "{rel} differs from the shipped copy");
        }
    }

    /// All 103 recipes load; names are unique and give the file names; source
    /// roots can be written as bare TOML keys in cpia.toml.
    #[test]
    fn every_shipped_recipe_loads_under_its_file_name() {
        let mut names = BTreeSet::new();
        let mut kinds = BTreeMap::new();
        for (rel, _) in recipes() {
            let r = load(rel).unwrap_or_else(|d| panic!("{rel}:\n{d}"));
            assert_eq!(rel, file_name(&r.collection.name), "{rel}");
            assert!(
                names.insert(r.collection.name.clone()),
                "{rel}: duplicate name"
            );
            let src = &r.inputs.source;
            assert!(
                !src.is_empty()
                    && src
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{rel}: source root `{src}` is not a bare TOML key"
            );
            assert!(!r.inputs.suffixes.is_empty(), "{rel}: no suffixes");
            *kinds.entry(format!("{:?}", r.collection.kind)).or_insert(0) += 1;
        }
        assert_eq!(kinds["Roi"], 48, "{kinds:?}");
        assert_eq!(kinds["Wsi"], 55, "{kinds:?}");
        assert!(templates().count() >= 2);
    }

    #[test]
    fn file_names_are_slugs() {
        assert_eq!(file_name("Kumar(MoNuSeg)"), "kumar-monuseg.toml");
        assert_eq!(file_name("HuBMAP+HBA_512"), "hubmap-hba-512.toml");
        assert_eq!(
            file_name("Naylor et al, IEEE TMI 2019"),
            "naylor-et-al-ieee-tmi-2019.toml"
        );
        assert_eq!(file_name("P_vivax"), "p-vivax.toml");
        assert_eq!(file_name("(x)"), "x.toml");
    }
}
