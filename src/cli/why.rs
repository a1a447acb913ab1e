//! `cpia why`.

use crate::provenance::why;
use crate::store::State;
use crate::workspace::Workspace;

use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia why`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// An output file: a path relative to the output folder, or to the current folder.
    path: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let state = open_state(&ws)?;
    let (file, member) = match args.path.rsplit_once(':') {
        Some((f, m)) if !m.contains('/') || f.ends_with(".tar") || f.ends_with(".parquet") => {
            (f.to_string(), Some(m.to_string()))
        }
        _ => (args.path.clone(), None),
    };
    let rel = why::resolve(&ws.output, &std::env::current_dir()?, &file);
    if crate::export::why::is_export_path(&rel) {
        let full = match &member {
            Some(m) => format!("{rel}:{m}"),
            None => rel.clone(),
        };
        let Some(v) = crate::export::why::explain(&state, &full)? else {
            eprintln!(
                "error: {full}: no exported sample is recorded there (a shard member is named `export/NAME/NAME-000012.tar:KEY`)"
            );
            return Ok(EXIT_FAILURES);
        };
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let e = &v["export"];
            outln!(
                "export      {} ({}), {}",
                e["name"].as_str().unwrap_or(""),
                e["format"].as_str().unwrap_or(""),
                e["file"].as_str().unwrap_or("")
            );
            outln!("  key       {}", e["key"].as_str().unwrap_or(""));
            if let Some(s) = e["shard"].as_u64() {
                outln!("  shard     {s}");
            }
            out!("{}", why::render(&v));
        }
        return Ok(0);
    }
    let rel = if member.is_some() {
        why::resolve(&ws.output, &std::env::current_dir()?, &args.path)
    } else {
        rel
    };
    let Some(facts) = why::find(&state, &rel)? else {
        eprintln!(
            "error: {rel}: no output is recorded at this path (relative to the output folder {})",
            ws.output.display()
        );
        return Ok(EXIT_FAILURES);
    };
    let v = why::explain(&state, &facts)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{}", why::render(&v));
    }
    Ok(0)
}

/// Opens the workspace's build state for reading ([`super::state::read_only`]).
pub(super) fn open_state(ws: &Workspace) -> Result<State, Box<dyn std::error::Error>> {
    super::state::read_only(ws)
}

/// Runs `f` with a buffered stdout; a closed pipe (`| head`) ends quietly,
/// another failed write is an error ([`super::out::stream_error`]).
pub(super) fn with_stdout(
    f: impl FnOnce(&mut dyn std::io::Write) -> Result<i32, crate::provenance::Error>,
) -> CmdResult {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = f(&mut out).and_then(|code| {
        std::io::Write::flush(&mut out)?;
        Ok(code)
    });
    match r {
        Ok(code) => Ok(code),
        Err(crate::provenance::Error::Io(e)) => super::out::stream_error(e),
        Err(e) => Err(e.into()),
    }
}
