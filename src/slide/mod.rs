//! Reading whole-slide images: metadata for planning, regions for the engine.
//!
//! This layer is the only code that opens slides. It sits beside `plan` and
//! `engine` (both use it) and below them; `ops` never sees a file, only the
//! pixels read here. Reading goes through OpenSlide (openslide-rs over the
//! system's libopenslide 3.4.1): `read_region` takes level-0 coordinates and
//! returns premultiplied BGRA, which is un-premultiplied here exactly as
//! openslide-python does (`255 * c / a`, transparent pixels black), so pixels
//! equal those of the Python reference implementation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

mod bands;
pub mod direct;
pub mod tiff;

pub use crate::ops::wsi::ReaderChoice;
use crate::ops::RgbImage;

/// Properties kept from a slide (the ones the MPP policy and provenance use).
const KEPT_PROPERTIES: [&str; 10] = [
    "openslide.vendor",
    "openslide.mpp-x",
    "openslide.mpp-y",
    "openslide.objective-power",
    "tiff.XResolution",
    "tiff.YResolution",
    "tiff.ResolutionUnit",
    "aperio.AppMag",
    "aperio.MPP",
    "openslide.background-color",
];

/// One pyramid level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub width: u64,
    pub height: u64,
    pub downsample: f64,
}

/// What planning needs to know of a slide; cached in the state by content hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlideMeta {
    pub width: u64,
    pub height: u64,
    pub levels: Vec<Level>,
    pub properties: BTreeMap<String, String>,
}

impl Eq for SlideMeta {}

impl std::hash::Hash for SlideMeta {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.width.hash(state);
        self.height.hash(state);
        self.properties.hash(state);
        for l in &self.levels {
            l.width.hash(state);
            l.height.hash(state);
            l.downsample.to_bits().hash(state);
        }
    }
}

static OPENED: AtomicU64 = AtomicU64::new(0);
static REGIONS: AtomicU64 = AtomicU64::new(0);
static LEVEL0_PIXELS: AtomicU64 = AtomicU64::new(0);

/// Slides opened and regions read by this process (debug counters: the tests
/// use them to prove an unchanged slide is not opened or read again).
pub fn counters() -> (u64, u64) {
    (
        OPENED.load(Ordering::Relaxed),
        REGIONS.load(Ordering::Relaxed),
    )
}

/// Level-0 pixels of the regions read by this process (a debug counter: a
/// cell that a tissue mask rejects is not read).
pub fn level0_pixels_read() -> u64 {
    LEVEL0_PIXELS.load(Ordering::Relaxed)
}

/// Counts one region read.
fn count_read(r: &Region) {
    REGIONS.fetch_add(1, Ordering::Relaxed);
    if r.level == 0 {
        LEVEL0_PIXELS.fetch_add(r.pixels(), Ordering::Relaxed);
    }
}

/// An open slide; `Send + Sync`, so one handle serves every worker.
pub struct Slide {
    osr: openslide_rs::OpenSlide,
    /// The direct tile reader, when the file is a TIFF it handles.
    direct: Option<direct::DirectSlide>,
    /// Why the direct reader does not serve this slide, if it does not.
    direct_problem: Option<String>,
    /// The slide's metadata.
    pub meta: SlideMeta,
}

/// Which reader reads a region (the recipe chooses with
/// [`ReaderChoice`]; [`Slide::effective_reader`] says which one serves a
/// read). Recorded with each unit by its [`Reader::as_str`] name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reader {
    /// The direct tile reader ([`direct`]).
    Direct,
    /// OpenSlide.
    OpenSlide,
}

impl Reader {
    /// The name recorded in the state and shown by `why`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reader::Direct => "direct",
            Reader::OpenSlide => "openslide",
        }
    }
}

/// A region of a slide: `w`×`h` pixels of `level` whose top-left corner is
/// `(x, y)` in level-0 coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    pub x: u64,
    pub y: u64,
    pub level: usize,
    pub w: u32,
    pub h: u32,
}

impl Region {
    /// Its pixels.
    pub fn pixels(&self) -> u64 {
        u64::from(self.w) * u64::from(self.h)
    }
}

impl std::fmt::Debug for Slide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slide").field("meta", &self.meta).finish()
    }
}

/// Largest region read in one call, in pixels: bounds memory per worker.
pub const MAX_REGION_PIXELS: u64 = 1 << 28;

