//! `cpia verify`: the audit a no-op build does not do. Every recorded file
//! is `lstat`ed (stat mode: re-hashed where its size, inode or mtime moved)
//! or re-hashed (`--deep`), and every output folder is listed for files
//! nobody recorded; the manifests are checked against their own records.
//!
//! Records are streamed folder by folder from SQLite and checked in
//! parallel batches, so memory is one batch plus, per folder, a 64-bit hash
//! of each recorded name (to tell recorded entries from extra ones).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rayon::prelude::*;
use serde::Serialize;

use super::manifest;
use super::Error;
use crate::store::audit::manifests::PartFile;
use crate::store::State;

/// The exports' folder (`crate::export::DIR`, a layer above this one,
/// which verifies it); skipped when listing unrecorded files.
pub const EXPORT_DIR: &str = "export";

/// Records checked per parallel batch.
const BATCH: usize = 8192;

/// What to verify.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Re-hash every file, not only those whose stat moved.
    pub deep: bool,
    /// Collection names (empty: the whole output folder).
    pub collections: Vec<String>,
    /// Threads for stats and hashes.
    pub jobs: usize,
}

/// One mismatch between the output folder and the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Relative to the output folder.
    pub path: String,
    /// `missing`, `modified`, `not-a-file`, `unreadable`, `extra` or `stale`.
    pub kind: &'static str,
    pub detail: String,
}

/// What was looked at.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub folders: u64,
    pub files: u64,
    /// Files read and hashed.
    pub hashed: u64,
    pub bytes_hashed: u64,
    pub findings: u64,
}

/// Verifies the output folder `output` against the records, reporting each
/// finding to `report` as it is found.
pub fn verify(
    state: &State,
    output: &Path,
    opts: &Options,
    report: &mut dyn FnMut(Finding) -> Result<(), Error>,
) -> Result<Stats, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(crate::threads::cap(opts.jobs))
        .build()
        .map_err(|e| Error::Other(format!("starting threads: {e}")))?;
    let mut stats = Stats::default();
    let mut count = |f: Finding, stats: &mut Stats| -> Result<(), Error> {
        stats.findings += 1;
        report(f)
    };
    let dirs: Vec<(i64, String)> = if opts.collections.is_empty() {
        state.all_out_dirs()?
    } else {
        let known = state.collections()?;
        let mut ids = Vec::new();
        for c in &opts.collections {
            match known.iter().find(|(_, n)| n == c) {
                Some((id, _)) => ids.push(*id),
                None => {
                    return Err(Error::Other(format!(
                        "collection {c} has no records in the build state"
                    )))
                }
            }
        }
        state
            .out_dirs_of(&ids)?
            .into_iter()
            .map(|d| (d.id, d.path))
            .collect()
    };
    let checking = Checking {
        state,
        output,
        deep: opts.deep,
        pool: &pool,
        counters: Arc::new(Counters::default()),
    };
    for (id, dir) in &dirs {
        stats.folders += 1;
        check_folder(&checking, *id, dir, &mut |f| count(f, &mut stats))?;
    }
    let counters = checking.counters;
    stats.files += counters.files.load(Ordering::Relaxed);
    stats.hashed += counters.hashed.load(Ordering::Relaxed);
    stats.bytes_hashed += counters.bytes.load(Ordering::Relaxed);
    let folders: HashSet<&str> = dirs.iter().map(|(_, d)| d.as_str()).collect();
    if opts.collections.is_empty() {
        unrecorded_elsewhere(output, &folders, &mut |f| count(f, &mut stats))?;
    }
    verify_manifests(state, output, opts, &dirs, &mut stats, &mut |f, s| {
        count(f, s)
    })?;
    Ok(stats)
}

fn tile_name(file: &str, size: u32, x: u32, y: u32) -> String {
    super::facts::tile_name(file, size, x, y)
}

