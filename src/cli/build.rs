//! `cpia build`.

use crate::engine::{self, Options};
use crate::plan::{Plan, Planner, Rescan, Selection};
use crate::store::State;
use crate::workspace::Workspace;

use super::{CmdResult, Context, EXIT_ERROR, EXIT_FAILURES};

/// Arguments of `cpia build`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipes to build (file names, stems or collection names); default: all.
    recipes: Vec<String>,
    /// Parallel jobs (default: `jobs` in cpia.toml, else the number of cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Keep going after a failed input (the default; kept for make users).
    #[arg(short = 'k', long, conflicts_with = "fail_fast")]
    keep_going: bool,
    /// Stop starting new work after the first failed input.
    #[arg(long)]
    fail_fast: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Allow removing more than half of a collection's outputs.
    #[arg(long)]
    allow_mass_removal: bool,
    /// Exit at once if another process holds the workspace lock.
    #[arg(long)]
    no_wait: bool,
    /// Memory the jobs in flight may use, e.g. 16G (default: max_memory in cpia.toml, else 3/4 of the available memory).
    #[arg(long, value_name = "SIZE", value_parser = crate::workspace::parse_size)]
    max_memory: Option<u64>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let _lock = ws.lock(!args.no_wait)?;
    let mut state = State::open(&ws.state_path())?;
    let hashed = crate::plan::sources::hashed_count();
    let mut planner = Planner::new();
    planner.refresh_recipes(&ws);
    let selection = Selection {
        recipes: args.recipes.clone(),
    };
    let plan = planner.plan(&ws, &mut state, &selection, &Rescan::All)?;
    let code = execute(
        &ws,
        &mut state,
        &plan,
        &args_to_options(&ws, &args),
        args.json,
        args.allow_mass_removal,
    )?;
    super::debug_counters(hashed);
    Ok(code)
}

fn args_to_options(ws: &Workspace, args: &Args) -> Options {
    let _ = args.keep_going;
    Options {
        jobs: args.jobs.unwrap_or(ws.jobs).max(1),
        fail_fast: args.fail_fast,
        progress: !args.json,
        memory: engine::budget::Limit::resolve(args.max_memory, ws),
    }
}

/// Runs a plan and prints its summary; shared with `watch`.
pub fn execute(
    ws: &Workspace,
    state: &mut State,
    plan: &Plan,
    opts: &Options,
    json: bool,
    allow_mass_removal: bool,
) -> CmdResult {
    if !plan.mass_removals.is_empty() && !allow_mass_removal {
        eprintln!("error: refusing to build: it would remove more than half of the outputs of:");
        for m in &plan.mass_removals {
            eprintln!(
                "  {}: {} of {} recorded outputs",
                m.collection, m.removing, m.recorded
            );
        }
        eprintln!("  (a moved or unmounted source folder looks like this; check with `cpia plan --explain`,");
        eprintln!("   then pass --allow-mass-removal if the removal is intended)");
        return Ok(EXIT_ERROR);
    }
    let argv: Vec<String> = std::env::args().collect();
    let id = state.begin_build(&argv.join(" "), engine::TOOL_VERSION)?;
    let summary = engine::run(plan, ws, state, opts)?;
    state.finish_build(
        id,
        [
            summary.built,
            summary.up_to_date,
            summary.removed,
            summary.failed,
        ],
    )?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!("{}", summary.render());
        if summary.built > 0 || summary.removed > 0 {
            eprintln!("dataset: {}", ws.output.display());
        }
    }
    Ok(if summary.ok() { 0 } else { EXIT_FAILURES })
}