/// Pixels per OpenSlide call within one region (4 MiB of BGRA).
pub const STRIP_PIXELS: u64 = 1 << 20;

/// A slide's thumbnail ([`Slide::thumbnail`]).
#[derive(Clone, Debug)]
pub struct Thumbnail {
    pub image: RgbImage,
    /// Level-0 pixels per thumbnail pixel.
    pub scale: f64,
    /// The reader that read it (recorded with the QC picture drawn on it).
    pub reader: Reader,
}

impl Thumbnail {
    /// Whether at least 99 % of the thumbnail's pixels over the level-0
    /// square of side `size` at `(x, y)` are bright in every channel (≥ 220):
    /// most likely glass. A guess for scheduling, never a tissue decision.
    pub fn looks_like_glass(&self, x: u64, y: u64, size: u32) -> bool {
        let (w, h) = self.image.dimensions();
        let at = |v: u64, limit: u32, round: fn(f64) -> f64| {
            (round(v as f64 / self.scale) as u64).min(u64::from(limit)) as u32
        };
        let (x0, y0) = (at(x, w, f64::floor), at(y, h, f64::floor));
        let size = u64::from(size);
        let (x1, y1) = (at(x + size, w, f64::ceil), at(y + size, h, f64::ceil));
        let (mut bright, mut all) = (0u64, 0u64);
        for py in y0..y1 {
            for px in x0..x1 {
                all += 1;
                bright += u64::from(self.image.get_pixel(px, py).0.iter().all(|&v| v >= 220));
            }
        }
        all > 0 && bright * 100 >= all * 99
    }
}

impl Slide {
    /// The slide's metadata only, for planning: the direct reader's tile
    /// directories are not parsed.
    pub fn probe(path: &Path) -> Result<SlideMeta, String> {
        Slide::open_openslide(path).map(|(_, meta)| meta)
    }

    /// Opens `path` for reading regions; the error says why in words.
    pub fn open(path: &Path) -> Result<Slide, String> {
        let (osr, meta) = Slide::open_openslide(path)?;
        let (direct, direct_problem) = direct_reader(path, &meta, openslide_version());
        Ok(Slide {
            osr,
            direct,
            direct_problem,
            meta,
        })
    }

    fn open_openslide(path: &Path) -> Result<(openslide_rs::OpenSlide, SlideMeta), String> {
        if !path.is_file() {
            return Err("not a file".into());
        }
        OPENED.fetch_add(1, Ordering::Relaxed);
        let osr = openslide_rs::OpenSlide::new(path).map_err(|e| {
            format!("OpenSlide cannot open it (unsupported format, or a truncated or corrupt file): {e}")
        })?;
        let dims = osr.all_level_dimensions().to_vec();
        let downs = osr.all_level_downsamples().to_vec();
        let Some(first) = dims.first() else {
            return Err("the slide has no levels".into());
        };
        let levels = dims
            .iter()
            .zip(downs.iter().chain(std::iter::repeat(&1.0)))
            .map(|(d, &ds)| Level {
                width: u64::from(d.w),
                height: u64::from(d.h),
                downsample: ds,
            })
            .collect();
        let mut properties = BTreeMap::new();
        for k in KEPT_PROPERTIES {
            if let Ok(v) = osr.property_value(k) {
                properties.insert(k.to_string(), v);
            }
        }
        let meta = SlideMeta {
            width: u64::from(first.w),
            height: u64::from(first.h),
            levels,
            properties,
        };
        Ok((osr, meta))
    }

    /// The reader that `choice` resolves to for a read at `level`: direct
    /// reads are bit-exact with OpenSlide at level 0 only, so other levels
    /// always go through OpenSlide.
    pub fn effective_reader(&self, choice: ReaderChoice, level: usize) -> Reader {
        if choice == ReaderChoice::Auto && level == 0 && self.direct.is_some() {
            Reader::Direct
        } else {
            Reader::OpenSlide
        }
    }

    /// Why the direct reader is not used for this slide (for provenance and
    /// `--explain`), if it is not.
    pub fn direct_problem(&self) -> Option<&str> {
        self.direct_problem.as_deref()
    }

