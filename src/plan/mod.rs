//! Planning: what a build would do, and why.
//!
//! [`Planner`] owns the salsa database ([`query`]) across calls, so `cpia
//! watch` re-plans incrementally. A plan compares what the recipes would
//! produce now ([`query::collection_plan`]) with what the state recorded and
//! what is on disk, and yields build and remove actions with their reasons
//! ([`explain`]). `cpia build` executes exactly the actions of this plan.
//!
//! Invariants: planning never writes an output and never removes one; a
//! collection whose recipe is broken or whose source root is unusable
//! contributes errors and no actions, so its outputs are never removed by
//! accident.

pub mod explain;
pub mod key;
pub mod query;
pub mod sources;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use salsa::Setter;

use crate::recipe::Recipe;
use crate::store::{OutputRecord, State, StateError, UnitRecord};
use crate::workspace::Workspace;

pub use query::{CollectionPlan, PlannedOutput, PlannedQc, PlannedUnit};
use query::{PlanDb, RecipeDir, SourceSet, TextFile};
use sources::RootError;

/// Something that stops one input or one collection, reported in the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is about (a source file, a recipe, a root).
    pub input: String,
    pub error: String,
    /// Set for input problems: (collection, source root, path in the root).
    pub source: Option<(String, String, String)>,
    /// How many planned outputs this problem stops (counted as failed).
    pub outputs: usize,
}

/// One output to (re)build.
#[derive(Clone, Debug)]
pub struct BuildAction {
    pub output: PlannedOutput,
    pub recipe: Arc<Recipe>,
    pub pipeline_hash: String,
    pub reasons: Vec<String>,
}

/// One recorded output to delete.
#[derive(Clone, Debug)]
pub struct RemoveAction {
    pub record: OutputRecord,
    pub reason: String,
}

/// A collection whose removals need `--allow-mass-removal`.
#[derive(Clone, Debug)]
pub struct MassRemoval {
    pub collection: String,
    pub removing: usize,
    pub recorded: usize,
}

/// The result of planning.
#[derive(Debug, Default)]
pub struct Plan {
    pub builds: Vec<BuildAction>,
    pub removes: Vec<RemoveAction>,
    pub up_to_date: usize,
    /// Up-to-date outputs whose file was touched but not changed: their
    /// record gets the new mtime so the next plan need not re-hash them.
    pub restat: Vec<OutputRecord>,
    pub problems: Vec<Problem>,
    pub mass_removals: Vec<MassRemoval>,
    /// Pipeline descriptions by hash, to store with the outputs.
    pub pipelines: HashMap<String, String>,
    /// WSI units to (re)build.
    pub units: Vec<UnitAction>,
    /// WSI QC pictures to (re)draw.
    pub qc: Vec<QcAction>,
    /// WSI units no longer planned (their outputs are in `removes`).
    pub unit_removes: Vec<UnitRecord>,
    /// Up-to-date WSI units (counted in `up_to_date` by their outputs).
    pub units_up_to_date: usize,
    /// Per collection, inputs that no route matched (skipped, not errors).
    pub unrouted: Vec<(String, usize)>,
    /// Recorded failures of inputs that no longer exist: forgotten by a build.
    pub stale_failures: Vec<(String, String)>,
}

/// One WSI unit (cell × writing step) to (re)build.
#[derive(Clone, Debug)]
pub struct UnitAction {
    pub unit: PlannedUnit,
    pub recipe: Arc<Recipe>,
    pub pipeline_hash: String,
    pub reasons: Vec<String>,
    /// The outputs the unit produced last time: removed if not produced again.
    pub previous: Vec<OutputRecord>,
}

/// One QC picture to (re)draw.
#[derive(Clone, Debug)]
pub struct QcAction {
    pub qc: PlannedQc,
    pub recipe: Arc<Recipe>,
    pub pipeline_hash: String,
    pub reasons: Vec<String>,
}

