//! Per-task states from `squeue`.

use super::command::args;
use super::state::{ExitCode, TaskState};
use super::{JobId, Slurm, SlurmError};

/// One array task (or a job that is not an array) as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// Its index in the array; `None` for a job that is not an array.
    pub task: Option<u32>,
    /// Its own job id (what `%j` expands to), once it has started.
    pub job: Option<JobId>,
    pub state: TaskState,
    /// Why it waits or ended, as squeue says (`Dependency`,
    /// `NonZeroExitCode`, …), if any.
    pub reason: Option<String>,
    /// How it ended, when known (from scontrol or sacct).
    pub exit: Option<ExitCode>,
}

/// `squeue` output format: array job id, task index, own job id, state,
/// reason. Separated by `|`, which none of them contains; the reason,
/// last, is free text.
const FORMAT: &str = "%F|%K|%A|%T|%r";

impl Slurm {
    /// Every task of `job` the controller still knows, one line per task
    /// (`-r`), finished ones included (`-t all`). A job the controller no
    /// longer knows has none.
    pub fn queue(&self, job: JobId) -> Result<Vec<TaskStatus>, SlurmError> {
        let a = args([
            "-h",
            "-r",
            "-t",
            "all",
            "-j",
            &job.to_string(),
            "-o",
            FORMAT,
        ]);
        match self.run("squeue", &a) {
            Ok(ran) => parse_squeue(&ran.stdout, job).map_err(|problem| SlurmError::Output {
                command: ran.command,
                output: ran.stdout.clone(),
                problem,
            }),
            Err(r) if r.stderr.contains("Invalid job id") => Ok(Vec::new()),
            Err(r) => Err(r.error),
        }
    }
}

/// Parses `squeue -o FORMAT` lines of array `job` (lines of other jobs are
/// ignored: squeue never prints them, but a wrong line must not pass).
pub(super) fn parse_squeue(out: &str, job: JobId) -> Result<Vec<TaskStatus>, String> {
    let mut tasks = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.splitn(5, '|').collect();
        let [array, task, own, state, reason] = f[..] else {
            return Err(format!("expected 5 fields separated by `|` in `{line}`"));
        };
        let array: u64 = array
            .trim()
            .parse()
            .map_err(|_| format!("`{array}` is not a job id in `{line}`"))?;
        if array != job.0 {
            continue;
        }
        let task = match task.trim() {
            "N/A" => None,
            t => Some(
                t.parse()
                    .map_err(|_| format!("`{t}` is not one array task index in `{line}`"))?,
            ),
        };
        let state = TaskState::parse(state);
        let own = own
            .trim()
            .parse()
            .map_err(|_| format!("`{own}` is not a job id in `{line}`"))?;
        tasks.push(TaskStatus {
            task,
            // A pending task has no job of its own yet (squeue shows the array's).
            job: (!state.is_pending()).then_some(JobId(own)),
            reason: reason_of(reason),
            state,
            exit: None,
        });
    }
    Ok(tasks)
}

/// A reason, unless Slurm says there is none.
pub(super) fn reason_of(s: &str) -> Option<String> {
    match s.trim() {
        "" | "None" | "(null)" => None,
        r => Some(r.to_string()),
    }
}
