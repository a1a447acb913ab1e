//! The coordinator: `cpia build --executor slurm`.
//!
//! 1. Earlier Slurm builds of the workspace are merged first
//!    ([`super::finish::settle`]); one still running is waited for
//!    (`--wait`), or the command stops there and says so.
//! 2. Planning is the local build's ([`driver::prepare`]: the same guards,
//!    the same memory bound); each collection's non-job part is done at once
//!    ([`crate::engine::Engine::settle`]: problems, record updates,
//!    removals), inputs with nothing left to build are marked complete, and
//!    the jobs go, input by input, to shards ([`super::shard`]) written under
//!    `cache/plans/<plan>/`.
//! 3. The plan is registered in the state, then submitted as one job array
//!    of as many tasks as shards hold work; without `--wait`, with a merge
//!    job that runs after the array succeeded.
//! 4. With `--wait`: progress while the tasks run, journals merged as they
//!    grow, then the failed tasks reported and the plan closed
//!    ([`super::finish`]).

use std::collections::HashSet;
use std::ffi::OsString;

use crate::engine::driver::{self, Flags, MassRemoval, Run};
use crate::engine::summary::{SlurmJob, SlurmTask};
use crate::engine::{EngineError, Options, Summary, TOOL_VERSION};
use crate::executor::slurm::{JobSpec, LogPattern, Slurm, SlurmConfig};
use crate::plan::inputs::Folder;
use crate::plan::{Planner, Selection};
use crate::store::state::now;
use crate::store::submitted::Submitted;
use crate::store::State;
use crate::workspace::Workspace;

use super::finish::{self, Merging, Settled};
use super::planfile::{CollectionLine, Manifest, PlanWriter, FORMAT};
use super::shard::{self, Sharder};
use super::PlanPaths;

/// How to run a Slurm build.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The site's sbatch options and the number of shards (after the
    /// command line's overrides).
    pub config: SlurmConfig,
    /// Wait for the array and merge (else a merge job does).
    pub wait: bool,
    /// No progress lines on stderr (`--json`).
    pub quiet: bool,
    /// Each task stops its own shard after its first failed input.
    pub fail_fast: bool,
}

/// What a Slurm build did.
pub enum Outcome {
    /// Refused by the mass-removal guard: nothing was done.
    Refused(Vec<MassRemoval>),
    /// An earlier build's array still runs (and `--wait` was not given):
    /// nothing new was planned.
    Busy(Vec<Submitted>, Summary),
    Done(Summary),
}

