//! Why an output is out of date, in words: the reasons `cpia plan --explain`
//! prints, derived by comparing the key ingredients recorded for the output
//! with the ones computed now (see [`super::key`] for the ingredients).

use super::key::Pipeline;

/// Reasons an output (or WSI unit) recorded under another key must be
/// rebuilt, from the recorded and current source hash and pipeline.
pub fn key_change(
    old_source_hash: &str,
    old_pipeline_hash: &str,
    source_hash: &str,
    source_rel: &str,
    pipeline_hash: &str,
    old: Option<&Pipeline>,
    new: Option<&Pipeline>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if old_source_hash != source_hash {
        reasons.push(format!("source content changed ({source_rel})"));
    }
    if old_pipeline_hash != pipeline_hash {
        match (old, new) {
            (Some(old), Some(new)) => reasons.extend(pipeline_diff(old, new)),
            _ => reasons.push("recipe steps changed".into()),
        }
    }
    if reasons.is_empty() {
        reasons.push("key format changed".into());
    }
    reasons
}

/// The differences between two pipelines, step by step.
pub fn pipeline_diff(old: &Pipeline, new: &Pipeline) -> Vec<String> {
    let mut out = Vec::new();
    if old.hash == new.hash {
        return out;
    }
    for (i, n) in new.steps.iter().enumerate() {
        let Some(o) = old.steps.get(i) else {
            out.push(format!("step `{}` ({}) was added", n.id, n.op));
            continue;
        };
        if o.op != n.op {
            out.push(format!(
                "step `{}` changed operator ({} -> {})",
                n.id, o.op, n.op
            ));
            continue;
        }
        if o.version != n.version {
            out.push(format!(
                "operator version of {} (step `{}`) changed ({} -> {})",
                n.op, n.id, o.version, n.version
            ));
        }
        for (k, v) in &n.params {
            match o.params.iter().find(|(ok, _)| ok == k) {
                Some((_, ov)) if ov == v => {}
                Some((_, ov)) => out.push(format!(
                    "parameter `{k}` of step `{}` changed ({ov} -> {v})",
                    n.id
                )),
                None => out.push(format!(
                    "parameter `{k}` of step `{}` was added ({v})",
                    n.id
                )),
            }
        }
        for (k, ov) in &o.params {
            if !n.params.iter().any(|(nk, _)| nk == k) {
                out.push(format!(
                    "parameter `{k}` of step `{}` was removed (was {ov})",
                    n.id
                ));
            }
        }
        if o.inputs != n.inputs {
            out.push(format!("inputs of step `{}` changed", n.id));
        }
    }
    for o in old.steps.iter().skip(new.steps.len()) {
        out.push(format!("step `{}` ({}) was removed", o.id, o.op));
    }
    if old.encoder != new.encoder {
        out.push(format!(
            "JPEG encoder changed ({} -> {})",
            old.encoder, new.encoder
        ));
    }
    if out.is_empty() {
        out.push("recipe steps changed".into());
    }
    out
}
