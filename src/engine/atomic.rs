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
//! Confinement: output names are validated by the recipe layer, and here
//! every folder is reached from an open descriptor of the output root, one
//! component at a time, never following a symbolic link ([`confined`]):
//! writing, renaming into place, removing and pruning empty folders all act
//! on descriptors, so a link planted anywhere under the output folder (a
//! scale or sub-dataset folder, `.cpia-tmp` itself) is refused and named,
//! and nothing outside the output folder is ever written or deleted.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::confined::Dir;
use super::writeback::WriteBack;
use crate::plan::fs_clock::FsClock;
use crate::workspace::TMP_DIR;

/// Writes files under one output root.
pub struct OutputDir {
    root: Dir,
    /// The folder holding the temporary folder: the root (`.cpia-tmp`), or
    /// `.cpia-tmp` for a cluster task (`task-<tag>`).
    tmp_home: Dir,
    tmp_name: String,
    tmp: Arc<Dir>,
    /// A task's own temporary folder (removed whole when it finishes).
    own_tmp: bool,
    counter: AtomicU64,
}

/// A file written under its temporary name: not yet durable, not yet in place.
#[derive(Debug)]
pub struct Staged {
    tmp: Arc<Dir>,
    /// Name in the temporary folder; empty once placed.
    name: String,
    rel: String,
}

impl Drop for Staged {
    /// A staged file that is never placed (an error in its batch) is deleted.
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = self.tmp.unlink(&self.name, false);
        }
    }
}

/// A file being written in pieces under its temporary name; dropped without
/// [`Streamed::place`], it is deleted.
pub struct Streamed<'d> {
    dir: &'d OutputDir,
    file: io::BufWriter<std::fs::File>,
    staged: Staged,
}

impl Write for Streamed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Streamed<'_> {
    /// Makes the file durable (fsync) and renames it over its final name.
    pub fn place(self) -> io::Result<Written> {
        let file = self
            .file
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        self.dir.place(self.staged)
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
    /// workspace lock while no task of a Slurm build runs. A `.cpia-tmp`
    /// that is a link or not a folder is refused, untouched.
    pub fn open(root: &std::path::Path) -> io::Result<OutputDir> {
        let root = Dir::root(root)?;
        let tmp = tmp_folder(&root, TMP_DIR)?;
        for name in tmp.entries()? {
            tmp.remove_tree(&name)?;
        }
        let home = root.try_clone()?;
        Ok(OutputDir {
            root,
            tmp_home: home,
            tmp_name: TMP_DIR.to_string(),
            tmp: Arc::new(tmp),
            own_tmp: false,
            counter: AtomicU64::new(0),
        })
    }

    /// Prepares `root` for one task attempt of a cluster build: its
    /// temporaries go to `.cpia-tmp/task-<tag>/` (`tag` unique per attempt:
    /// its journal's random id), and nothing else is touched.
    pub fn open_task(root: &std::path::Path, tag: &str) -> io::Result<OutputDir> {
        if tag.is_empty() || tag.contains(['/', '\0']) || tag.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{tag}` cannot name a temporary folder"),
            ));
        }
        let root = Dir::root(root)?;
        let home = tmp_folder(&root, TMP_DIR)?;
        let name = format!("task-{tag}");
        let tmp = tmp_folder(&home, &name)?;
        Ok(OutputDir {
            root,
            tmp_home: home,
            tmp_name: name,
            tmp: Arc::new(tmp),
            own_tmp: true,
            counter: AtomicU64::new(0),
        })
    }

    /// Writes `bytes` to `rel` (relative, `/`-separated) atomically and durably.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> io::Result<Written> {
        let staged = self.stage_with(rel, bytes, true)?;
        self.place(staged)
    }

    /// Writes `rel` atomically and durably from `fill`, which writes the
    /// file's bytes (a file too large to hold in memory: an export's
    /// shard) in one stream, sent to the disk as it goes
    /// ([`super::writeback`]). The temporary is fsynced, renamed into place
    /// and its folder fsynced; if `fill` fails, nothing is left and the old
    /// file stays.
    pub fn write_with<T>(
        &self,
        rel: &str,
        fill: impl FnOnce(&mut WriteBack<'_>) -> io::Result<T>,
    ) -> io::Result<(Written, T)> {
        let staged = self.staged_name(rel, "tmp")?;
        let mut f = self.tmp.create_file(&staged.name)?;
        let value = fill(&mut WriteBack::new(&mut f))?;
        f.sync_all()?;
        drop(f);
        let written = self.place(staged)?;
        let folder = rel.rsplit_once('/').map_or("", |(d, _)| d);
        if !folder.is_empty() {
            self.sync_dirs([folder])?;
        }
        Ok((written, value))
    }

    /// Opens the regular file `rel` of the output folder for reading,
    /// reaching it only through real folders and never following a link.
    /// Whatever else is there (a FIFO, a device node, a folder) is refused
    /// on the descriptor, before a byte is read: reading one would block or
    /// never end.
    pub fn open_read(&self, rel: &str) -> io::Result<std::fs::File> {
        let (dirs, file) = split(rel)?;
        let chain = self
            .root
            .walk(dirs, false)?
            .ok_or_else(|| no_such_file(rel))?;
        regular(chain.last().unwrap_or(&self.root).open_file(file)?, rel).map(|(f, _)| f)
    }

    /// A reader of many files of the output folder that keeps the handles
    /// of the folders it reached ([`Reader`]).
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            out: self,
            folders: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The bytes of the regular file `rel` of the output folder
    /// ([`OutputDir::open_read`], [`OutputDir::read_all`]).
    pub fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        Self::read_all(&mut self.open_read(rel)?)
    }
}

/// `rel`'s error when one of its folders is absent.
fn no_such_file(rel: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("`{rel}`: no such file"))
}

/// `f`, opened as `rel`, and its metadata if it is a regular file; an
/// error naming what it is otherwise.
fn regular(f: std::fs::File, rel: &str) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    let meta = f.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{rel}` is {}, not a regular file",
                crate::regular_file::kind_of(&t)
            ),
        ));
    }
    Ok((f, meta))
}