    /// Reads a region with the chosen reader (see [`Slide::effective_reader`]),
    /// reusing `buffer`'s allocation (its contents are overwritten).
    pub fn read_with(
        &self,
        choice: ReaderChoice,
        region: Region,
        buffer: Vec<u8>,
    ) -> Result<RgbImage, String> {
        match (&self.direct, self.effective_reader(choice, region.level)) {
            (Some(d), Reader::Direct) => {
                count_read(&region);
                d.read_rgb_into(region, buffer)
            }
            _ => self.read_openslide_into(region, buffer),
        }
    }

    /// Reads a region through OpenSlide, whatever the slide, as RGB.
    /// Level-0 regions are read in strips of at most [`STRIP_PIXELS`], so
    /// OpenSlide's 4-byte-per-pixel buffer never holds a whole 7530² region.
    pub fn read_openslide(&self, region: Region) -> Result<RgbImage, String> {
        self.read_openslide_into(region, Vec::new())
    }

    /// [`Slide::read_openslide`] into `buffer`'s allocation.
    fn read_openslide_into(&self, region: Region, buffer: Vec<u8>) -> Result<RgbImage, String> {
        let Region { x, y, level, w, h } = region;
        if region.pixels() > MAX_REGION_PIXELS {
            return Err(format!("refusing to read a {w}x{h} region in one piece"));
        }
        count_read(&region);
        // Strips only at level 0, where a row is exactly one level-0 row; a
        // coarser level's non-integer downsample would shift strip origins.
        let rows = if level == 0 {
            (STRIP_PIXELS / u64::from(w.max(1))).clamp(1, u64::from(h.max(1))) as u32
        } else {
            h.max(1)
        };
        let mut out = buffer;
        out.clear();
        out.reserve(w as usize * h as usize * 3);
        let mut done = 0u32;
        while done < h {
            let n = rows.min(h - done);
            let y0 = y + u64::from(done);
            let strip = openslide_rs::Region {
                size: openslide_rs::Size { w, h: n },
                level: level as u32,
                address: openslide_rs::Address {
                    x: u32::try_from(x)
                        .map_err(|_| format!("x = {x} is beyond what OpenSlide 3.4 addresses"))?,
                    y: u32::try_from(y0)
                        .map_err(|_| format!("y = {y0} is beyond what OpenSlide 3.4 addresses"))?,
                },
            };
            let bgra = self
                .osr
                .read_region(&strip)
                .map_err(|e| format!("reading region ({x}, {y0}) {w}x{n} at level {level}: {e}"))?;
            if level == 0 && self.level0_is_whole() {
                self.check_opaque(&bgra, x, y0, w)?;
            }
            unpremultiply_into(&bgra, &mut out);
            done += n;
        }
        RgbImage::from_raw(w, h, out).ok_or_else(|| "region buffer has the wrong size".to_string())
    }

    /// Whether level 0 is one image covering the whole slide (Aperio SVS,
    /// generic tiled TIFF): there, a transparent pixel inside the slide is a
    /// tile OpenSlide could not read — a TileByteCount of 0, a level whose
    /// tile geometry is corrupt — which it paints transparent and the
    /// reference's RGB conversion turns black. Formats with legitimately
    /// unscanned areas (MIRAX, Leica, Philips, …) are not checked.
    fn level0_is_whole(&self) -> bool {
        matches!(
            self.meta
                .properties
                .get("openslide.vendor")
                .map(String::as_str),
            Some("aperio" | "generic-tiff")
        )
    }

    /// An error when a level-0 strip read at `(x, y)`, `w` wide, has
    /// transparent pixels inside the slide: black pixels passed off as
    /// tissue or glass would be silent corruption, so the cell fails.
    fn check_opaque(&self, bgra: &[u8], x: u64, y: u64, w: u32) -> Result<(), String> {
        let cols = self.meta.width.saturating_sub(x).min(u64::from(w)) as usize;
        let rows = (bgra.len() / 4 / (w.max(1) as usize)) as u64;
        let rows = self.meta.height.saturating_sub(y).min(rows) as usize;
        let row_bytes = w as usize * 4;
        let missing = bgra
            .chunks_exact(row_bytes.max(4))
            .take(rows)
            .flat_map(|row| row[..cols * 4].chunks_exact(4))
            .filter(|px| px[3] == 0)
            .count();
        if missing == 0 {
            return Ok(());
        }
        Err(format!(
            "{missing} pixel(s) of level 0 inside the slide, in the strip at ({x}, {y}), could not be read: \
             OpenSlide paints a missing or unreadable tile (TileByteCount 0, corrupt tile geometry) \
             transparent, which would become black; this region is not built"
        ))
    }

