//! `encode_tiles`: a cell's tiles as JPEG — from their pixels, or, for the
//! children of a whole standardized tile whose JPEG the same cell writes
//! with the same settings, as lossless crops of that JPEG
//! ([`crate::ops::jpeg_crop`]): the same bytes, without the colour
//! conversion, downsampling, DCT and quantization of each child.
//!
//! When a crop is exact: the child's writing step has the whole tile's
//! quality and subsampling (so the same quantization tables, the same
//! standard Huffman tables, the same encoder), the child lies on the MCU grid
//! of that subsampling (offsets and size multiples of 16 for 4:2:0), and it
//! is cut from the whole tile's pixels with no resize between them (children
//! are squares of the cell's one standardized image). The engine says which
//! cells write their whole tile and cut a child from it
//! ([`super::Region::whole_jpeg`]); every other
//! case — other settings, a size off the grid, a JPEG the splicer refuses —
//! is encoded from pixels. Which of the two made a step's tiles is
//! [`EncodedTiles::encoding`], recorded with each unit.
//!
//! The whole tile's JPEG of a large cell is made in strips, one per thread
//! of the pool, each encoded and indexed on its own, then stacked
//! ([`Indexed::stack`]: the same bytes): one libjpeg-turbo call and one
//! index scan of a 3840² tile (~100 ms) otherwise ran on one thread while
//! the other waited — on every 40× cell (they run one at a time) and on the
//! last cell of a slide. Interleaved builds, main against this (median of
//! 6–8): 40× 1.51 → 1.34 s, 20× 0.81 → 0.76 s, the tiles identical.

use std::sync::{Arc, OnceLock};

use super::{Tile, TileEncodeParams, Tiles};
use crate::ops::jpeg_crop::Indexed;
use crate::ops::{encode, JpegParams, OpError, RgbImage};

/// How a writing step's tiles were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Encoded from their pixels.
    #[default]
    Pixels,
    /// Lossless crops of the whole tile's JPEG (byte-identical to `Pixels`).
    Crop,
}

impl Encoding {
    /// The recorded spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Pixels => "pixels",
            Encoding::Crop => "crop",
        }
    }

    /// The inverse of [`Encoding::as_str`].
    pub fn parse(s: &str) -> Option<Encoding> {
        match s {
            "pixels" => Some(Encoding::Pixels),
            "crop" => Some(Encoding::Crop),
            _ => None,
        }
    }
}

/// One encoded tile, ready to be written.
#[derive(Clone, Debug)]
pub struct EncodedTile {
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub bytes: Arc<Vec<u8>>,
}

/// A writing step's tiles and how they were made.
#[derive(Clone, Debug, Default)]
pub struct EncodedTiles {
    pub tiles: Vec<EncodedTile>,
    pub encoding: Encoding,
}

/// The JPEG of a cell's whole standardized tile at the settings its whole-tile
/// writer uses, made once — by that writer or by the first child step that
/// crops it, whichever runs first — and indexed once for crops.
#[derive(Debug)]
pub struct WholeJpeg {
    params: JpegParams,
    /// The address of the standardized image it encodes (an identity only).
    image: usize,
    bytes: OnceLock<Result<Arc<Vec<u8>>, OpError>>,
    index: OnceLock<Option<Arc<Indexed>>>,
}

impl WholeJpeg {
    /// The shared JPEG of `image` at `params` (nothing encoded yet).
    pub fn new(params: JpegParams, image: &Arc<RgbImage>) -> WholeJpeg {
        WholeJpeg {
            params,
            image: address(image),
            bytes: OnceLock::new(),
            index: OnceLock::new(),
        }
    }

    /// Whether `t` is the whole tile this JPEG encodes.
    fn is_whole(&self, t: &Tile) -> bool {
        address(&t.image) == self.image
            && (t.ox, t.oy) == (0, 0)
            && t.image.dimensions() == (t.size, t.size)
    }

