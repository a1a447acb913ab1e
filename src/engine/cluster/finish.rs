//! The end of a Slurm build: waiting for its array, merging the tasks'
//! journals into the state, reporting what failed, and closing the plan.
//!
//! Whoever gets there first does it, under the workspace lock: the
//! coordinator that waited (`--wait`), the dependent merge job
//! (`cpia worker --merge`), or the next `cpia` invocation (`build` in either
//! executor, or `build --executor slurm --attach`) — for example after the
//! coordinator was killed. Merging goes by the journals' cursors, so a merge
//! interrupted at any point and done again by another process applies every
//! record once; closing the plan drops its row and cursors in one
//! transaction, and its journals are never read again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::driver::Run;
use crate::engine::summary::{SlurmJob, SlurmTask};
use crate::engine::{EngineError, Failure, Note, Notes, Options, Summary, Tally};
use crate::executor::slurm::{JobId, Slurm, TaskState, TaskStatus};
use crate::store::journal::{self, Batch};
use crate::store::submitted::Submitted;
use crate::store::State;
use crate::workspace::Workspace;

use super::planfile::{Manifest, ShardReader};
use super::task_results::decode_result;
use super::{interrupt, PlanPaths};

/// Journal records applied per transaction.
const MERGE_BATCH: usize = 256;
/// Shortest and longest pause between two looks at a waited-for array: in
/// between, a tenth of the time waited so far, so that noticing the end
/// costs at most ~10 % of a short build and a long one asks Slurm rarely.
const MIN_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(5);

/// What merging a plan's journals found so far, in this process.
#[derive(Debug, Default)]
pub struct Merging {
    /// The merged records' counts and failures.
    pub tally: Tally,
    /// Whether this process merged the plan from its first record (then
    /// `tally` covers the whole build, and folder identities may be
    /// recorded).
    pub from_start: bool,
    /// Journals that could not be read whole, with why.
    damaged: BTreeMap<String, String>,
}

impl Merging {
    /// Starts merging `paths`' journals.
    pub fn begin(state: &State, paths: &PlanPaths) -> Result<Merging, EngineError> {
        Ok(Merging {
            from_start: !state.merge_started(&paths.journals)?,
            ..Merging::default()
        })
    }

    /// Applies every journal record of the plan that is not applied yet (a
    /// journal still being written: up to its last whole record).
    pub fn merge(&mut self, state: &mut State, paths: &PlanPaths) -> Result<(), EngineError> {
        let mut cursor = state.merge_cursor()?;
        let tally = &mut self.tally;
        let report = journal::merge(
            &paths.journals,
            &mut cursor,
            MERGE_BATCH,
            |p| decode_result(p).map_err(|e| e.to_string()),
            |b: Batch<'_, crate::engine::JobResult>| {
                for r in &b.records {
                    tally.count(r);
                }
                let events: Vec<_> = b.records.into_iter().flat_map(|r| r.events).collect();
                state.record_merged(&events, b.journal, b.path, b.end)
            },
        )
        .map_err(|e| EngineError(format!("merging {}: {}", e.path.display(), e.error)))?;
        for (path, at, why) in report.corrupt {
            self.damaged.insert(
                path.display().to_string(),
                format!("journal damaged at byte {at} ({why}): what it records after that is not merged, and is built again by the next build"),
            );
        }
        for msg in report.unreadable {
            self.damaged.insert(msg.clone(), msg);
        }
        Ok(())
    }
}

/// The tasks `0..tasks` of `job` as Slurm sees them now: `squeue`, and the
/// full [`Slurm::status`] (exit codes, `sacct`) only for tasks it forgot.
fn look(slurm: &Slurm, job: u64, tasks: u32) -> Result<Vec<TaskStatus>, EngineError> {
    let err = |e| EngineError(format!("watching job {job}: {e}"));
    let mut q: BTreeMap<u32, TaskStatus> = slurm
        .queue(JobId(job))
        .map_err(err)?
        .into_iter()
        .filter_map(|t| Some((t.task.filter(|&i| i < tasks)?, t)))
        .collect();
    if (q.len() as u32) < tasks {
        q = slurm.status(JobId(job), tasks).map_err(err)?.tasks;
    }
    Ok(q.into_values().collect())
}

