//! Planning: what a build would do, and why — one collection at a time.
//!
//! [`Planner`] owns the salsa database of recipes ([`query`]) across calls,
//! so `cpia watch` re-parses only edited recipes. Planning a collection
//! ([`Planner::plan_collection`]) walks its source root, skips every input
//! that is up to date as a whole ([`inputs`]: unchanged bytes, complete
//! under the current plan fingerprint, no damaged output), and plans the rest
//! in detail ([`judge`]) against their records and the damage that the
//! output-folder check found ([`outdirs`]). The cost of a no-op therefore
//! grows with source files and folders, not with outputs (docs/state.md).
//!
//! Invariants: planning never writes or removes an output nor an output's
//! record (it writes bookkeeping only: the stat index, the inputs it finds,
//! the slide metadata cache and the ids it interns); a collection whose recipe is broken or whose source root
//! is unusable contributes errors and no actions, so its outputs are never
//! removed by accident; an input that exists but cannot be planned keeps its
//! outputs.

pub mod actions;
pub mod expand;
pub mod explain;
pub mod inputs;
pub mod judge;
pub mod key;
pub mod libraries;
pub mod outdirs;
pub mod query;
pub mod sources;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use salsa::Setter;

use crate::recipe::Kind;
use crate::store::{Event, Maker, State, StateError};
use crate::workspace::Workspace;

pub use actions::{BuildAction, InputPlan, Problem, QcAction, Removal, UnitAction};
pub use expand::{CollectionSpec, Input, PlannedOutput, PlannedQc, PlannedUnit};
use query::{PlanDb, RecipeDir, TextFile};
use sources::RootError;

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

/// Plans one collection against the state and the disk. `dirs` is the
/// output-folder check of the selected collections.
pub fn plan_collection(
    ws: &Workspace,
    state: &mut State,
    spec: &Arc<CollectionSpec>,
    dirs: &outdirs::DirCheck,
) -> Result<CollectionPlan, StateError> {
    let name = spec.name().to_string();
    let id = state.collection_id(&name)?;
    let mut plan = CollectionPlan {
        name: name.clone(),
        id,
        spec: Some(spec.clone()),
        ..CollectionPlan::default()
    };
    let Some((root, found, scanned_at)) = scan_sources(ws, spec, &mut plan) else {
        return Ok(plan);
    };
    let fp = state.fingerprint_id(&spec.fingerprint)?;
    plan.fp = Some(fp);
    if !describe_pipelines(spec, &mut plan) {
        return Ok(plan);
    }
    let root_name = spec.recipe.inputs.source.as_str();
    let wsi = spec.recipe.collection.kind == Kind::Wsi;
    let damaged_dirs = damaged_source_dirs(state, dirs, id)?;
    let classified = inputs::classify(
        state,
        &inputs::Collection {
            id,
            name: &name,
            root_name,
            root: &root,
            fp,
            wsi,
            scanned_at,
        },
        found,
        &|input| dirs.damage.contains_key(&input),
        &damaged_dirs,
    )?;
    plan.folders = classified.folders.clone();
    plan.up_to_date = classified.clean_outputs;
    plan_lost_inputs(state, spec, &classified, &mut plan)?;
    let plans = plan_in_detail(state, spec, dirs, &classified)?;
    add_input_plans(&mut plan, plans, dirs);
    if !plan.removals.is_empty() {
        plan.recorded = state.recorded_outputs(id)?;
    }
    plan.builds.sort_by_key(|a| a.output.path());
    Ok(plan)
}

/// The collection's source root walked: its root, the files found and the
/// clock before the walk; `None` (with `plan.unplanned` set) when the root
/// is unknown or unusable. Parts of the listing that could not be read
/// become the plan's warnings.
fn scan_sources(
    ws: &Workspace,
    spec: &CollectionSpec,
    plan: &mut CollectionPlan,
) -> Option<(PathBuf, Vec<sources::FoundFile>, i64)> {
    let recipe = &spec.recipe;
    let root_name = recipe.inputs.source.as_str();
    let Some(root) = ws.source_root(root_name) else {
        plan.unplanned = Some(Unplanned::Unavailable(
            RootError::Unknown(root_name.to_string()).to_string(),
        ));
        return None;
    };
    let scanned_at = sources::now_ns();
    match sources::scan(&root, &recipe.inputs) {
        Ok((files, problems)) => {
            plan.warnings = problems;
            Some((root, files, scanned_at))
        }
        Err(e) => {
            plan.unplanned = Some(if e.is_unavailable() {
                Unplanned::Unavailable(e.to_string())
            } else {
                Unplanned::Error(e.to_string())
            });
            None
        }
    }
}

