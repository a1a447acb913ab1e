//! A whole build (or dry run), collection by collection.
//!
//! 1. The recipes the selection names ([`crate::plan::Planner::catalog`]).
//! 2. The output folders of those collections are checked
//!    ([`crate::plan::outdirs`]): damage found there makes inputs plan in
//!    detail.
//! 3. Every collection is planned; plans are kept while the work they hold
//!    is small ([`HOLD_LIMIT`]), otherwise only their counts, and they are
//!    planned again when their turn comes — so memory holds one large plan,
//!    never the workspace's.
//! 4. Guards: a collection that would lose more than half of its outputs
//!    stops the whole build before anything is done.
//! 5. Each plan is executed ([`super::Engine::run`]); then the identity of
//!    every output folder that is known to match the records is recorded,
//!    so the next build can trust it without reading it: the identity that
//!    vouched for it at step 2 if it did not move since, otherwise one read
//!    now and confirmed by one more `readdir` against the records (a change
//!    made by someone else during the build is never vouched for).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::plan::fs_clock::FsClock;
use crate::plan::outdirs::{self, DirCheck, Mode};
use crate::plan::{self, Catalog, CollectionPlan, Planner, Selected, Selection, Unplanned};
use crate::provenance::manifest::NewFile;
use crate::store::{DirIdentity, Event, State};
use crate::workspace::Workspace;

use super::atomic::{OutputDir, Streamed};
use super::{Engine, EngineError, Failure, Note, Notes, Options, Summary};

/// Build actions held in memory across collections before plans are
/// dropped and re-planned at execution (each action is a few hundred bytes).
pub const HOLD_LIMIT: usize = 200_000;

/// How the build looks at outputs and sources.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    /// `--check-outputs`: `stat` every recorded output.
    pub check_outputs: bool,
    /// `--allow-mass-removal`.
    pub allow_mass_removal: bool,
    /// `--require-sources`: a collection whose source is not available is
    /// an error, not a note.
    pub require_sources: bool,
}

/// What a build or a dry run is asked for: the workspace, its recipes, which
/// of them, how to look, and where notes go. The same for `build`, `plan`,
/// `watch` and the demo (the Slurm coordinator hands the same to [`prepare`]).
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub ws: &'a Workspace,
    pub planner: &'a Planner,
    pub selection: &'a Selection,
    pub flags: Flags,
    /// What the build has to say while it runs (`cli` prints it).
    pub notes: Notes<'a>,
}

impl Request<'_> {
    /// [`prepare`] for this request.
    pub fn prepare(
        &self,
        state: &mut State,
        clock: Option<FsClock>,
    ) -> Result<Prepared, EngineError> {
        prepare(
            self.ws,
            state,
            self.planner,
            self.selection,
            self.flags,
            self.notes,
            clock,
        )
    }
}

/// A collection that would lose more than half of its outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MassRemoval {
    pub collection: String,
    pub removing: usize,
    pub recorded: u64,
}

/// A collection to execute: its plan, or what to plan again.
enum Pending {
    Held(Box<CollectionPlan>),
    Again(Selected),
}

/// Everything planned, ready to check against the guards and run.
pub struct Prepared {
    pub catalog: Catalog,
    pub dirs: DirCheck,
    pending: Vec<Pending>,
    /// Collections without a recipe whose outputs are removed.
    orphans: Vec<CollectionPlan>,
    pub mass_removals: Vec<MassRemoval>,
    /// Whether any plan removes files (the state is pruned afterwards).
    removes: bool,
}

