//! `cpia lineage`.

use crate::provenance::lineage;

use super::why::{open_state, with_stdout};
use super::{CmdResult, Context};

/// Arguments of `cpia lineage`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Collections to export (default: every recorded output).
    collections: Vec<String>,
    /// Write to FILE (atomically) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// The export format.
    #[arg(long, value_parser = ["prov-json"], default_value = "prov-json")]
    format: String,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let _ = &args.format;
    let target = match &args.output {
        Some(path) => Some(super::output_file::check(path, &ws)?),
        None => None,
    };
    let state = open_state(&ws)?;
    let Some(target) = target else {
        return with_stdout(|out| {
            lineage::write_prov_json(&state, &args.collections, out).map(|_| 0)
        });
    };
    let result = target.write_with(|f| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(lineage::write_prov_json(&state, &args.collections, f)?)
    });
    match result {
        Ok(n) => {
            eprintln!("wrote {} ({n} outputs)", target.path().display());
            Ok(0)
        }
        Err(e) => Err(format!("{}: {e}", target.path().display()).into()),
    }
}
