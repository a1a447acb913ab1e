//! `cpia build`, on this machine or as Slurm job arrays (`--executor slurm`).

use crate::engine::cluster::finish::{self, Settled};
use crate::engine::cluster::submit::{self, Cluster};
use crate::engine::driver::{self, Flags, MassRemoval, Outcome, Request};
use crate::engine::{Options, Summary};
use crate::plan::{Planner, Selection};
use crate::store::submitted::Submitted;
use crate::store::State;
use crate::workspace::Workspace;

use super::{CmdResult, Context, EXIT_ERROR, EXIT_FAILURES};

/// Where the jobs of a build run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// This machine.
    Local,
    /// Slurm job arrays on a shared filesystem (docs/cluster.md).
    Slurm,
}

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
    /// Where the jobs run: this machine, or Slurm job arrays.
    #[arg(long, value_enum, default_value = "local")]
    executor: Executor,
    /// Slurm: array tasks (default: `shards` in [executor.slurm], else 16).
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
    /// Slurm: the partition (default: `partition` in [executor.slurm]).
    #[arg(long, value_name = "P")]
    partition: Option<String>,
    /// Slurm: one more sbatch option, its value attached
    /// (`--sbatch-arg=--qos=long`); repeatable.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// Slurm: wait for the array (showing progress) and merge its results;
    /// without it a merge job does, once every task succeeded.
    #[arg(long)]
    wait: bool,
    /// Slurm: wait for the Slurm build already submitted and merge it;
    /// plan nothing new.
    #[arg(long, conflicts_with = "recipes")]
    attach: bool,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let slurm_only = args.shards.is_some()
        || args.partition.is_some()
        || !args.sbatch_args.is_empty()
        || args.wait
        || args.attach;
    if args.executor == Executor::Local && slurm_only {
        return Err(
            "--shards, --partition, --sbatch-arg, --wait and --attach go with --executor slurm"
                .into(),
        );
    }
    let ws = ctx.workspace()?;
    let _lock = super::lock_workspace(&ws, !args.no_wait)?;
    let mut state = super::state::for_writing(&ws)?;
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
    let code = match args.executor {
        Executor::Local => {
            let req = super::build_request(&ws, &planner, &selection, flags);
            execute(&req, &mut state, &args_to_options(&ws, &args), args.json)?
        }
        Executor::Slurm => execute_slurm(&ws, &mut state, &planner, &selection, flags, &args)?,
    };
    super::debug_counters(hashed);
    Ok(code)
}

/// A Slurm build: the settings of cpia.toml with the command line's
/// overrides.
fn execute_slurm(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    flags: Flags,
    args: &Args,
) -> CmdResult {
    let mut config = ws.slurm.clone();
    if let Some(n) = args.shards {
        config.shards = n;
    }
    if let Some(p) = &args.partition {
        config.partition = Some(p.clone());
    }
    config.sbatch_args.extend(args.sbatch_args.iter().cloned());
    config.validate()?;
    let jobs = super::jobs(args.jobs, ws);
    if args.attach {
        let mut summary = submit::attach(ws, state, args.json, &super::print_note)?;
        let exports = exports_if_merged(ws, state, jobs, &mut summary)?;
        return report_with(ws, &summary, args.json, &exports);
    }
    let cluster = Cluster {
        config,
        wait: args.wait,
        quiet: args.json,
        fail_fast: args.fail_fast,
    };
    let req = super::build_request(ws, planner, selection, flags);
    match submit::build(&req, state, &cluster)? {
        submit::Outcome::Refused(mass) => Ok(refuse(&mass)),
        submit::Outcome::Busy(subs, summary) => {
            still_running(&subs, "`cpia build --executor slurm --wait` waits for it, then builds the rest; `--attach` only waits");
            report(ws, &summary, args.json)
        }
        submit::Outcome::Done(mut summary) => {
            let exports = exports_if_merged(ws, state, jobs, &mut summary)?;
            report_with(ws, &summary, args.json, &exports)
        }
    }
}

/// After a Slurm build: the declared exports brought up to date as after a
/// local build, once every Slurm build of the workspace is merged (with
/// `--wait`, `--attach`, or when there was nothing to submit); a build
/// whose merge job has yet to run leaves them to it.
fn exports_if_merged(
    ws: &Workspace,
    state: &mut State,
    jobs: usize,
    summary: &mut Summary,
) -> Result<Vec<crate::export::sync::Done>, Box<dyn std::error::Error>> {
    if !state.submitted()?.is_empty() {
        return Ok(Vec::new());
    }
    exports(ws, state, jobs, summary)
}

