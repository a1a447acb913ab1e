//! Writing a cell's encoded tiles (on an I/O thread: the latency of making
//! files durable, not CPU, is the cost of writing): every tile staged and
//! hashed in parallel, all made durable by one sync, then each unit's tiles
//! put in place in tile order, the tiles it no longer writes removed, and
//! the unit recorded; the folders the tiles went into are synced before the
//! result is handed on, so the renames are durable before they are recorded.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::plan::UnitAction;
use crate::store::state::now;
use crate::store::{Event, ReadFacts, TileRecord, UnitRecord, WrittenFile};

use super::atomic::{OutputDir, Staged, Written};
use super::{failed_job, JobContext, JobResult};

/// Per action, its encoded tiles (None: the step made none).
pub(super) type Encoded = Vec<Option<std::sync::Arc<crate::ops::wsi::EncodedTiles>>>;

/// A cell's result on its way to the commit: per action its encoded tiles
/// (None: the step made none), the tissue decision and the reader used
/// (None when the cell was not read: recorded as `none`).
pub(super) struct CellTiles {
    pub encoded: Encoded,
    pub kept: Option<bool>,
    pub reader: Option<crate::slide::Reader>,
}

/// The failure of a whole cell: every unit of it fails.
pub(super) fn cell_failure(actions: &[&UnitAction], error: String) -> JobResult {
    let (input, u) = (&actions[0].input, &actions[0].unit);
    failed_job(
        input.id,
        &u.cell_id(),
        &input.hash,
        format!("{} (cell {},{})", input.abs.display(), u.cell.0, u.cell.1),
        error,
        actions.len() as u64,
    )
}

/// Writes a cell's encoded tiles, removes the tiles its units no longer
/// write, records it all, and syncs the folders written to.
pub(super) fn commit_cell(
    actions: &[&UnitAction],
    cx: &JobContext<'_>,
    cell: &CellTiles,
) -> JobResult {
    let result = place_cell(actions, cx, cell);
    let placed = result.events.iter().filter_map(|e| match e {
        Event::Unit(u) if !u.tiles.is_empty() => Some(u.dir.as_str()),
        _ => None,
    });
    if let Err(e) = cx.out.sync_dirs(placed) {
        let mut f = cell_failure(
            actions,
            format!("cannot make the cell's tiles durable: {e}"),
        );
        f.dirty_dirs = actions.iter().map(|a| a.unit.dir.clone()).collect();
        return f;
    }
    result
}

/// [`commit_cell`] up to the folder syncs.
fn place_cell(actions: &[&UnitAction], cx: &JobContext<'_>, cell: &CellTiles) -> JobResult {
    let staged = stage(actions, cx.out, cell);
    let durable: Vec<&Staged> = staged
        .iter()
        .flatten()
        .flatten()
        .filter_map(|t| t.staged.as_ref().ok())
        .collect();
    if !durable.is_empty() {
        if let Err(e) = cx.out.sync(durable) {
            return cell_failure(
                actions,
                format!("cannot make the cell's tiles durable: {e}"),
            );
        }
    }
    let mut result = JobResult::default();
    for ((a, writes), encoded) in actions.iter().zip(staged).zip(&cell.encoded) {
        let Some(writes) = writes else {
            let error = format!("step `{}` did not produce encoded tiles", a.sink_id());
            return failed_after(actions, result, error, None);
        };
        let mut unit = place_unit(cx.out, writes);
        if unit.error.is_none() {
            remove_stale(cx.out, a, &mut unit);
        }
        result.built += unit.tiles.len() as u64;
        result.removed += unit.removed_tiles.len() as u64;
        let encoding = encoded.as_ref().map_or("pixels", |e| e.encoding.as_str());
        let error = unit.error.take();
        result.events.push(Event::Unit(Box::new(unit_record(
            a,
            cx,
            cell,
            encoding,
            unit,
            error.is_none(),
        ))));
        if let Some(error) = error {
            // What was written is recorded, in a unit marked incomplete: it
            // is built again next time.
            return failed_after(actions, result, error, Some(&a.unit.dir));
        }
    }
    result.events.push(Event::Succeeded {
        input: actions[0].input.id,
        unit: actions[0].unit.cell_id(),
    });
    result
}

/// The cell's failure, keeping what `done` recorded before it.
fn failed_after(
    actions: &[&UnitAction],
    done: JobResult,
    error: String,
    dirty: Option<&str>,
) -> JobResult {
    let mut f = cell_failure(actions, error);
    f.events.splice(0..0, done.events);
    f.built = done.built;
    f.removed = done.removed;
    f.dirty_dirs.extend(dirty.map(str::to_string));
    f
}

