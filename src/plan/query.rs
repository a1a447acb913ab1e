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

use super::key::{output_key, qc_key, unit_key, Pipeline};
use super::sources::SourceEntry;
use crate::ops::wsi::{mpp, Geometry, GridParams};
use crate::ops::Operator;
use crate::recipe::Kind;

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

/// One WSI unit: a grid cell of a slide × one writing step.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedUnit {
    pub collection: String,
    pub source_root: String,
    pub source_rel: String,
    pub source_abs: PathBuf,
    pub source_hash: String,
    /// File name up to its first dot.
    pub slide: String,
    pub cell: (u32, u32),
    /// Index into `recipe.steps` of the writing step.
    pub sink: usize,
    /// Index into [`CollectionPlan::pipelines`].
    pub pipeline: usize,
    pub key: String,
    /// Scale folder and tile edge of what the sink writes.
    pub scale: String,
    pub size: u32,
    pub read_size: u32,
    pub mpp: f64,
    pub mpp_origin: &'static str,
}

impl PlannedUnit {
    /// `"i,j"`: the unit column of the state.
    pub fn cell_id(&self) -> String {
        format!("{},{}", self.cell.0, self.cell.1)
    }

    /// Where this unit's tiles go, for messages: the folder and name pattern.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}-{}/{}-{}-*-* (cell {},{})",
            self.scale, self.collection, self.size, self.slide, self.size, self.cell.0, self.cell.1
        )
    }
}

/// The QC picture of one slide.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedQc {
    pub path: String,
    pub collection: String,
    pub source_root: String,
    pub source_rel: String,
    pub source_abs: PathBuf,
    pub source_hash: String,
    pub key: String,
    /// Index into [`CollectionPlan::pipelines`] of the decisions pipeline.
    pub pipeline: usize,
    pub geometry: Geometry,
}

/// Everything a collection should produce, with keys.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionPlan {
    pub recipe: Arc<Recipe>,
    /// One per sink, in `recipe.sinks` order (then, for WSI, the pipeline up
    /// to the tissue test, which the QC pictures use).
    pub pipelines: Vec<Pipeline>,
    pub outputs: Vec<PlannedOutput>,
    /// WSI collections: one per cell × writing step.
    pub units: Vec<PlannedUnit>,
    /// WSI collections: one QC picture per slide.
    pub qc: Vec<PlannedQc>,
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
    if recipe.collection.kind == Kind::Wsi {
        return Some(Arc::new(wsi_plan(recipe, pipelines, sources.entries(db))));
    }
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
        units: Vec::new(),
        qc: Vec::new(),
        input_errors,
        unrouted,
    }))
}

/// The grid step's parameters (a loaded WSI recipe has exactly one).
pub fn grid_params(recipe: &Recipe) -> Option<&GridParams> {
    recipe.steps.iter().find_map(|s| match &s.op {
        Operator::WsiGrid(g) => Some(g),
        _ => None,
    })
}

/// The tile edge a step's tiles have: the nearest `subtiles` or `wsi_grid`
/// up its input chain.
fn tile_size(recipe: &Recipe, mut i: usize) -> u32 {
    loop {
        match &recipe.steps[i].op {
            Operator::Subtiles(p) => return p.size,
            Operator::WsiGrid(p) => return p.size,
            _ => match recipe.steps[i].inputs.first() {
                Some(&j) => i = j,
                None => return 0,
            },
        }
    }
}

