//! Thumbnails for the HTML report: each sampled image of the dataset read,
//! shrunk and embedded as a `data:` URI, so the page needs neither network
//! nor the dataset beside it to show them. (Each picture is also a link to the
//! full file, relative to the report, which works wherever the report and the
//! output folder are copied together.)
//!
//! JPEG tiles are decoded at 1/2 … 1/8 of their size by libjpeg-turbo's
//! scaled IDCT, so a 3840-px XL tile costs a 480-px decode. A file that is
//! missing, too large or undecodable gets no thumbnail; the report says so
//! instead of failing.

use std::path::Path;

use rayon::prelude::*;

use crate::ops::{Filter, JpegParams, ResizeParams, RgbImage, Subsampling};

use super::model::{Report, Thumb};

/// Longest side of a sample tile's thumbnail, in pixels.
pub const TILE_EDGE: u32 = 96;
/// Longest side of a QC picture's thumbnail.
pub const QC_EDGE: u32 = 240;
/// Files larger than this are not read for a thumbnail.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
const QUALITY: u8 = 70;

/// Fills `data` of every thumbnail of `report`, reading files under `output`
/// on all cores.
pub fn embed(report: &mut Report, output: &Path) {
    let mut jobs: Vec<(&mut Thumb, u32)> = Vec::new();
    for c in &mut report.collections {
        for sd in &mut c.sub_datasets {
            jobs.extend(sd.samples.iter_mut().map(|t| (t, TILE_EDGE)));
        }
        if let Some(g) = &mut c.slides {
            jobs.extend(
                g.shown
                    .iter_mut()
                    .filter_map(|s| s.qc.as_mut())
                    .map(|t| (t, QC_EDGE)),
            );
        }
    }
    jobs.par_iter_mut().for_each(|(t, edge)| {
        t.data = thumbnail(&output.join(&t.path), *edge)
            .ok()
            .map(|jpeg| data_uri("image/jpeg", &jpeg));
    });
}

/// A JPEG of the image at `path`, its longer side at most `edge` pixels.
pub fn thumbnail(path: &Path, edge: u32) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is not a file of at most {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let bytes = crate::regular_file::read(path, MAX_FILE_BYTES).map_err(|e| e.to_string())?;
    let img = match decode_jpeg_scaled(&bytes, edge) {
        Some(img) => img,
        None => crate::ops::decode::decode(&bytes).map_err(|e| e.to_string())?,
    };
    let (w, h) = img.dimensions();
    let scale = f64::from(edge) / f64::from(w.max(h));
    let small = if scale < 1.0 {
        let p = ResizeParams {
            width: ((f64::from(w) * scale).round() as u32).max(1),
            height: ((f64::from(h) * scale).round() as u32).max(1),
            filter: Filter::CatmullRom,
        };
        crate::ops::resize::resize(&img, &p).map_err(|e| e.to_string())?
    } else {
        img
    };
    crate::ops::encode::encode_jpeg(
        &small,
        &JpegParams {
            quality: QUALITY,
            subsampling: Subsampling::S420,
        },
    )
    .map_err(|e| e.to_string())
}

/// A JPEG decoded at the smallest libjpeg-turbo scale that still covers
/// `edge`; None when the bytes are not a JPEG libjpeg-turbo reads as RGB.
fn decode_jpeg_scaled(bytes: &[u8], edge: u32) -> Option<RgbImage> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut d = turbojpeg::Decompressor::new().ok()?;
    let header = d.read_header(bytes).ok()?;
    let longer = header.width.max(header.height);
    if longer == 0
        || (header.width as u64) * (header.height as u64) > crate::ops::decode::MAX_PIXELS
    {
        return None;
    }
    let factor = [8, 4, 2]
        .into_iter()
        .map(|k| turbojpeg::ScalingFactor::new(1, k))
        .find(|f| f.scale(longer) >= edge as usize)
        .unwrap_or(turbojpeg::ScalingFactor::ONE);
    d.set_scaling_factor(factor).ok()?;
    let header = header.scaled(factor);
    let mut pixels = vec![0u8; header.width * header.height * 3];
    let image = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: header.width,
        pitch: header.width * 3,
        height: header.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    d.decompress(bytes, image).ok()?;
    RgbImage::from_raw(header.width as u32, header.height as u32, pixels)
}

/// `data:<mime>;base64,…`
pub fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64(bytes))
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
        }
        assert_eq!(base64(&[0xFB, 0xFF]), "+/8=");
    }

    #[test]
    fn thumbnails_shrink_jpeg_and_png_and_refuse_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(1000, 400, |x, y| {
            image::Rgb([(x * 255 / 999) as u8, (y * 255 / 399) as u8, 90])
        });
        let jpeg = crate::ops::encode::encode_jpeg(
            &img,
            &JpegParams {
                quality: 90,
                subsampling: Subsampling::S420,
            },
        )
        .unwrap();
        std::fs::write(dir.path().join("a.jpg"), &jpeg).unwrap();
        img.save(dir.path().join("b.png")).unwrap();
        std::fs::write(dir.path().join("c.jpg"), b"not an image").unwrap();
        for name in ["a.jpg", "b.png"] {
            let t = thumbnail(&dir.path().join(name), 96).unwrap();
            let back = crate::ops::decode::decode(&t).unwrap();
            assert_eq!(back.dimensions(), (96, 38), "{name}");
            // The picture survives shrinking: the gradients' middle is there.
            let p = back.get_pixel(48, 19);
            let near = |v: u8, want: i32| (i32::from(v) - want).abs() < 12;
            assert!(
                near(p[0], 128) && near(p[1], 128) && near(p[2], 90),
                "{name}: {p:?}"
            );
            let left = back.get_pixel(0, 19);
            assert!(left[0] < 16, "{name}: {left:?}");
        }
        assert!(thumbnail(&dir.path().join("c.jpg"), 96).is_err());
        assert!(thumbnail(&dir.path().join("missing.jpg"), 96).is_err());
        // A small image is not enlarged.
        let t = thumbnail(&dir.path().join("a.jpg"), 2000).unwrap();
        assert_eq!(
            crate::ops::decode::decode(&t).unwrap().dimensions(),
            (1000, 400)
        );
    }
}
