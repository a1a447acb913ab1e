//! Which inputs of a collection need a detailed plan: the source listing
//! merged, folder by folder, with the stat index and the inputs' records.
//!
//! | the source file | the input's record | result |
//! |---|---|---|
//! | stat equals the stat index's (device, inode, size, mtime and ctime ns) | complete under the current plan fingerprint, no damaged output | **up to date as a whole**: its recorded output count is added, nothing else is read |
//! | stat equals | anything else (new input, fingerprint moved, incomplete, damaged) | detailed plan, hash from the index |
//! | stat differs or file new | — | hashed; a different hash makes its inputs incomplete; detailed plan |
//! | … and changed within the timestamps' granularity before the walk ([`super::sources::racy`]) | — | hashed again once that window has passed; recorded as vouching for nothing (hashed again next time) unless both hashes and stats agree, and its folder is read row by row next time |
//! | cannot be hashed | — | a problem of the input; its outputs are kept |
//! | gone, or no longer accepted by `[inputs]` | recorded | removed with its outputs |
//!
//! Memory: the collection's listing (a path and a stat per source file) and
//! one folder's records at a time; never the outputs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::expand::Input;
use super::sources::{self, hash_file, FoundFile};
use crate::slide::SlideMeta;
use crate::store::{FileStat, State, StateError, UNKNOWN_CTIME};

static FOLDERS_READ: AtomicU64 = AtomicU64::new(0);
static RACY_REHASHED: AtomicU64 = AtomicU64::new(0);

/// Source folders whose rows this process read (not skipped on their
/// digest), for `CPIA_DEBUG_COUNTERS`: 0 on a no-op.
pub fn folders_read() -> u64 {
    FOLDERS_READ.load(Ordering::Relaxed)
}

/// Source files hashed a second time because their stat was racy, for
/// `CPIA_DEBUG_COUNTERS`.
pub fn racy_rehashed() -> u64 {
    RACY_REHASHED.load(Ordering::Relaxed)
}

/// An input that needs a detailed plan.
#[derive(Clone, Debug)]
pub struct Detail {
    pub input: Arc<Input>,
    /// WSI collections: the slide's metadata, or why it cannot be opened.
    pub slide: Option<Result<Arc<SlideMeta>, String>>,
}

/// A recorded input that is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    pub id: i64,
    pub rel: String,
    /// Whether the file is still there (excluded by `[inputs]` now).
    pub excluded: bool,
}

/// A source file that cannot be planned because it cannot be hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub input: Option<i64>,
    pub abs: String,
    pub error: String,
}

/// A source folder read row by row: once every input in it is complete, it
/// is recorded so the next plan can skip it on its digest alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folder {
    pub src_dir: i64,
    /// blake3 of the names and stats of the accepted files in it.
    pub digest: String,
    pub inputs: Vec<i64>,
    /// False when something in it could not be planned or is gone: it is
    /// read row by row again next time.
    pub ok: bool,
}

/// The inputs of a collection, sorted out.
#[derive(Debug, Default)]
pub struct Classified {
    /// Outputs of inputs that are up to date as a whole.
    pub clean_outputs: u64,
    pub clean_inputs: u64,
    pub detail: Vec<Detail>,
    pub gone: Vec<Gone>,
    pub unreadable: Vec<Unreadable>,
    /// Every input found, by slide name (WSI collections only): two slides
    /// with one name would write the same tiles.
    pub slide_names: HashMap<String, Vec<String>>,
    /// Folders read row by row (not skipped on their digest).
    pub folders: Vec<Folder>,
}

/// What classification needs to know about the collection.
pub struct Collection<'a> {
    pub id: i64,
    pub name: &'a str,
    /// Source root name and folder.
    pub root_name: &'a str,
    pub root: &'a Path,
    /// The current plan fingerprint's id.
    pub fp: i64,
    pub wsi: bool,
    /// This machine's clock before the walk ([`sources::now_ns`]): a stat
    /// of a file changed within its racy window of it vouches for nothing
    /// until confirmed.
    pub scanned_at: i64,
}

