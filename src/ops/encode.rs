//! `encode_jpeg`: RGB8 pixels to JPEG bytes with libjpeg-turbo.
//!
//! Every encoder setting that changes the bytes is set explicitly (quality,
//! subsampling, baseline, no Huffman optimisation, no arithmetic coding,
//! accurate DCT): the output is a pure function of the pixels, the
//! parameters and [`ENCODER`], which is why [`ENCODER`] goes into cache keys.

use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};

use super::{JpegParams, OpError, RgbImage, Subsampling};

/// The JPEG encoder and library versions, for cache keys: a different
/// libjpeg-turbo may produce different bytes. turbojpeg-sys 1.2.0 builds its
/// bundled libjpeg-turbo 3.1.0 (Debian 12's 2.1.5 is too old for its
/// pkg-config mode); the unit test `encoder_string_matches_cargo_lock` fails
/// when Cargo.lock moves to another turbojpeg(-sys) so this string is updated.
pub const ENCODER: &str = "libjpeg-turbo 3.1.0 (turbojpeg 1.5.1, turbojpeg-sys 1.2.0)";

/// Rejects a quality outside 1–100 up front, so a recipe fails before any file is read.
pub fn check_params(p: &JpegParams) -> Result<(), OpError> {
    if !(1..=100).contains(&p.quality) {
        return Err(OpError(format!(
            "JPEG quality must be between 1 and 100, got {}",
            p.quality
        )));
    }
    Ok(())
}

/// Encodes baseline JPEG at `p.quality` with `p.subsampling`; the same pixels
/// and parameters always give the same bytes (what makes outputs cacheable).
pub fn encode_jpeg(img: &RgbImage, p: &JpegParams) -> Result<Vec<u8>, OpError> {
    let (w, h) = img.dimensions();
    encode_jpeg_region(img, 0, 0, w, h, p)
}

/// Encodes the `w`×`h` rectangle of `img` at `(x, y)` without copying it out
/// first (libjpeg-turbo reads rows with the parent's pitch): WSI tiles are
/// such rectangles of their cell's standardized image.
pub fn encode_jpeg_region(
    img: &RgbImage,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    p: &JpegParams,
) -> Result<Vec<u8>, OpError> {
    check_params(p)?;
    if u64::from(x) + u64::from(w) > u64::from(img.width())
        || u64::from(y) + u64::from(h) > u64::from(img.height())
    {
        return Err(OpError(format!(
            "region {w}×{h} at ({x}, {y}) is outside the {}×{} image",
            img.width(),
            img.height()
        )));
    }
    if w == 0 || h == 0 {
        return Err(OpError(format!("cannot encode an empty {w}×{h} image")));
    }
    let tj = |e: turbojpeg::Error| OpError(format!("JPEG encoding of a {w}×{h} image failed: {e}"));
    let pitch = img.width() as usize * 3;
    let start = y as usize * pitch + x as usize * 3;
    let end = start + (h as usize - 1) * pitch + w as usize * 3;
    let image = Image {
        pixels: &img.as_raw()[start..end],
        width: w as usize,
        pitch,
        height: h as usize,
        format: PixelFormat::RGB,
    };
    ENCODER_STATE.with(|state| {
        let mut state = state.borrow_mut();
        let (compressor, out) = &mut *state;
        if compressor.is_none() {
            *compressor = Some(Compressor::new().map_err(tj)?);
        }
        let Some(c) = compressor.as_mut() else {
            return Err(OpError("no JPEG compressor".into()));
        };
        c.set_quality(i32::from(p.quality)).map_err(tj)?;
        c.set_subsamp(match p.subsampling {
            Subsampling::S444 => Subsamp::None,
            Subsampling::S422 => Subsamp::Sub2x1,
            Subsampling::S420 => Subsamp::Sub2x2,
        })
        .map_err(tj)?;
        c.set_optimize(false).map_err(tj)?;
        c.set_progressive(false).map_err(tj)?;
        c.set_arithmetic(false).map_err(tj)?;
        // libjpeg-turbo's own output buffer starts small and doubles (a
        // fresh allocation and a copy each time, per tile); a worst-case
        // buffer per thread, allocated zeroed (untouched pages cost nothing),
        // is written in place and reused by every later tile. A buffer beyond
        // RETAINED_BUFFER (an image far larger than any tile) is not kept.
        let worst = c.buf_len(w as usize, h as usize).map_err(tj)?;
        if worst > RETAINED_BUFFER {
            let mut once = vec![0; worst];
            let n = c.compress_to_slice(image, &mut once).map_err(tj)?;
            once.truncate(n);
            return Ok(once);
        }
        if out.len() < worst {
            *out = vec![0; worst];
        }
        let n = c.compress_to_slice(image, &mut out[..worst]).map_err(tj)?;
        Ok(out[..n].to_vec())
    })
}