/// Reads files of the output folder as [`OutputDir::read`] does, from any
/// thread, keeping the descriptor of each folder it walked to: a file in a
/// folder seen before costs one `openat` instead of one per component (an
/// export reads thousands of files from each of a few hundred folders, in
/// random order). The same confinement: folders were reached component by
/// component without following a link, and the file is opened relative to
/// its folder's descriptor with `O_NOFOLLOW`, so no link is followed. A
/// folder replaced after it was opened is still read through its old
/// descriptor, exactly as a walk in progress would; only reads go through a
/// `Reader`, and what they read is checked by the caller (an export checks
/// every image against its recorded hash). At most [`Reader::FOLDERS`]
/// descriptors are kept (then one is dropped for each new one).
pub struct Reader<'o> {
    out: &'o OutputDir,
    folders: std::sync::Mutex<std::collections::HashMap<String, Arc<Dir>>>,
}

impl Reader<'_> {
    /// Folder descriptors kept at most: a quarter of the usual limit of
    /// 1,024 open files (share one `Reader` between threads).
    pub const FOLDERS: usize = 256;

    /// The bytes of the regular file `rel` ([`OutputDir::read`]), which
    /// must be `expected` bytes long (the size its record gives): a file of
    /// another size is refused before a byte is read or a buffer of its size
    /// allocated (an output replaced by a huge or sparse file never makes
    /// an export allocate its size).
    pub fn read(&self, rel: &str, expected: u64) -> io::Result<Vec<u8>> {
        let (dirs, file) = split(rel)?;
        let folder = rel.rsplit_once('/').map_or("", |(d, _)| d);
        let f = if folder.is_empty() {
            self.out.root.open_file(file)?
        } else {
            (self.folder(folder, dirs)?)
                .ok_or_else(|| no_such_file(rel))?
                .open_file(file)?
        };
        let (mut f, meta) = regular(f, rel)?;
        if meta.len() != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "`{rel}` is {} bytes, not the {expected} recorded: it changed since it was built",
                    meta.len()
                ),
            ));
        }
        crate::regular_file::read_exactly(&mut f, expected)
    }

    /// The descriptor of `folder` (whose components are `dirs`), walked to
    /// once; `None` when it is absent.
    fn folder<'c>(
        &self,
        folder: &str,
        dirs: impl IntoIterator<Item = &'c str>,
    ) -> io::Result<Option<Arc<Dir>>> {
        let cached = |m: &std::collections::HashMap<String, Arc<Dir>>| m.get(folder).cloned();
        if let Some(d) = self.folders.lock().ok().as_ref().and_then(|m| cached(m)) {
            return Ok(Some(d));
        }
        let Some(dir) = self.out.root.walk(dirs, false)?.and_then(|mut c| c.pop()) else {
            return Ok(None);
        };
        let dir = Arc::new(dir);
        if let Ok(mut m) = self.folders.lock() {
            if m.len() >= Self::FOLDERS {
                let any = m.keys().next().cloned();
                any.map(|k| m.remove(&k));
            }
            m.insert(folder.to_string(), dir.clone());
        }
        Ok(Some(dir))
    }
}

