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
use crate::plan::query::grid_params;
use crate::plan::{QcAction, UnitAction};
use crate::slide::{Reader, Slide};
use crate::store::state::{now, Event};
use crate::store::{OutputRecord, UnitRecord};

use super::atomic::OutputDir;
use super::{evaluate, failed_job, JobResult, Outcome, TOOL_VERSION};

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
    let u = &actions[0].unit;
    failed_job(
        &u.collection,
        &u.source_root,
        &u.source_rel,
        &u.source_hash,
        format!(
            "{} (cell {},{})",
            u.source_abs.display(),
            u.cell.0,
            u.cell.1
        ),
        error,
        actions.len() as u64,
    )
}

/// Computes the units of one cell (all share the slide and the cell): reads
/// the region, runs the steps, gives the pixel buffers back to the pool, and
/// returns the writing of the encoded tiles as a commit for the I/O threads.
pub(super) fn build_cell<'a>(
    actions: &'a [&'a UnitAction],
    out: &'a OutputDir,
    slides: &SlideCache,
    mut grant: super::budget::Grant<'a>,
) -> Outcome<'a> {
    let first = actions[0];
    let u = &first.unit;
    let recipe = &first.recipe;
    let fail = |error: String| Outcome::Done(cell_failure(actions, error));
    let Some(grid) = grid_params(recipe) else {
        return fail("the recipe has no wsi_grid step".into());
    };
    let slide = match slides.get(&u.source_abs) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let tissue_step = recipe
        .steps
        .iter()
        .position(|s| matches!(s.op, Operator::Tissue(_)));
    let tissue_fraction = match tissue_step.map(|t| &recipe.steps[t].op) {
        Some(Operator::Tissue(TissueParams::Otsu(p))) => {
            match slides.mask(&u.source_abs, &slide, p) {
                Ok(m) => Some(m.fraction(
                    u64::from(u.cell.0) * u64::from(u.read_size),
                    u64::from(u.cell.1) * u64::from(u.read_size),
                    u64::from(u.read_size),
                )),
                Err(e) => return fail(format!("tissue mask: {e}")),
            }
        }
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
        commit_cell(actions, out, &encoded, kept, reader_used)
    }))
}

/// Writes a cell's encoded tiles, removes the tiles its units no longer
/// write, and records it all (on an I/O thread: the latency of making files
/// durable, not CPU, is the cost of writing).
fn commit_cell(
    actions: &[&UnitAction],
    out: &OutputDir,
    encoded: &[Option<Arc<Vec<EncodedTile>>>],
    kept: Option<bool>,
    reader_used: &str,
) -> JobResult {
    use rayon::prelude::*;
    let fail = |error: String| cell_failure(actions, error);
    let first_unit = &actions[0].unit;
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
                        let sub = format!("{}-{}", u.collection, t.size);
                        let path = format!(
                            "{}/{sub}/{}-{}-{}-{}.jpg",
                            u.scale, u.slide, t.size, t.x, t.y
                        );
                        TileWrite {
                            staged: out.stage(&path, &t.bytes),
                            content_hash: crate::plan::sources::hash_bytes(&t.bytes),
                            sub,
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
        let sink_id = &a.recipe.steps[u.sink].id;
        let Some(writes) = writes else {
            let mut f = fail(format!("step `{sink_id}` did not produce encoded tiles"));
            f.events.splice(0..0, std::mem::take(&mut result.events));
            f.built = result.built;
            return f;
        };
        let placed: Vec<(
            String,
            String,
            std::io::Result<super::atomic::Written>,
            String,
        )> = writes
            .into_par_iter()
            .map(|t| {
                let w = t.staged.and_then(|s| out.place(s));
                (t.sub, t.path, w, t.content_hash)
            })
            .collect();
        let mut written: HashSet<String> = HashSet::new();
        let mut failed_write = None;
        for (sub, path, w, content_hash) in placed {
            match w {
                Ok(w) => {
                    result.built += 1;
                    result.events.push(Event::Built(Box::new(OutputRecord {
                        path: path.clone(),
                        collection: u.collection.clone(),
                        key: u.key.clone(),
                        content_hash,
                        size: w.size,
                        mtime_ns: w.mtime_ns,
                        source_root: u.source_root.clone(),
                        source_rel: u.source_rel.clone(),
                        source_hash: u.source_hash.clone(),
                        pipeline_hash: a.pipeline_hash.clone(),
                        recipe_hash: a.recipe.hash.clone(),
                        tool_version: TOOL_VERSION.to_string(),
                        sub_dataset: sub,
                        scale: u.scale.clone(),
                        class: None,
                        built_at: now(),
                        unit: u.cell_id(),
                        sink: sink_id.clone(),
                    })));
                    written.insert(path);
                }
                Err(e) => {
                    failed_write.get_or_insert(format!("cannot write {path}: {e}"));
                }
            }
        }
        if let Some(error) = failed_write {
            // The tiles that were written are recorded; the unit is not, so
            // it is built again next time.
            let mut f = fail(error);
            f.events.splice(0..0, std::mem::take(&mut result.events));
            f.built = result.built;
            return f;
        }
        // Tiles this unit wrote before but not now (e.g. a stricter test).
        for old in &a.previous {
            if !written.contains(&old.path) {
                match out.remove(&old.path) {
                    Ok(()) => {
                        result.removed += 1;
                        result.events.push(Event::Removed(old.path.clone()));
                    }
                    Err(e) => {
                        // What this commit already wrote and removed is recorded.
                        let mut f = fail(format!("cannot remove {}: {e}", old.path));
                        f.events.splice(0..0, std::mem::take(&mut result.events));
                        f.built = result.built;
                        f.removed = result.removed;
                        return f;
                    }
                }
            }
        }
        result.events.push(Event::Unit(Box::new(UnitRecord {
            collection: u.collection.clone(),
            source_root: u.source_root.clone(),
            source_rel: u.source_rel.clone(),
            source_hash: u.source_hash.clone(),
            unit: u.cell_id(),
            sink: sink_id.clone(),
            key: u.key.clone(),
            pipeline_hash: a.pipeline_hash.clone(),
            outputs: written.len() as u64,
            kept,
            mpp: u.mpp,
            mpp_origin: u.mpp_origin.to_string(),
            reader: reader_used.to_string(),
            recipe_hash: a.recipe.hash.clone(),
            tool_version: TOOL_VERSION.to_string(),
            built_at: now(),
        })));
    }
    result.events.push(Event::Succeeded {
        collection: first_unit.collection.clone(),
        source_rel: first_unit.source_rel.clone(),
    });
    result
}