/// Plans the selected collections (phase 1–4 above); what planning could
/// not read of a source listing goes to `notes` as it is found. `clock`: the
/// output filesystem's clock read before anything is looked at
/// ([`output_clock`]; `None` for a dry run, which records no identity).
fn prepare(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    flags: Flags,
    notes: Notes,
    clock: Option<FsClock>,
) -> Result<Prepared, EngineError> {
    let catalog = planner.catalog(ws, selection);
    let mut ids = Vec::new();
    for s in &catalog.selected {
        ids.push(state.collection_id(s.spec.name())?);
    }
    // With every recipe planned (and loaded), collections that have no
    // recipe any more lose their outputs. A broken recipe may be the one
    // that named them, so then nothing is removed.
    let mut orphan_ids = Vec::new();
    if catalog.everything && !catalog.any_broken {
        for (id, name) in state.collections()? {
            if !catalog.known.contains(&name) {
                orphan_ids.push((id, name));
            }
        }
    }
    let all: Vec<i64> = ids
        .iter()
        .copied()
        .chain(orphan_ids.iter().map(|(id, _)| *id))
        .collect();
    let mode = if flags.check_outputs {
        Mode::StatAll
    } else {
        Mode::Identity
    };
    let dirs = outdirs::check(state, &ws.output, &all, mode, clock)?;
    let mut prepared = Prepared {
        catalog,
        dirs,
        pending: Vec::new(),
        orphans: Vec::new(),
        mass_removals: Vec::new(),
        removes: false,
    };
    let mut held = 0usize;
    for s in prepared.catalog.selected.clone() {
        let p = plan::plan_collection(ws, state, &s.spec, &prepared.dirs)?;
        tell_warnings(&p, notes);
        prepared.note(&p);
        let size = p.building() + p.removing();
        if held + size <= HOLD_LIMIT {
            held += size;
            prepared.pending.push(Pending::Held(Box::new(p)));
        } else {
            prepared.pending.push(Pending::Again(s));
        }
    }
    for (id, name) in orphan_ids {
        let p = plan::plan_orphan(state, id, &name)?;
        prepared.note(&p);
        prepared.orphans.push(p);
    }
    Ok(prepared)
}

impl Prepared {
    /// Whether any plan removes files (the stat index is pruned after).
    pub fn removes(&self) -> bool {
        self.removes
    }

    fn note(&mut self, p: &CollectionPlan) {
        if p.mass_removal() {
            self.mass_removals.push(MassRemoval {
                collection: p.name.clone(),
                removing: p.removing(),
                recorded: p.recorded,
            });
        }
        self.removes |= p.removing() > 0;
    }

    /// Calls `f` with every collection plan in turn (planning again those
    /// that were not held, their warnings to `notes`), orphans first: their
    /// removals free names.
    pub fn for_each(
        self,
        ws: &Workspace,
        state: &mut State,
        notes: Notes,
        mut f: impl FnMut(&mut State, &CollectionPlan) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        for p in &self.orphans {
            f(state, p)?;
        }
        for pending in self.pending {
            let p = match pending {
                Pending::Held(p) => *p,
                Pending::Again(s) => {
                    let p = plan::plan_collection(ws, state, &s.spec, &self.dirs)?;
                    tell_warnings(&p, notes);
                    p
                }
            };
            f(state, &p)?;
        }
        Ok(())
    }
}

/// The parts of a collection's source listing its planning could not read.
fn tell_warnings(p: &CollectionPlan, notes: Notes) {
    for w in &p.warnings {
        notes(Note::SourceListing {
            collection: p.name.clone(),
            problem: w.clone(),
        });
    }
}

/// The output filesystem's clock now (ns), read before a build looks at its
/// output folders; `None` when it cannot be read (then no folder verified
/// at the start vouches for itself at the end: it is compared again).
pub fn output_clock(ws: &Workspace) -> Option<FsClock> {
    super::atomic::OutputDir::clock(&ws.output).ok()
}

/// What a build did, or why it did nothing.
pub enum Outcome {
    /// Refused by the mass-removal guard: nothing was done.
    Refused(Vec<MassRemoval>),
    Done(Summary),
}

