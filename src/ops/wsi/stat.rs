//! The colour statistic of a tile exactly as Pillow computes it when it
//! resizes the tile to 1×1 (`tile.resize((1, 1), LANCZOS)`), which is what the
//! CPIA reference scripts threshold. Reproducing Pillow's arithmetic bit for
//! bit — double-precision filter weights normalized per output pixel, then
//! rounded to 22-bit fixed point, a horizontal pass rounded to 8 bits, then a
//! vertical pass — makes the tissue decisions identical to the reference, even
//! for tiles whose statistic sits on a threshold.
//!
//! Source of the arithmetic: Pillow's `libImaging/Resample.c`
//! (`precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`,
//! `ImagingResampleVertical_8bpc`), for an output of one pixel.

use crate::ops::{Filter, RgbImage};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's filter functions and supports. Its Lanczos-3 is
/// fast_image_resize's, operation for operation (`ops::lanczos_replay`).
fn filter(f: Filter) -> (fn(f64) -> f64, f64) {
    fn bilinear(x: f64) -> f64 {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    }
    fn bicubic(x: f64) -> f64 {
        // Pillow's BICUBIC, a = -0.5.
        let a = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    }
    fn boxf(x: f64) -> f64 {
        if (-0.5..0.5).contains(&x) {
            1.0
        } else {
            0.0
        }
    }
    match f {
        Filter::Lanczos3 => (crate::ops::lanczos_replay::lanczos3, 3.0),
        Filter::Bilinear => (bilinear, 1.0),
        Filter::CatmullRom => (bicubic, 2.0),
        Filter::Box | Filter::Nearest => (boxf, 0.5),
    }
}

/// Fixed-point weights of the single output pixel over an input axis of
/// `size` pixels, and the first input index they apply to.
fn coefficients(size: usize, f: Filter) -> (usize, Vec<i32>) {
    let (func, support) = filter(f);
    let scale = size as f64; // (in1 - in0) / out_size with out_size = 1
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let center = 0.5 * scale;
    let ss = 1.0 / filterscale;
    let xmin = ((center - support + 0.5) as i64).max(0) as usize;
    let xmax = ((center + support + 0.5) as i64).min(size as i64) as usize;
    let n = xmax.saturating_sub(xmin);
    let mut k: Vec<f64> = (0..n)
        .map(|x| func((x as f64 + xmin as f64 - center + 0.5) * ss))
        .collect();
    let ww: f64 = k.iter().sum();
    if ww != 0.0 {
        for v in &mut k {
            *v /= ww;
        }
    }
    let fixed = k
        .iter()
        .map(|&v| {
            let r = if v < 0.0 { -0.5 } else { 0.5 };
            (v * f64::from(1u32 << PRECISION_BITS) + r) as i32
        })
        .collect();
    (xmin, fixed)
}

/// Rectangles at least this large have their rows summed in parallel
/// (an XL tile is one per cell, so nothing else would use the other cores).
const PARALLEL_PIXELS: usize = 1 << 20;

/// Σ px[i]·w3[i] per channel of RGB bytes `px`, in 32-bit lanes: only called
/// when no partial sum can overflow. Uses AVX2 when the CPU has it (8 lanes
/// per instruction; the portable build targets SSE2, which has no 32-bit
/// multiply), the same code compiled for the baseline otherwise.
fn weighted_row_i32(px: &[u8], w3: &[i32]) -> [i64; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { weighted_row_i32_avx2(px, w3) };
        }
    }
    weighted_row_i32_lanes(px, w3)
}

/// [`weighted_row_i32_lanes`] with AVX2 intrinsics (the auto-vectorizer
/// does not turn the byte-to-int widening into `vpmovzxbd`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn weighted_row_i32_avx2(px: &[u8], w3: &[i32]) -> [i64; 3] {
    use std::arch::x86_64::*;
    const LANES: usize = 24;
    let n = px.len().min(w3.len()) / LANES * LANES;
    let mut acc = [_mm256_setzero_si256(); 3];
    for (p, w) in px[..n].chunks_exact(LANES).zip(w3[..n].chunks_exact(LANES)) {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `p` has 24 bytes and `w` 24 ints (chunks_exact), so
            // the 8 bytes and 8 ints at `8k` (k < 3) are in bounds;
            // unaligned loads.
            let (bytes, ints) = unsafe {
                (
                    _mm_loadl_epi64(p.as_ptr().add(8 * k).cast::<__m128i>()),
                    _mm256_loadu_si256(w.as_ptr().add(8 * k).cast::<__m256i>()),
                )
            };
            let prod = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(bytes), ints);
            *a = _mm256_add_epi32(*a, prod);
        }
    }
    let mut lanes = [0i32; LANES];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: `lanes[8k..8k + 8]` is in bounds for k < 3; unaligned store.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * k).cast::<__m256i>(), *a) };
    }
    let mut sums = [0i64; 3];
    for (j, a) in lanes.iter().enumerate() {
        sums[j % 3] += i64::from(*a);
    }
    for (j, (p, w)) in px[n..].iter().zip(&w3[n..]).enumerate() {
        sums[j % 3] += i64::from(*p) * i64::from(*w);
    }
    sums
}

