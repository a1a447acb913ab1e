//! Manifests in the dataset, kept up to date incrementally.
//!
//! The CPIA reference writes `<scale>/<sub-dataset>.csv` (output path →
//! `origin path`) and rewrites it whole after every XL tile. Here each output
//! folder's manifest is split into **parts**, each holding the rows of whole
//! inputs (source files): `manifests/csv/<scale>/<sub-dataset>/part-N.csv` in
//! the reference's shape, and the same rows with every recorded fact in
//! `manifests/parquet/<scale>/<sub-dataset>/part-N.parquet`. New inputs fill
//! the folder's newest part up to [`PART_ROWS`] rows, then open a new one (an
//! input is never split, so a slide's tiles of one scale are one part).
//!
//! What to rewrite is known without reading any output record: triggers mark
//! the (folder, input) of every record that changes, in the transaction of
//! the change (`manifest_dirty`). After a build, only the parts holding
//! marked inputs are rewritten (streamed into temporary files and renamed
//! into place, through the caller's [`Files`]), then their files' hashes are
//! recorded and the marks cleared in one transaction per folder. So the cost
//! of an update is the rows of the parts that hold changed inputs — at most
//! [`PART_ROWS`] per changed ROI input, one slide's tiles of a scale per
//! changed slide — and a no-op build reads one count and writes nothing. A
//! crash before the marks are cleared rewrites the same parts next time.
//!
//! A part is streamed from the state's cursor into both files at once (rows
//! in the store's order: named outputs by record, then tiles by unit and
//! position), so its memory is one Parquet row group whatever its size. The
//! Parquet files are written by [`crate::parquet_file`] (zstd, dictionaries,
//! statistics).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Write};

use super::facts::{self, Pipelines};
use super::Error;
use crate::parquet_file::{self, Column, Kind, Value};
use crate::store::audit::manifests::{ManifestUpdate, PartFile, WrittenPart};
use crate::store::audit::{OutputFacts, OutputFilter};
use crate::store::State;

/// The manifests' folder inside the output folder.
pub const DIR: &str = "manifests";
/// Bump when the manifests' content or layout changes: all are rewritten.
/// 2: Parquet with zstd, dictionaries and statistics; rows in store order.
/// 3: rows in the order of their places (the same outputs, the same bytes).
pub const FORMAT: &str = "3";
/// Rows a part takes new inputs up to.
pub const PART_ROWS: u64 = 512;

const META_KEY: &str = "manifest_format";

/// The CSV file of part `id` of output folder `dir`.
pub fn csv_path(dir: &str, id: i64) -> String {
    format!("{DIR}/csv/{dir}/part-{id:06}.csv")
}

/// The Parquet file of part `id` of output folder `dir`.
pub fn parquet_path(dir: &str, id: i64) -> String {
    format!("{DIR}/parquet/{dir}/part-{id:06}.parquet")
}

/// A manifest file being written under a temporary name; dropped without
/// [`NewFile::place`], it is deleted.
pub trait NewFile: Write + Send {
    /// Makes the file durable and renames it over its name: its size and
    /// mtime (ns).
    fn place(self: Box<Self>) -> io::Result<(u64, i64)>;
}

/// Where the manifests are written: the engine's atomic, confined writer.
pub trait Files {
    /// Starts writing `rel` (relative to the output folder).
    fn create(&self, rel: &str) -> io::Result<Box<dyn NewFile + '_>>;
    /// Removes `rel` (absent is fine) and the folders it leaves empty.
    fn remove(&self, rel: &str) -> io::Result<()>;
    /// Makes the renames into folders `dirs` durable (an fsync of each).
    fn sync_dirs(&self, dirs: &[String]) -> io::Result<()>;
}

/// What an update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub parts_written: u64,
    pub rows_written: u64,
    pub parts_removed: u64,
}

