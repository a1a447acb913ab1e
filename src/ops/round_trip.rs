//! `jpeg_round_trip`: an image saved as a JPEG and read back.
//!
//! The CPIA reference prepared four collections distributed as PNG or BMP
//! (BreakHis, GasHisSDB, SIPaKMeD, Warwick QU) with scripts
//! (`CPIA_ROI_0_<collection>.py`) that save every image, whole, as a JPEG with
//! Pillow's defaults — quality 75, 4:2:0 — and its crop and resize
//! (`CPIA_ROI_1_Crop&Resize.py`) then read those JPEGs. So the published
//! images of those collections went through one more JPEG generation than the
//! others. This operator is that generation: the same encoder as
//! `encode_jpeg` (libjpeg-turbo, the settings Pillow uses) and the same
//! decoder as `decode`, so its pixels are Pillow's save-and-open (tested
//! against Pillow below).

use super::{decode, encode, JpegParams, OpError, RgbImage};

/// `img` encoded as a baseline JPEG with `p` and decoded again.
pub fn round_trip(img: &RgbImage, p: &JpegParams) -> Result<RgbImage, OpError> {
    let jpeg = encode::encode_jpeg(img, p)?;
    decode::decode(&jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{diff, roi_dir};

    #[test]
    fn the_size_stays_and_the_pixels_are_those_of_the_jpeg() {
        let img = RgbImage::from_fn(97, 61, |x, y| image::Rgb([x as u8 * 2, y as u8 * 4, 90]));
        let p = JpegParams::default();
        let out = round_trip(&img, &p).unwrap();
        assert_eq!(out.dimensions(), (97, 61));
        assert_ne!(out, img, "a q75 JPEG generation changes pixels");
        let jpeg = encode::encode_jpeg(&img, &p).unwrap();
        assert_eq!(out, decode::decode(&jpeg).unwrap());
        assert!(round_trip(&RgbImage::new(0, 4), &p).is_err());
    }

    /// The reference's preparation step, `Image.open(png).save(jpg)` then
    /// `Image.open(jpg)`, in Pillow, against this operator on the decoded
    /// PNG: the same pixels (same libjpeg-turbo settings on both sides).
    #[test]
    fn equals_pillows_save_and_open() {
        let Some(dir) = roi_dir() else { return };
        let script = "import sys, io\nfrom PIL import Image\n\
            for p in sys.argv[1:]:\n\
            \x20   buf = io.BytesIO()\n\
            \x20   Image.open(p).convert('RGB').save(buf, 'JPEG')\n\
            \x20   buf.seek(0)\n\
            \x20   sys.stdout.buffer.write(Image.open(buf).convert('RGB').tobytes())\n";
        let names = [
            "tiatoolbox_target_image.png",
            "histolab_high-nuclei-score-level0.png",
            "skimage_ihc.png",
        ];
        let paths: Vec<std::path::PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let args: Vec<&std::ffi::OsStr> = paths.iter().map(|p| p.as_os_str()).collect();
        let Some(pillow) = crate::python::pillow(script, &args, &[]) else {
            return;
        };
        let mut at = 0;
        for path in &paths {
            let img = decode::decode(&std::fs::read(path).unwrap()).unwrap();
            let ours = round_trip(&img, &JpegParams::default()).unwrap();
            let theirs = &pillow[at..at + ours.as_raw().len()];
            at += ours.as_raw().len();
            let (mean, max) = diff(ours.as_raw(), theirs);
            eprintln!("{}: max {max}, mean {mean:.5}", path.display());
            assert_eq!(max, 0, "{}: mean {mean}", path.display());
        }
        assert_eq!(at, pillow.len());
    }
}
