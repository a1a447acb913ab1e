//! Provenance benchmarks: `cargo bench --bench provenance [-- verify deep manifests]`.
//!
//! - `verify`: `cpia verify` (stat mode) over the corpus-scale simulation
//!   (`benches/common/`: 99 % WSI tiles, real recipes, a state
//!   recorded through the library, a real output tree) at 100 k and 1 M
//!   outputs; median of 5 warm runs; peak RSS. Target: ≤ 3 s at 1 M.
//! - `deep`: `cpia verify --deep -j 2` against `b3sum --num-threads 2` on the
//!   same files, side by side in one run (each warmed once, then 5
//!   alternating runs, medians): 10,000 outputs of 48 KiB (JPEG tile sized)
//!   and 64 outputs of 16 MiB. Target: ≥ 80 % of b3sum's throughput. Also
//!   checks that one changed byte among the 10,000 is found. b3sum is
//!   `cargo install`ed into `target/b3sum` when it is not on PATH.
//! - `manifests`: the cost of bringing the manifests up to date after k
//!   inputs changed (k = 1, 10, 100, 1000 ROI sources; 1, 10, 100 slides), at
//!   100 k and 1 M recorded outputs, through the library (the records are
//!   changed as a rebuild changes them: a new build id). Target: the rows
//!   written and the time follow k, not the size of the corpus.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::measured::{median, run, run_program};
use common::{manifest, write_manifests, Corpus, Shape};
use cpia::store::State;

fn base() -> PathBuf {
    std::env::var_os("CPIA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target/bench-provenance"))
}

fn corpus(name: &str, wsi: u64, roi: u64, file_bytes: usize) -> Corpus {
    let t = Instant::now();
    let c = Corpus::generate(
        &base().join(name),
        Shape {
            wsi_tiles: wsi,
            roi_outputs: roi,
            files: true,
            images: false,
            file_bytes,
        },
    );
    eprintln!(
        "generated {name}: {} outputs in {:.0} s",
        c.outputs,
        t.elapsed().as_secs_f64()
    );
    c
}

fn done(c: &Corpus) {
    if std::env::var_os("CPIA_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

fn verify_mode() {
    println!("\n`cpia verify` (stat mode), corpus-shaped (2 cores, warm cache, median of 5)");
    println!("| recorded outputs | verify | CPU (user+sys) | peak RSS | files checked |");
    println!("|---|---|---|---|---|");
    for total in [100_000u64, 1_000_000] {
        let c = corpus(
            &format!("verify-{total}"),
            total - total / 100,
            total / 100,
            0,
        );
        let first = run(&c.dir, &["verify", "--json"]);
        assert_eq!(first.code, 0, "not clean: {}{}", first.stdout, first.stderr);
        let j: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
        let runs: Vec<(f64, f64, f64)> = (0..5)
            .map(|_| {
                let r = run(&c.dir, &["verify"]);
                assert_eq!(r.code, 0, "{}", r.stderr);
                (r.wall, r.rss_mib, r.cpu)
            })
            .collect();
        println!(
            "| {} | {:.2} s | {:.2} s | {:.0} MiB | {} |",
            c.outputs,
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.2).collect()),
            runs.iter().map(|r| r.1).fold(0.0, f64::max),
            j["stats"]["files"]
        );
        done(&c);
    }
}

