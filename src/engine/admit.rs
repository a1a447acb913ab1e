//! Admitting jobs: reading what a job needs to know its memory, waiting for
//! that memory in the budget, then letting it compute (an ROI job on its
//! lane, a cell in the worker pool).
//!
//! Admission runs on lane threads of its own ([`lanes`]), one per job in
//! flight, never on the pool's workers: a worker that waits for memory
//! inside a job would hold its own job's memory while a worker stuck in a
//! nested wait (rayon runs other jobs while it joins) could never give it
//! back. Only admitted jobs compute, and they never wait for memory.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::budget::{human, Budget, Grant, TooLarge};
use super::estimate::{self, Need};
use super::roi::roi_failure;
use super::{Job, JobResult};
use crate::ops::probe::Header;
use crate::plan::BuildAction;

/// A job ready to run, with its memory granted.
pub(super) enum Admitted<'b> {
    /// An ROI source, read (and checked against its planned hash).
    Roi {
        bytes: Arc<Vec<u8>>,
        grant: Grant<'b>,
    },
    Cell(Grant<'b>),
    /// A thumbnail to read ahead, if the budget has room for it now.
    Thumbnail(Option<Grant<'b>>),
    /// The job fails before it starts.
    Failed(JobResult),
}

/// Reads what `job` needs to be estimated, then waits until `budget` has its
/// need; a need beyond the whole budget fails the job at once.
pub(super) fn admit<'b>(job: &Job<'_>, budget: &'b Budget) -> Admitted<'b> {
    match job {
        Job::Roi(actions) => roi(actions, budget),
        Job::Cell(actions) => {
            let need = estimate::cell(actions);
            match budget.acquire(need.bytes) {
                Ok(grant) => Admitted::Cell(grant),
                Err(e) => {
                    Admitted::Failed(super::tiles::cell_failure(actions, too_large(&need, &e)))
                }
            }
        }
        // Reading ahead is an optimisation: with no room now, the QC phase
        // reads the thumbnail itself.
        Job::Thumbnail(_) => Admitted::Thumbnail(budget.try_acquire(estimate::thumbnail().bytes)),
    }
}

/// Bytes read first: enough for the header of any JPEG, PNG or BMP (a JPEG's
/// frame header follows at most a few 64 KiB metadata segments).
const HEADER_PREFIX: u64 = 1 << 20;

fn roi<'b>(actions: &[&BuildAction], budget: &'b Budget) -> Admitted<'b> {
    let first = actions[0];
    let input = &first.input;
    let fail = |error: String| Admitted::Failed(roi_failure(first, error, actions.len()));
    let sinks: Vec<usize> = actions.iter().map(|a| a.output.sink).collect();
    let estimate = |len: u64, h: Option<&Header>| estimate::roi(&first.spec.recipe, &sinks, len, h);
    // Without blocking (a FIFO swapped in after planning), a regular file
    // only (not a link to /dev/zero), read no further than its size.
    let (mut file, len) = match crate::regular_file::open(&input.abs) {
        Ok((f, m)) => (f, m.len()),
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    let read_rest = |file: &mut std::fs::File, bytes: &mut Vec<u8>| {
        crate::regular_file::read_rest(file, len, bytes)
    };
    // A file larger than the whole budget is not even read.
    let whole = Need {
        bytes: len,
        what: "the file itself".into(),
    };
    if let Err(e) = budget.check(len) {
        return fail(too_large(&whole, &e));
    }
    // The header, from the first bytes: the need is known, and waited for,
    // before the file is read (so a waiting job holds no more than that).
    // Sized up front, not grown from empty by doubling (9 fewer `read`s per
    // picture of the ROI bench; no measurable time).
    let mut bytes = Vec::with_capacity(len.min(HEADER_PREFIX) as usize);
    if let Err(e) = (&mut file).take(HEADER_PREFIX).read_to_end(&mut bytes) {
        return fail(format!("cannot read: {e}"));
    }
    let grant = match crate::ops::probe::header(&bytes) {
        Ok(h) => {
            let need = estimate(len, Some(&h));
            match budget.acquire(need.bytes) {
                Ok(grant) => {
                    if let Err(e) = read_rest(&mut file, &mut bytes) {
                        return fail(format!("cannot read: {e}"));
                    }
                    grant
                }
                Err(e) => {
                    // Too large as its header says; but if its data cannot
                    // hold that many pixels (the header lies), the decode
                    // step says so, which is the better error.
                    if let Err(e) = read_rest(&mut file, &mut bytes) {
                        return fail(format!("cannot read: {e}"));
                    }
                    if crate::ops::probe::probe(&bytes).is_ok() {
                        return fail(too_large(&need, &e));
                    }
                    match budget.acquire(bytes.len() as u64) {
                        Ok(g) => g,
                        Err(e) => return fail(too_large(&whole, &e)),
                    }
                }
            }
        }
        // The header lies further in (a TIFF directory at the end), or the
        // file is not an image (the decode step will say why): read it
        // within the budget first, then take what decoding it needs.
        Err(_) => {
            let mut grant = match budget.acquire(len) {
                Ok(g) => g,
                Err(e) => return fail(too_large(&whole, &e)),
            };
            if let Err(e) = read_rest(&mut file, &mut bytes) {
                return fail(format!("cannot read: {e}"));
            }
            let header = crate::ops::probe::header(&bytes).ok();
            let need = estimate(bytes.len() as u64, header.as_ref());
            if let Err(e) = grant.grow_to(need.bytes) {
                return fail(too_large(&need, &e));
            }
            grant
        }
    };
    if crate::plan::sources::hash_bytes(&bytes) != input.hash {
        return fail("source changed while the build was running; build again".into());
    }
    Admitted::Roi {
        bytes: Arc::new(bytes),
        grant,
    }
}

/// The error of a job that needs more than the whole budget.
fn too_large(need: &Need, e: &TooLarge) -> String {
    format!(
        "needs an estimated {} of memory ({}), {e}; give the build more (--max-memory, or \
         max_memory in cpia.toml) if the machine has it",
        human(need.bytes),
        need.what
    )
}

/// Runs `f` on each of `jobs` (each once, in index order of taking) from
/// `lanes` threads of their own, each with its own clone of `state`.
pub(super) fn lanes<'j, T: Sync, S: Clone + Send>(
    jobs: &'j [T],
    lanes: usize,
    state: S,
    f: impl Fn(&mut S, &'j T) + Sync,
) {
    let next = AtomicUsize::new(0);
    let (next, f) = (&next, &f);
    std::thread::scope(|scope| {
        for _ in 0..lanes.clamp(1, jobs.len().max(1)) {
            let mut state = state.clone();
            scope.spawn(move || {
                while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    f(&mut state, job);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_run_every_job_once() {
        let jobs: Vec<u64> = (0..1000).collect();
        let sum = std::sync::atomic::AtomicU64::new(0);
        lanes(&jobs, 3, (), |_, j| {
            sum.fetch_add(*j, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000 / 2);
        lanes(&[] as &[u64], 3, (), |_, _| panic!("no job"));
    }
}