    /// The JPEG bytes, encoding the image on first use: a large image in
    /// strips on the pool's threads, stacked, which also gives its index.
    fn bytes(&self, image: &RgbImage) -> Result<Arc<Vec<u8>>, OpError> {
        self.bytes
            .get_or_init(|| {
                if let Some((jpeg, index)) = in_strips(image, &self.params) {
                    let _ = self.index.set(Some(Arc::new(index)));
                    return Ok(Arc::new(jpeg));
                }
                encode::encode_jpeg(image, &self.params).map(Arc::new)
            })
            .clone()
    }

    /// The crop index of the JPEG, or None when the splicer refuses it.
    fn index(&self, image: &RgbImage) -> Result<Option<Arc<Indexed>>, OpError> {
        if let Some(ix) = self.index.get() {
            return Ok(ix.clone());
        }
        let bytes = self.bytes(image)?;
        Ok(self
            .index
            .get_or_init(|| Indexed::new(&bytes).ok().map(Arc::new))
            .clone())
    }
}

/// Images of at least this many pixels are encoded in strips.
const STRIP_PIXELS: u64 = 1 << 22;

/// `image`'s JPEG and its crop index, made as one horizontal strip per
/// thread of the current rayon pool, each encoded and indexed on its own
/// thread, then stacked ([`Indexed::stack`]: the bytes of one encoding).
/// None for a small image, a pool of one thread, or strips the stacking
/// refuses (the caller encodes the image whole).
fn in_strips(image: &RgbImage, p: &JpegParams) -> Option<(Vec<u8>, Indexed)> {
    use rayon::prelude::*;
    // A multiple of every subsampling's MCU height.
    const MCU_ROWS: u32 = 16;
    let (w, h) = image.dimensions();
    let threads = u32::try_from(rayon::current_num_threads()).unwrap_or(1);
    if threads < 2 || u64::from(w) * u64::from(h) < STRIP_PIXELS || h < 2 * MCU_ROWS {
        return None;
    }
    let rows = h.div_ceil(threads).next_multiple_of(MCU_ROWS);
    let strips: Option<Vec<Indexed>> = (0..h.div_ceil(rows))
        .into_par_iter()
        .map(|k| {
            let y = k * rows;
            let jpeg = encode::encode_jpeg_region(image, 0, y, w, rows.min(h - y), p).ok()?;
            Indexed::new(&jpeg).ok()
        })
        .collect();
    Indexed::stack(strips?).ok()
}

/// Which image an `Arc` holds, for identity (never dereferenced).
fn address(image: &Arc<RgbImage>) -> usize {
    Arc::as_ptr(image) as usize
}

/// `encode_tiles`: every tile as JPEG, by the path the module documentation
/// describes.
pub fn encode(input: &Tiles, p: &TileEncodeParams) -> Result<EncodedTiles, OpError> {
    let shared = input.whole.as_deref().filter(|w| w.params == p.jpeg);
    if let Some(w) = shared {
        if let Some(tiles) = from_whole(&input.tiles, w)? {
            return Ok(tiles);
        }
    }
    Ok(EncodedTiles {
        tiles: from_pixels(&input.tiles, &p.jpeg)?,
        encoding: Encoding::Pixels,
    })
}

/// The tiles encoded from their pixels, in parallel, in order.
fn from_pixels(tiles: &[Tile], p: &JpegParams) -> Result<Vec<EncodedTile>, OpError> {
    use rayon::prelude::*;
    tiles
        .par_iter()
        .map(|t| {
            Ok(EncodedTile {
                x: t.x,
                y: t.y,
                size: t.size,
                bytes: Arc::new(encode::encode_jpeg_region(
                    &t.image, t.ox, t.oy, t.size, t.size, p,
                )?),
            })
        })
        .collect()
}