fn name_hash(name: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

fn extra(path: &str, kind: &str) -> Finding {
    Finding {
        path: path.to_string(),
        kind: "extra",
        detail: format!("{kind} nobody recorded"),
    }
}

/// Files checked and hashed, counted by the workers.
#[derive(Default)]
struct Counters {
    files: AtomicU64,
    hashed: AtomicU64,
    bytes: AtomicU64,
}

/// Batches of records checked at once, at most: the records read from
/// SQLite wait here while the workers stat the previous batches.
const IN_FLIGHT: usize = 4;

/// A recorded file, as the workers check it.
struct Rec {
    /// The file name, NUL-terminated for `fstatat`.
    name: CString,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    hash: [u8; 32],
}

/// What checking a folder needs besides the folder: the same for each.
struct Checking<'a> {
    state: &'a State,
    output: &'a Path,
    /// Re-hash every file, not only those whose stat moved.
    deep: bool,
    pool: &'a rayon::ThreadPool,
    counters: Arc<Counters>,
}

/// Checks every recorded file of folder `dir`, and lists the entries
/// nobody recorded. The main thread reads the records from SQLite while the
/// pool lists the folder and `lstat`s (and hashes) the batches already read.
fn check_folder(
    cx: &Checking<'_>,
    id: i64,
    dir: &str,
    report: &mut dyn FnMut(Finding) -> Result<(), Error>,
) -> Result<(), Error> {
    let folder = Arc::new(Folder::open(&cx.output.join(dir), dir));
    let (list_tx, list_rx) = mpsc::channel();
    {
        let folder = folder.clone();
        cx.pool.spawn(move || {
            let _ = list_tx.send(folder.list());
        });
    }
    let mut batches = Batches::new(cx, folder.clone(), &mut *report);
    let mut names: HashSet<u64> = HashSet::new();
    let mut bad_name = None;
    cx.state.for_each_file_ref(id, &mut |r| {
        let name = match r.tile {
            Some((size, x, y)) => tile_name(r.name, size, x, y),
            None => r.name.to_string(),
        };
        names.insert(name_hash(name.as_bytes()));
        let Ok(name) = CString::new(name) else {
            bad_name = Some(r.name.to_string());
            return;
        };
        let mut hash = [0u8; 32];
        if r.content_hash.len() == 32 {
            hash.copy_from_slice(r.content_hash);
        }
        batches.push(Rec {
            name,
            ino: r.ino,
            size: r.size,
            mtime_ns: r.mtime_ns,
            hash,
        });
    })?;
    batches.finish()?;
    if let Some(n) = bad_name {
        return Err(Error::Other(format!(
            "{dir}: a recorded name holds a NUL byte: {n:?}"
        )));
    }
    let listed = list_rx
        .recv()
        .map_err(|_| Error::Other(format!("{dir}: listing the folder stopped")))?;
    report_extras(&folder, dir, listed, &names, report)
}

/// The records of one folder, checked on the pool in batches of [`BATCH`]
/// with at most [`IN_FLIGHT`] batches at once; their findings reported as
/// they come back, until reporting fails (the first failure is kept).
struct Batches<'c, 'r> {
    cx: &'c Checking<'c>,
    folder: Arc<Folder>,
    batch: Vec<Rec>,
    tx: mpsc::Sender<Vec<Finding>>,
    rx: mpsc::Receiver<Vec<Finding>>,
    in_flight: usize,
    failed: Option<Error>,
    report: &'r mut dyn FnMut(Finding) -> Result<(), Error>,
}

