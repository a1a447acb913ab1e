//! Executing plans: build the stale outputs in parallel, remove the orphans,
//! record every result — one collection plan at a time ([`Engine::run`]);
//! [`driver`] plans and runs a whole build. Results go to a [`Recorder`]
//! ([`record`]): the state database, or — in a Slurm array task, which must
//! not open it — the task's journal; [`cluster`] runs a build as Slurm job
//! arrays and merges the journals.
//!
//! Invariants:
//! - An output is recorded only after its file is durably in place
//!   ([`atomic`]); a record therefore never points at a missing or partial
//!   file because of this process (a crash can only lose records, and a lost
//!   record means a rebuild, never a wrong file).
//! - One bad input never stops the others (unless `--fail-fast`); its error,
//!   naming the file, goes into the summary and the state, and the next build
//!   retries it.
//! - An input is marked complete (skippable by later plans) only after every
//!   job of it succeeded and was recorded.
//! - The engine writes only inside the output folder and only the paths the
//!   plan names.

mod admit;
pub mod atomic;
pub mod budget;
pub mod cluster;
pub mod confined;
pub mod debug;
pub mod driver;
pub mod estimate;
pub mod evaluate;
pub mod interrupt;
pub mod note;
mod out_clock;
pub mod record;
mod roi;
pub mod summary;
mod tiles;
pub mod writeback;
pub mod wsi;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::plan::inputs::Folder;
use crate::plan::{BuildAction, CollectionPlan, QcAction, UnitAction};
use crate::store::state::now;
use crate::store::{Event, FailureRecord, Maker, State, StateError};

pub use crate::plan::TOOL_VERSION;
pub use note::{Note, Notes};
pub use record::{JobResult, Recorder, Tally};
pub use summary::{Failure, Summary};

/// How to run a build.
#[derive(Clone, Debug)]
pub struct Options {
    pub jobs: usize,
    /// Stop starting new work after the first failure.
    pub fail_fast: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// The memory budget of the jobs in flight.
    pub memory: budget::Limit,
}

