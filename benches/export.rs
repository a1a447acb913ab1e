//! Export benchmarks: `cargo bench --bench export [-- throughput scale incremental read]`.
//!
//! On the corpus-shaped synthetic workspace of `benches/common` (99 % WSI
//! tiles, real recipes, a state recorded through the library, real files):
//!
//! - `throughput`: `cpia export --format webdataset -j 2` and
//!   `--format parquet` against GNU `tar -cf` of the same files (a file list
//!   in the same order) and against tar then `openssl dgst -sha256` of the
//!   archive (tar with the checksum every shard also gets), 20,000 outputs
//!   of 48 KiB, warm cache, alternating,
//!   medians of `CPIA_BENCH_RUNS` (default 3): MB/s of image bytes, CPU
//!   seconds, and the Parquet shards' bytes. Target: at least tar's. With
//!   `CPIA_BENCH_BASELINE=/path/to/an/older/cpia` the older binary's two
//!   exports run in the same rounds (before/after, side by side).
//! - `scale`: a whole export of 100 k and 1 M outputs (empty files: the cost
//!   is per sample), wall time and peak RSS (wait4). Target: RSS ≤ 200 MB and
//!   flat, time linear.
//! - `incremental`: 100 shards of 1,000 samples; one output's bytes and
//!   record changed (as a rebuild changes them); `cpia export` rewrites one
//!   shard: time against the whole export's.
//! - `read`: samples/s through the real Python `webdataset` reader from the
//!   shards, against the same process decoding the loose files with PIL
//!   (20,000 outputs, real pictures of each scale's size, one process each).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::measured::{median, run, run_program};
use common::{manifest, Corpus, Shape};

fn base() -> PathBuf {
    std::env::var_os("CPIA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target/bench-export"))
}

