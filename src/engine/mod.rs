//! Executing a plan: build the stale outputs in parallel, remove the orphans,
//! record every result.
//!
//! Invariants:
//! - An output is recorded only after its file is durably in place
//!   ([`atomic`]); a record therefore never points at a missing or partial
//!   file because of this process (a crash can only lose records, and a lost
//!   record means a rebuild, never a wrong file).
//! - One bad input never stops the others (unless `--fail-fast`); its error,
//!   naming the file, goes into the summary and the state, and the next build
//!   retries it.
//! - The engine writes only inside the output folder and only the paths the
//!   plan names.

pub mod atomic;
pub mod evaluate;
pub mod summary;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::plan::{BuildAction, Plan};
use crate::store::state::{now, Event};
use crate::store::{FailureRecord, OutputRecord, State, StateError};
use crate::workspace::Workspace;

pub use summary::{Failure, Summary};

/// The tool version recorded with every output (provenance, not the key).
pub const TOOL_VERSION: &str = concat!("cpia ", env!("CARGO_PKG_VERSION"));

/// How to run a build.
#[derive(Clone, Debug)]
pub struct Options {
    pub jobs: usize,
    /// Stop starting new work after the first failure.
    pub fail_fast: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// One source file and the outputs to make from it.
struct Unit<'a> {
    actions: Vec<&'a BuildAction>,
}

/// Executes `plan`: removals first (they free names), then builds.
pub fn run(
    plan: &Plan,
    ws: &Workspace,
    state: &mut State,
    opts: &Options,
) -> Result<Summary, EngineError> {
    let out = atomic::OutputDir::open(&ws.output).map_err(|e| {
        EngineError(format!(
            "preparing output folder {}: {e}",
            ws.output.display()
        ))
    })?;
    let mut summary = Summary {
        up_to_date: plan.up_to_date as u64,
        ..Summary::default()
    };
    for p in &plan.problems {
        summary.failed += p.outputs as u64;
        summary.failures.push(Failure {
            input: p.input.clone(),
            error: p.error.clone(),
        });
    }
    let mut events: Vec<Event> = Vec::new();
    for p in &plan.problems {
        if let Some((collection, root, rel)) = &p.source {
            events.push(Event::Failed(FailureRecord {
                collection: collection.clone(),
                source_root: root.clone(),
                source_rel: rel.clone(),
                source_hash: None,
                error: p.error.clone(),
                at: now(),
            }));
        }
    }
    for r in &plan.restat {
        events.push(Event::Built(Box::new(r.clone())));
    }
    for (hash, desc) in &plan.pipelines {
        state.put_pipeline(hash, desc).map_err(EngineError::state)?;
    }
    for rm in &plan.removes {
        match out.remove(&rm.record.path) {
            Ok(()) => {
                summary.removed += 1;
                events.push(Event::Removed(rm.record.path.clone()));
            }
            Err(e) => {
                summary.failed += 1;
                summary.failures.push(Failure {
                    input: rm.record.path.clone(),
                    error: format!("cannot remove: {e}"),
                });
            }
        }
    }
    state.record(&events).map_err(EngineError::state)?;

    // Group outputs by source file, so each source is read and decoded once.
    let mut groups: BTreeMap<(&str, &std::path::Path), Vec<&BuildAction>> = BTreeMap::new();
    for b in &plan.builds {
        groups
            .entry((b.output.collection.as_str(), b.output.source_abs.as_path()))
            .or_default()
            .push(b);
    }
    let units: Vec<Unit> = groups
        .into_values()
        .map(|actions| Unit { actions })
        .collect();
    let total: u64 = plan.builds.len() as u64;
    let bar = summary::progress_bar(total, opts.progress);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .build()
        .map_err(|e| EngineError(format!("starting worker threads: {e}")))?;
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<UnitResult>();
    let recorded = std::thread::scope(|scope| {
        let recorder = scope.spawn(move || record_results(state, rx));
        pool.install(|| {
            units.par_iter().for_each_with(tx, |tx, unit| {
                if stop.load(Ordering::Relaxed) {
                    let _ = tx.send(UnitResult::Skipped(unit.actions.len()));
                    return;
                }
                let res = build_unit(unit, &out);
                if opts.fail_fast && matches!(res, UnitResult::Failed { .. }) {
                    stop.store(true, Ordering::Relaxed);
                }
                bar.inc(unit.actions.len() as u64);
                let _ = tx.send(res);
            });
        });
        recorder.join()
    });
    bar.finish_and_clear();
    out.finish();
    let tally = match recorded {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(EngineError::state(e)),
        Err(_) => return Err(EngineError("the result recorder panicked".into())),
    };
    summary.built += tally.built;
    summary.failed += tally.failed;
    summary.skipped += tally.skipped;
    summary.failures.extend(tally.failures);
    Ok(summary)
}

