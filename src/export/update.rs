//! Bringing one export up to date, and removing one.
//!
//! 1. **Definition.** A new export fixes its shard count from its target and
//!    its selection's size (`ceil(samples / shard_samples)`, or
//!    `ceil(bytes / shard_bytes)` counting each sample's tar overhead), and
//!    records it. A changed definition, changed collection metadata or a
//!    reshard re-evaluates every pair ([`Scope::Whole`]); otherwise only the
//!    pairs the triggers marked ([`Scope::Changed`]).
//! 2. **Samples.** Each page of pairs is re-evaluated
//!    ([`super::evaluate`]); new rows, the shards where they differ and the
//!    cleared marks are recorded in one transaction (an ImageFolder's files
//!    are placed before it).
//! 3. **Shards.** Each stale shard whose samples' combined digest differs
//!    from the one recorded with its file is written anew — members read
//!    back in the shard's order, the tar (or Parquet file) written to a temporary file on one
//!    of `jobs` threads (their reading and hashing also on the cores no
//!    other shard needs: `writer_pools`), fsynced and renamed into place —
//!    and only then recorded. A shard left with no samples is removed. A killed update
//!    leaves the shard stale: the next one writes the same bytes.
//! 4. **Index and metadata** (`wids` JSON, Croissant) are rewritten when
//!    their text changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc};

use super::definition::{Definition, Format, Target};
use super::evaluate::{for_each_page, Evaluated, Evaluator, Scope, Sizes};
use super::second_reader::{Page, SecondReader};
use super::selection::{self, Selection};
use super::webdataset::{self, Member};
use super::{croissant, imagefolder, index, key, parquet, record, Error};
use crate::engine::atomic::{OutputDir, Reader};
use crate::provenance::facts;
use crate::recipe::CollectionMeta;
use crate::store::exports::{ExportFile, ExportRow, Item, SampleRow};
use crate::store::State;

/// Tar bytes a sample adds besides its image: two headers, its record and
/// padding — what `shard_bytes` counts per sample.
pub const SAMPLE_OVERHEAD: u64 = 2048;

/// How to update.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Threads writing shards.
    pub jobs: usize,
    /// Fix the shard count anew (every shard is rewritten).
    pub reshard: bool,
}

/// What an update did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub name: String,
    pub format: String,
    /// The export was new.
    pub created: bool,
    /// Every pair was re-evaluated (new, changed definition, reshard).
    pub whole: bool,
    pub shards: u64,
    pub shards_written: u64,
    pub shards_removed: u64,
    /// ImageFolder files linked or copied.
    pub files_placed: u64,
    pub files_removed: u64,
    pub samples: u64,
    pub bytes: u64,
    /// Pairs (output folder, input) re-evaluated.
    pub pairs: u64,
    /// Recorded files found missing or changed on disk (rewritten).
    pub repaired: u64,
    /// Problems that left part of the export stale (a changed image).
    pub failures: Vec<String>,
    /// Things the user should know (reshard advice, unmatched names).
    pub notes: Vec<String>,
}

/// The digest of everything all shards' bytes depend on besides their
/// samples: the format and the versions of keys, records and the writer.
pub fn layout(format: Format) -> String {
    let (writer, version) = match format {
        Format::Parquet => ("parquet", parquet::VERSION),
        _ => ("tar", webdataset::VERSION),
    };
    format!(
        "{} key {} record {} {writer} {version}",
        format.name(),
        key::VERSION,
        record::VERSION,
    )
}

/// A shard's digest: its layout, sample count and the XOR of its samples' digests.
pub fn shard_digest(format: Format, samples: &[SampleRow]) -> String {
    let mut x = [0u8; 16];
    for s in samples {
        for (a, b) in x.iter_mut().zip(s.digest) {
            *a ^= b;
        }
    }
    let mut h = blake3::Hasher::new();
    h.update(layout(format).as_bytes());
    h.update(&(samples.len() as u64).to_le_bytes());
    h.update(&x);
    h.finalize().to_hex().to_string()
}

/// The shard count for `samples` samples of `bytes` image bytes.
pub fn shard_count(target: Target, samples: u64, bytes: u64) -> u64 {
    match target {
        Target::Samples(n) => samples.div_ceil(n.max(1)),
        Target::Bytes(b) => (bytes + samples * SAMPLE_OVERHEAD).div_ceil(b.max(1)),
    }
    .max(1)
}