fn weighted_row_i32_lanes(px: &[u8], w3: &[i32]) -> [i64; 3] {
    const LANES: usize = 24; // a multiple of 3 and of 8
    let mut acc = [0i32; LANES];
    let mut pc = px.chunks_exact(LANES);
    let mut wc = w3.chunks_exact(LANES);
    for (p, w) in (&mut pc).zip(&mut wc) {
        for j in 0..LANES {
            acc[j] += i32::from(p[j]) * w[j];
        }
    }
    let mut sums = [0i64; 3];
    for (j, a) in acc.iter().enumerate() {
        sums[j % 3] += i64::from(*a);
    }
    for (j, (p, w)) in pc.remainder().iter().zip(wc.remainder()).enumerate() {
        sums[j % 3] += i64::from(*p) * i64::from(*w);
    }
    sums
}

/// [`weighted_row_i32`] in 64 bits, for weights that could overflow 32.
fn weighted_row_i64(px: &[u8], w3: &[i32]) -> [i64; 3] {
    let mut sums = [0i64; 3];
    for (j, (p, w)) in px.iter().zip(w3).enumerate() {
        sums[j % 3] += i64::from(*p) * i64::from(*w);
    }
    sums
}

/// Rows ahead whose bytes a small tile's pass asks the cache for
/// ([`prefetch`]).
const AHEAD: usize = 4;

/// Asks the CPU to bring `bytes` into its caches. A small tile's rows are
/// a few hundred bytes each, an image row (11 KB for a 3840² cell) apart:
/// each row starts on a new page, where the hardware prefetcher does not
/// follow, so every row of a 96² tile waited for memory. Measured on the
/// 20× bench slide (`cpia build -j 2`, two interleaved sets of 6 builds,
/// both binaries with transparent huge pages off): 0.785 / 0.79 s → 0.75 /
/// 0.745 s, and the statistics from 11.6 % to 5.8 % of the build's CPU
/// samples (`perf record`). Prefetching 8 rows ahead instead of 4 made no
/// difference; 16-bit multiply-adds (`vpmaddwd`) instead of 32-bit
/// multiplies, before this, none either: the rows waited for memory.
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint: it reads nothing and cannot fault;
        // the address is inside `bytes` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// The (r, g, b) of `img` resized to 1×1 with Pillow's `f` filter.
pub fn statistic(img: &RgbImage, f: Filter) -> [u8; 3] {
    statistic_of(img, 0, 0, img.width(), img.height(), f)
}