    /// The whole slide at about `max_edge` pixels on its longer side, and the
    /// number of level-0 pixels per thumbnail pixel: the coarsest level that
    /// is at least that large, resized. The level is read by the direct
    /// reader when `choice` (the recipe's `reader`) allows it and that read
    /// is exact (its tiles decoded on every worker: a 40× slide's 2192×2228
    /// level took OpenSlide ~150 ms on one thread while the other cores
    /// waited), else by OpenSlide.
    pub fn thumbnail(&self, max_edge: u32, choice: ReaderChoice) -> Result<Thumbnail, String> {
        let (w0, h0) = (self.meta.width, self.meta.height);
        let level = self.thumbnail_level(max_edge);
        let l = &self.meta.levels[level];
        let (lw, lh) = (l.width as u32, l.height as u32);
        if u64::from(lw) * u64::from(lh) > 4 * MAX_REGION_PIXELS {
            return Err(format!(
                "no pyramid level small enough for a thumbnail (coarsest readable level is {lw}x{lh})"
            ));
        }
        // In one piece: a level beyond MAX_REGION_PIXELS (a slide without a
        // pyramid) goes to OpenSlide's strips.
        let one_piece = u64::from(lw) * u64::from(lh) <= MAX_REGION_PIXELS;
        let (full, reader) = match &self.direct {
            Some(d)
                if choice == ReaderChoice::Auto
                    && one_piece
                    && d.reads_whole_level_exactly(level) =>
            {
                let whole = Region {
                    x: 0,
                    y: 0,
                    level,
                    w: lw,
                    h: lh,
                };
                count_read(&whole);
                (d.read_rgb(whole)?, Reader::Direct)
            }
            _ => (self.level_by_openslide(level, lw, lh)?, Reader::OpenSlide),
        };
        let scale = w0.max(h0) as f64 / f64::from(max_edge);
        let (tw, th) = (
            ((w0 as f64 / scale).round() as u32).max(1),
            ((h0 as f64 / scale).round() as u32).max(1),
        );
        let thumb = if (tw, th) == (lw, lh) {
            full
        } else {
            crate::ops::resize::resize(
                &full,
                &crate::ops::ResizeParams {
                    width: tw,
                    height: th,
                    filter: crate::ops::Filter::Box,
                },
            )
            .map_err(|e| e.to_string())?
        };
        Ok(Thumbnail {
            image: thumb,
            scale: w0 as f64 / f64::from(tw),
            reader,
        })
    }

    /// The coarsest level with at least `max_edge` pixels on the slide's
    /// longer side (level 0 if none is).
    fn thumbnail_level(&self, max_edge: u32) -> usize {
        let (w0, h0) = (self.meta.width, self.meta.height);
        let want = f64::from(max_edge) / (w0.max(h0) as f64);
        let target_ds = (1.0 / want).max(1.0);
        self.meta
            .levels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.downsample <= target_ds + 1e-9)
            .max_by(|a, b| a.1.downsample.total_cmp(&b.1.downsample))
            .map_or(0, |(i, _)| i)
    }

    /// All of `level` (`lw`×`lh`) through OpenSlide, in strips of at most
    /// [`MAX_REGION_PIXELS`].
    fn level_by_openslide(&self, level: usize, lw: u32, lh: u32) -> Result<RgbImage, String> {
        let ds = self.meta.levels[level].downsample;
        let mut full = RgbImage::new(lw, lh);
        let strip = (MAX_REGION_PIXELS / u64::from(lw.max(1))).clamp(1, u64::from(lh)) as u32;
        let mut y = 0u32;
        while y < lh {
            let hh = strip.min(lh - y);
            let part = self.read_openslide(Region {
                x: 0,
                y: (f64::from(y) * ds) as u64,
                level,
                w: lw,
                h: hh,
            })?;
            image::imageops::replace(&mut full, &part, 0, i64::from(y));
            y += hh;
        }
        Ok(full)
    }
}

/// Premultiplied native-endian ARGB (B, G, R, A bytes) to straight RGB, as
/// openslide-python converts it: `c * 255 / a` (integer), alpha 0 → black;
/// appended to `out`.
fn unpremultiply_into(bgra: &[u8], out: &mut Vec<u8>) {
    out.reserve(bgra.len() / 4 * 3);
    for px in bgra.chunks_exact(4) {
        let (b, g, r, a) = (px[0], px[1], px[2], px[3]);
        match a {
            255 => out.extend_from_slice(&[r, g, b]),
            0 => out.extend_from_slice(&[0, 0, 0]),
            a => {
                let f = |c: u8| ((u32::from(c) * 255) / u32::from(a)).min(255) as u8;
                out.extend_from_slice(&[f(r), f(g), f(b)]);
            }
        }
    }
}