/// Brings export `def` up to date; `meta`: the workspace's collections.
pub fn update(
    state: &mut State,
    out: &OutputDir,
    def: &Definition,
    meta: &HashMap<String, Arc<CollectionMeta>>,
    opts: &Options,
) -> Result<Outcome, Error> {
    let sel = selection::resolve(def, state, meta)?;
    let mut outcome = Outcome {
        name: def.name.clone(),
        format: def.format.name().into(),
        notes: sel
            .unmatched
            .iter()
            .map(|u| format!("select names {u}, which matches nothing"))
            .collect(),
        ..Outcome::default()
    };
    let digest = digest(def, &sel);
    let row = prepare(state, out, def, &sel, opts, &mut outcome)?;
    let scope = if outcome.created || row.digest != digest || opts.reshard {
        Scope::Whole
    } else {
        Scope::Changed
    };
    outcome.whole = scope == Scope::Whole;
    let sizes = category_sizes(state, def, &sel)?;
    mark_moved_categories(state, &row, &sizes)?;
    outcome.repaired = forget_damaged(state, out, &row)?;
    let mut ev = Evaluator::new(def, &sel, row.shards, &sizes);
    // Sharded exports evaluate on two connections when given two threads
    // (`second_reader`); a second connection that cannot be opened leaves
    // the work to the first.
    let second = (def.format.sharded() && opts.jobs > 1)
        .then(|| State::open_read_only(state.path()).ok().flatten())
        .flatten();
    std::thread::scope(|threads| -> Result<(), Error> {
        let second = second.map(|s| {
            let mut theirs = Evaluator::new(def, &sel, row.shards, &sizes);
            theirs.keep_members(KEEP_BYTES / 2);
            SecondReader::start(threads, s, theirs)
        });
        if def.format.sharded() {
            ev.keep_members(KEEP_BYTES / if second.is_some() { 2 } else { 1 });
        }
        let reader = second.as_ref().map(|(r, _)| r);
        for_each_page(state, row.id, scope, &sel, &mut |state, page| {
            apply_page(
                state,
                out,
                &mut ev,
                reader,
                row.id,
                page,
                def.format,
                &mut outcome,
            )
        })?;
        if let Some((reader, handle)) = second {
            drop(reader);
            let kept = handle
                .join()
                .map_err(|_| Error::Other("the second evaluating thread panicked".into()))?;
            ev.absorb(kept);
        }
        Ok(())
    })?;
    if scope == Scope::Whole {
        state.clear_export_dirty(row.id)?;
        // Every shard is checked: those of the shard count, and any a
        // larger count left behind (removed, having no samples now).
        let mut all: Vec<u64> = (0..row.shards).collect();
        all.extend(state.export_files(row.id)?.iter().filter_map(|f| f.shard));
        if def.format.sharded() {
            state.mark_export_stale(row.id, &all)?;
        }
    }
    if def.format.sharded() {
        write_stale(state, out, def, &row, &mut ev, opts.jobs, &mut outcome)?;
    }
    let (samples, bytes) = match def.format {
        Format::ImageFolder => (state.export_sample_count(row.id)?, 0),
        _ => state.export_totals(row.id)?,
    };
    outcome.samples = samples;
    outcome.bytes = bytes;
    outcome.shards = row.shards;
    write_metadata(state, out, def, &row, &sel, &mut outcome)?;
    if outcome.failures.is_empty() {
        state.finish_export(row.id, &digest, samples, bytes)?;
    }
    advise_reshard(def, &row, samples, bytes, &mut outcome);
    Ok(outcome)
}

/// The digest of the definition and the metadata every record carries.
pub fn digest(def: &Definition, sel: &Selection) -> String {
    let mut h = blake3::Hasher::new();
    h.update(def.canonical().as_bytes());
    h.update(layout(def.format).as_bytes());
    h.update(sel.meta_text().as_bytes());
    h.finalize().to_hex().to_string()
}