enum UnitResult {
    Built(Vec<OutputRecord>, Option<(String, String)>),
    Failed {
        failure: FailureRecord,
        input: String,
        outputs: usize,
        written: Vec<OutputRecord>,
    },
    Skipped(usize),
}

fn build_unit(unit: &Unit, out: &atomic::OutputDir) -> UnitResult {
    let first = unit.actions[0];
    let o = &first.output;
    let fail = |error: String, written: Vec<OutputRecord>, outputs: usize| UnitResult::Failed {
        failure: FailureRecord {
            collection: o.collection.clone(),
            source_root: o.source_root.clone(),
            source_rel: o.source_rel.clone(),
            source_hash: Some(o.source_hash.clone()),
            error: error.clone(),
            at: now(),
        },
        input: o.source_abs.display().to_string(),
        outputs,
        written,
    };
    let bytes = match std::fs::read(&o.source_abs) {
        Ok(b) => Arc::new(b),
        Err(e) => return fail(format!("cannot read: {e}"), vec![], unit.actions.len()),
    };
    if crate::plan::sources::hash_bytes(&bytes) != o.source_hash {
        return fail(
            "source changed while the build was running; build again".into(),
            vec![],
            unit.actions.len(),
        );
    }
    let sinks: Vec<usize> = unit.actions.iter().map(|a| a.output.sink).collect();
    let encoded = match evaluate::evaluate(&first.recipe, bytes, &sinks) {
        Ok(v) => v,
        Err(e) => return fail(e.to_string(), vec![], unit.actions.len()),
    };
    let mut records = Vec::with_capacity(unit.actions.len());
    for (a, data) in unit.actions.iter().zip(encoded) {
        match out.write(&a.output.path, &data) {
            Ok(w) => records.push(record_for(a, &data, w)),
            Err(e) => {
                let remaining = unit.actions.len() - records.len();
                return fail(
                    format!("cannot write {}: {e}", a.output.path),
                    records,
                    remaining,
                );
            }
        }
    }
    UnitResult::Built(records, Some((o.collection.clone(), o.source_rel.clone())))
}

fn record_for(a: &BuildAction, data: &[u8], w: atomic::Written) -> OutputRecord {
    let o = &a.output;
    OutputRecord {
        path: o.path.clone(),
        collection: o.collection.clone(),
        key: o.key.clone(),
        content_hash: crate::plan::sources::hash_bytes(data),
        size: w.size,
        mtime_ns: w.mtime_ns,
        source_root: o.source_root.clone(),
        source_rel: o.source_rel.clone(),
        source_hash: o.source_hash.clone(),
        pipeline_hash: a.pipeline_hash.clone(),
        recipe_hash: a.recipe.hash.clone(),
        tool_version: TOOL_VERSION.to_string(),
        sub_dataset: o.sub_dataset.clone(),
        scale: o.scale.clone(),
        class: o.class.clone(),
        built_at: now(),
    }
}

#[derive(Default)]
struct Tally {
    built: u64,
    failed: u64,
    skipped: u64,
    failures: Vec<Failure>,
}

/// Records results in batches: one transaction per 512 events or 200 ms,
/// whichever comes first, so the state keeps up with thousands of small
/// outputs per second and a kill loses at most the last batch's records.
fn record_results(state: &mut State, rx: mpsc::Receiver<UnitResult>) -> Result<Tally, StateError> {
    let mut tally = Tally::default();
    let mut batch: Vec<Event> = Vec::new();
    let mut last = Instant::now();
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        match msg {
            Ok(UnitResult::Built(records, ok)) => {
                tally.built += records.len() as u64;
                batch.extend(records.into_iter().map(|r| Event::Built(Box::new(r))));
                if let Some((collection, source_rel)) = ok {
                    batch.push(Event::Succeeded {
                        collection,
                        source_rel,
                    });
                }
            }
            Ok(UnitResult::Failed {
                failure,
                input,
                outputs,
                written,
            }) => {
                tally.built += written.len() as u64;
                batch.extend(written.into_iter().map(|r| Event::Built(Box::new(r))));
                tally.failed += outputs as u64;
                tally.failures.push(Failure {
                    input,
                    error: failure.error.clone(),
                });
                batch.push(Event::Failed(failure));
            }
            Ok(UnitResult::Skipped(n)) => tally.skipped += n as u64,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if batch.len() >= 512 || (!batch.is_empty() && last.elapsed() >= Duration::from_millis(200))
        {
            state.record(&batch)?;
            batch.clear();
            last = Instant::now();
        }
    }
    state.record(&batch)?;
    tally.failures.sort_by(|a, b| a.input.cmp(&b.input));
    Ok(tally)
}

/// A failure of the build machinery itself (not of one input).
#[derive(Debug)]
pub struct EngineError(pub String);

impl EngineError {
    fn state(e: StateError) -> EngineError {
        EngineError(e.to_string())
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for EngineError {}