impl OutputDir {
    /// The rest of `file` (opened with [`OutputDir::open_read`]): at most
    /// the size it had, so a file that keeps growing is an error, never an
    /// unbounded read.
    pub fn read_all(file: &mut std::fs::File) -> io::Result<Vec<u8>> {
        let len = file.metadata()?.len();
        let mut bytes = Vec::new();
        crate::regular_file::read_rest(file, len, &mut bytes)?;
        Ok(bytes)
    }

    /// Makes `to` (relative to the output folder) a hard link to `file`
    /// — opened with [`OutputDir::open_read`], so only a regular file
    /// inside the output folder is ever linked — replacing whatever `to`
    /// was, atomically: the link is made under a temporary name, then
    /// renamed. `Ok(false)` when the filesystem cannot link (copy instead).
    pub fn link_file(&self, file: &std::fs::File, to: &str) -> io::Result<bool> {
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to link to `{to}`: the source is not a regular file"),
            ));
        }
        let staged = self.staged_name(to, "link")?;
        match self.tmp.link_fd(file, &staged.name) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::EPERM | libc::EMLINK | libc::ENOTSUP | libc::ENOENT)
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
        self.place(staged)?;
        Ok(true)
    }

    /// Writes `bytes` under a temporary name for `rel`; [`OutputDir::sync`]
    /// then [`OutputDir::place`] finish the write.
    pub fn stage(&self, rel: &str, bytes: &[u8]) -> io::Result<Staged> {
        self.stage_with(rel, bytes, false)
    }

    fn stage_with(&self, rel: &str, bytes: &[u8], fsync: bool) -> io::Result<Staged> {
        let (staged, mut f) = self.start(rel)?;
        f.write_all(bytes)?;
        if fsync {
            f.sync_all()?;
        }
        Ok(staged)
    }

    /// A new temporary file for `rel`. The destination's folders are made
    /// (and checked) now, so a refused path fails before anything is written.
    fn start(&self, rel: &str) -> io::Result<(Staged, std::fs::File)> {
        let staged = self.staged_name(rel, "tmp")?;
        let f = self.tmp.create_file(&staged.name)?;
        Ok((staged, f))
    }

    /// A name in the temporary folder for what will be placed at `rel`
    /// (`<pid>-<n>.<kind>`); the destination's folders are made (and
    /// checked) first, so a refused path fails before anything is staged.
    fn staged_name(&self, rel: &str, kind: &str) -> io::Result<Staged> {
        let (dirs, _) = split(rel)?;
        self.root.walk(dirs, true)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        Ok(Staged {
            tmp: self.tmp.clone(),
            name: format!("{}-{n}.{kind}", std::process::id()),
            rel: rel.to_string(),
        })
    }

    /// Starts writing `rel` as a stream, for a file too large to hold in
    /// memory: [`Streamed::place`] makes it durable and puts it in place.
    pub fn create(&self, rel: &str) -> io::Result<Streamed<'_>> {
        let (staged, file) = self.start(rel)?;
        Ok(Streamed {
            dir: self,
            file: io::BufWriter::with_capacity(1 << 16, file),
            staged,
        })
    }

    /// Makes every file staged so far durable: one `syncfs` of the output
    /// filesystem on Linux, else an fsync of each of `staged`.
    pub fn sync<'s>(&self, staged: impl IntoIterator<Item = &'s Staged>) -> io::Result<()> {
        if self.tmp.syncfs() {
            return Ok(());
        }
        for s in staged {
            self.tmp.open_file(&s.name)?.sync_all()?;
        }
        Ok(())
    }

    /// Renames a staged (and synced) file over its final name.
    pub fn place(&self, mut staged: Staged) -> io::Result<Written> {
        let name = std::mem::take(&mut staged.name);
        let placed = split(&staged.rel).and_then(|(dirs, file)| {
            let chain = self.root.walk(dirs, true)?.unwrap_or_default();
            let dir = chain.last().unwrap_or(&self.root);
            self.tmp.rename(&name, dir, file)?;
            dir.stat(file)
        });
        match placed {
            Ok(st) => Ok(Written {
                size: st.st_size as u64,
                mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
                ino: st.st_ino,
            }),
            Err(e) => {
                let _ = self.tmp.unlink(&name, false);
                Err(e)
            }
        }
    }

    /// Makes the renames into each folder of `dirs` (relative, `/`-separated,
    /// repeats allowed) durable: an fsync of each folder once. Call it after
    /// [`OutputDir::place`] and before recording what was placed.
    pub fn sync_dirs<'d>(&self, dirs: impl IntoIterator<Item = &'d str>) -> io::Result<()> {
        let mut done: HashSet<&str> = HashSet::new();
        for d in dirs {
            if done.insert(d) {
                let names = components(d)?;
                let synced = match self.root.walk(names.iter().copied(), false)? {
                    Some(chain) => chain.last().unwrap_or(&self.root).sync(),
                    None => Err(io::Error::from(io::ErrorKind::NotFound)),
                };
                synced.map_err(|e| io::Error::new(e.kind(), format!("{d}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Deletes `rel` (absent is fine) and then any folders it leaves empty.
    /// A link on the way is refused; a link at `rel` itself is deleted, not
    /// followed.
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        let (dirs, file) = split(rel)?;
        let names: Vec<&str> = dirs.collect();
        let Some(chain) = self.root.walk(names.iter().copied(), false)? else {
            return Ok(());
        };
        let dir = chain.last().unwrap_or(&self.root);
        match dir.unlink(file, false) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("`{}` is a folder, not a file", dir.rel_of(file)),
                ))
            }
            Err(e) => return Err(e),
        }
        // Prune from the deepest folder up; stop at the first that is not empty.
        for k in (0..chain.len()).rev() {
            let parent = if k == 0 { &self.root } else { &chain[k - 1] };
            if parent.unlink(names[k], true).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The output filesystem's clock: the mtime of a file created now in
    /// the temporary folder, its device, and whether this kernel stamps
    /// every change there. Folder timestamps are compared with it, not with
    /// this machine's clock (an NFS server's clock may differ).
    pub fn fs_now(&self) -> io::Result<FsClock> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        super::out_clock::probe(&self.tmp, &format!("{}-{n}.now", std::process::id()))
    }

    /// The clock of the filesystem of output folder `root` (see
    /// [`OutputDir::fs_now`]), read without preparing the folder for a
    /// build (nothing is cleared): for the check that precedes planning.
    pub fn clock(root: &std::path::Path) -> io::Result<FsClock> {
        let root = Dir::root(root)?;
        let tmp = tmp_folder(&root, TMP_DIR)?;
        super::out_clock::probe(&tmp, &format!("{}-clock.now", std::process::id()))
    }

    /// Removes the temporary folders of cluster tasks (a task killed or
    /// cancelled leaves its own behind): only for the coordinator, once no
    /// task of its build runs.
    pub fn clear_tasks(&self) {
        let Ok(entries) = self.tmp.entries() else {
            return;
        };
        for name in entries.iter().filter(|n| n.starts_with("task-")) {
            let _ = self.tmp.remove_tree(name);
        }
    }

    /// Removes the temporary folder (at the end of a build; a task's own
    /// folder with whatever a failed write left in it).
    pub fn finish(&self) {
        if self.own_tmp {
            // Only its own: `.cpia-tmp` itself belongs to the coordinator.
            let _ = self.tmp_home.remove_tree(&self.tmp_name);
        } else {
            let _ = self.tmp_home.unlink(&self.tmp_name, true);
        }
    }
}

/// Splits `rel` into its folder components and file name, refusing anything
/// that is not a plain relative path inside the output folder.
fn split(rel: &str) -> io::Result<(impl Iterator<Item = &str>, &str)> {
    components(rel)?;
    let (dirs, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    Ok((dirs.split('/').filter(|c| !c.is_empty()), file))
}

/// The components of `rel`, refusing anything that is not a plain relative
/// path inside the output folder.
fn components(rel: &str) -> io::Result<Vec<&str>> {
    let parts: Vec<&str> = rel.split('/').collect();
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'));
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to use `{rel}`: not a plain relative path inside the output folder"),
        ));
    }
    Ok(parts)
}

