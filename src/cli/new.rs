//! `cpia new`: write a commented starting recipe.

use std::path::PathBuf;

use crate::recipe::Kind;

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
    let dir: PathBuf = match ctx.find_workspace() {
        Ok(ws) => ws.recipes_dir(),
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
    let path = dir.join(format!("{}.toml", args.name));
    if path.exists() {
        eprintln!(
            "error: {} already exists; not overwriting it",
            path.display()
        );
        return Ok(EXIT_ERROR);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        &path,
        crate::recipe::skeleton::new_recipe_text(&args.name, kind),
    )?;
    println!("wrote {}", path.display());
    println!("next: set [inputs] source, define it in cpia.toml [sources], then `cpia check`");
    Ok(0)
}