/// Sorts the collection's inputs: up to date as a whole, to plan in detail,
/// gone. `damaged` holds inputs with damaged outputs (always planned), and
/// `damaged_dirs` the source folders they are in.
///
/// A source folder whose files' names and stats hash to the digest recorded
/// when all its inputs were complete, under the same plan fingerprint, is up
/// to date as a whole: not one of its rows is read (a no-op costs a `stat`
/// per source file and a row per folder).
pub fn classify(
    state: &mut State,
    c: &Collection<'_>,
    found: Vec<FoundFile>,
    damaged: &dyn Fn(i64) -> bool,
    damaged_dirs: &HashSet<i64>,
) -> Result<Classified, StateError> {
    let mut out = Classified::default();
    let mut by_dir: BTreeMap<String, Vec<FoundFile>> = BTreeMap::new();
    for f in found {
        let (dir, _) = split(&f.rel);
        by_dir.entry(dir.to_string()).or_default().push(f);
    }
    let mut pending = Pending {
        damaged,
        visited: HashSet::new(),
        to_hash: Vec::new(),
        to_add: Vec::new(),
        folder_of: HashMap::new(),
    };
    for (dir, files) in by_dir {
        let src_dir = state.src_dir_id(c.root_name, &dir)?;
        let digest = digest(&files);
        let whole = !damaged_dirs.contains(&src_dir)
            && folder_up_to_date(state, c, &mut out, src_dir, &digest, &files)?;
        if !whole {
            let folder = Folder {
                src_dir,
                digest,
                inputs: Vec::new(),
                ok: true,
            };
            read_folder(state, c, &mut out, &mut pending, &dir, folder, files)?;
        }
        pending.visited.insert(dir);
    }
    note_unvisited_folders(state, c, &mut out, &pending.visited)?;
    add_shared_inputs(state, c, &mut out, pending.to_add, &pending.folder_of)?;
    hash_new_files(state, c, &mut out, pending.to_hash, &pending.folder_of)?;
    if c.wsi {
        for d in &out.detail {
            note_slide(&mut out.slide_names, &d.input.rel);
        }
        attach_slide_meta(state, &mut out.detail)?;
    }
    out.detail.sort_by(|a, b| a.input.rel.cmp(&b.input.rel));
    out.gone.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// What [`classify`] gathers while it goes through the folders, for the
/// steps after them.
struct Pending<'d> {
    /// Whether an input has damaged outputs (then it is always planned).
    damaged: &'d dyn Fn(i64) -> bool,
    /// Source folders the walk reached (relative to the root).
    visited: HashSet<String>,
    /// New or changed files: (source folder, file, its input if recorded).
    to_hash: Vec<(i64, FoundFile, Option<i64>)>,
    /// Unchanged files another collection recorded on this root: (file id,
    /// source folder, file, hash).
    to_add: Vec<(i64, i64, FoundFile, String)>,
    /// Folders read row by row: source folder → index in `Classified::folders`.
    folder_of: HashMap<i64, usize>,
}

/// Whether a folder is up to date as a whole (its digest and fingerprint as
/// recorded when all its inputs were complete): then its recorded counts are
/// added and not one of its rows is read.
fn folder_up_to_date(
    state: &State,
    c: &Collection<'_>,
    out: &mut Classified,
    src_dir: i64,
    digest: &str,
    files: &[FoundFile],
) -> Result<bool, StateError> {
    let Some((d, fp, inputs, outputs)) = state.folder(c.id, src_dir)? else {
        return Ok(false);
    };
    if d != digest || fp != c.fp {
        return Ok(false);
    }
    out.clean_inputs += inputs;
    out.clean_outputs += outputs;
    if c.wsi {
        for f in files {
            note_slide(&mut out.slide_names, &f.rel);
        }
    }
    Ok(true)
}

