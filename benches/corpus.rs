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

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use cpia::plan::expand::{expand_roi, expand_wsi, CollectionSpec, PlannedUnit};
use cpia::slide::{Level, SlideMeta};
use cpia::store::{
    Event, FileStat, Maker, OutputRecord, ReadFacts, State, TileRecord, UnitRecord, WrittenFile,
};
use rayon::prelude::*;

const WSI_COLLECTIONS: usize = 20;
const ROI_COLLECTIONS: usize = 10;
const TILES_PER_SLIDE: u64 = 985;
/// Inner cells kept of the 4x3 grid (row-major indices).
const KEPT: [usize; 5] = [1, 2, 5, 6, 9];

fn cpia() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpia"))
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A real 8x8 PNG, different for every `i`.
fn tiny_png(i: u64) -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        let v = (i as u32).wrapping_mul(2_654_435_761) ^ (x * 8 + y) ^ ((i >> 32) as u32);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

/// What to generate.
#[derive(Clone, Copy)]
struct Shape {
    wsi_tiles: u64,
    roi_outputs: u64,
    /// Write the output tree (false: the state only).
    files: bool,
}

/// A generated workspace.
struct Corpus {
    dir: PathBuf,
    outputs: u64,
    roi_sources: Vec<PathBuf>,
}

fn load(dir: &Path, file: &str) -> Arc<CollectionSpec> {
    let mut read = |p: &Path| std::fs::read_to_string(p);
    let recipe = cpia::recipe::load_recipe(&dir.join("recipes").join(file), &mut read)
        .unwrap_or_else(|d| panic!("{d}"));
    Arc::new(CollectionSpec::new(Arc::new(recipe)))
}

fn stat(m: &std::fs::Metadata) -> FileStat {
    FileStat {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    }
}

/// Creates an empty output file (unless state-only) and says what was
/// written, as the engine would record it.
fn put(root: &Path, path: &str, files: bool, n: u64) -> WrittenFile {
    let empty = blake3::hash(b"").to_hex().to_string();
    if !files {
        return WrittenFile {
            ino: 1_000_000 + n,
            size: 0,
            mtime_ns: 1_700_000_000_000_000_000 + n as i64,
            content_hash: empty,
        };
    }
    let p = root.join(path);
    let f = std::fs::File::create(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let m = f.metadata().expect("fstat");
    WrittenFile {
        ino: m.ino(),
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        content_hash: empty,
    }
}

impl Corpus {
    fn generate(dir: &Path, shape: Shape) -> Corpus {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("recipes/templates")).unwrap();
        let mut toml = String::from("jobs = 2\n[sources]\n");
        for k in 0..WSI_COLLECTIONS {
            toml.push_str(&format!("W{k} = \"src/W{k}\"\n"));
        }
        for k in 0..ROI_COLLECTIONS {
            toml.push_str(&format!("R{k} = \"src/R{k}\"\n"));
        }
        std::fs::write(dir.join("cpia.toml"), toml).unwrap();
        for t in ["cpia-wsi.toml", "roi-centre-square.toml"] {
            std::fs::copy(
                manifest().join("recipes/templates").join(t),
                dir.join("recipes/templates").join(t),
            )
            .unwrap();
        }
        let mut state = State::open(&dir.join("cache/state.sqlite")).unwrap();
        let out = dir.join("dataset");
        let mut outputs = 0;
        let mut n = 0u64;
        let slides = shape.wsi_tiles.div_ceil(TILES_PER_SLIDE) as usize;
        for k in 0..WSI_COLLECTIONS {
            let name = format!("TCGA-SIM{k:02}");
            std::fs::write(
                dir.join(format!("recipes/wsi-{k:02}.toml")),
                format!(
                    "extends = \"templates/cpia-wsi.toml\"\n[collection]\nname = \"{name}\"\nkind = \"wsi\"\n[inputs]\nsource = \"W{k}\"\nsuffixes = [\"svs\"]\n"
                ),
            )
            .unwrap();
            let spec = load(dir, &format!("wsi-{k:02}.toml"));
            let count = slides / WSI_COLLECTIONS + usize::from(k < slides % WSI_COLLECTIONS);
            outputs += wsi_collection(&mut state, dir, &out, &spec, k, count, shape.files, &mut n);
        }
        let mut roi_sources = Vec::new();
        let per = shape.roi_outputs / ROI_COLLECTIONS as u64;
        for k in 0..ROI_COLLECTIONS {
            let name = format!("ROI-SIM{k:02}");
            std::fs::write(
                dir.join(format!("recipes/roi-{k:02}.toml")),
                format!(
                    "extends = \"templates/roi-centre-square.toml\"\n[collection]\nname = \"{name}\"\nkind = \"roi\"\n[inputs]\nsource = \"R{k}\"\nsuffixes = [\"png\"]\n"
                ),
            )
            .unwrap();
            let spec = load(dir, &format!("roi-{k:02}.toml"));
            let (o, first) =
                roi_collection(&mut state, dir, &out, &spec, k, per, shape.files, &mut n);
            outputs += o;
            roi_sources.extend(first);
        }
        Corpus {
            dir: dir.to_path_buf(),
            outputs,
            roi_sources,
        }
    }
}

