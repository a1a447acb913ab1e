//! `cpia build`.

use crate::engine::driver::{self, Flags, Outcome};
use crate::engine::Options;
use crate::plan::{Planner, Selection};
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
    /// Check every recorded output on disk (a `stat` each, a hash where the
    /// mtime moved), not only the output folders that changed.
    #[arg(long)]
    check_outputs: bool,
    /// A collection whose source root is not configured or not present is
    /// an error (by default it is reported as "source not available").
    #[arg(long)]
    require_sources: bool,
    /// Memory the jobs in flight may use, e.g. 16G (default: max_memory in cpia.toml, else 3/4 of the available memory).
    #[arg(long, value_name = "SIZE", value_parser = crate::workspace::parse_size)]
    max_memory: Option<u64>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let _lock = ws.lock(!args.no_wait)?;
    let mut state = State::open(&ws.state_path())?;
    warn_untracked(&ws, &state);
    let hashed = crate::plan::sources::hashed_count();
    let mut planner = Planner::new();
    planner.refresh_recipes(&ws);
    let selection = Selection {
        recipes: args.recipes.clone(),
    };
    let flags = Flags {
        check_outputs: args.check_outputs,
        allow_mass_removal: args.allow_mass_removal,
        require_sources: args.require_sources,
    };
    let code = execute(
        &ws,
        &mut state,
        &planner,
        &selection,
        &args_to_options(&ws, &args),
        flags,
        args.json,
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
        memory: crate::engine::budget::Limit::resolve(args.max_memory, ws),
    }
}

/// Plans and runs a build and prints its summary; shared with `watch`.
pub fn execute(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    opts: &Options,
    flags: Flags,
    json: bool,
) -> CmdResult {
    let summary = match driver::build(ws, state, planner, selection, opts, flags)? {
        Outcome::Refused(mass) => {
            eprintln!(
                "error: refusing to build: it would remove more than half of the outputs of:"
            );
            for m in &mass {
                eprintln!(
                    "  {}: {} of {} recorded outputs",
                    m.collection, m.removing, m.recorded
                );
            }
            eprintln!("  (a moved or unmounted source folder looks like this; check with `cpia plan --explain`,");
            eprintln!("   then pass --allow-mass-removal if the removal is intended)");
            return Ok(EXIT_ERROR);
        }
        Outcome::Done(s) => s,
    };
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

/// A fresh state over an output folder that already holds files: those
/// files are not recorded, so no build will ever replace or remove them
/// unless they are rebuilt under the same names. Say so, once.
fn warn_untracked(ws: &Workspace, state: &State) {
    if !state.is_new() || !ws.output.is_dir() {
        return;
    }
    let tmp = ws.output.join(crate::engine::atomic::TMP_DIR);
    let n = walkdir::WalkDir::new(&ws.output)
        .into_iter()
        .filter_entry(|e| e.path() != tmp)
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count();
    if n > 0 {
        eprintln!(
            "warning: the build state {} is new, but the output folder {} already holds {n} file(s) it does not record.\n  \
             Outputs this build makes again under the same names are overwritten; the others stay untracked and are never removed.\n  \
             To start clean, move the output folder away first (e.g. `mv {} {}.old`).",
            state.path().display(),
            ws.output.display(),
            ws.output.display(),
            ws.output.display()
        );
    }
}
