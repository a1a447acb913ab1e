//! ROI jobs: one source file, read (at admission) and decoded once, its
//! steps run, and every output it feeds written and recorded together.

use std::sync::Arc;

use super::{atomic, budget, evaluate, failed_job, JobContext, JobResult, Outcome};
use crate::plan::BuildAction;
use crate::store::state::now;
use crate::store::{Event, OutputRecord, WrittenFile};

/// The failure of a ROI source's remaining `outputs`.
pub(super) fn roi_failure(first: &BuildAction, error: String, outputs: usize) -> JobResult {
    let i = &first.input;
    failed_job(
        i.id,
        "",
        &i.hash,
        i.abs.display().to_string(),
        error,
        outputs as u64,
    )
}

/// Decodes one admitted ROI source and runs its steps; the writing of the
/// encoded outputs is returned as a commit for the I/O threads, holding only
/// the memory of those outputs.
pub(super) fn build_roi<'a>(
    actions: &'a [&'a BuildAction],
    cx: &'a JobContext<'_>,
    bytes: Arc<Vec<u8>>,
    mut grant: budget::Grant<'a>,
) -> Outcome<'a> {
    let first = actions[0];
    let fail = |error: String| Outcome::Done(roi_failure(first, error, actions.len()));
    let sinks: Vec<usize> = actions.iter().map(|a| a.output.sink).collect();
    let source = crate::ops::Value::Bytes(bytes);
    let evaluated = match evaluate::evaluate(&first.spec.recipe, source, &sinks, &[]) {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    let encoded: Vec<Option<Arc<Vec<u8>>>> = actions
        .iter()
        .map(|a| match evaluated.get(a.output.sink) {
            Some(crate::ops::Value::Encoded(data)) => Some(data.clone()),
            _ => None,
        })
        .collect();
    drop(evaluated);
    grant.shrink_to(encoded.iter().flatten().map(|e| e.len() as u64).sum());
    Outcome::Commit(Box::new(move || {
        let _grant = grant;
        commit_roi(actions, cx, &encoded)
    }))
}

/// Writes a ROI source's outputs and records them.
fn commit_roi(
    actions: &[&BuildAction],
    cx: &JobContext<'_>,
    encoded: &[Option<Arc<Vec<u8>>>],
) -> JobResult {
    let first = actions[0];
    let mut result = JobResult::default();
    let mut error = None;
    for (a, data) in actions.iter().zip(encoded) {
        let Some(data) = data else {
            error = Some(format!(
                "step `{}` did not produce encoded bytes",
                first.spec.recipe.steps[a.output.sink].id
            ));
            break;
        };
        match cx.out.write(&a.output.path(), data) {
            Ok(w) => {
                result.built += 1;
                result
                    .events
                    .push(Event::Output(Box::new(record_for(a, data, w, cx))));
            }
            Err(e) => {
                result.dirty_dirs.push(a.output.dir.clone());
                error = Some(format!("cannot write {}: {e}", a.output.path()));
                break;
            }
        }
    }
    // The renames are made durable before anything is recorded; if they
    // cannot be, nothing is.
    let placed = actions[..result.built as usize]
        .iter()
        .map(|a| a.output.dir.as_str());
    if let Err(e) = cx.out.sync_dirs(placed) {
        let mut f = roi_failure(
            first,
            format!("cannot make the outputs durable: {e}"),
            actions.len(),
        );
        f.dirty_dirs = actions.iter().map(|a| a.output.dir.clone()).collect();
        return f;
    }
    if let Some(error) = error {
        let mut f = roi_failure(first, error, actions.len() - result.built as usize);
        f.events.splice(0..0, result.events);
        f.built = result.built;
        f.dirty_dirs = result.dirty_dirs;
        return f;
    }
    result.events.push(Event::Succeeded {
        input: first.input.id,
        unit: String::new(),
    });
    result
}

fn record_for(
    a: &BuildAction,
    data: &[u8],
    w: atomic::Written,
    cx: &JobContext<'_>,
) -> OutputRecord {
    let o = &a.output;
    OutputRecord {
        input: a.input.id,
        dir: o.dir.clone(),
        name: o.name.clone(),
        sink: a.spec.recipe.steps[o.sink].id.clone(),
        pipeline_hash: a.pipeline_hash().to_string(),
        source_hash: a.input.hash.clone(),
        class: o.class.clone(),
        maker: cx.maker(),
        read: None,
        file: WrittenFile {
            ino: w.ino,
            size: w.size,
            mtime_ns: w.mtime_ns,
            content_hash: crate::plan::sources::hash_bytes(data),
        },
        built_at: now(),
        build: cx.build,
    }
}