/// The slide's name in output names: its file name up to the first dot.
pub fn slide_name(rel: &str) -> &str {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.split('.').next().unwrap_or(file)
}

/// The OpenSlide release whose pixels the direct reader reproduces bit for
/// bit (its module documentation says how).
pub const DIRECT_READER_OPENSLIDE: &str = "3.4.1";

/// The version of the libopenslide this process runs with (its
/// `openslide_get_version`), or "unknown".
pub fn openslide_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        openslide_rs::OpenSlide::version().unwrap_or_else(|_| "unknown".to_string())
    })
}

/// The direct reader for the slide at `path`, or why it is not used: beside
/// an OpenSlide other than [`DIRECT_READER_OPENSLIDE`] (`openslide` is the
/// one running), or when it does not agree with OpenSlide on the levels,
/// every region is read through OpenSlide (and recorded as read by it).
fn direct_reader(
    path: &Path,
    meta: &SlideMeta,
    openslide: &str,
) -> (Option<direct::DirectSlide>, Option<String>) {
    if openslide != DIRECT_READER_OPENSLIDE {
        return (
            None,
            Some(format!(
                "OpenSlide {openslide} runs here, and the direct reader reproduces OpenSlide {DIRECT_READER_OPENSLIDE}'s pixels only"
            )),
        );
    }
    // The direct reader must agree with OpenSlide on the levels, or it is
    // not used at all.
    match direct::DirectSlide::open(path) {
        Ok(Some(d)) => {
            let same = d.levels().len() == meta.levels.len()
                && d.levels()
                    .iter()
                    .zip(&meta.levels)
                    .all(|(&(w, h), l)| w == l.width && h == l.height);
            if same {
                (Some(d), None)
            } else {
                (None, Some("its levels differ from OpenSlide's".to_string()))
            }
        }
        Ok(None) => (None, Some("not a tiled JPEG TIFF it handles".to_string())),
        Err(e) => (None, Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a generated 20× slide of real tissue, its QC-size thumbnail
    /// marks the glass cells as glass and no tissue or mixed cell.
    #[test]
    fn a_thumbnail_tells_glass_cells_from_tissue() {
        use crate::fixture::{
            cached_fixture, fixture_cache_dir, load_tissue, CellKind, Mosaic, SlideSpec,
            TISSUE_SLIDE,
        };
        let Some(td) = crate::need::testdata() else {
            return;
        };
        let spec = SlideSpec::aperio_20x(5, 4, 11);
        let path = cached_fixture(&spec, &fixture_cache_dir()).unwrap();
        let tissue = load_tissue(&td.join(TISSUE_SLIDE)).unwrap();
        let mosaic = Mosaic::new(&spec, &tissue).unwrap();
        let t = Slide::open(&path)
            .unwrap()
            .thumbnail(1024, ReaderChoice::Auto)
            .unwrap();
        let mut seen = [0; 2];
        for j in 1..=2u32 {
            for i in 1..=3u32 {
                let glass = t.looks_like_glass(u64::from(i) * 3840, u64::from(j) * 3840, 3840);
                match mosaic.cell_kind(i, j) {
                    CellKind::Blank => {
                        assert!(glass, "glass cell ({i},{j})");
                        seen[0] += 1;
                    }
                    CellKind::Tissue | CellKind::Mixed => {
                        assert!(!glass, "tissue cell ({i},{j})");
                        seen[1] += 1;
                    }
                }
            }
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }

    /// QC thumbnails read with the direct reader where that read is exact are
    /// OpenSlide's, byte for byte: the shared slides and generated 20× and 40×
    /// fixtures, whose thumbnail levels are coarser levels read directly.
    #[test]
    fn thumbnails_read_directly_are_openslides() {
        use crate::fixture::{cached_fixture, fixture_cache_dir, SlideSpec};
        let Some(td) = testdata() else { return };
        let mut paths = vec![
            td.join("CMU-1-Small-Region.svs"),
            td.join("CMU-1-Small-Region-pyramid3.DERIVED.svs"),
            td.join("openslide-python_small.svs"),
            td.join("tcga-cr-7395-01a-01-ts1.svs"),
        ];
        for spec in [
            SlideSpec::aperio_20x(3, 3, 5),
            SlideSpec::aperio_40x(5, 3, 12),
        ] {
            paths.push(cached_fixture(&spec, &fixture_cache_dir()).unwrap());
        }
        let mut coarser_direct = 0;
        for p in &paths {
            let slide = Slide::open(p).unwrap();
            let level = slide.thumbnail_level(1024);
            let direct =
                (slide.direct.as_ref()).is_some_and(|d| d.reads_whole_level_exactly(level));
            coarser_direct += usize::from(direct && level > 0);
            let a = slide.thumbnail(1024, ReaderChoice::Auto).unwrap();
            let b = slide.thumbnail(1024, ReaderChoice::OpenSlide).unwrap();
            // Each says which reader read it (the QC picture records it).
            let auto_reader = if direct {
                Reader::Direct
            } else {
                Reader::OpenSlide
            };
            assert_eq!((a.reader, b.reader), (auto_reader, Reader::OpenSlide));
            let (a, sa, b, sb) = (a.image, a.scale, b.image, b.scale);
            assert_eq!(sa, sb, "{}", p.display());
            assert_eq!(a.dimensions(), b.dimensions(), "{}", p.display());
            assert!(
                a.as_raw() == b.as_raw(),
                "{}: level {level}, direct {direct}",
                p.display()
            );
        }
        assert!(
            coarser_direct >= 2,
            "only {coarser_direct} thumbnail(s) read a coarser level directly"
        );
    }

    /// The shared slides, or `None` after [`crate::need::missing`].
    fn testdata() -> Option<std::path::PathBuf> {
        crate::need::testdata().map(|d| d.join("wsi"))
    }

    #[test]
    fn unpremultiply_matches_openslide_python() {
        let px = [10u8, 20, 30, 255, 0, 0, 0, 0, 50, 60, 64, 128];
        let mut rgb = Vec::new();
        unpremultiply_into(&px, &mut rgb);
        assert_eq!(rgb, [30, 20, 10, 0, 0, 0, 127, 119, 99]);
    }

    #[test]
    fn slide_names_stop_at_the_first_dot() {
        assert_eq!(
            slide_name("a/b/CMU-1-Small-Region.svs"),
            "CMU-1-Small-Region"
        );
        assert_eq!(slide_name("x.DERIVED.svs"), "x");
    }

    #[test]
    fn real_slides_open_with_their_metadata() {
        let Some(td) = testdata() else { return };
        let s = Slide::open(&td.join("CMU-1-Small-Region.svs")).unwrap();
        assert_eq!((s.meta.width, s.meta.height), (2220, 2967));
        assert_eq!(s.meta.properties["openslide.mpp-x"], "0.499");
        let region = Region {
            x: 100,
            y: 100,
            level: 0,
            w: 64,
            h: 48,
        };
        let img = s.read_openslide(region).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
        let crate::slide::Thumbnail {
            image: thumb,
            scale,
            ..
        } = s.thumbnail(256, ReaderChoice::Auto).unwrap();
        assert_eq!(thumb.height(), 256);
        assert!((scale - 2967.0 / 256.0).abs() < 0.1, "{scale}");
        let e = Slide::open(&td.join("../roi/skimage_ihc.png")).unwrap_err();
        assert!(e.contains("OpenSlide cannot open it"), "{e}");
    }

    #[test]
    fn the_direct_reader_is_used_only_beside_the_openslide_it_reproduces() {
        let Some(td) = testdata() else {
            return;
        };
        let path = td.join("CMU-1-Small-Region.svs");
        let meta = Slide::probe(&path).unwrap();
        let (direct, why) = direct_reader(&path, &meta, DIRECT_READER_OPENSLIDE);
        assert!(direct.is_some(), "{why:?}");
        let (direct, why) = direct_reader(&path, &meta, "4.0.0");
        assert!(direct.is_none());
        let why = why.unwrap();
        assert!(
            why.contains("OpenSlide 4.0.0") && why.contains("3.4.1"),
            "{why}"
        );
        // This process runs beside the OpenSlide the reader reproduces (CI's
        // Debian 12); anything else must be seen, not silently read around.
        assert_eq!(openslide_version(), DIRECT_READER_OPENSLIDE);
    }
}
