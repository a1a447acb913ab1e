//! What a build says while it runs, as values: the library never prints;
//! `cli` hands the engine a sink ([`Notes`]) and renders each note, as it
//! comes, on stderr. Results are not notes: they go into the
//! [`Summary`](super::Summary) a build returns.

use std::fmt;
use std::path::PathBuf;

/// One thing worth telling the user now, not at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// Part of a collection's source listing could not be read (a folder, a
    /// file's metadata, a name that is not UTF-8); the rest was planned.
    SourceListing { collection: String, problem: String },
    /// A Slurm build's job array was submitted.
    Submitted {
        job: u64,
        tasks: u32,
        plan: String,
        logs: PathBuf,
    },
    /// The merge job of a Slurm build that is not waited for was submitted.
    MergeJobSubmitted { job: u64 },
    /// The merge job could not be submitted: the next invocation merges.
    MergeJobNotSubmitted { error: String },
    /// The tasks of a waited-for array, by state, and what was merged so far.
    Progress {
        job: u64,
        pending: u32,
        running: u32,
        done: u32,
        failed: u32,
        recorded: u64,
    },
    /// The first Ctrl-C while waiting: the array and its merge job are cancelled.
    Cancelling { job: u64 },
    /// An earlier Slurm build still runs, and is waited for first.
    EarlierStillRunning { job: u64, plan: String },
    /// A registered plan whose coordinator stopped before `sbatch` answered.
    NeverSubmitted { plan: String },
    /// `--attach` with no Slurm build waiting to be merged.
    NothingToAttach,
    /// The merge job found its plan merged by someone else.
    AlreadyMerged { plan: String },
    /// An array task starts (the first line of its log).
    TaskStarted {
        plan: String,
        shard: u32,
        tasks: u32,
        jobs: usize,
        journal: PathBuf,
    },
}

/// Where a build's notes go (`cli`: one line each on stderr).
pub type Notes<'a> = &'a dyn Fn(Note);

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::SourceListing {
                collection,
                problem,
            } => write!(f, "warning: {collection}: {problem}"),
            Note::Submitted {
                job,
                tasks,
                plan,
                logs,
            } => write!(
                f,
                "slurm: submitted job {job} ({tasks} tasks, plan {plan}); logs in {}",
                logs.display()
            ),
            Note::MergeJobSubmitted { job } => {
                write!(f, "slurm: merge job {job} runs when every task has succeeded")
            }
            Note::MergeJobNotSubmitted { error } => write!(
                f,
                "warning: submitting the merge job: {error}\n  the next `cpia build` (or `cpia build --executor slurm --attach`) merges the results"
            ),
            Note::Progress {
                job,
                pending,
                running,
                done,
                failed,
                recorded,
            } => write!(
                f,
                "slurm: job {job}: {pending} pending, {running} running, {done} done, {failed} failed; {recorded} outputs recorded"
            ),
            Note::Cancelling { job } => {
                write!(f, "slurm: cancelling job {job} (Ctrl-C again stops waiting) ...")
            }
            Note::EarlierStillRunning { job, plan } => write!(
                f,
                "slurm: job {job} of an earlier build (plan {plan}) is still running; waiting for it"
            ),
            Note::NeverSubmitted { plan } => write!(
                f,
                "note: plan {plan} was never submitted (its coordinator stopped before sbatch answered); its work is planned again"
            ),
            Note::NothingToAttach => {
                f.write_str("slurm: no Slurm build of this workspace is waiting to be merged")
            }
            Note::AlreadyMerged { plan } => write!(f, "plan {plan} is merged already"),
            Note::TaskStarted {
                plan,
                shard,
                tasks,
                jobs,
                journal,
            } => write!(
                f,
                "cpia worker: plan {plan}, shard {shard} of {tasks}, -j {jobs}, journal {}",
                journal.display()
            ),
        }
    }
}
