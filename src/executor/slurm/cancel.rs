//! `scancel`.

use super::command::args;
use super::{JobId, Slurm, SlurmError};

impl Slurm {
    /// Cancels every task of `job` (or the job). Tasks that already ended
    /// keep their state; cancelling a finished job is not an error.
    pub fn cancel(&self, job: JobId) -> Result<(), SlurmError> {
        self.scancel(job.to_string())
    }

    /// Cancels task `task` of array `job` alone.
    pub fn cancel_task(&self, job: JobId, task: u32) -> Result<(), SlurmError> {
        self.scancel(format!("{job}_{task}"))
    }

    fn scancel(&self, id: String) -> Result<(), SlurmError> {
        match self.run("scancel", &args([id])) {
            Ok(_) => Ok(()),
            Err(r) if r.stderr.contains("already completing or completed") => Ok(()),
            Err(r) => Err(r.error),
        }
    }
}
