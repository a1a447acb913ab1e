//! Atomic, confined writes into the output folder.
//!
//! Every file is written to a temporary file in `<output>/.cpia-tmp/` (same
//! filesystem, so the rename is atomic), made durable, then renamed over its
//! final name. A reader — or a build killed at any instant — sees either the
//! old file, the new file, or no file; never a partial one. Leftover
//! temporaries of a killed build are deleted when the next build starts.
//! A Slurm array task writes into a folder of its own,
//! `.cpia-tmp/task-<journal id>/` ([`OutputDir::open_task`]): tasks on other
//! nodes share the output folder, so none may clear the others' temporaries
//! or reuse their names (a pid is unique only on one machine); the
//! coordinator clears them all, when no task runs.
//!
//! Durability comes either per file ([`OutputDir::write`]: fsync) or per
//! batch ([`OutputDir::stage`] every file, one [`OutputDir::sync`], then
//! [`OutputDir::place`] each): on Linux the batch is one `syncfs` of the
//! output filesystem instead of an fsync (a journal commit, a device flush)
//! per tile — the same guarantee, since every staged file is durable before
//! any is renamed. The renames themselves are made durable by an fsync of
//! each folder they went into ([`OutputDir::sync_dirs`], once per job and
//! folder), before the result is recorded: a record — in the state or in a
//! worker's journal — never describes a file that a crash can take back.
//!
//! Confinement: output names are validated by the recipe layer, and here every
//! directory we write into is resolved (symlinks followed) and must lie inside
//! the output root, so a symlink planted in the dataset cannot redirect a
//! write elsewhere.

use std::collections::HashSet;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Name of the temporary folder inside the output root.
pub const TMP_DIR: &str = ".cpia-tmp";

/// Writes files under one output root.
pub struct OutputDir {
    root: PathBuf,
    canonical_root: PathBuf,
    tmp: PathBuf,
    /// A task's own temporary folder (removed whole when it finishes).
    own_tmp: bool,
    counter: AtomicU64,
    checked: Mutex<HashSet<PathBuf>>,
}

/// A file written under its temporary name: not yet durable, not yet in place.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
}

