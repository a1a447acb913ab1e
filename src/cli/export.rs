//! `cpia export`: bring exports up to date, make one without a definition,
//! reshard, remove, or show what one would hold (`--dry-run`).

use crate::engine::atomic::OutputDir;
use crate::export::definition::{Definition, Format, Target};
use crate::export::dryrun;
use crate::export::sync::{self, Done};
use crate::export::update::Options;
use crate::workspace::CONFIG_FILE;

use super::{CmdResult, Context, EXIT_ERROR, EXIT_FAILURES};

/// Arguments of `cpia export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Exports to bring up to date (default: every one declared in cpia.toml).
    names: Vec<String>,
    /// Export everything in this format without a definition
    /// (webdataset, imagefolder or parquet).
    #[arg(long, value_name = "F", conflicts_with = "names")]
    format: Option<String>,
    /// With --format: the export's name (default: the format's name).
    #[arg(long, requires = "format")]
    name: Option<String>,
    /// With --format: samples per shard (a target).
    #[arg(
        long,
        value_name = "N",
        requires = "format",
        conflicts_with = "shard_bytes"
    )]
    shard_samples: Option<u64>,
    /// With --format: bytes per shard (a target), e.g. 1G.
    #[arg(long, value_name = "SIZE", requires = "format", value_parser = crate::workspace::parse_size)]
    shard_bytes: Option<u64>,
    /// Fix the shard count anew from the target and the selection (every shard is rewritten).
    #[arg(long)]
    reshard: bool,
    /// Print what the exports would hold (counts per category and scale,
    /// from the state and the published counts, and their licences); write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the named exports' files and records.
    #[arg(long, requires = "names", conflicts_with_all = ["reshard", "dry_run"])]
    remove: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Threads writing shards (default: `jobs` of cpia.toml).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Exit at once if another process holds the workspace lock.
    #[arg(long)]
    no_wait: bool,
}

/// The definition `--format` describes.
fn ad_hoc(args: &Args) -> Result<Option<Definition>, Box<dyn std::error::Error>> {
    let Some(f) = &args.format else {
        return Ok(None);
    };
    let format = Format::parse(f).ok_or_else(|| {
        format!("--format {f}: not a format (webdataset, imagefolder or parquet)")
    })?;
    let target = match (args.shard_samples, args.shard_bytes) {
        (Some(n), _) => Target::Samples(n.max(1)),
        (_, Some(b)) => Target::Bytes(b),
        _ => Target::Samples(crate::export::definition::DEFAULT_SHARD_SAMPLES),
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format.name().to_string());
    Ok(Some(Definition::ad_hoc(&name, format, target)?))
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let adhoc = ad_hoc(&args)?;
    if let Some(d) = &adhoc {
        if ws.exports.contains_key(&d.name) {
            return Err(format!(
                "export {} is declared in {CONFIG_FILE}: `cpia export {}` brings it up to date; \
                 give --name another name to export without a definition",
                d.name, d.name
            )
            .into());
        }
        refuse_parquet(d.format)?;
    }
    if args.dry_run {
        return dry_run(ctx, &args, adhoc);
    }
    let _lock = super::lock_workspace(&ws, !args.no_wait)?;
    let mut state = super::state::for_writing(&ws)?;
    if !state.submitted()?.is_empty() {
        eprintln!("error: a Slurm build of this workspace is not merged yet; `cpia build --executor slurm --attach` merges it, then export");
        return Ok(EXIT_ERROR);
    }
    let out = OutputDir::open(&ws.output)?;
    let opts = Options {
        jobs: super::jobs(args.jobs, &ws),
        reshard: args.reshard,
    };
    let done: Vec<Done> = if args.remove {
        let mut done = Vec::new();
        for n in &args.names {
            match state.export(n)? {
                Some(row) => match crate::export::update::remove(&mut state, &out, &row) {
                    Ok((s, f)) => done.push(Done::Removed(n.clone(), s, f)),
                    Err(e) => done.push(Done::Failed(n.clone(), e)),
                },
                None => done.push(Done::Failed(
                    n.clone(),
                    crate::export::Error::Other("no such export is recorded".into()),
                )),
            }
        }
        done
    } else if let Some(d) = adhoc {
        let meta = sync::collection_meta(&ws);
        vec![sync::one(&mut state, &out, &d, &meta, &opts)]
    } else if args.names.is_empty() {
        sync::all_declared(&ws, &mut state, &out, &opts)?
    } else {
        let meta = sync::collection_meta(&ws);
        let mut done = Vec::new();
        for n in &args.names {
            match sync::named(&ws, &state, n) {
                Ok(d) => {
                    refuse_parquet(d.format)?;
                    done.push(sync::one(&mut state, &out, &d, &meta, &opts));
                }
                Err(e) => done.push(Done::Failed(n.clone(), e)),
            }
        }
        done
    };
    out.finish();
    Ok(print(&done, args.json))
}

