//! `sbatch`: submitting a job or a job array.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::logs::LogPattern;
use super::{JobId, Slurm, SlurmError};
use crate::workspace::slurm::SlurmConfig;

/// What to submit; the site's options come from a [`SlurmConfig`].
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// `--job-name`.
    pub name: String,
    /// `Some(n)`: an array of tasks `0..n` (`--array=0-(n-1)`); each task
    /// finds its index in `SLURM_ARRAY_TASK_ID`. `None`: one job.
    pub tasks: Option<u32>,
    /// At most this many tasks of the array run at once (`%M`).
    pub max_running: Option<u32>,
    /// The program and its arguments, run by each task (exec'd from the
    /// batch shell, so `scancel`'s signals reach it directly).
    pub command: Vec<OsString>,
    /// `--chdir`: where tasks run (on a shared filesystem, the same path on
    /// every node); relative log patterns are relative to it.
    pub workdir: PathBuf,
    /// `--output`.
    pub output: LogPattern,
    /// `--error`; `None`: stderr goes to the output file.
    pub error: Option<LogPattern>,
    /// `--dependency=afterok:ID --kill-on-invalid-dep=yes`: start only once
    /// every task of `ID` succeeded, and be cancelled if one fails (rather
    /// than pending forever).
    pub after_ok: Option<JobId>,
}

/// The complete sbatch command line for `spec` with the options of `config`
/// (the config is assumed [validated](SlurmConfig::validate)).
pub fn sbatch_args(config: &SlurmConfig, spec: &JobSpec) -> Result<Vec<OsString>, String> {
    if spec.command.is_empty() {
        return Err("no command to run".to_string());
    }
    if spec.name.is_empty() || spec.name.contains(|c: char| c.is_control()) {
        return Err(format!("`{}` is not a job name", spec.name.escape_debug()));
    }
    if spec.tasks == Some(0) || spec.max_running == Some(0) {
        return Err("an array needs at least one task".to_string());
    }
    let mut a: Vec<OsString> = vec![
        "--parsable".into(),
        format!("--job-name={}", spec.name).into(),
    ];
    if let Some(n) = spec.tasks {
        let mut array = format!("--array=0-{}", n - 1);
        if let Some(m) = spec.max_running {
            array.push_str(&format!("%{m}"));
        }
        a.push(array.into());
    }
    a.push(prefixed("--chdir=", spec.workdir.as_os_str()));
    a.push(format!("--output={}", spec.output.0).into());
    if let Some(e) = &spec.error {
        a.push(format!("--error={}", e.0).into());
    }
    let site = [
        ("--partition", &config.partition),
        ("--account", &config.account),
        ("--time", &config.time),
        ("--mem", &config.mem),
    ];
    for (flag, value) in site {
        if let Some(v) = value {
            a.push(format!("{flag}={v}").into());
        }
    }
    if let Some(c) = config.cpus_per_task {
        a.push(format!("--cpus-per-task={c}").into());
    }
    if let Some(id) = spec.after_ok {
        a.push(format!("--dependency=afterok:{id}").into());
        a.push("--kill-on-invalid-dep=yes".into());
    }
    a.extend(config.sbatch_args.iter().map(OsString::from));
    a.push(prefixed("--wrap=", &wrap(&spec.command)));
    Ok(a)
}

impl Slurm {
    /// Submits `spec` and returns its job id (for an array, the array's).
    pub fn submit(&self, config: &SlurmConfig, spec: &JobSpec) -> Result<JobId, SlurmError> {
        let args = sbatch_args(config, spec).map_err(SlurmError::Invalid)?;
        let ran = self.run_ok("sbatch", &args)?;
        parse_job_id(&ran.stdout).ok_or_else(|| SlurmError::Output {
            command: ran.command,
            output: ran.stdout.clone(),
            problem: "expected a job id (`--parsable`)".to_string(),
        })
    }
}

/// The job id in `sbatch --parsable` output: `ID` or `ID;CLUSTER`, on the
/// last line (site plugins may print before it).
pub(super) fn parse_job_id(stdout: &str) -> Option<JobId> {
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
    let id = line.trim().split(';').next()?;
    id.parse().ok().map(JobId)
}

/// `exec 'arg' 'arg' …` for `sh`: every argument single-quoted, so no byte
/// of it is interpreted.
fn wrap(command: &[OsString]) -> OsString {
    let mut s = b"exec".to_vec();
    for arg in command {
        s.extend_from_slice(b" '");
        for &b in arg.as_bytes() {
            if b == b'\'' {
                s.extend_from_slice(b"'\\''");
            } else {
                s.push(b);
            }
        }
        s.push(b'\'');
    }
    OsString::from_vec(s)
}

fn prefixed(prefix: &str, value: &OsStr) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(value);
    s
}