impl Drop for Staged {
    /// A staged file that is never placed (an error in its batch) is deleted.
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// What was written: enough to record it.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl OutputDir {
    /// Prepares `root` (creating it) and clears leftover temporaries, the
    /// folders of cluster tasks included: only for a process that holds the
    /// workspace lock while no task of a Slurm build runs.
    pub fn open(root: &Path) -> io::Result<OutputDir> {
        std::fs::create_dir_all(root)?;
        let tmp = root.join(TMP_DIR);
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&tmp)?;
        OutputDir::with_tmp(root, tmp, false)
    }

    /// Prepares `root` for one task attempt of a cluster build: its
    /// temporaries go to `.cpia-tmp/task-<tag>/` (`tag` unique per attempt:
    /// its journal's random id), and nothing else is touched.
    pub fn open_task(root: &Path, tag: &str) -> io::Result<OutputDir> {
        if tag.is_empty() || tag.contains(['/', '\0']) || tag.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{tag}` cannot name a temporary folder"),
            ));
        }
        std::fs::create_dir_all(root)?;
        let tmp = root.join(TMP_DIR).join(format!("task-{tag}"));
        std::fs::create_dir_all(&tmp)?;
        OutputDir::with_tmp(root, tmp, true)
    }

    fn with_tmp(root: &Path, tmp: PathBuf, own_tmp: bool) -> io::Result<OutputDir> {
        Ok(OutputDir {
            root: root.to_path_buf(),
            canonical_root: root.canonicalize()?,
            tmp,
            own_tmp,
            counter: AtomicU64::new(0),
            checked: Mutex::new(HashSet::new()),
        })
    }

    /// Writes `bytes` to `rel` (relative, `/`-separated) atomically and durably.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> io::Result<Written> {
        let staged = self.stage_with(rel, bytes, true)?;
        self.place(staged)
    }

    /// Writes `bytes` under a temporary name for `rel`; [`OutputDir::sync`]
    /// then [`OutputDir::place`] finish the write.
    pub fn stage(&self, rel: &str, bytes: &[u8]) -> io::Result<Staged> {
        self.stage_with(rel, bytes, false)
    }

    fn stage_with(&self, rel: &str, bytes: &[u8], fsync: bool) -> io::Result<Staged> {
        let dest = self.resolve(rel)?;
        if let Some(parent) = dest.parent() {
            self.ensure_dir(parent)?;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let staged = Staged {
            tmp: self.tmp.join(format!("{}-{n}.tmp", std::process::id())),
            dest,
        };
        let mut f = std::fs::File::create(&staged.tmp)?;
        f.write_all(bytes)?;
        if fsync {
            f.sync_all()?;
        }
        Ok(staged)
    }

    /// Makes every file staged so far durable: one `syncfs` of the output
    /// filesystem on Linux, else an fsync of each of `staged`.
    pub fn sync<'s>(&self, staged: impl IntoIterator<Item = &'s Staged>) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let dir = std::fs::File::open(&self.tmp)?;
            // SAFETY: `dir` is an open descriptor for the whole call.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
                return Ok(());
            }
            // A filesystem that cannot syncfs: fsync file by file below.
        }
        for s in staged {
            std::fs::File::open(&s.tmp)?.sync_all()?;
        }
        Ok(())
    }

    /// Renames a staged (and synced) file over its final name.
    pub fn place(&self, mut staged: Staged) -> io::Result<Written> {
        let tmp = std::mem::take(&mut staged.tmp);
        if let Err(e) = std::fs::rename(&tmp, &staged.dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let m = std::fs::metadata(&staged.dest)?;
        Ok(Written {
            ino: m.ino(),
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }

    /// Makes the renames into each folder of `dirs` (relative, `/`-separated,
    /// repeats allowed) durable: an fsync of each folder once. Call it after
    /// [`OutputDir::place`] and before recording what was placed.
    pub fn sync_dirs<'d>(&self, dirs: impl IntoIterator<Item = &'d str>) -> io::Result<()> {
        let mut done: HashSet<&str> = HashSet::new();
        for d in dirs {
            if done.insert(d) {
                let path = self.resolve(d)?;
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Deletes `rel` (absent is fine) and then any folders it leaves empty.
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        let dest = self.resolve(rel)?;
        match std::fs::remove_file(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut dir = dest.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// The output filesystem's clock: the mtime (ns) of a file created now
    /// in the temporary folder. Folder timestamps are compared with it, not
    /// with this machine's clock (an NFS server's clock may differ).
    pub fn fs_now(&self) -> io::Result<i64> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let probe = self.tmp.join(format!("{}-{n}.now", std::process::id()));
        std::fs::File::create(&probe)?;
        let m = std::fs::metadata(&probe);
        let _ = std::fs::remove_file(&probe);
        let m = m?;
        Ok(m.mtime() * 1_000_000_000 + m.mtime_nsec())
    }

    /// Removes the temporary folders of cluster tasks (a task killed or
    /// cancelled leaves its own behind): only for the coordinator, once no
    /// task of its build runs.
    pub fn clear_tasks(&self) {
        let Ok(entries) = std::fs::read_dir(&self.tmp) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("task-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Removes the temporary folder (at the end of a build; a task's own
    /// folder with whatever a failed write left in it).
    pub fn finish(&self) {
        if self.own_tmp {
            // Only its own: `.cpia-tmp` itself belongs to the coordinator.
            let _ = std::fs::remove_dir_all(&self.tmp);
        } else {
            let _ = std::fs::remove_dir(&self.tmp);
        }
    }

    fn resolve(&self, rel: &str) -> io::Result<PathBuf> {
        let bad = rel.is_empty()
            || rel.starts_with('/')
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'));
        if bad {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "refusing to write `{rel}`: not a plain relative path inside the output folder"
                ),
            ));
        }
        Ok(self.root.join(rel))
    }

    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if self
            .checked
            .lock()
            .map(|c| c.contains(dir))
            .unwrap_or(false)
        {
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        let real = dir.canonicalize()?;
        if !real.starts_with(&self.canonical_root) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to write into {}: it resolves to {}, outside the output folder {}",
                    dir.display(),
                    real.display(),
                    self.canonical_root.display()
                ),
            ));
        }
        if let Ok(mut c) = self.checked.lock() {
            c.insert(dir.to_path_buf());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(&dir.path().join("ds")).unwrap();
        let w = out.write("M/A/x.jpg", b"hello").unwrap();
        assert_eq!(w.size, 5);
        assert_eq!(
            std::fs::read(dir.path().join("ds/M/A/x.jpg")).unwrap(),
            b"hello"
        );
        out.remove("M/A/x.jpg").unwrap();
        assert!(
            !dir.path().join("ds/M").exists(),
            "empty folders are pruned"
        );
        out.finish();
        assert!(!dir.path().join("ds").join(TMP_DIR).exists());
    }

    #[test]
    fn staged_files_appear_only_when_placed() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(&dir.path().join("ds")).unwrap();
        let tmp_files = || {
            std::fs::read_dir(dir.path().join("ds").join(TMP_DIR))
                .unwrap()
                .count()
        };
        let a = out.stage("XL/A/a.jpg", b"aaa").unwrap();
        let b = out.stage("XL/A/b.jpg", b"bb").unwrap();
        assert!(
            !dir.path().join("ds/XL/A/a.jpg").exists(),
            "not in place before place()"
        );
        assert_eq!(tmp_files(), 2);
        out.sync([&a, &b]).unwrap();
        let w = out.place(a).unwrap();
        assert_eq!(w.size, 3);
        assert_eq!(
            std::fs::read(dir.path().join("ds/XL/A/a.jpg")).unwrap(),
            b"aaa"
        );
        // A staged file that is never placed (its batch failed) leaves nothing.
        drop(b);
        assert_eq!(tmp_files(), 0);
        assert!(!dir.path().join("ds/XL/A/b.jpg").exists());
        // Staging is confined like writing.
        assert!(out.stage("../x.jpg", b"x").is_err());
    }

    #[test]
    fn refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(&dir.path().join("ds")).unwrap();
        assert!(out.write("../x.jpg", b"x").is_err());
        assert!(out.write("/etc/x.jpg", b"x").is_err());
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("ds/M")).unwrap();
        let err = out.write("M/x.jpg", b"x").unwrap_err();
        assert!(
            err.to_string().contains("outside the output folder"),
            "{err}"
        );
        assert!(!dir.path().join("elsewhere/x.jpg").exists());
    }

    #[test]
    fn a_task_uses_a_temporary_folder_of_its_own_and_clears_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        let other = root.join(TMP_DIR).join("task-other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("1-0.tmp"), b"another task's partial tile").unwrap();
        let a = OutputDir::open_task(&root, "aaaa").unwrap();
        let b = OutputDir::open_task(&root, "bbbb").unwrap();
        // Same pid, same counter: the names would collide in one folder.
        let sa = a.stage("M/A/x.jpg", b"a").unwrap();
        let sb = b.stage("M/A/y.jpg", b"b").unwrap();
        assert_eq!(sa.tmp.file_name(), sb.tmp.file_name());
        assert_ne!(sa.tmp, sb.tmp);
        a.sync([&sa]).unwrap();
        a.place(sa).unwrap();
        a.sync_dirs(["M/A", "M/A"]).unwrap();
        assert!(a.sync_dirs(["../x"]).is_err());
        drop(sb);
        a.finish();
        assert!(!root.join(TMP_DIR).join("task-aaaa").exists());
        assert!(
            other.join("1-0.tmp").exists(),
            "another task's temporaries are kept"
        );
        assert!(OutputDir::open_task(&root, "../x").is_err());
        // The coordinator, when no task runs, clears them all.
        let _out = OutputDir::open(&root).unwrap();
        assert_eq!(std::fs::read_dir(root.join(TMP_DIR)).unwrap().count(), 0);
        assert_eq!(std::fs::read(root.join("M/A/x.jpg")).unwrap(), b"a");
    }

    #[test]
    fn the_coordinator_clears_what_killed_tasks_left_once_none_runs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        let out = OutputDir::open(&root).unwrap();
        // A task opened after the coordinator, then killed mid-write.
        let task = OutputDir::open_task(&root, "killed").unwrap();
        std::mem::forget(task.stage("M/A/x.jpg", b"partial").unwrap());
        std::fs::write(root.join(TMP_DIR).join("not-a-task"), b"").unwrap();
        out.clear_tasks();
        assert!(!root.join(TMP_DIR).join("task-killed").exists());
        assert!(root.join(TMP_DIR).join("not-a-task").exists());
        std::fs::remove_file(root.join(TMP_DIR).join("not-a-task")).unwrap();
        out.finish();
        assert!(!root.join(TMP_DIR).exists());
    }

    #[test]
    fn leftover_temporaries_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        std::fs::create_dir_all(root.join(TMP_DIR)).unwrap();
        std::fs::write(root.join(TMP_DIR).join("1-1.tmp"), b"partial").unwrap();
        let _out = OutputDir::open(&root).unwrap();
        assert_eq!(std::fs::read_dir(root.join(TMP_DIR)).unwrap().count(), 0);
    }
}