/// Parquet image shards wait for the project's Parquet writer (issue 16, item 5).
fn refuse_parquet(f: Format) -> Result<(), Box<dyn std::error::Error>> {
    if f == Format::Parquet {
        return Err("format parquet: Parquet image shards are not available in this cpia yet (they need the project's Parquet writer); use webdataset or imagefolder".into());
    }
    Ok(())
}

/// Prints what each export did; the exit code (1 if any failed).
pub(super) fn print(done: &[Done], json: bool) -> i32 {
    let failed = done.iter().any(|d| match d {
        Done::Failed(..) => true,
        Done::Updated(o) => !o.failures.is_empty(),
        Done::Removed(..) => false,
    });
    if json {
        outln!("{}", serde_json::json!({ "exports": to_json(done) }));
    } else {
        print_lines(done);
    }
    if failed {
        EXIT_FAILURES
    } else {
        0
    }
}

/// The lines `cpia build` and `cpia export` print on stderr.
pub(super) fn print_lines(done: &[Done]) {
    for d in done {
        eprintln!("{}", sync::describe(d));
        if let Done::Updated(o) = d {
            for f in &o.failures {
                eprintln!("  error: {f}");
            }
            for n in &o.notes {
                eprintln!("  note: {n}");
            }
        }
    }
}

/// The JSON of what each export did.
pub(super) fn to_json(done: &[Done]) -> Vec<serde_json::Value> {
    done.iter()
        .map(|d| match d {
            Done::Updated(o) => serde_json::to_value(o).unwrap_or_default(),
            Done::Removed(n, s, f) => {
                serde_json::json!({"name": n, "removed": true, "shards_removed": s, "files_removed": f})
            }
            Done::Failed(n, e) => serde_json::json!({"name": n, "error": e.to_string()}),
        })
        .collect()
}

fn dry_run(ctx: &Context, args: &Args, adhoc: Option<Definition>) -> CmdResult {
    let ws = ctx.workspace()?;
    super::state::check_read_only(&ws)?;
    let state = crate::store::State::open_read_only(&ws.state_path())?;
    let defs: Vec<Definition> = match adhoc {
        Some(d) => vec![d],
        None if args.names.is_empty() => sync::declared(&ws)?,
        None => {
            let mut v = Vec::new();
            for n in &args.names {
                v.push(match &state {
                    Some(s) => sync::named(&ws, s, n)?,
                    None => sync::declared(&ws)?
                        .into_iter()
                        .find(|d| &d.name == n)
                        .ok_or_else(|| format!("no export named {n} in {CONFIG_FILE}"))?,
                });
            }
            v
        }
    };
    let meta = sync::collection_meta(&ws);
    let mut all = Vec::new();
    for d in &defs {
        all.push(dryrun::dry_run(state.as_ref(), d, &meta)?);
    }
    if args.json {
        outln!("{}", serde_json::to_string(&all)?);
        return Ok(0);
    }
    for r in &all {
        print_dry_run(r);
    }
    Ok(0)
}

fn print_dry_run(r: &dryrun::DryRun) {
    outln!(
        "export {} ({}): would hold {} sample(s) in {} shard(s) from what is built",
        r.name,
        r.format,
        r.built.total,
        r.shards
    );
    outln!(
        "  {:<40} {:>5} {:>12} {:>12}   {:>12} {:>12}",
        "category",
        "scale",
        "built",
        "kept",
        "published",
        "kept"
    );
    let mut keys: Vec<(&str, &str)> = r
        .built
        .rows
        .iter()
        .chain(&r.published.rows)
        .map(|c| (c.category.as_str(), c.scale.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    let find = |rows: &[dryrun::Count], k: (&str, &str)| {
        rows.iter()
            .find(|c| (c.category.as_str(), c.scale.as_str()) == k)
            .map_or(("-".to_string(), "-".to_string()), |c| {
                (c.size.to_string(), c.kept.to_string())
            })
    };
    for k in keys {
        let (bs, bk) = find(&r.built.rows, k);
        let (ps, pk) = find(&r.published.rows, k);
        outln!(
            "  {:<40} {:>5} {bs:>12} {bk:>12}   {ps:>12} {pk:>12}",
            k.0,
            k.1
        );
    }
    for (label, c) in [("built", &r.built), ("published", &r.published)] {
        let per: Vec<String> = c
            .per_scale
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        outln!("  total ({label}): {} ({})", c.total, per.join(", "));
    }
    if !r.tolerance.is_empty() {
        let t: Vec<String> = r
            .tolerance
            .iter()
            .map(|(s, x)| format!("{s} ±{x:.0}"))
            .collect();
        outln!(
            "  tolerance per category (|count − kept| ≤ 4·√quota + 1): {}",
            t.join(", ")
        );
    }
    outln!("  licences: {}", r.licence_note);
}
