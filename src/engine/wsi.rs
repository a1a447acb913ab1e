//! Executing WSI units: read one grid cell, run the recipe's tile steps on it,
//! write the tiles, forget the ones the unit no longer writes; then draw each
//! slide's QC picture from the recorded decisions.
//!
//! Memory is bounded per cell in flight: its region (`read_size`² RGB, plus
//! OpenSlide's BGRA strip while reading; a region resized with the direct
//! reader is read band by band and never exists whole: `Slide::read_resized`),
//! the standardized image and its encoded tiles; pixel buffers come from
//! and go back to `ops::pool`. Cells of
//! [`LARGE_CELL_BYTES`] or more are built one at a time (see `engine::run`),
//! others one per worker. Open slides are shared between workers (an
//! OpenSlide handle is `Send + Sync`) and kept in a small LRU, so neither
//! slide size nor slide count grows the footprint.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::ops::wsi::otsu::{self, TissueMask};
use crate::ops::wsi::qc::{self, CellState};
use crate::ops::wsi::{EncodedTiles, GridParams, LevelPolicy, ReaderChoice, Region, TissueParams};
use crate::ops::{JpegParams, Operator, ResizeParams, Value};
use crate::plan::expand::grid_params;
use crate::plan::{QcAction, UnitAction};
use crate::recipe::Recipe;
use crate::slide::{self, Reader, Slide};
use crate::store::state::now;
use crate::store::{Event, OutputRecord, ReadFacts, WrittenFile};

use super::atomic::OutputDir;
use super::record::Decisions;
use super::tiles::{cell_failure, CellTiles, Encoded};
use super::{evaluate, failed_job, JobContext, JobResult, Outcome};

/// Longest edge of QC pictures, in pixels.
pub const QC_EDGE: u32 = 1024;

/// Most QC thumbnails read ahead during the cell phase (≤ 3 MB each): the
/// rest are read in the QC phase, so memory does not grow with slide count.
pub const PREFETCHED_THUMBNAILS: usize = 32;

/// Cells whose level-0 region is at least this large (a 40× slide's 7530²
/// is 170 MB; a native 3840² cell is 44 MB) are built one at a time, every
/// worker inside. A native cell's steps are parallel enough for that: on
/// the 20× bench slide (`-j 2`, 15 builds of each interleaved) peak RSS
/// fell from 204 to 163 MiB and wall time from 0.76 to 0.73 s (less
/// fresh memory to fault in) against two cells side by side.
pub const LARGE_CELL_BYTES: u64 = 32 << 20;

/// Bytes of a cell's level-0 region as RGB.
pub fn region_bytes(action: &UnitAction) -> u64 {
    let n = u64::from(action.unit.read_size);
    n * n * 3
}

type MaskSlot = Arc<OnceLock<Result<Arc<TissueMask>, String>>>;
type SlideSlot = Arc<OnceLock<Result<Arc<Slide>, String>>>;

type Thumbnail = Arc<crate::slide::Thumbnail>;

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
    fn keep_thumbnail(&self, path: &Path, thumbnail: crate::slide::Thumbnail) {
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
        reader: ReaderChoice,
    ) -> Result<Arc<TissueMask>, String> {
        let slot = match self.masks.lock() {
            Ok(mut m) => m.entry(path.to_path_buf()).or_default().clone(),
            Err(_) => return Err("mask cache poisoned".into()),
        };
        slot.get_or_init(|| {
            let crate::slide::Thumbnail {
                image: thumb,
                scale,
                ..
            } = slide.thumbnail(p.thumbnail, reader)?;
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
    u: &crate::plan::expand::PlannedUnit,
    grid: &GridParams,
) -> Result<(crate::ops::RgbImage, Reader), String> {
    let read_size = u.read_size;
    let (x0, y0) = (
        u64::from(u.cell.0) * u64::from(read_size),
        u64::from(u.cell.1) * u64::from(read_size),
    );
    // A level with downsample d has d × mpp µm/px: usable by `auto` while
    // that is no coarser than the target.
    let max_downsample = grid.target_mpp / u.mpp;
    let (lvl, n) = match grid.level {
        LevelPolicy::Finest => (0, read_size),
        LevelPolicy::Auto => {
            let (lvl, ds) = slide
                .meta
                .levels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.downsample <= max_downsample + 1e-9)
                .map(|(k, l)| (k, l.downsample))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 1.0));
            (lvl, (f64::from(read_size) / ds).round().max(1.0) as u32)
        }
    };
    let used = slide.effective_reader(grid.reader, lvl);
    let region = slide::Region {
        x: x0,
        y: y0,
        level: lvl,
        w: n,
        h: n,
    };
    let standard = ResizeParams {
        width: grid.size,
        height: grid.size,
        filter: grid.filter,
    };
    if let Some(resized) = slide.read_resized(grid.reader, region, &standard) {
        return resized.map(|img| (img, used));
    }
    let buffer = crate::ops::pool::take(n as usize * n as usize * 3);
    slide
        .read_with(grid.reader, region, buffer)
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

