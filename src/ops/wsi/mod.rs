//! The whole-slide-image operator family: grid geometry, MPP policy, the
//! CPIA tissue and background tests, child tiles, QC drawings.
//!
//! The unit of work of a WSI recipe is one cell of the standardized grid: the
//! engine reads the cell's region from the slide (the only I/O, done outside
//! `ops`) and hands it to the recipe's `wsi_grid` step as a [`Region`]; the
//! rest of the DAG turns it into tiles. Every number of the standard is a
//! parameter here, so other geometries are recipes too.

pub mod geometry;
pub mod mpp;
pub mod otsu;
pub mod qc;
pub mod stat;
pub mod tile_jpeg;

use std::sync::Arc;

use super::{Filter, JpegParams, OpError, RgbImage};

pub use geometry::Geometry;
pub use tile_jpeg::{encode, EncodedTile, EncodedTiles, Encoding, WholeJpeg};

/// Which pyramid level a cell is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LevelPolicy {
    /// Level 0, as the CPIA reference does.
    Finest,
    /// The coarsest level that still has at least the target resolution.
    Auto,
}

impl LevelPolicy {
    /// Recipe spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LevelPolicy::Finest => "finest",
            LevelPolicy::Auto => "auto",
        }
    }
}

/// Parameters of `wsi_grid`: the standardized resolution and the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct GridParams {
    /// Tile edge in standardized pixels (3840 for XL).
    pub size: u32,
    /// Target µm/px (0.4942).
    pub target_mpp: f64,
    /// Relative window around the target inside which a slide is used at its
    /// native scale (0.1: `0.9 < target/mpp < 1.1`).
    pub tolerance: f64,
    /// Cells skipped at each border (1: the outer ring).
    pub skip_ring: u32,
    /// Filter of the resize to `size` when outside the tolerance.
    pub filter: Filter,
    pub level: LevelPolicy,
    /// `auto`: the direct tile reader where it applies (bit-exact with
    /// OpenSlide at level 0), else OpenSlide; `openslide`: always OpenSlide.
    pub reader: ReaderChoice,
}

/// The `reader` parameter of `wsi_grid`: which reader a read may use
/// (`slide::Slide::effective_reader` resolves it to the `slide::Reader`
/// that serves a read; `slide` uses this type, as `ops` may not use `slide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReaderChoice {
    Auto,
    OpenSlide,
}

impl ReaderChoice {
    /// Recipe spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderChoice::Auto => "auto",
            ReaderChoice::OpenSlide => "openslide",
        }
    }
}

/// Parameters of `tissue`: which XL tiles hold tissue.
#[derive(Clone, Debug, PartialEq)]
pub enum TissueParams {
    /// The CPIA colour rule on the tile's 1×1 `statistic`: keep iff every
    /// channel is below `max`, `r > min_r`, `b > min_b` and `r > g + r_minus_g`.
    Color {
        statistic: Filter,
        max: u8,
        min_r: u8,
        min_b: u8,
        r_minus_g: u8,
    },
    /// Otsu's threshold on the HSV saturation of a slide thumbnail, cleaned by
    /// a median filter and a morphological closing (as CLAM does); a tile is
    /// kept iff at least `min_fraction` of its area is tissue in that mask.
    Otsu(otsu::OtsuParams),
}

/// Parameters of `subtiles`: child tiles of each tile, with the background test.
#[derive(Clone, Debug, PartialEq)]
pub struct SubtileParams {
    /// Child edge; must divide the parent edge.
    pub size: u32,
    /// Only the `pick`-th child (1-based, row-major), if set.
    pub pick: Option<u32>,
    /// A child is background iff all channels of its statistic exceed this.
    pub white: u8,
    pub statistic: Filter,
}

/// Parameters of `encode_tiles`: the JPEG settings and the scale folder.
#[derive(Clone, Debug, PartialEq)]
pub struct TileEncodeParams {
    pub jpeg: JpegParams,
    /// Scale folder the tiles are written to (`XL`, `L`, `M`, `S`).
    pub scale: String,
}

/// The pixels of one grid cell as read from the slide (level-0 `read_size`
/// square, or its equivalent at a coarser level), before standardization.
#[derive(Clone, Debug)]
pub struct Region {
    /// Cell column and row on the standardized grid.
    pub i: u32,
    pub j: u32,
    /// Shared with the XL tile when no resize is needed (native scale).
    pub image: Arc<RgbImage>,
    /// Share of the cell that a slide-level tissue mask marks as tissue,
    /// when the recipe's tissue detector needs one (the engine computes it).
    pub tissue_fraction: Option<f64>,
    /// The JPEG settings at which this cell's job writes its whole
    /// standardized tiles, if it does and also writes children at those
    /// settings (the engine knows its writing steps): the children are then
    /// cut from that JPEG ([`tile_jpeg`]).
    pub whole_jpeg: Option<JpegParams>,
}

