use super::*;
use crate::ops::encode::{encode_jpeg, encode_jpeg_region};
use crate::ops::{JpegParams, RgbImage, Subsampling};

/// Texture with every kind of block: smooth gradients, noise (long AC
/// runs, 0xFF bytes to stuff), hard black/white edges (large DC steps).
fn busy(w: u32, h: u32) -> RgbImage {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (state >> 56) as u8;
        match (x / 40 + y / 24) % 4 {
            0 => image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]),
            1 => image::Rgb([n, n.wrapping_mul(3), n ^ 0x5A]),
            2 => {
                let v = if (x / 3 + y / 5) % 2 == 0 { 0 } else { 255 };
                image::Rgb([v, 255 - v, v])
            }
            _ => image::Rgb([200, 120 + (n % 40), 170]),
        }
    })
}

fn params(quality: u8, subsampling: Subsampling) -> JpegParams {
    JpegParams {
        quality,
        subsampling,
    }
}

/// Every crop of `rects` from `img`'s JPEG equals encoding its pixels.
fn assert_crops_equal_pixels(img: &RgbImage, p: &JpegParams, rects: &[(u32, u32, u32, u32)]) {
    let whole = encode_jpeg(img, p).unwrap();
    let ix = Indexed::new(&whole).unwrap();
    for &(x, y, w, h) in rects {
        let crop = ix.crop(x, y, w, h).unwrap();
        let pixels = encode_jpeg_region(img, x, y, w, h, p).unwrap();
        assert!(
            crop == pixels,
            "{w}×{h} at ({x}, {y}), q{} {:?}: {} bytes cropped, {} encoded",
            p.quality,
            p.subsampling,
            crop.len(),
            pixels.len()
        );
    }
}

#[test]
fn crops_are_the_bytes_of_encoding_their_pixels() {
    let img = busy(480, 320);
    for (s, (mw, mh)) in [
        (Subsampling::S420, (16, 16)),
        (Subsampling::S422, (16, 8)),
        (Subsampling::S444, (8, 8)),
    ] {
        for q in [1, 50, 75, 90, 100] {
            let p = params(q, s);
            let rects = [
                (0, 0, 480, 320),
                (0, 0, 96, 96),
                (mw, mh, mw, mh),
                (480 - 160, 320 - 96, 160, 96),
                (4 * mw, 2 * mh, 240, 5 * mh),
                (0, 8 * mh, 480, 2 * mh),
            ];
            assert_crops_equal_pixels(&img, &p, &rects);
            let ix = Indexed::new(&encode_jpeg(&img, &p).unwrap()).unwrap();
            assert_eq!(ix.mcu(), (mw, mh));
        }
    }
}

#[test]
fn crops_of_real_tissue_at_the_cpia_scales() {
    // The standard's geometry scaled to a real 1000² H&E image: a 960²
    // "XL" tile, its 240² "L", 96² "M" and 16² "S" children (all on the
    // 16-px grid, as 960, 384 and 96 are of 3840).
    let Some(bytes) = crate::ops::testutil::roi_file("tiatoolbox_target_image.png") else {
        return;
    };
    let img = crate::ops::decode::decode(&bytes).unwrap();
    let xl = image::imageops::crop_imm(&img, 16, 32, 960, 960).to_image();
    let mut rects = Vec::new();
    for size in [240u32, 96, 16] {
        let k = 960 / size;
        for n in 0..k * k {
            rects.push(((n % k) * size, (n / k) * size, size, size));
        }
    }
    assert_crops_equal_pixels(&xl, &params(75, Subsampling::S420), &rects);
}

#[test]
fn what_is_not_exact_is_refused() {
    let img = busy(64, 64);
    let p = params(75, Subsampling::S420);
    let ix = Indexed::new(&encode_jpeg(&img, &p).unwrap()).unwrap();
    for (x, y, w, h) in [
        (8, 0, 16, 16),
        (0, 0, 24, 16),
        (0, 0, 0, 16),
        (48, 48, 32, 16),
    ] {
        assert!(ix.crop(x, y, w, h).is_err(), "{w}×{h} at ({x}, {y})");
    }
    // Not a JPEG, a truncated one, a progressive one.
    assert!(Indexed::new(b"not a jpeg").is_err());
    let whole = encode_jpeg(&img, &p).unwrap();
    assert!(Indexed::new(&whole[..whole.len() / 2]).is_err());
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_progressive(true).unwrap();
    let image = turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width: 64,
        pitch: 64 * 3,
        height: 64,
        format: turbojpeg::PixelFormat::RGB,
    };
    let progressive = c.compress_to_vec(image).unwrap();
    let e = Indexed::new(&progressive).err().unwrap();
    assert!(e.0.contains("baseline"), "{e}");
}

