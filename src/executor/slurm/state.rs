//! Job states and exit codes, as Slurm's tools print them.

/// Defines [`TaskState`] from Slurm's state names (squeue(1), "JOB STATE
/// CODES"), each with whether a task in it has finished (will not run
/// again unless someone requeues it).
macro_rules! states {
    ($($variant:ident = $name:literal, $finished:literal;)*) => {
        /// The state of a job or of one array task.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum TaskState {
            $(#[doc = $name] $variant,)*
            /// No longer known to the controller, and no accounting to ask:
            /// it finished, with an outcome only its results can tell.
            Gone,
            /// A state this version does not know (treated as not finished).
            Other(String),
        }

        impl TaskState {
            /// Parses a state as squeue, scontrol or sacct print it
            /// (`CANCELLED by 1234` is `Cancelled`).
            pub fn parse(s: &str) -> TaskState {
                match s.split_whitespace().next().unwrap_or("").trim_end_matches('+') {
                    $($name => TaskState::$variant,)*
                    other => TaskState::Other(other.to_string()),
                }
            }

            /// Slurm's name for it.
            pub fn name(&self) -> &str {
                match self {
                    $(TaskState::$variant => $name,)*
                    TaskState::Gone => "GONE",
                    TaskState::Other(s) => s,
                }
            }

            /// Whether the task has ended (successfully or not).
            pub fn is_finished(&self) -> bool {
                match self {
                    $(TaskState::$variant => $finished,)*
                    TaskState::Gone => true,
                    TaskState::Other(_) => false,
                }
            }
        }
    };
}

states! {
    Pending = "PENDING", false;
    Configuring = "CONFIGURING", false;
    Running = "RUNNING", false;
    Suspended = "SUSPENDED", false;
    Completing = "COMPLETING", false;
    Stopped = "STOPPED", false;
    Resizing = "RESIZING", false;
    Signaling = "SIGNALING", false;
    StageOut = "STAGE_OUT", false;
    Requeued = "REQUEUED", false;
    RequeueHold = "REQUEUE_HOLD", false;
    RequeueFed = "REQUEUE_FED", false;
    SpecialExit = "SPECIAL_EXIT", false;
    ResvDelHold = "RESV_DEL_HOLD", false;
    Completed = "COMPLETED", true;
    Cancelled = "CANCELLED", true;
    Failed = "FAILED", true;
    Timeout = "TIMEOUT", true;
    OutOfMemory = "OUT_OF_MEMORY", true;
    NodeFail = "NODE_FAIL", true;
    Preempted = "PREEMPTED", true;
    BootFail = "BOOT_FAIL", true;
    Deadline = "DEADLINE", true;
    Revoked = "REVOKED", true;
}

impl TaskState {
    /// Finished with exit code 0.
    pub fn is_success(&self) -> bool {
        *self == TaskState::Completed
    }

    /// Waiting to start (including held and requeued).
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            TaskState::Pending
                | TaskState::Requeued
                | TaskState::RequeueHold
                | TaskState::RequeueFed
                | TaskState::SpecialExit
                | TaskState::ResvDelHold
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a task's batch script ended: Slurm's `code:signal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCode {
    /// The exit status of the script (0-255).
    pub code: u32,
    /// The signal that killed it, or 0.
    pub signal: u32,
}

impl ExitCode {
    /// Parses `7:0` (sacct, scontrol).
    pub fn parse(s: &str) -> Option<ExitCode> {
        let (code, signal) = s.trim().split_once(':')?;
        Some(ExitCode {
            code: code.parse().ok()?,
            signal: signal.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.signal {
            0 => write!(f, "exit code {}", self.code),
            s => write!(f, "signal {s}"),
        }
    }
}
