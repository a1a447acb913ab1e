//! The coordinator: `cpia build --executor slurm`.
//!
//! 1. Earlier Slurm builds of the workspace are merged first
//!    ([`super::finish::settle`]); one still running is waited for
//!    (`--wait`), or the command stops there and says so.
//! 2. Planning is the local build's ([`Request::prepare`]: the same guards,
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

use crate::engine::driver::{self, MassRemoval, Request, Run};
use crate::engine::summary::{SlurmJob, SlurmTask};
use crate::engine::{EngineError, Note, Notes, Options, Summary, TOOL_VERSION};
use crate::executor::slurm::{JobId, JobSpec, LogPattern, Slurm};
use crate::plan::inputs::Folder;
use crate::plan::CollectionPlan;
use crate::store::state::now;
use crate::store::submitted::Submitted;
use crate::store::State;
use crate::workspace::slurm::SlurmConfig;
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

/// Plans, submits and (with `wait`) waits for and merges a Slurm build;
/// what it has to say meanwhile goes to `notes`.
pub fn build(req: &Request, state: &mut State, cluster: &Cluster) -> Result<Outcome, EngineError> {
    let Request {
        ws,
        planner,
        flags,
        notes,
        ..
    } = *req;
    let mut summary = match finish::settle(ws, state, cluster.wait, cluster.quiet, notes)? {
        Settled::Running(subs, s) => return Ok(Outcome::Busy(subs, s)),
        Settled::Done(s) => s,
    };
    let clock = driver::output_clock(ws);
    let prepared = req.prepare(state, clock)?;
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
    prepared.for_each(ws, state, notes, |state, p| {
        if let Some(u) = &p.unplanned {
            return driver::note_unplanned(state, p, u, flags, &mut run.summary);
        }
        shard_collection(state, p, &mut run, &mut sharder, &mut writer)
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
    let slurm = Slurm::from_path();
    let (mut sub, job) =
        submit_array(ws, state, &slurm, &cluster.config, &paths, run.build, tasks)?;
    notes(Note::Submitted {
        job: job.0,
        tasks,
        plan: id.clone(),
        logs: paths.logs.clone(),
    });
    if cluster.wait {
        let mut merging = Merging::begin(state, &paths)?;
        finish::wait(
            state,
            &slurm,
            &sub,
            &paths,
            &mut merging,
            cluster.quiet,
            notes,
        )?;
        summary.merge(finish::finish_plan(
            ws,
            state,
            &slurm,
            &sub,
            &paths,
            merging,
            Some(run),
            notes,
        )?);
        return Ok(Outcome::Done(summary));
    }
    submit_merge_job(
        ws,
        state,
        &slurm,
        &cluster.config,
        &paths,
        (&mut sub, job),
        notes,
    )?;
    // The build's row stays open: whoever merges the plan closes it.
    let mut submitted = run.summary;
    submitted
        .slurm
        .push(array_report(&slurm, &sub, job, &paths));
    summary.merge(submitted);
    Ok(Outcome::Done(summary))
}

/// One collection's plan in a Slurm build: its non-job part done now (and
/// its inputs with nothing left to build marked complete), its jobs, input by
/// input, assigned to shards and written into the plan.
fn shard_collection(
    state: &mut State,
    p: &CollectionPlan,
    run: &mut Run,
    sharder: &mut Sharder,
    writer: &mut PlanWriter,
) -> Result<(), EngineError> {
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
}

/// Registers the written plan in the state and submits its job array of
/// `tasks` tasks (its row, and the array's id); if `sbatch` fails, the plan
/// is dropped (nothing was built).
fn submit_array(
    ws: &Workspace,
    state: &mut State,
    slurm: &Slurm,
    config: &SlurmConfig,
    paths: &PlanPaths,
    build: i64,
    tasks: u32,
) -> Result<(Submitted, JobId), EngineError> {
    std::fs::create_dir_all(&paths.logs)
        .map_err(|e| EngineError(format!("creating {}: {e}", paths.logs.display())))?;

    // Registered before sbatch: a coordinator killed after sbatch answered
    // leaves a plan the next invocation finds (and merges).
    let mut sub = Submitted {
        plan: paths.id.clone(),
        build,
        job: None,
        merge_job: None,
        tasks,
        at: now(),
    };
    state.add_submitted(&sub)?;
    let job = match slurm.submit(config, &array_spec(ws, paths, tasks)?) {
        Ok(job) => job,
        Err(e) => {
            state.close_submitted(&paths.id, &paths.journals)?;
            paths.remove();
            return Err(EngineError(format!(
                "submitting the job array: {e}\n  nothing was built; the plan is dropped"
            )));
        }
    };
    sub.job = Some(job.0);
    state.set_submitted_jobs(&paths.id, job.0, None)?;
    Ok((sub, job))
}

/// Not waiting: a merge job folds the journals in once every task
/// succeeded (Slurm cancels it otherwise, and the next invocation merges).
fn submit_merge_job(
    ws: &Workspace,
    state: &mut State,
    slurm: &Slurm,
    config: &SlurmConfig,
    paths: &PlanPaths,
    (sub, job): (&mut Submitted, JobId),
    notes: Notes,
) -> Result<(), EngineError> {
    let merge = JobSpec {
        name: format!("cpia-merge-{}", paths.id),
        tasks: None,
        command: cpia_command(ws, paths, &["--merge"])?,
        output: LogPattern(paths.merge_log().to_string_lossy().into_owned()),
        after_ok: Some(job),
        ..array_spec(ws, paths, sub.tasks)?
    };
    let merge_config = SlurmConfig {
        cpus_per_task: Some(1),
        ..config.clone()
    };
    match slurm.submit(&merge_config, &merge) {
        Ok(m) => {
            sub.merge_job = Some(m.0);
            state.set_submitted_jobs(&paths.id, job.0, Some(m.0))?;
            notes(Note::MergeJobSubmitted { job: m.0 });
        }
        Err(e) => notes(Note::MergeJobNotSubmitted {
            error: e.to_string(),
        }),
    }
    Ok(())
}

/// The submitted array as the summary shows it: each task's state as
/// `squeue` sees it now (`PENDING` until it does).
fn array_report(slurm: &Slurm, sub: &Submitted, job: JobId, paths: &PlanPaths) -> SlurmJob {
    let states = slurm.queue(job).unwrap_or_default();
    let mut report = SlurmJob {
        plan: paths.id.clone(),
        job: job.0,
        merge_job: sub.merge_job,
        tasks: Vec::new(),
    };
    for t in 0..sub.tasks {
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
    report
}

/// Waits for the Slurm builds of the workspace that are not merged yet and
/// merges them (`--attach`).
pub fn attach(
    ws: &Workspace,
    state: &mut State,
    quiet: bool,
    notes: Notes,
) -> Result<Summary, EngineError> {
    if state.submitted()?.is_empty() && !quiet {
        notes(Note::NothingToAttach);
    }
    match finish::settle(ws, state, true, quiet, notes)? {
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
