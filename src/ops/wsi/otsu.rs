//! A second tissue detector, for slides where the CPIA colour rule fails (IHC,
//! faded or unusual stains): Otsu's threshold on the HSV saturation of a
//! low-resolution thumbnail, after a median filter, cleaned by a morphological
//! closing — the segmentation CLAM uses (`mthresh = 7`, `close = 4`).

use crate::ops::RgbImage;

/// Parameters of the Otsu detector.
#[derive(Clone, Debug, PartialEq)]
pub struct OtsuParams {
    /// Longest edge of the thumbnail the mask is computed on.
    pub thumbnail: u32,
    /// Median filter window (odd; 1 = none).
    pub median: u32,
    /// Closing kernel edge (0 = none).
    pub close: u32,
    /// A tile is tissue iff at least this share of its area is in the mask.
    pub min_fraction: f64,
}

impl Default for OtsuParams {
    fn default() -> Self {
        OtsuParams {
            thumbnail: 2048,
            median: 7,
            close: 4,
            min_fraction: 0.25,
        }
    }
}

/// A binary tissue mask over a slide thumbnail.
#[derive(Clone, Debug, PartialEq)]
pub struct TissueMask {
    pub width: u32,
    pub height: u32,
    /// Level-0 pixels per mask pixel.
    pub scale: f64,
    /// The Otsu threshold found on the saturation channel.
    pub threshold: u8,
    bits: Vec<bool>,
}

impl TissueMask {
    /// Share of the level-0 square `(x0, y0, size)` that the mask marks as tissue.
    pub fn fraction(&self, x0: u64, y0: u64, size: u64) -> f64 {
        let to = |v: u64, max: u32| ((v as f64 / self.scale).round() as u64).min(u64::from(max));
        let (mx0, my0) = (to(x0, self.width), to(y0, self.height));
        let (mx1, my1) = (to(x0 + size, self.width), to(y0 + size, self.height));
        let (mut total, mut on) = (0u64, 0u64);
        for y in my0..my1.max(my0 + 1).min(u64::from(self.height)) {
            for x in mx0..mx1.max(mx0 + 1).min(u64::from(self.width)) {
                total += 1;
                on += u64::from(self.bits[(y * u64::from(self.width) + x) as usize]);
            }
        }
        if total == 0 {
            0.0
        } else {
            on as f64 / total as f64
        }
    }

    /// Whether mask pixel (x, y) is tissue.
    pub fn get(&self, x: u32, y: u32) -> bool {
        self.bits[(y * self.width + x) as usize]
    }
}

/// Computes the mask of `thumb`, whose pixels each cover `scale` level-0 pixels.
pub fn mask(thumb: &RgbImage, scale: f64, p: &OtsuParams) -> TissueMask {
    let (w, h) = (thumb.width(), thumb.height());
    let sat: Vec<u8> = thumb
        .pixels()
        .map(|px| {
            let [r, g, b] = px.0;
            let max = r.max(g).max(b);
            let min = r.min(g).min(b);
            if max == 0 {
                0
            } else {
                ((u32::from(max - min) * 255 + u32::from(max) / 2) / u32::from(max)) as u8
            }
        })
        .collect();
    let sat = median(&sat, w, h, p.median);
    let threshold = otsu(&sat);
    let bits: Vec<bool> = sat.iter().map(|&s| s > threshold).collect();
    let bits = if p.close > 0 {
        let d = morph(&bits, w, h, p.close, true);
        morph(&d, w, h, p.close, false)
    } else {
        bits
    };
    TissueMask {
        width: w,
        height: h,
        scale,
        threshold,
        bits,
    }
}

/// Otsu's threshold: the level maximizing the between-class variance.
pub fn otsu(values: &[u8]) -> u8 {
    let mut hist = [0u64; 256];
    for &v in values {
        hist[usize::from(v)] += 1;
    }
    let total = values.len() as f64;
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0.0, 0.0, -1.0, 0u8);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum - sum0) / w1;
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// Median filter with a `k`×`k` window, edges replicated.
fn median(src: &[u8], w: u32, h: u32, k: u32) -> Vec<u8> {
    if k <= 1 {
        return src.to_vec();
    }
    let (w, h, r) = (w as i64, h as i64, i64::from(k / 2));
    let at = |x: i64, y: i64| src[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize];
    let half = k * k / 2;
    let mut out = vec![0u8; src.len()];
    for y in 0..h {
        // Sliding histogram along the row.
        let mut hist = [0u32; 256];
        for dy in -r..=r {
            for dx in -r..=r {
                hist[usize::from(at(dx, y + dy))] += 1;
            }
        }
        for x in 0..w {
            if x > 0 {
                for dy in -r..=r {
                    hist[usize::from(at(x - 1 - r, y + dy))] -= 1;
                    hist[usize::from(at(x + r, y + dy))] += 1;
                }
            }
            let mut acc = 0;
            for (v, &c) in hist.iter().enumerate() {
                acc += c;
                if acc > half {
                    out[(y * w + x) as usize] = v as u8;
                    break;
                }
            }
        }
    }
    out
}

/// Dilation (`dilate`) or erosion with a `k`×`k` square over the pixels
/// inside the image (as OpenCV's default border: the outside never erodes).
fn morph(src: &[bool], w: u32, h: u32, k: u32, dilate: bool) -> Vec<bool> {
    let (w, h) = (w as i64, h as i64);
    let lo = -i64::from(k / 2);
    let hi = lo + i64::from(k) - 1;
    let mut out = vec![false; src.len()];
    for y in 0..h {
        for x in 0..w {
            let mut any = false;
            let mut all = true;
            for dy in lo..=hi {
                for dx in lo..=hi {
                    let (xx, yy) = (x + dx, y + dy);
                    if xx < 0 || yy < 0 || xx >= w || yy >= h {
                        continue;
                    }
                    let v = src[(yy * w + xx) as usize];
                    any |= v;
                    all &= v;
                }
            }
            out[(y * w + x) as usize] = if dilate { any } else { all };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_populations() {
        let mut v = vec![10u8; 500];
        v.extend(vec![200u8; 500]);
        let t = otsu(&v);
        assert!((10..200).contains(&t), "{t}");
    }

    #[test]
    fn saturated_tissue_is_found_on_grey_glass() {
        // Left half saturated brown (IHC-like), right half grey glass.
        let thumb = RgbImage::from_fn(100, 60, |x, _| {
            if x < 50 {
                image::Rgb([150, 100, 60])
            } else {
                image::Rgb([225, 225, 228])
            }
        });
        let m = mask(&thumb, 10.0, &OtsuParams::default());
        assert!(m.fraction(0, 0, 400) > 0.99);
        assert!(m.fraction(700, 0, 200) < 0.01);
        assert!((m.fraction(300, 0, 400) - 0.5).abs() < 0.1);
    }
}
