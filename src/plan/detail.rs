//! The inputs of a collection that must be planned in detail: each
//! expanded into what it should produce (ROI outputs, or a slide's units)
//! and judged against its records ([`super::judge`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::recipe::Kind;
use crate::store::{Maker, State, StateError};

use super::claims::RoiClaims;
use super::{
    expand, inputs, judge, key, libraries, outdirs, CollectionSpec, Input, InputPlan,
    PlannedOutput, TOOL_VERSION,
};

/// Pipeline descriptions recorded in the state, read once per hash, for
/// explanations that compare with the pipeline an output was built with.
/// A description that does not parse explains less; a state that cannot be
/// read fails the plan (`check`, after each input).
struct OldPipelines<'s> {
    state: &'s State,
    cache: RefCell<HashMap<String, Option<key::Pipeline>>>,
    error: RefCell<Option<StateError>>,
}

impl<'s> OldPipelines<'s> {
    fn new(state: &'s State) -> Self {
        OldPipelines {
            state,
            cache: RefCell::default(),
            error: RefCell::default(),
        }
    }

    fn get(&self, hash: &str) -> Option<key::Pipeline> {
        self.cache
            .borrow_mut()
            .entry(hash.to_string())
            .or_insert_with(|| match self.state.pipeline(hash) {
                Ok(json) => json.and_then(|j| serde_json::from_str(&j).ok()),
                Err(e) => {
                    self.error.borrow_mut().get_or_insert(e);
                    None
                }
            })
            .clone()
    }

    /// The first read error since the last check.
    fn check(&self) -> Result<(), StateError> {
        self.error.borrow_mut().take().map_or(Ok(()), Err)
    }
}

/// Every input to plan in detail, judged against its records.
pub(super) fn plan_in_detail(
    state: &State,
    spec: &Arc<CollectionSpec>,
    dirs: &outdirs::DirCheck,
    classified: &inputs::Classified,
) -> Result<Vec<(Arc<Input>, InputPlan)>, StateError> {
    let recipe = &spec.recipe;
    let maker = Maker {
        recipe_hash: recipe.hash.clone(),
        tool_version: TOOL_VERSION.to_string(),
        libraries: libraries::of_kind(recipe.collection.kind).to_string(),
    };
    let olds = OldPipelines::new(state);
    let old = |hash: &str| olds.get(hash);
    // What judging needs beyond the input; each input adds its damage and
    // its recorded failures.
    let judging = Judging {
        base: judge::Context {
            spec,
            damage: &[],
            failures: &[],
            maker: &maker,
            old_pipeline: &old,
        },
        dirs,
        olds: &olds,
    };
    if recipe.collection.kind == Kind::Wsi {
        plan_slides(state, &judging, classified)
    } else {
        plan_roi_inputs(state, &judging, classified)
    }
}

/// What judging the inputs of a collection shares: the context without an
/// input, the damage the output-folder check found, and the old pipelines
/// (whose read errors fail the plan).
struct Judging<'a> {
    base: judge::Context<'a>,
    dirs: &'a outdirs::DirCheck,
    olds: &'a OldPipelines<'a>,
}

/// Each slide expanded into units and judged against its recorded units.
fn plan_slides(
    state: &State,
    judging: &Judging<'_>,
    classified: &inputs::Classified,
) -> Result<Vec<(Arc<Input>, InputPlan)>, StateError> {
    let spec = judging.base.spec;
    let mut plans = Vec::new();
    for d in &classified.detail {
        let input = &d.input;
        let planned = unique_slide_name(classified, &input.rel).and_then(|()| match &d.slide {
            Some(Ok(meta)) => expand::expand_wsi(spec, &input.rel, &input.hash, meta),
            Some(Err(e)) => Err(e.clone()),
            None => Err("slide metadata missing".into()),
        });
        let units = state.units_of_input(input.id)?;
        let outputs = state.outputs_of_input(input.id)?;
        let failures = state.failures_of(input.id)?;
        let cx = judging.base.for_input(judging.dirs.of(input.id), &failures);
        let mut tiles = |u: &crate::store::UnitRow| -> Result<Vec<(u32, u32)>, StateError> {
            Ok(state
                .tiles_of_unit(u.id)?
                .into_iter()
                .map(|t| (t.x, t.y))
                .collect())
        };
        let p = judge::wsi(&cx, input, planned, units, outputs, &mut tiles)?;
        judging.olds.check()?;
        plans.push((input.clone(), p));
    }
    Ok(plans)
}

/// Each ROI input expanded into outputs and judged against its records and
/// against who else plans or owns the same paths.
fn plan_roi_inputs(
    state: &State,
    judging: &Judging<'_>,
    classified: &inputs::Classified,
) -> Result<Vec<(Arc<Input>, InputPlan)>, StateError> {
    let spec = judging.base.spec;
    let expanded: Vec<Result<Option<Vec<PlannedOutput>>, String>> = classified
        .detail
        .iter()
        .map(|d| expand::expand_roi(spec, &d.input.rel, &d.input.hash))
        .collect();
    let mut claims = RoiClaims::of(classified, &expanded);
    let mut plans = Vec::new();
    for (d, e) in classified.detail.iter().zip(expanded) {
        let input = &d.input;
        let recorded = state.outputs_of_input(input.id)?;
        let failures = state.failures_of(input.id)?;
        claims.add_owners(state, &e, &recorded)?;
        let cx = judging.base.for_input(judging.dirs.of(input.id), &failures);
        let p = judge::roi(&cx, input, e, recorded, &claims);
        judging.olds.check()?;
        plans.push((input.clone(), p));
    }
    Ok(plans)
}

/// `Ok` when no other slide of the collection has `rel`'s slide name (their
/// tiles would have the same names); otherwise the problem, naming them.
fn unique_slide_name(classified: &inputs::Classified, rel: &str) -> Result<(), String> {
    let name = crate::slide::slide_name(rel);
    match classified.slide_names.get(name) {
        Some(same) if same.len() > 1 => Err(format!(
            "slides {} have the same name up to the first dot, so their tiles would have the same names; rename one",
            same.join(" and ")
        )),
        Some(_) => Ok(()),
        None => Err(format!(
            "internal error: slide name `{name}` is missing from the collection's listing, so a slide of the same name cannot be ruled out; please report it"
        )),
    }
}