/// The export's row: created with its shard count, replaced when its
/// format changed, its shard count fixed anew when resharding.
fn prepare(
    state: &mut State,
    out: &OutputDir,
    def: &Definition,
    sel: &Selection,
    opts: &Options,
    outcome: &mut Outcome,
) -> Result<ExportRow, Error> {
    let existing = state.export(&def.name)?;
    if let Some(row) = existing.as_ref().filter(|r| r.format != def.format.name()) {
        let (shards, files) = remove(state, out, row)?;
        outcome.shards_removed += shards;
        outcome.files_removed += files;
    }
    let existing = state.export(&def.name)?;
    let shards = match &existing {
        Some(row) if !opts.reshard => row.shards,
        _ if def.format.sharded() => {
            let (samples, bytes) = selection_size(state, def, sel)?;
            shard_count(def.target, samples, bytes)
        }
        _ => 1,
    };
    let id = match &existing {
        Some(row) => {
            state.set_export_definition(row.id, def.declared, &def.canonical(), shards)?;
            row.id
        }
        None => {
            outcome.created = true;
            state.create_export(
                &def.name,
                def.format.name(),
                def.declared,
                &def.canonical(),
                shards,
            )?
        }
    };
    let row = state
        .export(&def.name)?
        .filter(|r| r.id == id)
        .ok_or_else(|| Error::Other(format!("export {}: its record vanished", def.name)))?;
    Ok(row)
}

