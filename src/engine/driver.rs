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
//!    so the next build can trust it without reading it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::plan::outdirs::{self, DirCheck, Mode};
use crate::plan::{self, Catalog, CollectionPlan, Planner, Selected, Selection, Unplanned};
use crate::store::{Event, State};
use crate::workspace::Workspace;

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
/// not read of a source listing goes to `notes` as it is found.
pub fn prepare(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    flags: Flags,
    notes: Notes,
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
    let dirs = outdirs::check(state, &ws.output, &all, mode)?;
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

/// What a build did, or why it did nothing.
pub enum Outcome {
    /// Refused by the mass-removal guard: nothing was done.
    Refused(Vec<MassRemoval>),
    Done(Summary),
}

/// Runs a build of the selected collections.
pub fn build(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    opts: &Options,
    flags: Flags,
    notes: Notes,
) -> Result<Outcome, EngineError> {
    let prepared = prepare(ws, state, planner, selection, flags, notes)?;
    if !prepared.mass_removals.is_empty() && !flags.allow_mass_removal {
        return Ok(Outcome::Refused(prepared.mass_removals));
    }
    let mut run = Run::start(ws, state, planner, &prepared, opts)?;
    let removes = prepared.removes;
    let watched = watched(&prepared.dirs);
    prepared.for_each(ws, state, notes, |state, p| {
        if let Some(u) = &p.unplanned {
            return note_unplanned(state, p, u, flags, &mut run.summary);
        }
        let s = run.engine.run(state, p)?;
        run.summary.merge(s);
        Ok(())
    })?;
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

    /// Ends the build: records the identity of every output folder known
    /// to match its records (`watched`: those checked at its start, with the
    /// inputs damaged in them), prunes the stat index when something was
    /// removed, closes the build's row.
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
        if record_identities {
            record_dir_identities(ws, state, &engine, watched)?;
        }
        if prune {
            state.prune_unused()?;
        }
        let out = engine.output();
        let write = |rel: &str, b: &[u8]| out.write(rel, b).map(|w| (w.size, w.mtime_ns));
        if let Err(e) =
            crate::provenance::manifest::update(state, &ws.output, &write, &|r| out.remove(r))
        {
            summary.failures.push(Failure {
                input: crate::provenance::manifest::DIR.into(),
                error: format!("updating the manifests: {e}"),
            });
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
/// damaged inputs are still incomplete. Folders this build created are
/// recorded too. A racy identity (too recent for the clock's granularity)
/// is waited out once, then recorded if it did not move.
fn record_dir_identities(
    ws: &Workspace,
    state: &mut State,
    engine: &Engine,
    checked: &[Watched],
) -> Result<(), EngineError> {
    let Ok(mut now) = engine.output().fs_now() else {
        return Ok(());
    };
    let incomplete = engine.incomplete();
    let dirty = engine.dirty_dirs();
    let mut known: HashSet<&str> = HashSet::new();
    let mut wanted: Vec<(i64, String)> = Vec::new();
    for c in checked {
        known.insert(c.path.as_str());
        let unrepaired = c.damaged_inputs.iter().any(|i| incomplete.contains(i));
        if dirty.contains(&c.path) || unrepaired || engine.stopped() {
            state.set_dir_identity(c.id, None)?;
        } else {
            wanted.push((c.id, c.path.clone()));
        }
    }
    // Folders first written by this build.
    for (id, path) in state.out_dirs_without_identity()? {
        if !known.contains(path.as_str()) && !dirty.contains(&path) && !engine.stopped() {
            wanted.push((id, path));
        }
    }
    let mut racy = Vec::new();
    for (id, path) in wanted {
        match outdirs::identity(&ws.output.join(&path)) {
            Some(i) if outdirs::racy(&i, now) => racy.push((id, path, i)),
            Some(i) => state.set_dir_identity(id, Some(i))?,
            None => state.set_dir_identity(id, None)?,
        }
    }
    if racy.is_empty() {
        return Ok(());
    }
    // Wait until the newest of them has left the window, then look again.
    // The filesystem's clock is itself coarse (a new file's mtime may lag
    // real time by a tick), so look up to three times.
    for _ in 0..3 {
        let wait = racy
            .iter()
            .map(|(_, _, i)| outdirs::racy_window(i) - (now - i.mtime_ns.max(i.ctime_ns)))
            .max()
            .unwrap_or(0)
            .clamp(0, 2_000_000_000)
            + 15_000_000;
        std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
        if let Ok(n) = engine.output().fs_now() {
            now = n;
        }
        let mut still = Vec::new();
        for (id, path, before) in racy {
            match outdirs::identity(&ws.output.join(&path)) {
                Some(after) if after != before => state.set_dir_identity(id, None)?,
                None => state.set_dir_identity(id, None)?,
                Some(_) if outdirs::racy(&before, now) => still.push((id, path, before)),
                Some(_) => state.set_dir_identity(id, Some(before))?,
            }
        }
        racy = still;
        if racy.is_empty() {
            break;
        }
    }
    for (id, _, _) in racy {
        state.set_dir_identity(id, None)?;
    }
    Ok(())
}

/// The plans of a dry run, collection by collection (`cpia plan`).
pub fn dry_run(
    ws: &Workspace,
    state: &mut State,
    planner: &Planner,
    selection: &Selection,
    flags: Flags,
    notes: Notes,
    mut f: impl FnMut(&State, &CollectionPlan),
) -> Result<(Catalog, Vec<MassRemoval>), EngineError> {
    let prepared = prepare(ws, state, planner, selection, flags, notes)?;
    let mass = prepared.mass_removals.clone();
    let catalog = prepared.catalog.clone();
    prepared.for_each(ws, state, notes, |state, p| {
        f(state, p);
        Ok(())
    })?;
    Ok((catalog, mass))
}
