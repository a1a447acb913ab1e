//! `cpia check`: validate recipes without building.

use std::path::PathBuf;

use crate::plan::Planner;
use crate::recipe::load_recipe;

use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipe files to check; default: every recipe of the workspace.
    recipes: Vec<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let mut errors = 0usize;
    let mut checked = 0usize;
    if args.recipes.is_empty() {
        let ws = ctx.workspace()?;
        let mut planner = Planner::new();
        planner.refresh_recipes(&ws);
        for path in planner.recipe_paths(&ws) {
            checked += 1;
            match planner.recipe(&path) {
                Some(Ok(r)) => outln!("ok: {} ({})", ws.display(&path), r.collection.name),
                Some(Err(d)) => {
                    errors += d.0.len();
                    eprintln!("{d}");
                }
                None => {}
            }
        }
        for p in planner.duplicates(&ws).1 {
            errors += 1;
            eprintln!("error: {}: {}", p.input, p.error);
        }
    } else {
        for path in &args.recipes {
            checked += 1;
            let mut read = |p: &std::path::Path| {
                crate::regular_file::read_to_string(p, crate::plan::RECIPE_READ_LIMIT)
            };
            match load_recipe(path, &mut read) {
                Ok(r) => outln!("ok: {} ({})", path.display(), r.collection.name),
                Err(d) => {
                    errors += d.0.len();
                    eprintln!("{d}");
                }
            }
        }
    }
    if errors > 0 {
        eprintln!("{errors} error(s) in {checked} recipe(s)");
        Ok(EXIT_FAILURES)
    } else {
        Ok(0)
    }
}
