//! Planning: what a build would do, and why — one collection at a time.
//!
//! [`Planner`] owns the salsa database of recipes ([`query`]) across calls,
//! so `cpia watch` re-parses only edited recipes. Planning a collection
//! ([`plan_collection`], its steps in `collection.rs`) walks its source
//! root, skips every input that is up to date as a whole ([`inputs`]:
//! unchanged bytes, complete under the current plan fingerprint, no damaged
//! output), and plans the rest in detail (`detail.rs`: [`expand`], then
//! [`judge`], with who claims which ROI path in `claims.rs`) against their
//! records and the damage that the output-folder check found ([`outdirs`]).
//! The cost of a no-op therefore grows with source files and folders, not
//! with outputs (docs/state.md).
//!
//! Invariants: planning never writes or removes an output nor an output's
//! record (it writes bookkeeping only: the stat index, the inputs it finds,
//! the slide metadata cache and the ids it interns); a collection whose recipe is broken or whose source root
//! is unusable contributes errors and no actions, so its outputs are never
//! removed by accident; an input that exists but cannot be planned keeps its
//! outputs.

pub mod actions;
mod claims;
mod collection;
mod detail;
pub mod expand;
pub mod explain;
pub mod fs_clock;
pub mod inputs;
pub mod judge;
pub mod key;
pub mod libraries;
pub mod outdirs;
pub mod query;
pub mod sources;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use salsa::Setter;

use crate::store::Event;
use crate::workspace::Workspace;

pub use actions::{BuildAction, InputPlan, Problem, QcAction, Removal, UnitAction};
pub use collection::{plan_collection, plan_orphan};
pub use expand::{CollectionSpec, Input, PlannedOutput, PlannedQc, PlannedUnit};
use query::{PlanDb, RecipeDir, TextFile};

/// The tool version recorded with every output (provenance, not the key).
pub const TOOL_VERSION: &str = concat!("cpia ", env!("CARGO_PKG_VERSION"));

/// Which collections to plan.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Recipe files (absolute) or collection names; empty = all recipes.
    pub recipes: Vec<String>,
}

/// A collection the selection names, ready to plan.
#[derive(Clone, Debug)]
pub struct Selected {
    pub path: PathBuf,
    pub spec: Arc<CollectionSpec>,
}

/// The collections of a workspace as the recipes say, before any planning.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Loaded recipes the selection names, by collection name.
    pub selected: Vec<Selected>,
    /// Recipe errors, unknown selections, duplicate collection names.
    pub problems: Vec<Problem>,
    /// Names of every collection some recipe defines (also broken ones,
    /// read leniently), so their outputs are not taken for orphans.
    pub known: HashSet<String>,
    /// Whether any recipe does not load.
    pub any_broken: bool,
    /// Whether every recipe is selected (no names given).
    pub everything: bool,
}

/// Why a collection was not planned although its recipe loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unplanned {
    /// Its source root is not configured, missing or empty: the collection
    /// is reported as "source not available"; its outputs are kept.
    Unavailable(String),
    /// Its root is there but unusable: an error; its outputs are kept.
    Error(String),
}

/// The plan of one collection.
#[derive(Debug, Default)]
pub struct CollectionPlan {
    pub name: String,
    pub id: i64,
    /// The recipe's spec; `None` for a collection that has no recipe any
    /// more (its plan only removes).
    pub spec: Option<Arc<CollectionSpec>>,
    /// The fingerprint id its complete inputs get.
    pub fp: Option<i64>,
    pub builds: Vec<BuildAction>,
    pub units: Vec<UnitAction>,
    pub qc: Vec<QcAction>,
    pub removals: Vec<Removal>,
    /// Record updates without file work (touched outputs, moved metadata).
    pub updates: Vec<Event>,
    /// Inputs planned in detail without problems: complete once their work
    /// (possibly none) succeeded.
    pub complete: Vec<i64>,
    /// Inputs whose outputs were found damaged: incomplete until rebuilt.
    pub damaged: Vec<i64>,
    pub up_to_date: u64,
    pub problems: Vec<Problem>,
    /// The collection could not be planned (and nothing else here is set).
    pub unplanned: Option<Unplanned>,
    /// Inputs no route takes (not errors: routes may select).
    pub unrouted: usize,
    /// Outputs recorded for the collection (counted only when it removes).
    pub recorded: u64,
    /// Pipeline descriptions by hash, stored before building.
    pub pipelines: Vec<(String, String)>,
    /// Source folders read row by row: recorded complete when all their
    /// inputs are.
    pub folders: Vec<inputs::Folder>,
    /// Parts of the source listing that could not be read (the rest was
    /// planned), for the caller to tell the user.
    pub warnings: Vec<String>,
}