/// Brings the manifests up to date with the records: rewrites the parts
/// that hold changed inputs. The first update (or one after a [`FORMAT`]
/// change) removes the manifests folder and writes every part.
pub fn update(
    state: &mut State,
    output: &std::path::Path,
    files: &dyn Files,
) -> Result<Stats, Error> {
    if state.meta(META_KEY)?.as_deref() != Some(FORMAT) {
        match std::fs::remove_dir_all(output.join(DIR)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(output, DIR)(e)),
            _ => {}
        }
        state.mark_all_manifests_dirty()?;
        state.set_meta(META_KEY, FORMAT)?;
    }
    let mut stats = Stats::default();
    if state.manifest_pending()? == 0 {
        return Ok(stats);
    }
    let mut next_id = state.next_manifest_part_id()?;
    let mut pipelines = Pipelines::default();
    for (out_dir, dir) in state.manifest_dirty_dirs()? {
        if !is_dataset_dir(&dir) {
            state.clear_manifest_dirty(out_dir)?;
            continue;
        }
        let dirty = state.manifest_dirty_inputs(out_dir)?;
        let (stale, mut joining) = assign_parts(state, out_dir, &dirty, &mut next_id)?;
        let mut update = ManifestUpdate {
            out_dir,
            cleared: dirty,
            ..ManifestUpdate::default()
        };
        for part in stale {
            let mut inputs = state.manifest_part_inputs(part)?;
            let new = joining.remove(&part).unwrap_or_default();
            inputs.extend(&new);
            let paths = [csv_path(&dir, part), parquet_path(&dir, part)];
            let written = write_part(state, output, &dir, &inputs, &paths, files, &mut pipelines)?;
            let with_rows = written.as_ref().map(|w| &w.inputs);
            for &i in &inputs {
                if !with_rows.is_some_and(|w| w.contains(&i)) {
                    update.members.push((i, None));
                } else if new.contains(&i) {
                    update.members.push((i, Some(part)));
                }
            }
            match written {
                Some(w) => {
                    stats.parts_written += 1;
                    stats.rows_written += w.part.0;
                    update.parts.push((part, Some(w.part)));
                }
                None => {
                    for p in &paths {
                        files.remove(p).map_err(at(output, p))?;
                    }
                    update.parts.push((part, None));
                    stats.parts_removed += 1;
                }
            }
        }
        if update.parts.iter().any(|(_, p)| p.is_some()) {
            let folders = [format!("{DIR}/csv/{dir}"), format!("{DIR}/parquet/{dir}")];
            let what = folders.join(" and ");
            files.sync_dirs(&folders).map_err(at(output, &what))?;
        }
        state.commit_manifests(&update)?;
    }
    Ok(stats)
}

/// New inputs by the part they join.
type Joining = HashMap<i64, Vec<i64>>;

/// The parts of folder `out_dir` that changed inputs touch: the parts
/// holding them, and the parts new inputs join (the newest part while it
/// has room, then new ones) with the inputs joining each.
fn assign_parts(
    state: &State,
    out_dir: i64,
    dirty: &[i64],
    next_id: &mut i64,
) -> Result<(BTreeSet<i64>, Joining), Error> {
    let members = state.manifest_members(out_dir, dirty)?;
    let mut stale: BTreeSet<i64> = members.values().copied().collect();
    let mut open = state.newest_manifest_part(out_dir)?;
    let mut joining = Joining::new();
    for &input in dirty.iter().filter(|i| !members.contains_key(i)) {
        let n = state.files_in_dir_of(out_dir, input)?;
        if n == 0 {
            continue;
        }
        let part = match open {
            Some((id, rows)) if rows + n <= PART_ROWS || rows == 0 => {
                open = Some((id, rows + n));
                id
            }
            _ => {
                *next_id = (*next_id).max(state.next_manifest_part_id()?);
                let id = *next_id;
                *next_id += 1;
                open = Some((id, n));
                id
            }
        };
        joining.entry(part).or_default().push(input);
        stale.insert(part);
    }
    Ok((stale, joining))
}

/// A part written: its files, and the inputs that have rows in it.
struct WrittenFiles {
    part: WrittenPart,
    inputs: HashSet<i64>,
}

