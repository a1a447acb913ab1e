//! `cpia query`.

use crate::provenance::query::{self, Question, MPP_SOURCES};

use super::why::{open_state, with_stdout};
use super::{CmdResult, Context};

/// Arguments of `cpia query`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Every output made from this source file: `ROOT:PATH` (a source root
    /// name and the path in it), or a file path under a source root (repeatable).
    #[arg(long, value_name = "PATH")]
    from_source: Vec<String>,
    /// Outputs made under this recipe hash.
    #[arg(long, value_name = "H")]
    recipe_hash: Option<String>,
    /// WSI tiles and QC pictures whose MPP came from this source.
    #[arg(long, value_name = "SOURCE", value_parser = clap::builder::PossibleValuesParser::new(MPP_SOURCES))]
    mpp_source: Option<String>,
    /// Outputs written by build BUILD (an id of `cpia log`).
    #[arg(long, value_name = "BUILD")]
    built_by: Option<i64>,
    /// Inputs (and WSI cells, QC pictures) whose last attempt failed, with the error.
    #[arg(long, conflicts_with_all = ["from_source", "recipe_hash", "mpp_source", "built_by"])]
    failed: bool,
    /// Only these collections (repeatable).
    #[arg(long, value_name = "NAME")]
    collection: Vec<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let state = open_state(&ws)?;
    if args.failed {
        return with_stdout(|out| {
            query::failed(&state, &args.collection, args.json, out).map(|_| 0)
        });
    }
    let cwd = std::env::current_dir()?;
    let mut from_sources = Vec::new();
    for s in &args.from_source {
        from_sources.push(source_of(&ws, &state, &cwd, s)?);
    }
    let q = Question {
        from_sources,
        recipe_hash: args.recipe_hash.clone(),
        mpp_source: args.mpp_source.clone(),
        built_by: args.built_by,
        collections: args.collection.clone(),
    };
    with_stdout(|out| query::outputs(&state, &q, args.json, out).map(|_| 0))
}

/// `ROOT:PATH`, or a file path under one of the workspace's source roots.
fn source_of(
    ws: &crate::workspace::Workspace,
    state: &crate::store::State,
    cwd: &std::path::Path,
    s: &str,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let roots = state.source_roots()?;
    if let Some((root, rel)) = s.split_once(':') {
        if roots.iter().any(|r| r == root) {
            return Ok((root.to_string(), rel.to_string()));
        }
    }
    let abs = std::path::absolute(cwd.join(s))?;
    for root in roots {
        if let Some(dir) = ws.source_root(&root) {
            let dir = std::path::absolute(&dir)?;
            if let Ok(rel) = abs.strip_prefix(&dir) {
                let rel: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                return Ok((root, rel.join("/")));
            }
        }
    }
    Err(format!("{s}: not ROOT:PATH of a recorded source root, nor a file under one").into())
}
