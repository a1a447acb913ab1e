//! One array task: `cpia worker --plan PLAN --shard I`.
//!
//! It reads its shard of the plan, loads the workspace's recipes (refusing
//! any whose plan fingerprint moved since planning), rebuilds the actions of
//! each input with the planner's own expansion, and runs them with the
//! ordinary engine — its temporaries in a folder of its own, its results
//! appended to a journal of its own. It never opens the state database.
//!
//! Exit status: 0 when the shard was processed (failed inputs are results,
//! in the journal, like a local build's); non-zero only when the task could
//! not work at all (no plan, a changed recipe, no journal), so that Slurm
//! reports it and the dependent merge job is not run on a half-done array.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::engine::{Engine, EngineError, Note, Notes, Options, Summary};
use crate::plan::expand::{expand_roi, expand_wsi};
use crate::plan::{
    BuildAction, CollectionPlan, CollectionSpec, Input, Planner, QcAction, Selection, UnitAction,
    TOOL_VERSION,
};
use crate::slide::SlideMeta;
use crate::store::journal::JournalWriter;
use crate::workspace::Workspace;

use super::planfile::{keys_digest, CollectionLine, InputWork, Manifest, ShardReader};
use super::task_results::JournalRecorder;
use super::PlanPaths;

/// Worker threads of a task: `SLURM_CPUS_PER_TASK` (what the task was
/// given), else the CPUs this process may use.
pub fn jobs() -> usize {
    std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .map_or_else(crate::threads::cores, crate::threads::cap)
}

/// Runs shard `shard` of the plan in `plan_dir`; its first note says what
/// it runs (the first line of the task's log).
pub fn run(
    ws: &Workspace,
    plan_dir: &Path,
    shard: u32,
    notes: Notes,
) -> Result<Summary, EngineError> {
    let paths = PlanPaths::of_dir(ws, plan_dir).ok_or_else(|| {
        EngineError(format!(
            "{} is not a plan folder of this workspace",
            plan_dir.display()
        ))
    })?;
    let manifest = Manifest::read(&paths.plan)?;
    if manifest.tool_version != TOOL_VERSION {
        return Err(EngineError(format!(
            "plan {} was made by {}, this is {TOOL_VERSION}: every node must run the same cpia",
            paths.id, manifest.tool_version
        )));
    }
    if shard >= manifest.tasks {
        return Err(EngineError(format!(
            "plan {} has {} shards, no shard {shard}",
            paths.id, manifest.tasks
        )));
    }
    let mut shard_file = ShardReader::open(&paths.plan, shard)?;
    let mut planner = Planner::new();
    planner.refresh_recipes(ws);
    let specs: HashMap<String, Arc<CollectionSpec>> = planner
        .catalog(ws, &Selection::default())
        .selected
        .into_iter()
        .map(|s| (s.spec.name().to_string(), s.spec))
        .collect();

    let writer = JournalWriter::create(&paths.journals, &format!("task-{shard}"))
        .map_err(|e| EngineError(format!("creating the task's journal: {e}")))?;
    let tag = writer.id().to_string();
    let opts = Options {
        jobs: jobs(),
        fail_fast: manifest.fail_fast,
        progress: false,
        // The task's own memory: max_memory of cpia.toml, else 3/4 of what
        // the node (or the job's cgroup, which Slurm sets from --mem) allows.
        memory: crate::engine::budget::Limit::resolve(None, ws),
    };
    notes(Note::TaskStarted {
        plan: paths.id.clone(),
        shard,
        tasks: manifest.tasks,
        jobs: opts.jobs,
        journal: writer.path().to_path_buf(),
    });
    let mut engine = Engine::for_task(&ws.output, &tag, &opts, manifest.build)?;
    let mut rec = JournalRecorder::new(writer);
    let mut summary = Summary::default();
    while let Some((coll, works)) = shard_file.next_collection()? {
        let spec = specs.get(&coll.name).ok_or_else(|| {
            EngineError(format!(
                "collection {}: no loadable recipe names it any more; build again",
                coll.name
            ))
        })?;
        if spec.fingerprint != coll.fingerprint {
            return Err(EngineError(format!(
                "collection {}: its recipe changed since the plan was made; nothing of it was built by this task, build again",
                coll.name
            )));
        }
        let plan = rebuild(spec, &coll, &works, &mut rec)?;
        summary.merge(engine.execute(&mut rec, &plan)?);
    }
    engine.finish();
    Ok(summary)
}

/// The collection plan of a shard's inputs: the planner's expansion of each
/// input, the planned actions picked from it, checked against the digest of
/// the keys planned by the coordinator.
fn rebuild(
    spec: &Arc<CollectionSpec>,
    coll: &CollectionLine,
    works: &[InputWork],
    rec: &mut JournalRecorder,
) -> Result<CollectionPlan, EngineError> {
    let mut plan = CollectionPlan {
        name: coll.name.clone(),
        id: coll.id,
        spec: Some(spec.clone()),
        fp: coll.fp,
        ..CollectionPlan::default()
    };
    for w in works {
        let input = Arc::new(Input {
            id: w.id,
            collection: coll.name.clone(),
            source_root: w.source_root.clone(),
            rel: w.rel.clone(),
            abs: w.abs.clone(),
            hash: w.hash.clone(),
        });
        let bad = |why: String| EngineError(format!("{}: {why}", w.abs.display()));
        let mut keys: Vec<String> = Vec::new();
        if !w.outputs.is_empty() {
            let outputs = expand_roi(spec, &w.rel, &w.hash)
                .map_err(bad)?
                .ok_or_else(|| bad("no route takes it any more".into()))?;
            for path in &w.outputs {
                let o = outputs
                    .iter()
                    .find(|o| o.path() == *path)
                    .ok_or_else(|| bad(format!("the recipe no longer makes {path}")))?;
                keys.push(o.key.clone());
                plan.builds.push(BuildAction {
                    input: input.clone(),
                    output: o.clone(),
                    spec: spec.clone(),
                    reasons: Vec::new(),
                });
            }
        }
        if let Some(meta) = &w.meta {
            let meta: SlideMeta =
                serde_json::from_str(meta).map_err(|e| bad(format!("slide metadata: {e}")))?;
            let (units, qc) = expand_wsi(spec, &w.rel, &w.hash, &meta).map_err(bad)?;
            for uw in &w.units {
                let u = units
                    .iter()
                    .find(|u| u.cell == uw.cell && u.sink == uw.sink)
                    .ok_or_else(|| bad(format!("no unit at cell {},{}", uw.cell.0, uw.cell.1)))?;
                keys.push(u.key.clone());
                plan.units.push(UnitAction {
                    input: input.clone(),
                    unit: u.clone(),
                    spec: spec.clone(),
                    reasons: Vec::new(),
                    previous: uw.previous.clone(),
                });
            }
            if let Some(decisions) = &w.qc {
                keys.push(qc.key.clone());
                rec.seed_decisions(
                    w.id,
                    decisions.iter().map(|&(i, j, k)| ((i, j), k)).collect(),
                );
                plan.qc.push(QcAction {
                    input: input.clone(),
                    qc,
                    spec: spec.clone(),
                    reasons: Vec::new(),
                });
            }
        }
        if keys_digest(keys.iter().map(String::as_str)) != w.keys {
            return Err(bad(
                "its outputs expand to other keys here than where it was planned (another cpia, or its recipe changed)".into(),
            ));
        }
        plan.complete.push(w.id);
    }
    Ok(plan)
}