/// Opens (creating it) the temporary folder `name` in `home`; a link or a
/// file there is refused, untouched.
fn tmp_folder(home: &Dir, name: &str) -> io::Result<Dir> {
    match home.child(name, true) {
        Ok(Some(tmp)) => Ok(tmp),
        Ok(None) => Err(io::Error::other("the temporary folder vanished")),
        // The system refused to make or open it: the folder around it
        // cannot be written, and removing anything would not help.
        Err(e) if e.raw_os_error().is_some() => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot create or open the temporary folder `{}`: {e}; the folder it goes in cannot be \
                 written (check its permissions, a read-only mount, or its immutable attribute: `lsattr -d`)",
                home.rel_of(name)
            ),
        )),
        // A link or a file where the folder should be: cpia's own name.
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot use the temporary folder: {e} (remove it: cpia makes its own)"),
        )),
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
        assert!(err.to_string().contains("`M` is a symbolic link"), "{err}");
        assert!(!dir.path().join("elsewhere/x.jpg").exists());
        // Removal is confined the same way, and a link at the file itself is
        // removed as a link.
        std::fs::write(dir.path().join("elsewhere/y.jpg"), b"user").unwrap();
        let err = out.remove("M/y.jpg").unwrap_err();
        assert!(err.to_string().contains("`M` is a symbolic link"), "{err}");
        std::fs::create_dir_all(dir.path().join("ds/S")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere/y.jpg"),
            dir.path().join("ds/S/y.jpg"),
        )
        .unwrap();
        out.remove("S/y.jpg").unwrap();
        assert!(dir.path().join("elsewhere/y.jpg").is_file());
        assert!(
            !dir.path().join("ds/S").exists(),
            "empty folders are pruned"
        );
    }

    #[test]
    fn reads_only_regular_files_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(&dir.path().join("ds")).unwrap();
        out.write("M/A/x.jpg", b"jpeg").unwrap();
        assert_eq!(out.read("M/A/x.jpg").unwrap(), b"jpeg");
        // A FIFO with no writer: refused at once, not read (nor waited on).
        let fifo = dir.path().join("ds/M/A/f.jpg");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = out.read("M/A/f.jpg").unwrap_err().to_string();
        assert!(e.contains("`M/A/f.jpg` is a FIFO"), "{e}");
        // A link to a device, and a folder.
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("ds/M/A/z.jpg")).unwrap();
        assert!(out.read("M/A/z.jpg").is_err());
        let e = out.read("M/A").unwrap_err().to_string();
        assert!(e.contains("folder"), "{e}");
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
        assert_eq!(sa.name, sb.name);
        assert!(!Arc::ptr_eq(&sa.tmp, &sb.tmp));
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