/// Plans, submits and (with `wait`) waits for and merges a Slurm build.
pub fn build(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    flags: Flags,
    cluster: &Cluster,
) -> Result<Outcome, EngineError> {
    let mut summary = match finish::settle(ws, state, cluster.wait, cluster.quiet)? {
        Settled::Running(subs, s) => return Ok(Outcome::Busy(subs, s)),
        Settled::Done(s) => s,
    };
    let clock = driver::output_clock(ws);
    let prepared = driver::prepare(ws, state, planner, selection, flags, clock)?;
    if !prepared.mass_removals.is_empty() && !flags.allow_mass_removal {
        return Ok(Outcome::Refused(prepared.mass_removals));
    }
    let opts = Options {
        jobs: 1,
        fail_fast: cluster.fail_fast,
        progress: false,
        memory: crate::engine::budget::Limit::resolve(None, ws),
    };
    let removes = prepared.removes();
    let watched = driver::watched(&prepared.dirs);
    let mut run = Run::start(ws, state, planner, &prepared, &opts)?;
    let id = plan_id(run.build);
    let paths = PlanPaths::new(ws, &id);
    let shards = cluster.config.shards;
    let mut writer = PlanWriter::create(&paths.plan, shards)?;
    let mut sharder = Sharder::new(shards);
    prepared.for_each(ws, state, |state, p| {
        if let Some(u) = &p.unplanned {
            return driver::note_unplanned(state, p, u, flags, &mut run.summary);
        }
        let settled = run.engine.settle(state, p)?;
        run.summary.merge(settled);
        let works = shard::inputs_of(state, p)?;
        let busy: HashSet<i64> = works.iter().map(|w| w.id).collect();
        let idle: Vec<i64> = p
            .complete
            .iter()
            .copied()
            .filter(|id| !busy.contains(id))
            .collect();
        // A folder with work in a task is complete only once that work is
        // merged: the next plan that reads it row by row records it.
        let idle_folders: Vec<Folder> = p
            .folders
            .iter()
            .filter(|f| !f.inputs.iter().any(|i| busy.contains(i)))
            .cloned()
            .collect();
        run.engine
            .complete(state, p.id, p.fp, &idle, &idle_folders)?;
        if let (false, Some(spec)) = (works.is_empty(), &p.spec) {
            let assigned = sharder.assign_all(&works);
            let line = CollectionLine {
                name: p.name.clone(),
                id: p.id,
                fp: p.fp,
                fingerprint: spec.fingerprint.clone(),
            };
            writer.collection(&line, &works, &assigned)?;
        }
        Ok(())
    })?;
    if removes {
        state.prune_unused()?;
    }
    let tasks = writer.used();
    // A Ctrl-C while planning (the engine's graceful mode is on since
    // `Run::start`) must not be followed by a submission: the plan is
    // dropped, what was settled is recorded, and the next build plans the
    // rest again.
    if tasks == 0 || crate::engine::interrupt::requested() {
        paths.remove();
        summary.merge(run.finish(ws, state, &watched, false)?);
        return Ok(Outcome::Done(summary));
    }
    writer.finish(&Manifest {
        format: FORMAT,
        plan: id.clone(),
        build: run.build,
        tool_version: TOOL_VERSION.to_string(),
        tasks,
        fail_fast: cluster.fail_fast,
        watched: watched.clone(),
    })?;
    std::fs::create_dir_all(&paths.logs)
        .map_err(|e| EngineError(format!("creating {}: {e}", paths.logs.display())))?;

    // Registered before sbatch: a coordinator killed after sbatch answered
    // leaves a plan the next invocation finds (and merges).
    let mut sub = Submitted {
        plan: id.clone(),
        build: run.build,
        job: None,
        merge_job: None,
        tasks,
        at: now(),
    };
    state.add_submitted(&sub)?;
    let slurm = Slurm::from_path();
    let job = match slurm.submit(&cluster.config, &array_spec(ws, &paths, tasks)?) {
        Ok(job) => job,
        Err(e) => {
            state.close_submitted(&id, &paths.journals)?;
            paths.remove();
            return Err(EngineError(format!(
                "submitting the job array: {e}\n  nothing was built; the plan is dropped"
            )));
        }
    };
    sub.job = Some(job.0);
    state.set_submitted_jobs(&id, job.0, None)?;
    eprintln!(
        "slurm: submitted job {job} ({tasks} tasks, plan {id}); logs in {}",
        paths.logs.display()
    );
    if cluster.wait {
        let mut merging = Merging::begin(state, &paths)?;
        finish::wait(state, &slurm, &sub, &paths, &mut merging, cluster.quiet)?;
        summary.merge(finish::finish_plan(
            ws,
            state,
            &slurm,
            &sub,
            &paths,
            merging,
            Some(run),
        )?);
        return Ok(Outcome::Done(summary));
    }

    // Not waiting: a merge job folds the journals in once every task
    // succeeded (Slurm cancels it otherwise, and the next invocation merges).
    let merge = JobSpec {
        name: format!("cpia-merge-{id}"),
        tasks: None,
        command: cpia_command(ws, &paths, &["--merge"])?,
        output: LogPattern(paths.merge_log().to_string_lossy().into_owned()),
        after_ok: Some(job),
        ..array_spec(ws, &paths, tasks)?
    };
    let merge_config = SlurmConfig {
        cpus_per_task: Some(1),
        ..cluster.config.clone()
    };
    match slurm.submit(&merge_config, &merge) {
        Ok(m) => {
            sub.merge_job = Some(m.0);
            state.set_submitted_jobs(&id, job.0, Some(m.0))?;
            eprintln!("slurm: merge job {m} runs when every task has succeeded");
        }
        Err(e) => eprintln!(
            "warning: submitting the merge job: {e}\n  the next `cpia build` (or `cpia build --executor slurm --attach`) merges the results"
        ),
    }
    let states = slurm.queue(job).unwrap_or_default();
    let mut report = SlurmJob {
        plan: id.clone(),
        job: job.0,
        merge_job: sub.merge_job,
        tasks: Vec::new(),
    };
    for t in 0..tasks {
        let state = states
            .iter()
            .find(|s| s.task == Some(t))
            .map_or("PENDING".to_string(), |s| s.state.name().to_string());
        report.tasks.push(SlurmTask {
            task: t,
            state,
            exit: None,
            log: paths.task_log(t).display().to_string(),
        });
    }
    // The build's row stays open: whoever merges the plan closes it.
    let mut submitted = run.summary;
    submitted.slurm.push(report);
    summary.merge(submitted);
    Ok(Outcome::Done(summary))
}

/// Waits for the Slurm builds of the workspace that are not merged yet and
/// merges them (`--attach`).
pub fn attach(ws: &Workspace, state: &mut State, quiet: bool) -> Result<Summary, EngineError> {
    if state.submitted()?.is_empty() && !quiet {
        eprintln!("slurm: no Slurm build of this workspace is waiting to be merged");
    }
    match finish::settle(ws, state, true, quiet)? {
        Settled::Done(s) | Settled::Running(_, s) => Ok(s),
    }
}

/// A new plan id: the build's id and the time, unique in the workspace.
fn plan_id(build: i64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{build:06}-{:08x}", (nanos as u32) ^ std::process::id())
}

/// `cpia --workspace ROOT worker --plan PLAN ARGS…`, with this executable
/// (the same path must work on the compute nodes: a shared filesystem).
fn cpia_command(
    ws: &Workspace,
    paths: &PlanPaths,
    args: &[&str],
) -> Result<Vec<OsString>, EngineError> {
    let exe = std::env::current_exe()
        .map_err(|e| EngineError(format!("finding the cpia executable: {e}")))?;
    let mut c: Vec<OsString> = vec![
        exe.into(),
        "--workspace".into(),
        ws.root.clone().into(),
        "worker".into(),
        "--plan".into(),
        paths.plan.clone().into(),
    ];
    c.extend(args.iter().map(OsString::from));
    Ok(c)
}

/// The array: task `i` runs shard `i` (from `SLURM_ARRAY_TASK_ID`).
fn array_spec(ws: &Workspace, paths: &PlanPaths, tasks: u32) -> Result<JobSpec, EngineError> {
    Ok(JobSpec {
        name: format!("cpia-{}", paths.id),
        tasks: Some(tasks),
        max_running: None,
        command: cpia_command(ws, paths, &[])?,
        workdir: ws.root.clone(),
        output: LogPattern(paths.task_log_pattern()),
        error: None,
        after_ok: None,
    })
}
