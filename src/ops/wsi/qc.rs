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
    // at the end of a build, on the critical path.
    let png = encode_png(&img)?;
    crate::ops::pool::give(img.into_raw());
    Ok(png)
}

/// The PNG of `img` exactly as `image`'s `PngEncoder` writes it with fast
/// compression and the Sub filter (the `png` crate: fdeflate's ultra-fast
/// deflate, or stored blocks when that does not pay; `tests` compares the
/// bytes), with the deflate stream and the PNG both in buffers from the
/// pool (give the PNG back with `ops::pool::give`). Why not through
/// `image`: `png` deflates into a `Vec` of its own, grown from empty, and
/// at the end of a build those were fresh pages the kernel clears (huge
/// pages, 2 MB at a time). On the 20× bench slide, 12 interleaved builds
/// each, the picture took 5.5–27.5 ms that way (5 builds of 12 past 17 ms)
/// and takes 4.6–6.8 ms now. `png` still writes the chunks.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>, OpError> {
    let err = |e: std::io::Error| OpError(format!("encoding the QC picture: {e}"));
    let png_err = |e: png::EncodingError| OpError(format!("encoding the QC picture: {e}"));
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(OpError(format!(
            "cannot encode an empty {w}×{h} QC picture"
        )));
    }
    let row = w as usize * 3;
    let raw = img.as_raw();
    let mut zlib = crate::ops::pool::take(png_bound(raw.len(), h));
    zlib.clear();
    let mut deflate = fdeflate::Compressor::new(std::io::Cursor::new(zlib)).map_err(err)?;
    // Each row: the filter type (1: Sub), then the filtered bytes.
    let mut line = vec![0u8; row + 1];
    line[0] = 1;
    for px in raw.chunks_exact(row) {
        sub_filter(px, &mut line[1..]);
        deflate.write_data(&line).map_err(err)?;
    }
    let mut zlib = deflate.finish().map_err(err)?.into_inner();
    if zlib.len() > fdeflate::StoredOnlyCompressor::<()>::compressed_size((row + 1) * h as usize) {
        // As `png` does: stored blocks of the unfiltered rows instead.
        zlib.clear();
        let mut stored =
            fdeflate::StoredOnlyCompressor::new(std::io::Cursor::new(zlib)).map_err(err)?;
        for px in raw.chunks_exact(row) {
            stored.write_data(&[0]).map_err(err)?;
            stored.write_data(px).map_err(err)?;
        }
        zlib = stored.finish().map_err(err)?.into_inner();
    }
    let mut out = crate::ops::pool::take(zlib.len() + 4096);
    out.clear();
    let mut encoder =
        png::Encoder::with_info(&mut out, png::Info::with_size(w, h)).map_err(png_err)?;
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // No compression or filter to set: the data chunks are written whole
    // below (the IHDR's method fields are PNG's only ones, 0).
    let mut writer = encoder.write_header().map_err(png_err)?;
    // `png` splits the stream into data chunks of at most 2³¹ − 1 bytes.
    for chunk in zlib.chunks((u32::MAX >> 1) as usize) {
        writer
            .write_chunk(png::chunk::IDAT, chunk)
            .map_err(png_err)?;
    }
    writer.finish().map_err(png_err)?;
    crate::ops::pool::give(zlib);
    Ok(out)
}

/// PNG's Sub filter of one row of RGB pixels: each byte minus the byte of
/// the pixel to its left (the first pixel as it is).
fn sub_filter(px: &[u8], out: &mut [u8]) {
    out[..3].copy_from_slice(&px[..3]);
    for i in 3..px.len() {
        out[i] = px[i].wrapping_sub(px[i - 3]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The PNG as `image` writes it (what [`draw`] wrote before it made
    /// the deflate stream itself).
    fn by_image(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
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
        .unwrap();
        out
    }

    #[test]
    fn the_png_is_the_bytes_image_writes() {
        let mut seed = 0x2545_f491u32;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let noisy = RgbImage::from_fn(333, 250, |_, _| {
            let v = noise();
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        });
        let cases = [
            // Noise: fast deflate does not pay, so stored blocks.
            noisy,
            RgbImage::from_pixel(1024, 700, image::Rgb([250, 250, 248])),
            RgbImage::from_fn(1000, 811, |x, y| {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
            }),
            RgbImage::from_pixel(1, 1, image::Rgb([1, 2, 3])),
            RgbImage::from_fn(7, 3, |x, y| image::Rgb([x as u8, y as u8, 9])),
        ];
        for img in &cases {
            let png = encode_png(img).unwrap();
            assert_eq!(png, by_image(img), "{}×{}", img.width(), img.height());
            let back = image::load_from_memory(&png).unwrap().to_rgb8();
            assert_eq!(&back, img);
        }
        // Stored blocks hold every filtered byte (a row: 1 + 333 × 3 bytes).
        let filtered = (1 + 333 * 3) * 250;
        let noise_png = encode_png(&cases[0]).unwrap().len();
        assert!(
            noise_png > filtered,
            "the noise took the stored path: {noise_png} bytes"
        );
        let flat_png = encode_png(&cases[1]).unwrap().len();
        assert!(
            flat_png < (1 + 1024 * 3) * 700 / 10,
            "the flat picture was deflated: {flat_png} bytes"
        );
    }

    #[test]
    fn an_empty_picture_is_an_error() {
        assert!(encode_png(&RgbImage::new(0, 5)).is_err());
    }
}