/// Largest output buffer a thread keeps between encodes: enough for a
/// 3840² XL tile at 4:4:4, so every tile of a build reuses one.
pub const RETAINED_BUFFER: usize = 96 << 20;

/// The most bytes encoding a `w`×`h` image can produce (libjpeg-turbo's
/// worst case, which is also the size of the buffer it is encoded into).
pub fn worst_case_bytes(w: u32, h: u32, subsampling: Subsampling) -> u64 {
    let samp = match subsampling {
        Subsampling::S444 => turbojpeg::raw::TJSAMP_TJSAMP_444,
        Subsampling::S422 => turbojpeg::raw::TJSAMP_TJSAMP_422,
        Subsampling::S420 => turbojpeg::raw::TJSAMP_TJSAMP_420,
    };
    let (w, h) = (
        std::ffi::c_int::try_from(w).unwrap_or(std::ffi::c_int::MAX),
        std::ffi::c_int::try_from(h).unwrap_or(std::ffi::c_int::MAX),
    );
    // SAFETY: a pure function of its arguments.
    let n = unsafe { turbojpeg::raw::tj3JPEGBufSize(w, h, samp as std::ffi::c_int) };
    if n == 0 {
        // Out of libjpeg-turbo's bounds: 6 bytes a pixel covers every subsampling.
        (w as u64) * (h as u64) * 6 + 2048
    } else {
        n as u64
    }
}

