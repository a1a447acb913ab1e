//! What a build notices about outputs on disk, without a `stat` per output.
//!
//! Each output folder's identity (device, inode, mtime and ctime in ns) is
//! recorded when the folder is known to match the records. Adding, removing,
//! renaming or replacing an entry changes the folder's mtime and ctime, and
//! a replaced folder has another inode; so a folder whose identity is
//! unchanged proves that every recorded file in it is still there, under
//! its name, with its inode. Only a folder whose identity moved is
//! *verified*: one `readdir` (names, inode numbers and types, no per-file
//! `stat`) compared with the records of that folder.
//!
//! Not noticed this way: a file rewritten in place (same inode), which
//! `--check-outputs` ([`Mode::StatAll`], a `stat` of every recorded output)
//! or `cpia verify` finds. See docs/state.md, "What a no-op notices".
//!
//! Racy identities: timestamps come from a coarse clock (a jiffy on ext4, a
//! second on some NFS servers), so a change in the same tick as the last
//! recorded change leaves them equal. An identity is therefore recorded only
//! once the output filesystem's clock has moved far enough past the folder's
//! timestamps (git's "racily clean" rule; the table is in
//! [`super::fs_clock`]).
//!
//! An identity vouches only for what was seen *after* it was read: the
//! identity read when a build starts ([`CheckedDir::vouched`]) or one read
//! at its end, before one more `readdir` compares the folder with the records
//! the build left ([`verify_now`]). So a file deleted by someone else while a
//! build runs — in a folder the build writes or in one it does not — is never
//! recorded as present (engine/driver.rs, `record_dir_identities`).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::expand::tile_name;
use super::fs_clock::FsClock;
use crate::store::{DirEntryRecord, DirIdentity, Event, OutDir, Owner, State, StateError};

static VERIFIED_DIRS: AtomicU64 = AtomicU64::new(0);
static CHECKED_OUTPUTS: AtomicU64 = AtomicU64::new(0);
static REVERIFIED_DIRS: AtomicU64 = AtomicU64::new(0);
static REVERIFIED_OUTPUTS: AtomicU64 = AtomicU64::new(0);

/// (output folders verified, recorded outputs compared) by this process's
/// checks before planning, for `CPIA_DEBUG_COUNTERS`: a no-op verifies no
/// folder.
pub fn counters() -> (u64, u64) {
    (
        VERIFIED_DIRS.load(Ordering::Relaxed),
        CHECKED_OUTPUTS.load(Ordering::Relaxed),
    )
}

/// (output folders verified, records compared) again at the end of a build
/// ([`verify_now`]), for `CPIA_DEBUG_COUNTERS`.
pub fn reverified() -> (u64, u64) {
    (
        REVERIFIED_DIRS.load(Ordering::Relaxed),
        REVERIFIED_OUTPUTS.load(Ordering::Relaxed),
    )
}

/// How much to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Verify only folders whose identity moved (the default).
    Identity,
    /// `stat` every recorded output (and hash it if its mtime moved):
    /// `--check-outputs`.
    StatAll,
}

/// A recorded output found damaged, and why (an `--explain` reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub input: i64,
    pub owner: Owner,
    pub path: String,
    pub reason: &'static str,
}

/// What the check found about one folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedDir {
    pub dir: OutDir,
    /// Its identity when it was checked (`None`: missing or not a folder).
    pub seen: Option<DirIdentity>,
    /// Whether `seen` vouches for the folder as checked: it equals the
    /// recorded identity (trusted), or it was read out of the racy window
    /// (before the `readdir` that verified the folder). Then, if the folder
    /// still has this identity when the build ends, nothing happened in it.
    pub vouched: bool,
    /// Whether it was compared with its records (its identity had moved).
    pub verified: bool,
    /// Inputs with damaged files in it.
    pub damaged_inputs: HashSet<i64>,
}

