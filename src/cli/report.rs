//! `cpia report`: the dataset report — a self-contained HTML page (or
//! Markdown, or JSON) with the built images beside the published CPIA
//! counts, breakdowns, build status, QC pictures and sample tiles. Written
//! to `<output>/report.<ext>` by default, through a temporary file and a
//! rename; `-o -` writes to stdout.

use std::path::{Path, PathBuf};

use crate::report::{self, format::relative_prefix, thumbs, Detail, Format};

use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write it (`-` for stdout); default `<output>/report.<ext>`,
    /// beside the dataset so its links work when the folder is copied.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// html (default, or from the extension of -o), md or json.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    super::state::check_read_only(&ws)?;
    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Html);
    let target = match &args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(super::output_file::check(p, &ws)?),
        None => {
            // The default place is the output folder's own: made if missing.
            std::fs::create_dir_all(&ws.output)
                .map_err(|e| format!("{}: {e}", ws.output.display()))?;
            let p = ws.output.join(format!("report.{}", format.extension()));
            Some(super::output_file::check(&p, &ws)?)
        }
    };
    let mut r = report::of_workspace(
        &ws,
        Detail {
            samples: format != Format::Json,
        },
    )?;
    if format == Format::Html {
        thumbs::embed(&mut r, &ws.output);
    }
    let here = match &target {
        Some(super::output_file::Target::Replace(t)) => {
            t.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        _ => std::env::current_dir()?,
    };
    let text = report::render(&r, format, &relative_prefix(&here, &ws.output));
    match &target {
        None => super::out::write_bytes(text.as_bytes()),
        Some(t) => {
            t.write_bytes(text.as_bytes())
                .map_err(|e| format!("{}: {e}", t.path().display()))?;
            eprintln!(
                "report: {} ({} collections, {} images; {} KiB)",
                t.path().display(),
                r.summary.collections,
                r.summary.images,
                text.len().div_ceil(1024)
            );
        }
    }
    for p in &r.problems {
        eprintln!(
            "error: {}: {}",
            p.recipe,
            p.error.lines().next().unwrap_or("")
        );
    }
    Ok(if r.problems.is_empty() {
        0
    } else {
        EXIT_FAILURES
    })
}
