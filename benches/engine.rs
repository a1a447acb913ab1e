//! Benchmarks of the engine, run with `cargo bench --bench engine [-- noop|roi|wsi|direct]`.
//!
//! - `noop`: a no-op `cpia build` over 25,000, 50,000 and 100,000 recorded
//!   outputs (tiny generated sources, so the initial builds are quick): the
//!   median of 3 runs at each size, to show the time grows linearly. Target:
//!   under 1 s at 100,000 on a 2-core machine.
//! - `roi`: ROI throughput of `cpia build` (`-j 1` and `-j 2`, fresh workspace
//!   each run) against `benches/pillow_roi.py` (Pillow, one process) doing the
//!   same decode-crop-resize-encode on the same images: the real images of
//!   shared/testdata (16 copies), and 1,000 BreakHis-size PNGs (700×460 RGB)
//!   cut from the real tissue of CMU-1-Small-Region by the fixture tooling
//!   (`breakhis_pngs`). Target: `-j 2` at least 5.5x Pillow on the PNGs.
//!   With `CPIA_BENCH_BASELINE=<another cpia binary>`, its `-j 2` build too.
//!
//! - `wsi`: on a generated 40x slide (4x4 CPIA cells of real tissue, the
//!   resize path), in one run: `cpia build -j 2` wall time and peak RSS, the
//!   time OpenSlide alone needs to read the same regions on 2 threads (the
//!   reading floor of this design), and the CPIA reference algorithm in Python
//!   (openslide-python + Pillow, `tests/reference/cpia_wsi_reference.py`)
//!   writing the same tiles, and the same rules read through tiffslide in 2
//!   processes (`benches/tiffslide_wsi.py`, the peer). Targets: at least 10x
//!   the Python reference.
//!
//! - `direct`: on a generated 20x slide (5x4 cells, native resolution), in
//!   one run: 3840² level-0 region reads per second through the direct tile
//!   reader and through OpenSlide (1 and 2 threads; target: direct ≥ 5x);
//!   the whole `cpia build -j 2` against the Python reference (target ≥ 7x),
//!   the 2-process tiffslide peer (target ≥ 3x) and two floors on both cores:
//!   decoding the source tiles the cells need plus encoding every written
//!   tile from pixels (the pixel floor; target: the build within 1.1x of
//!   it), and decoding plus encoding the XL tiles and cutting L, M and S
//!   from them (`ops::jpeg_crop`, the floor of this design).
//! - `rebuild`: on the generated 20x slide, the rebuild that replaces every
//!   tile (the encoders' quality changed after a build): wall, user and
//!   system time of `cpia build -j 2`, warm median. With
//!   `CPIA_BENCH_BASELINE=<another cpia binary>` the same rebuild by that
//!   binary is measured in the same run (before/after a change).
//! - `crop`: per kept 3840² cell of the 20x slide, thread CPU time of its L,
//!   M and S tiles made three ways: encoded from pixels, cut by
//!   libjpeg-turbo's `tj3Transform` (one call per scale), and spliced by
//!   `ops::jpeg_crop` (one index per cell).
//!
//! Timings are wall-clock of the real binary, as a user runs it. In `roi`,
//! `wsi` and `direct` each tool gets one warm-up run and then [`RUNS`]
//! consecutive runs, of which the median is reported (hyperfine's method;
//! see [`warm_median`] for why alternating tools misleads on this VM) —
//! except this binary and a `CPIA_BENCH_BASELINE` one, which alternate
//! ([`warm_medians_interleaved`]: blocks of the same kind of process drift;
//! `rebuild` still measures each binary in its own block), and
//! the workspaces are deleted only when the bench ends ([`kept_tempdir`]).
//! The direct reader's own ceiling (libjpeg-turbo decoding the same tiles
//! into a cache-resident buffer) is in the reader micro-bench:
//! `cargo test --release --lib slide::direct::tests::bench -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn testdata() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CPIA_TESTDATA") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
    p.join("roi").is_dir().then_some(p)
}

const TEMPLATE_TINY: &str = r#"
[collection]
name = "Tiny"
kind = "roi"
[inputs]
source = "S"
[[route]]
sub_dataset = "Tiny"
scale = "S"
[[steps]]
id = "decode"
op = "decode"
[[steps]]
id = "resize"
op = "resize"
input = "decode"
width = 16
height = 16
[[steps]]
id = "encode"
op = "encode_jpeg"
input = "resize"
"#;

