//! The report at corpus scale: `cargo bench --bench report [-- 100k 1m]`.
//!
//! Generates the corpus-shaped workspace of `benches/corpus.rs` (20 WSI
//! collections of 985-tile slides, 10 ROI collections; 99 % WSI tiles) with
//! every output a real picture of its size (hard links to one 3840², 960²,
//! 384², 96² JPEG and one 1024×768 QC PNG, so the report's thumbnails decode
//! what real tiles cost), then runs the real binary: `cpia report` (HTML,
//! with thumbnails), `cpia report --format json`, `cpia status` and
//! `cpia list`, each the median of 3 warm runs, with peak RSS and the
//! report's size.
//!
//! Target (issue 11): the report's size and time grow with collections and
//! slides, not tiles. From 100 k to 1 M outputs the tiles and slides both
//! grow 10×; the HTML's size must stay flat (bounded samples) and its time
//! well under 10× (what grows is a row per slide and per WSI unit in SQL,
//! not per tile).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::measured::median;
use common::*;

struct Row {
    outputs: u64,
    slides: u64,
    html: f64,
    html_rss: f64,
    html_bytes: u64,
    images: usize,
    json: f64,
    status: f64,
    list: f64,
    generate: f64,
}

fn measure(base: &std::path::Path, total: u64) -> Row {
    let t = Instant::now();
    let roi = total / 100;
    let c = Corpus::generate(
        &base.join(format!("report-{total}")),
        Shape {
            wsi_tiles: total - roi,
            roi_outputs: roi,
            files: true,
            images: true,
            file_bytes: 0,
        },
    );
    let generate = t.elapsed().as_secs_f64();
    let timed = |args: &[&str]| -> (f64, f64, String) {
        run(&c.dir, args);
        let runs: Vec<(f64, f64, String)> = (0..3).map(|_| run(&c.dir, args)).collect();
        let t = median(runs.iter().map(|r| r.0).collect());
        let rss = runs.iter().map(|r| r.1).fold(0.0, f64::max);
        (t, rss, runs[0].2.clone())
    };
    let (html, html_rss, _) = timed(&["report"]);
    let page = std::fs::read_to_string(c.dir.join("dataset/report.html")).unwrap();
    let images = page.matches("src=\"data:image/jpeg;base64,").count();
    let (json, _, _) = timed(&["report", "--format", "json", "-o", "-"]);
    let (status, _, out) = timed(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let qc = st["summary"]["qc_pictures"].as_u64().unwrap();
    assert_eq!(
        st["summary"]["images"].as_u64().unwrap() + qc,
        c.outputs,
        "status counts every recorded output"
    );
    let (list, _, _) = timed(&["list", "--json"]);
    if std::env::var_os("CPIA_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&c.dir);
    }
    Row {
        outputs: c.outputs,
        slides: st["summary"]["slides"].as_u64().unwrap(),
        html,
        html_rss,
        html_bytes: page.len() as u64,
        images,
        json,
        status,
        list,
        generate,
    }
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
            rows.push(measure(&base, n));
        }
    }
    println!("\nreport at corpus scale (2 cores; {WSI_COLLECTIONS} WSI + {ROI_COLLECTIONS} ROI collections, 99% WSI tiles; medians of 3 warm runs)");
    println!("| recorded outputs | slides | report (HTML) | its peak RSS | its size | thumbnails | report --format json | status | list | generate |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} s | {:.0} MiB | {:.0} KiB | {} | {:.2} s | {:.2} s | {:.2} s | {:.0} s |",
            r.outputs,
            r.slides,
            r.html,
            r.html_rss,
            r.html_bytes as f64 / 1024.0,
            r.images,
            r.json,
            r.status,
            r.list,
            r.generate
        );
    }
    if let [a, b] = rows.as_slice() {
        println!(
            "1M / 100k: outputs {:.1}x, report time {:.2}x, report size {:.2}x, status time {:.2}x",
            b.outputs as f64 / a.outputs as f64,
            b.html / a.html,
            b.html_bytes as f64 / a.html_bytes as f64,
            b.status / a.status
        );
    }
}
