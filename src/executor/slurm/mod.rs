//! Typed wrappers over Slurm's command-line tools.
//!
//! - [`Slurm::submit`]: `sbatch --parsable` of a job or a job array
//!   ([`JobSpec`]), with the site options of
//!   [`SlurmConfig`](crate::workspace::slurm::SlurmConfig).
//! - [`Slurm::queue`]: per-task states from `squeue` (fast, from the
//!   controller's memory; a finished job stays there `MinJobAge`, 300 s by
//!   default).
//! - [`Slurm::status`]: the whole picture of an array, once per report:
//!   `squeue`, exit codes of failed tasks from `scontrol`, and tasks that
//!   already left the controller from `sacct` when accounting is enabled.
//! - [`Slurm::cancel`]: `scancel` of an array or of one task.
//! - [`LogPattern`]: where a task's log is (`%A`, `%a`, … resolved as Slurm does).
//!
//! Every failure names the command line, its exit status and its stderr; a
//! missing tool says so and where it was looked for.

mod accounting;
mod cancel;
mod command;
mod control;
mod logs;
mod queue;
mod state;
mod status;
mod submit;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use command::SlurmError;
pub use logs::{LogIds, LogPattern};
pub use queue::TaskStatus;
pub use state::{ExitCode, TaskState};
pub use status::{ArrayStatus, Counts};
pub use submit::{sbatch_args, JobSpec};

/// A Slurm job id (of a whole array, or of one task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where Slurm's tools are run from.
#[derive(Clone, Debug, Default)]
pub struct Slurm {
    /// A folder holding `sbatch`, `squeue`, …; `None`: found on `PATH`.
    bin_dir: Option<PathBuf>,
}

impl Slurm {
    /// The tools found on `PATH` (Slurm reads `SLURM_CONF` and the other
    /// environment variables of this process as usual).
    pub fn from_path() -> Slurm {
        Slurm { bin_dir: None }
    }

    /// The tools in `dir` (a site installation outside `PATH`).
    pub fn in_dir(dir: &Path) -> Slurm {
        Slurm {
            bin_dir: Some(dir.to_path_buf()),
        }
    }
}
