//! A build as Slurm job arrays: the same plan, executed by array tasks on a
//! shared filesystem, their results merged from journals.
//!
//! - [`submit`]: the coordinator plans as a local build does, records what
//!   needs no job (problems, record updates, removals), splits the jobs by
//!   input into shards balanced by estimated cost ([`shard`]), writes them
//!   under `cache/plans/<plan>/` ([`planfile`]) and submits one job array
//!   whose tasks run `cpia worker --plan … ` (the shard is the task index).
//! - [`worker`]: a task rebuilds its shard's actions from the plan file and
//!   the workspace's recipes, runs them with the ordinary engine, and
//!   appends every result to a journal of its own ([`task_results`], written
//!   through [`crate::store::journal`]), never opening the state database.
//! - [`finish`]: waiting (progress, Ctrl-C cancels the array), merging the
//!   journals into the state through `State::record` with their cursors,
//!   reporting failed tasks, and closing the plan — by the waiting
//!   coordinator, the dependent merge job, or the next `cpia` invocation.
//!
//! Invariants: a journal record exists only for a file durably in place
//! (the engine syncs files and their folders before it hands a result to
//! the recorder); each record is applied once (cursor in the same
//! transaction); a plan is merged only while it is registered in the state
//! (`submitted`), and every build first merges the finished plans and
//! refuses to run beside an unfinished one, so an old journal never lands on
//! top of a newer build; one input's work is never split across tasks (its
//! cells, units and QC picture stay together, so the QC picture draws the
//! decisions of its own task).

pub mod finish;
pub mod interrupt;
pub mod planfile;
pub mod shard;
pub mod submit;
pub mod task_results;
pub mod worker;

use std::path::{Path, PathBuf};

use crate::workspace::Workspace;

/// Where a plan's files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanPaths {
    /// The plan's id.
    pub id: String,
    /// `cache/plans/<id>`: the manifest and the shard files.
    pub plan: PathBuf,
    /// `cache/journal/<id>`: the tasks' journals.
    pub journals: PathBuf,
    /// `cache/logs/<id>`: the tasks' logs (kept after the plan is merged).
    pub logs: PathBuf,
}

impl PlanPaths {
    /// The paths of plan `id` in workspace `ws`.
    pub fn new(ws: &Workspace, id: &str) -> PlanPaths {
        PlanPaths {
            id: id.to_string(),
            plan: ws.cache.join("plans").join(id),
            journals: ws.cache.join("journal").join(id),
            logs: ws.cache.join("logs").join(id),
        }
    }

    /// The paths of the plan in folder `dir` (`cache/plans/<id>`).
    pub fn of_dir(ws: &Workspace, dir: &Path) -> Option<PlanPaths> {
        let id = dir.file_name()?.to_str()?;
        let paths = PlanPaths::new(ws, id);
        (planfile::valid_id(id)).then_some(paths)
    }

    /// The log of task `task`.
    pub fn task_log(&self, task: u32) -> PathBuf {
        self.logs.join(format!("task-{task}.log"))
    }

    /// sbatch's `--output` pattern of the array's tasks.
    pub fn task_log_pattern(&self) -> String {
        self.logs.join("task-%a.log").to_string_lossy().into_owned()
    }

    /// The merge job's log.
    pub fn merge_log(&self) -> PathBuf {
        self.logs.join("merge.log")
    }

    /// Deletes the plan's files and journals (not its logs).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.plan);
        let _ = std::fs::remove_dir_all(&self.journals);
    }
}