/// The recipe's `tissue` step: its index and, for a mask detector, the
/// detector's parameters.
fn tissue_step(recipe: &Recipe) -> Option<(usize, Option<&otsu::OtsuParams>)> {
    recipe
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| match &s.op {
            Operator::Tissue(TissueParams::Otsu(p)) => Some((i, Some(p))),
            Operator::Tissue(_) => Some((i, None)),
            _ => None,
        })
}

/// The share of the cell the slide's tissue mask marks as tissue, when the
/// recipe's tissue detector is a mask.
fn mask_fraction(
    cx: &JobContext<'_>,
    slide: &Slide,
    u: &crate::plan::expand::PlannedUnit,
    path: &Path,
    otsu: Option<&otsu::OtsuParams>,
    reader: ReaderChoice,
) -> Result<Option<f64>, String> {
    let Some(p) = otsu else {
        return Ok(None);
    };
    let mask = cx
        .slides
        .mask(path, slide, p, reader)
        .map_err(|e| format!("tissue mask: {e}"))?;
    let size = u64::from(u.read_size);
    Ok(Some(mask.fraction(
        u64::from(u.cell.0) * size,
        u64::from(u.cell.1) * size,
        size,
    )))
}

/// Whether the mask rejects the cell for every unit of the job without its
/// pixels: the detector is a mask, the cell's fraction is below its bound,
/// and every writing step takes its tiles through the tissue step (so each
/// writes nothing).
fn rejected_by_mask(
    recipe: &Recipe,
    actions: &[&UnitAction],
    tissue: Option<(usize, Option<&otsu::OtsuParams>)>,
    fraction: Option<f64>,
) -> bool {
    let (Some((step, Some(p))), Some(f)) = (tissue, fraction) else {
        return false;
    };
    f < p.min_fraction
        && actions
            .iter()
            .all(|a| recipe.ancestors(&[a.unit.sink])[step])
}

/// The JPEG settings of a writing step of the job whose tiles are the cell's
/// whole standardized tiles (no `subtiles` between it and `wsi_grid`), when
/// a child of it (a writing step behind a `subtiles`) writes at the same
/// settings: that JPEG is then shared, and the child cut from it. Without
/// such a child nothing is cut from it, and the crop index a large tile's
/// JPEG is made with (`ops::wsi::tile_jpeg`) would be work for nothing.
fn whole_tile_jpeg(recipe: &Recipe, sinks: impl Iterator<Item = usize>) -> Option<JpegParams> {
    // (settings, whether the step writes the whole tiles) of each writer.
    let writers: Vec<(&JpegParams, bool)> = sinks
        .filter_map(|sink| {
            let Operator::EncodeTiles(p) = &recipe.steps[sink].op else {
                return None;
            };
            let mut i = *recipe.steps[sink].inputs.first()?;
            loop {
                match &recipe.steps[i].op {
                    Operator::WsiGrid(_) => return Some((&p.jpeg, true)),
                    Operator::Subtiles(_) => return Some((&p.jpeg, false)),
                    _ => i = *recipe.steps[i].inputs.first()?,
                }
            }
        })
        .collect();
    let (whole, _) = writers.iter().find(|(_, is_whole)| *is_whole)?;
    writers
        .iter()
        .any(|(p, is_whole)| !is_whole && p == whole)
        .then(|| (*whole).clone())
}

