//! Command-line parsing and dispatch: one file per command; printing and
//! exit codes live here, nothing else does.

#[macro_use]
mod out;

mod build;
mod check;
mod demo;
mod export;
mod init;
mod lineage;
mod list;
mod log;
mod new;
mod output_file;
mod plan;
mod query;
mod report;
mod state;
mod status;
mod verify;
mod watch;
mod why;
mod worker;
mod workspace_files;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

/// Exit code of a build or check that ran but had failures.
pub const EXIT_FAILURES: i32 = 1;
/// Exit code of a command that could not run (bad usage, no workspace, lock).
pub const EXIT_ERROR: i32 = 2;

/// cpia: build a standardized, multi-scale pathology dataset from recipes.
#[derive(Parser, Debug)]
#[command(name = "cpia", version, about, long_about = None)]
pub struct Cli {
    /// Use the workspace in DIR instead of searching upwards from the current folder.
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Override a source root: NAME=PATH (repeatable; beats CPIA_SOURCE_<NAME> and cpia.toml).
    #[arg(long = "source", global = true, value_name = "NAME=PATH")]
    sources: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build every output that is out of date, remove the ones nothing produces.
    Build(build::Args),
    /// Show what `build` would do (a dry run), and with --explain why.
    Plan(plan::Args),
    /// Validate recipes and print their errors with file:line:column.
    Check(check::Args),
    /// Write a new workspace: cpia.toml and recipes/ (the CPIA catalog, or empty).
    Init(init::Args),
    /// List the collections: kind, sub-datasets and scales, organs, source, images built.
    List(list::Args),
    /// Summarize the dataset: sources, built, failures, images per published sheet.
    Status(status::Args),
    /// Write the dataset report (HTML, Markdown or JSON): built beside published, QC, samples.
    Report(report::Args),
    /// Write a commented starting recipe.
    New(new::Args),
    /// Write a self-contained demo workspace and build it.
    Demo(demo::Args),
    /// Keep planning and building as recipes and sources change.
    Watch(watch::Args),
    /// Bring training-ready exports (WebDataset, ImageFolder) up to date, or make one.
    Export(export::Args),
    /// Show how an output was made: source, recipe, steps, tool, build, region.
    Why(why::Args),
    /// Compare the output folder with the record (exit 1 on any mismatch).
    Verify(verify::Args),
    /// Every build: when, which recipes, counts, failures; archived recipe texts.
    Log(log::Args),
    /// List outputs by source, recipe hash, MPP source or build; failed inputs.
    Query(query::Args),
    /// Export the lineage of the dataset as W3C PROV-JSON.
    Lineage(lineage::Args),
    /// One task of a Slurm build, or its merge job (submitted by `build --executor slurm`).
    #[command(hide = true)]
    Worker(worker::Args),
    /// Project tooling: `cpia fixture svs --out PATH --cells WxH [--mag 20|40] [--seed N]`
    /// writes a large Aperio-style test slide from real tissue.
    #[command(hide = true)]
    Fixture {
        /// `svs` and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    crate::engine::interrupt::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    let ctx = Context {
        workspace: cli.workspace,
        sources: cli.sources,
    };
    let result = match cli.command {
        Command::Build(a) => build::run(&ctx, a),
        Command::Plan(a) => plan::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Init(a) => init::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Report(a) => report::run(&ctx, a),
        Command::New(a) => new::run(&ctx, a),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Watch(a) => watch::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Why(a) => why::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Log(a) => log::run(&ctx, a),
        Command::Query(a) => query::run(&ctx, a),
        Command::Lineage(a) => lineage::run(&ctx, a),
        Command::Worker(a) => worker::run(&ctx, a),
        Command::Fixture { args } => match args.split_first() {
            Some((kind, rest)) if kind == "svs" => crate::fixture::main_like(rest)
                .map(|summary| {
                    eprintln!("{summary}");
                    0
                })
                .map_err(|e| e.to_string().into()),
            _ => Err(
                "usage: cpia fixture svs --out PATH --cells WxH [--mag 20|40] [--seed N]".into(),
            ),
        },
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    };
    let code = out::finish(code);
    if crate::engine::interrupt::requested() {
        eprintln!(
            "interrupted: what was built before Ctrl-C is in place and recorded (counted above); \
             run `cpia build` again to continue"
        );
        return crate::engine::interrupt::EXIT_INTERRUPTED;
    }
    code
}

/// What clap says about the command line: help and version on stdout
/// (through [`out`], so a closed or full stdout cannot panic), usage errors
/// on stderr; clap's exit code.
fn usage(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        out!("{}", e.render());
        return out::finish(0);
    }
    let _ = e.print();
    e.exit_code()
}