/// A folder read row by row: each file found against its record (up to date,
/// planned in detail, to add, or to hash), and each recorded file not found
/// noted gone.
fn read_folder(
    state: &State,
    c: &Collection<'_>,
    out: &mut Classified,
    pending: &mut Pending<'_>,
    dir: &str,
    found: Folder,
    files: Vec<FoundFile>,
) -> Result<(), StateError> {
    FOLDERS_READ.fetch_add(1, Ordering::Relaxed);
    let src_dir = found.src_dir;
    let folder = out.folders.len();
    pending.folder_of.insert(src_dir, folder);
    out.folders.push(found);
    let recorded = state.files_in(src_dir, c.id)?;
    let mut by_name: HashMap<&str, &crate::store::RecordedFile> =
        recorded.iter().map(|r| (r.name.as_str(), r)).collect();
    for f in files {
        let name = split(&f.rel).1;
        match by_name.remove(name) {
            Some(r) if r.stat == f.stat => match r.input {
                Some(i) if i.fp == Some(c.fp) && !(pending.damaged)(i.id) => {
                    out.clean_inputs += 1;
                    out.clean_outputs += i.outputs;
                    out.folders[folder].inputs.push(i.id);
                    if c.wsi {
                        note_slide(&mut out.slide_names, &f.rel);
                    }
                }
                Some(i) => {
                    out.folders[folder].inputs.push(i.id);
                    out.detail.push(detail(c, i.id, &f, r.hash.clone()));
                }
                None => pending.to_add.push((r.id, src_dir, f, r.hash.clone())),
            },
            Some(r) => pending.to_hash.push((src_dir, f, r.input.map(|i| i.id))),
            None => pending.to_hash.push((src_dir, f, None)),
        }
    }
    // Recorded here, not found: gone from disk, or not accepted now.
    for r in by_name.into_values() {
        if r.input.is_some() {
            out.folders[folder].ok = false;
        }
        note_gone(out, c, dir, r);
    }
    Ok(())
}

/// Recorded folders the walk did not reach: their inputs are gone.
fn note_unvisited_folders(
    state: &State,
    c: &Collection<'_>,
    out: &mut Classified,
    visited: &HashSet<String>,
) -> Result<(), StateError> {
    for (src_dir, dir) in state.src_dirs_of_root(c.root_name)? {
        if visited.contains(&dir) {
            continue;
        }
        for r in &state.files_in(src_dir, c.id)? {
            note_gone(out, c, &dir, r);
        }
    }
    Ok(())
}

/// Files recorded by another collection on this root, unchanged: inputs of
/// this collection too, planned in detail with the recorded hash.
fn add_shared_inputs(
    state: &mut State,
    c: &Collection<'_>,
    out: &mut Classified,
    to_add: Vec<(i64, i64, FoundFile, String)>,
    folder_of: &HashMap<i64, usize>,
) -> Result<(), StateError> {
    if to_add.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = to_add.iter().map(|(f, _, _, _)| *f).collect();
    let inputs = state.add_inputs(c.id, &ids)?;
    for ((_, dir, f, hash), id) in to_add.into_iter().zip(inputs) {
        if let Some(folder) = folder_of.get(&dir) {
            out.folders[*folder].inputs.push(id);
        }
        out.detail.push(detail(c, id, &f, hash));
    }
    Ok(())
}

/// New or changed files: hashed in parallel (racy ones confirmed), recorded
/// in one transaction, planned in detail; a file that cannot be hashed is
/// unreadable, and its folder is read row by row again next time.
fn hash_new_files(
    state: &mut State,
    c: &Collection<'_>,
    out: &mut Classified,
    to_hash: Vec<(i64, FoundFile, Option<i64>)>,
    folder_of: &HashMap<i64, usize>,
) -> Result<(), StateError> {
    let mut hashed: Vec<Hashed> = to_hash
        .into_par_iter()
        .map(|(dir, f, input)| {
            let h = hash_file(&f.abs);
            (dir, f, input, h)
        })
        .collect();
    confirm_racy(&mut hashed, c.scanned_at);
    let ok: Vec<(i64, &str, FileStat, &str)> = hashed
        .iter()
        .filter_map(|(dir, f, _, h)| {
            h.as_ref()
                .ok()
                .map(|h| (*dir, split(&f.rel).1, f.stat, h.as_str()))
        })
        .collect();
    let ids = state.record_files(c.id, &ok)?;
    let mut ids = ids.into_iter();
    for (dir, f, input, h) in &hashed {
        match h {
            Ok(h) => {
                if let Some((_, input)) = ids.next() {
                    if let Some(folder) = folder_of.get(dir) {
                        out.folders[*folder].inputs.push(input);
                        if f.stat.ctime_ns == UNKNOWN_CTIME {
                            out.folders[*folder].ok = false;
                        }
                    }
                    out.detail.push(detail(c, input, f, h.clone()));
                }
            }
            Err(e) => {
                if let Some(folder) = folder_of.get(dir) {
                    out.folders[*folder].ok = false;
                }
                out.unreadable.push(Unreadable {
                    input: *input,
                    abs: f.abs.display().to_string(),
                    error: e.clone(),
                })
            }
        }
    }
    Ok(())
}