/// Computes the units of one cell (all share the slide and the cell): reads
/// the region, runs the steps, gives the pixel buffers back to the pool, and
/// returns the writing of the encoded tiles as a commit for the I/O threads.
/// A cell that the slide's tissue mask rejects is not read at all.
pub(super) fn build_cell<'a>(
    actions: &'a [&'a UnitAction],
    cx: &'a JobContext<'_>,
    grant: super::budget::Grant<'a>,
) -> Outcome<'a> {
    let (first, u) = (actions[0], &actions[0].unit);
    let recipe = &first.spec.recipe;
    let fail = |error: String| Outcome::Done(cell_failure(actions, error));
    let Some(grid) = grid_params(recipe) else {
        return fail("the recipe has no wsi_grid step".into());
    };
    let slide = match cx.slides.get(&first.input.abs) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let tissue = tissue_step(recipe);
    let otsu = tissue.and_then(|t| t.1);
    let fraction = match mask_fraction(cx, &slide, u, &first.input.abs, otsu, grid.reader) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if rejected_by_mask(recipe, actions, tissue, fraction) {
        let nothing = CellTiles {
            encoded: vec![Some(Arc::new(EncodedTiles::default())); actions.len()],
            kept: Some(false),
            reader: None,
        };
        return commit(actions, cx, grant, nothing);
    }
    let (image, reader) = match read_cell(&slide, u, grid) {
        Ok(read) => read,
        Err(e) => return fail(e),
    };
    let region = Region {
        i: u.cell.0,
        j: u.cell.1,
        image: Arc::new(image),
        tissue_fraction: fraction,
        whole_jpeg: whole_tile_jpeg(recipe, actions.iter().map(|a| a.unit.sink)),
    };
    match compute(actions, region, tissue.map(|t| t.0)) {
        Ok((encoded, kept)) => commit(
            actions,
            cx,
            grant,
            CellTiles {
                encoded,
                kept,
                reader: Some(reader),
            },
        ),
        Err(e) => fail(e),
    }
}

/// Runs the recipe's steps on a cell's region: each action's encoded tiles
/// and the tissue decision; the region's pixel buffers go back to the pool.
fn compute(
    actions: &[&UnitAction],
    region: Region,
    tissue_step: Option<usize>,
) -> Result<(Encoded, Option<bool>), String> {
    let recipe = &actions[0].spec.recipe;
    let region = Arc::new(region);
    let sinks: Vec<usize> = actions.iter().map(|a| a.unit.sink).collect();
    let grid_step = recipe
        .steps
        .iter()
        .position(|s| matches!(s.op, Operator::WsiGrid(_)));
    // The tissue decision and the standardized image are read below.
    let keep: Vec<usize> = tissue_step.into_iter().chain(grid_step).collect();
    let evaluated = match evaluate::evaluate(recipe, Value::Region(region.clone()), &sinks, &keep) {
        Ok(v) => v,
        Err(e) => {
            recycle(region, None);
            return Err(e.to_string());
        }
    };
    let kept = tissue_step.and_then(|t| match evaluated.get(t) {
        Some(Value::Tiles(tiles)) => Some(!tiles.tiles.is_empty()),
        _ => None,
    });
    // Only the encoded tiles travel to the commit; the pixels go back to the
    // pool now, for the next cell.
    let encoded = actions
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
    Ok((encoded, kept))
}

/// The writing of a computed cell as a commit holding only its encoded
/// tiles' memory.
fn commit<'a>(
    actions: &'a [&'a UnitAction],
    cx: &'a JobContext<'_>,
    mut grant: super::budget::Grant<'a>,
    cell: CellTiles,
) -> Outcome<'a> {
    grant.shrink_to(
        cell.encoded
            .iter()
            .flatten()
            .flat_map(|t| t.tiles.iter())
            .map(|t| t.bytes.len() as u64)
            .sum(),
    );
    Outcome::Commit(Box::new(move || {
        let _grant = grant;
        super::tiles::commit_cell(actions, cx, &cell)
    }))
}

/// The large cells of a plan in the order they are built: each slide's
/// cells whose part of its prefetched QC thumbnail is nearly all bright
/// (glass: the tissue test will most likely reject them, so they write
/// nothing) after its other cells, the order otherwise kept. Why: a cell's
/// tiles are written on an I/O thread while the next cell computes, but the
/// last cell's writing (~25 ms for a 20× cell's ~200 tiles) had nothing to
/// overlap; a glass cell has nothing to write and a whole read and tissue
/// test to compute. Only the order changes (no output depends on it).
pub(super) fn glass_last<'a>(cells: &mut [super::Job<'a>], slides: &SlideCache) {
    fn first<'a>(job: &super::Job<'a>) -> Option<&'a UnitAction> {
        match job {
            super::Job::Cell(actions) => actions.first().copied(),
            _ => None,
        }
    }
    let Ok(thumbnails) = slides.thumbnails.lock() else {
        return;
    };
    let mut slide_order: HashMap<&Path, usize> = HashMap::new();
    for a in cells.iter().filter_map(first) {
        let n = slide_order.len();
        slide_order.entry(a.input.abs.as_path()).or_insert(n);
    }
    let key = |job: &super::Job<'_>| {
        let Some(a) = first(job) else {
            return (usize::MAX, false);
        };
        let (input, u) = (&a.input, &a.unit);
        let (rs, (i, j)) = (u.read_size, u.cell);
        let glass = thumbnails.get(&input.abs).is_some_and(|t| {
            t.looks_like_glass(
                u64::from(i) * u64::from(rs),
                u64::from(j) * u64::from(rs),
                rs,
            )
        });
        (slide_order[input.abs.as_path()], glass)
    };
    cells.sort_by_cached_key(key);
}

