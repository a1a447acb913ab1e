//! Where a build's results go: the [`Recorder`] — the state database for a
//! local build, a worker's journal for a Slurm array task — and the thread
//! that hands results to it in batches ([`record_results`]).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::store::{Event, State};

use super::summary::Failure;
use super::EngineError;

/// The kept/rejected decision of each recorded cell of one slide, which its
/// QC picture draws (`wsi.rs`).
pub type Decisions = HashMap<(u32, u32), bool>;

/// Takes the results of a build's jobs, in the order they finished.
///
/// Called from one thread at a time, only with results whose files are
/// already durably in place; what `record` accepted must survive a crash
/// once it returns (a transaction, or an appended and synced journal).
pub trait Recorder: Send {
    /// Records a batch of job results (it may take their events).
    fn record(&mut self, results: &mut [JobResult]) -> Result<(), EngineError>;

    /// The kept/rejected decision of every recorded cell of a slide, for its
    /// QC picture: what was recorded before this build, updated by what this
    /// build recorded since.
    fn decisions(&mut self, input: i64) -> Result<Decisions, EngineError>;
}

impl Recorder for State {
    fn record(&mut self, results: &mut [JobResult]) -> Result<(), EngineError> {
        let events: Vec<Event> = results
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.events))
            .collect();
        State::record(self, &events).map_err(EngineError::state)
    }

    fn decisions(&mut self, input: i64) -> Result<Decisions, EngineError> {
        State::decisions(self, input).map_err(EngineError::state)
    }
}

/// What one job did: the events to record and what the summary counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobResult {
    /// Events to record, in order (outputs, removals, units, failures).
    pub events: Vec<Event>,
    pub built: u64,
    pub removed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub failure: Option<Failure>,
    /// The input is not complete after this job (it failed or was skipped).
    pub incomplete: Option<i64>,
    /// Output folders where a write or removal failed part-way: their
    /// identity is not recorded, so the next build verifies them.
    pub dirty_dirs: Vec<String>,
}

impl JobResult {
    /// Whether it says nothing (a thumbnail read ahead).
    pub fn is_empty(&self) -> bool {
        *self == JobResult::default()
    }
}

/// What the recorder counted.
#[derive(Debug, Default)]
pub struct Tally {
    pub built: u64,
    pub removed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub failures: Vec<Failure>,
    pub incomplete: HashSet<i64>,
    pub dirty_dirs: HashSet<String>,
}

impl Tally {
    /// Adds another tally.
    pub fn add(&mut self, t: Tally) {
        self.built += t.built;
        self.removed += t.removed;
        self.failed += t.failed;
        self.skipped += t.skipped;
        self.failures.extend(t.failures);
        self.incomplete.extend(t.incomplete);
        self.dirty_dirs.extend(t.dirty_dirs);
    }

    /// Counts one job's result.
    pub fn count(&mut self, r: &JobResult) {
        self.built += r.built;
        self.removed += r.removed;
        self.failed += r.failed;
        self.skipped += r.skipped;
        self.failures.extend(r.failure.iter().cloned());
        self.incomplete.extend(r.incomplete);
        self.dirty_dirs.extend(r.dirty_dirs.iter().cloned());
    }
}

/// Events per batch handed to the recorder, at most.
const BATCH_EVENTS: usize = 512;
/// Longest a finished result waits before it is recorded.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// Records results in batches: one call of `rec` per 512 events or 200 ms,
/// whichever comes first, so the state keeps up with thousands of small
/// outputs per second and a kill loses at most the last batch's records.
pub(super) fn record_results(
    rec: &mut dyn Recorder,
    rx: mpsc::Receiver<JobResult>,
) -> Result<Tally, EngineError> {
    let mut tally = Tally::default();
    let mut batch: Vec<JobResult> = Vec::new();
    let mut events = 0usize;
    let mut last = Instant::now();
    loop {
        match rx.recv_timeout(BATCH_WAIT) {
            Ok(r) => {
                tally.count(&r);
                if !r.is_empty() {
                    events += r.events.len();
                    batch.push(r);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if events >= BATCH_EVENTS || (!batch.is_empty() && last.elapsed() >= BATCH_WAIT) {
            rec.record(&mut batch)?;
            batch.clear();
            events = 0;
            last = Instant::now();
        }
    }
    if !batch.is_empty() {
        rec.record(&mut batch)?;
    }
    Ok(tally)
}
