//! `cpia report`: the dataset report — a self-contained HTML page (or
//! Markdown, or JSON) with the built images beside the published CPIA
//! counts, breakdowns, build status, QC pictures and sample tiles. Written
//! to `<output>/report.<ext>` by default, through a temporary file and a
//! rename; `-o -` writes to stdout.

use std::io::Write;
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
    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Html);
    let target = match &args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(std::path::absolute(p)?),
        None => Some(ws.output.join(format!("report.{}", format.extension()))),
    };
    if let Some(t) = &target {
        if t.is_dir() {
            return Err(format!("{} is a folder; give a file name with -o", t.display()).into());
        }
    }
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
        Some(t) => t.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => std::env::current_dir()?,
    };
    let text = report::render(&r, format, &relative_prefix(&here, &ws.output));
    match &target {
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
        Some(t) => {
            super::output_file::write_bytes(t, text.as_bytes())
                .map_err(|e| format!("{}: {e}", t.display()))?;
            eprintln!(
                "report: {} ({} collections, {} images; {} KiB)",
                t.display(),
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