/// Streams the rows of `inputs` in folder `dir` from the state into the
/// part's CSV and Parquet files (`paths`) and puts both in place; `None`
/// (nothing written) when they have no rows left.
fn write_part(
    state: &State,
    output: &std::path::Path,
    dir: &str,
    inputs: &[i64],
    paths: &[String; 2],
    files: &dyn Files,
    pipelines: &mut Pipelines,
) -> Result<Option<WrittenFiles>, Error> {
    let [csv_rel, pq_rel] = paths;
    let create = |rel: &String| files.create(rel).map(Hashed::new).map_err(at(output, rel));
    let mut csv = io::BufWriter::with_capacity(1 << 16, create(csv_rel)?);
    let mut pq_file = create(pq_rel)?;
    let options = parquet_file::Options::default();
    let mut pq = parquet_file::Writer::new(&mut pq_file, &columns(), &options)
        .map_err(at(output, pq_rel))?;
    csv.write_all(b"path,origin path\n")
        .map_err(at(output, csv_rel))?;
    // Rows in the order of their places, not of when the build recorded
    // them (cells and images finish in a different order every build): the
    // same outputs give the same manifest bytes.
    let filter = OutputFilter {
        dirs: vec![dir.to_string()],
        inputs: inputs.to_vec(),
        place_order: true,
        ..OutputFilter::default()
    };
    let mut with_rows = HashSet::new();
    let mut err = None;
    state.for_each_output(
        &filter,
        &facts::tile_name,
        &mut super::stop_at_error(&mut err, |f: OutputFacts| {
            let r = row(state, f, pipelines)?;
            with_rows.insert(r.input);
            let path = r.facts.path();
            csv_row(&mut csv, &path, &r).map_err(at(output, csv_rel))?;
            pq.push(&parquet_row(&path, &r))
                .map_err(at(output, pq_rel))?;
            Ok(())
        }),
    )?;
    if let Some(e) = err {
        return Err(e);
    }
    let rows = pq.rows();
    if rows == 0 {
        return Ok(None); // the temporaries are deleted when dropped
    }
    pq.finish().map_err(at(output, pq_rel))?;
    let csv = csv
        .into_inner()
        .map_err(|e| at(output, csv_rel)(e.into_error()))?;
    let csv = csv.place().map_err(at(output, csv_rel))?;
    let pq = pq_file.place().map_err(at(output, pq_rel))?;
    Ok(Some(WrittenFiles {
        part: (rows, csv, pq),
        inputs: with_rows,
    }))
}