/// One tile on its way to disk.
struct TileWrite {
    path: String,
    x: u32,
    y: u32,
    content_hash: String,
    staged: std::io::Result<Staged>,
}

/// Every tile of the cell written under a temporary name and hashed, in
/// parallel; per action, None when its step made no tiles.
fn stage(
    actions: &[&UnitAction],
    out: &OutputDir,
    cell: &CellTiles,
) -> Vec<Option<Vec<TileWrite>>> {
    actions
        .iter()
        .zip(&cell.encoded)
        .map(|(a, tiles)| {
            tiles.as_ref().map(|tiles| {
                tiles
                    .tiles
                    .par_iter()
                    .map(|t| {
                        let path = a.unit.tile_path(t.x, t.y);
                        TileWrite {
                            staged: out.stage(&path, &t.bytes),
                            content_hash: crate::plan::sources::hash_bytes(&t.bytes),
                            x: t.x,
                            y: t.y,
                            path,
                        }
                    })
                    .collect()
            })
        })
        .collect()
}

/// A tile whose file was put in place (or failed to be).
struct Placed {
    path: String,
    x: u32,
    y: u32,
    content_hash: String,
}

/// What placing one unit's tiles did.
struct PlacedUnit {
    tiles: Vec<TileRecord>,
    written: HashSet<String>,
    removed_tiles: Vec<(u32, u32)>,
    /// The first failure, if any.
    error: Option<String>,
}

/// Renames a unit's staged tiles into place (in parallel), in tile order.
fn place_unit(out: &OutputDir, writes: Vec<TileWrite>) -> PlacedUnit {
    let placed: Vec<(Placed, std::io::Result<Written>)> = writes
        .into_par_iter()
        .map(|t| {
            let TileWrite {
                path,
                x,
                y,
                content_hash,
                staged,
            } = t;
            let placed = Placed {
                path,
                x,
                y,
                content_hash,
            };
            (placed, staged.and_then(|s| out.place(s)))
        })
        .collect();
    let mut unit = PlacedUnit {
        tiles: Vec::with_capacity(placed.len()),
        written: HashSet::new(),
        removed_tiles: Vec::new(),
        error: None,
    };
    for (t, w) in placed {
        match w {
            Ok(w) => {
                unit.tiles.push(TileRecord {
                    x: t.x,
                    y: t.y,
                    file: WrittenFile {
                        ino: w.ino,
                        size: w.size,
                        mtime_ns: w.mtime_ns,
                        content_hash: t.content_hash,
                    },
                });
                unit.written.insert(t.path);
            }
            Err(e) => {
                unit.error
                    .get_or_insert(format!("cannot write {}: {e}", t.path));
            }
        }
    }
    unit
}

/// Removes the tiles the unit wrote before but not now (e.g. after a
/// stricter test); called only when every tile of the unit was written.
fn remove_stale(out: &OutputDir, a: &UnitAction, unit: &mut PlacedUnit) {
    for (path, x, y) in &a.previous {
        if unit.written.contains(path) {
            continue;
        }
        match out.remove(path) {
            Ok(()) => unit.removed_tiles.push((*x, *y)),
            Err(e) => {
                unit.error
                    .get_or_insert(format!("cannot remove {path}: {e}"));
            }
        }
    }
}

/// The record of one unit as built.
fn unit_record(
    a: &UnitAction,
    cx: &JobContext<'_>,
    cell: &CellTiles,
    encoding: &str,
    unit: PlacedUnit,
    complete: bool,
) -> UnitRecord {
    let (input, u) = (&a.input, &a.unit);
    UnitRecord {
        input: input.id,
        sink: a.sink_id().to_string(),
        cell: u.cell,
        dir: u.dir.clone(),
        size: u.size,
        pipeline_hash: a.pipeline_hash().to_string(),
        read: ReadFacts {
            source_hash: input.hash.clone(),
            read_size: u.read_size,
            mpp: u.mpp,
            mpp_origin: u.mpp_origin.to_string(),
            reader: cell
                .reader
                .map_or("none", crate::slide::Reader::as_str)
                .to_string(),
        },
        encoding: encoding.to_string(),
        maker: cx.maker(),
        kept: cell.kept,
        complete,
        tiles: unit.tiles,
        removed_tiles: unit.removed_tiles,
        built_at: now(),
        build: cx.build,
    }
}
