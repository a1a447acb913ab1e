//! `cpia verify`.

use crate::provenance::verify::{self, Finding, Options};
use crate::provenance::Error;

use super::why::{open_state, with_stdout};
use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Collections to verify (default: the whole output folder).
    collections: Vec<String>,
    /// Re-hash every recorded file, not only those whose stat changed.
    #[arg(long)]
    deep: bool,
    /// Print one JSON object on stdout (findings, then counts).
    #[arg(long)]
    json: bool,
    /// Run SQLite's integrity check on the build state instead.
    #[arg(long, conflicts_with_all = ["collections", "deep"])]
    state: bool,
    /// Threads for stats and hashes (default: `jobs` of cpia.toml).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Exit at once if a build holds the workspace lock.
    #[arg(long)]
    no_wait: bool,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    // Read-only: in a workspace that cannot be written, the lock file is
    // locked read-only (or absent: nothing to wait for).
    let _lock = ws.lock_for_reading(!args.no_wait, |who| {
        eprintln!("waiting for the workspace lock held by {who} ...")
    })?;
    let state = open_state(&ws)?;
    if args.state {
        let problems = state.integrity_check()?;
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"ok": problems.is_empty(), "problems": problems})
            );
        } else if problems.is_empty() {
            eprintln!("{}: ok (SQLite integrity check)", state.path().display());
        } else {
            for p in &problems {
                outln!("{p}");
            }
            eprintln!("{}: {} problem(s)", state.path().display(), problems.len());
        }
        return Ok(if problems.is_empty() {
            0
        } else {
            EXIT_FAILURES
        });
    }
    let opts = Options {
        deep: args.deep,
        collections: args.collections.clone(),
        jobs: super::jobs(args.jobs, &ws),
    };
    with_stdout(|out| {
        if args.json {
            write!(out, "{{\"findings\":[")?;
        }
        let mut first = true;
        let mut report = |f: Finding| -> Result<(), Error> {
            if args.json {
                let sep = if first { "" } else { "," };
                write!(
                    out,
                    "{sep}\n{}",
                    serde_json::to_string(&f).unwrap_or_default()
                )?;
            } else {
                writeln!(out, "{}\t{}\t{}", f.kind, f.path, f.detail)?;
            }
            first = false;
            Ok(())
        };
        let mut stats = verify::verify(&state, &ws.output, &opts, &mut report)?;
        if opts.collections.is_empty() {
            let e = crate::export::verify::verify(&state, &ws.output, opts.deep, &mut report)
                .map_err(|e| Error::Other(e.to_string()))?;
            stats.files += e.files;
            stats.hashed += e.hashed;
            stats.findings += e.findings;
        }
        if args.json {
            let s = serde_json::to_string(&stats).unwrap_or_default();
            writeln!(out, "\n],\"clean\":{},\"stats\":{s}}}", stats.findings == 0)?;
        } else {
            eprintln!(
                "verified {} file(s) in {} folder(s){}: {} finding(s)",
                stats.files,
                stats.folders,
                if stats.hashed > 0 {
                    format!(
                        ", {} hashed ({:.1} MiB)",
                        stats.hashed,
                        stats.bytes_hashed as f64 / 1048576.0
                    )
                } else {
                    String::new()
                },
                stats.findings
            );
        }
        Ok(if stats.findings == 0 {
            0
        } else {
            EXIT_FAILURES
        })
    })
}
