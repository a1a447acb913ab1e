//! Listing source roots (with each file's stat) and hashing files.
//!
//! Which files are read is decided in [`super::inputs`]: a file whose
//! (device, inode, size, mtime, ctime in ns) equal the stat index's entry is
//! not read again; any other file is hashed, and if its bytes turn out
//! unchanged (a `touch`) nothing downstream is rebuilt — the early cutoff.
//!
//! The ctime is what makes the stat a proof: a user, `cp -p`, `rsync -t` or
//! an archive tool can set the mtime back, but every change to a file moves
//! its ctime to the current time, which nobody can set. Timestamps are
//! coarse, though (a jiffy, or a second on some file servers), so a stat
//! read within that granularity of the file's last change could be equal
//! to the stat after a second change in the same tick: such a *racy* stat
//! ([`racy`]) is confirmed by hashing the file again once the window has
//! passed, or else not trusted (git's "racily clean" rule, as for output
//! folders in [`super::outdirs`]).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::recipe::InputSpec;
use crate::store::FileStat;

static HASHED: AtomicU64 = AtomicU64::new(0);

/// How many source files this process has hashed (read in full) so far; the
/// tests use it (via `CPIA_DEBUG_COUNTERS`) to prove unchanged files are not read.
pub fn hashed_count() -> u64 {
    HASHED.load(Ordering::Relaxed)
}

/// A file found under a source root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// Relative to the source root, `/`-separated.
    pub rel: String,
    pub abs: PathBuf,
    pub stat: FileStat,
}

/// Why a source root cannot be used. Each of these stops its collection
/// only, and never leads to its outputs being removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootError {
    /// The recipe names a root the workspace does not define.
    Unknown(String),
    Missing(PathBuf),
    NotADirectory(PathBuf),
    /// A folder with nothing in it at all, as an unmounted mount point looks.
    Empty(PathBuf),
    Unreadable(PathBuf, String),
}

impl std::fmt::Display for RootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootError::Unknown(n) => write!(
                f,
                "source root `{n}` is not defined: add it under [sources] in cpia.toml, or pass --source {n}=PATH"
            ),
            RootError::Missing(p) => write!(
                f,
                "source root {} does not exist (not mounted?); its outputs are kept",
                p.display()
            ),
            RootError::NotADirectory(p) => {
                write!(f, "source root {} is not a directory; its outputs are kept", p.display())
            }
            RootError::Empty(p) => write!(
                f,
                "source root {} is empty (not mounted?); its outputs are kept",
                p.display()
            ),
            RootError::Unreadable(p, e) => {
                write!(f, "source root {} cannot be read: {e}; its outputs are kept", p.display())
            }
        }
    }
}

/// Whether `root` can be walked: it exists, is a folder, can be read and
/// holds something. One `stat` and one `readdir` entry, so `cpia list` and
/// `status` can ask it of every collection.
pub fn check_root(root: &Path) -> Result<std::fs::Metadata, RootError> {
    let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RootError::Missing(root.to_path_buf()),
        _ => RootError::Unreadable(root.to_path_buf(), e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(RootError::NotADirectory(root.to_path_buf()));
    }
    let mut entries = std::fs::read_dir(root)
        .map_err(|e| RootError::Unreadable(root.to_path_buf(), e.to_string()))?;
    if entries.next().is_none() {
        return Err(RootError::Empty(root.to_path_buf()));
    }
    Ok(meta)
}

/// The folder of source root `name` in `ws`, if it is configured and usable
/// ([`check_root`]).
pub fn usable_root(ws: &crate::workspace::Workspace, name: &str) -> Result<PathBuf, RootError> {
    let root = ws
        .source_root(name)
        .ok_or_else(|| RootError::Unknown(name.to_string()))?;
    check_root(&root)?;
    Ok(root)
}

impl RootError {
    /// Whether this is "source not available" (not configured, missing or
    /// empty: a collection not downloaded yet) rather than an unusable root.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RootError::Unknown(_) | RootError::Missing(_) | RootError::Empty(_)
        )
    }
}

