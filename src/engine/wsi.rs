//! Executing WSI units: read one grid cell, run the recipe's tile steps on it,
//! write the tiles, forget the ones the unit no longer writes; then draw each
//! slide's QC picture from the recorded decisions.
//!
//! Memory is bounded per cell in flight: its region (`read_size`² RGB, plus
//! OpenSlide's BGRA strip while reading), the standardized image and its
//! encoded tiles; pixel buffers come from and go back to `ops::pool`. Cells of
//! [`LARGE_CELL_BYTES`] or more are built one at a time (see `engine::run`),
//! others one per worker. Open slides are shared between workers (an
//! OpenSlide handle is `Send + Sync`) and kept in a small LRU, so neither
//! slide size nor slide count grows the footprint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::ops::wsi::otsu::{self, TissueMask};
use crate::ops::wsi::qc::{self, CellState};
use crate::ops::wsi::{EncodedTile, LevelPolicy, ReaderChoice, Region, TissueParams};
use crate::ops::{Operator, Value};
use crate::plan::expand::grid_params;
use crate::plan::{QcAction, UnitAction};
use crate::slide::{Reader, Slide};
use crate::store::state::now;
use crate::store::{Event, OutputRecord, ReadFacts, TileRecord, UnitRecord, WrittenFile};

use super::atomic::OutputDir;
use super::record::Decisions;
use super::{evaluate, failed_job, JobContext, JobResult, Outcome};

/// Longest edge of QC pictures, in pixels.
pub const QC_EDGE: u32 = 1024;

/// Most QC thumbnails read ahead during the cell phase (≤ 3 MB each): the
/// rest are read in the QC phase, so memory does not grow with slide count.
pub const PREFETCHED_THUMBNAILS: usize = 32;

/// Cells whose level-0 region is at least this large (a 40× slide's 7530²
/// is 170 MB; a native 3840² cell is 44 MB) are built one at a time.
pub const LARGE_CELL_BYTES: u64 = 64 << 20;

/// Bytes of a cell's level-0 region as RGB.
pub fn region_bytes(action: &UnitAction) -> u64 {
    let n = u64::from(action.unit.read_size);
    n * n * 3
}

type MaskSlot = Arc<OnceLock<Result<Arc<TissueMask>, String>>>;
type SlideSlot = Arc<OnceLock<Result<Arc<Slide>, String>>>;

type Thumbnail = Arc<(crate::ops::RgbImage, f64)>;

/// Open slides shared by the workers, least recently used dropped first.
pub struct SlideCache {
    cap: usize,
    open: Mutex<VecDeque<(PathBuf, SlideSlot)>>,
    masks: Mutex<HashMap<PathBuf, MaskSlot>>,
    /// QC thumbnails read while the cells are built (idle cores), drawn after.
    thumbnails: Mutex<HashMap<PathBuf, Thumbnail>>,
}

impl SlideCache {
    /// A cache keeping at most `cap` slides open.
    pub fn new(cap: usize) -> SlideCache {
        SlideCache {
            cap: cap.max(1),
            open: Mutex::new(VecDeque::new()),
            masks: Mutex::new(HashMap::new()),
            thumbnails: Mutex::new(HashMap::new()),
        }
    }

    /// The open slide at `path`, opening it if needed — once, even when
    /// several workers ask at the same moment.
    pub fn get(&self, path: &Path) -> Result<Arc<Slide>, String> {
        let slot = {
            let Ok(mut open) = self.open.lock() else {
                return Err("slide cache poisoned".into());
            };
            match open.iter().position(|(p, _)| p == path) {
                Some(pos) => {
                    let entry = open.remove(pos).ok_or("slide cache corrupt")?;
                    let slot = entry.1.clone();
                    open.push_back(entry);
                    slot
                }
                None => {
                    let slot: SlideSlot = Arc::default();
                    open.push_back((path.to_path_buf(), slot.clone()));
                    while open.len() > self.cap {
                        open.pop_front();
                    }
                    slot
                }
            }
        };
        slot.get_or_init(|| Slide::open(path).map(Arc::new)).clone()
    }

