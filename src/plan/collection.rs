//! Planning one collection, step by step: its source root walked, its
//! pipelines described, its inputs classified against their records
//! ([`inputs`]), the lost ones turned into problems and removals, the rest
//! planned in detail ([`super::detail`]) and gathered into one
//! [`CollectionPlan`]. Also the plan of a collection no recipe defines any
//! more ([`plan_orphan`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::recipe::Kind;
use crate::store::{Event, State, StateError};
use crate::workspace::Workspace;

use super::detail::plan_in_detail;
use super::sources::{self, RootError};
use super::{
    expand, inputs, outdirs, CollectionPlan, CollectionSpec, Input, InputPlan, Problem, Removal,
    Unplanned,
};

/// Plans one collection against the state and the disk. `dirs` is the
/// output-folder check of the selected collections.
pub fn plan_collection(
    ws: &Workspace,
    state: &mut State,
    spec: &Arc<CollectionSpec>,
    dirs: &outdirs::DirCheck,
) -> Result<CollectionPlan, StateError> {
    let name = spec.name().to_string();
    let id = state.collection_id(&name)?;
    let mut plan = CollectionPlan {
        name: name.clone(),
        id,
        spec: Some(spec.clone()),
        ..CollectionPlan::default()
    };
    let Some((root, found, scanned_at)) = scan_sources(ws, spec, &mut plan) else {
        return Ok(plan);
    };
    let fp = state.fingerprint_id(&spec.fingerprint)?;
    plan.fp = Some(fp);
    if !describe_pipelines(spec, &mut plan) {
        return Ok(plan);
    }
    let root_name = spec.recipe.inputs.source.as_str();
    let wsi = spec.recipe.collection.kind == Kind::Wsi;
    let damaged_dirs = damaged_source_dirs(state, dirs, id)?;
    let classified = inputs::classify(
        state,
        &inputs::Collection {
            id,
            name: &name,
            root_name,
            root: &root,
            fp,
            wsi,
            scanned_at,
        },
        found,
        &|input| dirs.damage.contains_key(&input),
        &damaged_dirs,
    )?;
    plan.folders = classified.folders.clone();
    plan.up_to_date = classified.clean_outputs;
    plan_lost_inputs(state, spec, &classified, &mut plan)?;
    let plans = plan_in_detail(state, spec, dirs, &classified)?;
    add_input_plans(&mut plan, plans, dirs);
    if !plan.removals.is_empty() {
        plan.recorded = state.recorded_outputs(id)?;
    }
    plan.builds.sort_by_key(|a| a.output.path());
    Ok(plan)
}

/// The collection's source root walked: its root, the files found and the
/// clock before the walk; `None` (with `plan.unplanned` set) when the root
/// is unknown or unusable. Parts of the listing that could not be read
/// become the plan's warnings.
fn scan_sources(
    ws: &Workspace,
    spec: &CollectionSpec,
    plan: &mut CollectionPlan,
) -> Option<(PathBuf, Vec<sources::FoundFile>, i64)> {
    let recipe = &spec.recipe;
    let root_name = recipe.inputs.source.as_str();
    let Some(root) = ws.source_root(root_name) else {
        plan.unplanned = Some(Unplanned::Unavailable(
            RootError::Unknown(root_name.to_string()).to_string(),
        ));
        return None;
    };
    let scanned_at = sources::now_ns();
    match sources::scan(&root, &recipe.inputs) {
        Ok((files, problems)) => {
            plan.warnings = problems;
            Some((root, files, scanned_at))
        }
        Err(e) => {
            plan.unplanned = Some(if e.is_unavailable() {
                Unplanned::Unavailable(e.to_string())
            } else {
                Unplanned::Error(e.to_string())
            });
            None
        }
    }
}

/// The pipeline descriptions stored before building; `false` (with
/// `plan.unplanned` set) when one cannot be described.
fn describe_pipelines(spec: &CollectionSpec, plan: &mut CollectionPlan) -> bool {
    for p in &spec.pipelines {
        match p.to_json() {
            Ok(json) => plan.pipelines.push((p.hash.clone(), json)),
            Err(e) => {
                plan.unplanned = Some(Unplanned::Error(e));
                return false;
            }
        }
    }
    true
}