impl<'c, 'r> Batches<'c, 'r> {
    fn new(
        cx: &'c Checking<'c>,
        folder: Arc<Folder>,
        report: &'r mut dyn FnMut(Finding) -> Result<(), Error>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        Batches {
            cx,
            folder,
            batch: Vec::with_capacity(BATCH),
            tx,
            rx,
            in_flight: 0,
            failed: None,
            report,
        }
    }

    /// Adds a record; a full batch goes to the pool, and the reader waits
    /// while [`IN_FLIGHT`] batches are being checked.
    fn push(&mut self, rec: Rec) {
        self.batch.push(rec);
        if self.batch.len() >= BATCH {
            let batch = std::mem::take(&mut self.batch);
            self.send(batch);
            self.batch.reserve(BATCH);
            self.receive(false);
            while self.in_flight >= IN_FLIGHT {
                self.receive(true);
            }
        }
    }

    fn send(&mut self, batch: Vec<Rec>) {
        let (folder, counters, tx) = (
            self.folder.clone(),
            self.cx.counters.clone(),
            self.tx.clone(),
        );
        let deep = self.cx.deep;
        self.in_flight += 1;
        self.cx.pool.spawn(move || {
            let found: Vec<Finding> = batch
                .par_iter()
                .filter_map(|r| folder.check(r, deep, &counters))
                .collect();
            counters
                .files
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let _ = tx.send(found);
        });
    }

    /// Reports the findings of one finished batch (`wait`), or of every
    /// batch already finished.
    fn receive(&mut self, wait: bool) {
        loop {
            let got = if wait {
                self.rx.recv().ok()
            } else {
                self.rx.try_recv().ok()
            };
            let Some(found) = got else { break };
            self.in_flight -= 1;
            for f in found {
                if self.failed.is_none() {
                    if let Err(e) = (self.report)(f) {
                        self.failed = Some(e);
                    }
                }
            }
            if wait {
                break;
            }
        }
    }

    /// Sends the last batch and reports every finding; the first failure to
    /// report, if any.
    fn finish(mut self) -> Result<(), Error> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.send(batch);
        }
        while self.in_flight > 0 {
            self.receive(true);
        }
        self.failed.map_or(Ok(()), Err)
    }
}

/// Entries of the folder nobody recorded: found by name hash; their names
/// are read again only when there are some.
fn report_extras(
    folder: &Folder,
    dir: &str,
    listed: io::Result<Vec<u64>>,
    names: &HashSet<u64>,
    report: &mut dyn FnMut(Finding) -> Result<(), Error>,
) -> Result<(), Error> {
    let extras: HashSet<u64> = match listed {
        Ok(entries) => entries.into_iter().filter(|h| !names.contains(h)).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
        Err(e) => {
            return report(Finding {
                path: dir.to_string(),
                kind: "unreadable",
                detail: format!("cannot list the folder: {e}"),
            })
        }
    };
    if extras.is_empty() {
        return Ok(());
    }
    for e in std::fs::read_dir(&folder.path)?.flatten() {
        let name = e.file_name();
        if extras.contains(&name_hash(name.as_bytes())) {
            let kind = e
                .file_type()
                .map_or("entry", |t| if t.is_dir() { "folder" } else { "file" });
            report(extra(&format!("{dir}/{}", name.to_string_lossy()), kind))?;
        }
    }
    Ok(())
}

/// An output folder, opened once so each file is `lstat`ed by name
/// relative to it (no walk of the whole path per file).
struct Folder {
    path: PathBuf,
    dir: String,
    /// The open folder, or why it could not be opened (reported per file).
    fd: Result<OwnedFd, io::ErrorKind>,
}