    /// Whether a prefetched thumbnail would still be kept.
    fn thumbnail_room(&self) -> bool {
        self.thumbnails
            .lock()
            .is_ok_and(|m| m.len() < PREFETCHED_THUMBNAILS)
    }

    /// Keeps a prefetched thumbnail for the QC phase, unless the cache is full.
    fn keep_thumbnail(&self, path: &Path, thumbnail: (crate::ops::RgbImage, f64)) {
        if let Ok(mut m) = self.thumbnails.lock() {
            if m.len() < PREFETCHED_THUMBNAILS {
                m.insert(path.to_path_buf(), Arc::new(thumbnail));
            }
        }
    }

    /// The prefetched thumbnail of `path`, handed over (and forgotten).
    fn take_thumbnail(&self, path: &Path) -> Option<Thumbnail> {
        self.thumbnails.lock().ok()?.remove(path)
    }

    /// The slide's Otsu tissue mask, computed once per build.
    fn mask(
        &self,
        path: &Path,
        slide: &Slide,
        p: &otsu::OtsuParams,
    ) -> Result<Arc<TissueMask>, String> {
        let slot = match self.masks.lock() {
            Ok(mut m) => m.entry(path.to_path_buf()).or_default().clone(),
            Err(_) => return Err("mask cache poisoned".into()),
        };
        slot.get_or_init(|| {
            let (thumb, scale) = slide.thumbnail(p.thumbnail)?;
            Ok(Arc::new(otsu::mask(&thumb, scale, p)))
        })
        .clone()
    }
}

/// Reads the region of cell `(i, j)`: `read_size` level-0 pixels square, from
/// level 0 (`finest`) or from the coarsest level still at least as fine as
/// the target (`auto`), in which case the grid step resizes it.
fn read_cell(
    slide: &Slide,
    i: u32,
    j: u32,
    read_size: u32,
    max_downsample: f64,
    level: LevelPolicy,
    reader: Reader,
) -> Result<(crate::ops::RgbImage, &'static str), String> {
    let (x0, y0) = (
        u64::from(i) * u64::from(read_size),
        u64::from(j) * u64::from(read_size),
    );
    let (lvl, n) = match level {
        LevelPolicy::Finest => (0, read_size),
        LevelPolicy::Auto => {
            let max_ds = max_downsample;
            let (lvl, ds) = slide
                .meta
                .levels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.downsample <= max_ds + 1e-9)
                .map(|(k, l)| (k, l.downsample))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 1.0));
            (lvl, (f64::from(read_size) / ds).round().max(1.0) as u32)
        }
    };
    let used = slide.effective_reader(reader, lvl);
    let buffer = crate::ops::pool::take(n as usize * n as usize * 3);
    slide
        .read_with(reader, x0, y0, lvl, n, n, buffer)
        .map(|img| (img, used))
}