/// [`statistic`] of the `w`×`h` rectangle of `img` at `(rx, ry)`, read in
/// place (a WSI tile is such a rectangle of its cell's image).
pub fn statistic_of(img: &RgbImage, rx: u32, ry: u32, w: u32, h: u32, f: Filter) -> [u8; 3] {
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 {
        return [0, 0, 0];
    }
    if f == Filter::Nearest {
        // Pillow's NEAREST picks the pixel under the output centre.
        let p = img.get_pixel(rx + (w / 2) as u32, ry + (h / 2) as u32);
        return p.0;
    }
    let (x0, kx) = coefficients(w, f);
    let (y0, ky) = coefficients(h, f);
    let raw = img.as_raw();
    let pitch = img.width() as usize * 3;
    let (rx, ry) = (rx as usize, ry as usize);
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass over the rows the vertical pass needs, rounded to u8
    // (three full passes over a 3840² image per cell: this is hot). Pillow
    // sums in 32-bit ints; so does this whenever no sum can overflow, in
    // 24 independent lanes the compiler vectorizes (integer sums do not
    // depend on their order), else in 64-bit.
    let span = (rx + x0) * 3..(rx + x0 + kx.len()) * 3;
    let w3: Vec<i32> = kx.iter().flat_map(|&k| [k, k, k]).collect();
    let bound = 255 * kx.iter().map(|&k| i64::from(k).abs()).sum::<i64>() + half;
    let narrow = bound < i64::from(i32::MAX);
    let row_of = |y: usize| -> [u8; 3] {
        let start = (ry + y) * pitch;
        let px = &raw[start + span.start..start + span.end];
        let [r, g, b] = if narrow {
            weighted_row_i32(px, &w3)
        } else {
            weighted_row_i64(px, &w3)
        };
        [clip8(r + half), clip8(g + half), clip8(b + half)]
    };
    let rows = y0..y0 + ky.len();
    let column: Vec<[u8; 3]> = if w * h >= PARALLEL_PIXELS {
        use rayon::prelude::*;
        rows.into_par_iter().map(row_of).collect()
    } else {
        let end = rows.end;
        rows.map(|y| {
            if y + AHEAD < end {
                let start = (ry + y + AHEAD) * pitch;
                prefetch(&raw[start + span.start..start + span.end]);
            }
            row_of(y)
        })
        .collect()
    };
    let mut s = [half; 3];
    for (px, &k) in column.iter().zip(&ky) {
        for c in 0..3 {
            s[c] += i64::from(px[c]) * i64::from(k);
        }
    }
    [clip8(s[0]), clip8(s[1]), clip8(s[2])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_equal_plain_sums() {
        // Lengths around the 24-byte lanes, weights of both signs.
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            h
        };
        for n in [1usize, 7, 8, 9, 23, 24, 25, 100, 3840] {
            let px: Vec<u8> = (0..n * 3).map(|_| next() as u8).collect();
            let k: Vec<i32> = (0..n).map(|_| (next() % 20001) as i32 - 10000).collect();
            let w3: Vec<i32> = k.iter().flat_map(|&k| [k, k, k]).collect();
            let wide = weighted_row_i64(&px, &w3);
            assert_eq!(weighted_row_i32(&px, &w3), wide, "n = {n}");
            assert_eq!(weighted_row_i32_lanes(&px, &w3), wide, "n = {n}");
        }
    }

    #[test]
    fn uniform_images_keep_their_colour() {
        let img = RgbImage::from_pixel(384, 384, image::Rgb([200, 150, 90]));
        assert_eq!(statistic(&img, Filter::Lanczos3), [200, 150, 90]);
        assert_eq!(statistic(&img, Filter::Bilinear), [200, 150, 90]);
    }

    #[test]
    fn lanczos_weights_the_centre() {
        // Dark centre, white border: the centre-weighted statistic is darker
        // than the plain mean.
        let img = RgbImage::from_fn(300, 300, |x, y| {
            if (100..200).contains(&x) && (100..200).contains(&y) {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let mean = 255.0 * (1.0 - 1.0 / 9.0);
        let s = statistic(&img, Filter::Lanczos3);
        assert!(f64::from(s[0]) < mean - 2.0, "{s:?} vs plain mean {mean}");
    }

    /// Compares with Pillow itself (python3 + PIL: a missing need).
    #[test]
    fn matches_pillow_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cases = Vec::new();
        for (i, (w, h)) in [
            (96usize, 96usize),
            (384, 384),
            (960, 960),
            (123, 77),
            (1000, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let mut seed = 0x9e37_79b9u32.wrapping_mul(i as u32 + 1);
            let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let base = ((x * 3 + y * 5) % 200) as u8;
                image::Rgb([base.wrapping_add(seed as u8 % 50), base, (seed >> 8) as u8])
            });
            let path = dir.path().join(format!("{i}.png"));
            img.save(&path).unwrap();
            cases.push((path, img));
        }
        let script = "import sys\nfrom PIL import Image\nfor p in sys.argv[1:]:\n    im = Image.open(p).convert('RGB')\n    a = im.resize((1, 1), Image.LANCZOS).getpixel((0, 0))\n    b = im.resize((1, 1), Image.BILINEAR).getpixel((0, 0))\n    print(*a, *b)\n";
        let paths: Vec<&std::ffi::OsStr> = cases.iter().map(|(p, _)| p.as_os_str()).collect();
        let Some(stdout) = crate::python::pillow(script, &paths, &[]) else {
            return;
        };
        let text = String::from_utf8(stdout).unwrap();
        assert_eq!(text.lines().count(), cases.len(), "{text}");
        for ((_, img), line) in cases.iter().zip(text.lines()) {
            let v: Vec<u8> = line.split(' ').map(|s| s.parse().unwrap()).collect();
            assert_eq!(
                statistic(img, Filter::Lanczos3).to_vec(),
                v[0..3],
                "lanczos"
            );
            assert_eq!(
                statistic(img, Filter::Bilinear).to_vec(),
                v[3..6],
                "bilinear"
            );
        }
    }
}