impl Folder {
    fn open(path: &Path, dir: &str) -> Folder {
        let fd = match CString::new(path.as_os_str().as_bytes()) {
            Err(_) => Err(io::ErrorKind::InvalidInput),
            Ok(c) => {
                // SAFETY: `c` is a valid NUL-terminated path; the flags are plain.
                let fd = unsafe {
                    libc::open(
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    // SAFETY: a descriptor `open` just returned belongs to us alone.
                    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
                } else {
                    Err(io::Error::last_os_error().kind())
                }
            }
        };
        Folder {
            path: path.to_path_buf(),
            dir: dir.to_string(),
            fd,
        }
    }

    /// The hashes of the folder's entry names (`readdir` on its descriptor).
    fn list(&self) -> io::Result<Vec<u64>> {
        let fd = self.fd.as_ref().map_err(|&k| io::Error::from(k))?;
        // SAFETY: duplicating an open descriptor; the copy goes to fdopendir.
        let dup = unsafe { libc::dup(fd.as_raw_fd()) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is ours; on success the stream owns it.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            return Err(e);
        }
        let mut out = Vec::new();
        loop {
            // SAFETY: `dirp` is an open directory stream.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break;
            }
            // SAFETY: readdir returned a valid entry whose name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                out.push(name_hash(name));
            }
        }
        // SAFETY: closes the stream (and `dup`) once.
        unsafe { libc::closedir(dirp) };
        Ok(out)
    }

    /// `lstat` of `name` in the folder.
    fn lstat(&self, c: &CString) -> io::Result<libc::stat> {
        let fd = self.fd.as_ref().map_err(|&k| io::Error::from(k))?;
        // SAFETY: a zeroed `stat` is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is an open directory, `c` a valid C string, `st` writable.
        let r = unsafe {
            libc::fstatat(
                fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r == 0 {
            Ok(st)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// One recorded file against the disk.
    fn check(&self, r: &Rec, deep: bool, counters: &Counters) -> Option<Finding> {
        let name = r.name.to_string_lossy();
        let finding = |kind, detail: String| {
            Some(Finding {
                path: format!("{}/{name}", self.dir),
                kind,
                detail,
            })
        };
        let st = match self.lstat(&r.name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return finding("missing", "recorded, not on disk".into())
            }
            Err(e) => return finding("unreadable", e.to_string()),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return finding(
                "not-a-file",
                "recorded as a file; a folder, link or device is there".into(),
            );
        }
        if st.st_size as u64 != r.size {
            return finding(
                "modified",
                format!("size {} recorded, {} on disk", r.size, st.st_size),
            );
        }
        let mtime = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec;
        let moved = st.st_ino != r.ino || mtime != r.mtime_ns;
        if !(deep || moved) {
            return None;
        }
        match hash_file(&self.path.join(OsStr::from_bytes(r.name.as_bytes()))) {
            Ok(h) => {
                counters.hashed.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(r.size, Ordering::Relaxed);
                let recorded = blake3::Hash::from_bytes(r.hash).to_hex();
                (h != recorded.as_str()).then(|| Finding {
                    path: format!("{}/{name}", self.dir),
                    kind: "modified",
                    detail: format!("content differs: blake3 {recorded} recorded, {h} on disk"),
                })
            }
            Err(e) => finding("unreadable", e.to_string()),
        }
    }
}

/// blake3 of a file's bytes (memory-mapped when large; a large file is
/// also hashed on several threads, as `b3sum` does).
pub fn hash_file(path: &Path) -> io::Result<String> {
    crate::regular_file::blake3(path).map(|(h, _)| h.to_hex().to_string())
}

/// Files in the output folder outside recorded output folders, the
/// temporary folder and the manifests. A skipped folder is never opened:
/// `walkdir`'s `filter_entry` would still read (and sort) every recorded
/// folder's million names before dropping them.
fn unrecorded_elsewhere(
    output: &Path,
    folders: &HashSet<&str>,
    report: &mut dyn FnMut(Finding) -> Result<(), Error>,
) -> Result<(), Error> {
    // `export/` belongs to the export layer, which verifies it
    // (`export::verify`); `cpia report` writes its page beside the dataset
    // by default: not an unrecorded output.
    let skip = |rel: &str| {
        rel == crate::workspace::TMP_DIR
            || rel == manifest::DIR
            || rel == EXPORT_DIR
            || folders.contains(rel)
            || matches!(rel, "report.html" | "report.md" | "report.json")
    };
    // Folders still to list, relative to `output` ("" is `output`).
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let entries = match std::fs::read_dir(output.join(&rel)) {
            Ok(it) => it.collect::<io::Result<Vec<_>>>(),
            Err(e) => Err(e),
        };
        let mut entries: Vec<(String, bool)> = match entries {
            Ok(es) => es
                .iter()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    (child, e.file_type().is_ok_and(|t| t.is_dir()))
                })
                .collect(),
            // No output folder at all (a plan, no build yet): nothing is
            // unrecorded; recorded files, if any, are reported missing.
            Err(e) if rel.is_empty() && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                report(Finding {
                    path: if rel.is_empty() {
                        ".".into()
                    } else {
                        rel.clone()
                    },
                    kind: "unreadable",
                    detail: format!("{}: {e}", output.join(&rel).display()),
                })?;
                continue;
            }
        };
        entries.sort();
        let mut below = Vec::new();
        for (child, is_dir) in entries {
            if skip(&child) {
                continue;
            }
            if is_dir {
                below.push(child);
            } else {
                report(extra(&child, "file"))?;
            }
        }
        // Popped in name order.
        stack.extend(below.into_iter().rev());
    }
    Ok(())
}

