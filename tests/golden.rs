//! Golden outputs: the blake3 of every operator's output on fixed real
//! inputs (`shared/testdata`), as this cpia makes them.
//!
//! Library versions are recorded with every output but are not in any key
//! (src/plan/libraries.rs says why); an operator's version is. So when a
//! dependency update (image, png, tiff, zune-jpeg, fast_image_resize,
//! libjpeg-turbo, the system's OpenSlide) or a change of our own code alters
//! the bytes an operator makes, these tests fail, naming the operator, and
//! the fix is a decision: bump that operator's version (its outputs are
//! rebuilt) — never a silent change of the dataset's pixels.
//!
//! `CPIA_GOLDEN_PRINT=1 cargo test --release --test golden -- --nocapture`
//! prints every case's current hash.

mod common;

use std::path::Path;
use std::sync::Arc;

use cpia::ops::wsi::{self, otsu, qc, GridParams, LevelPolicy, ReaderChoice, Region};
use cpia::ops::{
    CropParams, DecodeParams, Filter, JpegParams, Operator, ResizeParams, Subsampling, Value,
};
use cpia::slide::{self, Reader, Slide};

/// (case, blake3 prefix of what the operator makes). The case's first word
/// is the operator (or, for `read`, the slide reader).
const GOLDEN: &[(&str, &str)] = &[
    ("decode png rgb", "9f3c414ce3f430dcabdf9980"),
    ("decode png rgba", "ee97dadfdd5de7782d0a4d57"),
    ("decode tiff", "22abfda00eabc28751315343"),
    ("crop centre square", "923ffd55771854b7e902485b"),
    ("resize lanczos3 down", "a863e2a2ca6298d7cccb9d66"),
    ("resize lanczos3 up", "19461200f4a3387917f5f746"),
    ("resize catmullrom down", "989e567aa031ea7eacb88e2e"),
    ("resize catmullrom up", "ee582881b71dc6e35f51de47"),
    ("resize bilinear down", "fad6f2dc2b1fdd01c06f5e38"),
    ("resize bilinear up", "505c39ba6397bffb46cfe5b6"),
    ("resize box down", "3b9bb2b612db85a93184ec2a"),
    ("resize box up", "40e07543d8cef64bd9ea784f"),
    ("resize nearest down", "9ce484934503ead923a5faa8"),
    ("resize nearest up", "40e07543d8cef64bd9ea784f"),
    ("encode_jpeg q75 4:2:0", "e798ea2b3fadf02619f574be"),
    ("decode jpeg q75 4:2:0", "34e74b28854eef1d36d0df41"),
    ("encode_jpeg q90 4:4:4", "7a12e4c75f17804576b61d44"),
    ("decode jpeg q90 4:4:4", "1af14ab02a17d54da992d4dc"),
    ("encode_jpeg q80 4:2:2", "c3510f01d03f550feff66cd6"),
    ("decode jpeg q80 4:2:2", "9f10210d9b505964c6a00e6f"),
    // Encode then decode: the bytes of `decode jpeg q75 4:2:0` (same PNG).
    ("jpeg_round_trip q75 4:2:0", "34e74b28854eef1d36d0df41"),
    // Lossless: the pixels of `decode png rgb`.
    ("decode bmp", "9f3c414ce3f430dcabdf9980"),
    ("tissue color", "00100001000011000110001100011100111"),
    ("read direct level 0", "5942774a273a9cb268145264"),
    ("read openslide level 0", "5942774a273a9cb268145264"),
    ("read openslide thumbnail", "f6838f68a8e14ade7bbe3148"),
    ("wsi_grid native", "7cb67fbde0e2664823b35a06"),
    ("wsi_grid resized", "3d7fb0ed3d9ca865e6a64623"),
    ("tissue otsu mask", "threshold 46 fraction 0.347594"),
    ("subtiles 96", "6d20ed16e9028de1ee02565d"),
    ("encode_tiles q75 4:2:0", "9ec224f6c9d206ea4098576f"),
    ("qc picture png", "568fbbf816ca1d84fd0d7ddd"),
];