/// Runs a build of the selected collections.
pub fn build(req: &Request, state: &mut State, opts: &Options) -> Result<Outcome, EngineError> {
    let Request {
        ws,
        planner,
        flags,
        notes,
        ..
    } = *req;
    let prepared = req.prepare(state, output_clock(ws))?;
    if !prepared.mass_removals.is_empty() && !flags.allow_mass_removal {
        return Ok(Outcome::Refused(prepared.mass_removals));
    }
    let mut run = Run::start(ws, state, planner, &prepared, opts)?;
    let removes = prepared.removes;
    let watched = watched(&prepared.dirs);
    super::debug::pause("planned");
    prepared.for_each(ws, state, notes, |state, p| {
        if let Some(u) = &p.unplanned {
            return note_unplanned(state, p, u, flags, &mut run.summary);
        }
        let s = run.engine.run(state, p)?;
        run.summary.merge(s);
        Ok(())
    })?;
    super::debug::pause("executed");
    Ok(Outcome::Done(run.finish(ws, state, &watched, removes)?))
}

/// A build between its start and its end: its row in `builds`, its engine
/// and the summary so far.
pub struct Run {
    pub build: i64,
    pub engine: Engine,
    pub summary: Summary,
    /// Whether its end records output folder identities (not when what the
    /// build did is only partly known, as after a merge resumed by another
    /// process: then the folders are verified next time).
    pub record_identities: bool,
}

impl Run {
    /// Opens the build's row and its engine, and records what the output
    /// folder check found: inputs with damaged outputs stay incomplete until
    /// they are rebuilt, whatever happens to this build; touched outputs get
    /// their new stat.
    pub fn start(
        ws: &Workspace,
        state: &mut State,
        planner: &Planner,
        prepared: &Prepared,
        opts: &Options,
    ) -> Result<Run, EngineError> {
        let argv: Vec<String> = std::env::args().collect();
        let build = state.begin_build(&argv.join(" "), super::TOOL_VERSION)?;
        crate::provenance::archive::record(state, build, ws, planner, &prepared.catalog)?;
        let engine = Engine::new(&ws.output, opts, build)?;
        let mut summary = Summary::default();
        for p in &prepared.catalog.problems {
            summary.failures.push(Failure {
                input: p.input.clone(),
                error: p.error.clone(),
            });
        }
        let mut first: Vec<Event> = prepared.dirs.restats.clone();
        for ids in prepared.dirs.damage.keys() {
            first.push(Event::InputPending { id: *ids });
        }
        state.record(&first)?;
        Ok(Run {
            build,
            engine,
            summary,
            record_identities: true,
        })
    }

    /// The engine of build `build` started by another process (a Slurm
    /// build finished by its merge job, or by the next invocation).
    pub fn resume(ws: &Workspace, build: i64, opts: &Options) -> Result<Run, EngineError> {
        Ok(Run {
            build,
            engine: Engine::new(&ws.output, opts, build)?,
            summary: Summary::default(),
            record_identities: true,
        })
    }

    /// Ends the build: prunes the stat index when something was removed,
    /// brings the manifests up to date, records the identity of every
    /// output folder known to match its records (`watched`: those checked
    /// at its start, with the inputs damaged in them), closes the build's
    /// row.
    pub fn finish(
        self,
        ws: &Workspace,
        state: &mut State,
        watched: &[Watched],
        prune: bool,
    ) -> Result<Summary, EngineError> {
        let Run {
            build,
            engine,
            mut summary,
            record_identities,
        } = self;
        if prune {
            state.prune_unused()?;
        }
        // The manifests first: their writing (under `manifests/`, whose
        // identity is not recorded) spends the racy window that the folders
        // the build just wrote must age out of before their identities are
        // read, instead of sleeping it out.
        if let Err(e) = crate::provenance::manifest::update(state, &ws.output, engine.output()) {
            summary.failures.push(Failure {
                input: crate::provenance::manifest::DIR.into(),
                error: format!("updating the manifests: {e}"),
            });
        }
        if record_identities {
            record_dir_identities(ws, state, &engine, watched)?;
        }
        engine.finish();
        summary.failures.sort_by(|a, b| a.input.cmp(&b.input));
        let failures: Vec<(String, String)> = (summary.failures.iter())
            .map(|f| (f.input.clone(), f.error.clone()))
            .collect();
        state.record_build_failures(build, &failures)?;
        state.finish_build(
            build,
            [
                summary.built,
                summary.up_to_date,
                summary.removed,
                summary.failed,
            ],
        )?;
        Ok(summary)
    }
}