/// One unit of parallel work.
enum Job<'a> {
    /// One ROI source file and the outputs to make from it (read and decoded once).
    Roi(Vec<&'a BuildAction>),
    /// One grid cell of a slide and the writing steps to run on it (read once).
    Cell(Vec<&'a UnitAction>),
    /// Reading a QC thumbnail early, so the QC phase only draws.
    Thumbnail(&'a QcAction),
}

impl Job<'_> {
    /// Progress weight: outputs for ROI, units for WSI.
    fn weight(&self) -> u64 {
        match self {
            Job::Roi(a) => a.len() as u64,
            Job::Cell(a) => a.len() as u64,
            Job::Thumbnail(_) => 0,
        }
    }

    /// The input the job works for.
    fn input(&self) -> i64 {
        match self {
            Job::Roi(a) => a[0].input.id,
            Job::Cell(a) => a[0].input.id,
            Job::Thumbnail(q) => q.input.id,
        }
    }
}

/// A build in progress: the output folder, the worker and I/O threads, the
/// open slides; shared by the collection plans it runs.
pub struct Engine {
    out: atomic::OutputDir,
    pool: rayon::ThreadPool,
    io: Io,
    slides: wsi::SlideCache,
    stop: AtomicBool,
    opts: Options,
    build: i64,
    /// Inputs not complete after this build (failed or skipped).
    incomplete: HashSet<i64>,
    /// Output folders a failed write or removal left unverified.
    dirty_dirs: HashSet<String>,
    /// The memory budget of the jobs in flight.
    memory: budget::Budget,
    /// While the engine lives, a Ctrl-C lets the jobs in progress finish.
    _graceful: interrupt::Graceful,
}

impl Engine {
    /// Prepares the output folder and the threads of build `build`.
    pub fn new(
        output: &std::path::Path,
        opts: &Options,
        build: i64,
    ) -> Result<Engine, EngineError> {
        let out = atomic::OutputDir::open(output).map_err(|e| {
            EngineError(format!("preparing output folder {}: {e}", output.display()))
        })?;
        Engine::with_output(out, opts, build)
    }

    /// The engine of one task attempt of a cluster build: its temporaries
    /// in a folder of its own (`tag`: unique per attempt), nothing else of
    /// the output folder's temporaries touched.
    pub fn for_task(
        output: &std::path::Path,
        tag: &str,
        opts: &Options,
        build: i64,
    ) -> Result<Engine, EngineError> {
        let out = atomic::OutputDir::open_task(output, tag).map_err(|e| {
            EngineError(format!("preparing output folder {}: {e}", output.display()))
        })?;
        Engine::with_output(out, opts, build)
    }

    fn with_output(
        out: atomic::OutputDir,
        opts: &Options,
        build: i64,
    ) -> Result<Engine, EngineError> {
        crate::ops::pool::limit_bytes(opts.memory.bytes / 8);
        // However many jobs were asked for (cli says when it lowers them).
        let opts = &Options {
            jobs: crate::threads::cap(opts.jobs),
            ..opts.clone()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.jobs)
            .build()
            .map_err(|e| EngineError(format!("starting worker threads: {e}")))?;
        Ok(Engine {
            out,
            pool,
            io: Io::new(opts.jobs)?,
            slides: wsi::SlideCache::new(opts.jobs.max(1) + 1),
            stop: AtomicBool::new(false),
            opts: opts.clone(),
            build,
            incomplete: HashSet::new(),
            dirty_dirs: HashSet::new(),
            memory: budget::Budget::new(&opts.memory),
            _graceful: interrupt::Graceful::enter(),
        })
    }

    /// The output folder.
    pub fn output(&self) -> &atomic::OutputDir {
        &self.out
    }

    /// Whether `--fail-fast` stopped the build.
    /// (or a Ctrl-C asked it to stop).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || interrupt::requested()
    }

    /// Output folders whose identity must not be recorded.
    pub fn dirty_dirs(&self) -> &HashSet<String> {
        &self.dirty_dirs
    }

    /// Inputs not complete after this build (failed, skipped, or not done).
    pub fn incomplete(&self) -> &HashSet<i64> {
        &self.incomplete
    }

    /// Adds what work done elsewhere (Slurm tasks, merged from their
    /// journals) left incomplete or unverified.
    pub fn absorb(&mut self, t: &Tally) {
        self.incomplete.extend(t.incomplete.iter().copied());
        self.dirty_dirs.extend(t.dirty_dirs.iter().cloned());
    }

    /// Executes one collection's plan: removals first (they free names),
    /// then builds, then the WSI QC pictures (which draw the decisions the
    /// builds recorded), then marks the inputs whose work all succeeded
    /// complete.
    pub fn run(
        &mut self,
        state: &mut State,
        plan: &CollectionPlan,
    ) -> Result<Summary, EngineError> {
        let mut summary = self.settle(state, plan)?;
        if self.stopped() {
            summary.skipped += plan.building() as u64;
            return Ok(summary);
        }
        summary.merge(self.execute(state, plan)?);
        Ok(summary)
    }

    /// Everything of a collection's plan that is not a job: its problems,
    /// pipelines and record updates are recorded, and (unless `--fail-fast`
    /// stopped the build) its removals done. A Slurm build's coordinator
    /// runs this before it submits the jobs.
    pub fn settle(
        &mut self,
        state: &mut State,
        plan: &CollectionPlan,
    ) -> Result<Summary, EngineError> {
        let mut summary = Summary {
            up_to_date: plan.up_to_date,
            ..Summary::default()
        };
        let mut events: Vec<Event> = Vec::new();
        for p in &plan.problems {
            summary.failed += p.outputs as u64;
            summary.failures.push(Failure {
                input: p.input.clone(),
                error: p.error.clone(),
            });
            if let Some(id) = p.input_id {
                self.incomplete.insert(id);
                events.push(Event::Failed(FailureRecord {
                    input: id,
                    unit: String::new(),
                    source_hash: None,
                    error: p.error.clone(),
                    at: now(),
                }));
            }
        }
        for (hash, desc) in &plan.pipelines {
            state.pipeline_id(hash, desc).map_err(EngineError::state)?;
        }
        events.extend(plan.updates.iter().cloned());
        if self.stopped() {
            state.record(&events).map_err(EngineError::state)?;
            return Ok(summary);
        }
        for rm in &plan.removals {
            let mut all = true;
            for (path, ev) in &rm.files {
                match self.out.remove(path) {
                    Ok(()) => {
                        summary.removed += 1;
                        events.push(ev.clone());
                    }
                    Err(e) => {
                        all = false;
                        summary.failed += 1;
                        summary.failures.push(Failure {
                            input: path.clone(),
                            error: format!("cannot remove: {e}"),
                        });
                        if let Some((dir, _)) = path.rsplit_once('/') {
                            self.dirty_dirs.insert(dir.to_string());
                        }
                    }
                }
            }
            if let (true, Some(then)) = (all, &rm.then) {
                events.push(then.clone());
            }
        }
        state.record(&events).map_err(EngineError::state)?;
        Ok(summary)
    }

    /// Runs a collection plan's jobs — its ROI outputs, WSI units and QC
    /// pictures — recording their results with `rec`, then marks every
    /// input of `plan.complete` whose work all succeeded complete.
    pub fn execute(
        &mut self,
        rec: &mut dyn Recorder,
        plan: &CollectionPlan,
    ) -> Result<Summary, EngineError> {
        let mut summary = Summary::default();
        // Group ROI outputs by source file, WSI units by slide cell.
        let mut roi: BTreeMap<i64, Vec<&BuildAction>> = BTreeMap::new();
        for b in &plan.builds {
            roi.entry(b.input.id).or_default().push(b);
        }
        let mut cells: BTreeMap<(&str, u32, u32), Vec<&UnitAction>> = BTreeMap::new();
        for u in &plan.units {
            cells
                .entry((u.input.rel.as_str(), u.unit.cell.1, u.unit.cell.0))
                .or_default()
                .push(u);
        }
        // Large cells are built one after another, every worker inside the
        // cell (its read, resize, tests, encodes and writes are parallel):
        // peak memory is one large cell's buffers instead of one per worker,
        // and the pool hands them, already mapped, to the next cell.
        let (large, small): (Vec<_>, Vec<_>) = cells
            .into_values()
            .partition(|c| wsi::region_bytes(c[0]) >= wsi::LARGE_CELL_BYTES);
        let jobs: Vec<Job> = roi
            .into_values()
            .map(Job::Roi)
            .chain(small.into_iter().map(Job::Cell))
            .chain(plan.qc.iter().map(Job::Thumbnail))
            .collect();
        let mut large: Vec<Job> = large.into_iter().map(Job::Cell).collect();
        let total: u64 = jobs.iter().chain(&large).map(Job::weight).sum();
        let bar = summary::progress_bar(total, self.opts.progress);
        let maker = plan.spec.as_ref().map(|s| Maker {
            recipe_hash: s.recipe.hash.clone(),
            tool_version: TOOL_VERSION.to_string(),
            libraries: crate::plan::libraries::of_kind(s.recipe.collection.kind).to_string(),
        });
        let ctx = JobContext {
            out: &self.out,
            slides: &self.slides,
            stop: &self.stop,
            fail_fast: self.opts.fail_fast,
            bar: &bar,
            build: self.build,
            maker: maker.as_ref(),
            budget: &self.memory,
            pool: &self.pool,
        };
        let mut tally = run_jobs(rec, &self.pool, &self.io, &jobs, Schedule::Parallel, |j| {
            ctx.run(j)
        })?;
        // After the thumbnails are read: glass-looking cells last.
        wsi::glass_last(&mut large, &self.slides);
        tally.add(run_jobs(
            rec,
            &self.pool,
            &self.io,
            &large,
            Schedule::OneAtATime,
            |j| ctx.run(j),
        )?);
        bar.finish_and_clear();

        // QC pictures need every cell's decision recorded first.
        if !plan.qc.is_empty() && !self.stopped() {
            let mut decisions: HashMap<i64, record::Decisions> = HashMap::new();
            for q in &plan.qc {
                decisions.insert(q.input.id, rec.decisions(q.input.id)?);
            }
            let qcs: Vec<&QcAction> = plan.qc.iter().collect();
            tally.add(run_jobs(
                rec,
                &self.pool,
                &self.io,
                &qcs,
                Schedule::Parallel,
                |q| {
                    let d = decisions.get(&q.input.id);
                    // On a worker, whose heap holds the cells' freed memory:
                    // a lane thread is new, and every page it touches is a
                    // fresh one the kernel clears (3/4 of a QC picture's time
                    // on the 20× fixture).
                    let drawn =
                        (self.pool).install(|| wsi::draw_qc(q, d, &self.out, &self.slides, &ctx));
                    Outcome::Done(drawn)
                },
            )?);
        } else if !plan.qc.is_empty() {
            tally.skipped += plan.qc.len() as u64;
            for q in &plan.qc {
                tally.incomplete.insert(q.input.id);
            }
        }
        summary.add(&tally);
        self.incomplete.extend(tally.incomplete);
        self.dirty_dirs.extend(tally.dirty_dirs);

        // Inputs whose work all succeeded are complete under the plan's
        // fingerprint.
        self.complete(rec, plan.id, plan.fp, &plan.complete, &plan.folders)?;
        Ok(summary)
    }

    /// Marks each of `inputs` that this build did not leave incomplete
    /// complete under fingerprint `fp`, then each of `folders` (of
    /// collection `collection`) all of whose inputs are (the event checks it
    /// again against the rows).
    pub fn complete(
        &self,
        rec: &mut dyn Recorder,
        collection: i64,
        fp: Option<i64>,
        inputs: &[i64],
        folders: &[Folder],
    ) -> Result<(), EngineError> {
        let Some(fp) = fp else {
            return Ok(());
        };
        let mut events: Vec<Event> = inputs
            .iter()
            .filter(|id| !self.incomplete.contains(id))
            .map(|&id| Event::InputComplete { id, fp })
            .collect();
        events.extend(
            folders
                .iter()
                .filter(|f| f.ok && !f.inputs.iter().any(|i| self.incomplete.contains(i)))
                .map(|f| Event::FolderComplete {
                    collection,
                    src_dir: f.src_dir,
                    digest: f.digest.clone(),
                    fp,
                }),
        );
        if events.is_empty() {
            return Ok(());
        }
        rec.record(&mut [JobResult {
            events,
            ..JobResult::default()
        }])
    }

    /// Removes the temporary folder (at the end of a build).
    pub fn finish(&self) {
        self.out.finish();
    }
}

