//! Running one Slurm tool and turning its failures into messages.

use std::ffi::{OsStr, OsString};
use std::io;
use std::process::{Command, ExitStatus, Stdio};

use super::Slurm;

/// A Slurm tool that could not be run, failed, or said something we do
/// not understand. Each names the command.
#[derive(Debug)]
pub enum SlurmError {
    /// The program does not exist.
    Missing {
        tool: &'static str,
        /// Where it was looked for.
        searched: String,
    },
    /// The program exists but could not be started.
    Spawn {
        tool: &'static str,
        error: io::Error,
    },
    /// It ran and failed.
    Failed {
        /// The command line, for the message.
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// What was asked of it cannot be expressed (a [`JobSpec`](super::JobSpec)
    /// without a command, …).
    Invalid(String),
    /// It succeeded but its output is not what its options promise.
    Output {
        command: String,
        output: String,
        problem: String,
    },
}

impl std::fmt::Display for SlurmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlurmError::Missing { tool, searched } => write!(
                f,
                "{tool} not found ({searched}): run this on a machine with the Slurm client tools (a login node)"
            ),
            SlurmError::Spawn { tool, error } => write!(f, "could not run {tool}: {error}"),
            SlurmError::Invalid(m) => write!(f, "cannot submit: {m}"),
            SlurmError::Failed {
                command,
                status,
                stderr,
            } => {
                write!(f, "`{command}` failed ({status})")?;
                match stderr.trim() {
                    "" => Ok(()),
                    s => write!(f, ": {s}"),
                }
            }
            SlurmError::Output {
                command,
                output,
                problem,
            } => write!(f, "`{command}`: {problem}; it printed `{}`", output.trim()),
        }
    }
}
impl std::error::Error for SlurmError {}

/// What a tool printed, when it exited with success.
pub(super) struct Ran {
    pub command: String,
    pub stdout: String,
}

/// A tool's failure, kept for callers that recognise some of them.
pub(super) struct Refused {
    pub stderr: String,
    pub error: SlurmError,
}

impl Slurm {
    /// Runs `tool ARGS` and returns its stdout, or why it failed.
    pub(super) fn run(&self, tool: &'static str, args: &[OsString]) -> Result<Ran, Refused> {
        let program: OsString = match &self.bin_dir {
            Some(d) => d.join(tool).into(),
            None => tool.into(),
        };
        let command = command_line(tool, args);
        let out = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                let error = if error.kind() == io::ErrorKind::NotFound {
                    SlurmError::Missing {
                        tool,
                        searched: match &self.bin_dir {
                            Some(d) => format!("looked in {}", d.display()),
                            None => "not on PATH".to_string(),
                        },
                    }
                } else {
                    SlurmError::Spawn { tool, error }
                };
                Refused {
                    stderr: String::new(),
                    error,
                }
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(Refused {
                error: SlurmError::Failed {
                    command,
                    status: out.status,
                    stderr: stderr.clone(),
                },
                stderr,
            });
        }
        Ok(Ran {
            command,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    /// [`run`](Slurm::run), any failure being an error.
    pub(super) fn run_ok(&self, tool: &'static str, args: &[OsString]) -> Result<Ran, SlurmError> {
        self.run(tool, args).map_err(|r| r.error)
    }
}

/// `tool arg…` for messages (arguments with spaces quoted; long ones cut).
fn command_line(tool: &str, args: &[OsString]) -> String {
    let mut s = tool.to_string();
    for a in args {
        let a = a.to_string_lossy();
        let a = if a.chars().count() > 80 {
            format!("{}…", a.chars().take(80).collect::<String>())
        } else {
            a.into_owned()
        };
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Arguments from strings.
pub(super) fn args<S: AsRef<OsStr>>(items: impl IntoIterator<Item = S>) -> Vec<OsString> {
    items
        .into_iter()
        .map(|s| s.as_ref().to_os_string())
        .collect()
}