/// The JPEG of `img` made as strips of `rows` rows (the last one shorter),
/// each encoded and indexed alone, then stacked.
fn stacked(img: &RgbImage, p: &JpegParams, rows: u32) -> (Vec<u8>, Indexed) {
    let strips: Vec<Indexed> = (0..img.height().div_ceil(rows))
        .map(|k| {
            let y = k * rows;
            let h = rows.min(img.height() - y);
            let jpeg = encode_jpeg_region(img, 0, y, img.width(), h, p).unwrap();
            Indexed::new(&jpeg).unwrap()
        })
        .collect();
    Indexed::stack(strips).unwrap()
}

#[test]
fn stacked_strips_are_the_bytes_of_encoding_the_whole_image() {
    let img = busy(480, 328);
    for (s, mh) in [
        (Subsampling::S420, 16),
        (Subsampling::S422, 8),
        (Subsampling::S444, 8),
    ] {
        for q in [1, 75, 100] {
            let p = params(q, s);
            let whole = encode_jpeg(&img, &p).unwrap();
            let ix = Indexed::new(&whole).unwrap();
            for rows in [mh, 3 * mh, 160, 480] {
                let (jpeg, stacked_ix) = stacked(&img, &p, rows);
                assert!(jpeg == whole, "q{q} {s:?}, strips of {rows} rows");
                // The stacked index cuts what the whole one cuts.
                for (x, y, w, h) in [
                    (0, 0, 480, 320),
                    (32, 2 * mh, 96, 4 * mh),
                    (448, 304, 32, 16),
                ] {
                    let want = ix.crop(x, y, w, h).unwrap();
                    assert!(
                        stacked_ix.crop(x, y, w, h).unwrap() == want,
                        "{w}×{h} at ({x}, {y})"
                    );
                }
            }
        }
    }
    // Strips of more than one MCU each are joined in parallel, a piece per
    // strip; strips of one MCU (too short to begin the byte of the strip
    // below) on one thread, in one piece: the same bytes either way.
    for (w, rows, pieces) in [(480, 16, 21), (32, 16, 21), (16, 16, 1)] {
        let img = busy(w, 328);
        let p = params(75, Subsampling::S420);
        let strips: Vec<Indexed> = (0..328u32.div_ceil(rows))
            .map(|k| {
                let h = rows.min(328 - k * rows);
                Indexed::new(&encode_jpeg_region(&img, 0, k * rows, w, h, &p).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(
            super::stack::joined_scans(&strips).unwrap().len(),
            pieces,
            "{w} wide"
        );
        assert!(
            stacked(&img, &p, rows).0 == encode_jpeg(&img, &p).unwrap(),
            "{w} wide"
        );
    }
    // Strips that are not one image on one grid are refused.
    let p = params(75, Subsampling::S420);
    let strip = |y, h, q| {
        let jpeg = encode_jpeg_region(&img, 0, y, 480, h, &params(q, Subsampling::S420)).unwrap();
        Indexed::new(&jpeg).unwrap()
    };
    assert!(Indexed::stack(vec![strip(0, 24, 75), strip(24, 32, 75)]).is_err());
    assert!(Indexed::stack(vec![strip(0, 32, 75), strip(32, 32, 90)]).is_err());
    assert!(Indexed::stack(Vec::new()).is_err());
    let narrow = Indexed::new(&encode_jpeg_region(&img, 0, 32, 240, 32, &p).unwrap()).unwrap();
    assert!(Indexed::stack(vec![strip(0, 32, 75), narrow]).is_err());
}

#[test]
fn stacked_strips_of_real_tissue_are_the_whole_encoding() {
    let Some(bytes) = crate::ops::testutil::roi_file("tiatoolbox_target_image.png") else {
        return;
    };
    let img = crate::ops::decode::decode(&bytes).unwrap();
    let p = params(75, Subsampling::S420);
    let whole = encode_jpeg(&img, &p).unwrap();
    for rows in [16, 496, 512] {
        assert!(stacked(&img, &p, rows).0 == whole, "strips of {rows} rows");
    }
}
