//! `cpia demo`: write a self-contained demo workspace and build it.
//!
//! The sources are the real ROI images of `shared/testdata/roi` (found from
//! `CPIA_TESTDATA`, or a `shared/testdata` folder above the current folder or
//! the executable), renamed into the folder layouts of real collections so the
//! routing rules have something to do. Without them, the demo generates
//! tissue-like images of its own and says so.

use std::path::{Path, PathBuf};

use super::workspace_files::{plan_writes, FileList, Files};
use super::{CmdResult, Context};

/// Arguments of `cpia demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to write the demo workspace into.
    #[arg(default_value = "demo")]
    dir: PathBuf,
    /// Only write the workspace; do not build it.
    #[arg(long)]
    no_build: bool,
    /// Parallel jobs for the build.
    #[arg(short, long)]
    jobs: Option<usize>,
}

const CONFIG: &str = r#"# The cpia demo workspace: three ROI collections built by the CPIA standard.
output = "dataset"
cache = "cache"

[sources]
BreakHis = "sources/BreakHis"
NCT-CRC-HE = "sources/NCT-CRC-HE"
P_vivax = "sources/P_vivax"
WSI = "sources/WSI"
"#;

const WSI_RECIPE: &str = r#"# Whole-slide images by the CPIA standard (templates/cpia-wsi.toml): 0.4942 um/px,
# 3840-px XL cells without the outer ring, tissue test, L/M/S children.
extends = "templates/cpia-wsi.toml"

[collection]
name = "WSI-demo"
kind = "wsi"
organs = ["skin", "kidney"]
stain = "H&E"
field = "histo"
licence = "CC0-1.0 / Apache-2.0 (see shared/testdata/README.md)"

[inputs]
source = "WSI"
suffixes = ["svs", "tif", "tiff"]

# The TCGA crop carries no MPP at all; its scan was at 40x (0.2520 um/px).
[mpp.overrides]
"tcga-cr-7395-01a-01-ts1" = 0.2520
"#;

/// Real slides copied into the demo's WSI source (all smaller than one XL
/// tile: they show the MPP chain and get QC pictures; the generated slide
/// below yields the tiles).
const SLIDES: &[&str] = &[
    "CMU-1-Small-Region.svs",
    "tcga-cr-7395-01a-01-ts1.svs",
    "openslide-python_small.svs",
];

/// The generated slide: 20x, 5x4 grid cells of real tissue and glass.
const GENERATED: &str = "generated-20x-5x4.svs";

const BREAKHIS: &str = r#"# BreakHis: magnification is in the file name; the tumour type folder is the class.
extends = "templates/roi-centre-square.toml"

[collection]
name = "BreaKHis"
kind = "roi"
organs = ["breast"]
diseases = ["breast cancer"]
stain = "H&E"
field = "histo"
year = 2016
licence = "CC BY 4.0"
citation = "Spanhol et al., A Dataset for Breast Cancer Histopathological Image Classification, IEEE TBME 2016"
url = "https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/"

[inputs]
source = "BreakHis"
include = ["**/*.png"]
suffixes = ["png"]

[output]
name = "{class}_{stem}"

# 40x has a large field of view: scale L. The others: scale M.
[[route]]
regex = '-(40)-\d+\.png$'
sub_dataset = "BreaKHis_{1}x"
scale = "L"
class = "{dir}"

[[route]]
regex = '-(100|200|400)-\d+\.png$'
sub_dataset = "BreaKHis_{1}x"
scale = "M"
class = "{dir}"
"#;

const NCT: &str = r#"# NCT-CRC-HE-100K: 224x224 tiles in one folder per tissue class.
extends = "templates/roi-centre-square.toml"

[collection]
name = "NCT-CRC-HE-100K"
kind = "roi"
organs = ["colon"]
diseases = ["colorectal cancer"]
stain = "H&E"
field = "histo"
year = 2018
licence = "CC BY 4.0"
citation = "Kather et al., 100,000 histological images of human colorectal cancer and healthy tissue, Zenodo 2018"
url = "https://zenodo.org/record/1214456"

[inputs]
source = "NCT-CRC-HE"
exclude = ["**/*_anno.*"]
suffixes = ["tif", "tiff", "png"]
"#;

const VIVAX: &str = r#"# P. vivax thick smears: the useful field is a circle; the standard's crop is
# left s/7 + 4d, top s/7 + d, side a - 2d with s = min(w, h), a = 5s/7, d = s/14.
extends = "templates/roi-centre-square.toml"

[collection]
name = "P_vivax"
kind = "roi"
organs = ["blood"]
diseases = ["malaria"]
stain = "Giemsa"
field = "cyto"
licence = "public"

[inputs]
source = "P_vivax"
suffixes = ["png", "jpg"]

