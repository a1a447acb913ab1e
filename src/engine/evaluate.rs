//! Running a recipe's step DAG on one source (an ROI file's bytes, or one
//! grid cell of a slide).
//!
//! Each step is computed at most once per source, and only if a wanted sink
//! needs it, so a source with two sinks is decoded once, and a source whose
//! only stale output is one sink does not compute the others. A value is
//! dropped as soon as its last consumer has run (unless kept), so a chain
//! holds about two images at a time, not all of them: [`drops`] says when,
//! and the memory estimate of a job (`estimate.rs`) follows the same rule.

use crate::ops::Value;
use crate::recipe::Recipe;

/// An error of one step, naming it.
#[derive(Debug, Clone)]
pub struct StepError {
    pub step: String,
    pub op: &'static str,
    pub message: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step `{}` ({}): {}", self.step, self.op, self.message)
    }
}

/// The values of the steps computed for the wanted sinks; `None` for steps
/// no wanted sink needed.
pub struct Evaluated {
    pub values: Vec<Option<Value>>,
}

impl Evaluated {
    /// The value of step `i`, if it was computed.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.values.get(i).and_then(Option::as_ref)
    }
}

/// Computes `sinks` (step indices) and everything they need from `source`,
/// the value a step without `input` receives; the values of `sinks` and of
/// `keep` are returned, the others dropped once used. Steps run front to
/// back in the recipe's topological order — a loop, not a recursion, so a
/// chain of thousands of steps needs no stack.
pub fn evaluate(
    recipe: &Recipe,
    source: Value,
    sinks: &[usize],
    keep: &[usize],
) -> Result<Evaluated, StepError> {
    let needed = recipe.ancestors(sinks);
    let kept: Vec<usize> = sinks.iter().chain(keep).copied().collect();
    let drops = drops(recipe, &needed, &kept);
    let mut values: Vec<Option<Value>> = vec![None; recipe.steps.len()];
    for (i, step) in recipe.steps.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let inputs: Vec<Value> = if step.inputs.is_empty() {
            vec![source.clone()]
        } else {
            step.inputs
                .iter()
                .filter_map(|&j| values[j].clone())
                .collect()
        };
        let v = step.op.apply(&inputs).map_err(|e| StepError {
            step: step.id.clone(),
            op: step.op.name(),
            message: e.to_string(),
        })?;
        drop(inputs);
        values[i] = Some(v);
        for &j in &drops[i] {
            values[j] = None;
        }
    }
    Ok(Evaluated { values })
}

/// For each step, the values no longer needed once it has run: the inputs
/// whose last needed consumer it is, except those in `keep`.
pub fn drops(recipe: &Recipe, needed: &[bool], keep: &[usize]) -> Vec<Vec<usize>> {
    let n = recipe.steps.len();
    let mut last: Vec<Option<usize>> = vec![None; n];
    for (i, step) in recipe.steps.iter().enumerate() {
        if needed[i] {
            for &j in &step.inputs {
                last[j] = Some(i);
            }
        }
    }
    let mut drops = vec![Vec::new(); n];
    for (j, l) in last.into_iter().enumerate() {
        if let Some(i) = l {
            if !keep.contains(&j) {
                drops[i].push(j);
            }
        }
    }
    drops
}
