//! `cpia plan`: the dry run.

use serde::Serialize;

use crate::plan::{Plan, Planner, Rescan, Selection};
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
}

#[derive(Serialize)]
struct JsonAction {
    action: &'static str,
    output: String,
    source: String,
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct JsonProblem<'a> {
    input: &'a str,
    error: &'a str,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    actions: Vec<JsonAction>,
    up_to_date: usize,
    problems: Vec<JsonProblem<'a>>,
    mass_removals: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let ws = ctx.workspace()?;
    let mut state = State::open(&ws.state_path())?;
    let hashed = crate::plan::sources::hashed_count();
    let mut planner = Planner::new();
    planner.refresh_recipes(&ws);
    let plan = planner.plan(
        &ws,
        &mut state,
        &Selection {
            recipes: args.recipes,
        },
        &Rescan::All,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&to_json(&plan))?);
    } else {
        print!("{}", render(&plan, args.explain));
    }
    super::debug_counters(hashed);
    Ok(if plan.problems.is_empty() {
        0
    } else {
        EXIT_FAILURES
    })
}

fn to_json(plan: &Plan) -> JsonPlan<'_> {
    let mut actions = Vec::new();
    for b in &plan.builds {
        actions.push(JsonAction {
            action: "build",
            output: b.output.path.clone(),
            source: format!("{}:{}", b.output.source_root, b.output.source_rel),
            reasons: b.reasons.clone(),
        });
    }
    for u in &plan.units {
        actions.push(JsonAction {
            action: "build",
            output: u.unit.describe(),
            source: format!("{}:{}", u.unit.source_root, u.unit.source_rel),
            reasons: u.reasons.clone(),
        });
    }
    for q in &plan.qc {
        actions.push(JsonAction {
            action: "build",
            output: q.qc.path.clone(),
            source: format!("{}:{}", q.qc.source_root, q.qc.source_rel),
            reasons: q.reasons.clone(),
        });
    }
    for r in &plan.removes {
        actions.push(JsonAction {
            action: "remove",
            output: r.record.path.clone(),
            source: format!("{}:{}", r.record.source_root, r.record.source_rel),
            reasons: vec![r.reason.clone()],
        });
    }
    JsonPlan {
        actions,
        up_to_date: plan.up_to_date,
        problems: plan
            .problems
            .iter()
            .map(|p| JsonProblem {
                input: &p.input,
                error: &p.error,
            })
            .collect(),
        mass_removals: plan
            .mass_removals
            .iter()
            .map(|m| format!("{}: {} of {}", m.collection, m.removing, m.recorded))
            .collect(),
    }
}

/// One `build` line, with its reasons under `--explain`.
fn action(s: &mut String, output: &str, source: &str, reasons: &[String], explain: bool) {
    s.push_str(&format!("build  {output}  <- {source}\n"));
    if explain {
        for r in reasons {
            s.push_str(&format!("         because {r}\n"));
        }
    }
}

/// The human-readable plan.
pub fn render(plan: &Plan, explain: bool) -> String {
    let mut s = String::new();
    for b in &plan.builds {
        let source = format!("{}:{}", b.output.source_root, b.output.source_rel);
        action(&mut s, &b.output.path, &source, &b.reasons, explain);
    }
    for u in &plan.units {
        let source = format!("{}:{}", u.unit.source_root, u.unit.source_rel);
        action(&mut s, &u.unit.describe(), &source, &u.reasons, explain);
    }
    for q in &plan.qc {
        let source = format!("{}:{}", q.qc.source_root, q.qc.source_rel);
        action(&mut s, &q.qc.path, &source, &q.reasons, explain);
    }
    for r in &plan.removes {
        s.push_str(&format!("remove {}\n", r.record.path));
        if explain {
            s.push_str(&format!("         because {}\n", r.reason));
        }
    }
    for p in &plan.problems {
        s.push_str(&format!("error: {}: {}\n", p.input, p.error));
    }
    for m in &plan.mass_removals {
        s.push_str(&format!(
            "warning: would remove {} of {} outputs of {} (build needs --allow-mass-removal)\n",
            m.removing, m.recorded, m.collection
        ));
    }
    for (collection, n) in &plan.unrouted {
        s.push_str(&format!(
            "note: {n} input(s) of {collection} matched no route and are skipped\n"
        ));
    }
    s.push_str(&format!(
        "{} to build, {} to remove, {} up to date, {} problem(s)\n",
        plan.builds.len() + plan.units.len() + plan.qc.len(),
        plan.removes.len(),
        plan.up_to_date,
        plan.problems.len()
    ));
    s
}