/// A standardized tile: column and row in units of its own size. Its
/// pixels are the `size`² square at `(ox, oy)` of `image` — the cell's
/// standardized image, shared by all its tiles, so cutting L, M and S tiles
/// copies nothing.
#[derive(Clone, Debug)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub image: Arc<RgbImage>,
    pub ox: u32,
    pub oy: u32,
}

impl Tile {
    fn statistic(&self, f: Filter) -> [u8; 3] {
        stat::statistic_of(&self.image, self.ox, self.oy, self.size, self.size, f)
    }
}

/// Tiles flowing between WSI steps, with the cell's mask fraction and the
/// shared JPEG of its whole standardized tile.
#[derive(Clone, Debug, Default)]
pub struct Tiles {
    pub tiles: Vec<Tile>,
    pub tissue_fraction: Option<f64>,
    pub whole: Option<Arc<WholeJpeg>>,
}

/// `wsi_grid`: the cell's region standardized to `size`×`size`.
pub fn grid(region: &Region, p: &GridParams) -> Result<Tiles, OpError> {
    let image = if region.image.width() == p.size && region.image.height() == p.size {
        region.image.clone()
    } else {
        Arc::new(super::resize::resize(
            &region.image,
            &super::ResizeParams {
                width: p.size,
                height: p.size,
                filter: p.filter,
            },
        )?)
    };
    let whole = region
        .whole_jpeg
        .clone()
        .map(|jpeg| Arc::new(WholeJpeg::new(jpeg, &image)));
    Ok(Tiles {
        tiles: vec![Tile {
            x: region.i,
            y: region.j,
            size: p.size,
            image,
            ox: 0,
            oy: 0,
        }],
        tissue_fraction: region.tissue_fraction,
        whole,
    })
}

/// `tissue`: keeps the tiles that hold tissue.
pub fn tissue(input: &Tiles, p: &TissueParams) -> Result<Tiles, OpError> {
    let keep = |t: &Tile| -> Result<bool, OpError> {
        match p {
            TissueParams::Color {
                statistic,
                max,
                min_r,
                min_b,
                r_minus_g,
            } => {
                let [r, g, b] = t.statistic(*statistic);
                Ok(r < *max
                    && g < *max
                    && b < *max
                    && r > *min_r
                    && b > *min_b
                    && i32::from(r) > i32::from(g) + i32::from(*r_minus_g))
            }
            TissueParams::Otsu(o) => match input.tissue_fraction {
                Some(f) => Ok(f >= o.min_fraction),
                None => Err(OpError(
                    "the otsu tissue detector needs the slide's tissue mask, which was not computed".into(),
                )),
            },
        }
    };
    let mut tiles = Vec::new();
    for t in &input.tiles {
        if keep(t)? {
            tiles.push(t.clone());
        }
    }
    Ok(Tiles {
        tiles,
        tissue_fraction: input.tissue_fraction,
        whole: input.whole.clone(),
    })
}