const RECIPE_ROI: &str = r#"
[collection]
name = "Bench"
kind = "roi"
[inputs]
source = "S"
[[route]]
sub_dataset = "Bench"
scale = "M"
[[steps]]
id = "decode"
op = "decode"
[[steps]]
id = "crop"
op = "crop"
input = "decode"
left = "(w - s) / 2"
top = "(h - s) / 2"
width = "s"
height = "s"
[[steps]]
id = "resize"
op = "resize"
input = "crop"
[[steps]]
id = "encode"
op = "encode_jpeg"
input = "resize"
"#;

fn workspace(dir: &Path, recipe: &str) {
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("cpia.toml"), "[sources]\nS = \"src\"\n").unwrap();
    std::fs::write(dir.join("recipes/r.toml"), recipe).unwrap();
}

fn build(dir: &Path, jobs: &str) -> (f64, serde_json::Value) {
    build_by(Path::new(env!("CARGO_BIN_EXE_cpia")), dir, jobs)
}

/// Another `cpia` binary to measure beside this one (`CPIA_BENCH_BASELINE`:
/// before/after a change, in one run), in the modes that say so.
fn baseline() -> Option<PathBuf> {
    std::env::var_os("CPIA_BENCH_BASELINE").map(PathBuf::from)
}

/// [`build`] by the `cpia` binary `bin`.
fn build_by(bin: &Path, dir: &Path, jobs: &str) -> (f64, serde_json::Value) {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["build", "--json", "-j", jobs])
        .current_dir(dir)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, j)
}

/// Measured runs per tool (after one warm-up run); `CPIA_BENCH_RUNS`
/// lowers it when the machine is too loaded for long benches.
const RUNS: usize = 5;

fn runs() -> usize {
    std::env::var("CPIA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS)
}

/// The level-0 square region of `size` pixels at `(x, y)`.
fn level0(x: u32, y: u32, size: u32) -> cpia::slide::Region {
    cpia::slide::Region {
        x: u64::from(x),
        y: u64::from(y),
        level: 0,
        w: size,
        h: size,
    }
}

/// Runs `f` once to warm up (page cache, allocator, the VM's memory), then
/// [`runs`] times back to back; the median of those. Each tool is measured in
/// its own consecutive runs, like hyperfine: on this VM a process that follows
/// a large one (the Python reference) pays for the freed memory the host took
/// back, which would otherwise bias whichever tool happens to come second.
fn warm_median(mut f: impl FnMut() -> f64) -> f64 {
    f();
    median((0..runs()).map(|_| f()).collect())
}

/// This binary's and the baseline's medians of [`runs`] runs each after a
/// warm-up run each, the two alternating, in both orders (`f(true)` runs
/// this binary). Two `cpia` builds are the same kind of process, so the rule
/// of [`warm_median`] does not apply between them, and blocks of consecutive
/// runs drifted with the host: at 40× the second block was the faster in
/// four of five runs (by 2–6 %), whichever binary it held.
fn warm_medians_interleaved(mut f: impl FnMut(bool) -> f64) -> (f64, f64) {
    f(true);
    f(false);
    let (mut this, mut base) = (Vec::new(), Vec::new());
    for round in 0..runs() {
        for this_one in [round % 2 == 0, round % 2 != 0] {
            let t = f(this_one);
            if this_one {
                this.push(t)
            } else {
                base.push(t)
            }
        }
    }
    (median(this), median(base))
}

/// [`warm_median`] of `f` run with this `cpia` binary, and with a baseline
/// binary ([`baseline`]) both interleaved ([`warm_medians_interleaved`]):
/// the medians, the baseline's with its path. `f` gets the binary to run
/// and whether it is this one.
fn this_and_baseline(mut f: impl FnMut(&Path, bool) -> f64) -> (f64, Option<(f64, PathBuf)>) {
    let this = Path::new(env!("CARGO_BIN_EXE_cpia"));
    let Some(base) = baseline() else {
        return (warm_median(|| f(this, true)), None);
    };
    let (t, b) = warm_medians_interleaved(|is_this| {
        if is_this {
            f(this, true)
        } else {
            f(&base, false)
        }
    });
    (t, Some((b, base)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn tiny_png(i: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        let v = i.wrapping_mul(2_654_435_761) ^ (x * 8 + y);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn bench_noop() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    workspace(ws, TEMPLATE_TINY);
    println!("no-op build over N recorded outputs (median of 3):");
    println!("{:>9} {:>10} {:>12}", "outputs", "seconds", "us/output");
    let mut made = 0u32;
    for target in [25_000u32, 50_000, 100_000] {
        while made < target {
            let sub = ws.join(format!("src/d{:03}", made / 1000));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("{made:06}.png")), tiny_png(made)).unwrap();
            made += 1;
        }
        let (_, j) = build(ws, "2");
        assert_eq!(j["failed"], 0, "{j}");
        let times: Vec<f64> = (0..3)
            .map(|_| {
                let (t, j) = build(ws, "2");
                assert_eq!(j["built"], 0);
                assert_eq!(j["up_to_date"], u64::from(target));
                t
            })
            .collect();
        let m = median(times);
        println!(
            "{target:>9} {m:>10.3} {:>12.2}",
            m * 1e6 / f64::from(target)
        );
    }
}

/// 1,000 BreakHis-size PNGs (700×460 RGB, zlib's default level) cut from
/// the real tissue of CMU-1-Small-Region at seeded places, half of them
/// mirrored; made once into the fixture cache. The folder is the build's
/// source folder, so it holds the PNGs only: its completion marker is beside
/// it (a marker inside was an input, an empty file that failed the build).
fn breakhis_pngs(td: &Path) -> PathBuf {
    const N: u32 = 1000;
    let dir = cpia::fixture::fixture_cache_dir().join(format!("breakhis-700x460-{N}"));
    let done = dir.with_extension("done");
    for inside in ["done", ".done"] {
        // Made by an earlier bench, which marked it inside.
        if dir.join(inside).is_file() {
            std::fs::remove_file(dir.join(inside)).unwrap();
            std::fs::write(&done, b"").unwrap();
        }
    }
    if done.is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tissue = cpia::fixture::load_tissue(&td.join(cpia::fixture::TISSUE_SLIDE)).unwrap();
    let (tw, th) = (tissue.width(), tissue.height());
    let rgb = tissue.rgb();
    let mut seed = 0x0005_DEEC_E66D_u64;
    let mut next = |bound: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % u64::from(bound)) as u32
    };
    for i in 0..N {
        let (x0, y0, flip) = (next(tw - 700), next(th - 460), next(2) == 1);
        let img = image::RgbImage::from_fn(700, 460, |x, y| {
            let x = if flip { 699 - x } else { x };
            let p = (((y0 + y) * tw + x0 + x) * 3) as usize;
            image::Rgb([rgb[p], rgb[p + 1], rgb[p + 2]])
        });
        img.save(dir.join(format!("{i:04}.png"))).unwrap();
    }
    std::fs::write(&done, b"").unwrap();
    dir
}

