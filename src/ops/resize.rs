//! `resize`: fixed-size resampling with fast_image_resize.
//!
//! Kept deliberately small and monomorphic (`resize_typed::<U8x3>` only): the
//! generic `Resizer::resize` instantiates every pixel type into its caller and
//! makes incremental release builds ~20× slower (see stack-notes).
//!
//! The convolution filters are Pillow's algorithm (fixed-point separable
//! convolution, support scaled by the downscale factor), so results are
//! within a grey level or two of Pillow's `resize`; see the parity test.

use std::num::NonZeroU32;

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{
    FilterType, ImageView, ImageViewMut, ResizeAlg, ResizeError, ResizeOptions, Resizer,
};
use rayon::prelude::*;

use super::{Filter, OpError, ResizeParams, RgbImage};

/// Rejects a zero output side up front, so a recipe fails before any file is read.
pub fn check_params(p: &ResizeParams) -> Result<(), OpError> {
    if p.width == 0 || p.height == 0 {
        return Err(OpError(format!(
            "resize to {}×{}: both sides must be at least 1 pixel",
            p.width, p.height
        )));
    }
    Ok(())
}

fn algorithm(f: Filter) -> ResizeAlg {
    match f {
        Filter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        Filter::CatmullRom => ResizeAlg::Convolution(FilterType::CatmullRom),
        Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Filter::Box => ResizeAlg::Convolution(FilterType::Box),
        Filter::Nearest => ResizeAlg::Nearest,
    }
}

/// Resamples to exactly `p.width`×`p.height` (up or down, aspect ratio not
/// kept: the crop before it decides the aspect), as the standard's fixed
/// 384×384 tiles require.
///
/// Convolution filters run as two passes, horizontal first, each rounded to
/// 8 bits, which is Pillow's order: fast_image_resize alone does the vertical
/// pass first for u8 images, which moves Lanczos overshoot on sharp edges by up
/// to 27 grey levels when upscaling (measured on the 30×50 IHC image).
pub fn resize(img: &RgbImage, p: &ResizeParams) -> Result<RgbImage, OpError> {
    resize_with(img, p, &mut Resizer::new())
}

fn resize_with(img: &RgbImage, p: &ResizeParams, r: &mut Resizer) -> Result<RgbImage, OpError> {
    check_params(p)?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(OpError(format!("cannot resize an empty {w}×{h} image")));
    }
    let (dw, dh) = (p.width, p.height);
    let alg = algorithm(p.filter);
    let out = if p.filter == Filter::Nearest {
        pass(r, img.as_raw(), (w, h), (dw, dh), alg)?
    } else {
        let horizontal = pass(r, img.as_raw(), (w, h), (dw, h), alg)?;
        let out = pass(r, &horizontal, (dw, h), (dw, dh), alg);
        super::pool::give(horizontal);
        out?
    };
    RgbImage::from_raw(dw, dh, out)
        .ok_or_else(|| OpError("resize produced a buffer of the wrong size".into()))
}

/// Whether [`resize`] makes `p` in two passes — across each row, then down
/// each column — so that it can be made band by band ([`across_into`],
/// [`down`]): every filter but nearest.
pub fn in_two_passes(p: &ResizeParams) -> bool {
    p.filter != Filter::Nearest
}

/// The first pass of [`resize`] to `p` for a band of `rows` rows of a
/// source `sw` wide (`src`), into `dst` (`p.width` × `rows`): each row is
/// convolved alone, so the bands of a source, in any order and on any
/// thread, make the bytes of the whole source's pass — the source need
/// never exist whole (a 40× cell's 7530² region is 170 MB).
pub fn across_into(
    src: &[u8],
    (sw, rows): (u32, u32),
    dst: &mut [u8],
    p: &ResizeParams,
) -> Result<(), OpError> {
    check_params(p)?;
    let dw = p.width;
    let err = |e: &dyn std::fmt::Display| OpError(format!("resize {sw}×{rows} → {dw}×{rows}: {e}"));
    if sw == dw {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
        return Ok(());
    }
    let src = TypedImageRef::<U8x3>::from_buffer(sw, rows, src).map_err(|e| err(&e))?;
    let mut out = TypedImage::<U8x3>::from_buffer(dw, rows, dst).map_err(|e| err(&e))?;
    // The bands of a source ask for the same coefficients: Lanczos-3's
    // values are replayed, not computed again (`lanczos_replay`).
    let alg = match p.filter {
        Filter::Lanczos3 => {
            super::lanczos_replay::restart();
            ResizeAlg::Convolution(super::lanczos_replay::filter())
        }
        _ => algorithm(p.filter),
    };
    let options = ResizeOptions::new().resize_alg(alg);
    Resizer::new()
        .resize_typed::<U8x3>(&src, &mut out, &options)
        .map_err(|e| err(&e))
}