/// The pipeline descriptions stored before building; `false` (with
/// `plan.unplanned` set) when one cannot be described.
fn describe_pipelines(spec: &CollectionSpec, plan: &mut CollectionPlan) -> bool {
    for p in &spec.pipelines {
        match p.to_json() {
            Ok(json) => plan.pipelines.push((p.hash.clone(), json)),
            Err(e) => {
                plan.unplanned = Some(Unplanned::Error(e));
                return false;
            }
        }
    }
    true
}

/// The source folders of this collection that hold inputs with damaged
/// outputs: they are read row by row, never skipped on their digest.
fn damaged_source_dirs(
    state: &State,
    dirs: &outdirs::DirCheck,
    collection: i64,
) -> Result<HashSet<i64>, StateError> {
    let damaged_ids: Vec<i64> = dirs.damage.keys().copied().collect();
    Ok(state
        .src_dirs_of(&damaged_ids)?
        .into_iter()
        .filter(|(c, _)| *c == collection)
        .map(|(_, d)| d)
        .collect())
}

/// Inputs that cannot be read become problems (their outputs are kept);
/// inputs gone from the listing (deleted, or no longer selected) become
/// removals of everything they recorded.
fn plan_lost_inputs(
    state: &State,
    spec: &CollectionSpec,
    classified: &inputs::Classified,
    plan: &mut CollectionPlan,
) -> Result<(), StateError> {
    let recipe = &spec.recipe;
    let wsi = recipe.collection.kind == Kind::Wsi;
    for u in &classified.unreadable {
        plan.problems.push(Problem {
            input: u.abs.clone(),
            error: u.error.clone(),
            input_id: u.input,
            outputs: if wsi { 1 } else { recipe.sinks.len() },
        });
    }
    let root_name = recipe.inputs.source.as_str();
    for g in &classified.gone {
        let reason = if g.excluded {
            format!(
                "source {} is no longer selected by the recipe's [inputs]",
                g.rel
            )
        } else {
            format!("source {} was deleted", g.rel)
        };
        plan.removals.push(input_removal(
            state,
            g.id,
            &format!("{root_name}:{}", g.rel),
            &reason,
        )?);
    }
    Ok(())
}

/// Pipeline descriptions recorded in the state, read once per hash, for
/// explanations that compare with the pipeline an output was built with.
/// A description that does not parse explains less; a state that cannot be
/// read fails the plan (`check`, after each input).
struct OldPipelines<'s> {
    state: &'s State,
    cache: RefCell<HashMap<String, Option<key::Pipeline>>>,
    error: RefCell<Option<StateError>>,
}

impl<'s> OldPipelines<'s> {
    fn new(state: &'s State) -> Self {
        OldPipelines {
            state,
            cache: RefCell::default(),
            error: RefCell::default(),
        }
    }

    fn get(&self, hash: &str) -> Option<key::Pipeline> {
        self.cache
            .borrow_mut()
            .entry(hash.to_string())
            .or_insert_with(|| match self.state.pipeline(hash) {
                Ok(json) => json.and_then(|j| serde_json::from_str(&j).ok()),
                Err(e) => {
                    self.error.borrow_mut().get_or_insert(e);
                    None
                }
            })
            .clone()
    }

    /// The first read error since the last check.
    fn check(&self) -> Result<(), StateError> {
        self.error.borrow_mut().take().map_or(Ok(()), Err)
    }
}

/// Every input to plan in detail, judged against its records.
fn plan_in_detail(
    state: &State,
    spec: &Arc<CollectionSpec>,
    dirs: &outdirs::DirCheck,
    classified: &inputs::Classified,
) -> Result<Vec<(Arc<Input>, InputPlan)>, StateError> {
    let recipe = &spec.recipe;
    let maker = Maker {
        recipe_hash: recipe.hash.clone(),
        tool_version: TOOL_VERSION.to_string(),
        libraries: libraries::of_kind(recipe.collection.kind).to_string(),
    };
    let olds = OldPipelines::new(state);
    let old = |hash: &str| olds.get(hash);
    // What judging needs beyond the input; each input adds its damage and
    // its recorded failures.
    let judging = Judging {
        base: judge::Context {
            spec,
            damage: &[],
            failures: &[],
            maker: &maker,
            old_pipeline: &old,
        },
        dirs,
        olds: &olds,
    };
    if recipe.collection.kind == Kind::Wsi {
        plan_slides(state, &judging, classified)
    } else {
        plan_roi_inputs(state, &judging, classified)
    }
}