/// The tiles from the shared whole-tile JPEG `w`: the whole tile itself
/// (its pixel encoding, made once), or children cut from it; None when
/// that is not exact for these tiles (the caller encodes pixels).
fn from_whole(tiles: &[Tile], w: &WholeJpeg) -> Result<Option<EncodedTiles>, OpError> {
    use rayon::prelude::*;
    let Some(first) = tiles.first() else {
        return Ok(None);
    };
    if tiles.iter().any(|t| address(&t.image) != w.image) {
        return Ok(None);
    }
    if tiles.iter().all(|t| w.is_whole(t)) {
        let bytes = w.bytes(&first.image)?;
        let tiles = tiles
            .iter()
            .map(|t| EncodedTile {
                x: t.x,
                y: t.y,
                size: t.size,
                bytes: bytes.clone(),
            })
            .collect();
        return Ok(Some(EncodedTiles {
            tiles,
            encoding: Encoding::Pixels,
        }));
    }
    let Some(index) = w.index(&first.image)? else {
        return Ok(None);
    };
    let (mw, mh) = index.mcu();
    let on_grid = |t: &Tile| {
        t.ox.is_multiple_of(mw)
            && t.oy.is_multiple_of(mh)
            && t.size.is_multiple_of(mw)
            && t.size.is_multiple_of(mh)
    };
    if !tiles.iter().all(on_grid) {
        return Ok(None);
    }
    let cropped: Result<Vec<EncodedTile>, _> = tiles
        .par_iter()
        .map(|t| {
            index.crop(t.ox, t.oy, t.size, t.size).map(|b| EncodedTile {
                x: t.x,
                y: t.y,
                size: t.size,
                bytes: Arc::new(b),
            })
        })
        .collect();
    Ok(cropped.ok().map(|tiles| EncodedTiles {
        tiles,
        encoding: Encoding::Crop,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::wsi::{subtiles, SubtileParams};
    use crate::ops::Filter;
    use crate::ops::Subsampling;

    /// One 192² standardized tile (tissue-like, nothing background) whose
    /// whole JPEG is written at `whole`, as `wsi_grid` makes it.
    fn cell(whole: Option<JpegParams>) -> Tiles {
        let img = Arc::new(RgbImage::from_fn(192, 192, |x, y| {
            image::Rgb([120 + ((x * 7 + y * 3) % 80) as u8, 60 + (x % 50) as u8, 150])
        }));
        Tiles {
            tiles: vec![Tile {
                x: 2,
                y: 3,
                size: 192,
                image: img.clone(),
                ox: 0,
                oy: 0,
            }],
            tissue_fraction: None,
            whole: whole.map(|p| Arc::new(WholeJpeg::new(p, &img))),
        }
    }

    fn children(t: &Tiles, size: u32) -> Tiles {
        let p = SubtileParams {
            size,
            pick: None,
            white: 255,
            statistic: Filter::Bilinear,
        };
        subtiles(t, &p).unwrap()
    }

    fn write(t: &Tiles, quality: u8, subsampling: Subsampling) -> EncodedTiles {
        let p = TileEncodeParams {
            jpeg: JpegParams {
                quality,
                subsampling,
            },
            scale: "L".into(),
        };
        encode(t, &p).unwrap()
    }

    #[test]
    fn children_of_a_written_whole_tile_are_cropped_to_the_same_bytes() {
        let q75 = JpegParams {
            quality: 75,
            subsampling: Subsampling::S420,
        };
        let shared = cell(Some(q75.clone()));
        let alone = cell(None);
        let xl = write(&shared, 75, Subsampling::S420);
        assert_eq!(xl.encoding, Encoding::Pixels);
        assert_eq!(
            *xl.tiles[0].bytes,
            encode::encode_jpeg(&shared.tiles[0].image, &q75).unwrap()
        );
        for size in [96, 48, 16] {
            let cropped = write(&children(&shared, size), 75, Subsampling::S420);
            let pixels = write(&children(&alone, size), 75, Subsampling::S420);
            assert_eq!(cropped.encoding, Encoding::Crop, "{size}");
            assert_eq!(pixels.encoding, Encoding::Pixels, "{size}");
            assert_eq!(cropped.tiles.len(), (192 / size as usize).pow(2));
            for (c, p) in cropped.tiles.iter().zip(&pixels.tiles) {
                assert_eq!((c.x, c.y, c.size), (p.x, p.y, p.size));
                assert!(c.bytes == p.bytes, "{size}² tile ({}, {})", c.x, c.y);
            }
        }
    }

    #[test]
    fn other_settings_or_sizes_off_the_grid_take_the_pixel_path() {
        let shared = cell(Some(JpegParams {
            quality: 75,
            subsampling: Subsampling::S420,
        }));
        // Another quality, another subsampling: the pixel path.
        assert_eq!(
            write(&children(&shared, 96), 90, Subsampling::S420).encoding,
            Encoding::Pixels
        );
        assert_eq!(
            write(&children(&shared, 96), 75, Subsampling::S444).encoding,
            Encoding::Pixels
        );
        // 24 px children are off the 16-px grid of 4:2:0.
        let off = write(&children(&shared, 24), 75, Subsampling::S420);
        assert_eq!(off.encoding, Encoding::Pixels);
        // At 4:4:4 (an 8-px grid) they are on it.
        let shared444 = cell(Some(JpegParams {
            quality: 75,
            subsampling: Subsampling::S444,
        }));
        let on = write(&children(&shared444, 24), 75, Subsampling::S444);
        assert_eq!(on.encoding, Encoding::Crop);
        let pixels = write(&children(&cell(None), 24), 75, Subsampling::S444);
        for (c, p) in on.tiles.iter().zip(&pixels.tiles) {
            assert!(c.bytes == p.bytes);
        }
    }

    #[test]
    fn a_large_whole_tile_encoded_in_strips_is_the_bytes_of_one_encoding() {
        // Real tissue brought to 2064² (past STRIP_PIXELS; three strips of
        // 688 rows), written whole and cut into 9 children.
        let Some(bytes) = crate::ops::testutil::roi_file("tiatoolbox_target_image.png") else {
            return;
        };
        let tissue = crate::ops::decode::decode(&bytes).unwrap();
        let p = crate::ops::ResizeParams {
            width: 2064,
            height: 2064,
            filter: Filter::Lanczos3,
        };
        let img = Arc::new(crate::ops::resize::resize(&tissue, &p).unwrap());
        assert!(u64::from(img.width()).pow(2) >= STRIP_PIXELS);
        let q75 = JpegParams {
            quality: 75,
            subsampling: Subsampling::S420,
        };
        let one = encode::encode_jpeg(&img, &q75).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (stacked, _) = pool.install(|| in_strips(&img, &q75)).unwrap();
        assert!(
            stacked == one,
            "the stacked strips differ from one encoding"
        );
        let cell = Tiles {
            tiles: vec![Tile {
                x: 0,
                y: 0,
                size: 2064,
                image: img.clone(),
                ox: 0,
                oy: 0,
            }],
            tissue_fraction: None,
            whole: Some(Arc::new(WholeJpeg::new(q75.clone(), &img))),
        };
        let (xl, l) = pool.install(|| {
            let xl = write(&cell, 75, Subsampling::S420);
            (xl, write(&children(&cell, 688), 75, Subsampling::S420))
        });
        assert!(*xl.tiles[0].bytes == one);
        assert_eq!((l.encoding, l.tiles.len()), (Encoding::Crop, 9));
        for t in &l.tiles {
            let (ox, oy) = (t.x * 688, t.y * 688);
            let want = encode::encode_jpeg_region(&img, ox, oy, 688, 688, &q75).unwrap();
            assert!(*t.bytes == want, "child ({}, {})", t.x, t.y);
        }
        // One thread, or a small image: encoded whole.
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert!(single.install(|| in_strips(&img, &q75)).is_none());
        assert!(pool.install(|| in_strips(&tissue, &q75)).is_none());
    }
}
