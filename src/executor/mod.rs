//! Executors: running a build's work somewhere other than this process.
//!
//! The local executor is [`crate::engine`]. [`slurm`] submits work to a
//! Slurm cluster as job arrays through Slurm's own tools (`sbatch`,
//! `squeue`, `scontrol`, `sacct`, `scancel`): Slurm does the scheduling,
//! this layer only speaks its command-line protocol, typed. Workers hand
//! their results back through [`crate::store::journal`].
//!
//! Layering: an executor sits beside the engine. It may use `store`, never
//! `plan` or `recipe`; what runs in each task is given to it as a command.

pub mod slurm;
