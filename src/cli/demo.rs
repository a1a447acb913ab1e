//! `cpia demo`: write a self-contained demo workspace and build it.
//!
//! The sources are the real ROI images of `shared/testdata/roi` (found from
//! `CPIA_TESTDATA`, or a `shared/testdata` folder above the current folder or
//! the executable), renamed into the folder layouts of real collections so the
//! routing rules have something to do. Without them, the demo generates
//! tissue-like images of its own and says so.

use std::path::{Path, PathBuf};

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
    write_if_changed(&dir.join("cpia.toml"), CONFIG.as_bytes())?;
    write_if_changed(
        &dir.join("recipes/templates/roi-centre-square.toml"),
        crate::recipe::skeleton::ROI_CENTRE_SQUARE_TEMPLATE.as_bytes(),
    )?;
    write_if_changed(&dir.join("recipes/breakhis.toml"), BREAKHIS.as_bytes())?;
    write_if_changed(&dir.join("recipes/nct-crc-he.toml"), NCT.as_bytes())?;
    write_if_changed(&dir.join("recipes/p-vivax.toml"), VIVAX.as_bytes())?;
    write_if_changed(
        &dir.join("recipes/templates/cpia-wsi.toml"),
        crate::recipe::skeleton::CPIA_WSI_TEMPLATE.as_bytes(),
    )?;
    write_if_changed(&dir.join("recipes/wsi-demo.toml"), WSI_RECIPE.as_bytes())?;
    match find_testdata() {
        Some(td) => {
            println!("demo sources: real images from {}", td.display());
            for (dest, src) in FILES {
                let bytes = std::fs::read(td.join("roi").join(src))
                    .map_err(|e| format!("{}: {e}", td.join("roi").join(src).display()))?;
                write_if_changed(&dir.join("sources").join(dest), &bytes)?;
            }
            for s in SLIDES {
                let bytes = std::fs::read(td.join("wsi").join(s))
                    .map_err(|e| format!("{}: {e}", td.join("wsi").join(s).display()))?;
                write_if_changed(&dir.join("sources/WSI").join(s), &bytes)?;
            }
        }
        None => {
            println!(
                "demo sources: shared/testdata not found (set CPIA_TESTDATA); generating synthetic tissue-like images"
            );
            for (i, (dest, _)) in FILES.iter().enumerate() {
                let bytes = synthetic_image(i as u32, dest)?;
                write_if_changed(&dir.join("sources").join(dest), &bytes)?;
            }
        }
    }
    let generated = dir.join("sources/WSI").join(GENERATED);
    if !generated.is_file() {
        println!("demo sources: generating {GENERATED} (a 20x slide of real tissue, about 100 MB)");
        std::fs::create_dir_all(dir.join("sources/WSI"))?;
        let tissue = match find_testdata() {
            Some(td) => crate::fixture::load_tissue(&td.join(crate::fixture::TISSUE_SLIDE))?,
            None => {
                let img = image::load_from_memory(&synthetic_image(7, "tissue.png")?)?.to_rgb8();
                crate::fixture::Tissue::from_rgb(img.width(), img.height(), 0.499, img.into_raw())?
            }
        };
        crate::fixture::write_svs(
            &crate::fixture::SlideSpec::aperio_20x(5, 4, 1),
            &tissue,
            &generated,
        )?;
    }
    println!("demo workspace: {}", dir.display());
    if args.no_build {
        println!("build it with: cpia --workspace {} build", dir.display());
        return Ok(0);
    }
    let ctx = Context {
        workspace: Some(dir.clone()),
        sources: vec![],
    };
    let ws = ctx.workspace()?;
    let _lock = super::lock_workspace(&ws, true)?;
    let mut state = super::open_state_for_writing(&ws.state_path())?;
    let mut planner = crate::plan::Planner::new();
    planner.refresh_recipes(&ws);
    let opts = crate::engine::Options {
        jobs: args.jobs.unwrap_or(ws.jobs).max(1),
        fail_fast: false,
        progress: true,
        memory: crate::engine::budget::Limit::resolve(None, &ws),
    };
    let code = super::build::execute(
        &ws,
        &mut state,
        &planner,
        &crate::plan::Selection::default(),
        &opts,
        crate::engine::driver::Flags::default(),
        false,
    )?;
    let count = walkdir::WalkDir::new(&ws.output)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "jpg"))
        .count();
    println!(
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

fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

/// A deterministic pink/purple texture with a few nuclei-like blobs, encoded
/// in the format the destination's suffix names.
fn synthetic_image(seed: u32, dest: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (w, h) = (300 + (seed % 3) * 100, 260 + (seed % 4) * 60);
    let mut rng = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let blobs: Vec<(i64, i64, i64)> = (0..40)
        .map(|_| {
            (
                i64::from(next() % w),
                i64::from(next() % h),
                i64::from(4 + next() % 9),
            )
        })
        .collect();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (i64::from(x), i64::from(y));
        let nucleus = blobs
            .iter()
            .any(|&(bx, by, r)| (x - bx).pow(2) + (y - by).pow(2) < r * r);
        let t = ((x * 7 + y * 13) % 23) as u8;
        if nucleus {
            image::Rgb([90 + t, 50 + t, 140 + t])
        } else {
            image::Rgb([225 - t, 160 + t, 200 - t])
        }
    });
    let format = if dest.ends_with(".tif") {
        image::ImageFormat::Tiff
    } else {
        image::ImageFormat::Png
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format)?;
    Ok(out.into_inner())
}
