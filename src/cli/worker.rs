//! `cpia worker` (hidden): one array task of a Slurm build, or its merge
//! job. Submitted by `cpia build --executor slurm`, not typed by people.

use std::path::PathBuf;

use crate::engine::cluster::{finish, worker, PlanPaths};

use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia worker`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The plan's folder (`<cache>/plans/<plan>`).
    #[arg(long, value_name = "DIR")]
    plan: PathBuf,
    /// The shard to build (default: `SLURM_ARRAY_TASK_ID`).
    #[arg(long, value_name = "I")]
    shard: Option<u32>,
    /// Merge the plan's journals into the state (the dependent merge job).
    #[arg(long, conflicts_with = "shard")]
    merge: bool,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    if args.merge {
        let paths = PlanPaths::of_dir(&ws, &args.plan)
            .ok_or_else(|| format!("{} is not a plan folder", args.plan.display()))?;
        let _lock = super::lock_workspace(&ws, true)?;
        let mut state = super::state::for_writing(&ws)?;
        let mut summary = finish::merge_job(&ws, &mut state, &paths.id, &super::print_note)?;
        // Merged: the declared exports follow, as after a local build (a
        // plan merged by someone else first leaves nothing new, and the
        // update finds nothing to write).
        let exports = if state.submitted()?.is_empty() {
            let jobs = super::jobs(None, &ws);
            super::build::exports(&ws, &mut state, jobs, &mut summary)?
        } else {
            Vec::new()
        };
        super::export::print_lines(&exports);
        eprintln!("{}", summary.render());
        return Ok(if summary.ok() { 0 } else { EXIT_FAILURES });
    }
    let shard = match args.shard {
        Some(s) => s,
        None => std::env::var("SLURM_ARRAY_TASK_ID")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or("--shard not given and SLURM_ARRAY_TASK_ID not set: not an array task")?,
    };
    let summary = worker::run(&ws, &args.plan, shard, &super::print_note)?;
    eprintln!("shard {shard}: {}", summary.render());
    Ok(0)
}