/// An output folder checked at the start of a build, as its end needs it
/// (also written into a Slurm build's plan, for whoever finishes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub id: i64,
    pub path: String,
    /// Inputs with damaged files in it.
    pub damaged_inputs: Vec<i64>,
    /// The identity that vouched for the folder when it was checked
    /// ([`outdirs::CheckedDir::vouched`]); `None`: none did, so the end of
    /// the build compares it with its records before recording it. (Absent
    /// from plans written before it existed: then `None`.)
    #[serde(default)]
    pub seen: Option<DirIdentity>,
}

/// The folders of a check, as [`Run::finish`] needs them.
pub fn watched(dirs: &DirCheck) -> Vec<Watched> {
    dirs.dirs
        .iter()
        .map(|c| {
            let mut damaged_inputs: Vec<i64> = c.damaged_inputs.iter().copied().collect();
            damaged_inputs.sort_unstable();
            Watched {
                id: c.dir.id,
                path: c.dir.path.clone(),
                damaged_inputs,
                seen: c.seen.filter(|_| c.vouched),
            }
        })
        .collect()
}

/// A collection whose root is not there: "not available" when it has never
/// been built (a catalog collection not downloaded yet), an error when it
/// has outputs (an unmounted disk looks like this) or when
/// `--require-sources` asks.
pub fn note_unplanned(
    state: &State,
    p: &CollectionPlan,
    u: &Unplanned,
    flags: Flags,
    summary: &mut Summary,
) -> Result<(), EngineError> {
    let (reason, error) = match u {
        Unplanned::Unavailable(r) => {
            let built = !state.inputs_of(p.id)?.is_empty();
            (r, built || flags.require_sources)
        }
        Unplanned::Error(r) => (r, true),
    };
    if error {
        summary.failures.push(Failure {
            input: p.name.clone(),
            error: format!("collection {}: {reason}", p.name),
        });
    } else {
        summary.unavailable.push(super::summary::Unavailable {
            collection: p.name.clone(),
            reason: reason.clone(),
        });
    }
    Ok(())
}

/// Records the identity of every checked output folder that now matches
/// its records: not one where a write or removal failed, nor one whose
/// damaged inputs are still incomplete, nor any after `--fail-fast` stopped
/// the build. Folders this build created are recorded too.
///
/// An identity vouches only for what was seen after it was read. So each
/// folder's identity is read now, out of the racy window ([`settled`]); if
/// it is the one that vouched for the folder when the build started
/// ([`Watched::seen`]), nothing happened in it; otherwise (the build wrote or
/// removed something there, or someone else did) it is compared with the
/// records once more ([`outdirs::verify_now`]: one `readdir`), and recorded
/// only if nothing is missing or replaced.
fn record_dir_identities(
    ws: &Workspace,
    state: &mut State,
    engine: &Engine,
    checked: &[Watched],
) -> Result<(), EngineError> {
    let wanted = identity_candidates(state, engine, checked)?;
    for (id, path, seen, now) in settled(ws, engine, wanted) {
        let keep = match now {
            None => None,
            Some(i) if seen == Some(i) => Some(i),
            Some(i) => outdirs::verify_now(state, &ws.output, id, &path)?.then_some(i),
        };
        state.set_dir_identity(id, keep)?;
    }
    Ok(())
}