/// One tile on its way to disk.
struct TileWrite {
    sub: String,
    path: String,
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
    if let Ok(slide) = slides.get(&q.qc.source_abs) {
        if let Ok(t) = slide.thumbnail(QC_EDGE) {
            slides.keep_thumbnail(&q.qc.source_abs, t);
        }
    }
    JobResult::default()
}

/// Decisions per (collection, slide path, cell), from the unit records.
pub type Decisions = HashMap<(String, String, String), bool>;

/// Indexes the kept/rejected decision of every recorded cell.
pub fn decisions(units: &crate::store::state::UnitMap) -> Decisions {
    units
        .values()
        .filter_map(|u| {
            u.kept.map(|k| {
                (
                    (u.collection.clone(), u.source_rel.clone(), u.unit.clone()),
                    k,
                )
            })
        })
        .collect()
}

/// Draws one slide's QC picture.
pub(super) fn draw_qc(
    q: &QcAction,
    decisions: &Decisions,
    out: &OutputDir,
    slides: &SlideCache,
) -> JobResult {
    let p = &q.qc;
    let fail = |error: String| {
        failed_job(
            &p.collection,
            &p.source_root,
            &p.source_rel,
            &p.source_hash,
            format!("{} (QC picture)", p.source_abs.display()),
            error,
            1,
        )
    };
    let thumbnail = match slides.take_thumbnail(&p.source_abs) {
        Some(t) => t,
        None => match slides.get(&p.source_abs).and_then(|s| s.thumbnail(QC_EDGE)) {
            Ok(t) => Arc::new(t),
            Err(e) => return fail(e),
        },
    };
    let (thumb, scale) = (&thumbnail.0, thumbnail.1);
    let state = |i: u32, j: u32| match decisions.get(&(
        p.collection.clone(),
        p.source_rel.clone(),
        format!("{i},{j}"),
    )) {
        Some(true) => CellState::Kept,
        Some(false) => CellState::Rejected,
        None => CellState::Unknown,
    };
    let png = match qc::draw(thumb, scale, &p.geometry, state) {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    match out.write(&p.path, &png) {
        Ok(w) => JobResult {
            built: 1,
            events: vec![Event::Built(Box::new(OutputRecord {
                path: p.path.clone(),
                collection: p.collection.clone(),
                key: p.key.clone(),
                content_hash: crate::plan::sources::hash_bytes(&png),
                size: w.size,
                mtime_ns: w.mtime_ns,
                source_root: p.source_root.clone(),
                source_rel: p.source_rel.clone(),
                source_hash: p.source_hash.clone(),
                pipeline_hash: q.pipeline_hash.clone(),
                recipe_hash: q.recipe.hash.clone(),
                tool_version: TOOL_VERSION.to_string(),
                sub_dataset: p.collection.clone(),
                scale: "qc".into(),
                class: None,
                built_at: now(),
                unit: "qc".into(),
                sink: "qc".into(),
            }))],
            ..JobResult::default()
        },
        Err(e) => fail(format!("cannot write {}: {e}", p.path)),
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
