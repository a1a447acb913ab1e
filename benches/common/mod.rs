//! The corpus-shaped synthetic workspace shared by the corpus-scale
//! benchmarks (`benches/corpus.rs`, `benches/report.rs`,
//! `benches/provenance.rs`): real recipes,
//! source files, a state recorded through the library exactly as a build
//! records it, and an output tree under the names the state records — see
//! `benches/corpus.rs` for the shape.
#![allow(dead_code)]

pub mod measured;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cpia::plan::expand::{expand_roi, expand_wsi, CollectionSpec, PlannedUnit};
use cpia::slide::{Level, SlideMeta};
use cpia::store::{
    Event, FileStat, Maker, OutputRecord, ReadFacts, State, TileRecord, UnitRecord, WrittenFile,
};
use rayon::prelude::*;

pub const WSI_COLLECTIONS: usize = 20;
pub const ROI_COLLECTIONS: usize = 10;
pub const TILES_PER_SLIDE: u64 = 985;
/// Inner cells kept of the 4x3 grid (row-major indices).
pub const KEPT: [usize; 5] = [1, 2, 5, 6, 9];

pub fn cpia() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpia"))
}

pub fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A real 8x8 PNG, different for every `i`.
pub fn tiny_png(i: u64) -> Vec<u8> {
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
pub struct Shape {
    pub wsi_tiles: u64,
    pub roi_outputs: u64,
    /// Write the output tree (false: the state only).
    pub files: bool,
    /// Make every output file a real picture of its kind's size (a hard
    /// link to one image per scale, and one QC picture), for benchmarks that
    /// read the dataset's files; false: empty files.
    pub images: bool,
    /// Without `images`: bytes of each output file, pseudo-random content
    /// (0: empty files).
    pub file_bytes: usize,
}

/// What the output tree's files are.
#[derive(Clone, Copy)]
pub enum Files<'a> {
    /// None: the state only.
    None,
    Empty,
    /// Files of this many pseudo-random bytes ([`content`]).
    Bytes(usize),
    /// Hard links to the pictures in this folder ([`write_sample_images`]).
    Images(&'a Path),
}

impl Files<'_> {
    pub fn written(self) -> bool {
        !matches!(self, Files::None)
    }
}

/// One picture per kind of output, of its real size: `XL.jpg` (3840²),
/// `L.jpg` (960²), `M.jpg` (384², also every ROI output), `S.jpg` (96²) and
/// `qc.png` (1024×768, a QC picture's size), with tissue-like texture, so
/// decoding them costs what decoding real outputs costs.
pub fn write_sample_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let texture = |w: u32, h: u32| {
        image::RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / 37.0, y as f32 / 23.0);
            let wave = ((fx.sin() + fy.cos() + (fx * 0.37 + fy * 0.61).sin()) * 40.0) as i32;
            let noise = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 7) as i32 % 24;
            let v = |b: i32| (b + wave + noise).clamp(0, 255) as u8;
            image::Rgb([v(200), v(120), v(180)])
        })
    };
    let jpeg = cpia::ops::JpegParams {
        quality: 75,
        subsampling: cpia::ops::Subsampling::S420,
    };
    for (name, edge) in [("XL", 3840), ("L", 960), ("M", 384), ("S", 96)] {
        let bytes = cpia::ops::encode::encode_jpeg(&texture(edge, edge), &jpeg).unwrap();
        std::fs::write(dir.join(format!("{name}.jpg")), bytes).unwrap();
    }
    texture(1024, 768).save(dir.join("qc.png")).unwrap();
}

/// Links made to each kind of sample picture (qc, XL, L, M, S).
static LINKED: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Links per copy of a sample picture (ext4 allows 65,000 per inode).
const LINKS_PER_COPY: u64 = 60_000;

/// The sample picture for an output at `path` (`<scale>/…` or `qc/…`): a
/// copy of its kind's picture with room for one more link.
fn sample_for(images: &Path, path: &str) -> PathBuf {
    let (kind, name) = match path.split('/').next() {
        Some("qc") => (0, "qc.png"),
        Some("XL") => (1, "XL.jpg"),
        Some("L") => (2, "L.jpg"),
        Some("S") => (4, "S.jpg"),
        _ => (3, "M.jpg"),
    };
    let copy = LINKED[kind].fetch_add(1, Ordering::Relaxed) / LINKS_PER_COPY;
    let base = images.join(name);
    if copy == 0 {
        return base;
    }
    let target = images.join(format!("{copy}-{name}"));
    if !target.exists() {
        // Made once per copy; concurrent makers each rename a whole file in.
        let tmp = images.join(format!(".{copy}-{name}.{:?}", std::thread::current().id()));
        std::fs::copy(&base, &tmp).unwrap();
        std::fs::rename(&tmp, &target).unwrap();
    }
    target
}

/// A generated workspace.
pub struct Corpus {
    pub dir: PathBuf,
    pub outputs: u64,
    pub roi_sources: Vec<PathBuf>,
}

pub fn load(dir: &Path, file: &str) -> Arc<CollectionSpec> {
    let mut read = |p: &Path| std::fs::read_to_string(p);
    let recipe = cpia::recipe::load_recipe(&dir.join("recipes").join(file), &mut read)
        .unwrap_or_else(|d| panic!("{d}"));
    Arc::new(CollectionSpec::new(Arc::new(recipe)))
}

pub fn stat(m: &std::fs::Metadata) -> FileStat {
    cpia::plan::sources::file_stat(m)
}