/// The threads for `-j requested` (default: `jobs` of cpia.toml), capped
/// at a few per core ([`crate::threads`]); says so when it lowers them.
fn jobs(requested: Option<usize>, ws: &Workspace) -> usize {
    let (n, note) = crate::threads::resolve(requested.unwrap_or(ws.jobs));
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    n
}

/// Options shared by every command.
pub struct Context {
    workspace: Option<PathBuf>,
    sources: Vec<String>,
}

/// The error type of commands: a message for the user.
pub type CmdResult = Result<i32, Box<dyn std::error::Error>>;

impl Context {
    /// Finds the workspace, applies source overrides and checks its layout
    /// (output, cache and source folders apart).
    fn workspace(&self) -> Result<Workspace, Box<dyn std::error::Error>> {
        let ws = self.find_workspace()?;
        ws.check_layout()?;
        Ok(ws)
    }

    /// Finds the workspace and applies source overrides, nothing more (for
    /// commands that only write recipes).
    fn find_workspace(&self) -> Result<Workspace, Box<dyn std::error::Error>> {
        let cwd = std::env::current_dir()?;
        let mut ws = Workspace::discover(self.workspace.as_deref(), &cwd)?;
        ws.apply_overrides(&self.sources)?;
        Ok(ws)
    }
}

/// `list` and `status`: the workspace's report (recipes and state only),
/// printed as one JSON object on stdout (the command's `view` of it) or as
/// `text`; the recipes that could not be used also go to stderr with
/// `--json`, and make the exit code 1.
fn print_report(
    ctx: &Context,
    json: bool,
    view: impl FnOnce(&crate::report::model::Report) -> serde_json::Result<String>,
    text: impl FnOnce(&crate::report::model::Report) -> String,
) -> CmdResult {
    let ws = ctx.workspace()?;
    state::check_read_only(&ws)?;
    let report = crate::report::of_workspace(&ws, crate::report::Detail::default())?;
    if json {
        outln!("{}", view(&report)?);
        for p in &report.problems {
            eprintln!("error: {}: {}", p.recipe, p.error);
        }
    } else {
        out!("{}", text(&report));
    }
    Ok(if report.problems.is_empty() {
        0
    } else {
        EXIT_FAILURES
    })
}

/// What `list --json` and `status --json` both say of a collection, first
/// in each of their collection objects: one mapping, so the two agree.
#[derive(serde::Serialize)]
struct CollectionJson<'a> {
    name: &'a str,
    /// `roi` or `wsi`.
    kind: &'a str,
    source_available: bool,
}

impl<'a> CollectionJson<'a> {
    fn of(c: &'a crate::report::model::CollectionReport) -> Self {
        CollectionJson {
            name: &c.name,
            kind: &c.kind,
            source_available: c.source.available,
        }
    }
}

/// What a command asks a build (or a dry run) for; the engine's notes are
/// printed as they come.
fn build_request<'a>(
    ws: &'a Workspace,
    planner: &'a crate::plan::Planner,
    selection: &'a crate::plan::Selection,
    flags: crate::engine::driver::Flags,
) -> crate::engine::driver::Request<'a> {
    crate::engine::driver::Request {
        ws,
        planner,
        selection,
        flags,
        notes: &print_note,
    }
}

/// The engine's notes, rendered as they come: one line each on stderr.
fn print_note(note: crate::engine::Note) {
    eprintln!("{note}");
}

/// Takes the workspace lock for a command that writes; while another process
/// holds it and `wait` is set, says whom it waits for.
fn lock_workspace(ws: &Workspace, wait: bool) -> std::io::Result<crate::workspace::WorkspaceLock> {
    ws.lock(wait, |who| {
        eprintln!("waiting for the workspace lock held by {who} ...")
    })
}

/// Prints debug counters when `CPIA_DEBUG_COUNTERS` is set (used by tests to
/// prove, for example, that unchanged sources are not re-hashed).
fn debug_counters(hashed_before: u64) {
    if std::env::var_os("CPIA_DEBUG_COUNTERS").is_some() {
        let (opened, regions) = crate::slide::counters();
        eprintln!("debug: slides_opened={opened} regions_read={regions}");
        eprintln!(
            "debug: level0_pixels_read={}",
            crate::slide::level0_pixels_read()
        );
        let (dirs, outputs) = crate::plan::outdirs::counters();
        eprintln!("debug: output_dirs_verified={dirs} output_records_checked={outputs}");
        let (dirs, outputs) = crate::plan::outdirs::reverified();
        eprintln!("debug: output_dirs_reverified={dirs} output_records_rechecked={outputs}");
        eprintln!(
            "debug: source_folders_read={}",
            crate::plan::inputs::folders_read()
        );
        eprintln!(
            "debug: racy_sources_rehashed={}",
            crate::plan::inputs::racy_rehashed()
        );
        eprintln!(
            "debug: hashed_sources={}",
            crate::plan::sources::hashed_count() - hashed_before
        );
    }
}