/// Waits until every task of `sub`'s array has ended, merging journals as
/// they grow and telling `notes` the progress (unless `quiet`). The first Ctrl-C (or
/// SIGTERM) cancels the array and its merge job and goes on waiting for the
/// tasks to end; a second stops waiting (an error: the next invocation
/// merges).
pub fn wait(
    state: &mut State,
    slurm: &Slurm,
    sub: &Submitted,
    paths: &PlanPaths,
    merging: &mut Merging,
    quiet: bool,
    notes: Notes,
) -> Result<(), EngineError> {
    let Some(job) = sub.job else {
        return Ok(());
    };
    let signals = interrupt::catch();
    let mut cancelled = false;
    let mut shown: Option<Note> = None;
    let start = Instant::now();
    loop {
        let tasks = look(slurm, job, sub.tasks)?;
        merging.merge(state, paths)?;
        let (mut pending, mut running, mut done, mut failed) = (0, 0, 0, 0);
        for t in &tasks {
            match &t.state {
                s if s.is_success() => done += 1,
                s if s.is_finished() => failed += 1,
                s if s.is_pending() => pending += 1,
                _ => running += 1,
            }
        }
        let progress = Note::Progress {
            job,
            pending,
            running,
            done,
            failed,
            recorded: merging.tally.built,
        };
        if !quiet && shown.as_ref() != Some(&progress) {
            notes(progress.clone());
            shown = Some(progress);
        }
        if tasks.iter().all(|t| t.state.is_finished()) {
            return Ok(());
        }
        let pause = (start.elapsed() / 10).clamp(MIN_POLL, MAX_POLL);
        let end = Instant::now() + pause;
        while Instant::now() < end {
            if signals.count() >= 2 {
                return Err(EngineError(format!(
                    "interrupted while waiting for job {job}; its tasks are being cancelled, and the next `cpia build` merges what they finished"
                )));
            }
            if signals.count() == 1 && !cancelled {
                notes(Note::Cancelling { job });
                let cancel = |id: u64| {
                    slurm
                        .cancel(JobId(id))
                        .map_err(|e| EngineError(format!("cancelling job {id}: {e}")))
                };
                cancel(job)?;
                if let Some(m) = sub.merge_job {
                    cancel(m)?;
                }
                cancelled = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Ends a plan whose tasks have all ended: merges the rest of its journals,
/// reports each task that failed (state, exit code, log) with the work it
/// left undone, ends its build (`run`: the coordinator's own; `None`: the
/// build started by another process), and closes the plan.
#[allow(clippy::too_many_arguments)]
pub fn finish_plan(
    ws: &Workspace,
    state: &mut State,
    slurm: &Slurm,
    sub: &Submitted,
    paths: &PlanPaths,
    mut merging: Merging,
    run: Option<Run>,
    notes: Notes,
) -> Result<Summary, EngineError> {
    let status = match sub.job {
        Some(job) => Some(
            slurm
                .status(JobId(job), sub.tasks)
                .map_err(|e| EngineError(format!("reading the states of job {job}: {e}")))?,
        ),
        None => None,
    };
    merging.merge(state, paths)?;
    let manifest = Manifest::read(&paths.plan).ok();
    let mut run = match run {
        Some(r) => r,
        None => Run::resume(
            ws,
            sub.build,
            &Options {
                jobs: 1,
                fail_fast: false,
                progress: false,
                memory: crate::engine::budget::Limit::resolve(None, ws),
            },
        )?,
    };
    let mut tally = std::mem::take(&mut merging.tally);
    let mut report = SlurmJob {
        plan: sub.plan.clone(),
        job: sub.job.unwrap_or(0),
        merge_job: sub.merge_job,
        tasks: Vec::new(),
    };
    match (&status, sub.job) {
        (Some(status), Some(job)) => {
            for t in 0..sub.tasks {
                let gone = TaskStatus {
                    task: Some(t),
                    job: None,
                    state: TaskState::Gone,
                    reason: None,
                    exit: None,
                };
                let ts = status.tasks.get(&t).unwrap_or(&gone);
                let log = paths.task_log(t);
                report.tasks.push(SlurmTask {
                    task: t,
                    state: ts.state.name().to_string(),
                    exit: ts.exit.map(|e| e.to_string()),
                    log: log.display().to_string(),
                });
                task_outcome(state, paths, job, t, ts, &log, &mut tally)?;
            }
        }
        _ => notes(Note::NeverSubmitted {
            plan: sub.plan.clone(),
        }),
    }
    for (what, why) in std::mem::take(&mut merging.damaged) {
        tally.failures.push(Failure {
            input: what,
            error: why,
        });
    }
    // Every task has ended: what a killed one left in its temporary folder
    // is garbage.
    run.engine.output().clear_tasks();
    run.engine.absorb(&tally);
    run.summary.add(&tally);
    run.record_identities = merging.from_start && manifest.is_some();
    let watched = manifest.map(|m| m.watched).unwrap_or_default();
    crate::engine::debug::pause("merged");
    let mut summary = run.finish(ws, state, &watched, false)?;
    if sub.job.is_some() {
        summary.slurm.push(report);
    }
    state.close_submitted(&sub.plan, &paths.journals)?;
    paths.remove();
    Ok(summary)
}

/// Reports task `t` when it failed or left work undone: its state, exit
/// code, log, and how many of its inputs have no result (counted as failed
/// outputs; they stay incomplete, so the next build makes them).
fn task_outcome(
    state: &State,
    paths: &PlanPaths,
    job: u64,
    t: u32,
    ts: &TaskStatus,
    log: &std::path::Path,
    tally: &mut Tally,
) -> Result<(), EngineError> {
    let task = format!("Slurm task {job}_{t} (shard {t} of plan {})", paths.id);
    let inputs = match ShardReader::inputs(&paths.plan, t) {
        Ok(inputs) => inputs,
        Err(e) => {
            // What it left undone stays incomplete in the state either way;
            // the summary must not say it did everything.
            tally.failures.push(Failure {
                input: task,
                error: format!(
                    "{}: cannot read its shard of the plan to count what it left undone ({e}); the next build makes what has no result; log: {}",
                    ts.state,
                    log.display()
                ),
            });
            return Ok(());
        }
    };
    let ids: Vec<i64> = inputs.iter().map(|&(id, _)| id).collect();
    let open = state.unfinished_inputs(&ids)?;
    let unsuccessful = ts.state.is_finished() && !ts.state.is_success();
    if open.is_empty() && (!unsuccessful || ts.state == TaskState::Gone) {
        return Ok(());
    }
    let outputs: u64 = inputs
        .iter()
        .filter(|(id, _)| open.contains(id))
        .map(|&(_, n)| n)
        .sum();
    let how = match (&ts.state, ts.exit) {
        (TaskState::Gone, _) => {
            "no longer known to Slurm, and the cluster keeps no accounting".to_string()
        }
        (s, Some(e)) if !s.is_success() => format!("{s} ({e})"),
        (s, _) => s.to_string(),
    };
    let undone = if open.is_empty() {
        "after it recorded all of its shard".to_string()
    } else {
        format!(
            "{} of the {} inputs of its shard have no result ({outputs} outputs); the next build makes them",
            open.len(),
            inputs.len()
        )
    };
    tally.failures.push(Failure {
        input: task,
        error: format!("{how}: {undone}; log: {}", log.display()),
    });
    tally.failed += outputs;
    tally.incomplete.extend(open);
    Ok(())
}

/// What [`settle`] left.
pub enum Settled {
    /// Every earlier plan is merged and closed: what merging them recorded.
    Done(Summary),
    /// Some arrays still run (not waited for): those plans, and what was
    /// merged so far.
    Running(Vec<Submitted>, Summary),
}

/// Deals with the Slurm builds of the workspace that are not merged yet,
/// before anything else is planned: the finished ones are merged and
/// closed; the running ones are waited for (`wait`) or left running (and
/// merged as far as their journals go). Leftover files of plans no longer
/// registered are deleted.
pub fn settle(
    ws: &Workspace,
    state: &mut State,
    wait_for: bool,
    quiet: bool,
    notes: Notes,
) -> Result<Settled, EngineError> {
    let open = state.submitted()?;
    remove_leftovers(ws, &open);
    if open.is_empty() {
        return Ok(Settled::Done(Summary::default()));
    }
    let slurm = Slurm::from_path();
    let mut summary = Summary::default();
    let mut running = Vec::new();
    for sub in open {
        let paths = PlanPaths::new(ws, &sub.plan);
        let mut merging = Merging::begin(state, &paths)?;
        if let Some(job) = sub.job {
            let tasks = look(&slurm, job, sub.tasks)?;
            if !tasks.iter().all(|t| t.state.is_finished()) {
                if !wait_for {
                    merging.merge(state, &paths)?;
                    summary.add(&merging.tally);
                    summary.slurm.push(SlurmJob {
                        plan: sub.plan.clone(),
                        job,
                        merge_job: sub.merge_job,
                        tasks: tasks
                            .iter()
                            .zip(0..)
                            .map(|(t, i)| SlurmTask {
                                task: t.task.unwrap_or(i),
                                state: t.state.name().to_string(),
                                exit: t.exit.map(|e| e.to_string()),
                                log: paths.task_log(t.task.unwrap_or(i)).display().to_string(),
                            })
                            .collect(),
                    });
                    running.push(sub);
                    continue;
                }
                if !quiet {
                    notes(Note::EarlierStillRunning {
                        job,
                        plan: sub.plan.clone(),
                    });
                }
                wait(state, &slurm, &sub, &paths, &mut merging, quiet, notes)?;
            }
        }
        summary.merge(finish_plan(
            ws, state, &slurm, &sub, &paths, merging, None, notes,
        )?);
    }
    Ok(if running.is_empty() {
        Settled::Done(summary)
    } else {
        Settled::Running(running, summary)
    })
}

/// The merge job: finishes plan `id` unless someone did already.
pub fn merge_job(
    ws: &Workspace,
    state: &mut State,
    id: &str,
    notes: Notes,
) -> Result<Summary, EngineError> {
    let Some(sub) = state.submitted_plan(id)? else {
        notes(Note::AlreadyMerged {
            plan: id.to_string(),
        });
        return Ok(Summary::default());
    };
    let slurm = Slurm::from_path();
    let paths = PlanPaths::new(ws, id);
    let mut merging = Merging::begin(state, &paths)?;
    wait(state, &slurm, &sub, &paths, &mut merging, true, notes)?;
    finish_plan(ws, state, &slurm, &sub, &paths, merging, None, notes)
}

/// Deletes plan and journal folders of plans that are not registered any
/// more (closed, but their files could not be deleted; or written by a
/// coordinator that was killed before it registered the plan). Called with
/// the workspace lock held, so no coordinator is writing one.
fn remove_leftovers(ws: &Workspace, open: &[Submitted]) {
    for sub in ["plans", "journal"] {
        let Ok(entries) = std::fs::read_dir(ws.cache.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !open.iter().any(|s| s.plan == name) && super::planfile::valid_id(&name) {
                let path: PathBuf = e.path();
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}