/// Says which Slurm builds still run.
fn still_running(subs: &[Submitted], what_to_do: &str) {
    for s in subs {
        eprintln!(
            "a Slurm build of this workspace is still running: job {} (plan {}, {} tasks)",
            s.job.map_or("?".to_string(), |j| j.to_string()),
            s.plan,
            s.tasks
        );
    }
    eprintln!("  {what_to_do}");
}

fn args_to_options(ws: &Workspace, args: &Args) -> Options {
    let _ = args.keep_going;
    Options {
        jobs: super::jobs(args.jobs, ws),
        fail_fast: args.fail_fast,
        progress: !args.json,
        memory: crate::engine::budget::Limit::resolve(args.max_memory, ws),
    }
}

/// Plans and runs a build and prints its summary; shared with `watch`.
pub fn execute(req: &Request, state: &mut State, opts: &Options, json: bool) -> CmdResult {
    let ws = req.ws;
    // A Slurm build merged late (its coordinator did not wait, or was
    // killed) is merged before anything newer is recorded; one still
    // running would write beside this build.
    let mut summary = match finish::settle(ws, state, false, json, &super::print_note)? {
        Settled::Running(subs, _) => {
            eprint!("error: ");
            still_running(
                &subs,
                "wait for it (`cpia build --executor slurm --attach`) or cancel it (`scancel JOB`), then build again",
            );
            return Ok(EXIT_ERROR);
        }
        Settled::Done(s) => s,
    };
    match driver::build(req, state, opts)? {
        Outcome::Refused(mass) => return Ok(refuse(&mass)),
        Outcome::Done(s) => summary.merge(s),
    };
    let exports = exports(ws, state, opts.jobs, &mut summary)?;
    report_with(ws, &summary, json, &exports)
}

/// Brings the declared exports up to date after the images (and removes
/// those no longer declared); their failures join the build's. Also run by
/// a Slurm build's merge job (`cpia worker --merge`) after it merged.
pub(super) fn exports(
    ws: &Workspace,
    state: &mut State,
    jobs: usize,
    summary: &mut Summary,
) -> Result<Vec<crate::export::sync::Done>, Box<dyn std::error::Error>> {
    use crate::export::sync::{self, Done};
    if crate::engine::interrupt::requested()
        || (ws.exports.is_empty() && !state.exports()?.iter().any(|e| e.declared))
    {
        return Ok(Vec::new());
    }
    let out = crate::engine::atomic::OutputDir::open(&ws.output)?;
    let opts = crate::export::update::Options {
        jobs,
        reshard: false,
    };
    let done = sync::all_declared(ws, state, &out, &opts)?;
    out.finish();
    for d in &done {
        let failures: Vec<(String, String)> = match d {
            Done::Failed(n, e) => vec![(n.clone(), e.to_string())],
            Done::Updated(o) => o
                .failures
                .iter()
                .map(|f| (o.name.clone(), f.clone()))
                .collect(),
            Done::Removed(..) => Vec::new(),
        };
        for (name, error) in failures {
            summary.failures.push(crate::engine::summary::Failure {
                input: format!("export {name}"),
                error,
            });
        }
    }
    Ok(done)
}

/// The mass-removal guard's refusal.
fn refuse(mass: &[MassRemoval]) -> i32 {
    eprintln!("error: refusing to build: it would remove more than half of the outputs of:");
    for m in mass {
        eprintln!(
            "  {}: {} of {} recorded outputs",
            m.collection, m.removing, m.recorded
        );
    }
    eprintln!(
        "  (a moved or unmounted source folder looks like this; check with `cpia plan --explain`,"
    );
    eprintln!("   then pass --allow-mass-removal if the removal is intended)");
    EXIT_ERROR
}

/// Prints the summary (`--json`: one object on stdout); the exit code.
fn report(ws: &Workspace, summary: &Summary, json: bool) -> CmdResult {
    report_with(ws, summary, json, &[])
}

/// [`report`], with what the exports did (`exports` in the JSON object).
fn report_with(
    ws: &Workspace,
    summary: &Summary,
    json: bool,
    exports: &[crate::export::sync::Done],
) -> CmdResult {
    if json {
        let mut v = serde_json::to_value(summary)?;
        if !exports.is_empty() {
            v["exports"] = serde_json::Value::Array(super::export::to_json(exports));
        }
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        super::export::print_lines(exports);
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
    // Temporaries and the manifests (derived from the state, rewritten for a
    // new one) are not outputs.
    let tmp = ws.output.join(crate::workspace::TMP_DIR);
    let manifests = ws.output.join(crate::provenance::manifest::DIR);
    let exports = ws.output.join(crate::export::DIR);
    let n = walkdir::WalkDir::new(&ws.output)
        .into_iter()
        .filter_entry(|e| e.path() != tmp && e.path() != manifests && e.path() != exports)
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