/// Gives a cell's region and standardized image back to the buffer pool,
/// once nothing else holds them (they are one image at native scale).
fn recycle(region: Arc<Region>, standardized: Option<Arc<crate::ops::RgbImage>>) {
    for image in [standardized, Arc::try_unwrap(region).ok().map(|r| r.image)]
        .into_iter()
        .flatten()
    {
        if let Ok(image) = Arc::try_unwrap(image) {
            crate::ops::pool::give(image.into_raw());
        }
    }
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

/// Computes the units of one cell (all share the slide and the cell): reads
/// the region, runs the steps, gives the pixel buffers back to the pool, and
/// returns the writing of the encoded tiles as a commit for the I/O threads.
pub(super) fn build_cell<'a>(
    actions: &'a [&'a UnitAction],
    cx: &'a JobContext<'_>,
    mut grant: super::budget::Grant<'a>,
) -> Outcome<'a> {
    let slides = cx.slides;
    let first = actions[0];
    let u = &first.unit;
    let input = &first.input;
    let recipe = &first.spec.recipe;
    let fail = |error: String| Outcome::Done(cell_failure(actions, error));
    let Some(grid) = grid_params(recipe) else {
        return fail("the recipe has no wsi_grid step".into());
    };
    let slide = match slides.get(&input.abs) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let tissue_step = recipe
        .steps
        .iter()
        .position(|s| matches!(s.op, Operator::Tissue(_)));
    let tissue_fraction = match tissue_step.map(|t| &recipe.steps[t].op) {
        Some(Operator::Tissue(TissueParams::Otsu(p))) => match slides.mask(&input.abs, &slide, p) {
            Ok(m) => Some(m.fraction(
                u64::from(u.cell.0) * u64::from(u.read_size),
                u64::from(u.cell.1) * u64::from(u.read_size),
                u64::from(u.read_size),
            )),
            Err(e) => return fail(format!("tissue mask: {e}")),
        },
        _ => None,
    };
    // A level with downsample d has d × mpp µm/px: usable by `auto` while
    // that is no coarser than the target.
    let max_downsample = grid.target_mpp / u.mpp;
    let image = match read_cell(
        &slide,
        u.cell.0,
        u.cell.1,
        u.read_size,
        max_downsample,
        grid.level,
        match grid.reader {
            ReaderChoice::Auto => Reader::Auto,
            ReaderChoice::OpenSlide => Reader::OpenSlide,
        },
    ) {
        Ok(read) => read,
        Err(e) => return fail(e),
    };
    let (image, reader_used) = image;
    let region = Arc::new(Region {
        i: u.cell.0,
        j: u.cell.1,
        image: Arc::new(image),
        tissue_fraction,
    });
    let sinks: Vec<usize> = actions.iter().map(|a| a.unit.sink).collect();
    let grid_step = recipe
        .steps
        .iter()
        .position(|s| matches!(s.op, Operator::WsiGrid(_)));
    // The tissue decision and the standardized image are read below.
    let keep: Vec<usize> = tissue_step.into_iter().chain(grid_step).collect();
    let evaluated = evaluate::evaluate(recipe, Value::Region(region.clone()), &sinks, &keep);
    let evaluated = match evaluated {
        Ok(v) => v,
        Err(e) => {
            recycle(region, None);
            return fail(e.to_string());
        }
    };
    let kept = tissue_step.and_then(|t| match evaluated.get(t) {
        Some(Value::Tiles(tiles)) => Some(!tiles.tiles.is_empty()),
        _ => None,
    });

    // Only the encoded tiles travel to the commit; the pixels go back to the
    // pool now, for the next cell.
    let encoded: Vec<Option<Arc<Vec<EncodedTile>>>> = actions
        .iter()
        .map(|a| match evaluated.get(a.unit.sink) {
            Some(Value::EncodedTiles(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let standardized = grid_step.and_then(|g| match evaluated.get(g) {
        Some(Value::Tiles(t)) => t.tiles.first().map(|t| t.image.clone()),
        _ => None,
    });
    drop(evaluated);
    recycle(region, standardized);
    // The commit holds only the encoded tiles.
    grant.shrink_to(
        encoded
            .iter()
            .flatten()
            .flat_map(|tiles| tiles.iter())
            .map(|t| t.bytes.len() as u64)
            .sum(),
    );
    Outcome::Commit(Box::new(move || {
        let _grant = grant;
        commit_cell(actions, cx, &encoded, kept, reader_used)
    }))
}

/// Writes a cell's encoded tiles, removes the tiles its units no longer
/// write, and records it all (on an I/O thread: the latency of making files
/// durable, not CPU, is the cost of writing). The folders its tiles went
/// into are synced before the result is handed on, so that the renames are
/// durable before they are recorded.
fn commit_cell(
    actions: &[&UnitAction],
    cx: &JobContext<'_>,
    encoded: &[Option<Arc<Vec<EncodedTile>>>],
    kept: Option<bool>,
    reader_used: &str,
) -> JobResult {
    let result = place_cell(actions, cx, encoded, kept, reader_used);
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
fn place_cell(
    actions: &[&UnitAction],
    cx: &JobContext<'_>,
    encoded: &[Option<Arc<Vec<EncodedTile>>>],
    kept: Option<bool>,
    reader_used: &str,
) -> JobResult {
    use rayon::prelude::*;
    let out = cx.out;
    let fail = |error: String| cell_failure(actions, error);
    let input = &actions[0].input;
    // Every tile of the cell is staged (written under a temporary name) and
    // hashed in parallel, all are made durable by one sync, then each unit's
    // tiles are put in place and recorded, in tile order.
    let staged: Vec<Option<Vec<TileWrite>>> = actions
        .iter()
        .zip(encoded)
        .map(|(a, tiles)| {
            let u = &a.unit;
            tiles.as_ref().map(|tiles| {
                tiles
                    .par_iter()
                    .map(|t| {
                        let path = u.tile_path(t.x, t.y);
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
        .collect();
    let durable = staged
        .iter()
        .flatten()
        .flatten()
        .filter_map(|t| t.staged.as_ref().ok());
    if let Err(e) = out.sync(durable) {
        return fail(format!("cannot make the cell's tiles durable: {e}"));
    }
    let mut result = JobResult::default();
    for (a, writes) in actions.iter().zip(staged) {
        let u = &a.unit;
        let sink_id = a.sink_id();
        let Some(writes) = writes else {
            let mut f = fail(format!("step `{sink_id}` did not produce encoded tiles"));
            f.events.splice(0..0, std::mem::take(&mut result.events));
            f.built = result.built;
            return f;
        };
        let placed: Vec<(Placed, std::io::Result<super::atomic::Written>)> = writes
            .into_par_iter()
            .map(|t| {
                let w = t.staged.and_then(|s| out.place(s));
                let tile = Placed {
                    path: t.path,
                    x: t.x,
                    y: t.y,
                    content_hash: t.content_hash,
                };
                (tile, w)
            })
            .collect();
        let mut written: HashSet<String> = HashSet::new();
        let mut tiles = Vec::with_capacity(placed.len());
        let mut failed_write = None;
        for (t, w) in placed {
            match w {
                Ok(w) => {
                    result.built += 1;
                    tiles.push(TileRecord {
                        x: t.x,
                        y: t.y,
                        file: WrittenFile {
                            ino: w.ino,
                            size: w.size,
                            mtime_ns: w.mtime_ns,
                            content_hash: t.content_hash,
                        },
                    });
                    written.insert(t.path);
                }
                Err(e) => {
                    failed_write.get_or_insert(format!("cannot write {}: {e}", t.path));
                }
            }
        }
        // Tiles this unit wrote before but not now (e.g. a stricter test):
        // removed only when every tile of the unit was written.
        let mut removed_tiles = Vec::new();
        if failed_write.is_none() {
            for (path, x, y) in &a.previous {
                if written.contains(path) {
                    continue;
                }
                match out.remove(path) {
                    Ok(()) => {
                        result.removed += 1;
                        removed_tiles.push((*x, *y));
                    }
                    Err(e) => {
                        failed_write.get_or_insert(format!("cannot remove {path}: {e}"));
                    }
                }
            }
        }
        let complete = failed_write.is_none();
        result.events.push(Event::Unit(Box::new(UnitRecord {
            input: input.id,
            sink: sink_id.to_string(),
            cell: u.cell,
            dir: u.dir.clone(),
            size: u.size,
            pipeline_hash: a.pipeline_hash().to_string(),
            read: ReadFacts {
                source_hash: input.hash.clone(),
                read_size: u.read_size,
                mpp: u.mpp,
                mpp_origin: u.mpp_origin.to_string(),
                reader: reader_used.to_string(),
            },
            maker: cx.maker(),
            kept,
            complete,
            tiles,
            removed_tiles,
            built_at: now(),
            build: cx.build,
        })));
        if let Some(error) = failed_write {
            // What was written is recorded, in a unit marked incomplete: it
            // is built again next time.
            let mut f = fail(error);
            f.events.splice(0..0, std::mem::take(&mut result.events));
            f.built = result.built;
            f.removed = result.removed;
            f.dirty_dirs.push(u.dir.clone());
            return f;
        }
    }
    result.events.push(Event::Succeeded {
        input: input.id,
        unit: actions[0].unit.cell_id(),
    });
    result
}

/// A tile whose file was put in place (or failed to be).
struct Placed {
    path: String,
    x: u32,
    y: u32,
    content_hash: String,
}

/// One tile on its way to disk.
struct TileWrite {
    path: String,
    x: u32,
    y: u32,
    content_hash: String,
    staged: std::io::Result<super::atomic::Staged>,
}

/// Reads the QC thumbnail of a slide ahead of the QC phase, while there is
/// room for it ([`PREFETCHED_THUMBNAILS`]). A failure here is not reported:
/// the QC phase reads again and reports it.
pub(super) fn prefetch_thumbnail(q: &QcAction, slides: &SlideCache) -> JobResult {
    if !slides.thumbnail_room() {
        return JobResult::default();
    }
    if let Ok(slide) = slides.get(&q.input.abs) {
        if let Ok(t) = slide.thumbnail(QC_EDGE) {
            slides.keep_thumbnail(&q.input.abs, t);
        }
    }
    JobResult::default()
}

/// Draws one slide's QC picture.
pub(super) fn draw_qc(
    q: &QcAction,
    decisions: Option<&Decisions>,
    out: &OutputDir,
    slides: &SlideCache,
    cx: &JobContext<'_>,
) -> JobResult {
    let (input, p) = (&q.input, &q.qc);
    let fail = |error: String| {
        failed_job(
            input.id,
            "qc",
            &input.hash,
            format!("{} (QC picture)", input.abs.display()),
            error,
            1,
        )
    };
    let thumbnail = match slides.take_thumbnail(&input.abs) {
        Some(t) => t,
        None => match slides.get(&input.abs).and_then(|s| s.thumbnail(QC_EDGE)) {
            Ok(t) => Arc::new(t),
            Err(e) => return fail(e),
        },
    };
    let (thumb, scale) = (&thumbnail.0, thumbnail.1);
    let state = |i: u32, j: u32| match decisions.and_then(|d| d.get(&(i, j))) {
        Some(true) => CellState::Kept,
        Some(false) => CellState::Rejected,
        None => CellState::Unknown,
    };
    let png = match qc::draw(thumb, scale, &p.geometry, state) {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    match out
        .write(&p.path(), &png)
        .and_then(|w| out.sync_dirs([p.dir.as_str()]).map(|()| w))
    {
        Ok(w) => JobResult {
            built: 1,
            events: vec![
                Event::Output(Box::new(OutputRecord {
                    input: input.id,
                    dir: p.dir.clone(),
                    name: p.name.clone(),
                    sink: "qc".into(),
                    pipeline_hash: q.pipeline_hash().to_string(),
                    source_hash: input.hash.clone(),
                    class: None,
                    maker: cx.maker(),
                    read: Some(ReadFacts {
                        source_hash: input.hash.clone(),
                        read_size: p.read_size,
                        mpp: p.mpp,
                        mpp_origin: p.mpp_origin.to_string(),
                        reader: "openslide".into(),
                    }),
                    file: WrittenFile {
                        ino: w.ino,
                        size: w.size,
                        mtime_ns: w.mtime_ns,
                        content_hash: crate::plan::sources::hash_bytes(&png),
                    },
                    built_at: now(),
                    build: cx.build,
                })),
                Event::Succeeded {
                    input: input.id,
                    unit: "qc".into(),
                },
            ],
            ..JobResult::default()
        },
        Err(e) => {
            let mut f = fail(format!("cannot write {}: {e}", p.path()));
            f.dirty_dirs.push(p.dir.clone());
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetched_thumbnails_are_bounded_and_handed_over_once() {
        let cache = SlideCache::new(2);
        let thumb = || (crate::ops::RgbImage::new(4, 4), 2.0);
        for i in 0..PREFETCHED_THUMBNAILS + 5 {
            cache.keep_thumbnail(Path::new(&format!("s{i}.svs")), thumb());
        }
        assert!(!cache.thumbnail_room());
        assert_eq!(
            cache.thumbnails.lock().unwrap().len(),
            PREFETCHED_THUMBNAILS
        );
        // Beyond the bound nothing was kept; what was kept is taken once.
        let late = format!("s{}.svs", PREFETCHED_THUMBNAILS + 1);
        assert!(cache.take_thumbnail(Path::new(&late)).is_none());
        assert!(cache.take_thumbnail(Path::new("s0.svs")).is_some());
        assert!(cache.take_thumbnail(Path::new("s0.svs")).is_none());
        assert!(cache.thumbnail_room());
    }
}