thread_local! {
    /// This thread's compressor and output buffer (see [`encode_jpeg_region`]).
    static ENCODER_STATE: std::cell::RefCell<(Option<Compressor>, Vec<u8>)> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::crop::crop;
    use crate::ops::decode::decode;
    use crate::ops::resize::resize;
    use crate::ops::testutil::{diff, roi_dir, roi_file};
    use crate::ops::{CropParams, ResizeParams};

    fn standard_tile(name: &str) -> Option<RgbImage> {
        let img = decode(&roi_file(name)?).unwrap();
        let img = crop(&img, &CropParams::centre_square()).unwrap();
        Some(resize(&img, &ResizeParams::default()).unwrap())
    }

    #[test]
    fn deterministic_and_close_to_the_input() {
        let Some(tile) = standard_tile("histolab_high-nuclei-score-level0.png") else {
            return;
        };
        let p = JpegParams::default();
        let a = encode_jpeg(&tile, &p).unwrap();
        let b = encode_jpeg(&tile.clone(), &p).unwrap();
        assert_eq!(a, b, "same pixels and parameters must give the same bytes");
        assert_eq!(&a[..2], &[0xff, 0xd8]);
        let back = decode(&a).unwrap();
        assert_eq!(back.dimensions(), (384, 384));
        let (mean, _) = diff(back.as_raw(), tile.as_raw());
        // q75 4:2:0 on this dense H&E tile: measured mean abs diff 6.02 grey levels.
        eprintln!("q75 round trip: mean abs diff {mean:.3}");
        assert!(mean < 8.0, "mean abs diff {mean}");
    }

    #[test]
    fn parameters_change_the_bytes_as_expected() {
        let Some(d) = roi_dir() else { return };
        let img = decode(&std::fs::read(d.join("nct-crc-he-100k_kather1.tif")).unwrap()).unwrap();
        let enc = |quality, subsampling| {
            encode_jpeg(
                &img,
                &JpegParams {
                    quality,
                    subsampling,
                },
            )
            .unwrap()
        };
        let q75 = enc(75, Subsampling::S420);
        let q95 = enc(95, Subsampling::S420);
        let s444 = enc(75, Subsampling::S444);
        let s422 = enc(75, Subsampling::S422);
        assert!(q95.len() > q75.len());
        assert!(s444.len() > s422.len() && s422.len() > q75.len());
        let (m75, _) = diff(decode(&q75).unwrap().as_raw(), img.as_raw());
        let (m95, _) = diff(decode(&q95).unwrap().as_raw(), img.as_raw());
        assert!(m95 < m75, "q95 {m95} vs q75 {m75}");
        // The SOF0 marker (baseline) and the chroma sampling factors.
        let sof = |j: &[u8]| {
            let i = j.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
            (j[i + 11], j[i + 14]) // Y and Cb sampling factors
        };
        assert_eq!(sof(&q75), (0x22, 0x11));
        assert_eq!(sof(&s422), (0x21, 0x11));
        assert_eq!(sof(&s444), (0x11, 0x11));
    }

    #[test]
    fn bad_quality_and_empty_image_are_errors() {
        let img = RgbImage::new(8, 8);
        let p = |quality| JpegParams {
            quality,
            subsampling: Subsampling::S420,
        };
        assert!(encode_jpeg(&img, &p(0))
            .unwrap_err()
            .0
            .contains("between 1 and 100"));
        assert!(encode_jpeg(&img, &p(101)).is_err());
        assert!(encode_jpeg(&img, &p(100)).is_ok());
        assert!(encode_jpeg(&RgbImage::new(0, 3), &p(75)).is_err());
    }

    /// Byte and pixel parity of the JPEG stage with Pillow's `save(quality=75)`.
    #[test]
    fn pillow_parity_jpeg() {
        let Some(tile) = standard_tile("tiatoolbox_target_image.png") else {
            return;
        };
        let script = "import sys, io\nfrom PIL import Image\n\
            data = sys.stdin.buffer.read()\n\
            im = Image.frombytes('RGB', (384, 384), data[:384*384*3])\n\
            out = io.BytesIO()\nim.save(out, 'JPEG', quality=75)\n\
            mine = Image.open(io.BytesIO(data[384*384*3:])).convert('RGB').tobytes()\n\
            j = out.getvalue()\n\
            sys.stdout.buffer.write(len(j).to_bytes(4, 'big') + j + mine)\n";
        let ours = encode_jpeg(&tile, &JpegParams::default()).unwrap();
        let mut input = tile.as_raw().clone();
        input.extend_from_slice(&ours);
        let Some(stdout) = crate::python::pillow(script, &[], &input) else {
            return;
        };
        let n = u32::from_be_bytes(stdout[..4].try_into().unwrap()) as usize;
        let pillow_jpeg = &stdout[4..4 + n];
        let pillow_decode_of_ours = &stdout[4 + n..];
        // Pillow's decode of our JPEG equals our decode (same libjpeg-turbo settings).
        let (mean, max) = diff(decode(&ours).unwrap().as_raw(), pillow_decode_of_ours);
        eprintln!(
            "decode parity: max {max}, mean {mean:.4}; bytes equal to Pillow: {}",
            pillow_jpeg == ours.as_slice()
        );
        assert!(
            max <= 1,
            "decode differs from Pillow's: max {max}, mean {mean}"
        );
        let (mean, max) = diff(
            decode(&ours).unwrap().as_raw(),
            decode(pillow_jpeg).unwrap().as_raw(),
        );
        eprintln!("ours vs Pillow's q75 JPEG, decoded: max {max}, mean {mean:.4}");
        assert!(
            mean < 0.5,
            "encode differs from Pillow's: max {max}, mean {mean}"
        );
    }

    #[test]
    fn encoder_string_matches_cargo_lock() {
        // Cargo.lock is part of the repository: its absence is a failure.
        let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
        let text =
            std::fs::read_to_string(&lock).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
        for krate in ["turbojpeg", "turbojpeg-sys"] {
            let needle = format!("name = \"{krate}\"\nversion = \"");
            let i = text
                .find(&needle)
                .unwrap_or_else(|| panic!("{krate} is not in {}", lock.display()));
            let rest = &text[i + needle.len()..];
            let version = &rest[..rest.find('"').unwrap_or(0)];
            assert!(
                ENCODER.contains(&format!("{krate} {version}")),
                "Cargo.lock has {krate} {version}: update ENCODER (and bump encode_jpeg's version)"
            );
        }
    }
}
