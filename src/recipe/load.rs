//! Loading a recipe: read the file and its `extends` chain, merge, validate.
//!
//! Files are read only through the caller's `read` callback, so the salsa
//! layer sees (and tracks) every file a recipe depends on.

use std::io;
use std::path::{Component, Path, PathBuf};

use toml::de::DeTable;

use super::canonical::recipe_hash;
use super::diagnostic::{Diagnostics, Problem, SourceMap};
use super::merge::merge;
use super::raw::{self, RawRecipe};
use super::resolve::resolve;
use super::Recipe;

/// Longest `extends` chain: deeper is surely a mistake.
const MAX_DEPTH: usize = 16;

/// Loads and validates the recipe at `path` (shown as given in diagnostics),
/// reading it and every template it extends through `read`. `extends` paths
/// are relative to the directory of the file that names them. Returns every
/// error found, each located in the file that caused it.
pub fn load_recipe(
    path: &Path,
    read: &mut dyn FnMut(&Path) -> io::Result<String>,
) -> Result<Recipe, Diagnostics> {
    let mut sm = SourceMap::default();
    let mut p = Vec::new();
    let chain = read_chain(path, read, &mut sm, &mut p);
    let resolved = chain.and_then(|chain| {
        let merged = chain.into_iter().rev().reduce(merge)?;
        resolve(&merged, &sm, &mut p)
    });
    match resolved {
        Some(r) if p.is_empty() => Ok(Recipe {
            path: path.to_path_buf(),
            hash: recipe_hash(
                &r.collection,
                &r.inputs,
                &r.routes,
                &r.name,
                &r.steps,
                &r.mpp,
            ),
            collection: r.collection,
            inputs: r.inputs,
            routes: r.routes,
            steps: r.steps,
            sinks: r.sinks,
            name: r.name,
            mpp: r.mpp,
            files: sm.paths().map(Path::to_path_buf).collect(),
        }),
        _ => {
            if p.is_empty() {
                p.push(Problem::file(0, "the recipe could not be loaded"));
            }
            Err(sm.render(p))
        }
    }
}

/// `..` and `.` resolved lexically, so `a/../b.toml` and `b.toml` are one file
/// (for cycle detection and for display).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            // `/..` is `/`; a relative path keeps its leading `..`s.
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Reads the recipe, then each template it extends, most derived first.
/// None if a file could not be read or parsed, or `extends` loops.
fn read_chain(
    path: &Path,
    read: &mut dyn FnMut(&Path) -> io::Result<String>,
    sm: &mut SourceMap,
    p: &mut Vec<Problem>,
) -> Option<Vec<RawRecipe>> {
    let mut chain = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut current = path.to_path_buf();
    let mut via = None;
    loop {
        let norm = normalize(&current);
        if let Some(first) = seen.iter().position(|s| *s == norm) {
            let mut names: Vec<String> = sm
                .paths()
                .skip(first)
                .map(|f| f.display().to_string())
                .collect();
            names.push(current.display().to_string());
            let at = via.unwrap_or_default();
            p.push(
                Problem::at(&at, format!("extends cycle: {}", names.join(" -> ")))
                    .hint("a template cannot extend itself, directly or through others"),
            );
            return None;
        }
        if chain.len() >= MAX_DEPTH {
            let at = via.unwrap_or_default();
            p.push(Problem::at(
                &at,
                format!("`extends` chain deeper than {MAX_DEPTH} files"),
            ));
            return None;
        }
        let text = match read(&current) {
            Ok(t) => t,
            Err(e) => {
                match &via {
                    Some(at) => p.push(Problem::at(
                        at,
                        format!("cannot read template `{}`: {e}", current.display()),
                    )),
                    None => {
                        let f = sm.add(current.clone(), String::new());
                        p.push(Problem::file(f, format!("cannot read recipe: {e}")));
                    }
                }
                return None;
            }
        };
        if text.len() > super::MAX_RECIPE_BYTES {
            let f = sm.add(current.clone(), String::new());
            p.push(Problem::file(
                f,
                format!(
                    "the file is {} bytes, more than the limit of {} for a recipe or template",
                    text.len(),
                    super::MAX_RECIPE_BYTES
                ),
            ));
            return None;
        }
        seen.push(norm);
        let file = sm.add(current.clone(), text);
        let (doc, errors) = DeTable::parse_recoverable(sm.text(file));
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim().replace('\n', "; ");
                p.push(Problem::at(
                    &super::diagnostic::Loc { file, span },
                    format!("TOML syntax: {message}"),
                ));
            }
            return None;
        }
        let raw = raw::read(file, doc.get_ref(), p);
        let next = match raw.extends.val() {
            Some(e) if e.v.trim().is_empty() => {
                p.push(Problem::at(&e.loc, "`extends` is empty"));
                None
            }
            Some(e) => Some((e.v.clone(), e.loc.clone())),
            None => None,
        };
        chain.push(raw);
        let Some((rel, at)) = next else {
            return Some(chain);
        };
        let dir = current.parent().unwrap_or(Path::new(""));
        current = normalize(&dir.join(rel));
        via = Some(at);
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
