//! `cpia new`: write a commented starting recipe.

use std::path::PathBuf;

use crate::recipe::Kind;

use super::workspace_files::{Existing, Files};
use super::{CmdResult, Context, EXIT_ERROR};

/// Arguments of `cpia new`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Collection name; the recipe is written to recipes/NAME.toml.
    name: String,
    /// Region-of-interest images or whole-slide images.
    #[arg(long, value_parser = ["roi", "wsi"], default_value = "roi")]
    kind: String,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    // A recipe outside a workspace is read by nothing: say how to make one.
    let root: PathBuf = match ctx.find_workspace() {
        Ok(ws) => ws.root,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    if let Err(why) = crate::recipe::check_component(&args.name) {
        eprintln!(
            "error: collection name `{}` cannot be used: {why} (it becomes a file and folder name)",
            args.name
        );
        return Ok(EXIT_ERROR);
    }
    let kind = if args.kind == "wsi" {
        Kind::Wsi
    } else {
        Kind::Roi
    };
    let rel = format!("recipes/{}.toml", args.name);
    let text = crate::recipe::skeleton::new_recipe_text(&args.name, kind);
    // Through real folders only, and never over anything already there.
    let files = Files::open(&root)?;
    match files.existing(&rel, text.as_bytes())? {
        Existing::Absent => {}
        Existing::Same => {
            eprintln!(
                "error: {} already exists; not overwriting it",
                files.at(&rel).display()
            );
            return Ok(EXIT_ERROR);
        }
        Existing::Other(why) => {
            eprintln!("error: {why}; not overwriting it");
            return Ok(EXIT_ERROR);
        }
    }
    files.write(&rel, text.as_bytes())?;
    outln!("wrote {}", files.at(&rel).display());
    outln!("next: set [inputs] source, define it in cpia.toml [sources], then `cpia check`");
    Ok(0)
}