/// The second pass of [`resize`] to `p`: `across` (the first pass of a
/// source `sh` rows tall: `p.width` × `sh`) down to `p.height` rows. The
/// buffer goes back to the pool.
pub fn down(across: Vec<u8>, sh: u32, p: &ResizeParams) -> Result<RgbImage, OpError> {
    check_params(p)?;
    let (dw, dh) = (p.width, p.height);
    let out = pass(
        &mut Resizer::new(),
        &across,
        (dw, sh),
        (dw, dh),
        algorithm(p.filter),
    );
    super::pool::give(across);
    RgbImage::from_raw(dw, dh, out?)
        .ok_or_else(|| OpError("resize produced a buffer of the wrong size".into()))
}

/// One fast_image_resize call on RGB8 buffers (a plain copy when the sizes agree).
fn pass(
    r: &mut Resizer,
    src: &[u8],
    (sw, sh): (u32, u32),
    (dw, dh): (u32, u32),
    alg: ResizeAlg,
) -> Result<Vec<u8>, OpError> {
    if (sw, sh) == (dw, dh) {
        return Ok(src.to_vec());
    }
    let err = |e: &dyn std::fmt::Display| OpError(format!("resize {sw}×{sh} → {dw}×{dh}: {e}"));
    let src = TypedImageRef::<U8x3>::from_buffer(sw, sh, src).map_err(|e| err(&e))?;
    // Every byte is written by the resize: a recycled buffer needs no zeroing.
    let mut out = super::pool::take(dw as usize * dh as usize * 3);
    let mut dst = TypedImage::<U8x3>::from_buffer(dw, dh, &mut out).map_err(|e| err(&e))?;
    let options = ResizeOptions::new().resize_alg(alg);
    let parts = parts_of(dw, dh, alg);
    match NonZeroU32::new(parts).filter(|p| p.get() > 1) {
        None => r.resize_typed::<U8x3>(&src, &mut dst, &options),
        Some(n) => in_parts(&src, &mut dst, &options, n),
    }
    .map_err(|e| err(&e))?;
    Ok(out)
}

/// Destination pixels from which a pass is split between the pool's threads.
const PARALLEL_PIXELS: u64 = 1 << 22;

/// How many parts a pass to `dw`×`dh` is split into: one below
/// [`PARALLEL_PIXELS`] (an ROI picture: its job is one of as many running
/// as there are cores), else one per thread of the current rayon pool (a
/// 40× cell's 7530² → 3840², which runs alone with every worker inside it).
///
/// fast_image_resize would split every pass above 2,048 pixels into rayon
/// tasks itself (its `rayon` feature); for an ROI job, which runs on a
/// thread of its own outside any pool, that meant handing each pass to
/// rayon's global pool and waiting: 1,000 BreakHis-size PNGs took 8 % more
/// wall time and 5 % more CPU (interleaved, 6 builds each, 2 cores).
fn parts_of(dw: u32, dh: u32, alg: ResizeAlg) -> u32 {
    let big = u64::from(dw) * u64::from(dh) >= PARALLEL_PIXELS;
    if !big || matches!(alg, ResizeAlg::Nearest) {
        return 1;
    }
    u32::try_from(rayon::current_num_threads()).unwrap_or(1)
}

/// One pass of a separable filter in `n` parts on the current rayon pool
/// ([`split`]), or in one call when it cannot be split so.
fn in_parts(
    src: &TypedImageRef<'_, U8x3>,
    dst: &mut TypedImage<'_, U8x3>,
    options: &ResizeOptions,
    n: NonZeroU32,
) -> Result<(), ResizeError> {
    split(src, dst, options, n)
        .unwrap_or_else(|| Resizer::new().resize_typed::<U8x3>(src, dst, options))
}