[[route]]
sub_dataset = "P_vivax"
scale = "S"

[[steps]]
id = "crop"
left = "s / 7 + 4 * (s / 14)"
top = "s / 7 + s / 14"
width = "5 * s / 7 - 2 * (s / 14)"
height = "5 * s / 7 - 2 * (s / 14)"
"#;

/// (destination under sources/, file of shared/testdata/roi)
const FILES: &[(&str, &str)] = &[
    (
        "BreakHis/benign/adenosis/SOB_B_A-14-22549AB-40-001.png",
        "histolab_tissue-level0-4302-10273-4814-10785.png",
    ),
    (
        "BreakHis/benign/adenosis/SOB_B_A-14-22549AB-100-001.png",
        "histolab_tissue-level2-1784-6289-5880-10386.png",
    ),
    (
        "BreakHis/malignant/ductal_carcinoma/SOB_M_DC-14-2523-40-001.png",
        "histolab_tcga-lung-rgb.png",
    ),
    (
        "BreakHis/malignant/ductal_carcinoma/SOB_M_DC-14-2523-200-001.png",
        "histolab_medium-nuclei-score-level1.png",
    ),
    (
        "BreakHis/malignant/ductal_carcinoma/SOB_M_DC-14-2523-400-001.png",
        "histolab_high-nuclei-score-level0.png",
    ),
    (
        "NCT-CRC-HE/TUM/TUM-kather1.tif",
        "nct-crc-he-100k_kather1.tif",
    ),
    (
        "NCT-CRC-HE/STR/STR-kather2.tif",
        "nct-crc-he-100k_kather2.tif",
    ),
    (
        "NCT-CRC-HE/NORM/NORM-tiatoolbox-source.png",
        "tiatoolbox_source_image.png",
    ),
    (
        "NCT-CRC-HE/BACK/BACK-no-tissue.png",
        "histolab_no-tissue.png",
    ),
    (
        "NCT-CRC-HE/IHC/IHC-kidney-30x50.png",
        "histolab_kidney-ihc-level0-310-500-360-530.png",
    ),
    ("P_vivax/vivax-001.png", "tiatoolbox_target_image.png"),
    ("P_vivax/vivax-002.png", "skimage_ihc.png"),
];

pub fn run(_ctx: &Context, args: Args) -> CmdResult {
    let dir = std::path::absolute(&args.dir)?;
    let td = find_testdata();
    match &td {
        Some(td) => outln!("demo sources: real images from {}", td.display()),
        None => outln!(
            "demo sources: shared/testdata not found (set CPIA_TESTDATA); generating synthetic tissue-like images"
        ),
    }
    let files = demo_files(td.as_deref())?;
    let root = Files::open(&dir)?;
    // A file that already holds the demo's bytes (an earlier demo) is kept;
    // anything else there is the user's, and nothing is written.
    let todo = match plan_writes(&root, &files) {
        Ok(todo) => todo,
        Err(why) => {
            eprintln!(
                "error: {why}; the demo does not overwrite it (move it away, or write the demo \
                 into another folder: `cpia demo DIR`)"
            );
            return Ok(super::EXIT_ERROR);
        }
    };
    for (rel, bytes) in todo {
        root.write(rel, bytes)?;
    }
    generate_slide(&root, td.as_deref())?;
    outln!("demo workspace: {}", dir.display());
    if args.no_build {
        outln!("build it with: cpia --workspace {} build", dir.display());
        return Ok(0);
    }
    build(&dir, args.jobs)
}

/// Every file of the demo workspace but the generated slide: (path in the
/// workspace, bytes).
fn demo_files(td: Option<&Path>) -> Result<FileList, Box<dyn std::error::Error>> {
    let text = |rel: &str, t: &str| (rel.to_string(), t.as_bytes().to_vec());
    let mut files = vec![
        text("cpia.toml", CONFIG),
        text(
            "recipes/templates/roi-centre-square.toml",
            crate::recipe::skeleton::ROI_CENTRE_SQUARE_TEMPLATE,
        ),
        text("recipes/breakhis.toml", BREAKHIS),
        text("recipes/nct-crc-he.toml", NCT),
        text("recipes/p-vivax.toml", VIVAX),
        text(
            "recipes/templates/cpia-wsi.toml",
            crate::recipe::skeleton::CPIA_WSI_TEMPLATE,
        ),
        text("recipes/wsi-demo.toml", WSI_RECIPE),
    ];
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
    match td {
        Some(td) => {
            for (dest, src) in FILES {
                files.push((format!("sources/{dest}"), read(td.join("roi").join(src))?));
            }
            for s in SLIDES {
                files.push((format!("sources/WSI/{s}"), read(td.join("wsi").join(s))?));
            }
        }
        None => {
            for (i, (dest, _)) in FILES.iter().enumerate() {
                files.push((format!("sources/{dest}"), synthetic_image(i as u32, dest)?));
            }
        }
    }
    Ok(files)
}