/// Reads the QC thumbnail of a slide ahead of the QC phase, while there is
/// room for it ([`PREFETCHED_THUMBNAILS`]). A failure here is not reported:
/// the QC phase reads again and reports it.
pub(super) fn prefetch_thumbnail(q: &QcAction, slides: &SlideCache) -> JobResult {
    if !slides.thumbnail_room() {
        return JobResult::default();
    }
    if let Ok(slide) = slides.get(&q.input.abs) {
        if let Ok(t) = slide.thumbnail(QC_EDGE, thumbnail_reader(q)) {
            slides.keep_thumbnail(&q.input.abs, t);
        }
    }
    JobResult::default()
}

/// The reader the recipe of a QC picture chose (`openslide`: OpenSlide
/// reads the thumbnail too).
fn thumbnail_reader(q: &QcAction) -> ReaderChoice {
    grid_params(&q.spec.recipe).map_or(ReaderChoice::Auto, |g| g.reader)
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
        None => {
            match (slides.get(&input.abs)).and_then(|s| s.thumbnail(QC_EDGE, thumbnail_reader(q))) {
                Ok(t) => Arc::new(t),
                Err(e) => return fail(e),
            }
        }
    };
    // The prefetched thumbnail is handed over once: drawn on, not copied.
    let crate::slide::Thumbnail {
        image: thumb,
        scale,
        reader,
    } = Arc::try_unwrap(thumbnail).unwrap_or_else(|t| (*t).clone());
    let state = |i: u32, j: u32| match decisions.and_then(|d| d.get(&(i, j))) {
        Some(true) => CellState::Kept,
        Some(false) => CellState::Rejected,
        None => CellState::Unknown,
    };
    let png = match qc::draw(thumb, scale, &p.geometry, state) {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let written = out
        .write(&p.path(), &png)
        .and_then(|w| out.sync_dirs([p.dir.as_str()]).map(|()| w));
    let content_hash = crate::plan::sources::hash_bytes(&png);
    // The picture was drawn into a pooled buffer.
    crate::ops::pool::give(png);
    match written {
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
                        reader: reader.as_str().into(),
                    }),
                    file: WrittenFile {
                        ino: w.ino,
                        size: w.size,
                        mtime_ns: w.mtime_ns,
                        content_hash,
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
    fn a_whole_tile_jpeg_is_shared_only_with_a_child_cut_from_it() {
        let file = |p: &Path| match p.to_str() {
            Some("recipes/templates/cpia-wsi.toml") => {
                Ok(crate::recipe::skeleton::CPIA_WSI_TEMPLATE.to_string())
            }
            Some("recipes/w.toml") => Ok("extends = \"templates/cpia-wsi.toml\"\n\
                 [collection]\nname = \"B\"\nkind = \"wsi\"\n[inputs]\nsource = \"S\"\n"
                .to_string()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let recipe =
            crate::recipe::load_recipe(Path::new("recipes/w.toml"), &mut |p: &Path| file(p))
                .unwrap();
        let step = |id: &str| recipe.steps.iter().position(|s| s.id == id).unwrap();
        let whole = |ids: &[&str]| whole_tile_jpeg(&recipe, ids.iter().map(|id| step(id)));
        let Operator::EncodeTiles(xl) = &recipe.steps[step("write_XL")].op else {
            panic!("write_XL is not encode_tiles");
        };
        let all = ["write_XL", "write_L", "write_M", "write_S"];
        assert_eq!(whole(&all), Some(xl.jpeg.clone()));
        assert_eq!(whole(&["write_XL", "write_S"]), Some(xl.jpeg.clone()));
        // Nothing cut from it (the XL tile alone), or no whole tile written.
        assert_eq!(whole(&["write_XL"]), None);
        assert_eq!(whole(&["write_L", "write_M"]), None);
    }

    #[test]
    fn prefetched_thumbnails_are_bounded_and_handed_over_once() {
        let cache = SlideCache::new(2);
        let thumb = || crate::slide::Thumbnail {
            image: crate::ops::RgbImage::new(4, 4),
            scale: 2.0,
            reader: Reader::Direct,
        };
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