fn maker(spec: &CollectionSpec) -> Maker {
    Maker {
        recipe_hash: spec.recipe.hash.clone(),
        tool_version: cpia::plan::TOOL_VERSION.to_string(),
    }
}

/// `count` slides of one WSI collection, recorded as built.
#[allow(clippy::too_many_arguments)]
fn wsi_collection(
    state: &mut State,
    dir: &Path,
    out: &Path,
    spec: &CollectionSpec,
    k: usize,
    count: usize,
    files: bool,
    n: &mut u64,
) -> u64 {
    let collection = state.collection_id(spec.name()).unwrap();
    let root = dir.join(format!("src/W{k}"));
    std::fs::create_dir_all(&root).unwrap();
    let src_dir = state.src_dir_id(&format!("W{k}"), "").unwrap();
    let fp = state.fingerprint_id(&spec.fingerprint).unwrap();
    for p in &spec.pipelines {
        state.pipeline_id(&p.hash, &p.to_json()).unwrap();
    }
    let wsi = spec.wsi.as_ref().expect("a WSI spec");
    let meta = SlideMeta {
        width: 3840 * 6,
        height: 3840 * 5,
        levels: vec![Level {
            width: 3840 * 6,
            height: 3840 * 5,
            downsample: 1.0,
        }],
        properties: BTreeMap::from([
            ("openslide.mpp-x".to_string(), "0.5".to_string()),
            ("openslide.mpp-y".to_string(), "0.5".to_string()),
            ("openslide.vendor".to_string(), "aperio".to_string()),
        ]),
    };
    let meta_json = serde_json::to_string(&meta).unwrap();
    if files {
        for (_, scale, size) in &wsi.sinks {
            std::fs::create_dir_all(out.join(format!("{scale}/{}-{size}", spec.name()))).unwrap();
        }
        std::fs::create_dir_all(out.join(format!("qc/{}", spec.name()))).unwrap();
    }
    let mut total = 0;
    for s in 0..count {
        let file = format!("TCGA-{k:02}-{s:05}-01Z-00-DX1.{:08X}.svs", s * 7919 + k);
        let bytes = format!("synthetic slide {k} {s}").into_bytes();
        std::fs::write(root.join(&file), &bytes).unwrap();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let st = stat(&std::fs::metadata(root.join(&file)).unwrap());
        let input = state
            .record_files(collection, &[(src_dir, &file, st, &hash)])
            .unwrap()[0]
            .1;
        state.put_slide_meta(&hash, &meta_json).unwrap();
        let (units, qc) = expand_wsi(spec, &file, &hash, &meta).expect("a valid slide");
        let read = |u: &PlannedUnit| ReadFacts {
            source_hash: hash.clone(),
            read_size: u.read_size,
            mpp: u.mpp,
            mpp_origin: u.mpp_origin.to_string(),
            reader: "direct".into(),
        };
        // Tile positions per unit, then their files in parallel.
        /// A unit, whether its cell is kept, its tile positions.
        type Cell<'a> = (&'a PlannedUnit, bool, Vec<(u32, u32)>);
        let planned: Vec<Cell> = units
            .iter()
            .map(|u| {
                let (i, j) = u.cell;
                let idx = ((j - 1) * 4 + (i - 1)) as usize;
                let kept = KEPT.contains(&idx);
                let tiles = if kept { tiles_of(u) } else { Vec::new() };
                (u, kept, tiles)
            })
            .collect();
        let base = *n;
        let written: Vec<Vec<TileRecord>> = planned
            .par_iter()
            .enumerate()
            .map(|(ui, (u, _, tiles))| {
                tiles
                    .iter()
                    .enumerate()
                    .map(|(ti, &(x, y))| TileRecord {
                        x,
                        y,
                        file: put(
                            out,
                            &u.tile_path(x, y),
                            files,
                            base + (ui * 1000 + ti) as u64,
                        ),
                    })
                    .collect()
            })
            .collect();
        *n += (planned.len() * 1000) as u64;
        let mut events = Vec::new();
        for ((u, kept, _), tiles) in planned.iter().zip(written) {
            total += tiles.len() as u64;
            events.push(Event::Unit(Box::new(UnitRecord {
                input,
                sink: spec.recipe.steps[u.sink].id.clone(),
                cell: u.cell,
                dir: u.dir.clone(),
                size: u.size,
                pipeline_hash: spec.pipelines[u.pipeline].hash.clone(),
                read: read(u),
                maker: maker(spec),
                kept: Some(*kept),
                complete: true,
                tiles,
                removed_tiles: Vec::new(),
                built_at: 1_700_000_000,
                build: 1,
            })));
        }
        *n += 1;
        events.push(Event::Output(Box::new(OutputRecord {
            input,
            dir: qc.dir.clone(),
            name: qc.name.clone(),
            sink: "qc".into(),
            pipeline_hash: spec.pipelines[qc.pipeline].hash.clone(),
            source_hash: hash.clone(),
            class: None,
            maker: maker(spec),
            read: Some(ReadFacts {
                source_hash: hash.clone(),
                read_size: qc.read_size,
                mpp: qc.mpp,
                mpp_origin: qc.mpp_origin.to_string(),
                reader: "openslide".into(),
            }),
            file: put(out, &qc.path(), files, *n),
            built_at: 1_700_000_000,
            build: 1,
        })));
        total += 1;
        events.push(Event::InputComplete { id: input, fp });
        state.record(&events).unwrap();
    }
    total
}

