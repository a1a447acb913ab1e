//! Running a recipe's step DAG on one source file.
//!
//! Each step is computed at most once per source, and only if a wanted sink
//! needs it, so a source with two sinks is decoded once, and a source whose
//! only stale output is one sink does not compute the others.

use std::sync::Arc;

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

/// Computes the values of `sinks` (step indices) from the source bytes.
/// Returns one result per wanted sink, in order.
pub fn evaluate(
    recipe: &Recipe,
    source: Arc<Vec<u8>>,
    sinks: &[usize],
) -> Result<Vec<Arc<Vec<u8>>>, StepError> {
    let mut values: Vec<Option<Value>> = vec![None; recipe.steps.len()];
    let mut out = Vec::with_capacity(sinks.len());
    for &sink in sinks {
        compute(recipe, &source, sink, &mut values)?;
        match &values[sink] {
            Some(Value::Encoded(bytes)) => out.push(bytes.clone()),
            _ => {
                return Err(StepError {
                    step: recipe.steps[sink].id.clone(),
                    op: recipe.steps[sink].op.name(),
                    message: "a sink must produce encoded bytes".into(),
                })
            }
        }
    }
    Ok(out)
}

fn compute(
    recipe: &Recipe,
    source: &Arc<Vec<u8>>,
    i: usize,
    values: &mut Vec<Option<Value>>,
) -> Result<(), StepError> {
    if values[i].is_some() {
        return Ok(());
    }
    let step = &recipe.steps[i];
    for &j in &step.inputs {
        compute(recipe, source, j, values)?;
    }
    let inputs: Vec<Value> = if step.inputs.is_empty() {
        vec![Value::Bytes(source.clone())]
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
    Ok(())
}
