//! The salsa query layer: recipe text → checked recipe → collection plan.
//!
//! Inputs are the texts of the files under `recipes/` and, per recipe, the
//! hashed listing of its source root. Everything else is a tracked function
//! of them, so a long-running process (`cpia watch`) that changes one input
//! recomputes only what depends on it: a one-line edit in one recipe re-parses
//! that recipe (and recipes extending the edited template) and re-plans its
//! collection, and never re-scans or re-hashes a source.
//!
//! Invariant: no tracked function does I/O. Scanning and hashing happen
//! outside (in [`super::sources`]) and enter as [`SourceSet`] inputs.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::recipe::{load_recipe, Diagnostics, Recipe};

use super::key::{output_key, Pipeline};
use super::sources::SourceEntry;

/// The query database.
#[salsa::db]
#[derive(Clone, Default)]
pub struct PlanDb {
    storage: salsa::Storage<Self>,
}

#[salsa::db]
impl salsa::Database for PlanDb {}

/// The text of one file under `recipes/` (`None`: it could not be read).
#[salsa::input]
pub struct TextFile {
    #[returns(ref)]
    pub path: PathBuf,
    #[returns(ref)]
    pub text: Option<String>,
}

/// Every file under `recipes/`, by normalized path: where `extends` looks.
#[salsa::input]
pub struct RecipeDir {
    #[returns(ref)]
    pub files: BTreeMap<PathBuf, TextFile>,
}

/// The hashed listing of one collection's inputs.
#[salsa::input]
pub struct SourceSet {
    #[returns(ref)]
    pub entries: Arc<Vec<SourceEntry>>,
}

/// A recipe, parsed and checked, or its diagnostics.
pub type RecipeResult = Result<Arc<Recipe>, Arc<Diagnostics>>;

/// Loads the recipe in `file`, reading templates it extends through `dir`.
#[salsa::tracked(returns(ref))]
pub fn recipe(db: &dyn salsa::Database, dir: RecipeDir, file: TextFile) -> RecipeResult {
    let files = dir.files(db);
    let mut read = |p: &Path| -> std::io::Result<String> {
        match files.get(&normalize(p)) {
            Some(f) => f.text(db).clone().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "file could not be read")
            }),
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

/// Where one input of a collection goes and under which key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannedOutput {
    /// Relative to the output root, `/`-separated.
    pub path: String,
    pub collection: String,
    pub source_root: String,
    pub source_rel: String,
    pub source_abs: PathBuf,
    pub source_hash: String,
    /// Index into [`crate::recipe::Recipe::steps`] of the sink that writes it.
    pub sink: usize,
    /// Index into [`CollectionPlan::pipelines`].
    pub pipeline: usize,
    pub key: String,
    pub sub_dataset: String,
    pub scale: String,
    pub class: Option<String>,
}

/// An input that cannot be planned (unreadable, or its route fails).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputError {
    pub source_rel: String,
    pub source_abs: PathBuf,
    pub error: String,
}

/// Everything a collection should produce, with keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionPlan {
    pub recipe: Arc<Recipe>,
    /// One per sink, in `recipe.sinks` order.
    pub pipelines: Vec<Pipeline>,
    pub outputs: Vec<PlannedOutput>,
    pub input_errors: Vec<InputError>,
    /// Inputs that no route matched (not errors: routes may select).
    pub unrouted: usize,
}

/// Expands a recipe over its sources into outputs with keys.
#[salsa::tracked(returns(ref))]
pub fn collection_plan(
    db: &dyn salsa::Database,
    dir: RecipeDir,
    file: TextFile,
    sources: SourceSet,
) -> Option<Arc<CollectionPlan>> {
    let recipe = recipe(db, dir, file).as_ref().ok()?.clone();
    let pipelines: Vec<Pipeline> = recipe
        .sinks
        .iter()
        .map(|&s| Pipeline::for_sink(&recipe, s))
        .collect();
    let mut outputs = Vec::new();
    let mut input_errors = Vec::new();
    let mut unrouted = 0;
    for entry in sources.entries(db).iter() {
        let routed = match recipe.route(&entry.rel) {
            Ok(Some(r)) => r,
            Ok(None) => {
                unrouted += 1;
                continue;
            }
            Err(e) => {
                input_errors.push(InputError {
                    source_rel: entry.rel.clone(),
                    source_abs: entry.abs.clone(),
                    error: e,
                });
                continue;
            }
        };
        let hash = match &entry.hash {
            Ok(h) => h,
            Err(e) => {
                input_errors.push(InputError {
                    source_rel: entry.rel.clone(),
                    source_abs: entry.abs.clone(),
                    error: e.clone(),
                });
                continue;
            }
        };
        for (i, (&sink, pipeline)) in recipe.sinks.iter().zip(&pipelines).enumerate() {
            let name = if recipe.sinks.len() > 1 {
                format!("{}_{}", routed.name, recipe.steps[sink].id)
            } else {
                routed.name.clone()
            };
            outputs.push(PlannedOutput {
                path: format!("{}/{}/{}.jpg", routed.scale.dir(), routed.sub_dataset, name),
                collection: recipe.collection.name.clone(),
                source_root: recipe.inputs.source.clone(),
                source_rel: entry.rel.clone(),
                source_abs: entry.abs.clone(),
                source_hash: hash.clone(),
                sink,
                pipeline: i,
                key: output_key(pipeline, hash),
                sub_dataset: routed.sub_dataset.clone(),
                scale: routed.scale.dir().to_string(),
                class: routed.class.clone(),
            });
        }
    }
    Some(Arc::new(CollectionPlan {
        recipe,
        pipelines,
        outputs,
        input_errors,
        unrouted,
    }))
}

/// Lexical normalization (`a/./b/../c` → `a/c`), so that a template path
/// built by joining finds its file in [`RecipeDir`].
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
