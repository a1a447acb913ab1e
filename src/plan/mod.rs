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
use crate::store::{OutputRecord, State, StateError};
use crate::workspace::Workspace;

pub use query::{CollectionPlan, PlannedOutput};
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
        let root = ws.sources.get(&recipe.inputs.source).cloned();
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
                    let (entries, updates) = sources::hash_files(&files, index);
                    state.update_source_index(&updates)?;
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

        // Collections whose plan is complete, so that removing what they no
        // longer produce is safe.
        let mut planned_collections: HashSet<String> = HashSet::new();
        let mut known_collections: HashSet<String> = HashSet::new();
        let mut outputs: Vec<(PlannedOutput, Arc<Recipe>, String)> = Vec::new();
        let mut scanned_sources: HashSet<(String, String)> = HashSet::new();

        for path in &chosen.paths {
            let Some(result) = self.recipe(path) else {
                continue;
            };
            let recipe = match result {
                Ok(r) => r,
                Err(diags) => {
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
            for e in &cplan.input_errors {
                plan.problems.push(Problem {
                    input: e.source_abs.display().to_string(),
                    error: e.error.clone(),
                    source: Some((
                        recipe.collection.name.clone(),
                        recipe.inputs.source.clone(),
                        e.source_rel.clone(),
                    )),
                    outputs: recipe.sinks.len(),
                });
            }
            for o in &cplan.outputs {
                let ph = cplan.pipelines[o.pipeline].hash.clone();
                outputs.push((o.clone(), cplan.recipe.clone(), ph));
            }
        }
        if selection.recipes.is_empty() {
            // With every recipe planned, outputs of collections that have no
            // recipe any more are removable too.
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

        // Compare each planned output with its record and the file on disk.
        let output_root = ws.output.clone();
        let verdicts: Vec<Verdict> = outputs
            .par_iter()
            .enumerate()
            .map(|(i, (o, _, ph))| {
                if colliding[i] {
                    return Verdict::Skip;
                }
                judge(o, ph, records.get(&o.path), &output_root)
            })
            .collect();
        let mut pipeline_cache: HashMap<String, Option<key::Pipeline>> = HashMap::new();
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
                    let old = pipeline_cache
                        .entry(rec.pipeline_hash.clone())
                        .or_insert_with(|| {
                            state
                                .pipeline(&rec.pipeline_hash)
                                .ok()
                                .flatten()
                                .and_then(|j| serde_json::from_str(&j).ok())
                        })
                        .clone();
                    let new: Option<key::Pipeline> = plan
                        .pipelines
                        .get(&ph)
                        .and_then(|j| serde_json::from_str(j).ok());
                    explain::key_change(rec, &o, &ph, old.as_ref(), new.as_ref())
                }
            };
            let mut reasons = reasons;
            if let Some(f) = failures.get(&(o.collection.clone(), o.source_rel.clone())) {
                reasons.push(format!("previous attempt failed: {}", first_line(&f.error)));
            }
            plan.builds.push(BuildAction {
                output: o,
                recipe,
                pipeline_hash: ph,
                reasons,
            });
        }

        // Recorded outputs nothing produces any more.
        let mut per_collection: HashMap<&str, (usize, usize)> = HashMap::new();
        for r in records.values() {
            per_collection.entry(r.collection.as_str()).or_default().1 += 1;
            if !planned_collections.contains(&r.collection) || claimed.contains(&r.path) {
                continue;
            }
            per_collection.entry(r.collection.as_str()).or_default().0 += 1;
            let reason = if !known_collections.contains(&r.collection) {
                format!("collection {} has no recipe any more", r.collection)
            } else if !scanned_sources.contains(&(r.collection.clone(), r.source_rel.clone())) {
                format!("source {} was deleted", r.source_rel)
            } else {
                "no rule produces it any more (routing or naming changed)".to_string()
            };
            plan.removes.push(RemoveAction {
                record: r.clone(),
                reason,
            });
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
        Ok(plan)
    }
}

enum Verdict {
    Skip,
    UpToDate,
    Touched(Box<OutputRecord>),
    Build(Vec<String>),
    /// Recorded with another key: explained against the recorded pipeline.
    Changed,
}

fn judge(o: &PlannedOutput, ph: &str, rec: Option<&OutputRecord>, root: &Path) -> Verdict {
    let Some(rec) = rec else {
        return Verdict::Build(vec!["new output (never built)".into()]);
    };
    if rec.key != o.key {
        return Verdict::Changed;
    }
    let _ = ph;
    let file = root.join(&o.path);
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