/// Keeps the query database and its inputs alive between plans.
pub struct Planner {
    db: PlanDb,
    dir: Option<RecipeDir>,
    files: BTreeMap<PathBuf, TextFile>,
    /// Per recipe path: the source set input and what it was scanned from.
    sources: HashMap<PathBuf, ScannedSources>,
}

struct ScannedSources {
    set: SourceSet,
    root: PathBuf,
    spec_fingerprint: String,
    result: Result<(), RootError>,
}

/// Which source roots to walk again when planning.
#[derive(Clone, Debug)]
pub enum Rescan {
    /// Every root (what one-shot commands want: files may have changed).
    All,
    /// Only these roots; others reuse their last listing (`cpia watch`,
    /// after a notification that names what changed).
    Only(HashSet<PathBuf>),
}

impl Rescan {
    fn covers(&self, root: Option<&PathBuf>) -> bool {
        match (self, root) {
            (Rescan::All, _) => true,
            (Rescan::Only(set), Some(r)) => {
                set.iter().any(|c| c.starts_with(r) || r.starts_with(c))
            }
            (Rescan::Only(_), None) => false,
        }
    }
}

/// Which collections to plan.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Recipe files (absolute) or collection names; empty = all recipes.
    pub recipes: Vec<String>,
}

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
            sources: HashMap::new(),
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
            if !entry.file_type().is_file() || path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let key = query::normalize(path);
            let text = std::fs::read_to_string(path).ok();
            let file = match self.files.get(&key) {
                Some(&f) => {
                    if f.text(&self.db) != &text {
                        f.set_text(&mut self.db).to(text);
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

    /// Scans and hashes the sources of `recipe` if they were never scanned,
    /// if the recipe's inputs changed, or if `rescan` covers its root.
    pub fn scan(
        &mut self,
        ws: &Workspace,
        state: &mut State,
        index: &HashMap<String, crate::store::SourceStat>,
        path: &Path,
        recipe: &Recipe,
        rescan: &Rescan,
    ) -> Result<(), StateError> {
        let root = ws.source_root(&recipe.inputs.source);
        let fingerprint = format!("{:?}|{:?}", recipe.inputs, root);
        if let Some(s) = self.sources.get(path) {
            if !rescan.covers(root.as_ref()) && s.spec_fingerprint == fingerprint {
                return Ok(());
            }
        }
        let (entries, result) = match &root {
            None => (
                Vec::new(),
                Err(RootError::Unknown(recipe.inputs.source.clone())),
            ),
            Some(root) => match sources::scan(root, &recipe.inputs) {
                Ok((files, problems)) => {
                    for p in problems {
                        eprintln!("warning: {}: {p}", recipe.collection.name);
                    }
                    let (mut entries, updates) = sources::hash_files(&files, index);
                    state.update_source_index(&updates)?;
                    if recipe.collection.kind == crate::recipe::Kind::Wsi {
                        attach_slide_meta(state, &mut entries)?;
                    }
                    (entries, Ok(()))
                }
                Err(e) => (Vec::new(), Err(e)),
            },
        };
        let entries = Arc::new(entries);
        match self.sources.get_mut(path) {
            Some(s) => {
                if s.set.entries(&self.db) != &entries {
                    s.set.set_entries(&mut self.db).to(entries);
                }
                s.root = root.unwrap_or_default();
                s.spec_fingerprint = fingerprint;
                s.result = result;
            }
            None => {
                let set = SourceSet::new(&self.db, entries);
                self.sources.insert(
                    path.to_path_buf(),
                    ScannedSources {
                        set,
                        root: root.unwrap_or_default(),
                        spec_fingerprint: fingerprint,
                        result,
                    },
                );
            }
        }
        Ok(())
    }

    /// Plans the selected collections against the state and the disk.
    pub fn plan(
        &mut self,
        ws: &Workspace,
        state: &mut State,
        selection: &Selection,
        rescan: &Rescan,
    ) -> Result<Plan, StateError> {
        let mut plan = Plan::default();
        let all = self.recipe_paths(ws);
        let chosen = select(&all, selection, |p| self.recipe(p));
        for missing in &chosen.unknown {
            plan.problems.push(Problem {
                input: missing.clone(),
                error: "no recipe with this file name or collection name".into(),
                source: None,
                outputs: 0,
            });
        }
        let index = state.source_index()?;
        let records = state.outputs()?;
        let failures = state.failures()?;
        let unit_records = state.units()?;

        // Collections whose plan is complete, so that removing what they no
        // longer produce is safe.
        let mut planned_collections: HashSet<String> = HashSet::new();
        let mut known_collections: HashSet<String> = HashSet::new();
        let mut any_broken = false;
        // The collection plans are shared with the query database; actions
        // borrow from them and clone only what they build.
        let mut cplans: Vec<Arc<CollectionPlan>> = Vec::new();
        let mut scanned_sources: HashSet<(String, String)> = HashSet::new();
        // Inputs that exist but could not be planned: their outputs are kept.
        let mut protected: HashSet<(String, String)> = HashSet::new();

        for path in &chosen.paths {
            let Some(result) = self.recipe(path) else {
                continue;
            };
            let recipe = match result {
                Ok(r) => r,
                Err(diags) => {
                    any_broken = true;
                    if let Some(name) = collection_name_of(self.text(path)) {
                        known_collections.insert(name);
                    }
                    plan.problems.push(Problem {
                        input: ws.display(path).into_owned(),
                        error: format!("recipe has errors:\n{diags}"),
                        source: None,
                        outputs: 0,
                    });
                    continue;
                }
            };
            known_collections.insert(recipe.collection.name.clone());
            self.scan(ws, state, &index, path, &recipe, rescan)?;
            let scanned = &self.sources[path];
            if let Err(e) = &scanned.result {
                let input = match e {
                    RootError::Unknown(_) => ws.display(path).into_owned(),
                    _ => scanned.root.display().to_string(),
                };
                plan.problems.push(Problem {
                    input,
                    error: format!("collection {}: {e}", recipe.collection.name),
                    source: None,
                    outputs: 0,
                });
                continue;
            }
            let (Some(dir), Some(&file)) = (self.dir, self.files.get(path)) else {
                continue;
            };
            let Some(cplan) = query::collection_plan(&self.db, dir, file, scanned.set).clone()
            else {
                continue;
            };
            for e in scanned.set.entries(&self.db).iter() {
                scanned_sources.insert((recipe.collection.name.clone(), e.rel.clone()));
            }
            planned_collections.insert(recipe.collection.name.clone());
            for p in &cplan.pipelines {
                plan.pipelines.insert(p.hash.clone(), p.to_json());
            }
            if cplan.unrouted > 0 {
                plan.unrouted
                    .push((recipe.collection.name.clone(), cplan.unrouted));
            }
            for e in &cplan.input_errors {
                protected.insert((recipe.collection.name.clone(), e.source_rel.clone()));
                plan.problems.push(Problem {
                    input: e.source_abs.display().to_string(),
                    error: e.error.clone(),
                    source: Some((
                        recipe.collection.name.clone(),
                        recipe.inputs.source.clone(),
                        e.source_rel.clone(),
                    )),
                    outputs: if recipe.collection.kind == crate::recipe::Kind::Wsi {
                        1
                    } else {
                        recipe.sinks.len()
                    },
                });
            }
            cplans.push(cplan);
        }
        let outputs = with_pipeline(&cplans, |c| &c.outputs, |o| o.pipeline);
        let units = with_pipeline(&cplans, |c| &c.units, |u| u.pipeline);
        let qcs = with_pipeline(&cplans, |c| &c.qc, |q| q.pipeline);
        if selection.recipes.is_empty() && matches!(rescan, Rescan::All) {
            self.prune_source_index(state, &index)?;
        }
        if selection.recipes.is_empty() && !any_broken {
            // With every recipe planned (and loaded), outputs of collections
            // that have no recipe any more are removable too. A broken
            // recipe may be the one that named them, so then nothing is.
            for r in records.values() {
                if !known_collections.contains(&r.collection) {
                    planned_collections.insert(r.collection.clone());
                }
            }
        }

        // Two inputs mapping to one output path: an error naming both.
        let mut by_path: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (o, _, _)) in outputs.iter().enumerate() {
            by_path.entry(o.path.as_str()).or_default().push(i);
        }
        let mut colliding = vec![false; outputs.len()];
        let mut claimed: HashSet<String> = HashSet::new();
        for (path, idx) in &by_path {
            claimed.insert(path.to_string());
            if idx.len() < 2 {
                continue;
            }
            let names: Vec<String> = idx
                .iter()
                .map(|&i| outputs[i].0.source_abs.display().to_string())
                .collect();
            for &i in idx {
                colliding[i] = true;
                let o = &outputs[i].0;
                plan.problems.push(Problem {
                    input: o.source_abs.display().to_string(),
                    error: format!(
                        "output {path} would be written by {} inputs: {}; rename one, or change the recipe's name template",
                        idx.len(),
                        names.join(" and ")
                    ),
                    source: Some((o.collection.clone(), o.source_root.clone(), o.source_rel.clone())),
                    outputs: 1,
                });
            }
        }
        for (q, _, _) in &qcs {
            claimed.insert(q.path.clone());
        }

        // Compare each planned output with its record and the file on disk.
        let output_root = ws.output.clone();
        let verdicts: Vec<Verdict> = outputs
            .par_iter()
            .enumerate()
            .map(|(i, (o, _, _))| {
                if colliding[i] {
                    return Verdict::Skip;
                }
                judge(&o.key, &o.path, records.get(&o.path), &output_root)
            })
            .collect();
        let mut pipeline_cache: HashMap<String, Option<key::Pipeline>> = HashMap::new();
        let mut old_pipeline = |hash: &str, state: &State| -> Option<key::Pipeline> {
            pipeline_cache
                .entry(hash.to_string())
                .or_insert_with(|| {
                    state
                        .pipeline(hash)
                        .ok()
                        .flatten()
                        .and_then(|j| serde_json::from_str(&j).ok())
                })
                .clone()
        };
        let new_pipeline = |plan: &Plan, hash: &str| -> Option<key::Pipeline> {
            plan.pipelines
                .get(hash)
                .and_then(|j| serde_json::from_str(j).ok())
        };
        for ((o, recipe, ph), verdict) in outputs.into_iter().zip(verdicts) {
            let reasons = match verdict {
                Verdict::Skip => continue,
                Verdict::UpToDate => {
                    plan.up_to_date += 1;
                    continue;
                }
                Verdict::Touched(rec) => {
                    plan.up_to_date += 1;
                    plan.restat.push(*rec);
                    continue;
                }
                Verdict::Build(reasons) => reasons,
                Verdict::Changed => {
                    let rec = &records[&o.path];
                    let old = old_pipeline(&rec.pipeline_hash, state);
                    let new = new_pipeline(&plan, ph);
                    explain::key_change(
                        &rec.source_hash,
                        &rec.pipeline_hash,
                        &o.source_hash,
                        &o.source_rel,
                        ph,
                        old.as_ref(),
                        new.as_ref(),
                    )
                }
            };
            let mut reasons = reasons;
            if let Some(f) = failures.get(&(o.collection.clone(), o.source_rel.clone())) {
                reasons.push(format!("previous attempt failed: {}", first_line(&f.error)));
            }
            plan.builds.push(BuildAction {
                output: o.clone(),
                recipe: recipe.clone(),
                pipeline_hash: ph.to_string(),
                reasons,
            });
        }

        // WSI units: compare with the unit records and their outputs on disk.
        let mut unit_outputs: HashMap<(&str, &str, &str, &str), Vec<&OutputRecord>> =
            HashMap::new();
        for r in records.values() {
            if !r.unit.is_empty() && r.unit != "qc" {
                unit_outputs
                    .entry((&r.collection, &r.source_rel, &r.unit, &r.sink))
                    .or_default()
                    .push(r);
            }
        }
        let mut planned_units: HashSet<(String, String, String, String)> = HashSet::new();
        let unit_verdicts: Vec<(Option<Vec<String>>, Vec<OutputRecord>)> = units
            .par_iter()
            .map(|(u, recipe, _)| {
                let sink_id = &recipe.steps[u.sink].id;
                let cell = u.cell_id();
                let prev: Vec<OutputRecord> = unit_outputs
                    .get(&(
                        u.collection.as_str(),
                        u.source_rel.as_str(),
                        cell.as_str(),
                        sink_id.as_str(),
                    ))
                    .map(|v| v.iter().map(|r| (*r).clone()).collect())
                    .unwrap_or_default();
                let key = (
                    u.collection.clone(),
                    u.source_rel.clone(),
                    cell,
                    sink_id.clone(),
                );
                let Some(rec) = unit_records.get(&key) else {
                    return (Some(vec!["new cell (never built)".into()]), prev);
                };
                if rec.key != u.key {
                    return (None, prev);
                }
                if rec.outputs != prev.len() as u64 {
                    return (
                        Some(vec![format!(
                            "{} of its {} tiles are missing from the state",
                            rec.outputs.saturating_sub(prev.len() as u64),
                            rec.outputs
                        )]),
                        prev,
                    );
                }
                for o in &prev {
                    if let Verdict::Build(r) = judge(&o.key, &o.path, Some(o), &output_root) {
                        return (Some(r), prev);
                    }
                }
                (Some(Vec::new()), prev)
            })
            .collect();
        for ((u, recipe, ph), (verdict, prev)) in units.into_iter().zip(unit_verdicts) {
            let sink_id = recipe.steps[u.sink].id.clone();
            let key = (
                u.collection.clone(),
                u.source_rel.clone(),
                u.cell_id(),
                sink_id,
            );
            let rec = unit_records.get(&key);
            planned_units.insert(key);
            let reasons = match verdict {
                Some(r) if r.is_empty() => {
                    plan.units_up_to_date += 1;
                    plan.up_to_date += rec.map_or(0, |r| r.outputs as usize);
                    continue;
                }
                Some(r) => r,
                None => {
                    let rec = rec.expect("a changed unit has a record");
                    let old = old_pipeline(&rec.pipeline_hash, state);
                    let new = new_pipeline(&plan, ph);
                    let mut r = explain::key_change(
                        &rec.source_hash,
                        &rec.pipeline_hash,
                        &u.source_hash,
                        &u.source_rel,
                        ph,
                        old.as_ref(),
                        new.as_ref(),
                    );
                    if rec.mpp.to_bits() != u.mpp.to_bits() {
                        r.retain(|x| x != "key format changed");
                        r.push(format!("MPP changed ({} -> {})", rec.mpp, u.mpp));
                    }
                    r
                }
            };
            plan.units.push(UnitAction {
                unit: u.clone(),
                recipe: recipe.clone(),
                pipeline_hash: ph.to_string(),
                reasons,
                previous: prev,
            });
        }

        // QC pictures: static paths, judged like outputs, and redrawn when a
        // cell of their slide that had no decision yet (never built, or
        // failed before) is built now: the picture showed it as unknown.
        let rebuilt_slides: HashSet<(&str, &str)> = plan
            .units
            .iter()
            .filter(|u| {
                !unit_records.contains_key(&(
                    u.unit.collection.clone(),
                    u.unit.source_rel.clone(),
                    u.unit.cell_id(),
                    u.recipe.steps[u.unit.sink].id.clone(),
                ))
            })
            .map(|u| (u.unit.collection.as_str(), u.unit.source_rel.as_str()))
            .collect();
        let mut qc_actions = Vec::new();
        for (q, recipe, ph) in qcs {
            let cells_rebuilt =
                rebuilt_slides.contains(&(q.collection.as_str(), q.source_rel.as_str()));
            let reasons = match judge(&q.key, &q.path, records.get(&q.path), &output_root) {
                Verdict::UpToDate | Verdict::Touched(_) if cells_rebuilt => {
                    vec!["cells of the slide without a decision are being built".into()]
                }
                Verdict::UpToDate => {
                    plan.up_to_date += 1;
                    continue;
                }
                Verdict::Touched(rec) => {
                    plan.up_to_date += 1;
                    plan.restat.push(*rec);
                    continue;
                }
                Verdict::Build(r) => r,
                Verdict::Changed => vec!["slide, tissue test or grid changed".into()],
                Verdict::Skip => continue,
            };
            qc_actions.push(QcAction {
                qc: q.clone(),
                recipe: recipe.clone(),
                pipeline_hash: ph.to_string(),
                reasons,
            });
        }
        plan.qc = qc_actions;

        // Recorded outputs nothing produces any more.
        let mut per_collection: HashMap<&str, (usize, usize)> = HashMap::new();
        let removable = |r_collection: &str, r_rel: &str| {
            planned_collections.contains(r_collection)
                && !protected.contains(&(r_collection.to_string(), r_rel.to_string()))
        };
        for r in records.values() {
            per_collection.entry(r.collection.as_str()).or_default().1 += 1;
            if !removable(&r.collection, &r.source_rel) || claimed.contains(&r.path) {
                continue;
            }
            if !r.unit.is_empty() && r.unit != "qc" {
                // A WSI tile: removed only with its unit (below), or by the
                // engine when its unit is rebuilt and no longer writes it.
                let key = (
                    r.collection.clone(),
                    r.source_rel.clone(),
                    r.unit.clone(),
                    r.sink.clone(),
                );
                if planned_units.contains(&key) {
                    continue;
                }
            }
            per_collection.entry(r.collection.as_str()).or_default().0 += 1;
            let reason = if !known_collections.contains(&r.collection) {
                format!("collection {} has no recipe any more", r.collection)
            } else if !scanned_sources.contains(&(r.collection.clone(), r.source_rel.clone())) {
                format!("source {} was deleted", r.source_rel)
            } else if !r.unit.is_empty() {
                "its grid cell or writing step is no longer planned (grid, MPP or steps changed)"
                    .to_string()
            } else {
                "no rule produces it any more (routing or naming changed)".to_string()
            };
            plan.removes.push(RemoveAction {
                record: r.clone(),
                reason,
            });
        }
        for (key, u) in &unit_records {
            if removable(&u.collection, &u.source_rel)
                && !planned_units.contains(key)
                && u.unit != "qc"
            {
                plan.unit_removes.push(u.clone());
            }
        }
        for ((collection, rel), _) in failures.iter() {
            if planned_collections.contains(collection)
                && !scanned_sources.contains(&(collection.clone(), rel.clone()))
            {
                plan.stale_failures.push((collection.clone(), rel.clone()));
            }
        }
        let mut mass: Vec<MassRemoval> = per_collection
            .into_iter()
            .filter(|(_, (removing, recorded))| *recorded > 0 && removing * 2 > *recorded)
            .map(|(c, (removing, recorded))| MassRemoval {
                collection: c.to_string(),
                removing,
                recorded,
            })
            .collect();
        mass.sort_by(|a, b| a.collection.cmp(&b.collection));
        plan.mass_removals = mass;
        plan.builds
            .sort_by(|a, b| a.output.path.cmp(&b.output.path));
        plan.removes
            .sort_by(|a, b| a.record.path.cmp(&b.record.path));
        plan.unrouted.sort();
        Ok(plan)
    }

    /// Drops stat-index entries of files that are gone from the roots every
    /// recipe just scanned. Done once per plan over the union of what all
    /// recipes found, so recipes sharing a root with different `include`s do
    /// not drop each other's entries; skipped when the index holds exactly
    /// what was found (the common, no-change case).
    fn prune_source_index(
        &self,
        state: &mut State,
        index: &HashMap<String, crate::store::SourceStat>,
    ) -> Result<(), StateError> {
        let scanned: Vec<&ScannedSources> =
            self.sources.values().filter(|s| s.result.is_ok()).collect();
        let found: HashSet<&Path> = scanned
            .iter()
            .flat_map(|s| s.set.entries(&self.db).iter().map(|e| e.abs.as_path()))
            .collect();
        if index.len() <= found.len() {
            return Ok(());
        }
        let roots: HashSet<&Path> = scanned.iter().map(|s| s.root.as_path()).collect();
        let gone: Vec<String> = index
            .keys()
            .filter(|k| {
                let p = Path::new(k.as_str());
                !found.contains(p) && p.ancestors().any(|a| roots.contains(a))
            })
            .cloned()
            .collect();
        state.forget_sources(&gone)
    }

    /// The current text of a recipe file, if it could be read.
    fn text(&self, path: &Path) -> Option<&str> {
        let f = self.files.get(path)?;
        f.text(&self.db).as_deref()
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

/// Adds each slide's metadata: from the state's cache by content hash, else
/// by opening the slide (then cached), so an unchanged slide is never opened
/// just to be planned.
/// Every item of every collection plan (outputs, units or QC pictures), with
/// its recipe and the hash of its pipeline.
fn with_pipeline<'a, T>(
    cplans: &'a [Arc<CollectionPlan>],
    items: impl Fn(&'a CollectionPlan) -> &'a [T],
    pipeline: impl Fn(&T) -> usize,
) -> Vec<(&'a T, &'a Arc<Recipe>, &'a str)> {
    cplans
        .iter()
        .flat_map(|c| {
            items(c)
                .iter()
                .map(|i| (i, &c.recipe, c.pipelines[pipeline(i)].hash.as_str()))
        })
        .collect()
}

fn attach_slide_meta(
    state: &mut State,
    entries: &mut [sources::SourceEntry],
) -> Result<(), StateError> {
    let mut probe: Vec<usize> = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        let Ok(hash) = &e.hash else { continue };
        match state
            .slide_meta(hash)?
            .and_then(|j| serde_json::from_str::<crate::slide::SlideMeta>(&j).ok())
        {
            Some(meta) => e.slide = Some(Ok(Arc::new(meta))),
            None => probe.push(i),
        }
    }
    let probed: Vec<(usize, Result<crate::slide::SlideMeta, String>)> = probe
        .par_iter()
        .map(|&i| (i, crate::slide::Slide::probe(&entries[i].abs)))
        .collect();
    for (i, meta) in probed {
        if let (Ok(meta), Ok(hash)) = (&meta, &entries[i].hash) {
            if let Ok(json) = serde_json::to_string(meta) {
                state.put_slide_meta(hash, &json)?;
            }
        }
        entries[i].slide = Some(meta.map(Arc::new));
    }
    Ok(())
}

enum Verdict {
    Skip,
    UpToDate,
    Touched(Box<OutputRecord>),
    Build(Vec<String>),
    /// Recorded with another key: explained against the recorded pipeline.
    Changed,
}

fn judge(key: &str, path: &str, rec: Option<&OutputRecord>, root: &Path) -> Verdict {
    let Some(rec) = rec else {
        return Verdict::Build(vec!["new output (never built)".into()]);
    };
    if rec.key != key {
        return Verdict::Changed;
    }
    let file = root.join(path);
    match std::fs::symlink_metadata(&file) {
        Err(_) => Verdict::Build(vec!["output missing on disk".into()]),
        Ok(m) if !m.is_file() => {
            Verdict::Build(vec!["output on disk is not a regular file".into()])
        }
        Ok(m) => {
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            if m.len() == rec.size && mtime == rec.mtime_ns {
                return Verdict::UpToDate;
            }
            if m.len() != rec.size {
                return Verdict::Build(vec!["output modified on disk".into()]);
            }
            match sources::hash_file(&file) {
                Ok(h) if h == rec.content_hash => {
                    let mut r = rec.clone();
                    r.mtime_ns = mtime;
                    Verdict::Touched(Box::new(r))
                }
                _ => Verdict::Build(vec!["output modified on disk".into()]),
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
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
