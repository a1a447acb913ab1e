//! `cpia verify` of the exports: every recorded file (shards, indexes,
//! Croissant files, ImageFolder files) against the disk — missing, not a
//! regular file, another size, or (mtime moved, or `--deep`) other bytes —
//! files under `export/` nobody recorded, and exports with changes not
//! written yet.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Error;
use crate::provenance::facts;
use crate::provenance::verify::{hash_file, Finding};
use crate::store::exports::Item;
use crate::store::State;

/// What was looked at.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub exports: u64,
    pub files: u64,
    pub hashed: u64,
    pub findings: u64,
}

fn finding(path: &str, kind: &'static str, detail: String) -> Finding {
    Finding {
        path: path.to_string(),
        kind,
        detail,
    }
}

/// One file against its record: size, then bytes when the mtime moved or `deep`.
fn check(
    output: &Path,
    rel: &str,
    bytes: u64,
    mtime_ns: Option<i64>,
    blake3: &str,
    deep: bool,
    stats: &mut Stats,
) -> Option<Finding> {
    stats.files += 1;
    let path = output.join(rel);
    let m = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => m,
        Ok(_) => {
            return Some(finding(
                rel,
                "not-a-file",
                "recorded as a file; a folder, link or device is there".into(),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some(finding(rel, "missing", "recorded, not on disk".into()))
        }
        Err(e) => return Some(finding(rel, "unreadable", e.to_string())),
    };
    if m.len() != bytes {
        return Some(finding(
            rel,
            "modified",
            format!("size {bytes} recorded, {} on disk", m.len()),
        ));
    }
    let moved = mtime_ns.is_some_and(|t| m.mtime() * 1_000_000_000 + m.mtime_nsec() != t);
    if !(deep || moved) {
        return None;
    }
    stats.hashed += 1;
    match hash_file(&path) {
        Ok(h) if h == blake3 => None,
        Ok(h) => Some(finding(
            rel,
            "modified",
            format!("content differs: blake3 {blake3} recorded, {h} on disk"),
        )),
        Err(e) => Some(finding(rel, "unreadable", e.to_string())),
    }
}

/// Verifies every export; each finding goes to `report` as it is found.
pub fn verify(
    state: &State,
    output: &Path,
    deep: bool,
    report: &mut dyn FnMut(Finding) -> Result<(), crate::provenance::Error>,
) -> Result<Stats, Error> {
    let mut stats = Stats::default();
    let mut expected: HashSet<String> = HashSet::new();
    let mut emit = |f: Finding, stats: &mut Stats| -> Result<(), Error> {
        stats.findings += 1;
        report(f).map_err(Error::from)
    };
    let exports = state.exports()?;
    for e in &exports {
        stats.exports += 1;
        for f in state.export_files(e.id)? {
            expected.insert(f.path.clone());
            if let Some(x) = check(
                output,
                &f.path,
                f.bytes,
                Some(f.mtime_ns),
                &f.blake3,
                deep,
                &mut stats,
            ) {
                emit(x, &mut stats)?;
            }
        }
        let mut found = Vec::new();
        let mut failed = None;
        state.for_each_export_sample(e.id, &mut |s| {
            let Some(p) = s.path else { return };
            let facts = match s.item {
                Item::Output(id) => state.output_facts_by_id(id),
                Item::Tile { unit, x, y } => state.tile_facts_at(unit, x, y, &facts::tile_name),
            };
            match facts {
                Ok(Some(f)) => {
                    if let Some(x) = check(
                        output,
                        &p,
                        f.file.size,
                        None,
                        &f.file.content_hash,
                        deep,
                        &mut stats,
                    ) {
                        found.push(x);
                    }
                }
                Ok(None) => found.push(finding(
                    &p,
                    "stale",
                    "its output is no longer recorded; the next export removes it".into(),
                )),
                Err(err) => failed = Some(err),
            }
            expected.insert(p);
        })?;
        if let Some(err) = failed {
            return Err(err.into());
        }
        for x in found {
            emit(x, &mut stats)?;
        }
        let pending = state.export_pending(e.id)? + state.export_stale(e.id)?.len() as u64;
        if pending > 0 {
            emit(
                finding(
                    &super::folder(&e.name),
                    "stale",
                    format!("{pending} change(s) not written into the export yet; `cpia export {}` (or a build, if it is declared) writes them", e.name),
                ),
                &mut stats,
            )?;
        }
    }
    let root = output.join(super::DIR);
    for entry in walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(output)
            .map(|p| {
                p.iter()
                    .map(|c| c.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        if !expected.contains(&rel) {
            emit(
                finding(&rel, "extra", "file nobody recorded".into()),
                &mut stats,
            )?;
        }
    }
    Ok(stats)
}
