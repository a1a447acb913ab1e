//! `cpia log`.

use crate::provenance::log;

use super::why::{open_state, with_stdout};
use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia log`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// One JSON object per build, one per line.
    #[arg(long)]
    json: bool,
    /// Print the archived recipe version HASH (a unique prefix will do):
    /// its files' texts as that build read them, and its canonical form.
    #[arg(long, value_name = "HASH")]
    recipe: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let state = open_state(&ws)?;
    if let Some(h) = &args.recipe {
        let Some(v) = state.recipe_version(h)? else {
            eprintln!("error: no archived recipe version {h} (or the prefix is not unique)");
            return Ok(EXIT_FAILURES);
        };
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&log::recipe_json(&v))?);
        } else {
            out!("{}", log::render_recipe(&v));
        }
        return Ok(0);
    }
    with_stdout(|out| log::write_log(&state, args.json, out).map(|_| 0))
}