/// The blake3 of a sample picture, hashed once per file (exports read the
/// pictures back and check them against their records).
fn picture_hash(picture: &Path) -> String {
    static HASHES: std::sync::Mutex<Option<std::collections::HashMap<PathBuf, String>>> =
        std::sync::Mutex::new(None);
    let mut hashes = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    hashes
        .get_or_insert_with(Default::default)
        .entry(picture.to_path_buf())
        .or_insert_with(|| {
            let bytes =
                std::fs::read(picture).unwrap_or_else(|e| panic!("{}: {e}", picture.display()));
            blake3::hash(&bytes).to_hex().to_string()
        })
        .clone()
}

/// Creates an output file (empty, of pseudo-random bytes, or a link to a
/// sample picture; nothing when state-only) and says what was written, as
/// the engine would record it: the content hash of its bytes (an empty
/// file's when there is no file).
pub fn put(root: &Path, path: &str, files: Files, n: u64) -> WrittenFile {
    let mut hash = blake3::hash(b"").to_hex().to_string();
    let p = root.join(path);
    let m = match files {
        Files::None => {
            return WrittenFile {
                ino: 1_000_000 + n,
                size: 0,
                mtime_ns: 1_700_000_000_000_000_000 + n as i64,
                content_hash: hash,
            }
        }
        Files::Empty => std::fs::File::create(&p)
            .and_then(|f| f.metadata())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        Files::Bytes(len) => {
            let bytes = content(n, len);
            hash = blake3::hash(&bytes).to_hex().to_string();
            std::fs::write(&p, &bytes)
                .and_then(|()| std::fs::metadata(&p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        }
        Files::Images(images) => {
            let picture = sample_for(images, path);
            hash = picture_hash(&picture);
            std::fs::hard_link(&picture, &p)
                .and_then(|()| std::fs::symlink_metadata(&p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        }
    };
    WrittenFile {
        ino: m.ino(),
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        content_hash: hash,
    }
}

/// `len` pseudo-random bytes, different for every `n` (xorshift).
pub fn content(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Brings the manifests under `out` up to date, through the engine's
/// atomic writer, as the end of a build does; returns what it did.
pub fn write_manifests(state: &mut State, out: &Path) -> cpia::provenance::manifest::Stats {
    let dir = cpia::engine::atomic::OutputDir::open(out).unwrap();
    let stats = cpia::provenance::manifest::update(state, out, &dir).unwrap();
    dir.finish();
    stats
}

impl Corpus {
    pub fn generate(dir: &Path, shape: Shape) -> Corpus {
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
        let images = dir.join("sample-images");
        let files = match (shape.files, shape.images) {
            (false, _) => Files::None,
            (true, false) if shape.file_bytes == 0 => Files::Empty,
            (true, false) => Files::Bytes(shape.file_bytes),
            (true, true) => {
                write_sample_images(&images);
                Files::Images(&images)
            }
        };
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
            outputs += wsi_collection(&mut state, dir, &out, &spec, k, count, files, &mut n);
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
            let (o, first) = roi_collection(&mut state, dir, &out, &spec, k, per, files, &mut n);
            outputs += o;
            roi_sources.extend(first);
        }
        // The manifests a build keeps are written as a build would write
        // them; a state-only corpus has none (and no marks waiting for them).
        if shape.files {
            write_manifests(&mut state, &out);
        } else {
            for (id, _) in state.manifest_dirty_dirs().unwrap() {
                state.clear_manifest_dirty(id).unwrap();
            }
        }
        Corpus {
            dir: dir.to_path_buf(),
            outputs,
            roi_sources,
        }
    }
}

pub fn maker(spec: &CollectionSpec) -> Maker {
    Maker {
        recipe_hash: spec.recipe.hash.clone(),
        tool_version: cpia::plan::TOOL_VERSION.to_string(),
        libraries: cpia::plan::libraries::of_kind(spec.recipe.collection.kind).to_string(),
    }
}

/// `count` slides of one WSI collection, recorded as built.
#[allow(clippy::too_many_arguments)]
pub fn wsi_collection(
    state: &mut State,
    dir: &Path,
    out: &Path,
    spec: &CollectionSpec,
    k: usize,
    count: usize,
    files: Files,
    n: &mut u64,
) -> u64 {
    let collection = state.collection_id(spec.name()).unwrap();
    let root = dir.join(format!("src/W{k}"));
    std::fs::create_dir_all(&root).unwrap();
    let src_dir = state.src_dir_id(&format!("W{k}"), "").unwrap();
    let fp = state.fingerprint_id(&spec.fingerprint).unwrap();
    for p in &spec.pipelines {
        state.pipeline_id(&p.hash, &p.to_json().unwrap()).unwrap();
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
    if files.written() {
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
                encoding: "pixels".into(),
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
pub fn tiles_of(u: &PlannedUnit) -> Vec<(u32, u32)> {
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
pub fn roi_collection(
    state: &mut State,
    dir: &Path,
    out: &Path,
    spec: &CollectionSpec,
    k: usize,
    count: u64,
    files: Files,
    n: &mut u64,
) -> (u64, Option<PathBuf>) {
    let collection = state.collection_id(spec.name()).unwrap();
    let root_name = format!("R{k}");
    let root = dir.join(format!("src/{root_name}"));
    let fp = state.fingerprint_id(&spec.fingerprint).unwrap();
    for p in &spec.pipelines {
        state.pipeline_id(&p.hash, &p.to_json().unwrap()).unwrap();
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
                if files.written() {
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

/// Runs `cpia ARGS` in `dir`, which must succeed; returns (wall seconds,
/// peak RSS MiB, stdout).
pub fn run(dir: &Path, args: &[&str]) -> (f64, f64, String) {
    let r = measured::run(dir, args);
    assert_eq!(r.code, 0, "cpia {args:?} failed: {}", r.stderr);
    (r.wall, r.rss_mib, r.stdout)
}
