//! Corpus-scale simulation: `cargo bench --bench corpus [-- 100k 1m 10m roi]`.
//!
//! Real files for a million outputs cannot come from real builds in a
//! benchmark's time, so this writes a synthetic but valid workspace — real
//! recipes (the CPIA WSI template and the ROI centre-square template), source
//! files, a state recorded through the library exactly as a build records it
//! (keys, units, tiles, fingerprints computed by `cpia::plan`), and an output
//! tree of empty files under the names the state records — and then runs the
//! real `cpia` binary on it.
//!
//! Shape (like the published CPIA tables): 99 % WSI tiles, 1 % ROI outputs.
//! WSI: 20 collections; each slide is a 20x slide of 4x3 inner 3840-px cells,
//! 5 of them kept, with 1 XL + 16 L + 90 M + 90 S tiles per kept cell (985
//! tiles per slide, a QC picture, 48 units); four scale folders per
//! collection. ROI: 10 collections, one output per source file (real 8x8
//! PNGs, in class folders of 1,000).
//!
//! Reported, side by side in one run:
//! - no-op `cpia build`: the first after generation (every output folder is
//!   verified once) and the median of 5 after it; peak RSS (wait4);
//! - `cpia plan` (a no-op plan): time and peak RSS;
//! - one changed ROI source among all outputs: its build time;
//! - state bytes per output after `VACUUM`, for WSI-only and ROI-only states
//!   (page count × page size / outputs), and at 10 M WSI tiles state-only.
//!
//! Targets (issue 9): no-op at 1 M ≤ 0.5 s and ≤ 1.5× the 100 k figure; peak
//! RSS ≤ 200 MB, flat; one change ≤ 1 s plus its own work; ≤ 150 bytes per
//! WSI tile, ≤ 400 per ROI output.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::measured::median;
use common::*;
use cpia::store::State;

/// State bytes per output after VACUUM.
fn bytes_per_output(dir: &Path, outputs: u64) -> f64 {
    let mut state = State::open(&dir.join("cache/state.sqlite")).unwrap();
    state.vacuum().unwrap();
    let (pages, size, free) = state.size().unwrap();
    ((pages - free) * size) as f64 / outputs as f64
}

struct Row {
    outputs: u64,
    first_noop: f64,
    noop: f64,
    noop_rss: f64,
    plan: f64,
    plan_rss: f64,
    change: f64,
    generate: f64,
}

fn measure(base: &Path, shape: Shape) -> Row {
    let t = Instant::now();
    let c = Corpus::generate(
        &base.join(format!("ws-{}-{}", shape.wsi_tiles, shape.roi_outputs)),
        shape,
    );
    let generate = t.elapsed().as_secs_f64();
    let (first_noop, _, j) = run(&c.dir, &["build", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(j["built"], 0, "the generated state is not up to date: {j}");
    assert_eq!(j["up_to_date"].as_u64(), Some(c.outputs), "{j}");
    let runs: Vec<(f64, f64)> = (0..5)
        .map(|_| {
            let (t, rss, _) = run(&c.dir, &["build", "--json"]);
            (t, rss)
        })
        .collect();
    let noop = median(runs.iter().map(|r| r.0).collect());
    let noop_rss = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    let plans: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let (t, rss, _) = run(&c.dir, &["plan"]);
            (t, rss)
        })
        .collect();
    let plan = median(plans.iter().map(|r| r.0).collect());
    let plan_rss = plans.iter().map(|r| r.1).fold(0.0, f64::max);
    // One ROI source changed among all of them.
    let src = &c.roi_sources[0];
    std::fs::write(src, tiny_png(u64::MAX / 3)).unwrap();
    let (change, _, j) = run(&c.dir, &["build", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(j["built"], 1, "{j}");
    if std::env::var_os("CPIA_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&c.dir);
    }
    Row {
        outputs: c.outputs,
        first_noop,
        noop,
        noop_rss,
        plan,
        plan_rss,
        change,
        generate,
    }
}

fn state_only(base: &Path, wsi: u64, roi: u64) -> (u64, f64) {
    let dir = base.join(format!("state-{wsi}-{roi}"));
    let c = Corpus::generate(
        &dir,
        Shape {
            wsi_tiles: wsi,
            roi_outputs: roi,
            files: false,
            images: false,
            file_bytes: 0,
        },
    );
    let b = bytes_per_output(&dir, c.outputs);
    let _ = std::fs::remove_dir_all(&dir);
    (c.outputs, b)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |k: &str| args.is_empty() || args.iter().any(|a| a == k);
    let base = std::env::var_os("CPIA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target/bench-corpus"));
    std::fs::create_dir_all(&base).unwrap();
    let mut rows = Vec::new();
    for (k, n) in [("100k", 100_000u64), ("1m", 1_000_000)] {
        if want(k) {
            rows.push(measure(
                &base,
                Shape {
                    wsi_tiles: n - n / 100,
                    roi_outputs: n / 100,
                    files: true,
                    images: false,
                    file_bytes: 0,
                },
            ));
        }
    }
    println!("\ncorpus-shaped no-op (2 cores; {WSI_COLLECTIONS} WSI + {ROI_COLLECTIONS} ROI collections, 99% WSI tiles)");
    println!("| recorded outputs | first no-op (verifies every folder) | no-op (median of 5) | peak RSS | plan | plan RSS | one ROI source changed | generate |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} s | {:.3} s | {:.0} MiB | {:.3} s | {:.0} MiB | {:.3} s | {:.0} s |",
            r.outputs, r.first_noop, r.noop, r.noop_rss, r.plan, r.plan_rss, r.change, r.generate
        );
    }
    if rows.len() == 2 {
        println!(
            "no-op 1M / 100k: {:.2}x (target <= 1.5x); RSS 1M / 100k: {:.2}x",
            rows[1].noop / rows[0].noop,
            rows[1].noop_rss / rows[0].noop_rss
        );
    }
    if want("roi") {
        // ROI collections pay one stat per source file: an ROI-only workspace
        // of 200,000 sources, to extrapolate to the corpus's 1.16 M.
        let r = measure(
            &base,
            Shape {
                wsi_tiles: 0,
                roi_outputs: 200_000,
                files: true,
                images: false,
                file_bytes: 0,
            },
        );
        println!(
            "ROI-only, {} sources and outputs: no-op {:.3} s (median of 5), peak RSS {:.0} MiB, plan {:.3} s; \
             {:.2} µs per source: the corpus's 1.16 M ROI sources would take ~{:.1} s",
            r.outputs,
            r.noop,
            r.noop_rss,
            r.plan,
            r.noop / r.outputs as f64 * 1e6,
            r.noop / r.outputs as f64 * 1.16e6
        );
        let (n, b) = state_only(&base, 0, 200_000);
        println!("state per ROI output (ROI-only state, {n} outputs, after VACUUM): {b:.0} bytes (target <= 400)");
    }
    for (k, n) in [("1m", 1_000_000u64), ("10m", 10_000_000)] {
        if want(k) && (k != "10m" || args.iter().any(|a| a == "10m")) {
            let (outputs, b) = state_only(&base, n, 0);
            println!("state per WSI tile (WSI-only state, {outputs} outputs, after VACUUM): {b:.0} bytes (target <= 150)");
        }
    }
}
