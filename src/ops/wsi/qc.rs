//! The per-slide quality-control picture: a thumbnail with the grid drawn, so
//! a person can see at a glance which cells were kept as tissue, rejected as
//! background, or skipped as the outer ring.

use super::Geometry;
use crate::ops::{OpError, RgbImage};

/// What happened to one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellState {
    Kept,
    Rejected,
    /// Not known (the cell failed, or has not been built).
    Unknown,
}

const KEPT: [u8; 3] = [0, 170, 0];
const REJECTED: [u8; 3] = [200, 0, 0];
const RING: [u8; 3] = [40, 90, 220];
const UNKNOWN: [u8; 3] = [140, 140, 140];

/// Draws the grid on `thumb` (whose pixels each cover `scale` level-0 pixels)
/// and encodes it as PNG. `state(i, j)` is asked for every non-ring cell.
/// The thumbnail is drawn on in place (a copy is fresh memory, which the
/// kernel clears page by page at the end of a build), then lent to the
/// buffer pool; the PNG is in a buffer from the pool, for the caller to give
/// back once written.
pub fn draw(
    mut img: RgbImage,
    scale: f64,
    g: &Geometry,
    state: impl Fn(u32, u32) -> CellState,
) -> Result<Vec<u8>, OpError> {
    let cell = f64::from(g.read_size) / scale;
    for j in 0..g.rows {
        for i in 0..g.cols {
            let colour = if g.in_ring(i, j) {
                RING
            } else {
                match state(i, j) {
                    CellState::Kept => KEPT,
                    CellState::Rejected => REJECTED,
                    CellState::Unknown => UNKNOWN,
                }
            };
            let x0 = (f64::from(i) * cell).round() as i64;
            let y0 = (f64::from(j) * cell).round() as i64;
            let x1 = (f64::from(i + 1) * cell).round() as i64 - 1;
            let y1 = (f64::from(j + 1) * cell).round() as i64 - 1;
            let thick = if colour == KEPT { 2 } else { 1 };
            rect(&mut img, x0, y0, x1, y1, colour, thick);
        }
    }
    // Fast deflate: the picture is for eyes, and it is drawn once per slide
    // at the end of a build, on the critical path. Into a pooled buffer
    // (give it back with `ops::pool::give`) with room for the largest PNG
    // the encoder makes (stored blocks when deflate does not pay), so it is
    // neither fresh memory nor copied as it grows.
    let raw = img.as_raw().len();
    let mut out = crate::ops::pool::take(png_bound(raw, img.height()));
    out.clear();
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    image::ImageEncoder::write_image(
        enc,
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| OpError(format!("encoding the QC picture: {e}")))?;
    crate::ops::pool::give(img.into_raw());
    Ok(out)
}

/// The most bytes a PNG of `raw` bytes of pixels in `rows` rows can take:
/// each row's filter byte, stored deflate blocks (5 bytes per 64 KiB), the
/// zlib and chunk framing, and the header chunks.
fn png_bound(raw: usize, rows: u32) -> usize {
    let filtered = raw + rows as usize;
    filtered + 5 * (filtered / 65_535 + 1) + 4096
}

fn rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3], thick: i64) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let mut put = |x: i64, y: i64| {
        if x >= 0 && y >= 0 && x < w && y < h {
            img.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    };
    for t in 0..thick {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1 - t);
        }
        for y in y0..=y1 {
            put(x0 + t, y);
            put(x1 - t, y);
        }
    }
}
