//! `cpia init`: write a new workspace — `cpia.toml` and `recipes/` with the
//! shipped templates and, with `--catalog cpia`, the 103 recipes of the CPIA
//! catalog (from [`crate::catalog`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::recipe::Kind;
use crate::workspace::CONFIG_FILE;

use super::workspace_files::{plan_writes, FileList, Files};
use super::{CmdResult, Context, EXIT_ERROR};

/// Arguments of `cpia init`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of the new workspace (created if missing).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The recipes to start with: `cpia`, the 103 collections of the CPIA dataset.
    #[arg(long, value_parser = ["cpia"], default_value = "cpia")]
    catalog: String,
    /// No recipes, only the templates and an empty [sources]: for your own collections.
    #[arg(long, conflicts_with = "catalog")]
    empty: bool,
}

/// One `[sources]` entry: a source root and what reads it.
struct Root {
    kind: Kind,
    /// (collection name, recipe file under recipes/, download page).
    readers: Vec<(String, String, Option<String>)>,
}

pub fn run(_ctx: &Context, args: Args) -> CmdResult {
    let dir = std::path::absolute(&args.dir)?;
    // (path relative to the workspace folder, bytes), cpia.toml last.
    let mut files: FileList = crate::catalog::templates()
        .map(|(rel, text)| (format!("recipes/{rel}"), text.as_bytes().to_vec()))
        .collect();
    let mut roots: BTreeMap<String, Root> = BTreeMap::new();
    if !args.empty {
        for (rel, text) in crate::catalog::recipes() {
            let r = crate::catalog::load(rel)
                .map_err(|d| format!("shipped recipe {rel} does not load:\n{d}"))?;
            roots
                .entry(r.inputs.source.clone())
                .or_insert(Root {
                    kind: r.collection.kind,
                    readers: vec![],
                })
                .readers
                .push((r.collection.name.clone(), rel.to_string(), r.collection.url));
            files.push((format!("recipes/{rel}"), text.as_bytes().to_vec()));
        }
    }
    let catalog = if args.empty {
        None
    } else {
        Some(args.catalog.as_str())
    };
    let config = config_text(catalog, &roots);
    if std::fs::symlink_metadata(dir.join(CONFIG_FILE)).is_ok() {
        eprintln!(
            "error: {} already exists: {} is a workspace; not overwriting it",
            dir.join(CONFIG_FILE).display(),
            dir.display()
        );
        return Ok(EXIT_ERROR);
    }
    files.push((CONFIG_FILE.to_string(), config.into_bytes()));
    let root = Files::open(&dir)?;
    // Files that already hold what init writes are what an interrupted init
    // left: kept, and the rest written. Anything else is the user's.
    let todo = match plan_writes(&root, &files) {
        Ok(todo) => todo,
        Err(why) => {
            eprintln!(
                "error: {why}; init writes nothing over or through what is already there (if an \
                 earlier init was interrupted, remove what it left, e.g. {}, and run it again)",
                root.at("recipes").display()
            );
            return Ok(EXIT_ERROR);
        }
    };
    // In list order, so cpia.toml comes last: a folder is a workspace only
    // once its recipes are in place.
    for (rel, bytes) in todo {
        root.write(rel, bytes)?;
    }
    let recipes = files.len() - 1 - crate::catalog::templates().count();
    outln!(
        "wrote a workspace in {}: {CONFIG_FILE} ({} source roots), recipes/ ({recipes} recipes, {} templates)",
        dir.display(),
        roots.len(),
        crate::catalog::templates().count()
    );
    if args.empty {
        outln!("next: `cpia new NAME` writes a recipe; add its source root to [sources] in {CONFIG_FILE}");
    } else {
        outln!(
            "next: put each collection's download in its folder under sources/ (or change its path in {CONFIG_FILE}),"
        );
        outln!("      then `cpia check` and `cpia build NAME...` for the collections you have");
    }
    Ok(0)
}

/// The text of `cpia.toml`: defaults, then one commented `[sources]` entry
/// per source root, region-of-interest collections first.
fn config_text(catalog: Option<&str>, roots: &BTreeMap<String, Root>) -> String {
    let how = match catalog {
        Some(c) => format!("`cpia init --catalog {c}`"),
        None => "`cpia init --empty`".to_string(),
    };
    let mut t = format!(
        "# A cpia workspace, written by {how} (cpia {}).
# `cpia build` turns the collections of recipes/ into the standardized dataset
# in `output`. Reference: docs/cli.md (this file), docs/recipes.md (recipes).

output = \"dataset\"        # the dataset: <scale>/<sub-dataset>/<name>.jpg
cache = \"cache\"           # the build state (state.sqlite) and the workspace lock
# jobs = 8                # parallel jobs; default: the number of cores

# Source roots: the folder of each downloaded collection, relative to this file
# or absolute. Override one with --source NAME=PATH or the environment variable
# CPIA_SOURCE_<NAME>. Above each root: the recipes that read it and the page the
# collection is downloaded from.
[sources]
",
        env!("CARGO_PKG_VERSION")
    );
    if roots.is_empty() {
        t.push_str("# MyCollection = \"/data/MyCollection\"\n");
    }
    for (kind, title) in [
        (Kind::Roi, "region-of-interest collections"),
        (Kind::Wsi, "whole-slide-image collections"),
    ] {
        let mut of_kind = roots.iter().filter(|(_, r)| r.kind == kind).peekable();
        if of_kind.peek().is_none() {
            continue;
        }
        t.push_str(&format!("\n# ---- {title} ----\n"));
        for (name, root) in of_kind {
            t.push('\n');
            for (collection, rel, _) in &root.readers {
                t.push_str(&format!("# {collection} (recipes/{rel})\n"));
            }
            let mut urls: Vec<&str> = root
                .readers
                .iter()
                .filter_map(|(_, _, u)| u.as_deref())
                .collect();
            urls.dedup();
            match urls.as_slice() {
                [] => t.push_str("# download: no page recorded in the recipe\n"),
                urls => {
                    for u in urls {
                        t.push_str(&format!("# download: {u}\n"));
                    }
                }
            }
            t.push_str(&format!(
                "{} = {}\n",
                toml_key(name),
                crate::recipe::skeleton::toml_string(&format!("sources/{name}"))
            ));
        }
    }
    t
}

/// `s` as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        s.to_string()
    } else {
        crate::recipe::skeleton::toml_string(s)
    }
}