/// Generates the demo's 20× slide from real tissue (or, without the test
/// data, from synthetic tissue large enough for its blocks), unless there.
fn generate_slide(root: &Files, td: Option<&Path>) -> Result<(), Box<dyn std::error::Error>> {
    // Through real folders only (a link on the way is refused).
    root.make_folder("sources/WSI")?;
    let generated = root.at(&format!("sources/WSI/{GENERATED}"));
    if std::fs::symlink_metadata(&generated).is_ok() {
        return Ok(());
    }
    outln!("demo sources: generating {GENERATED} (a 20x slide of real tissue, about 100 MB)");
    let tissue = match td {
        Some(td) => crate::fixture::load_tissue(&td.join(crate::fixture::TISSUE_SLIDE))?,
        None => {
            let img = synthetic_rgb(SYNTHETIC_TISSUE, SYNTHETIC_TISSUE, 7);
            crate::fixture::Tissue::from_rgb(img.width(), img.height(), 0.499, img.into_raw())?
        }
    };
    crate::fixture::write_svs(
        &crate::fixture::SlideSpec::aperio_20x(5, 4, 1),
        &tissue,
        &generated,
    )?;
    Ok(())
}

/// Side of the synthetic tissue: the 20× slide's blocks are 960 px.
const SYNTHETIC_TISSUE: u32 = 2048;

/// Builds the demo workspace in `dir`.
fn build(dir: &Path, jobs: Option<usize>) -> CmdResult {
    let ctx = Context {
        workspace: Some(dir.to_path_buf()),
        sources: vec![],
    };
    let ws = ctx.workspace()?;
    let _lock = super::lock_workspace(&ws, true)?;
    let mut state = super::state::for_writing(&ws)?;
    let mut planner = crate::plan::Planner::new();
    planner.refresh_recipes(&ws);
    let opts = crate::engine::Options {
        jobs: super::jobs(jobs, &ws),
        fail_fast: false,
        progress: true,
        memory: crate::engine::budget::Limit::resolve(None, &ws),
    };
    let selection = crate::plan::Selection::default();
    let flags = crate::engine::driver::Flags::default();
    let req = super::build_request(&ws, &planner, &selection, flags);
    let code = super::build::execute(&req, &mut state, &opts, false)?;
    let count = walkdir::WalkDir::new(&ws.output)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "jpg"))
        .count();
    outln!(
        "standardized dataset: {} ({count} images)",
        ws.output.display()
    );
    Ok(code)
}

/// Where the shared test data is, if anywhere.
pub fn find_testdata() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CPIA_TESTDATA") {
        let p = PathBuf::from(p);
        return p.join("roi").is_dir().then_some(p);
    }
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        bases.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.parent().map(Path::to_path_buf));
    }
    bases
        .iter()
        .flat_map(|b| b.ancestors())
        .map(|a| a.join("shared/testdata"))
        .find(|p| p.join("roi").is_dir())
}

/// A deterministic pink/purple texture with nuclei-like blobs (about one
/// per 4,400 pixels), `w`×`h`.
fn synthetic_rgb(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut rng = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let shade = |x: u32, y: u32| ((u64::from(x) * 7 + u64::from(y) * 13) % 23) as u8;
    let mut img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = shade(x, y);
        image::Rgb([225 - t, 160 + t, 200 - t])
    });
    let blobs = (u64::from(w) * u64::from(h) / 4400).max(40);
    for _ in 0..blobs {
        let (bx, by, r) = (
            i64::from(next() % w),
            i64::from(next() % h),
            i64::from(4 + next() % 9),
        );
        // Each blob painted over its bounding box only.
        for y in (by - r).max(0)..(by + r).min(i64::from(h)) {
            for x in (bx - r).max(0)..(bx + r).min(i64::from(w)) {
                if (x - bx).pow(2) + (y - by).pow(2) < r * r {
                    let t = shade(x as u32, y as u32);
                    img.put_pixel(x as u32, y as u32, image::Rgb([90 + t, 50 + t, 140 + t]));
                }
            }
        }
    }
    img
}

/// A synthetic image ([`synthetic_rgb`]) sized by `seed`, encoded in the
/// format the destination's suffix names.
fn synthetic_image(seed: u32, dest: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (w, h) = (300 + (seed % 3) * 100, 260 + (seed % 4) * 60);
    let img = synthetic_rgb(w, h, seed);
    let format = if dest.ends_with(".tif") {
        image::ImageFormat::Tiff
    } else {
        image::ImageFormat::Png
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format)?;
    Ok(out.into_inner())
}