fn h(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..24].to_string()
}

fn image_of(v: &Value) -> Arc<cpia::ops::RgbImage> {
    match v {
        Value::Image(i) => i.clone(),
        other => panic!("not an image: {other:?}"),
    }
}

fn bytes_of(v: &Value) -> Arc<Vec<u8>> {
    match v {
        Value::Encoded(b) => b.clone(),
        other => panic!("not encoded bytes: {other:?}"),
    }
}

/// A hash of a set of tiles: positions, sizes and pixels.
fn tiles_hash(t: &wsi::Tiles) -> String {
    let mut hasher = blake3::Hasher::new();
    for tile in &t.tiles {
        for v in [tile.x, tile.y, tile.size] {
            hasher.update(&v.to_le_bytes());
        }
        for row in 0..tile.size {
            let start = ((tile.oy + row) * tile.image.width() + tile.ox) as usize * 3;
            hasher.update(&tile.image.as_raw()[start..start + tile.size as usize * 3]);
        }
    }
    hasher.finalize().to_hex()[..24].to_string()
}

fn run(op: &Operator, input: Value) -> Value {
    op.apply(&[input])
        .unwrap_or_else(|e| panic!("{}: {e}", op.name()))
}

/// Every ROI operator on real images.
fn roi_cases(td: &Path, out: &mut Vec<(String, String)>) {
    let decode = Operator::Decode(DecodeParams::default());
    let read = |f: &str| Value::Bytes(Arc::new(std::fs::read(td.join("roi").join(f)).unwrap()));
    let mut add = |case: &str, hash: String| out.push((case.to_string(), hash));
    let png = run(&decode, read("tiatoolbox_source_image.png"));
    add("decode png rgb", h(image_of(&png).as_raw()));
    let rgba = run(&decode, read("histolab_high-nuclei-score-level0.png"));
    add("decode png rgba", h(image_of(&rgba).as_raw()));
    let tif = run(&decode, read("nct-crc-he-100k_kather1.tif"));
    add("decode tiff", h(image_of(&tif).as_raw()));
    let small = run(
        &decode,
        read("histolab_kidney-ihc-level0-310-500-360-530.png"),
    );

    let crop = Operator::Crop(CropParams::centre_square());
    let square = run(&crop, rgba.clone());
    add("crop centre square", h(image_of(&square).as_raw()));

    for f in Filter::ALL {
        let resize = Operator::Resize(ResizeParams {
            width: 384,
            height: 384,
            filter: f,
        });
        let down = run(&resize, square.clone());
        add(
            &format!("resize {} down", f.as_str()),
            h(image_of(&down).as_raw()),
        );
        let up = run(&resize, small.clone());
        add(
            &format!("resize {} up", f.as_str()),
            h(image_of(&up).as_raw()),
        );
    }

    for (q, s) in [
        (75, Subsampling::S420),
        (90, Subsampling::S444),
        (80, Subsampling::S422),
    ] {
        let enc = Operator::EncodeJpeg(JpegParams {
            quality: q,
            subsampling: s,
        });
        let jpeg = run(&enc, png.clone());
        add(
            &format!("encode_jpeg q{q} {}", s.as_str()),
            h(&bytes_of(&jpeg)),
        );
        // The JPEG decoder, on a JPEG of known bytes.
        let back = run(&decode, Value::Bytes(bytes_of(&jpeg)));
        add(
            &format!("decode jpeg q{q} {}", s.as_str()),
            h(image_of(&back).as_raw()),
        );
    }

    // The reference's JPEG copy of PNG/BMP collections (BreakHis,
    // GasHisSDB, SIPaKMeD, Warwick QU): encode, then decode.
    let copy = Operator::JpegRoundTrip(JpegParams {
        quality: 75,
        subsampling: Subsampling::S420,
    });
    let copied = run(&copy, png.clone());
    add("jpeg_round_trip q75 4:2:0", h(image_of(&copied).as_raw()));

    // BMP (SIPaKMeD's format): no BMP in the test data, so the PNG's pixels
    // written as one. BMP is lossless, so the decoder must give them back.
    let mut bmp = std::io::Cursor::new(Vec::new());
    image_of(&png)
        .write_to(&mut bmp, image::ImageFormat::Bmp)
        .unwrap();
    let from_bmp = run(&decode, Value::Bytes(Arc::new(bmp.into_inner())));
    assert_eq!(
        image_of(&from_bmp).as_raw(),
        image_of(&png).as_raw(),
        "the BMP decoder changed the pixels of a lossless BMP"
    );
    add("decode bmp", h(image_of(&from_bmp).as_raw()));
}