fn corpus(name: &str, outputs: u64, file_bytes: usize, images: bool) -> Corpus {
    let t = std::time::Instant::now();
    let c = Corpus::generate(
        &base().join(name),
        Shape {
            wsi_tiles: outputs - outputs / 100,
            roi_outputs: outputs / 100,
            files: true,
            images,
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

/// The dataset's image files (relative to `dataset/`) and their bytes.
fn images(c: &Corpus) -> (Vec<String>, u64) {
    let root = c.dir.join("dataset");
    let mut files = Vec::new();
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        let rel = e
            .path()
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel.split('/').next().unwrap_or("");
        if e.file_type().is_file() && ["XL", "L", "M", "S"].contains(&top) {
            bytes += e.metadata().unwrap().len();
            files.push(rel);
        }
    }
    (files, bytes)
}

fn export(c: &Corpus, args: &[&str]) -> common::measured::Run {
    export_as(c, "webdataset", args)
}

fn export_as(c: &Corpus, format: &str, args: &[&str]) -> common::measured::Run {
    export_by(Path::new(env!("CARGO_BIN_EXE_cpia")), c, format, args)
}

/// `cpia export --format FORMAT -j 2 ARGS` run by the binary `bin`.
fn export_by(bin: &Path, c: &Corpus, format: &str, args: &[&str]) -> common::measured::Run {
    let mut all = vec!["export", "--format", format, "-j", "2"];
    all.extend_from_slice(args);
    let r = run_program(Command::new(bin).args(&all), &c.dir);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    r
}

fn remove_named(c: &Corpus, name: &str) {
    let r = run(&c.dir, &["export", "--remove", name]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn throughput() {
    let c = corpus("throughput", 20_000, 48 << 10, false);
    let (files, bytes) = images(&c);
    let list = c.dir.join("files.txt");
    std::fs::write(&list, files.join("\n") + "\n").unwrap();
    let tar_out = c.dir.join("all.tar");
    let tar = || {
        let mut cmd = Command::new("tar");
        cmd.arg("-cf")
            .arg(&tar_out)
            .arg("-C")
            .arg(c.dir.join("dataset"))
            .arg("-T")
            .arg(&list);
        let r = run_program(&mut cmd, &c.dir);
        assert_eq!(r.code, 0, "{}", r.stderr);
        std::fs::remove_file(&tar_out).unwrap();
        r.wall
    };
    // The same tar with the SHA-256 every shard also gets (Croissant's
    // checksum), by the fastest standard tools: OpenSSL's SHA-256 uses
    // SHA-NI (coreutils' `sha256sum` does not: 3.3 s per GB here, against
    // 0.86 s), and run after tar, since `tar | tee | openssl` is slower
    // still (tee copies 8 KiB at a time).
    let tar_sha = || {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(
            "tar -cf all.tar -C dataset -T files.txt && openssl dgst -sha256 all.tar >/dev/null",
        );
        let r = run_program(&mut cmd, &c.dir);
        assert_eq!(r.code, 0, "{}", r.stderr);
        std::fs::remove_file(&tar_out).unwrap();
        r.wall
    };
    // One export by `bin` in `format`, removed after: (wall, CPU).
    let parquet_size = std::cell::Cell::new(0);
    let one = |bin: &Path, format: &str| {
        let r = export_by(bin, &c, format, &["--shard-bytes", "256M"]);
        if format == "parquet" {
            parquet_size.set(bytes_under(&c.dir.join("dataset/export/parquet/data")));
        }
        remove_named(&c, format);
        (r.wall, r.cpu)
    };
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_cpia"));
    let baseline = std::env::var_os("CPIA_BENCH_BASELINE").map(PathBuf::from);
    let mut tools: Vec<(String, PathBuf, &str)> = Vec::new();
    for format in ["webdataset", "parquet"] {
        if let Some(b) = &baseline {
            tools.push((format!("before (`{}`)", b.display()), b.clone(), format));
        }
        tools.push((String::new(), ours.clone(), format));
    }
    let runs: usize = std::env::var("CPIA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    tar();
    tar_sha();
    for (_, bin, format) in &tools {
        one(bin, format);
    }
    let mut t = Vec::new();
    let mut ts = Vec::new();
    let mut o: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); tools.len()];
    for _ in 0..runs {
        t.push(tar());
        ts.push(tar_sha());
        for (i, (_, bin, format)) in tools.iter().enumerate() {
            let (wall, cpu) = one(bin, format);
            o[i].0.push(wall);
            o[i].1.push(cpu);
        }
    }
    let mb = bytes as f64 / 1e6;
    let t = median(t);
    println!(
        "\nexport throughput, {} files, {:.0} MB (warm cache, 2 cores, median of {runs})",
        files.len(),
        mb
    );
    println!("| tool | wall | CPU | MB/s |\n|---|---|---|---|");
    println!("| `tar -cf` (GNU) | {t:.2} s | | {:.0} |", mb / t);
    let ts = median(ts);
    println!(
        "| `tar -cf all.tar … && openssl dgst -sha256 all.tar` (the same, with one checksum) | {ts:.2} s | | {:.0} ({:.2}× tar) |",
        mb / ts,
        t / ts
    );
    for ((who, _, format), (walls, cpus)) in tools.iter().zip(o) {
        let (w, cpu) = (median(walls), median(cpus));
        let what = if *format == "parquet" {
            format!(
                "the same, zstd pages; {:.0} MB of shards (the last run's), {:.3}× the images",
                parquet_size.get() as f64 / 1e6,
                parquet_size.get() as f64 / bytes as f64
            )
        } else {
            "hashes every image, blake3 + SHA-256 of every shard, fsync".to_string()
        };
        println!(
            "| `cpia export --format {format} -j 2` {who}({what}) | {w:.2} s | {cpu:.2} s | {:.0} ({:.2}× tar) |",
            mb / w,
            t / w
        );
    }
    done(&c);
}

fn scale() {
    println!("\nwhole export, corpus-shaped (empty files: the cost per sample), 2 cores");
    println!("| outputs | wall | per sample | peak RSS |\n|---|---|---|---|");
    for n in [100_000u64, 1_000_000] {
        let c = corpus(&format!("scale-{n}"), n, 0, false);
        let r = export(&c, &["--shard-samples", "10000"]);
        println!(
            "| {} | {:.1} s | {:.1} µs | {:.0} MiB |",
            c.outputs,
            r.wall,
            r.wall * 1e6 / c.outputs as f64,
            r.rss_mib
        );
        done(&c);
    }
}

fn incremental() {
    let c = corpus("incremental", 100_000, 2048, false);
    let whole = export(&c, &["--shard-samples", "1000"]);
    // Shards by their blake3, not their bytes: a child forked while this
    // process holds ~400 MB would report that as its own peak RSS (Linux
    // carries the parent's high-water mark through fork and exec).
    let shards = |c: &Corpus| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> =
            std::fs::read_dir(c.dir.join("dataset/export/webdataset"))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        blake3::hash(&std::fs::read(e.path()).unwrap())
                            .to_hex()
                            .to_string(),
                    )
                })
                .collect();
        v.sort();
        v
    };
    let before = shards(&c);
    // One output rewritten with other bytes, and its record changed as a
    // rebuild changes it (the triggers mark its pair for the export).
    let db = rusqlite::Connection::open(c.dir.join("cache/state.sqlite")).unwrap();
    let (id, path): (i64, String) = db
        .query_row(
            "SELECT o.id, d.path || '/' || o.name FROM outputs o JOIN out_dirs d ON d.id = o.out_dir
              WHERE o.sink <> 'qc' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let bytes = common::content(999_999, 2048);
    let file = c.dir.join("dataset").join(&path);
    std::fs::write(&file, &bytes).unwrap();
    db.execute(
        "UPDATE outputs SET content_hash = ?1, size = ?2 WHERE id = ?3",
        rusqlite::params![
            blake3::hash(&bytes).as_bytes().to_vec(),
            bytes.len() as i64,
            id
        ],
    )
    .unwrap();
    drop(db);
    let one = run(&c.dir, &["export", "webdataset", "--json"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    let after = shards(&c);
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    println!(
        "\nincremental export: {} shards of ~1,000 samples; one output changed",
        before.len()
    );
    println!("| what | wall | shards rewritten | peak RSS |\n|---|---|---|---|");
    println!(
        "| whole export | {:.2} s | {} | {:.0} MiB |",
        whole.wall,
        before.len(),
        whole.rss_mib
    );
    println!(
        "| one sample changed | {:.3} s | {changed} | {:.0} MiB |",
        one.wall, one.rss_mib
    );
    assert_eq!(changed, 1, "{}", one.stdout);
    done(&c);
}

const READ: &str = r#"
import sys, time, glob, io
from PIL import Image
mode, root = sys.argv[1], sys.argv[2]
t = time.perf_counter(); n = 0
if mode == "shards":
    import webdataset as wds
    for s in wds.WebDataset(sorted(glob.glob(root + "/*.tar")), shardshuffle=False):
        Image.open(io.BytesIO(s["jpg"])).load(); n += 1
else:
    for line in open(root):
        Image.open(line.strip()).load(); n += 1
print(n, time.perf_counter() - t)
"#;

fn read() {
    let c = corpus("read", 20_000, 0, true);
    export(&c, &["--shard-bytes", "256M"]);
    let (files, _) = images(&c);
    let list = c.dir.join("loose.txt");
    let root = c.dir.join("dataset");
    std::fs::write(
        &list,
        files
            .iter()
            .map(|f| root.join(f).to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .unwrap();
    let py = |mode: &str, arg: &Path| -> (f64, f64) {
        let o = Command::new("python3")
            .args(["-c", READ, mode])
            .arg(arg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s = String::from_utf8_lossy(&o.stdout);
        let mut it = s.split_whitespace();
        (
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().parse().unwrap(),
        )
    };
    let shards_dir = c.dir.join("dataset/export/webdataset");
    let _ = (py("shards", &shards_dir), py("loose", &list));
    let (n, ts) = py("shards", &shards_dir);
    let (m, tl) = py("loose", &list);
    assert_eq!(n, m);
    println!("\nreading {n} samples, one process, decoding every JPEG (PIL), warm cache");
    println!("| source | samples/s |\n|---|---|");
    println!("| WebDataset shards (`webdataset`) | {:.0} |", n / ts);
    println!("| loose files (PIL `open`) | {:.0} |", m / tl);
    done(&c);
}

fn main() {
    let modes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = modes.is_empty();
    let on = |m: &str| all || modes.iter().any(|x| x == m);
    if on("throughput") {
        throughput();
    }
    if on("incremental") {
        incremental();
    }
    if on("scale") {
        scale();
    }
    if on("read") {
        read();
    }
}