/// The tiles a kept cell's unit writes: XL 1, L 16, M 90 (10 of 100 are
/// background), S the 10th child of each kept M tile.
fn tiles_of(u: &PlannedUnit) -> Vec<(u32, u32)> {
    let (i, j) = u.cell;
    let children = |k: u32, keep: &dyn Fn(u32, u32) -> bool| -> Vec<(u32, u32)> {
        (0..k)
            .flat_map(|r| (0..k).map(move |c| (c, r)))
            .filter(|&(c, r)| keep(c, r))
            .map(|(c, r)| (i * k + c, j * k + r))
            .collect()
    };
    let kept_m = |c: u32, r: u32| (c + r * 10) % 10 != 3;
    match u.size {
        3840 => vec![(i, j)],
        960 => children(4, &|_, _| true),
        384 => children(10, &kept_m),
        96 => children(10, &kept_m)
            .into_iter()
            .map(|(x, y)| (x * 4 + 1, y * 4 + 2))
            .collect(),
        _ => Vec::new(),
    }
}

/// `count` ROI sources of one collection, recorded as built; returns the
/// output count and one source path (to change later).
#[allow(clippy::too_many_arguments)]
fn roi_collection(
    state: &mut State,
    dir: &Path,
    out: &Path,
    spec: &CollectionSpec,
    k: usize,
    count: u64,
    files: bool,
    n: &mut u64,
) -> (u64, Option<PathBuf>) {
    let collection = state.collection_id(spec.name()).unwrap();
    let root_name = format!("R{k}");
    let root = dir.join(format!("src/{root_name}"));
    let fp = state.fingerprint_id(&spec.fingerprint).unwrap();
    for p in &spec.pipelines {
        state.pipeline_id(&p.hash, &p.to_json()).unwrap();
    }
    let mut first = None;
    let mut done = 0;
    while done < count {
        let class = format!("class_{:03}", done / 1000);
        std::fs::create_dir_all(root.join(&class)).unwrap();
        let src_dir = state.src_dir_id(&root_name, &class).unwrap();
        let batch: Vec<(String, Vec<u8>)> = (done..count.min(done + 1000))
            .into_par_iter()
            .map(|i| {
                (
                    format!("patient_{k:02}_{i:07}_tile.png"),
                    tiny_png(i * 31 + k as u64),
                )
            })
            .collect();
        let mut rows = Vec::new();
        for (name, bytes) in &batch {
            let p = root.join(&class).join(name);
            std::fs::write(&p, bytes).unwrap();
            first.get_or_insert(p.clone());
            rows.push((
                stat(&std::fs::metadata(&p).unwrap()),
                blake3::hash(bytes).to_hex().to_string(),
            ));
        }
        let entries: Vec<(i64, &str, FileStat, &str)> = batch
            .iter()
            .zip(&rows)
            .map(|((name, _), (st, h))| (src_dir, name.as_str(), *st, h.as_str()))
            .collect();
        let ids = state.record_files(collection, &entries).unwrap();
        let mut events = Vec::new();
        for (((name, _), (_, hash)), (_, input)) in batch.iter().zip(&rows).zip(ids) {
            let rel = format!("{class}/{name}");
            for o in expand_roi(spec, &rel, hash).unwrap().unwrap_or_default() {
                if files {
                    std::fs::create_dir_all(out.join(&o.dir)).unwrap();
                }
                *n += 1;
                events.push(Event::Output(Box::new(OutputRecord {
                    input,
                    dir: o.dir.clone(),
                    name: o.name.clone(),
                    sink: spec.recipe.steps[o.sink].id.clone(),
                    pipeline_hash: spec.pipelines[o.pipeline].hash.clone(),
                    source_hash: hash.clone(),
                    class: o.class.clone(),
                    maker: maker(spec),
                    read: None,
                    file: put(out, &o.path(), files, *n),
                    built_at: 1_700_000_000,
                    build: 1,
                })));
            }
            events.push(Event::InputComplete { id: input, fp });
        }
        state.record(&events).unwrap();
        done += batch.len() as u64;
    }
    (count, first)
}

/// Runs `cpia ARGS` in `dir`; returns (wall seconds, peak RSS MiB, stdout).
fn run(dir: &Path, args: &[&str]) -> (f64, f64, String) {
    let t = Instant::now();
    let child = cpia()
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let out = {
        let mut child = child;
        let mut stdout = String::new();
        let mut stderr = String::new();
        use std::io::Read;
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut stdout).unwrap();
        }
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        }
        (stdout, stderr)
    };
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unwaited child; the pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "cpia {args:?} failed: {}",
        out.1
    );
    (wall, usage.ru_maxrss as f64 / 1024.0, out.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

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