/// What judging the inputs of a collection shares: the context without an
/// input, the damage the output-folder check found, and the old pipelines
/// (whose read errors fail the plan).
struct Judging<'a> {
    base: judge::Context<'a>,
    dirs: &'a outdirs::DirCheck,
    olds: &'a OldPipelines<'a>,
}

/// Each slide expanded into units and judged against its recorded units.
fn plan_slides(
    state: &State,
    judging: &Judging<'_>,
    classified: &inputs::Classified,
) -> Result<Vec<(Arc<Input>, InputPlan)>, StateError> {
    let spec = judging.base.spec;
    let mut plans = Vec::new();
    for d in &classified.detail {
        let input = &d.input;
        let planned = unique_slide_name(classified, &input.rel).and_then(|()| match &d.slide {
            Some(Ok(meta)) => expand::expand_wsi(spec, &input.rel, &input.hash, meta),
            Some(Err(e)) => Err(e.clone()),
            None => Err("slide metadata missing".into()),
        });
        let units = state.units_of_input(input.id)?;
        let outputs = state.outputs_of_input(input.id)?;
        let failures = state.failures_of(input.id)?;
        let cx = judging.base.for_input(judging.dirs.of(input.id), &failures);
        let mut tiles = |u: &crate::store::UnitRow| -> Result<Vec<(u32, u32)>, StateError> {
            Ok(state
                .tiles_of_unit(u.id)?
                .into_iter()
                .map(|t| (t.x, t.y))
                .collect())
        };
        let p = judge::wsi(&cx, input, planned, units, outputs, &mut tiles)?;
        judging.olds.check()?;
        plans.push((input.clone(), p));
    }
    Ok(plans)
}

/// Each ROI input expanded into outputs and judged against its records and
/// against who else plans or owns the same paths.
fn plan_roi_inputs(
    state: &State,
    judging: &Judging<'_>,
    classified: &inputs::Classified,
) -> Result<Vec<(Arc<Input>, InputPlan)>, StateError> {
    let spec = judging.base.spec;
    let expanded: Vec<Result<Option<Vec<PlannedOutput>>, String>> = classified
        .detail
        .iter()
        .map(|d| expand::expand_roi(spec, &d.input.rel, &d.input.hash))
        .collect();
    let mut claims = RoiClaims::of(classified, &expanded);
    let mut plans = Vec::new();
    for (d, e) in classified.detail.iter().zip(expanded) {
        let input = &d.input;
        let recorded = state.outputs_of_input(input.id)?;
        let failures = state.failures_of(input.id)?;
        claims.add_owners(state, &e, &recorded)?;
        let cx = judging.base.for_input(judging.dirs.of(input.id), &failures);
        let p = judge::roi(&cx, input, e, recorded, &claims);
        judging.olds.check()?;
        plans.push((input.clone(), p));
    }
    Ok(plans)
}

/// The inputs' plans gathered into the collection's.
fn add_input_plans(
    plan: &mut CollectionPlan,
    plans: Vec<(Arc<Input>, InputPlan)>,
    dirs: &outdirs::DirCheck,
) {
    for (input, p) in plans {
        if p.unrouted {
            plan.unrouted += 1;
        }
        plan.up_to_date += p.up_to_date;
        plan.updates.extend(p.updates);
        if dirs.damage.contains_key(&input.id) {
            plan.damaged.push(input.id);
        }
        match p.problem {
            Some(problem) => plan.problems.push(problem),
            None => plan.complete.push(input.id),
        }
        plan.builds.extend(p.builds);
        plan.units.extend(p.units);
        plan.qc.extend(p.qc);
        plan.removals.extend(p.removals);
    }
}

/// `Ok` when no other slide of the collection has `rel`'s slide name (their
/// tiles would have the same names); otherwise the problem, naming them.
fn unique_slide_name(classified: &inputs::Classified, rel: &str) -> Result<(), String> {
    let name = crate::slide::slide_name(rel);
    match classified.slide_names.get(name) {
        Some(same) if same.len() > 1 => Err(format!(
            "slides {} have the same name up to the first dot, so their tiles would have the same names; rename one",
            same.join(" and ")
        )),
        Some(_) => Ok(()),
        None => Err(format!(
            "internal error: slide name `{name}` is missing from the collection's listing, so a slide of the same name cannot be ruled out; please report it"
        )),
    }
}

