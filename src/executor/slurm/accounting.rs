//! States and exit codes from `sacct`, for tasks the controller forgot.

use super::command::args;
use super::queue::TaskStatus;
use super::state::{ExitCode, TaskState};
use super::{JobId, Slurm, SlurmError};

impl Slurm {
    /// Every task of `job` in the accounting database, with its state and
    /// exit code; `None` when the cluster keeps no accounting (no
    /// slurmdbd: `sacct` says so).
    pub fn accounting(&self, job: JobId) -> Result<Option<Vec<TaskStatus>>, SlurmError> {
        let a = args([
            "-n",
            "-P",
            "-X",
            "-j",
            &job.to_string(),
            "--format=JobID,JobIDRaw,State,ExitCode",
        ]);
        match self.run("sacct", &a) {
            Ok(ran) => {
                parse_sacct(&ran.stdout, job)
                    .map(Some)
                    .map_err(|problem| SlurmError::Output {
                        command: ran.command,
                        output: ran.stdout.clone(),
                        problem,
                    })
            }
            Err(r) if r.stderr.contains("accounting storage is disabled") => Ok(None),
            Err(r) => Err(r.error),
        }
    }
}

/// Parses `sacct -n -P -X --format=JobID,JobIDRaw,State,ExitCode` lines of
/// `job`. Pending array tasks are listed as one line with a range
/// (`12_[3-5,8%2]`), which is expanded.
pub(super) fn parse_sacct(out: &str, job: JobId) -> Result<Vec<TaskStatus>, String> {
    let mut tasks = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let [id, raw, state, exit] = f[..] else {
            return Err(format!("expected 4 fields separated by `|` in `{line}`"));
        };
        let (array, index) = match id.split_once('_') {
            Some((a, i)) => (a, Some(i)),
            None => (id, None),
        };
        if array.trim().parse::<u64>().ok() != Some(job.0) {
            continue;
        }
        let state = TaskState::parse(state);
        let exit = ExitCode::parse(exit);
        let own = raw.trim().parse().ok().map(JobId);
        let indices = match index {
            None => vec![None],
            Some(i) if i.starts_with('[') => expand_range(i)
                .ok_or_else(|| format!("`{i}` is not an array task range in `{line}`"))?
                .into_iter()
                .map(Some)
                .collect(),
            Some(i) => {
                vec![Some(i.parse().map_err(|_| {
                    format!("`{i}` is not an array task index in `{line}`")
                })?)]
            }
        };
        let started = !state.is_pending();
        for task in indices {
            tasks.push(TaskStatus {
                task,
                job: own.filter(|_| started),
                state: state.clone(),
                reason: None,
                exit: exit.filter(|_| state.is_finished()),
            });
        }
    }
    Ok(tasks)
}

/// `[3-5,8%2]` → 3, 4, 5, 8 (the `%` throttle dropped).
fn expand_range(s: &str) -> Option<Vec<u32>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.split('%').next()?;
    let mut out = Vec::new();
    for part in inner.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 1_000_000 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}
