//! `cpia check`: validate recipes without building.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::Planner;
use crate::recipe::load_recipe;

use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipe files, or folders of recipes (the `.toml` files directly in
    /// them), to check; default: every recipe of the workspace.
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
        (checked, errors) = check_paths(&args.recipes);
    }
    if errors > 0 {
        eprintln!("{errors} error(s) in {checked} recipe(s)");
        Ok(EXIT_FAILURES)
    } else {
        Ok(0)
    }
}

/// Checks the recipes `args` name: (recipes checked, errors). A folder's
/// recipes are also checked for a collection named twice, as a workspace's
/// are (files named one by one may be alternatives of one recipe).
fn check_paths(args: &[PathBuf]) -> (usize, usize) {
    let (mut checked, mut errors) = (0, 0);
    // (folder argument, collection) -> the first recipe naming it.
    let mut names: BTreeMap<(usize, String), PathBuf> = BTreeMap::new();
    for (path, folder) in recipe_files(args, &mut errors) {
        checked += 1;
        let mut read =
            |p: &Path| crate::regular_file::read_to_string(p, crate::plan::RECIPE_READ_LIMIT);
        match load_recipe(&path, &mut read) {
            Ok(r) => {
                outln!("ok: {} ({})", path.display(), r.collection.name);
                let Some(folder) = folder else { continue };
                let name = r.collection.name;
                if let Some(first) = names.get(&(folder, name.clone())) {
                    errors += 1;
                    eprintln!(
                        "error: {} and {} both name collection `{name}`; a collection has one recipe",
                        first.display(),
                        path.display(),
                    );
                } else {
                    names.insert((folder, name), path);
                }
            }
            Err(d) => {
                errors += d.0.len();
                eprintln!("{d}");
            }
        }
    }
    (checked, errors)
}

/// The recipe files `args` name, each with the index of the folder argument
/// it came from: a file as given, a folder as the `.toml` files directly in
/// it (sorted; the `templates/` beneath are what recipes extend, not
/// recipes), as `cpia check` in a workspace reads `recipes/`. A folder that
/// cannot be read or holds no recipe is an error.
fn recipe_files(args: &[PathBuf], errors: &mut usize) -> Vec<(PathBuf, Option<usize>)> {
    let mut files = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if !arg.is_dir() {
            files.push((arg.clone(), None));
            continue;
        }
        match recipes_in(arg) {
            Ok(found) if !found.is_empty() => files.extend(found.into_iter().map(|f| (f, Some(i)))),
            Ok(_) => {
                *errors += 1;
                eprintln!(
                    "error: {}: no recipe in this folder (recipes are the .toml files directly in it)",
                    arg.display()
                );
            }
            Err(e) => {
                *errors += 1;
                eprintln!("error: {}: cannot read the folder: {e}", arg.display());
            }
        }
    }
    files
}

/// The `.toml` files directly in `dir` (not hidden ones), sorted.
fn recipes_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