/// Forgets the record of every file of the export that is missing or
/// whose size or mtime moved on disk (one `fstat` each), marking its shard
/// stale: the update writes it again. The number found.
fn forget_damaged(state: &mut State, out: &OutputDir, row: &ExportRow) -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for f in state.export_files(row.id)? {
        let intact = out
            .open_read(&f.path)
            .and_then(|h| h.metadata())
            .is_ok_and(|m| {
                m.is_file()
                    && m.len() == f.bytes
                    && m.mtime() * 1_000_000_000 + m.mtime_nsec() == f.mtime_ns
            });
        if !intact {
            state.forget_export_file(row.id, &f.path, None)?;
            if let Some(s) = f.shard {
                state.mark_export_stale(row.id, &[s])?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Samples and image bytes the selection holds now (a sampling rule's
/// expected count, `min(n, quota)` per category, with bytes in proportion).
fn selection_size(state: &State, def: &Definition, sel: &Selection) -> Result<(u64, u64), Error> {
    let (mut samples, mut bytes) = (0u64, 0u64);
    for d in &sel.dirs {
        let (n, b) = state.dir_totals(d.id)?;
        samples += n;
        bytes += b;
    }
    if let Some(rule) = &def.sample {
        let sizes = category_sizes(state, def, sel)?;
        let kept: u64 = sizes
            .iter()
            .map(|((_, s), n)| (*n).min(rule.quota(s)))
            .sum();
        let all: u64 = sizes.values().sum();
        if all > 0 {
            bytes = (bytes as u128 * kept as u128 / all as u128) as u64;
        }
        samples = kept;
    }
    Ok((samples, bytes))
}

/// The sizes of the sampling rule's categories (empty without a rule).
pub fn category_sizes(state: &State, def: &Definition, sel: &Selection) -> Result<Sizes, Error> {
    let mut sizes = Sizes::new();
    let Some(rule) = &def.sample else {
        return Ok(sizes);
    };
    let dirs = state.out_dirs_with_collection()?;
    for d in &sel.dirs {
        let (scale, sub) = facts::scale_and_sub(&d.path);
        let collection = dirs
            .iter()
            .find(|(id, _, c)| *id == d.id && sel.takes(c))
            .map(|(_, _, c)| c.clone())
            .unwrap_or_default();
        let organ = sel
            .meta
            .get(&collection)
            .and_then(|m| m.organs.first().cloned());
        for (class, n) in state.class_counts(d.id)? {
            let cat = rule.category(&super::sample::SampleFacts {
                scale,
                sub_dataset: sub,
                class: class.as_deref(),
                collection: &collection,
                organ: organ.as_deref(),
            });
            *sizes.entry((cat, scale.to_string())).or_default() += n;
        }
    }
    Ok(sizes)
}

/// Marks the folders of categories whose size moved: their members change.
fn mark_moved_categories(state: &mut State, row: &ExportRow, sizes: &Sizes) -> Result<(), Error> {
    let encode = |s: &Sizes| -> String {
        let m: BTreeMap<String, u64> = s
            .iter()
            .map(|((c, sc), n)| (format!("{sc}/{c}"), *n))
            .collect();
        serde_json::to_string(&m).unwrap_or_default()
    };
    let before: BTreeMap<String, u64> =
        serde_json::from_str(&state.export_sizes(row.id)?).unwrap_or_default();
    let now = encode(sizes);
    if serde_json::to_string(&before).unwrap_or_default() == now {
        return Ok(());
    }
    let moved: Vec<String> = sizes
        .iter()
        .filter(|((c, sc), n)| before.get(&format!("{sc}/{c}")) != Some(n))
        .map(|((_, sc), _)| sc.clone())
        .collect();
    // A moved category may span folders: mark every folder of its scales.
    let dirs: Vec<i64> = state
        .out_dirs_with_collection()?
        .into_iter()
        .filter(|(_, p, _)| moved.iter().any(|sc| p.starts_with(&format!("{sc}/"))))
        .map(|(id, _, _)| id)
        .collect();
    state.mark_export_dirs(row.id, &dirs)?;
    state.set_export_sizes(row.id, &now)?;
    Ok(())
}

/// Re-evaluates one page of pairs (on two threads when `second` is given,
/// never for an ImageFolder) and records it (an ImageFolder's files placed
/// first).
#[allow(clippy::too_many_arguments)]
fn apply_page(
    state: &mut State,
    out: &OutputDir,
    ev: &mut Evaluator<'_>,
    second: Option<&SecondReader>,
    id: i64,
    page: &[(i64, i64)],
    format: Format,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let mut updates = Vec::with_capacity(page.len());
    let mut stale = Vec::new();
    let mut old = Vec::with_capacity(page.len());
    for &(out_dir, input) in page {
        old.push(state.export_pair_samples(id, out_dir, input)?);
    }
    let evaluated: Vec<Evaluated> = match second.filter(|_| format.sharded()) {
        Some(second) => second.evaluate(Page::new(page.to_vec(), old), state, ev)?,
        None => {
            let mut done = Vec::with_capacity(page.len());
            for (&(out_dir, input), old) in page.iter().zip(&old) {
                let e = ev.evaluate(state, out_dir, input, old)?;
                if format == Format::ImageFolder {
                    let (placed, removed) = imagefolder::apply(state, out, old, &e.update.samples)?;
                    outcome.files_placed += placed;
                    outcome.files_removed += removed;
                }
                done.push(e);
            }
            done
        }
    };
    for e in evaluated {
        outcome.pairs += 1;
        stale.extend(e.changes.iter().map(|c| c.shard));
        updates.push(e.update);
    }
    stale.sort_unstable();
    stale.dedup();
    if !format.sharded() {
        stale.clear();
    }
    state.apply_export_pairs(id, &updates, &stale)?;
    Ok(())
}

/// The shard members an update keeps from evaluating its samples to
/// writing their shards (keys, paths, records; ~1 KiB a sample): up to here
/// a shard's members are neither read from the state nor their records
/// made a second time (an export of 20,000 samples spent ~0.3 s doing so,
/// on the thread that feeds the writers); past it they are. Bounded so that
/// a corpus-size export stays within its memory target.
const KEEP_BYTES: usize = 48 << 20;

/// A shard to write: its number, file and members in order.
struct Job {
    format: Format,
    shard: u64,
    rel: String,
    digest: String,
    members: Vec<Member>,
}

/// Writes every stale shard whose samples changed, on `jobs` threads.
fn write_stale(
    state: &mut State,
    out: &OutputDir,
    def: &Definition,
    row: &ExportRow,
    ev: &mut Evaluator<'_>,
    jobs: usize,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let stale = state.export_stale(row.id)?;
    if stale.is_empty() {
        return Ok(());
    }
    let recorded: HashMap<u64, ExportFile> = state
        .export_files(row.id)?
        .into_iter()
        .filter_map(|f| f.shard.map(|s| (s, f)))
        .collect();
    let threads = jobs.clamp(1, 16);
    let pools = writer_pools(threads, stale.len())?;
    // One reader for all writers: its folder handles are shared.
    let reader = &out.reader();
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
    let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(Job, std::io::Result<ExportFile>)>();
    std::thread::scope(|scope| -> Result<(), Error> {
        for pool in &pools {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || loop {
                let next = rx.lock().map(|r| r.recv());
                let Ok(Ok(job)) = next else { break };
                let r = pool.install(|| write_job(out, reader, &job));
                if tx.send((job, r)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut pending = 0usize;
        let mut result = Ok(());
        for &shard in &stale {
            match prepare_job(
                state,
                out,
                def,
                row,
                ev,
                shard,
                recorded.get(&shard),
                outcome,
            ) {
                Ok(Some(job)) => {
                    if job_tx.send(job).is_err() {
                        break;
                    }
                    pending += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            while let Ok(done) = done_rx.try_recv() {
                pending -= 1;
                record_done(state, row.id, done, outcome)?;
            }
        }
        drop(job_tx);
        while pending > 0 {
            let Ok(done) = done_rx.recv() else { break };
            pending -= 1;
            record_done(state, row.id, done, outcome)?;
        }
        result
    })
}

/// The rayon pools the `threads` shard writers read and hash on
/// ([`super::webdataset`]'s module doc), one per writer. With fewer stale
/// shards than threads the writers share one pool of `threads`, so a shard
/// also uses the cores no other shard needs (one 1 GB shard: 4.15 s → 3.25 s);
/// otherwise each writer has a pool of its own thread: every core already
/// has a shard, and handing work between cores only cost time (4 shards on
/// 2 threads: ~5 % slower with one shared pool, on a loaded machine).
fn writer_pools(threads: usize, stale: usize) -> Result<Vec<Arc<rayon::ThreadPool>>, Error> {
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("cpia-export-{i}"))
            .build()
            .map(Arc::new)
            .map_err(|e| Error::Other(format!("starting the export's threads: {e}")))
    };
    if stale < threads {
        let shared = pool(threads)?;
        Ok(vec![shared; threads])
    } else {
        (0..threads).map(|_| pool(1)).collect()
    }
}

/// The job of shard `shard`, or `None` when there is nothing to write (its
/// samples did not change, or it has none: its file is then removed).
#[allow(clippy::too_many_arguments)]
fn prepare_job(
    state: &mut State,
    out: &OutputDir,
    def: &Definition,
    row: &ExportRow,
    ev: &mut Evaluator<'_>,
    shard: u64,
    recorded: Option<&ExportFile>,
    outcome: &mut Outcome,
) -> Result<Option<Job>, Error> {
    let samples = state.export_shard_samples(row.id, shard)?;
    let rel = shard_path(def, shard);
    if samples.is_empty() {
        if let Some(f) = recorded {
            out.remove(&f.path)?;
            state.forget_export_file(row.id, &f.path, Some(shard))?;
            outcome.shards_removed += 1;
        } else {
            state.forget_export_file(row.id, &rel, Some(shard))?;
        }
        return Ok(None);
    }
    let digest = shard_digest(def.format, &samples);
    if let Some(f) = recorded.filter(|f| f.digest == digest && f.path == rel) {
        state.record_export_file(row.id, f)?;
        return Ok(None);
    }
    let members = state.reading(|state| members(state, def, ev, shard, &samples))?;
    Ok(Some(Job {
        format: def.format,
        shard,
        rel,
        digest,
        members,
    }))
}

/// The members of shard `shard`, whose samples are `samples`, in order.
fn members(
    state: &State,
    def: &Definition,
    ev: &mut Evaluator<'_>,
    shard: u64,
    samples: &[SampleRow],
) -> Result<Vec<Member>, Error> {
    let mut members = Vec::with_capacity(samples.len());
    for s in samples {
        if let Some(m) = ev.take_member(&s.item) {
            members.push(m);
            continue;
        }
        let facts = match s.item {
            Item::Output(id) => state.output_facts_by_id(id)?,
            Item::Tile { unit, x, y } => state.tile_facts_at(unit, x, y, &facts::tile_name)?,
        };
        let Some(f) = facts else {
            return Err(Error::Other(format!(
                "export {}: shard {shard} names a sample that is no longer recorded; run `cpia export {}` again",
                def.name, def.name
            )));
        };
        let Some((k, rec, _)) = ev.sample(state, &f)? else {
            continue;
        };
        members.push(Member::of(&f, k, rec));
    }
    members.sort_by(|a, b| (a.rank, &a.key).cmp(&(b.rank, &b.key)));
    Ok(members)
}

/// A shard's file, relative to the output folder.
pub fn shard_path(def: &Definition, shard: u64) -> String {
    match def.format {
        Format::Parquet => format!(
            "{}/data/{}",
            super::folder(&def.name),
            key::shard_name(&def.name, shard, "parquet")
        ),
        _ => format!(
            "{}/{}",
            super::folder(&def.name),
            key::shard_name(&def.name, shard, "tar")
        ),
    }
}

/// Writes one shard (on a writer thread).
fn write_job(out: &OutputDir, reader: &Reader<'_>, job: &Job) -> std::io::Result<ExportFile> {
    let read = |rel: &str, len: u64| reader.read(rel, len);
    let (w, sums) = out.write_with(&job.rel, |file| match job.format {
        Format::Parquet => parquet::write_shard(file, &job.members, &read),
        _ => webdataset::write_shard(file, &job.members, &read),
    })?;
    Ok(ExportFile {
        path: job.rel.clone(),
        shard: Some(job.shard),
        samples: job.members.len() as u64,
        digest: job.digest.clone(),
        blake3: sums.blake3,
        sha256: sums.sha256,
        bytes: sums.bytes,
        mtime_ns: w.mtime_ns,
    })
}

/// Records a written shard, or the failure that left it stale.
fn record_done(
    state: &mut State,
    id: i64,
    (job, r): (Job, std::io::Result<ExportFile>),
    outcome: &mut Outcome,
) -> Result<(), Error> {
    match r {
        Ok(f) => {
            state.record_export_file(id, &f)?;
            outcome.shards_written += 1;
        }
        Err(e) => outcome
            .failures
            .push(format!("{}: not written: {e}", job.rel)),
    }
    Ok(())
}

/// Writes the index (WebDataset) and the Croissant file when their text changed.
fn write_metadata(
    state: &mut State,
    out: &OutputDir,
    def: &Definition,
    row: &ExportRow,
    sel: &Selection,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let files = state.export_files(row.id)?;
    let mut texts: Vec<(String, Vec<u8>)> = Vec::new();
    if def.format == Format::WebDataset {
        texts.push((index::path(&def.name), index::text(def, &files)));
    }
    texts.push((
        croissant::path(&def.name),
        croissant::text(def, row, sel, &files)?,
    ));
    for (rel, bytes) in texts {
        let digest = blake3::hash(&bytes).to_hex().to_string();
        if files.iter().any(|f| f.path == rel && f.blake3 == digest) {
            continue;
        }
        let w = out.write(&rel, &bytes)?;
        let sha = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        state.record_export_file(
            row.id,
            &ExportFile {
                path: rel,
                shard: None,
                samples: 0,
                digest: digest.clone(),
                blake3: digest,
                sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
                bytes: w.size,
                mtime_ns: w.mtime_ns,
            },
        )?;
    }
    let _ = outcome;
    Ok(())
}

/// Says when shards have outgrown twice their target.
fn advise_reshard(
    def: &Definition,
    row: &ExportRow,
    samples: u64,
    bytes: u64,
    outcome: &mut Outcome,
) {
    if !def.format.sharded() || row.shards == 0 {
        return;
    }
    let (avg, target, unit) = match def.target {
        Target::Samples(n) => (samples / row.shards, n, "samples"),
        Target::Bytes(b) => (bytes / row.shards, b, "bytes"),
    };
    if avg > 2 * target {
        let n = match def.target {
            Target::Samples(_) => shard_count(def.target, samples, 0),
            Target::Bytes(_) => bytes.div_ceil(target).max(1),
        };
        outcome.notes.push(format!(
            "its {} shards hold {avg} {unit} each on average, more than twice the target {target}: \
             `cpia export --reshard {}` rewrites it as {n} shards",
            row.shards, def.name
        ));
    }
}

/// Removes export `row`'s files (through the confined writer) and forgets
/// it: (shards, other files) removed.
pub fn remove(state: &mut State, out: &OutputDir, row: &ExportRow) -> Result<(u64, u64), Error> {
    let mut shards = 0;
    let mut files = 0;
    for f in state.export_files(row.id)? {
        out.remove(&f.path)?;
        if f.shard.is_some() {
            shards += 1;
        } else {
            files += 1;
        }
    }
    let mut failed = None;
    state.for_each_export_sample(row.id, &mut |s| {
        if let Some(p) = s.path {
            match out.remove(&p) {
                Ok(()) => files += 1,
                Err(e) => failed = failed.take().or(Some(e)),
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    state.delete_export(row.id)?;
    Ok((shards, files))
}
