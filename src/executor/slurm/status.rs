//! The whole picture of a job array, from every source Slurm offers.

use std::collections::BTreeMap;

use super::queue::TaskStatus;
use super::state::TaskState;
use super::{JobId, Slurm, SlurmError};

/// Every task of an array of known size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayStatus {
    pub job: JobId,
    /// By task index, each of `0..N`.
    pub tasks: BTreeMap<u32, TaskStatus>,
}

/// Tasks by what they are doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: usize,
    pub running: usize,
    pub completed: usize,
    /// Finished without success (failed, cancelled, timed out, …; or gone
    /// with no record of how).
    pub failed: usize,
}

impl ArrayStatus {
    /// How many tasks are in each phase.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in self.tasks.values() {
            match &t.state {
                s if s.is_success() => c.completed += 1,
                s if s.is_finished() => c.failed += 1,
                s if s.is_pending() => c.pending += 1,
                _ => c.running += 1,
            }
        }
        c
    }

    /// Whether every task has ended.
    pub fn is_finished(&self) -> bool {
        self.tasks.values().all(|t| t.state.is_finished())
    }

    /// The tasks that ended without success.
    pub fn unsuccessful(&self) -> impl Iterator<Item = &TaskStatus> {
        self.tasks
            .values()
            .filter(|t| t.state.is_finished() && !t.state.is_success())
    }
}

impl Slurm {
    /// States of tasks `0..tasks` of array `job`: from `squeue`; exit codes
    /// of the unsuccessful ones from `scontrol`; tasks the controller no
    /// longer knows from `sacct`, or [`TaskState::Gone`] without accounting.
    /// Costs up to three commands: for a final report or an occasional
    /// look, while [`queue`](Slurm::queue) alone serves a polling loop.
    pub fn status(&self, job: JobId, tasks: u32) -> Result<ArrayStatus, SlurmError> {
        let mut known: BTreeMap<u32, TaskStatus> = self
            .queue(job)?
            .into_iter()
            .filter_map(|t| Some((t.task.filter(|&i| i < tasks)?, t)))
            .collect();
        if known
            .values()
            .any(|t| t.state.is_finished() && !t.state.is_success())
        {
            let codes = self.exit_codes(job)?;
            for (i, t) in known.iter_mut() {
                if t.state.is_finished() {
                    t.exit = codes.get(&Some(*i)).copied();
                }
            }
        }
        if (known.len() as u32) < tasks {
            let accounted = self.accounting(job)?.unwrap_or_default();
            for t in accounted {
                if let Some(i) = t.task.filter(|&i| i < tasks) {
                    known.entry(i).or_insert(t);
                }
            }
        }
        let tasks = (0..tasks)
            .map(|i| {
                let t = known.remove(&i).unwrap_or(TaskStatus {
                    task: Some(i),
                    job: None,
                    state: TaskState::Gone,
                    reason: None,
                    exit: None,
                });
                (i, t)
            })
            .collect();
        Ok(ArrayStatus { job, tasks })
    }
}