/// Expands a WSI recipe over its slides: units per cell × sink, one QC each.
fn wsi_plan(
    recipe: Arc<Recipe>,
    mut pipelines: Vec<Pipeline>,
    entries: &[SourceEntry],
) -> CollectionPlan {
    let mut units = Vec::new();
    let mut qc = Vec::new();
    let mut input_errors = Vec::new();
    let Some(grid) = grid_params(&recipe).cloned() else {
        return CollectionPlan {
            recipe,
            pipelines,
            outputs: Vec::new(),
            units,
            qc,
            input_errors,
            unrouted: 0,
        };
    };
    // The pipeline deciding kept/rejected: up to the tissue step (or the grid).
    let decider = recipe
        .steps
        .iter()
        .position(|s| matches!(s.op, Operator::Tissue(_)))
        .or_else(|| {
            recipe
                .steps
                .iter()
                .position(|s| matches!(s.op, Operator::WsiGrid(_)))
        })
        .unwrap_or(0);
    let qc_pipeline = pipelines.len();
    pipelines.push(Pipeline::for_sink(&recipe, decider));
    let sinks: Vec<(usize, String, u32)> = recipe
        .sinks
        .iter()
        .map(|&s| {
            let scale = match &recipe.steps[s].op {
                Operator::EncodeTiles(p) => p.scale.clone(),
                _ => String::new(),
            };
            (s, scale, tile_size(&recipe, s))
        })
        .collect();
    // Two slides with one name would write the same tiles.
    let mut by_name: std::collections::HashMap<&str, Vec<&SourceEntry>> = Default::default();
    for e in entries {
        by_name
            .entry(crate::slide::slide_name(&e.rel))
            .or_default()
            .push(e);
    }
    for entry in entries {
        let same = &by_name[crate::slide::slide_name(&entry.rel)];
        if same.len() > 1 {
            let names: Vec<&str> = same.iter().map(|e| e.rel.as_str()).collect();
            input_errors.push(InputError {
                source_rel: entry.rel.clone(),
                source_abs: entry.abs.clone(),
                error: format!(
                    "slides {} have the same name up to the first dot, so their tiles would have the same names; rename one",
                    names.join(" and ")
                ),
            });
            continue;
        }
        let fail = |error: String| InputError {
            source_rel: entry.rel.clone(),
            source_abs: entry.abs.clone(),
            error,
        };
        let hash = match &entry.hash {
            Ok(h) => h,
            Err(e) => {
                input_errors.push(fail(e.clone()));
                continue;
            }
        };
        let meta = match &entry.slide {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                input_errors.push(fail(e.clone()));
                continue;
            }
            None => {
                input_errors.push(fail("slide metadata missing".into()));
                continue;
            }
        };
        let slide = crate::slide::slide_name(&entry.rel).to_string();
        if let Err(why) = crate::recipe::check_component(&slide) {
            input_errors.push(fail(format!(
                "the slide name `{slide}` (the file name up to its first dot) cannot name tiles: {why}"
            )));
            continue;
        }
        let mpp = match mpp::resolve(&meta.properties, &slide, &recipe.mpp) {
            Ok(m) => m,
            Err(e) => {
                input_errors.push(fail(e));
                continue;
            }
        };
        let g = Geometry::new(meta.width, meta.height, mpp.value, &grid);
        for cell in g.cells() {
            for (i, (sink, scale, size)) in sinks.iter().enumerate() {
                units.push(PlannedUnit {
                    collection: recipe.collection.name.clone(),
                    source_root: recipe.inputs.source.clone(),
                    source_rel: entry.rel.clone(),
                    source_abs: entry.abs.clone(),
                    source_hash: hash.clone(),
                    slide: slide.clone(),
                    cell,
                    sink: *sink,
                    pipeline: i,
                    key: unit_key(&pipelines[i], hash, cell, g.read_size, mpp.value),
                    scale: scale.clone(),
                    size: *size,
                    read_size: g.read_size,
                    mpp: mpp.value,
                    mpp_origin: mpp.origin.as_str(),
                });
            }
        }
        qc.push(PlannedQc {
            path: format!("qc/{}/{}.png", recipe.collection.name, slide),
            collection: recipe.collection.name.clone(),
            source_root: recipe.inputs.source.clone(),
            source_rel: entry.rel.clone(),
            source_abs: entry.abs.clone(),
            source_hash: hash.clone(),
            key: qc_key(&pipelines[qc_pipeline], hash, g.read_size, mpp.value),
            pipeline: qc_pipeline,
            geometry: g,
        });
    }
    CollectionPlan {
        recipe,
        pipelines,
        outputs: Vec::new(),
        units,
        qc,
        input_errors,
        unrouted: 0,
    }
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