/// The source folders of this collection that hold inputs with damaged
/// outputs: they are read row by row, never skipped on their digest.
fn damaged_source_dirs(
    state: &State,
    dirs: &outdirs::DirCheck,
    collection: i64,
) -> Result<HashSet<i64>, StateError> {
    let damaged_ids: Vec<i64> = dirs.damage.keys().copied().collect();
    Ok(state
        .src_dirs_of(&damaged_ids)?
        .into_iter()
        .filter(|(c, _)| *c == collection)
        .map(|(_, d)| d)
        .collect())
}

/// Inputs that cannot be read become problems (their outputs are kept);
/// inputs gone from the listing (deleted, or no longer selected) become
/// removals of everything they recorded.
fn plan_lost_inputs(
    state: &State,
    spec: &CollectionSpec,
    classified: &inputs::Classified,
    plan: &mut CollectionPlan,
) -> Result<(), StateError> {
    let recipe = &spec.recipe;
    let wsi = recipe.collection.kind == Kind::Wsi;
    for u in &classified.unreadable {
        plan.problems.push(Problem {
            input: u.abs.clone(),
            error: u.error.clone(),
            input_id: u.input,
            outputs: if wsi { 1 } else { recipe.sinks.len() },
        });
    }
    let root_name = recipe.inputs.source.as_str();
    for g in &classified.gone {
        let reason = if g.excluded {
            format!(
                "source {} is no longer selected by the recipe's [inputs]",
                g.rel
            )
        } else {
            format!("source {} was deleted", g.rel)
        };
        plan.removals.push(input_removal(
            state,
            g.id,
            &format!("{root_name}:{}", g.rel),
            &reason,
        )?);
    }
    Ok(())
}

/// The inputs' plans gathered into the collection's.
fn add_input_plans(
    plan: &mut CollectionPlan,
    plans: Vec<(Arc<Input>, InputPlan)>,
    dirs: &outdirs::DirCheck,
) {
    for (input, p) in plans {
        if p.unrouted {
            plan.unrouted += 1;
        }
        plan.up_to_date += p.up_to_date;
        plan.updates.extend(p.updates);
        if dirs.damage.contains_key(&input.id) {
            plan.damaged.push(input.id);
        }
        match p.problem {
            Some(problem) => plan.problems.push(problem),
            None => plan.complete.push(input.id),
        }
        plan.builds.extend(p.builds);
        plan.units.extend(p.units);
        plan.qc.extend(p.qc);
        plan.removals.extend(p.removals);
    }
}

/// The plan of a collection that no recipe defines any more: every output
/// of every input it recorded is removed.
pub fn plan_orphan(state: &mut State, id: i64, name: &str) -> Result<CollectionPlan, StateError> {
    let mut plan = CollectionPlan {
        name: name.to_string(),
        id,
        ..CollectionPlan::default()
    };
    let reason = format!("collection {name} has no recipe any more");
    for (input, root, rel) in state.inputs_of(id)? {
        plan.removals.push(input_removal(
            state,
            input,
            &format!("{root}:{rel}"),
            &reason,
        )?);
    }
    plan.recorded = state.recorded_outputs(id)?;
    Ok(plan)
}

/// Removes every file an input recorded, then its rows.
fn input_removal(
    state: &State,
    input: i64,
    source: &str,
    reason: &str,
) -> Result<Removal, StateError> {
    let mut files = Vec::new();
    for o in state.outputs_of_input(input)? {
        files.push((o.path(), Event::OutputRemoved { id: o.id }));
    }
    let slide = source
        .split_once(':')
        .map_or(source, |(_, rel)| crate::slide::slide_name(rel));
    for u in state.units_of_input(input)? {
        for t in state.tiles_of_unit(u.id)? {
            files.push((
                format!("{}/{}", u.dir, expand::tile_name(slide, u.size, t.x, t.y)),
                Event::TileRemoved {
                    unit: u.id,
                    x: t.x,
                    y: t.y,
                },
            ));
        }
    }
    Ok(Removal {
        source: source.to_string(),
        reason: reason.to_string(),
        files,
        then: Some(Event::InputRemoved { id: input }),
    })
}