/// `subtiles`: the row-major grid of children of every tile, background
/// children dropped; with `pick`, only that child is considered.
pub fn subtiles(input: &Tiles, p: &SubtileParams) -> Result<Tiles, OpError> {
    use rayon::prelude::*;
    // Every candidate child, in row-major order per parent; tested and cut in
    // parallel (a cell with few tiles left would otherwise idle the other
    // cores), collected in order so the result does not depend on timing.
    let mut candidates: Vec<(&Tile, u32, u32, u32)> = Vec::new();
    for t in &input.tiles {
        if p.size == 0 || t.size % p.size != 0 {
            return Err(OpError(format!(
                "subtile size {} does not divide the parent tile size {}",
                p.size, t.size
            )));
        }
        let k = t.size / p.size;
        for r in 0..k {
            for c in 0..k {
                if p.pick.is_none_or(|pick| pick == r * k + c + 1) {
                    candidates.push((t, k, c, r));
                }
            }
        }
    }
    let out: Vec<Tile> = candidates
        .par_iter()
        .filter_map(|&(t, k, c, r)| {
            let child = Tile {
                x: t.x * k + c,
                y: t.y * k + r,
                size: p.size,
                image: t.image.clone(),
                ox: t.ox + c * p.size,
                oy: t.oy + r * p.size,
            };
            let [cr, cg, cb] = child.statistic(p.statistic);
            if cr > p.white && cg > p.white && cb > p.white {
                return None;
            }
            Some(child)
        })
        .collect();
    Ok(Tiles {
        tiles: out,
        tissue_fraction: input.tissue_fraction,
        whole: input.whole.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles_of(img: RgbImage, size: u32) -> Tiles {
        Tiles {
            tiles: vec![Tile {
                x: 2,
                y: 3,
                size,
                image: Arc::new(img),
                ox: 0,
                oy: 0,
            }],
            tissue_fraction: None,
            whole: None,
        }
    }

    fn cpia_color() -> TissueParams {
        TissueParams::Color {
            statistic: Filter::Lanczos3,
            max: 220,
            min_r: 100,
            min_b: 30,
            r_minus_g: 20,
        }
    }

    #[test]
    fn colour_rule_keeps_pink_and_drops_glass() {
        let pink = tiles_of(
            RgbImage::from_pixel(64, 64, image::Rgb([200, 120, 170])),
            64,
        );
        let glass = tiles_of(
            RgbImage::from_pixel(64, 64, image::Rgb([240, 240, 240])),
            64,
        );
        let grey = tiles_of(
            RgbImage::from_pixel(64, 64, image::Rgb([150, 150, 150])),
            64,
        );
        assert_eq!(tissue(&pink, &cpia_color()).unwrap().tiles.len(), 1);
        assert_eq!(tissue(&glass, &cpia_color()).unwrap().tiles.len(), 0);
        assert_eq!(
            tissue(&grey, &cpia_color()).unwrap().tiles.len(),
            0,
            "r > g + 20 fails"
        );
    }

    #[test]
    fn children_are_numbered_on_the_standard_grid() {
        // A 4x4 parent of 2x2 children at (2, 3): children (4..6, 6..8).
        let img = RgbImage::from_fn(4, 4, |x, y| {
            if x >= 2 && y < 2 {
                image::Rgb([255, 255, 255]) // top-right child is white background
            } else {
                image::Rgb([100, 50, 90])
            }
        });
        let p = SubtileParams {
            size: 2,
            pick: None,
            white: 220,
            statistic: Filter::Bilinear,
        };
        let out = subtiles(&tiles_of(img.clone(), 4), &p).unwrap();
        let xy: Vec<_> = out.tiles.iter().map(|t| (t.x, t.y)).collect();
        assert_eq!(xy, [(4, 6), (4, 7), (5, 7)]);
        // pick = 3: the first child of the second row only.
        let picked = subtiles(&tiles_of(img, 4), &SubtileParams { pick: Some(3), ..p }).unwrap();
        let xy: Vec<_> = picked.tiles.iter().map(|t| (t.x, t.y)).collect();
        assert_eq!(xy, [(4, 7)]);
    }

    #[test]
    fn tile_views_encode_and_measure_like_copies() {
        let img = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x * y) % 251) as u8])
        });
        let p = SubtileParams {
            size: 16,
            pick: None,
            white: 255,
            statistic: Filter::Bilinear,
        };
        let kids = subtiles(&tiles_of(img, 64), &p).unwrap();
        assert_eq!(kids.tiles.len(), 16);
        let jpeg = JpegParams {
            quality: 75,
            subsampling: crate::ops::Subsampling::S420,
        };
        let enc = encode(
            &kids,
            &TileEncodeParams {
                jpeg: jpeg.clone(),
                scale: "M".into(),
            },
        )
        .unwrap();
        assert_eq!(enc.encoding, Encoding::Pixels);
        for (t, e) in kids.tiles.iter().zip(&enc.tiles) {
            let copy = image::imageops::crop_imm(&*t.image, t.ox, t.oy, t.size, t.size).to_image();
            assert_eq!(
                t.statistic(Filter::Lanczos3),
                stat::statistic(&copy, Filter::Lanczos3)
            );
            assert_eq!(
                *e.bytes,
                crate::ops::encode::encode_jpeg(&copy, &jpeg).unwrap()
            );
        }
    }

    #[test]
    fn children_must_divide_the_parent() {
        let p = SubtileParams {
            size: 3,
            pick: None,
            white: 220,
            statistic: Filter::Bilinear,
        };
        assert!(subtiles(&tiles_of(RgbImage::new(4, 4), 4), &p).is_err());
    }
}
