//! `cpia watch`: a long-running planner. It keeps the salsa database of
//! recipes alive, so after a recipe edit only that recipe (and recipes
//! extending an edited template) is parsed again; every cycle is then an
//! ordinary build, whose early cutoff reads no unchanged source and no
//! output record. What it holds across cycles is the recipes, never sources
//! or outputs.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::engine::driver::Flags;
use crate::engine::Options;
use crate::plan::{Planner, Selection};

use super::{CmdResult, Context};

/// Arguments of `cpia watch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipes to watch (file names, stems or collection names); default: all.
    recipes: Vec<String>,
    /// Parallel jobs.
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Allow removing more than half of a collection's outputs.
    #[arg(long)]
    allow_mass_removal: bool,
    /// Memory the jobs in flight may use, e.g. 16G (as for `build`).
    #[arg(long, value_name = "SIZE", value_parser = crate::workspace::parse_size)]
    max_memory: Option<u64>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let opts = Options {
        jobs: super::jobs(args.jobs, &ws),
        fail_fast: false,
        progress: false,
        memory: crate::engine::budget::Limit::resolve(args.max_memory, &ws),
    };
    let selection = Selection {
        recipes: args.recipes.clone(),
    };
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)?;
    let recipes_dir = ws.recipes_dir();
    watcher.watch(&recipes_dir, RecursiveMode::Recursive)?;
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut planner = Planner::new();
    planner.refresh_recipes(&ws);
    let flags = Flags {
        allow_mass_removal: args.allow_mass_removal,
        ..Flags::default()
    };
    loop {
        for root in ws.sources.values() {
            if !watched.contains(root)
                && root.is_dir()
                && watcher.watch(root, RecursiveMode::Recursive).is_ok()
            {
                watched.insert(root.clone());
            }
        }
        let hashed = crate::plan::sources::hashed_count();
        {
            let _lock = super::lock_workspace(&ws, true)?;
            let mut state = super::state::for_writing(&ws)?;
            let req = super::build_request(&ws, &planner, &selection, flags);
            super::build::execute(&req, &mut state, &opts, false)?;
        }
        if crate::engine::interrupt::requested() {
            return Ok(super::EXIT_FAILURES);
        }
        super::debug_counters(hashed);
        eprintln!(
            "watching {} for changes (Ctrl-C to stop)",
            ws.root.display()
        );

        wait_for_change(&rx, &ws, &recipes_dir, &mut planner)?;
    }
}

/// Blocks until a recipe's text or a source file changed. Events that change
/// nothing we read (file reads, writes into the output or cache folders, a
/// recipe saved unchanged) do not start a cycle.
fn wait_for_change(
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    ws: &crate::workspace::Workspace,
    recipes_dir: &std::path::Path,
    planner: &mut Planner,
) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        collect(rx.recv()?, &mut paths);
        // Let a burst of events settle.
        while let Ok(ev) = rx.recv_timeout(Duration::from_millis(300)) {
            collect(ev, &mut paths);
        }
        paths.retain(|p| !p.starts_with(&ws.output) && !p.starts_with(&ws.cache));
        let (recipe_paths, source_paths): (Vec<PathBuf>, Vec<PathBuf>) =
            paths.into_iter().partition(|p| p.starts_with(recipes_dir));
        let mut changed = false;
        if !recipe_paths.is_empty() {
            for path in planner.refresh_recipes(ws) {
                eprintln!("changed: {}", ws.display(&path));
                changed = true;
            }
        }
        for p in &source_paths {
            eprintln!("changed: {}", p.display());
            changed = true;
        }
        if changed {
            return Ok(());
        }
    }
}

fn collect(ev: notify::Result<notify::Event>, paths: &mut BTreeSet<PathBuf>) {
    match ev {
        Ok(ev) => {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if std::env::var_os("CPIA_DEBUG_WATCH").is_some() {
                eprintln!("debug: event {:?} {:?}", ev.kind, ev.paths);
            }
            paths.extend(ev.paths);
        }
        Err(e) => eprintln!("warning: file watching: {e}"),
    }
}