/// The slide readers and every WSI operator on a real slide, with a scaled
/// geometry (the small slides hold no 3840-px tile).
fn wsi_cases(td: &Path, out: &mut Vec<(String, String)>) {
    let slide = Slide::open(&td.join("wsi/CMU-1-Small-Region.svs")).unwrap();
    let mut add = |case: &str, hash: String| out.push((case.to_string(), hash));
    assert_eq!(
        slide.effective_reader(ReaderChoice::Auto, 0),
        Reader::Direct,
        "the direct reader does not serve this slide: {:?}",
        slide.direct_problem()
    );
    let n = 384u32;
    let read = |reader, i: u64, j: u64| {
        slide
            .read_with(
                reader,
                slide::Region {
                    x: i * u64::from(n),
                    y: j * u64::from(n),
                    level: 0,
                    w: n,
                    h: n,
                },
                Vec::new(),
            )
            .unwrap()
    };
    let region = |image| {
        Value::Region(Arc::new(Region {
            i: 1,
            j: 2,
            image: Arc::new(image),
            tissue_fraction: Some(0.5),
            whole_jpeg: None,
        }))
    };
    let grid = |size| GridParams {
        size,
        target_mpp: 0.4942,
        tolerance: 0.1,
        skip_ring: 1,
        filter: Filter::Lanczos3,
        level: LevelPolicy::Finest,
        reader: ReaderChoice::Auto,
    };
    let tiles_of = |v: &Value| match v {
        Value::Tiles(t) => t.clone(),
        other => panic!("not tiles: {other:?}"),
    };
    // The CPIA template's colour test on every 384-px cell of the slide.
    let colour = Operator::Tissue(wsi::TissueParams::Color {
        statistic: Filter::Lanczos3,
        max: 220,
        min_r: 100,
        min_b: 30,
        r_minus_g: 20,
    });
    let mut decisions = String::new();
    let mut first_kept = None;
    for j in 0..(slide.meta.height / u64::from(n)) {
        for i in 0..(slide.meta.width / u64::from(n)) {
            let cell = run(
                &Operator::WsiGrid(grid(n)),
                region(read(ReaderChoice::Auto, i, j)),
            );
            let kept = !tiles_of(&run(&colour, cell)).tiles.is_empty();
            decisions.push(if kept { '1' } else { '0' });
            if kept && first_kept.is_none() {
                first_kept = Some((i, j));
            }
        }
    }
    add("tissue color", decisions);
    let (i, j) = first_kept.expect("no cell of the slide holds tissue");
    let direct = read(ReaderChoice::Auto, i, j);
    let openslide = read(ReaderChoice::OpenSlide, i, j);
    add("read direct level 0", h(direct.as_raw()));
    add("read openslide level 0", h(openslide.as_raw()));
    let cpia::slide::Thumbnail {
        image: thumb,
        scale,
        ..
    } = slide.thumbnail(256, ReaderChoice::OpenSlide).unwrap();
    add("read openslide thumbnail", h(thumb.as_raw()));
    let native = run(&Operator::WsiGrid(grid(n)), region(direct.clone()));
    add("wsi_grid native", tiles_hash(&tiles_of(&native)));
    let resized = run(&Operator::WsiGrid(grid(320)), region(direct));
    add("wsi_grid resized", tiles_hash(&tiles_of(&resized)));
    let mask = otsu::mask(&thumb, scale, &otsu::OtsuParams::default());
    let (x, y) = (i * u64::from(n), j * u64::from(n));
    add(
        "tissue otsu mask",
        format!(
            "threshold {} fraction {:.6}",
            mask.threshold,
            mask.fraction(x, y, u64::from(n))
        ),
    );

    let children = run(
        &Operator::Subtiles(wsi::SubtileParams {
            size: 96,
            pick: None,
            white: 220,
            statistic: Filter::Bilinear,
        }),
        native.clone(),
    );
    add("subtiles 96", tiles_hash(&tiles_of(&children)));
    let encoded = run(
        &Operator::EncodeTiles(wsi::TileEncodeParams {
            jpeg: JpegParams {
                quality: 75,
                subsampling: Subsampling::S420,
            },
            scale: "M".into(),
        }),
        children,
    );
    let Value::EncodedTiles(encoded) = encoded else {
        panic!("encode_tiles made no tiles");
    };
    let mut all = blake3::Hasher::new();
    for t in encoded.tiles.iter() {
        all.update(&t.bytes);
    }
    add(
        "encode_tiles q75 4:2:0",
        all.finalize().to_hex()[..24].to_string(),
    );

    let geometry = wsi::Geometry::new(slide.meta.width, slide.meta.height, 0.499, &grid(n));
    let png = qc::draw(thumb.clone(), scale, &geometry, |i, j| {
        if (i + j) % 2 == 0 {
            qc::CellState::Kept
        } else {
            qc::CellState::Rejected
        }
    })
    .unwrap();
    add("qc picture png", h(&png));
}

