//! Where a task's output goes: sbatch's file name patterns.

use std::path::{Path, PathBuf};

use super::JobId;

/// An `--output`/`--error` file name pattern (sbatch(1), "filename
/// pattern"): `%A` array job id, `%a` task index, `%j` the task's own job
/// id, `%x` job name, `%u` user, `%%` a `%`; a number after the `%`
/// zero-pads (`%4a`). A pattern with a backslash is used as written, minus
/// the backslashes. Relative patterns are relative to the job's
/// working folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPattern(pub String);

/// What a pattern may refer to.
#[derive(Clone, Copy, Debug)]
pub struct LogIds<'a> {
    /// The job (for an array, the array's id).
    pub array_job: JobId,
    /// The task index (`None`: not an array).
    pub task: Option<u32>,
    /// The task's own job id, once it started.
    pub job: Option<JobId>,
    pub name: &'a str,
    pub user: Option<&'a str>,
}

impl LogPattern {
    /// The file of the task `ids`, in a job started in `workdir`; `None`
    /// when the pattern needs what only the running job knows (`%N` node,
    /// `%t`, `%s`, `%n`, `%J`) or what `ids` lacks.
    pub fn resolve(&self, ids: &LogIds<'_>, workdir: &Path) -> Option<PathBuf> {
        let name = if self.0.contains('\\') {
            self.0.replace('\\', "")
        } else {
            expand(&self.0, ids)?
        };
        Some(workdir.join(name))
    }
}

fn expand(pattern: &str, ids: &LogIds<'_>) -> Option<String> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            width = (width * 10 + d as usize).min(64);
            chars.next();
        }
        let padded = |n: u64| format!("{n:0width$}");
        match chars.next()? {
            '%' => out.push('%'),
            'A' => out.push_str(&padded(ids.array_job.0)),
            'a' => out.push_str(&padded(ids.task? as u64)),
            // A job that is not an array has one id: its own.
            'j' => {
                let own = ids.job.or(ids.task.is_none().then_some(ids.array_job))?;
                out.push_str(&padded(own.0))
            }
            'x' => out.push_str(ids.name),
            'u' => out.push_str(ids.user?),
            _ => return None,
        }
    }
    Some(out)
}