fn rel_of(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The manifests: every recorded part file (stat, or hash with `--deep`),
/// files in the manifests folder nobody recorded, and changes not yet
/// written into them.
fn verify_manifests(
    state: &State,
    output: &Path,
    opts: &Options,
    dirs: &[(i64, String)],
    stats: &mut Stats,
    report: &mut dyn FnMut(Finding, &mut Stats) -> Result<(), Error>,
) -> Result<(), Error> {
    let whole = opts.collections.is_empty();
    let ids: Vec<i64> = dirs.iter().map(|(id, _)| *id).collect();
    let parts = state.manifest_parts(if whole { None } else { Some(&ids) })?;
    for p in &parts {
        for (rel, rec) in [
            (manifest::csv_path(&p.dir, p.id), &p.csv),
            (manifest::parquet_path(&p.dir, p.id), &p.parquet),
        ] {
            stats.files += 1;
            if let Some(f) = check_part(&output.join(&rel), &rel, rec, opts.deep, stats) {
                report(f, stats)?;
            }
        }
    }
    if whole {
        let expected = manifest::expected_files(&parts);
        let root = output.join(manifest::DIR);
        for e in walkdir::WalkDir::new(&root)
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            let rel = rel_of(output, e.path());
            if !e.file_type().is_dir() && !expected.contains_key(&rel) {
                report(extra(&rel, "file"), stats)?;
            }
        }
        let pending = state.manifest_pending()?;
        if pending > 0 {
            report(
                Finding {
                    path: manifest::DIR.to_string(),
                    kind: "stale",
                    detail: format!(
                        "{pending} changed input(s) are not in the manifests yet (an interrupted build?); the next build writes them"
                    ),
                },
                stats,
            )?;
        }
    }
    Ok(())
}

fn check_part(
    path: &Path,
    rel: &str,
    rec: &PartFile,
    deep: bool,
    stats: &mut Stats,
) -> Option<Finding> {
    let finding = |kind, detail: String| {
        Some(Finding {
            path: rel.to_string(),
            kind,
            detail,
        })
    };
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => m,
        Ok(_) => return finding("not-a-file", "a manifest part is not a regular file".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return finding("missing", "manifest part recorded, not on disk".into())
        }
        Err(e) => return finding("unreadable", e.to_string()),
    };
    if m.len() != rec.bytes {
        return finding(
            "modified",
            format!("size {} recorded, {} on disk", rec.bytes, m.len()),
        );
    }
    let moved = m.mtime() * 1_000_000_000 + m.mtime_nsec() != rec.mtime_ns;
    if !(deep || moved) {
        return None;
    }
    match hash_file(path) {
        Ok(h) => {
            stats.hashed += 1;
            stats.bytes_hashed += m.len();
            (h != rec.blake3).then(|| Finding {
                path: rel.to_string(),
                kind: "modified",
                detail: "content differs from the manifest written".into(),
            })
        }
        Err(e) => finding("unreadable", e.to_string()),
    }
}
