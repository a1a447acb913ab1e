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
/// The thumbnail is drawn on in place: a copy is fresh memory, which the
/// kernel clears page by page at the end of a build.
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
    // at the end of a build, on the critical path.
    // About what fast deflate makes of tissue, so the picture is not
    // copied as its vector grows.
    let mut out = Vec::with_capacity(img.as_raw().len() / 2);
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
    Ok(out)
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