fn bench_roi() {
    let Some(td) = testdata() else {
        println!("roi: SKIPPED, shared/testdata not found (set CPIA_TESTDATA)");
        return;
    };
    let images: Vec<PathBuf> = std::fs::read_dir(td.join("roi"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    const COPIES: usize = 16;
    let src = tempfile::tempdir().unwrap();
    for c in 0..COPIES {
        for p in &images {
            let name = p.file_name().unwrap().to_string_lossy();
            std::fs::copy(p, src.path().join(format!("c{c:02}-{name}"))).unwrap();
        }
    }
    let what = format!(
        "{} real images ({} files x {COPIES})",
        images.len() * COPIES,
        images.len()
    );
    roi_against_pillow(src.path(), images.len() * COPIES, &what);
    let pngs = breakhis_pngs(&td);
    roi_against_pillow(
        &pngs,
        1000,
        "1,000 BreakHis-size PNGs (700x460, real tissue)",
    );
}

/// `cpia build -j 1` and `-j 2` against the Pillow script on the `n` images of `src`.
fn roi_against_pillow(src: &Path, n: usize, what: &str) {
    let python_ok = Command::new("python3")
        .args(["-c", "import PIL"])
        .status()
        .is_ok_and(|s| s.success());
    let by = |bin: &Path, jobs: &str| {
        let dir = kept_tempdir();
        workspace(dir.path(), RECIPE_ROI);
        std::fs::remove_dir(dir.path().join("src")).unwrap();
        std::os::unix::fs::symlink(src, dir.path().join("src")).unwrap();
        let (t, j) = build_by(bin, dir.path(), jobs);
        assert_eq!(j["built"], n as u64, "{j}");
        t
    };
    let cpia = |jobs: &str| by(Path::new(env!("CARGO_BIN_EXE_cpia")), jobs);
    let m1 = warm_median(|| cpia("1"));
    let (m2, base) = this_and_baseline(|bin, _| by(bin, "2"));
    let pillow = python_ok.then(|| {
        warm_median(|| {
            let out = kept_tempdir();
            script_secs(
                "benches/pillow_roi.py",
                &[src.as_os_str(), out.path().as_os_str()],
            )
        })
    });
    let rate = |t: f64| n as f64 / t;
    println!(
        "ROI throughput on {what}, warm median of {}, wall time incl. process start:",
        runs()
    );
    println!("  cpia build -j 1: {m1:.3} s  {:.1} images/s", rate(m1));
    println!("  cpia build -j 2: {m2:.3} s  {:.1} images/s", rate(m2));
    if let Some((mb, b)) = &base {
        println!(
            "  baseline {} build -j 2: {mb:.3} s  {:.1} images/s; baseline / this: {:.2}x",
            b.display(),
            rate(*mb),
            mb / m2
        );
    }
    if let Some(mp) = pillow {
        println!("  Pillow (1 process): {mp:.3} s  {:.1} images/s", rate(mp));
        println!(
            "  ratio -j 2 / Pillow: {:.2}x   -j 1 / Pillow: {:.2}x",
            mp / m2,
            mp / m1
        );
    } else {
        println!("  Pillow: SKIPPED (python3 with PIL not available)");
    }
}

/// Whether the Python reference can run (openslide-python and Pillow).
fn python_wsi_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openslide, PIL"])
        .status()
        .is_ok_and(|s| s.success())
}

thread_local! {
    static KEPT: std::cell::RefCell<Vec<std::sync::Arc<tempfile::TempDir>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A temporary folder deleted only when the bench process ends: deleting a
/// run's ~600 files right before the next run makes ext4 skip the recently
/// freed inodes when that run creates its files (measured: +0.2–0.3 s of
/// kernel time on a 1 s build), which would charge one run for another's cleanup.
fn kept_tempdir() -> std::sync::Arc<tempfile::TempDir> {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    KEPT.with(|k| k.borrow_mut().push(dir.clone()));
    dir
}

/// Wall time of the Python reference standardizing `slide` (writing its tiles).
fn python_reference_secs(slide: &Path) -> f64 {
    let out = kept_tempdir();
    script_secs(
        "tests/reference/cpia_wsi_reference.py",
        &[slide.as_os_str(), "--out".as_ref(), out.path().as_os_str()],
    )
}

/// Whether the tiffslide peer can run.
fn tiffslide_available() -> bool {
    Command::new("python3")
        .args(["-c", "import tiffslide, PIL"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Wall time of the 2-process tiffslide peer standardizing `slide`
/// (`benches/tiffslide_wsi.py`, process start-up included like every tool).
fn tiffslide_secs(slide: &Path) -> f64 {
    let out = kept_tempdir();
    script_secs(
        "benches/tiffslide_wsi.py",
        &[slide.as_os_str(), out.path().as_os_str()],
    )
}

/// Wall time of `python3 <script> <args>` (a path in the crate), which must succeed.
fn script_secs(script: &str, args: &[&std::ffi::OsStr]) -> f64 {
    let t = Instant::now();
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// The peer's line of a bench report.
fn report_peer(slide: &Path, build: f64) {
    if tiffslide_available() {
        let p = warm_median(|| tiffslide_secs(slide));
        println!(
            "  tiffslide peer (2 processes): {p:.2} s; peer / cpia: {:.2}x",
            p / build
        );
    } else {
        println!("  tiffslide peer: SKIPPED (python3 with tiffslide not available; scripts/setup.sh installs it)");
    }
}

/// Runs `cmd` under GNU time; returns (wall seconds, peak RSS in MiB).
fn timed(cmd: &mut Command) -> (f64, f64) {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    let rss_kb: f64 = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (wall, rss_kb / 1024.0)
}

fn bench_wsi() {
    if cpia::fixture::testdata_dir().is_none() {
        println!("wsi: SKIPPED, shared/testdata not found (set CPIA_TESTDATA)");
        return;
    }
    let spec = cpia::fixture::SlideSpec::aperio_40x(4, 4, 21);
    let slide = cpia::fixture::cached_fixture(&spec, &cpia::fixture::fixture_cache_dir()).unwrap();
    let python_ok = python_wsi_available();
    let s = cpia::slide::Slide::open(&slide).unwrap();
    let mpp: f64 = s.meta.properties["openslide.mpp-x"].parse().unwrap();
    let grid = cpia::ops::wsi::GridParams {
        size: 3840,
        target_mpp: 0.4942,
        tolerance: 0.1,
        skip_ring: 1,
        filter: cpia::ops::Filter::Lanczos3,
        level: cpia::ops::wsi::LevelPolicy::Finest,
        reader: cpia::ops::wsi::ReaderChoice::Auto,
    };
    let g = cpia::ops::wsi::Geometry::new(s.meta.width, s.meta.height, mpp, &grid);
    let cells: Vec<(u32, u32)> = g.cells().collect();
    println!(
        "WSI on a generated 40x slide: {}x{} px, read size {}, {} cells of {:.1} MP each",
        s.meta.width,
        s.meta.height,
        g.read_size,
        cells.len(),
        f64::from(g.read_size).powi(2) / 1e6
    );
    let mut rss_of_this = Vec::new();
    let mut tiles = 0;
    // cpia build -j 2, a fresh workspace each run.
    let build_by = |bin: &Path, this: bool| {
        let dir = wsi_workspace(&slide, "auto");
        let ws = dir.path();
        let (t, m) = timed(
            Command::new("/usr/bin/time")
                .args(["-f", "MAXRSS %M"])
                .arg(bin)
                .args(["build", "--json", "-j", "2"])
                .current_dir(ws),
        );
        if this {
            rss_of_this.push(m);
        }
        tiles = walkdir::WalkDir::new(ws.join("dataset"))
            .into_iter()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
            .count();
        t
    };
    let (b, base) = this_and_baseline(build_by);
    // This binary's runs, the warm-up run left out.
    let rss_this = median(rss_of_this[1..].to_vec());
    // The reading floor: OpenSlide reading the same regions on 2 threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let f = warm_median(|| {
        let t = Instant::now();
        let s = cpia::slide::Slide::open(&slide).unwrap();
        pool.install(|| {
            use rayon::prelude::*;
            cells.par_iter().for_each(|&(i, j)| {
                let rs = g.read_size;
                let img = s.read_openslide(level0(i * rs, j * rs, rs)).unwrap();
                std::hint::black_box(img);
            });
        });
        t.elapsed().as_secs_f64()
    });
    let py = python_ok.then(|| warm_median(|| python_reference_secs(&slide)));
    println!("  cpia build -j 2: {b:.2} s, peak RSS {rss_this:.0} MiB, {tiles} tiles");
    if let Some((bb, bin)) = &base {
        println!(
            "  baseline {} build -j 2: {bb:.2} s; baseline / this: {:.2}x",
            bin.display(),
            bb / b
        );
    }
    println!(
        "  OpenSlide reading the same {} regions on 2 threads (floor): {f:.2} s",
        cells.len()
    );
    println!("  cpia / floor: {:.2}x", b / f);
    if let Some(p) = py {
        println!("  Python reference (openslide-python + Pillow, 1 process): {p:.2} s");
        println!("  Python / cpia: {:.2}x", p / b);
    } else {
        println!(
            "  Python reference: SKIPPED (python3 with openslide-python and Pillow not available)"
        );
    }
    report_peer(&slide, b);
}

/// A fresh workspace building `slide` with the CPIA template; returns its dir.
fn wsi_workspace(slide: &Path, reader: &str) -> std::sync::Arc<tempfile::TempDir> {
    let recipe = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/templates/cpia-wsi.toml"),
    )
    .unwrap();
    let dir = kept_tempdir();
    let ws = dir.path();
    std::fs::create_dir_all(ws.join("recipes/templates")).unwrap();
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("cpia.toml"), "[sources]\nS = \"src\"\n").unwrap();
    std::fs::write(ws.join("recipes/templates/cpia-wsi.toml"), &recipe).unwrap();
    std::fs::write(
        ws.join("recipes/w.toml"),
        format!("extends = \"templates/cpia-wsi.toml\"\n[collection]\nname = \"B\"\nkind = \"wsi\"\n[inputs]\nsource = \"S\"\n[[steps]]\nid = \"XL\"\nreader = \"{reader}\"\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(slide, ws.join("src/slide.svs")).unwrap();
    dir
}

fn bench_direct() {
    if cpia::fixture::testdata_dir().is_none() {
        println!("direct: SKIPPED, shared/testdata not found (set CPIA_TESTDATA)");
        return;
    }
    use rayon::prelude::*;
    let spec = cpia::fixture::SlideSpec::aperio_20x(5, 4, 31);
    let slide = cpia::fixture::cached_fixture(&spec, &cpia::fixture::fixture_cache_dir()).unwrap();
    let s = cpia::slide::Slide::open(&slide).unwrap();
    let direct = cpia::slide::direct::DirectSlide::open(&slide)
        .unwrap()
        .unwrap();
    let rs = 3840u32;
    let cells: Vec<(u32, u32)> = (1..spec.cells_y - 1)
        .flat_map(|j| (1..spec.cells_x - 1).map(move |i| (i, j)))
        .collect();
    let python_ok = python_wsi_available();
    println!(
        "direct reader on a generated 20x slide: {}x{}, {} interior cells of 3840²",
        s.meta.width,
        s.meta.height,
        cells.len()
    );
    let read_all = |threads: usize, direct_path: bool| -> f64 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = Instant::now();
        pool.install(|| {
            cells.par_iter().for_each(|&(i, j)| {
                // Into recycled buffers on both paths, as the engine reads.
                let buffer = cpia::ops::pool::take(rs as usize * rs as usize * 3);
                let img = if direct_path {
                    direct
                        .read_rgb_into(level0(i * rs, j * rs, rs), buffer)
                        .unwrap()
                } else {
                    let reader = cpia::slide::ReaderChoice::OpenSlide;
                    s.read_with(reader, level0(i * rs, j * rs, rs), buffer)
                        .unwrap()
                };
                cpia::ops::pool::give(std::hint::black_box(img).into_raw());
            })
        });
        t.elapsed().as_secs_f64()
    };
    let mut rows = Vec::new();
    for threads in [1, 2] {
        let mut d = Vec::new();
        let mut o = Vec::new();
        for _ in 0..3 {
            o.push(read_all(threads, false));
            d.push(read_all(threads, true));
        }
        let (d, o) = (median(d), median(o));
        let n = cells.len() as f64;
        rows.push(format!(
            "  {threads} thread(s): OpenSlide {:.2} regions/s, direct {:.2} regions/s: {:.1}x",
            n / o,
            n / d,
            o / d
        ));
    }
    for r in rows {
        println!("{r}");
    }

    // Whole builds, each tool in its own warm, consecutive runs.
    let build_by = |bin: &Path, reader: &str| {
        let ws = wsi_workspace(&slide, reader);
        let (t, _) = timed(
            Command::new("/usr/bin/time")
                .args(["-f", "MAXRSS %M"])
                .arg(bin)
                .args(["build", "--json", "-j", "2"])
                .current_dir(ws.path()),
        );
        t
    };
    let this = Path::new(env!("CARGO_BIN_EXE_cpia"));
    let (b, base) = this_and_baseline(|bin, _| build_by(bin, "auto"));
    let bo = warm_median(|| build_by(this, "openslide"));

    // The floor: per cell, decode its source tiles (a direct read into a
    // recycled buffer: decode + copy) and encode exactly the tiles cpia
    // wrote there, in place; cells and tiles in parallel on 2 threads.
    let ws = wsi_workspace(&slide, "auto");
    timed(
        Command::new(this)
            .args(["build", "--json", "-j", "2"])
            .current_dir(ws.path()),
    );
    let written: Vec<(u32, u32, u32)> = walkdir::WalkDir::new(ws.path().join("dataset"))
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let f: Vec<u32> = name
                .trim_end_matches(".jpg")
                .rsplitn(4, '-')
                .take(3)
                .map(|v| v.parse().unwrap())
                .collect();
            (f[2], f[1], f[0]) // size, x, y
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let q = cpia::ops::JpegParams::default();
    // Per cell: the written tiles as (size, offset x, offset y) in the cell.
    let in_cell = |i: u32, j: u32| -> Vec<(u32, u32, u32)> {
        written
            .iter()
            .filter(|&&(size, x, y)| (x / (rs / size), y / (rs / size)) == (i, j))
            .map(|&(size, x, y)| {
                let k = rs / size;
                (size, (x % k) * size, (y % k) * size)
            })
            .collect()
    };
    let floor = |crops: bool| {
        warm_median(|| {
            let t = Instant::now();
            pool.install(|| {
                cells.par_iter().for_each(|&(i, j)| {
                    let buffer = cpia::ops::pool::take(rs as usize * rs as usize * 3);
                    let img = direct
                        .read_rgb_into(level0(i * rs, j * rs, rs), buffer)
                        .unwrap();
                    let tiles = in_cell(i, j);
                    if crops && tiles.iter().any(|t| t.0 == rs) {
                        // The XL tile from pixels, its children cut from it.
                        let xl = cpia::ops::encode::encode_jpeg(&img, &q).unwrap();
                        let ix = cpia::ops::jpeg_crop::Indexed::new(&xl).unwrap();
                        tiles
                            .par_iter()
                            .filter(|t| t.0 != rs)
                            .for_each(|&(size, tx, ty)| {
                                std::hint::black_box(ix.crop(tx, ty, size, size).unwrap());
                            });
                    } else {
                        tiles.par_iter().for_each(|&(size, tx, ty)| {
                            let jpeg =
                                cpia::ops::encode::encode_jpeg_region(&img, tx, ty, size, size, &q);
                            std::hint::black_box(jpeg.unwrap());
                        });
                    }
                    cpia::ops::pool::give(img.into_raw());
                })
            });
            t.elapsed().as_secs_f64()
        })
    };
    let f = floor(false);
    let fc = floor(true);
    let py = python_ok.then(|| warm_median(|| python_reference_secs(&slide)));
    println!(
        "  cpia build -j 2, reader auto (direct): {b:.2} s; reader openslide: {bo:.2} s ({:.2}x)",
        bo / b
    );
    if let Some((bb, bin)) = &base {
        println!(
            "  baseline {} build -j 2, reader auto: {bb:.2} s; baseline / this: {:.2}x",
            bin.display(),
            bb / b
        );
    }
    println!("  pixel floor (decode needed tiles + encode every written tile, 2 threads): {f:.2} s; build / floor: {:.2}x", b / f);
    println!("  crop floor (decode + encode the XL tiles + cut L, M, S from them): {fc:.2} s; build / crop floor: {:.2}x", b / fc);
    if let Some(p) = py {
        println!("  Python reference: {p:.2} s; Python / cpia: {:.1}x", p / b);
    }
    report_peer(&slide, b);
}

/// The rebuild that replaces every tile of the 20x slide's dataset, by the
/// bench's `cpia` and by `CPIA_BENCH_BASELINE` when set.
fn bench_rebuild() {
    if cpia::fixture::testdata_dir().is_none() {
        println!("rebuild: SKIPPED, shared/testdata not found (set CPIA_TESTDATA)");
        return;
    }
    let spec = cpia::fixture::SlideSpec::aperio_20x(5, 4, 31);
    let slide = cpia::fixture::cached_fixture(&spec, &cpia::fixture::fixture_cache_dir()).unwrap();
    let mut bins = vec![(
        "this build".to_string(),
        PathBuf::from(env!("CARGO_BIN_EXE_cpia")),
    )];
    if let Some(b) = baseline() {
        bins.push((format!("baseline {}", b.display()), b));
    }
    println!("rebuild replacing every tile of the 20x slide (quality 75 -> 76), cpia build -j 2, warm median of {}:", runs());
    for (name, bin) in &bins {
        let (mut user, mut sys, mut tiles) = (Vec::new(), Vec::new(), 0);
        let wall = warm_median(|| {
            let ws = wsi_workspace(&slide, "auto");
            let run = |ws: &Path| {
                let out = Command::new("/usr/bin/time")
                    .args(["-f", "TIMES %e %U %S"])
                    .arg(bin)
                    .args(["build", "--json", "-j", "2"])
                    .current_dir(ws)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                let t: Vec<f64> = text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("TIMES "))
                    .unwrap()
                    .split(' ')
                    .map(|v| v.parse().unwrap())
                    .collect();
                (t, j)
            };
            run(ws.path());
            let recipe = ws.path().join("recipes/w.toml");
            let mut text = std::fs::read_to_string(&recipe).unwrap();
            for scale in ["XL", "L", "M", "S"] {
                text += &format!("[[steps]]\nid = \"write_{scale}\"\nquality = 76\n");
            }
            std::fs::write(&recipe, text).unwrap();
            let (t, j) = run(ws.path());
            tiles = j["built"].as_u64().unwrap_or(0);
            user.push(t[1]);
            sys.push(t[2]);
            t[0]
        });
        println!(
            "  {name}: {wall:.2} s wall, user {:.2} s, sys {:.2} s ({tiles} built)",
            median(user[1..].to_vec()),
            median(sys[1..].to_vec())
        );
    }
}

/// Thread CPU time in seconds.
fn cpu_now() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The `n` crops of `jpeg` through libjpeg-turbo's lossless transform, in
/// one `tj3Transform` call (one coefficient read).
fn tj3_crops(jpeg: &[u8], rects: &[(u32, u32, u32)]) -> Vec<Vec<u8>> {
    use turbojpeg::raw;
    // SAFETY: a handle from tj3Init, buffers TurboJPEG allocates and we free.
    unsafe {
        let h = raw::tj3Init(raw::TJINIT_TJINIT_TRANSFORM as i32);
        assert!(!h.is_null());
        let n = rects.len();
        let mut bufs: Vec<*mut u8> = vec![std::ptr::null_mut(); n];
        let mut sizes: Vec<raw::size_t> = vec![0; n];
        let ts: Vec<raw::tjtransform> = rects
            .iter()
            .map(|&(x, y, s)| raw::tjtransform {
                r: raw::tjregion {
                    x: x as i32,
                    y: y as i32,
                    w: s as i32,
                    h: s as i32,
                },
                op: raw::TJXOP_TJXOP_NONE as i32,
                options: (raw::TJXOPT_CROP | raw::TJXOPT_COPYNONE) as i32,
                data: std::ptr::null_mut(),
                customFilter: None,
            })
            .collect();
        let rc = raw::tj3Transform(
            h,
            jpeg.as_ptr(),
            jpeg.len() as _,
            n as i32,
            bufs.as_mut_ptr(),
            sizes.as_mut_ptr(),
            ts.as_ptr(),
        );
        assert_eq!(rc, 0, "tj3Transform failed");
        let out = (0..n)
            .map(|i| {
                let v = std::slice::from_raw_parts(bufs[i], sizes[i] as usize).to_vec();
                raw::tj3Free(bufs[i].cast());
                v
            })
            .collect();
        raw::tj3Destroy(h);
        out
    }
}

fn bench_crop() {
    if cpia::fixture::testdata_dir().is_none() {
        println!("crop: SKIPPED, shared/testdata not found (set CPIA_TESTDATA)");
        return;
    }
    let spec = cpia::fixture::SlideSpec::aperio_20x(5, 4, 31);
    let slide = cpia::fixture::cached_fixture(&spec, &cpia::fixture::fixture_cache_dir()).unwrap();
    let s = cpia::slide::Slide::open(&slide).unwrap();
    let q = cpia::ops::JpegParams::default();
    let rs = 3840u32;
    println!("L (16), M (100) and S (100 of 1,600) tiles of each 3840² cell of the 20x slide, thread CPU ms:");
    println!(
        "{:>6} {:>9} | {:>21} | {:>21} | {:>27}",
        "cell",
        "XL bytes",
        "pixels L / M / S",
        "tj3Transform L / M / S",
        "splice index + L / M / S"
    );
    let mut total = [0.0f64; 3];
    for j in 1..spec.cells_y - 1 {
        for i in 1..spec.cells_x - 1 {
            let img = s
                .read_with(
                    cpia::slide::ReaderChoice::Auto,
                    level0(i * rs, j * rs, rs),
                    vec![0; (rs * rs * 3) as usize],
                )
                .unwrap();
            let xl = cpia::ops::encode::encode_jpeg(&img, &q).unwrap();
            let scales: Vec<Vec<(u32, u32, u32)>> = [960u32, 384, 96]
                .iter()
                .map(|&size| {
                    let k = rs / size;
                    let all = (0..k * k).map(move |n| ((n % k) * size, (n / k) * size, size));
                    if size == 96 {
                        all.step_by(16).collect()
                    } else {
                        all.collect()
                    }
                })
                .collect();
            let time = |f: &mut dyn FnMut()| {
                let t = cpu_now();
                f();
                (cpu_now() - t) * 1e3
            };
            let mut pixels = Vec::new();
            let mut tj = Vec::new();
            for rects in &scales {
                let mut a = Vec::new();
                pixels.push(time(&mut || {
                    a = rects
                        .iter()
                        .map(|&(x, y, s)| {
                            cpia::ops::encode::encode_jpeg_region(&img, x, y, s, s, &q).unwrap()
                        })
                        .collect();
                }));
                let mut b = Vec::new();
                tj.push(time(&mut || b = tj3_crops(&xl, rects)));
                assert!(a == b, "tj3Transform differs from the pixel path");
            }
            let mut ix = None;
            let index = time(&mut || ix = Some(cpia::ops::jpeg_crop::Indexed::new(&xl).unwrap()));
            let ix = ix.unwrap();
            let spliced: Vec<f64> = scales
                .iter()
                .map(|rects| {
                    time(&mut || {
                        for &(x, y, s) in rects {
                            std::hint::black_box(ix.crop(x, y, s, s).unwrap());
                        }
                    })
                })
                .collect();
            let sum = |v: &[f64]| v.iter().sum::<f64>();
            total[0] += sum(&pixels);
            total[1] += sum(&tj);
            total[2] += index + sum(&spliced);
            println!(
                "{:>6} {:>9} | {:>6.1} {:>6.1} {:>6.1} | {:>6.1} {:>6.1} {:>6.1} | {:>5.1} + {:>5.1} {:>5.1} {:>5.1}",
                format!("{i},{j}"), xl.len(), pixels[0], pixels[1], pixels[2], tj[0], tj[1], tj[2], index, spliced[0], spliced[1], spliced[2]
            );
        }
    }
    println!(
        "  total: pixels {:.0} ms, tj3Transform {:.0} ms ({:.2}x), splice {:.0} ms ({:.2}x)",
        total[0],
        total[1],
        total[1] / total[0],
        total[2],
        total[2] / total[0]
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = args.is_empty();
    if all || args.iter().any(|a| a == "roi") {
        bench_roi();
    }
    if all || args.iter().any(|a| a == "noop") {
        bench_noop();
    }
    if all || args.iter().any(|a| a == "wsi") {
        bench_wsi();
    }
    if all || args.iter().any(|a| a == "direct") {
        bench_direct();
    }
    if all || args.iter().any(|a| a == "rebuild") {
        bench_rebuild();
    }
    if all || args.iter().any(|a| a == "crop") {
        bench_crop();
    }
    // The kept temporary folders (main-thread TLS is not destroyed at exit).
    KEPT.with(|k| k.borrow_mut().clear());
}
