//! Running a recipe's step DAG on one source (an ROI file's bytes, or one
//! grid cell of a slide).
//!
//! Each step is computed at most once per source, and only if a wanted sink
//! needs it, so a source with two sinks is decoded once, and a source whose
//! only stale output is one sink does not compute the others.

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
/// the value a step without `input` receives. Steps run front to back in the
/// recipe's topological order — a loop, not a recursion, so a chain of
/// thousands of steps needs no stack.
pub fn evaluate(recipe: &Recipe, source: Value, sinks: &[usize]) -> Result<Evaluated, StepError> {
    let needed = recipe.ancestors(sinks);
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
        values[i] = Some(v);
    }
    Ok(Evaluated { values })
}