/// What a change of `case`'s bytes asks a developer to bump.
fn what_to_bump(case: &str) -> String {
    match case.split(' ').next().unwrap_or(case) {
        // Slide reads feed `wsi_grid`, the first step of every WSI pipeline.
        "read" => "bump `wsi_grid`'s version in `Operator::version` (src/ops/operator.rs)".into(),
        "qc" => "bump `QC_VERSION` (src/plan/key.rs)".into(),
        op => format!("bump `{op}`'s version in `Operator::version` (src/ops/operator.rs)"),
    }
}

#[test]
fn every_operator_makes_the_bytes_it_made_before() {
    let td = require_testdata!();
    let mut got = Vec::new();
    roi_cases(&td, &mut got);
    wsi_cases(&td, &mut got);
    if std::env::var_os("CPIA_GOLDEN_PRINT").is_some() {
        for (case, hash) in &got {
            println!("    ({case:?}, {hash:?}),");
        }
    }
    let mut wrong = Vec::new();
    // Every operator a recipe can name has a case: one added later (as
    // `jpeg_round_trip` was) cannot change bytes unseen.
    for op in cpia::ops::catalog() {
        if !got
            .iter()
            .any(|(c, _)| c.split(' ').next() == Some(op.name))
        {
            wrong.push(format!(
                "- operator `{}` has no golden case: add one to this file",
                op.name
            ));
        }
    }
    for (case, hash) in &got {
        match GOLDEN.iter().find(|(c, _)| c == case) {
            Some((_, want)) if want == hash => {}
            Some((_, want)) => wrong.push(format!(
                "- `{case}`: {hash}, recorded {want}. It makes other bytes than before: a dependency \
                 update (the libraries `cpia why` lists, src/plan/libraries.rs) or a code change altered \
                 them. If that is intended, {} so every output made the old way is rebuilt, then record \
                 the new hash here; if it is not, find what changed.",
                what_to_bump(case)
            )),
            None => wrong.push(format!("- `{case}`: {hash}, not recorded in GOLDEN")),
        }
    }
    for (case, _) in GOLDEN {
        if !got.iter().any(|(c, _)| c == case) {
            wrong.push(format!("- `{case}` is recorded but no longer computed"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} golden output(s) differ:\n{}\n(CPIA_GOLDEN_PRINT=1 prints every current hash)",
        wrong.len(),
        wrong.join("\n")
    );
}