/// Names the manifest file in an I/O error.
/// Names the file `rel` (under `output`) in an I/O error: a full disk or a
/// folder the user took back says which part it stopped at.
fn at<'a>(output: &'a std::path::Path, rel: &'a str) -> impl Fn(io::Error) -> Error + 'a {
    move |e| {
        let path = output.join(rel);
        Error::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// A file being written that hashes what it passes on.
struct Hashed<'a> {
    file: Box<dyn NewFile + 'a>,
    hasher: blake3::Hasher,
}

impl<'a> Hashed<'a> {
    fn new(file: Box<dyn NewFile + 'a>) -> Hashed<'a> {
        Hashed {
            file,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Puts the file in place: what to record of it.
    fn place(self) -> io::Result<PartFile> {
        let blake3 = self.hasher.finalize().to_hex().to_string();
        let (bytes, mtime_ns) = self.file.place()?;
        Ok(PartFile {
            blake3,
            bytes,
            mtime_ns,
        })
    }
}

impl Write for Hashed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Output folders the manifests list: `<scale>/<sub-dataset>`, not QC pictures.
fn is_dataset_dir(dir: &str) -> bool {
    matches!(dir.split_once('/'), Some((scale, sub)) if scale != "qc" && !sub.is_empty())
}

/// One manifest row: an output and what made it.
#[derive(Clone, Debug)]
pub struct Row {
    pub input: i64,
    pub facts: OutputFacts,
    pub key: String,
    pub region: Option<[f64; 4]>,
    pub level: Option<u32>,
    /// A tile's grid cell, `i,j`.
    pub cell: Option<String>,
}

/// A manifest row for `f` (its key and, for a tile, its region).
pub fn row(state: &State, f: OutputFacts, pipelines: &mut Pipelines) -> Result<Row, Error> {
    let place = match &f.tile {
        Some(_) => pipelines
            .get(state, &f.pipeline_hash)?
            .and_then(|p| facts::placement(&f, &p, None)),
        None => None,
    };
    Ok(Row {
        input: f.input,
        key: facts::key(&f),
        region: place.as_ref().map(|p| p.region),
        level: place.and_then(|p| p.level),
        cell: (f.tile.as_ref()).map(|t| format!("{},{}", t.cell.0, t.cell.1)),
        facts: f,
    })
}

/// A line of the reference's CSV shape: output path, then `origin path`
/// (the source as `root:path`).
fn csv_row(out: &mut impl Write, path: &str, r: &Row) -> io::Result<()> {
    let origin = facts::source_id(&r.facts);
    writeln!(out, "{},{}", csv_field(path), csv_field(&origin))
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// The Parquet columns, one row per output (docs/state.md "Manifests").
const COLUMNS: [(&str, Kind); 26] = [
    ("path", Kind::Str),
    ("collection", Kind::Str),
    ("scale", Kind::Str),
    ("sub_dataset", Kind::Str),
    ("class", Kind::Str),
    ("blake3", Kind::Str),
    ("bytes", Kind::Int),
    ("source_root", Kind::Str),
    ("source_path", Kind::Str),
    ("source_blake3", Kind::Str),
    ("key", Kind::Str),
    ("region_x", Kind::Float),
    ("region_y", Kind::Float),
    ("region_w", Kind::Float),
    ("region_h", Kind::Float),
    ("level", Kind::Int),
    ("cell", Kind::Str),
    ("mpp", Kind::Float),
    ("mpp_source", Kind::Str),
    ("reader", Kind::Str),
    ("recipe_hash", Kind::Str),
    ("tool_version", Kind::Str),
    ("pipeline_hash", Kind::Str),
    ("step", Kind::Str),
    ("build", Kind::Int),
    ("built_at", Kind::Int),
];

/// [`COLUMNS`] for the writer.
pub fn columns() -> Vec<Column> {
    COLUMNS.iter().map(|&(n, k)| Column::new(n, k)).collect()
}

/// The Parquet row of `r` (whose path is `path`), in [`COLUMNS`]' order.
pub fn parquet_row<'a>(path: &'a str, r: &'a Row) -> [Value<'a>; 26] {
    let f = &r.facts;
    let (scale, sub) = facts::scale_and_sub(&f.dir);
    let text = |s: Option<&'a str>| s.map_or(Value::Null, Value::Str);
    let region = |k: usize| r.region.map_or(Value::Null, |g| Value::Float(g[k]));
    let read = f.read.as_ref();
    [
        Value::Str(path),
        Value::Str(&f.collection),
        Value::Str(scale),
        Value::Str(sub),
        text(f.class.as_deref()),
        Value::Str(&f.file.content_hash),
        Value::Int(f.file.size as i64),
        Value::Str(&f.source_root),
        Value::Str(&f.source_rel),
        Value::Str(&f.source_hash),
        Value::Str(&r.key),
        region(0),
        region(1),
        region(2),
        region(3),
        r.level.map_or(Value::Null, |l| Value::Int(i64::from(l))),
        text(r.cell.as_deref()),
        read.map_or(Value::Null, |x| Value::Float(x.mpp)),
        text(read.map(|x| x.mpp_origin.as_str())),
        text(read.map(|x| x.reader.as_str())),
        Value::Str(&f.maker.recipe_hash),
        Value::Str(&f.maker.tool_version),
        Value::Str(&f.pipeline_hash),
        Value::Str(&f.sink),
        Value::Int(f.build),
        Value::Int(f.built_at),
    ]
}

/// The manifest files of folder `dir` that verification expects: part id →
/// (CSV path, Parquet path), for listing files nobody recorded.
pub fn expected_files(
    parts: &[crate::store::audit::manifests::ManifestPart],
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for p in parts {
        out.insert(csv_path(&p.dir, p.id), p.id);
        out.insert(parquet_path(&p.dir, p.id), p.id);
    }
    out
}