/// (source folder, file, its input if recorded, content hash).
type Hashed = (i64, FoundFile, Option<i64>, Result<String, String>);

/// Confirms the hashes of files whose stat was racy when the walk began:
/// once their window has passed, each is stat'ed and hashed again. A file
/// whose stat and hash both held is recorded as it is; any other keeps the
/// newer hash with its ctime [`UNKNOWN_CTIME`], so it is hashed again by
/// the next walk. Waits at most once, for the newest of them (≤ 2 s).
fn confirm_racy(hashed: &mut [Hashed], scanned_at: i64) {
    let racy: Vec<usize> = (0..hashed.len())
        .filter(|&i| hashed[i].3.is_ok() && sources::racy(&hashed[i].1.stat, scanned_at))
        .collect();
    let settles = |s: &FileStat| s.mtime_ns.max(s.ctime_ns) + sources::racy_window(s);
    let Some(until) = racy.iter().map(|&i| settles(&hashed[i].1.stat)).max() else {
        return;
    };
    let wait = (until - sources::now_ns()).clamp(0, 2_000_000_000);
    std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
    let now = sources::now_ns();
    let again: Vec<(usize, Option<Result<String, String>>)> = racy
        .par_iter()
        .map(|&i| {
            let f = &hashed[i].1;
            // A stat from a clock ahead of this machine's cannot settle yet.
            let same = settles(&f.stat) <= now
                && std::fs::metadata(&f.abs).is_ok_and(|m| sources::file_stat(&m) == f.stat);
            RACY_REHASHED.fetch_add(u64::from(same), Ordering::Relaxed);
            (i, same.then(|| sources::content_hash(&f.abs)))
        })
        .collect();
    for (i, second) in again {
        let entry = &mut hashed[i];
        match second {
            Some(Ok(h)) if entry.3.as_ref() == Ok(&h) => {}
            Some(Ok(h)) => {
                entry.3 = Ok(h);
                entry.1.stat.ctime_ns = UNKNOWN_CTIME;
            }
            _ => entry.1.stat.ctime_ns = UNKNOWN_CTIME,
        }
    }
}

/// A recorded file of folder `dir` that the walk did not find (or did not
/// accept): its input, if the collection has one, is gone — unless the
/// file cannot be examined (a folder on its way cannot be read): then it is
/// unreadable, and its outputs are kept.
fn note_gone(out: &mut Classified, c: &Collection<'_>, dir: &str, r: &crate::store::RecordedFile) {
    let Some(i) = r.input else {
        return;
    };
    let rel = if dir.is_empty() {
        r.name.clone()
    } else {
        format!("{dir}/{}", r.name)
    };
    let abs = c.root.join(&rel);
    let excluded = match std::fs::symlink_metadata(&abs) {
        Ok(_) => true,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => false,
        Err(e) => {
            out.unreadable.push(Unreadable {
                input: Some(i.id),
                abs: abs.display().to_string(),
                error: format!(
                    "cannot be examined: {e} (a folder on its way cannot be read); its outputs are kept"
                ),
            });
            return;
        }
    };
    out.gone.push(Gone {
        id: i.id,
        rel,
        excluded,
    });
}

fn detail(c: &Collection<'_>, id: i64, f: &FoundFile, hash: String) -> Detail {
    Detail {
        input: Arc::new(Input {
            id,
            collection: c.name.to_string(),
            source_root: c.root_name.to_string(),
            rel: f.rel.clone(),
            abs: f.abs.clone(),
            hash,
        }),
        slide: None,
    }
}