/// Whether jobs run side by side or one at a time (each still using the
/// pool inside).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schedule {
    Parallel,
    OneAtATime,
}

/// What a job hands back: its result, or the writing still to do, which
/// runs on the I/O threads so that the workers go on computing meanwhile.
enum Outcome<'a> {
    Done(JobResult),
    Commit(Box<dyn FnOnce() -> JobResult + Send + 'a>),
}

/// Threads that run commits (file writes with their fsyncs), and a bound on
/// the commits waiting for them, so encoded tiles cannot pile up in memory
/// when the disk is slower than the workers.
struct Io {
    pool: rayon::ThreadPool,
    pending: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    max_pending: usize,
}

impl Io {
    /// Writes are latency-bound (an fsync each), so more threads than cores.
    fn new(jobs: usize) -> Result<Io, EngineError> {
        let threads = (2 * jobs).clamp(4, 16);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cpia-io-{i}"))
            .build()
            .map_err(|e| EngineError(format!("starting I/O threads: {e}")))?;
        Ok(Io {
            pool,
            pending: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max_pending: 2 * jobs.max(1),
        })
    }

    /// Waits until fewer than `max_pending` commits are queued, then counts one more.
    fn acquire(&self) {
        let Ok(mut n) = self.pending.lock() else {
            return;
        };
        while *n >= self.max_pending {
            n = match self.freed.wait(n) {
                Ok(n) => n,
                Err(_) => return,
            };
        }
        *n += 1;
    }