impl CollectionPlan {
    /// Files this plan removes.
    pub fn removing(&self) -> usize {
        self.removals.iter().map(|r| r.files.len()).sum()
    }

    /// Actions to build (ROI outputs, WSI units, QC pictures).
    pub fn building(&self) -> usize {
        self.builds.len() + self.units.len() + self.qc.len()
    }

    /// Whether more than half of the recorded outputs would be removed.
    pub fn mass_removal(&self) -> bool {
        self.recorded > 0 && self.removing() * 2 > self.recorded as usize
    }

    /// Outputs that cannot be built because of problems.
    pub fn failed(&self) -> u64 {
        self.problems.iter().map(|p| p.outputs as u64).sum()
    }
}

/// Keeps the query database and its inputs alive between plans.
pub struct Planner {
    db: PlanDb,
    dir: Option<RecipeDir>,
    files: BTreeMap<PathBuf, TextFile>,
}

/// The most of a file under `recipes/` that is read: beyond the recipe
/// bound (which `recipe::load` reports with its own message), so a huge
/// file is refused without being read whole.
pub const RECIPE_READ_LIMIT: u64 = 4 * crate::recipe::MAX_RECIPE_BYTES as u64;

impl Default for Planner {
    fn default() -> Self {
        Self::new()
    }
}

impl Planner {
    /// An empty planner.
    pub fn new() -> Planner {
        Planner {
            db: PlanDb::default(),
            dir: None,
            files: BTreeMap::new(),
        }
    }

