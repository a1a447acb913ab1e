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
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::manifest;
use super::Error;
use crate::store::audit::manifests::PartFile;
use crate::store::{DirEntryRecord, State};

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
        .num_threads(opts.jobs.max(1))
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
    let hashed = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    for (id, dir) in &dirs {
        stats.folders += 1;
        let folder = output.join(dir);
        let mut names: HashSet<u64> = HashSet::new();
        let mut batch: Vec<DirEntryRecord> = Vec::with_capacity(BATCH);
        let mut failed: Option<Error> = None;
        let mut flush = |batch: &mut Vec<DirEntryRecord>, stats: &mut Stats| -> Result<(), Error> {
            let found: Vec<Option<Finding>> = pool.install(|| {
                batch
                    .par_iter()
                    .map(|r| check(&folder, dir, r, opts.deep, &hashed, &bytes))
                    .collect()
            });
            stats.files += batch.len() as u64;
            for r in batch.iter() {
                names.insert(name_hash(&r.name));
            }
            batch.clear();
            for f in found.into_iter().flatten() {
                count(f, stats)?;
            }
            Ok(())
        };
        state.for_each_in_dir(*id, tile_name, |r| {
            batch.push(r);
            if batch.len() >= BATCH && failed.is_none() {
                if let Err(e) = flush(&mut batch, &mut stats) {
                    failed = Some(e);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        flush(&mut batch, &mut stats)?;
        drop(flush);
        // Entries nobody recorded.
        match std::fs::read_dir(&folder) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !names.contains(&name_hash(&name)) {
                        let kind = e.file_type().map_or("entry", |t| {
                            if t.is_dir() {
                                "folder"
                            } else {
                                "file"
                            }
                        });
                        count(extra(&format!("{dir}/{name}"), kind), &mut stats)?;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => count(
                Finding {
                    path: dir.clone(),
                    kind: "unreadable",
                    detail: format!("cannot list the folder: {e}"),
                },
                &mut stats,
            )?,
        }
    }
    stats.hashed += hashed.load(Ordering::Relaxed);
    stats.bytes_hashed += bytes.load(Ordering::Relaxed);
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

fn name_hash(name: &str) -> u64 {
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

/// One recorded file against the disk.
fn check(
    folder: &Path,
    dir: &str,
    r: &DirEntryRecord,
    deep: bool,
    hashed: &AtomicU64,
    bytes: &AtomicU64,
) -> Option<Finding> {
    let path = folder.join(&r.name);
    let finding = |kind, detail: String| {
        Some(Finding {
            path: format!("{dir}/{}", r.name),
            kind,
            detail,
        })
    };
    let m = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return finding("missing", "recorded, not on disk".into())
        }
        Err(e) => return finding("unreadable", e.to_string()),
    };
    if !m.file_type().is_file() {
        return finding(
            "not-a-file",
            "recorded as a file; a folder, link or device is there".into(),
        );
    }
    if m.len() != r.size {
        return finding(
            "modified",
            format!("size {} recorded, {} on disk", r.size, m.len()),
        );
    }
    let moved = m.ino() != r.ino || m.mtime() * 1_000_000_000 + m.mtime_nsec() != r.mtime_ns;
    if !(deep || moved) {
        return None;
    }
    match hash_file(&path) {
        Ok(h) => {
            hashed.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(m.len(), Ordering::Relaxed);
            (h != r.content_hash).then(|| Finding {
                path: format!("{dir}/{}", r.name),
                kind: "modified",
                detail: format!(
                    "content differs: blake3 {} recorded, {h} on disk",
                    r.content_hash
                ),
            })
        }
        Err(e) => finding("unreadable", e.to_string()),
    }
}

/// blake3 of a file's bytes (memory-mapped when large; a large file is
/// also hashed on several threads, as `b3sum` does).
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    let len = std::fs::symlink_metadata(path)?.len();
    if len >= 16 << 20 {
        h.update_mmap_rayon(path)?;
    } else {
        h.update_mmap(path)?;
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Files in the output folder outside recorded output folders, the
/// temporary folder and the manifests.
fn unrecorded_elsewhere(
    output: &Path,
    folders: &HashSet<&str>,
    report: &mut dyn FnMut(Finding) -> Result<(), Error>,
) -> Result<(), Error> {
    let skip = |rel: &str| {
        rel == crate::engine::atomic::TMP_DIR || rel == manifest::DIR || folders.contains(rel)
    };
    let walk = walkdir::WalkDir::new(output)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !skip(&rel_of(output, e.path())));
    for e in walk {
        match e {
            Ok(e) if !e.file_type().is_dir() => {
                report(extra(&rel_of(output, e.path()), "file"))?;
            }
            Ok(_) => {}
            Err(e) => report(Finding {
                path: e.path().map_or_else(String::new, |p| rel_of(output, p)),
                kind: "unreadable",
                detail: e.to_string(),
            })?,
        }
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