fn note_slide(names: &mut HashMap<String, Vec<String>>, rel: &str) {
    names
        .entry(crate::slide::slide_name(rel).to_string())
        .or_default()
        .push(rel.to_string());
}

/// The digest of a folder's accepted files: their names and stats, in order.
fn digest(files: &[FoundFile]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"cpia-source-folder-2");
    for f in files {
        let name = split(&f.rel).1;
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        let s = &f.stat;
        for v in [s.dev, s.ino, s.size, s.mtime_ns as u64, s.ctime_ns as u64] {
            h.update(&v.to_le_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// `("a/b", "c.png")` for `"a/b/c.png"`, `("", "c.png")` for `"c.png"`.
fn split(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", rel),
    }
}

/// Adds each slide's metadata: from the state's cache by content hash, else
/// by opening the slide (then cached), so an unchanged slide is never opened
/// just to be planned.
fn attach_slide_meta(state: &mut State, detail: &mut [Detail]) -> Result<(), StateError> {
    let mut probe: Vec<usize> = Vec::new();
    for (i, d) in detail.iter_mut().enumerate() {
        match state
            .slide_meta(&d.input.hash)?
            .and_then(|j| serde_json::from_str::<SlideMeta>(&j).ok())
        {
            Some(meta) => d.slide = Some(Ok(Arc::new(meta))),
            None => probe.push(i),
        }
    }
    let probed: Vec<(usize, Result<SlideMeta, String>)> = probe
        .par_iter()
        .map(|&i| (i, crate::slide::Slide::probe(&detail[i].input.abs)))
        .collect();
    for (i, meta) in probed {
        if let Ok(meta) = &meta {
            if let Ok(json) = serde_json::to_string(meta) {
                state.put_slide_meta(&detail[i].input.hash, &json)?;
            }
        }
        detail[i].slide = Some(meta.map(Arc::new));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(dir: &Path, name: &str) -> FoundFile {
        let abs = dir.join(name);
        let m = std::fs::metadata(&abs).unwrap();
        FoundFile {
            rel: name.to_string(),
            abs,
            stat: sources::file_stat(&m),
        }
    }

    #[test]
    fn racy_stats_vouch_only_once_a_second_hash_confirms_them() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["same", "changed", "moved"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let hash = |name: &str| sources::content_hash(&dir.path().join(name)).unwrap();
        let mut moved = found(dir.path(), "moved");
        moved.stat.mtime_ns -= 1; // its stat moved since the walk
        let mut hashed: Vec<Hashed> = vec![
            (1, found(dir.path(), "same"), None, Ok(hash("same"))),
            // What the first read saw is not what is there now: a change
            // in the same tick, invisible to the stat.
            (1, found(dir.path(), "changed"), None, Ok(hash("same"))),
            (1, moved, None, Ok(hash("moved"))),
        ];
        let newest = hashed
            .iter()
            .map(|h| h.1.stat.mtime_ns.max(h.1.stat.ctime_ns) + sources::racy_window(&h.1.stat))
            .max()
            .unwrap();
        // Just written: every stat is racy.
        confirm_racy(&mut hashed, sources::now_ns());
        assert!(sources::now_ns() >= newest, "the window was not waited out");
        assert_ne!(hashed[0].1.stat.ctime_ns, UNKNOWN_CTIME, "confirmed");
        assert_eq!(hashed[0].3, Ok(hash("same")));
        assert_eq!(hashed[1].1.stat.ctime_ns, UNKNOWN_CTIME);
        assert_eq!(hashed[1].3, Ok(hash("changed")), "the newer bytes");
        assert_eq!(hashed[2].1.stat.ctime_ns, UNKNOWN_CTIME);

        // A stat out of its window is not looked at again (a hash that no
        // longer matches the file is left as it is: it was not re-read).
        let mut old = vec![(1, found(dir.path(), "changed"), None, Ok(hash("same")))];
        confirm_racy(&mut old, sources::now_ns() + 10_000_000_000);
        assert_ne!(old[0].1.stat.ctime_ns, UNKNOWN_CTIME);
        assert_eq!(old[0].3, Ok(hash("same")));
    }
}