/// Lists the files of `root` that `spec` accepts, sorted by relative path.
/// Problems with single entries (unreadable folders) are returned beside the
/// list; a root that is missing, not a folder or empty is an error.
pub fn scan(root: &Path, spec: &InputSpec) -> Result<(Vec<FoundFile>, Vec<String>), RootError> {
    let meta = check_root(root)?;
    let mut files = Vec::new();
    let mut problems = Vec::new();
    // Depth first, each folder's entries in name order. Entries are stat'ed
    // relative to their folder (`DirEntry::metadata` is an `fstatat` on the
    // folder's descriptor, not a walk of the whole path): a no-op pays one
    // short lookup per source file. Symlinks are followed; every folder is
    // entered once (a symlink loop, or a link to a sibling, is not walked twice).
    let mut entered: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: Vec<(PathBuf, String, (u64, u64))> =
        vec![(root.to_path_buf(), String::new(), (meta.dev(), meta.ino()))];
    while let Some((dir, rel, id)) = stack.pop() {
        // Checked when entered, not when found: depth first, the real path
        // of a folder is entered before a link to it found higher up.
        if !entered.insert(id) {
            continue;
        }
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = Vec::new();
        for e in listing {
            match e {
                Ok(e) => entries.push((e.file_name(), e)),
                Err(e) => problems.push(format!("{}: {e}", dir.display())),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut folders = Vec::new();
        for (name, e) in entries {
            let Some(name) = name.to_str() else {
                problems.push(format!(
                    "{}: file name is not UTF-8, skipped",
                    e.path().display()
                ));
                continue;
            };
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(kind) = e.file_type() else {
                continue;
            };
            let m = if kind.is_symlink() {
                match std::fs::metadata(e.path()) {
                    Ok(m) => m,
                    Err(err) => {
                        problems.push(format!("{}: {err}", e.path().display()));
                        continue;
                    }
                }
            } else if kind.is_dir() {
                match e.metadata() {
                    Ok(m) => m,
                    Err(err) => {
                        problems.push(format!("{}: {err}", e.path().display()));
                        continue;
                    }
                }
            } else if kind.is_file() {
                if !spec.accepts(&child) {
                    continue;
                }
                match e.metadata() {
                    Ok(m) => m,
                    Err(err) => {
                        problems.push(format!("{}: {err}", e.path().display()));
                        continue;
                    }
                }
            } else {
                continue;
            };
            if m.is_dir() {
                folders.push((e.path(), child, (m.dev(), m.ino())));
                continue;
            }
            if !m.is_file() || (kind.is_symlink() && !spec.accepts(&child)) {
                continue;
            }
            files.push(FoundFile {
                rel: child,
                abs: e.path(),
                stat: file_stat(&m),
            });
        }
        // Pushed in reverse, so the first folder by name is walked next.
        stack.extend(folders.into_iter().rev());
    }
    Ok((files, problems))
}

/// The stat index's view of a file's metadata.
pub fn file_stat(m: &std::fs::Metadata) -> FileStat {
    FileStat {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    }
}

/// How long after the last change of a file or folder with these
/// timestamps (ns) a stat of it can still hide a second change: 50 ms (a
/// coarse kernel clock ticks every 1–10 ms), or 2 s when both are whole
/// seconds (a filesystem that keeps seconds only). Shared by source files
/// (here) and output folders on a filesystem more than one clock stamps
/// ([`super::fs_clock::FsClock::racy`]).
pub fn timestamp_window(mtime_ns: i64, ctime_ns: i64) -> i64 {
    let coarse = mtime_ns % 1_000_000_000 == 0 && ctime_ns % 1_000_000_000 == 0;
    if coarse {
        2_000_000_000
    } else {
        50_000_000
    }
}

/// A source file's racy window ([`timestamp_window`]). Source folders
/// cannot be written, so their filesystem's own clock cannot be read (as
/// the output folder's is): this machine's stands in for it, which assumes
/// a file server's clock within ~40 ms of this machine's (what NTP keeps) —
/// the 50 ms cover a tick and that.
pub fn racy_window(s: &FileStat) -> i64 {
    timestamp_window(s.mtime_ns, s.ctime_ns)
}

/// Whether a stat read at or after `now_ns` (this machine's clock) is too
/// close to the file's last change to vouch for its bytes later.
pub fn racy(s: &FileStat, now_ns: i64) -> bool {
    now_ns - s.mtime_ns.max(s.ctime_ns) < racy_window(s)
}

/// This machine's clock, in ns since the epoch (0 if it is before 1970).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// blake3 of a file's content, hex. Large files (whole slides) are mapped and
/// hashed on all cores.
pub fn hash_file(path: &Path) -> Result<String, String> {
    HASHED.fetch_add(1, Ordering::Relaxed);
    content_hash(path)
}

/// blake3 of a file's content, hex, without counting it as a source hashed
/// (outputs checked by `--check-outputs` or `verify`).
pub fn content_hash(path: &Path) -> Result<String, String> {
    // Never blocks on a FIFO swapped in, never reads a device without end.
    crate::regular_file::blake3(path)
        .map(|(h, _)| h.to_hex().to_string())
        .map_err(|e| format!("cannot read: {e}"))
}

/// blake3 of bytes already in memory, hex.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(suffixes: &[&str]) -> InputSpec {
        InputSpec::new(
            "R".into(),
            vec![],
            vec!["**/*_anno.*".into()],
            suffixes.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn scan_filters_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("b/2.png"), b"x").unwrap();
        std::fs::write(root.join("1.png"), b"y").unwrap();
        std::fs::write(root.join("1_anno.png"), b"y").unwrap();
        std::fs::write(root.join("notes.txt"), b"z").unwrap();
        let (files, problems) = scan(root, &spec(&["png"])).unwrap();
        assert!(problems.is_empty());
        let rels: Vec<_> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["1.png", "b/2.png"]);
    }

    #[test]
    fn missing_and_empty_roots_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            scan(&dir.path().join("nope"), &spec(&[])),
            Err(RootError::Missing(_))
        ));
        assert!(matches!(
            scan(dir.path(), &spec(&[])),
            Err(RootError::Empty(_))
        ));
    }

    #[test]
    fn symlinks_are_followed_once_and_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/1.png"), b"x").unwrap();
        std::fs::write(dir.path().join("a/2.png"), b"y").unwrap();
        // A loop back to the root, a second way into a/b, a link to a file.
        std::os::unix::fs::symlink(root, root.join("a/b/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("a/b"), root.join("c")).unwrap();
        std::os::unix::fs::symlink(root.join("a/2.png"), root.join("3.png")).unwrap();
        let (files, problems) = scan(root, &spec(&["png"])).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let rels: Vec<_> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["3.png", "a/2.png", "a/b/1.png"]);
        // A followed link has its target's stat.
        assert_eq!(files[0].stat, files[1].stat);
    }
}