/// A folder whose identity may be recorded: (id, path, the identity that
/// vouched for it when the build started).
type Candidate = (i64, String, Option<DirIdentity>);

/// The folders whose identity may be recorded; the others' identities are
/// forgotten here.
fn identity_candidates(
    state: &mut State,
    engine: &Engine,
    checked: &[Watched],
) -> Result<Vec<Candidate>, EngineError> {
    let incomplete = engine.incomplete();
    let dirty = engine.dirty_dirs();
    let mut known: HashSet<&str> = HashSet::new();
    let mut wanted = Vec::new();
    for c in checked {
        known.insert(c.path.as_str());
        let unrepaired = c.damaged_inputs.iter().any(|i| incomplete.contains(i));
        if dirty.contains(&c.path) || unrepaired || engine.stopped() {
            state.set_dir_identity(c.id, None)?;
        } else {
            wanted.push((c.id, c.path.clone(), c.seen));
        }
    }
    // Folders first written by this build (or left without an identity).
    for (id, path) in state.out_dirs_without_identity()? {
        if !known.contains(path.as_str()) && !dirty.contains(&path) && !engine.stopped() {
            wanted.push((id, path, None));
        }
    }
    Ok(wanted)
}

/// Each folder's identity, read out of the racy window (the output
/// filesystem's clock read before it has moved far enough past the
/// folder's newest timestamp: [`FsClock::racy`]), waiting the window out up
/// to three times; `None` for a folder that is missing or still changing.
fn settled(
    ws: &Workspace,
    engine: &Engine,
    mut pending: Vec<Candidate>,
) -> Vec<(i64, String, Option<DirIdentity>, Option<DirIdentity>)> {
    let mut done = Vec::new();
    for round in 0..4 {
        let Ok(clock) = engine.output().fs_now() else {
            break;
        };
        let mut racy = Vec::new();
        let mut wait = 0i64;
        for (id, path, seen) in pending {
            match outdirs::identity(&ws.output.join(&path)) {
                Some(i) if clock.racy(&i) => {
                    wait = wait.max(clock.wait(&i));
                    racy.push((id, path, seen));
                }
                i => done.push((id, path, seen, i)),
            }
        }
        pending = racy;
        if pending.is_empty() || round == 3 {
            break;
        }
        let wait = wait.clamp(0, 2_000_000_000) + clock.margin();
        std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
    }
    done.extend(
        pending
            .into_iter()
            .map(|(id, path, seen)| (id, path, seen, None)),
    );
    done
}

/// The plans of a dry run, collection by collection (`cpia plan`).
pub fn dry_run(
    req: &Request,
    state: &mut State,
    mut f: impl FnMut(&State, &CollectionPlan),
) -> Result<(Catalog, Vec<MassRemoval>), EngineError> {
    let prepared = req.prepare(state, None)?;
    let mass = prepared.mass_removals.clone();
    let catalog = prepared.catalog.clone();
    prepared.for_each(req.ws, state, req.notes, |state, p| {
        f(state, p);
        Ok(())
    })?;
    Ok((catalog, mass))
}

/// The manifests are written through the atomic writer, streamed.
impl crate::provenance::manifest::Files for OutputDir {
    fn create(&self, rel: &str) -> std::io::Result<Box<dyn NewFile + '_>> {
        Ok(Box::new(OutputDir::create(self, rel)?))
    }

    fn remove(&self, rel: &str) -> std::io::Result<()> {
        OutputDir::remove(self, rel)
    }

    fn sync_dirs(&self, dirs: &[String]) -> std::io::Result<()> {
        OutputDir::sync_dirs(self, dirs.iter().map(String::as_str))
    }
}

impl NewFile for Streamed<'_> {
    fn place(self: Box<Self>) -> std::io::Result<(u64, i64)> {
        Streamed::place(*self).map(|w| (w.size, w.mtime_ns))
    }
}