/// The plan of a collection that no recipe defines any more: every output
/// of every input it recorded is removed.
pub fn plan_orphan(state: &mut State, id: i64, name: &str) -> Result<CollectionPlan, StateError> {
    let mut plan = CollectionPlan {
        name: name.to_string(),
        id,
        ..CollectionPlan::default()
    };
    let reason = format!("collection {name} has no recipe any more");
    for (input, root, rel) in state.inputs_of(id)? {
        plan.removals.push(input_removal(
            state,
            input,
            &format!("{root}:{rel}"),
            &reason,
        )?);
    }
    plan.recorded = state.recorded_outputs(id)?;
    Ok(plan)
}

/// Removes every file an input recorded, then its rows.
fn input_removal(
    state: &State,
    input: i64,
    source: &str,
    reason: &str,
) -> Result<Removal, StateError> {
    let mut files = Vec::new();
    for o in state.outputs_of_input(input)? {
        files.push((o.path(), Event::OutputRemoved { id: o.id }));
    }
    let slide = source
        .split_once(':')
        .map_or(source, |(_, rel)| crate::slide::slide_name(rel));
    for u in state.units_of_input(input)? {
        for t in state.tiles_of_unit(u.id)? {
            files.push((
                format!("{}/{}", u.dir, expand::tile_name(slide, u.size, t.x, t.y)),
                Event::TileRemoved {
                    unit: u.id,
                    x: t.x,
                    y: t.y,
                },
            ));
        }
    }
    Ok(Removal {
        source: source.to_string(),
        reason: reason.to_string(),
        files,
        then: Some(Event::InputRemoved { id: input }),
    })
}

/// Who plans which ROI output paths, for collisions and moves.
#[derive(Default)]
struct RoiClaims {
    /// Planned path → the detail inputs planning it (id, file).
    by_path: HashMap<String, Vec<(i64, String)>>,
    /// Recorded owners of planned paths: (input, collection, root, path).
    owners: HashMap<String, (i64, String, String, String)>,
    /// Inputs of this plan that are gone (their outputs are removed first).
    gone: HashSet<i64>,
    /// Inputs planned in detail.
    detail: HashSet<i64>,
}

impl RoiClaims {
    /// Who plans each path (the inputs planned in detail), and which
    /// inputs are gone; owners are added input by input ([`Self::add_owners`]).
    fn of(
        classified: &inputs::Classified,
        expanded: &[Result<Option<Vec<PlannedOutput>>, String>],
    ) -> RoiClaims {
        let mut claims = RoiClaims::default();
        for (d, e) in classified.detail.iter().zip(expanded) {
            if let Ok(Some(outs)) = e {
                for o in outs {
                    claims
                        .by_path
                        .entry(o.path())
                        .or_default()
                        .push((d.input.id, d.input.abs.display().to_string()));
                }
            }
        }
        for g in &classified.gone {
            claims.gone.insert(g.id);
        }
        claims.detail = classified.detail.iter().map(|d| d.input.id).collect();
        claims
    }

    /// The recorded owners of the paths an input plans that it has no
    /// record of.
    fn add_owners(
        &mut self,
        state: &State,
        planned: &Result<Option<Vec<PlannedOutput>>, String>,
        recorded: &[crate::store::OutputRow],
    ) -> Result<(), StateError> {
        if let Ok(Some(outs)) = planned {
            for o in outs {
                if !recorded.iter().any(|r| r.dir == o.dir && r.name == o.name) {
                    if let Some(owner) = state.owner_of(&o.dir, &o.name)? {
                        self.owners.insert(o.path(), owner);
                    }
                }
            }
        }
        Ok(())
    }
}

impl judge::Claims for RoiClaims {
    fn contested(&self, path: &str, input: i64) -> Option<Vec<String>> {
        let v = self.by_path.get(path)?;
        (v.len() > 1).then(|| {
            v.iter()
                .filter(|(i, _)| *i != input)
                .map(|(_, f)| f.clone())
                .collect()
        })
    }

    fn taken_by_other(&self, path: &str, input: i64) -> bool {
        self.by_path
            .get(path)
            .is_some_and(|v| v.iter().any(|(i, _)| *i != input))
    }

    fn owned_elsewhere(&self, path: &str, input: i64) -> Option<String> {
        let (owner, collection, root, rel) = self.owners.get(path)?;
        if *owner == input || self.gone.contains(owner) {
            return None;
        }
        // A detail input of this plan that no longer plans the path gives
        // it up (its record is removed before anything is built).
        if self.detail.contains(owner) && !self.taken_by_other(path, input) {
            return None;
        }
        Some(format!(
            "{root}:{rel} (collection {collection}, which recorded it)"
        ))
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
