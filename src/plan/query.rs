//! The salsa query layer: recipe text → checked recipe → collection spec.
//!
//! Inputs are the texts of the files under `recipes/`. Tracked functions
//! parse and check each recipe ([`recipe`]) and derive what planning needs
//! from it once ([`collection_spec`]: pipelines, their hashes, the plan
//! fingerprint), so a long-running process (`cpia watch`) that changes one
//! recipe re-parses that recipe (and recipes extending an edited template)
//! and nothing else.
//!
//! What salsa does *not* hold: sources and outputs. Expanding an input into
//! its outputs ([`super::expand`]) is a cheap pure function called while the
//! planner streams over a collection's inputs, so memory does not grow with
//! the size of the corpus (docs/state.md, "Memory").
//!
//! Invariant: no tracked function does I/O.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::recipe::{load_recipe, Diagnostics, Recipe};

use super::expand::CollectionSpec;

/// The query database.
#[salsa::db]
#[derive(Clone, Default)]
pub struct PlanDb {
    storage: salsa::Storage<Self>,
}

#[salsa::db]
impl salsa::Database for PlanDb {}

/// The text of one file under `recipes/`, or why it could not be read
/// (not UTF-8, a FIFO, a folder named `.toml`, …).
#[salsa::input]
pub struct TextFile {
    #[returns(ref)]
    pub path: PathBuf,
    #[returns(ref)]
    pub text: Result<String, String>,
}

/// Every file under `recipes/`, by normalized path: where `extends` looks.
#[salsa::input]
pub struct RecipeDir {
    #[returns(ref)]
    pub files: BTreeMap<PathBuf, TextFile>,
}

/// A recipe, parsed and checked, or its diagnostics.
pub type RecipeResult = Result<Arc<Recipe>, Arc<Diagnostics>>;

/// Loads the recipe in `file`, reading templates it extends through `dir`.
#[salsa::tracked(returns(ref))]
pub fn recipe(db: &dyn salsa::Database, dir: RecipeDir, file: TextFile) -> RecipeResult {
    let files = dir.files(db);
    let mut read = |p: &Path| -> std::io::Result<String> {
        match files.get(&normalize(p)) {
            Some(f) => f
                .text(db)
                .clone()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file under recipes/",
            )),
        }
    };
    load_recipe(file.path(db), &mut read)
        .map(Arc::new)
        .map_err(Arc::new)
}

/// What planning derives from a loaded recipe once: its pipelines and their
/// hashes, the plan fingerprint, and (WSI) the grid and writing steps.
#[salsa::tracked(returns(ref))]
pub fn collection_spec(
    db: &dyn salsa::Database,
    dir: RecipeDir,
    file: TextFile,
) -> Option<Arc<CollectionSpec>> {
    let recipe = recipe(db, dir, file).as_ref().ok()?.clone();
    Some(Arc::new(CollectionSpec::new(recipe)))
}

/// Lexical normalization (`a/./b/../c` → `a/c`), so that a template path
/// built by joining finds its file in [`RecipeDir`].
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            // `/..` is `/`; a relative path keeps its leading `..`s.
            Component::ParentDir => {
                let up = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if up {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
