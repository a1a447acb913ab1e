//! `cpia plan`: the dry run. Plans are printed collection by collection as
//! they are made (also with `--json`, which streams one object), so a plan
//! over millions of outputs starts printing at once.

use std::io::Write;

use serde::Serialize;

use crate::engine::driver::{self, Flags};
use crate::plan::{CollectionPlan, Planner, Selection, Unplanned};
use crate::store::State;

use super::{CmdResult, Context, EXIT_FAILURES};

/// Arguments of `cpia plan`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Recipes to plan (file names, stems or collection names); default: all.
    recipes: Vec<String>,
    /// Give the reasons for every action.
    #[arg(long)]
    explain: bool,
    /// Print the plan as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Check every recorded output on disk, as `build --check-outputs` does.
    #[arg(long)]
    check_outputs: bool,
}

#[derive(Serialize)]
struct JsonAction<'a> {
    action: &'static str,
    output: String,
    source: String,
    reasons: &'a [String],
}

#[derive(Serialize)]
struct JsonProblem<'a> {
    input: &'a str,
    error: &'a str,
}

/// Counts and notes gathered while plans stream out.
#[derive(Default)]
struct Totals {
    build: usize,
    remove: usize,
    up_to_date: u64,
    problems: Vec<(String, String)>,
    notes: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let mut state = super::state::for_writing(&ws)?;
    let hashed = crate::plan::sources::hashed_count();
    let mut planner = Planner::new();
    planner.refresh_recipes(&ws);
    let selection = Selection {
        recipes: args.recipes,
    };
    let flags = Flags {
        check_outputs: args.check_outputs,
        ..Flags::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut totals = Totals::default();
    let mut first = true;
    let mut io_error: Option<std::io::Error> = None;
    if args.json {
        if let Err(e) = write!(out, "{{\"actions\":[") {
            io_error = Some(e);
        }
    }
    let exports = match (args.explain && !args.json, ws.exports.is_empty()) {
        (true, false) => match crate::export::explain::Explainer::new(&ws, &state) {
            Ok(e) => Some(e),
            Err(e) => {
                totals.problems.push(("exports".into(), e.to_string()));
                None
            }
        },
        _ => None,
    };
    let req = super::build_request(&ws, &planner, &selection, flags);
    let (catalog, mass) = driver::dry_run(&req, &mut state, |state, p| {
        if io_error.is_none() {
            let r = if args.json {
                json_actions(&mut out, p, &mut first)
            } else {
                human_actions(&mut out, p, args.explain, exports.as_ref())
            };
            if let Err(e) = r {
                io_error = Some(e);
            }
        }
        tally(&mut totals, state, p);
    })?;
    for p in &catalog.problems {
        totals.problems.push((p.input.clone(), p.error.clone()));
    }
    let export_lines = match &exports {
        Some(e) => e.summary(&state)?,
        None => Vec::new(),
    };
    let written = match io_error {
        Some(e) => Err(e),
        None => write_totals(&mut out, &totals, &mass, &export_lines, args.json)
            .and_then(|()| out.flush()),
    };
    drop(out);
    if let Err(e) = written {
        return super::out::stream_error(e);
    }
    super::debug_counters(hashed);
    Ok(if totals.problems.is_empty() {
        0
    } else {
        EXIT_FAILURES
    })
}

/// The end of the plan: problems, mass removals, notes, the exports'
/// summary (`--explain`) and counts (`--json`: the rest of the object).
fn write_totals(
    out: &mut impl Write,
    totals: &Totals,
    mass: &[driver::MassRemoval],
    export_lines: &[String],
    json: bool,
) -> std::io::Result<()> {
    if json {
        let problems: Vec<JsonProblem> = totals
            .problems
            .iter()
            .map(|(input, error)| JsonProblem { input, error })
            .collect();
        let mass: Vec<String> = mass
            .iter()
            .map(|m| format!("{}: {} of {}", m.collection, m.removing, m.recorded))
            .collect();
        return writeln!(
            out,
            "],\"up_to_date\":{},\"problems\":{},\"mass_removals\":{}}}",
            totals.up_to_date,
            serde_json::to_string(&problems)?,
            serde_json::to_string(&mass)?
        );
    }
    for (input, error) in &totals.problems {
        writeln!(out, "error: {input}: {error}")?;
    }
    for m in mass {
        writeln!(
            out,
            "warning: would remove {} of {} outputs of {} (build needs --allow-mass-removal)",
            m.removing, m.recorded, m.collection
        )?;
    }
    for n in &totals.notes {
        writeln!(out, "{n}")?;
    }
    for line in export_lines {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "{} to build, {} to remove, {} up to date, {} problem(s)",
        totals.build,
        totals.remove,
        totals.up_to_date,
        totals.problems.len()
    )
}

fn tally(t: &mut Totals, state: &State, p: &CollectionPlan) {
    t.build += p.building();
    t.remove += p.removing();
    t.up_to_date += p.up_to_date;
    for pr in &p.problems {
        t.problems.push((pr.input.clone(), pr.error.clone()));
    }
    match &p.unplanned {
        Some(Unplanned::Error(e)) => t
            .problems
            .push((p.name.clone(), format!("collection {}: {e}", p.name))),
        // As `build` judges it: an error once the collection has outputs.
        Some(Unplanned::Unavailable(e)) if state.inputs_of(p.id).is_ok_and(|i| !i.is_empty()) => t
            .problems
            .push((p.name.clone(), format!("collection {}: {e}", p.name))),
        Some(Unplanned::Unavailable(e)) => t.notes.push(format!(
            "note: collection {}: source not available: {e}",
            p.name
        )),
        None => {}
    }
    if p.unrouted > 0 {
        t.notes.push(format!(
            "note: {} input(s) of {} matched no route and are skipped",
            p.unrouted, p.name
        ));
    }
}

/// Every action of a plan as (kind, output, source, reasons).
fn actions(p: &CollectionPlan) -> impl Iterator<Item = (&'static str, String, String, &[String])> {
    let builds = p.builds.iter().map(|b| {
        (
            "build",
            b.output.path(),
            crate::plan::judge::source(&b.input),
            b.reasons.as_slice(),
        )
    });
    let units = p.units.iter().map(|u| {
        (
            "build",
            u.unit.describe(),
            crate::plan::judge::source(&u.input),
            u.reasons.as_slice(),
        )
    });
    let qc = p.qc.iter().map(|q| {
        (
            "build",
            q.qc.path(),
            crate::plan::judge::source(&q.input),
            q.reasons.as_slice(),
        )
    });
    let removes = p.removals.iter().flat_map(|r| {
        r.files.iter().map(move |(path, _)| {
            (
                "remove",
                path.clone(),
                r.source.clone(),
                std::slice::from_ref(&r.reason),
            )
        })
    });
    builds.chain(units).chain(qc).chain(removes)
}

fn json_actions(out: &mut impl Write, p: &CollectionPlan, first: &mut bool) -> std::io::Result<()> {
    for (action, output, source, reasons) in actions(p) {
        if !*first {
            out.write_all(b",")?;
        }
        *first = false;
        serde_json::to_writer(
            &mut *out,
            &JsonAction {
                action,
                output,
                source,
                reasons,
            },
        )?;
    }
    Ok(())
}

fn human_actions(
    out: &mut impl Write,
    p: &CollectionPlan,
    explain: bool,
    exports: Option<&crate::export::explain::Explainer>,
) -> std::io::Result<()> {
    for (action, output, source, reasons) in actions(p) {
        if action == "build" {
            writeln!(out, "build  {output}  <- {source}")?;
        } else {
            writeln!(out, "remove {output}")?;
        }
        if explain {
            for r in reasons {
                writeln!(out, "         because {r}")?;
            }
            for line in exports
                .map(|e| e.shards_of(&p.name, &output))
                .unwrap_or_default()
            {
                writeln!(out, "         then {line}")?;
            }
        }
    }
    Ok(())
}