/// The result of checking the output folders of some collections.
#[derive(Debug, Default)]
pub struct DirCheck {
    pub dirs: Vec<CheckedDir>,
    /// Damage by input.
    pub damage: HashMap<i64, Vec<Damage>>,
    /// Records of files touched but unchanged (only [`Mode::StatAll`]).
    pub restats: Vec<Event>,
}

impl DirCheck {
    /// The damage of one input's files.
    pub fn of(&self, input: i64) -> &[Damage] {
        self.damage.get(&input).map_or(&[], Vec::as_slice)
    }
}

/// The identity of the folder at `path`, if it is a real folder (a symlink
/// is not: writes refuse to follow it).
pub fn identity(path: &Path) -> Option<DirIdentity> {
    let m = std::fs::symlink_metadata(path).ok()?;
    if !m.is_dir() {
        return None;
    }
    Some(DirIdentity {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

/// Checks the output folders of `collections` under `root`. `clock` is the
/// output filesystem's clock read before the check (`None`: unknown, as in
/// `cpia plan`): a verified folder's identity vouches for it only if it was
/// already out of the racy window then ([`FsClock::racy`]).
pub fn check(
    state: &State,
    root: &Path,
    collections: &[i64],
    mode: Mode,
    clock: Option<FsClock>,
) -> Result<DirCheck, StateError> {
    let mut result = DirCheck::default();
    for dir in state.out_dirs_of(collections)? {
        let seen = identity(&root.join(&dir.path));
        let same = seen.is_some() && seen == dir.identity;
        let trusted = mode == Mode::Identity && same;
        let settled = match (seen, clock) {
            (Some(s), Some(clock)) => !clock.racy(&s),
            _ => false,
        };
        let mut checked = CheckedDir {
            dir,
            seen,
            vouched: same || settled,
            verified: !trusted,
            damaged_inputs: HashSet::new(),
        };
        if !trusted {
            VERIFIED_DIRS.fetch_add(1, Ordering::Relaxed);
            verify(
                state,
                root,
                &mut checked,
                mode,
                &mut result,
                &CHECKED_OUTPUTS,
            )?;
        }
        result.dirs.push(checked);
    }
    Ok(result)
}

/// Compares output folder `dir` (id and path) with its records now, as a
/// build's end does for a folder whose identity moved during the build: one
/// `readdir`, no per-file `stat`. True when every recorded file is there,
/// under its name, with its inode. The caller reads the identity it records
/// *before* this call, out of the racy window, so whatever happens after the
/// `readdir` moves the folder's identity again.
pub fn verify_now(state: &State, root: &Path, id: i64, path: &str) -> Result<bool, StateError> {
    REVERIFIED_DIRS.fetch_add(1, Ordering::Relaxed);
    let seen = identity(&root.join(path));
    if seen.is_none() {
        return Ok(false);
    }
    let mut checked = CheckedDir {
        dir: OutDir {
            id,
            path: path.to_string(),
            identity: None,
        },
        seen,
        vouched: false,
        verified: true,
        damaged_inputs: HashSet::new(),
    };
    let mut found = DirCheck::default();
    verify(
        state,
        root,
        &mut checked,
        Mode::Identity,
        &mut found,
        &REVERIFIED_OUTPUTS,
    )?;
    Ok(found.damage.is_empty())
}

/// What `readdir` says of one name.
#[derive(Clone, Copy)]
struct Listed {
    ino: u64,
    regular: bool,
}

/// Compares one folder with its records (`counted`: the debug counter of
/// records compared).
fn verify(
    state: &State,
    root: &Path,
    checked: &mut CheckedDir,
    mode: Mode,
    result: &mut DirCheck,
    counted: &AtomicU64,
) -> Result<(), StateError> {
    let folder = root.join(&checked.dir.path);
    // Names are kept as keyed 64-bit hashes: a 4-million-entry folder costs
    // 64 MB, not its names' bytes. A collision can only hide a missing file
    // behind another file of the same hash, whose inode then differs and is
    // confirmed with a `stat` below.
    let hasher = std::collections::hash_map::RandomState::new();
    let key = |name: &str| hasher.hash_one(name);
    let mut listed: HashMap<u64, Listed> = HashMap::new();
    if checked.seen.is_some() {
        if let Ok(entries) = std::fs::read_dir(&folder) {
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(key) else {
                    continue;
                };
                let regular = e.file_type().is_ok_and(|t| t.is_file());
                listed.insert(
                    name,
                    Listed {
                        ino: e.ino(),
                        regular,
                    },
                );
            }
        }
    }
    let mut batch: Vec<DirEntryRecord> = Vec::new();
    let mut flush = |batch: &mut Vec<DirEntryRecord>, result: &mut DirCheck| {
        counted.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let found: Vec<(usize, Finding)> = batch
            .par_iter()
            .enumerate()
            .filter_map(|(i, rec)| {
                let l = listed.get(&key(&rec.name)).copied();
                judge_file(&folder.join(&rec.name), rec, l, mode).map(|f| (i, f))
            })
            .collect();
        for (i, f) in found {
            let rec = &batch[i];
            match f {
                Finding::Damaged(reason) => {
                    checked.damaged_inputs.insert(rec.input);
                    result.damage.entry(rec.input).or_default().push(Damage {
                        input: rec.input,
                        owner: rec.owner,
                        path: format!("{}/{}", checked.dir.path, rec.name),
                        reason,
                    });
                }
                Finding::Touched { ino, mtime_ns } => result.restats.push(match rec.owner {
                    Owner::Output(id) => Event::OutputRestat { id, ino, mtime_ns },
                    Owner::Tile { unit, x, y } => Event::TileRestat {
                        unit,
                        x,
                        y,
                        ino,
                        mtime_ns,
                    },
                }),
            }
        }
        batch.clear();
    };
    state.for_each_in_dir(
        checked.dir.id,
        |file, size, x, y| tile_name(crate::slide::slide_name(file), size, x, y),
        |rec| {
            batch.push(rec);
            if batch.len() >= 8192 {
                flush(&mut batch, result);
            }
        },
    )?;
    flush(&mut batch, result);
    Ok(())
}

enum Finding {
    Damaged(&'static str),
    Touched { ino: u64, mtime_ns: i64 },
}

/// One recorded file against what `readdir` listed (and, where that is not
/// conclusive or `mode` asks for it, its `lstat`).
fn judge_file(
    path: &Path,
    rec: &DirEntryRecord,
    listed: Option<Listed>,
    mode: Mode,
) -> Option<Finding> {
    if mode == Mode::Identity {
        match listed {
            None => return Some(Finding::Damaged("output missing on disk")),
            Some(l) if !l.regular => {
                return Some(Finding::Damaged("output on disk is not a regular file"))
            }
            Some(l) if l.ino == rec.ino => return None,
            // d_ino may differ from st_ino (overlayfs): ask stat.
            Some(_) => {}
        }
    }
    let m = match std::fs::symlink_metadata(path) {
        Err(_) => return Some(Finding::Damaged("output missing on disk")),
        Ok(m) => m,
    };
    if !m.is_file() {
        return Some(Finding::Damaged("output on disk is not a regular file"));
    }
    if mode == Mode::Identity {
        return (m.ino() != rec.ino).then_some(Finding::Damaged("output replaced on disk"));
    }
    let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    if m.len() != rec.size {
        return Some(Finding::Damaged("output modified on disk"));
    }
    if mtime_ns == rec.mtime_ns && m.ino() == rec.ino {
        return None;
    }
    match super::sources::hash_file(path) {
        Ok(h) if h == rec.content_hash => Some(Finding::Touched {
            ino: m.ino(),
            mtime_ns,
        }),
        _ => Some(Finding::Damaged("output modified on disk")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_folder_has_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        assert!(identity(&dir.path().join("real")).is_some());
        assert!(identity(&dir.path().join("link")).is_none());
        assert!(identity(&dir.path().join("missing")).is_none());
    }
}