/// `b3sum` on PATH, or built into `target/b3sum` with cargo.
fn b3sum() -> PathBuf {
    if let Ok(o) = Command::new("b3sum").arg("--version").output() {
        if o.status.success() {
            return PathBuf::from("b3sum");
        }
    }
    let root = manifest().join("target/b3sum");
    let bin = root.join("bin/b3sum");
    if !bin.exists() {
        eprintln!("installing b3sum into {} (cargo install)", root.display());
        let s = Command::new("cargo")
            .args(["install", "--locked", "b3sum", "--root"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(s.success(), "cargo install b3sum failed");
    }
    bin
}

/// Every regular file under the recorded output folders (not manifests).
fn output_files(dataset: &Path) -> (Vec<String>, u64) {
    let mut files = Vec::new();
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(dataset)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        let rel = e
            .path()
            .strip_prefix(dataset)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if e.file_type().is_file() && !rel.starts_with("manifests/") && !rel.starts_with("qc/") {
            bytes += e.metadata().unwrap().len();
            files.push(rel);
        }
    }
    (files, bytes)
}

fn deep_mode() {
    let b3 = b3sum();
    println!("\n`cpia verify --deep -j 2` vs `b3sum --num-threads 2` on the same files (warm cache, median of 5)");
    println!("| files | bytes | cpia verify --deep | b3sum | cpia / b3sum throughput |");
    println!("|---|---|---|---|---|");
    for (name, roi, wsi, size) in [
        ("deep-small", 10_000u64, 0u64, 48 << 10),
        ("deep-large", 60, 0, 16 << 20),
    ] {
        let c = corpus(name, wsi, roi, size);
        let dataset = c.dir.join("dataset");
        let (files, bytes) = output_files(&dataset);
        let cpia = || {
            let r = run(&c.dir, &["verify", "--deep", "-j", "2"]);
            assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
            r.wall
        };
        let b3 = || {
            let r = run_program(
                Command::new(&b3).args(["--num-threads", "2"]).args(&files),
                &dataset,
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(r.stdout.lines().count(), files.len());
            r.wall
        };
        cpia();
        b3();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..5 {
            ours.push(cpia());
            theirs.push(b3());
        }
        let (o, t) = (median(ours), median(theirs));
        let mib = bytes as f64 / 1048576.0;
        println!(
            "| {} | {:.0} MiB | {:.3} s ({:.0} MiB/s) | {:.3} s ({:.0} MiB/s) | {:.0} % |",
            files.len(),
            mib,
            o,
            mib / o,
            t,
            mib / t,
            100.0 * t / o
        );
        if name == "deep-small" {
            one_byte_is_found(&c.dir, &dataset.join(&files[files.len() / 2]));
        }
        done(&c);
    }
}

/// A byte flipped in place (size and mtime kept) is found by `--deep` alone.
fn one_byte_is_found(dir: &Path, victim: &Path) {
    let mtime = std::fs::metadata(victim).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(victim).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let r = run(dir, &["verify", "--json"]);
    let stat_mode = r.code;
    let r = run(dir, &["verify", "--deep", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(j["findings"].as_array().unwrap().len(), 1);
    println!(
        "one changed byte among {} files: --deep finds it (exit 1, 1 finding: {}); stat mode exit {stat_mode} (size and mtime unchanged)",
        j["stats"]["files"], j["findings"][0]["path"]
    );
}

/// Marks the records of `inputs` changed as a rebuild does (a new build id)
/// and times the manifest update: (seconds, rows written, parts written).
fn change_and_update(c: &Corpus, table: &str, inputs: &[i64]) -> (f64, u64, u64) {
    let db = rusqlite::Connection::open(c.dir.join("cache/state.sqlite")).unwrap();
    let list = inputs
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    db.execute(
        &format!("UPDATE {table} SET build = build + 1 WHERE input IN ({list})"),
        [],
    )
    .unwrap();
    drop(db);
    let mut state = State::open(&c.dir.join("cache/state.sqlite")).unwrap();
    let t = Instant::now();
    let s = write_manifests(&mut state, &c.dir.join("dataset"));
    (t.elapsed().as_secs_f64(), s.rows_written, s.parts_written)
}

fn manifests_mode() {
    println!("\nmanifest update after k changed inputs (through the library, 2 cores)");
    println!("| recorded outputs | changed | rows rewritten | parts rewritten | time |");
    println!("|---|---|---|---|---|");
    for total in [100_000u64, 1_000_000] {
        let t = Instant::now();
        let c = corpus(
            &format!("manifests-{total}"),
            total - total / 100,
            total / 100,
            0,
        );
        eprintln!(
            "(generation, including the first manifests: {:.0} s)",
            t.elapsed().as_secs_f64()
        );
        let db = rusqlite::Connection::open(c.dir.join("cache/state.sqlite")).unwrap();
        let ids = |sql: &str| -> Vec<i64> {
            let mut s = db.prepare(sql).unwrap();
            let r = s.query_map([], |r| r.get(0)).unwrap();
            r.map(Result::unwrap).collect()
        };
        // Spread over the collections: every 7th ROI input, every 3rd slide.
        let roi = ids("SELECT DISTINCT input FROM outputs WHERE sink <> 'qc' ORDER BY input");
        let slides = ids("SELECT DISTINCT input FROM units ORDER BY input");
        drop(db);
        for k in [1usize, 10, 100, 1000] {
            let pick: Vec<i64> = roi.iter().step_by(7).take(k).copied().collect();
            let (s, rows, parts) = change_and_update(&c, "outputs", &pick);
            println!(
                "| {} | {} ROI sources | {rows} | {parts} | {:.3} s |",
                c.outputs,
                pick.len(),
                s
            );
        }
        for k in [1usize, 10, 100] {
            let pick: Vec<i64> = slides.iter().step_by(3).take(k).copied().collect();
            let (s, rows, parts) = change_and_update(&c, "units", &pick);
            println!(
                "| {} | {} slides | {rows} | {parts} | {:.3} s |",
                c.outputs,
                pick.len(),
                s
            );
        }
        // Nothing changed: nothing written.
        let mut state = State::open(&c.dir.join("cache/state.sqlite")).unwrap();
        let t = Instant::now();
        let s = write_manifests(&mut state, &c.dir.join("dataset"));
        assert_eq!(s.rows_written, 0);
        println!(
            "| {} | nothing | 0 | 0 | {:.4} s |",
            c.outputs,
            t.elapsed().as_secs_f64()
        );
        let r = run(&c.dir, &["verify"]);
        assert_eq!(
            r.code, 0,
            "manifests not clean after the updates: {}{}",
            r.stdout, r.stderr
        );
        done(&c);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |k: &str| args.is_empty() || args.iter().any(|a| a == k);
    std::fs::create_dir_all(base()).unwrap();
    if want("verify") {
        verify_mode();
    }
    if want("deep") {
        deep_mode();
    }
    if want("manifests") {
        manifests_mode();
    }
}