    fn release(&self) {
        if let Ok(mut n) = self.pending.lock() {
            *n = n.saturating_sub(1);
        }
        self.freed.notify_one();
    }
}

/// Releases a commit's place in the queue when the commit ends, even by a panic.
struct Queued<'a>(&'a Io);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// What the workers share while running the build's jobs.
struct JobContext<'r> {
    out: &'r atomic::OutputDir,
    slides: &'r wsi::SlideCache,
    stop: &'r AtomicBool,
    fail_fast: bool,
    bar: &'r indicatif::ProgressBar,
    build: i64,
    maker: Option<&'r Maker>,
    budget: &'r budget::Budget,
    pool: &'r rayon::ThreadPool,
}

impl<'r> JobContext<'r> {
    /// Runs one job (or skips it after a `--fail-fast` stop).
    fn run<'j>(&'j self, job: &'j Job<'_>) -> Outcome<'j> {
        let skipped = || {
            Outcome::Done(JobResult {
                skipped: job.weight(),
                incomplete: Some(job.input()),
                ..JobResult::default()
            })
        };
        if self.stop.load(Ordering::Relaxed) || interrupt::requested() {
            return skipped();
        }
        // Waits for the job's memory on this (lane) thread, then computes in
        // the pool.
        let admitted = admit::admit(job, self.budget);
        if interrupt::requested() {
            return skipped();
        }
        // An ROI job computes on this lane thread: handing one picture to the
        // pool only added a wake-up and a sleep (1,000 PNGs: 3-4 % of the
        // build's wall time). A cell enters the pool, where its tiles are
        // shared among the workers.
        let admitted = match (job, admitted) {
            (Job::Roi(actions), admit::Admitted::Roi { bytes, grant }) => {
                return self.tallied(roi::build_roi(actions, self, bytes, grant), job);
            }
            (_, admitted) => admitted,
        };
        let outcome = self.pool.install(|| match (job, admitted) {
            (_, admit::Admitted::Failed(r)) => Outcome::Done(r),
            (Job::Cell(actions), admit::Admitted::Cell(grant)) => {
                wsi::build_cell(actions, self, grant)
            }
            (Job::Thumbnail(q), admit::Admitted::Thumbnail(Some(_grant))) => {
                Outcome::Done(wsi::prefetch_thumbnail(q, self.slides))
            }
            _ => Outcome::Done(JobResult::default()),
        });
        self.tallied(outcome, job)
    }

    /// Progress and `--fail-fast` follow finished jobs: after the commit.
    fn tallied<'j>(&'j self, outcome: Outcome<'j>, job: &Job<'_>) -> Outcome<'j> {
        let weight = job.weight();
        match outcome {
            Outcome::Done(r) => Outcome::Done(self.finished(r, weight)),
            Outcome::Commit(commit) => {
                Outcome::Commit(Box::new(move || self.finished(commit(), weight)))
            }
        }
    }

    /// Counts a finished job on the progress bar, and stops the build after
    /// it if it failed under `--fail-fast`.
    fn finished(&self, r: JobResult, weight: u64) -> JobResult {
        self.bar.inc(weight);
        if self.fail_fast && r.failure.is_some() {
            self.stop.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Who builds: the recipe version and this tool.
    fn maker(&self) -> Maker {
        self.maker.cloned().unwrap_or_else(|| Maker {
            recipe_hash: String::new(),
            tool_version: TOOL_VERSION.to_string(),
            libraries: String::new(),
        })
    }
}

/// Runs `work` on every job in the pool, its commits on the I/O threads,
/// while one thread records results.
fn run_jobs<'j, T: Sync>(
    rec: &mut dyn Recorder,
    pool: &rayon::ThreadPool,
    io: &Io,
    jobs: &'j [T],
    schedule: Schedule,
    work: impl Fn(&'j T) -> Outcome<'j> + Sync,
) -> Result<Tally, EngineError> {
    if jobs.is_empty() {
        return Ok(Tally::default());
    }
    let (tx, rx) = mpsc::channel::<JobResult>();
    let recorded = std::thread::scope(|scope| {
        let recorder = scope.spawn(move || record::record_results(rec, rx));
        // Returns once every spawned commit has finished.
        io.pool.in_place_scope(|commits| {
            let finish = |tx: &mut mpsc::Sender<JobResult>, job: &'j T| match work(job) {
                Outcome::Done(r) => {
                    let _ = tx.send(r);
                }
                Outcome::Commit(commit) => {
                    io.acquire();
                    let tx = tx.clone();
                    let queued = Queued(io);
                    commits.spawn(move |_| {
                        let _queued = queued;
                        let _ = tx.send(commit());
                    });
                }
            };
            // Jobs are fed from lane threads, outside the pool: a job waits
            // for memory there (admit.rs), and enters the pool once admitted.
            let lanes = match schedule {
                Schedule::Parallel => pool.current_num_threads(),
                Schedule::OneAtATime => 1,
            };
            admit::lanes(jobs, lanes, tx, finish);
        });
        recorder.join()
    });
    match recorded {
        Ok(r) => r,
        Err(_) => Err(EngineError("the result recorder panicked".into())),
    }
}

/// A failed job: its failure record and summary line. `unit` is empty for
/// an ROI input, `"i,j"` for a WSI cell, `"qc"` for a QC picture.
fn failed_job(
    input: i64,
    unit: &str,
    source_hash: &str,
    shown: String,
    error: String,
    outputs: u64,
) -> JobResult {
    JobResult {
        events: vec![Event::Failed(FailureRecord {
            input,
            unit: unit.to_string(),
            source_hash: Some(source_hash.to_string()),
            error: error.clone(),
            at: now(),
        })],
        failed: outputs,
        failure: Some(Failure {
            input: shown,
            error,
        }),
        incomplete: Some(input),
        ..JobResult::default()
    }
}

impl Summary {
    fn add(&mut self, t: &Tally) {
        self.built += t.built;
        self.removed += t.removed;
        self.failed += t.failed;
        self.skipped += t.skipped;
        self.failures.extend(t.failures.iter().cloned());
    }
}

/// A failure of the build machinery itself (not of one input).
#[derive(Debug)]
pub struct EngineError(pub String);

impl EngineError {
    pub(crate) fn state(e: StateError) -> EngineError {
        EngineError(e.to_string())
    }
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> EngineError {
        EngineError::state(e)
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for EngineError {}