    /// Reads every `.toml` under `recipes/` and updates the inputs whose text
    /// changed. Returns the paths whose text changed.
    pub fn refresh_recipes(&mut self, ws: &Workspace) -> Vec<PathBuf> {
        let mut seen = BTreeMap::new();
        let mut changed = Vec::new();
        for entry in walkdir::WalkDir::new(ws.recipes_dir())
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            let path = entry.path();
            // A `.toml` that is not a regular file (a FIFO, a folder) is
            // listed too, so a recipe naming it is told what it is.
            if entry.depth() == 0 || path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let key = query::normalize(path);
            let text = crate::regular_file::read_to_string(path, RECIPE_READ_LIMIT)
                .map_err(|e| e.to_string());
            let file = match self.files.get(&key) {
                Some(&f) => {
                    if f.text(&self.db) != &text {
                        // The old text is not needed.
                        let _ = f.set_text(&mut self.db).to(text);
                        changed.push(key.clone());
                    }
                    f
                }
                None => {
                    changed.push(key.clone());
                    TextFile::new(&self.db, key.clone(), text)
                }
            };
            seen.insert(key, file);
        }
        let membership_changed = seen.len() != self.files.len()
            || seen.keys().zip(self.files.keys()).any(|(a, b)| a != b);
        if membership_changed || self.dir.is_none() {
            match self.dir {
                Some(dir) => {
                    dir.set_files(&mut self.db).to(seen.clone());
                }
                None => self.dir = Some(RecipeDir::new(&self.db, seen.clone())),
            }
        }
        self.files = seen;
        changed
    }

    /// The recipe files (top level of `recipes/`, not templates), sorted.
    pub fn recipe_paths(&self, ws: &Workspace) -> Vec<PathBuf> {
        let dir = query::normalize(&ws.recipes_dir());
        self.files
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .cloned()
            .collect()
    }

    /// The loaded recipe at `path` (which must come from [`Self::recipe_paths`]).
    pub fn recipe(&self, path: &Path) -> Option<query::RecipeResult> {
        let dir = self.dir?;
        let file = *self.files.get(path)?;
        Some(query::recipe(&self.db, dir, file).clone())
    }

    /// The spec of the loaded recipe at `path`.
    pub fn spec(&self, path: &Path) -> Option<Arc<CollectionSpec>> {
        let dir = self.dir?;
        let file = *self.files.get(path)?;
        query::collection_spec(&self.db, dir, file).clone()
    }

    /// The recipes the selection names, with the problems of recipes that
    /// do not load, of unknown names and of collection names used twice.
    pub fn catalog(&self, ws: &Workspace, selection: &Selection) -> Catalog {
        let all = self.recipe_paths(ws);
        let mut cat = Catalog {
            everything: selection.recipes.is_empty(),
            ..Catalog::default()
        };
        for path in &all {
            match self.recipe(path) {
                Some(Ok(r)) => {
                    cat.known.insert(r.collection.name.clone());
                }
                Some(Err(_)) | None => {
                    cat.any_broken = true;
                    if let Some(name) = collection_name_of(self.text(path)) {
                        cat.known.insert(name);
                    }
                }
            }
        }
        let (doubled, problems) = self.duplicates(ws);
        cat.problems.extend(problems);
        let chosen = select(&all, selection, |p| self.recipe(p));
        for missing in &chosen.unknown {
            cat.problems.push(Problem {
                input: missing.clone(),
                error: "no recipe with this file name or collection name".into(),
                input_id: None,
                outputs: 0,
            });
        }
        for path in chosen.paths {
            match self.recipe(&path) {
                Some(Ok(_)) if doubled.contains(&path) => {}
                Some(Ok(_)) => {
                    if let Some(spec) = self.spec(&path) {
                        cat.selected.push(Selected { path, spec });
                    }
                }
                Some(Err(diags)) => cat.problems.push(Problem {
                    input: ws.display(&path).into_owned(),
                    error: format!("recipe has errors:\n{diags}"),
                    input_id: None,
                    outputs: 0,
                }),
                None => {}
            }
        }
        cat
    }

    /// Recipes that share a collection name with another recipe, and a
    /// problem naming all of them for each: neither is planned (their
    /// outputs are kept) until the names differ.
    pub fn duplicates(&self, ws: &Workspace) -> (HashSet<PathBuf>, Vec<Problem>) {
        let mut names: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for path in self.recipe_paths(ws) {
            if let Some(Ok(r)) = self.recipe(&path) {
                names
                    .entry(r.collection.name.clone())
                    .or_default()
                    .push(path);
            }
        }
        let mut doubled = HashSet::new();
        let mut problems = Vec::new();
        for (name, paths) in names.into_iter().filter(|(_, p)| p.len() > 1) {
            let files: Vec<String> = paths.iter().map(|p| ws.display(p).into_owned()).collect();
            for p in paths {
                problems.push(Problem {
                    input: ws.display(&p).into_owned(),
                    error: format!(
                        "collection name `{name}` is used by {} recipes: {}; each collection needs a name of its own (its outputs are kept meanwhile)",
                        files.len(),
                        files.join(" and ")
                    ),
                    input_id: None,
                    outputs: 0,
                });
                doubled.insert(p);
            }
        }
        (doubled, problems)
    }

    /// The text of a file under `recipes/` as planning read it (the one
    /// its recipe hash was computed from), if it could be read.
    pub fn text(&self, path: &Path) -> Option<&str> {
        let f = self.files.get(&query::normalize(path))?;
        f.text(&self.db).as_deref().ok()
    }
}

/// The `[collection] name` of a recipe that does not load, read leniently,
/// so its outputs are recognized as belonging to a recipe that still exists.
fn collection_name_of(text: Option<&str>) -> Option<String> {
    let table: toml::Table = toml::from_str(text?).ok()?;
    table
        .get("collection")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

struct Chosen {
    paths: Vec<PathBuf>,
    unknown: Vec<String>,
}

fn select(
    all: &[PathBuf],
    sel: &Selection,
    recipe: impl Fn(&Path) -> Option<query::RecipeResult>,
) -> Chosen {
    if sel.recipes.is_empty() {
        return Chosen {
            paths: all.to_vec(),
            unknown: vec![],
        };
    }
    let mut paths = Vec::new();
    let mut unknown = Vec::new();
    for want in &sel.recipes {
        let want_path =
            query::normalize(&std::path::absolute(want).unwrap_or_else(|_| want.into()));
        let found: Vec<&PathBuf> = all
            .iter()
            .filter(|p| {
                **p == want_path
                    || p.file_stem().is_some_and(|s| s == want.as_str())
                    || p.file_name().is_some_and(|s| s == want.as_str())
                    || matches!(recipe(p), Some(Ok(r)) if r.collection.name == *want)
            })
            .collect();
        if found.is_empty() {
            unknown.push(want.clone());
        }
        for p in found {
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        }
    }
    paths.sort();
    Chosen { paths, unknown }
}
