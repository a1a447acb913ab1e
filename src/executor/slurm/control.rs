//! Exit codes from `scontrol show job`, while the controller remembers them.

use std::collections::BTreeMap;

use super::command::args;
use super::state::ExitCode;
use super::{JobId, Slurm, SlurmError};

impl Slurm {
    /// Exit codes of the tasks of `job` the controller still knows, by task
    /// index (`None`: not an array); empty when it knows none.
    pub fn exit_codes(&self, job: JobId) -> Result<BTreeMap<Option<u32>, ExitCode>, SlurmError> {
        match self.run("scontrol", &args(["-o", "show", "job", &job.to_string()])) {
            Ok(ran) => Ok(parse_exit_codes(&ran.stdout, job)),
            Err(r) if r.stderr.contains("Invalid job id") => Ok(BTreeMap::new()),
            Err(r) => Err(r.error),
        }
    }
}

/// Reads `ArrayJobId`, `ArrayTaskId` and `ExitCode` from each one-line
/// record of `scontrol -o show job`. Only those fields are read: they never
/// contain spaces, while others (paths, comments) may.
pub(super) fn parse_exit_codes(out: &str, job: JobId) -> BTreeMap<Option<u32>, ExitCode> {
    let mut codes = BTreeMap::new();
    for line in out.lines() {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let (task, array) = match field("ArrayTaskId") {
            // A range: tasks not yet started, no exit codes.
            Some(t) => match t.parse::<u32>() {
                Ok(t) => (Some(t), field("ArrayJobId")),
                Err(_) => continue,
            },
            None => (None, field("JobId")),
        };
        if array.and_then(|a| a.parse::<u64>().ok()) != Some(job.0) {
            continue;
        }
        if let Some(code) = field("ExitCode").and_then(ExitCode::parse) {
            codes.insert(task, code);
        }
    }
    codes
}