/// One pass in `n` parts, byte for byte what one call gives: a horizontal
/// pass (same height) convolves each row alone, so it is split into bands
/// of rows; a vertical pass (same width) each column alone, so into bands of
/// columns — as fast_image_resize splits them itself. None for a pass of
/// both sides, or fewer rows or columns than parts.
fn split(
    src: &TypedImageRef<'_, U8x3>,
    dst: &mut TypedImage<'_, U8x3>,
    options: &ResizeOptions,
    n: NonZeroU32,
) -> Option<Result<(), ResizeError>> {
    let (sw, sh, dw, dh) = (src.width(), src.height(), dst.width(), dst.height());
    let enough = |len: u32| NonZeroU32::new(len).filter(|l| l.get() >= n.get());
    if sh == dh {
        let h = enough(dh)?;
        let parts = (
            src.split_by_height(0, h, n)?,
            dst.split_by_height_mut(0, h, n)?,
        );
        Some(resize_parts(parts.0, parts.1, options))
    } else if sw == dw {
        let w = enough(dw)?;
        let parts = (
            src.split_by_width(0, w, n)?,
            dst.split_by_width_mut(0, w, n)?,
        );
        Some(resize_parts(parts.0, parts.1, options))
    } else {
        None
    }
}

/// Resizes each source part into its destination part, in parallel.
fn resize_parts(
    src: Vec<impl ImageView<Pixel = U8x3>>,
    dst: Vec<impl ImageViewMut<Pixel = U8x3>>,
    options: &ResizeOptions,
) -> Result<(), ResizeError> {
    let mut pairs: Vec<_> = src.into_iter().zip(dst).collect();
    pairs
        .par_iter_mut()
        .map(|(s, d)| Resizer::new().resize_typed::<U8x3>(s, d, options))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::crop::crop;
    use crate::ops::decode::decode;
    use crate::ops::testutil::{diff, roi_dir, roi_file};
    use crate::ops::CropParams;

    fn params(w: u32, h: u32, filter: Filter) -> ResizeParams {
        ResizeParams {
            width: w,
            height: h,
            filter,
        }
    }

    #[test]
    fn upscales_the_30x50_image_to_384() {
        let Some(bytes) = roi_file("histolab_kidney-ihc-level0-310-500-360-530.png") else {
            return;
        };
        let img = decode(&bytes).unwrap();
        assert_eq!(img.dimensions(), (30, 50));
        for f in Filter::ALL {
            let out = resize(&img, &params(384, 384, f)).unwrap();
            assert_eq!(out.dimensions(), (384, 384), "{f:?}");
            // Means of the channels are preserved by an interpolating resample.
            let mean = |i: &RgbImage| {
                i.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / i.as_raw().len() as f64
            };
            assert!((mean(&img) - mean(&out)).abs() < 3.0, "{f:?}");
        }
        // Nearest upscaling copies source pixels.
        let out = resize(&img, &params(384, 384, Filter::Nearest)).unwrap();
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(0, 0));
        assert_eq!(out.get_pixel(383, 383), img.get_pixel(29, 49));
    }

    #[test]
    fn constant_image_stays_constant_and_identity_is_a_copy() {
        let img = RgbImage::from_pixel(97, 61, image::Rgb([200, 120, 33]));
        for f in Filter::ALL {
            let out = resize(&img, &params(384, 200, f)).unwrap();
            assert!(out.pixels().all(|p| p.0 == [200, 120, 33]), "{f:?}");
            let out = resize(&img, &params(13, 7, f)).unwrap();
            assert!(out.pixels().all(|p| p.0 == [200, 120, 33]), "{f:?}");
        }
        let grad = RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8, y as u8, 5]));
        assert_eq!(
            resize(&grad, &params(50, 40, Filter::Lanczos3)).unwrap(),
            grad
        );
    }

    #[test]
    fn zero_size_is_an_error() {
        let img = RgbImage::new(4, 4);
        assert!(resize(&img, &params(0, 4, Filter::Box))
            .unwrap_err()
            .0
            .contains("at least 1"));
    }

    #[test]
    fn every_cpu_extension_gives_the_same_bytes() {
        // Cache keys do not include the CPU, so the SIMD paths must agree.
        let Some(bytes) = roi_file("histolab_tcga-lung-rgb.png") else {
            return;
        };
        let img = decode(&bytes).unwrap();
        let reference = resize(&img, &params(384, 384, Filter::Lanczos3)).unwrap();
        let up = crop(&img, &CropParams::centre_square()).unwrap();
        let up = resize(&up, &params(50, 50, Filter::Box)).unwrap();
        let up_ref = resize(&up, &params(384, 384, Filter::Lanczos3)).unwrap();
        use fast_image_resize::CpuExtensions as C;
        let mut exts = vec![C::None];
        #[cfg(target_arch = "x86_64")]
        exts.extend([C::Sse4_1, C::Avx2]);
        for ext in exts {
            if !ext.is_supported() {
                eprintln!("{ext:?} not supported here; not compared");
                continue;
            }
            for (src, want) in [(&img, &reference), (&up, &up_ref)] {
                let mut r = Resizer::new();
                // SAFETY: only extensions reported as supported are set.
                unsafe { r.set_cpu_extensions(ext) };
                let out = resize_with(src, &params(384, 384, Filter::Lanczos3), &mut r).unwrap();
                assert_eq!(&out, want, "{ext:?} differs");
            }
        }
    }

    #[test]
    fn a_resize_made_band_by_band_gives_the_bytes_of_one_call() {
        // Real tissue, tiled up to a 40×-like downscale (1.96×) and an
        // upscale, at bands of uneven heights (a tile row, a partial one).
        let Some(bytes) = roi_file("histolab_tissue-level0-4302-10273-4814-10785.png") else {
            return;
        };
        let img = decode(&bytes).unwrap();
        let (w, h) = img.dimensions();
        for (dw, dh, filter) in [
            (w * 100 / 196, h * 100 / 196, Filter::Lanczos3),
            (w * 3 / 2, h / 3, Filter::Bilinear),
        ] {
            let p = params(dw, dh, filter);
            assert!(in_two_passes(&p));
            let once = resize(&img, &p).unwrap();
            let mut across = vec![0u8; dw as usize * h as usize * 3];
            let mut row = 0u32;
            for rows in [1u32, 240, 7, 240].iter().copied().cycle() {
                if row >= h {
                    break;
                }
                let rows = rows.min(h - row);
                let src = &img.as_raw()[(row * w * 3) as usize..((row + rows) * w * 3) as usize];
                let dst = &mut across[(row * dw * 3) as usize..((row + rows) * dw * 3) as usize];
                across_into(src, (w, rows), dst, &p).unwrap();
                row += rows;
            }
            let banded = down(across, h, &p).unwrap();
            assert!(banded.as_raw() == once.as_raw(), "{filter:?} {dw}×{dh}");
        }
        assert!(!in_two_passes(&params(10, 10, Filter::Nearest)));
    }

    #[test]
    fn a_large_pass_split_between_threads_gives_the_bytes_of_one_call() {
        let Some(bytes) = roi_file("tiatoolbox_target_image.png") else {
            return;
        };
        // Real tissue, 1000² upscaled past PARALLEL_PIXELS, then brought down
        // to a size that is no multiple of the part count.
        let img = decode(&bytes).unwrap();
        let big = resize(&img, &params(3001, 2999, Filter::Lanczos3)).unwrap();
        let threads = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let (one, three) = (threads(1), threads(3));
        for f in [Filter::Lanczos3, Filter::Bilinear, Filter::Box] {
            let p = params(2411, 1733, f);
            let (parts, split) = three.install(|| {
                (
                    parts_of(2411, 2999, algorithm(f)),
                    resize(&big, &p).unwrap(),
                )
            });
            assert_eq!(parts, 3);
            let (parts, whole) = one.install(|| {
                (
                    parts_of(2411, 2999, algorithm(f)),
                    resize(&big, &p).unwrap(),
                )
            });
            assert_eq!(parts, 1);
            assert!(
                split == whole,
                "{f:?}: the split passes differ from one call"
            );
        }
        // Each kind of pass really is split (not handed to one call), and
        // gives one call's bytes.
        let n = NonZeroU32::new(3).unwrap();
        let options = ResizeOptions::new().resize_alg(algorithm(Filter::Lanczos3));
        let src = TypedImageRef::<U8x3>::from_buffer(3001, 2999, big.as_raw()).unwrap();
        for (dw, dh) in [(2411, 2999), (3001, 1733)] {
            let (mut parts, mut once) = (vec![0; dw * dh * 3], vec![0; dw * dh * 3]);
            let (w, h) = (dw as u32, dh as u32);
            let mut dst = TypedImage::<U8x3>::from_buffer(w, h, &mut parts).unwrap();
            let ran = three.install(|| split(&src, &mut dst, &options, n));
            assert!(matches!(ran, Some(Ok(()))), "{dw}×{dh} was not split");
            let mut dst = TypedImage::<U8x3>::from_buffer(w, h, &mut once).unwrap();
            Resizer::new()
                .resize_typed::<U8x3>(&src, &mut dst, &options)
                .unwrap();
            assert!(parts == once, "{dw}×{dh}: the parts differ from one call");
        }
        let mut both = vec![0; 2411 * 1733 * 3];
        let mut dst = TypedImage::<U8x3>::from_buffer(2411, 1733, &mut both).unwrap();
        assert!(
            split(&src, &mut dst, &options, n).is_none(),
            "both sides at once"
        );
        // Nearest is one pass of both sides: never split. Small passes neither.
        assert_eq!(
            three.install(|| parts_of(2411, 2999, ResizeAlg::Nearest)),
            1
        );
        assert_eq!(
            three.install(|| parts_of(384, 460, algorithm(Filter::Lanczos3))),
            1
        );
    }

    /// Pillow parity of the whole ROI geometry: centre crop + Lanczos to 384.
    ///
    /// Measured (Pillow 13.0.0 `crop(...).resize((384, 384), LANCZOS)` vs this
    /// module on fast_image_resize 6.1.0, all 3 × 384² samples):
    /// - histolab_high-nuclei-score-level0.png (956×779 → 779² → 384²): max 1, mean 0.0032
    /// - histolab_kidney-ihc-level0-310-500-360-530.png (30×50 → 30² → 384², upscaling): max 2, mean 0.0135
    /// - tiatoolbox_target_image.png (1000² → 384²): max 1, mean 0.0051
    ///
    /// (With fast_image_resize's own vertical-first order the upscaling case was
    /// max 27, mean 0.54, and the downscale max 2, mean 0.21.)
    #[test]
    fn pillow_parity_centre_crop_lanczos() {
        let Some(dir) = roi_dir() else { return };
        for (name, max_bound, mean_bound) in PARITY {
            let path = dir.join(name);
            let script = "import sys\nfrom PIL import Image\n\
                im = Image.open(sys.argv[1]).convert('RGB')\n\
                w, h = im.size\na = min(w, h)\nl, t = (w - a) // 2, (h - a) // 2\n\
                im = im.crop((l, t, l + a, t + a)).resize((384, 384), Image.LANCZOS)\n\
                sys.stdout.buffer.write(im.tobytes())\n";
            let Some(pillow) = crate::python::pillow(script, &[path.as_os_str()], &[]) else {
                return;
            };
            let img = decode(&std::fs::read(&path).unwrap()).unwrap();
            let ours = crop(&img, &CropParams::centre_square()).unwrap();
            let ours = resize(&ours, &ResizeParams::default()).unwrap();
            let (mean, max) = diff(ours.as_raw(), &pillow);
            eprintln!("Pillow parity {name}: max {max}, mean {mean:.4}");
            assert!(
                max <= *max_bound && mean <= *mean_bound,
                "{name}: max {max}, mean {mean}"
            );
        }
    }

    /// (file, max abs diff bound, mean abs diff bound) for the Pillow parity test.
    const PARITY: &[(&str, u8, f64)] = &[
        ("histolab_high-nuclei-score-level0.png", 2, 0.05),
        ("histolab_kidney-ihc-level0-310-500-360-530.png", 2, 0.05),
        ("tiatoolbox_target_image.png", 2, 0.05),
    ];
}
