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
//! marked inputs are rewritten (temp file + rename, through the caller's
//! writer), then their files' hashes are recorded and the marks cleared in
//! one transaction per folder. So the cost of an update is the rows of the
//! parts that hold changed inputs — at most [`PART_ROWS`] per changed ROI
//! input, one slide's tiles of a scale per changed slide — and a no-op build
//! reads one count and writes nothing. A crash before the marks are cleared
//! rewrites the same parts next time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;

use super::facts::{self, Pipelines};
use super::parquet::{self, Column};
use super::Error;
use crate::store::audit::manifests::{ManifestUpdate, PartFile};
use crate::store::audit::{OutputFacts, OutputFilter};
use crate::store::State;

/// The manifests' folder inside the output folder.
pub const DIR: &str = "manifests";
/// Bump when the manifests' content or layout changes: all are rewritten.
pub const FORMAT: &str = "1";
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

/// Writes a file atomically and durably: its size and mtime (ns).
pub type Writer<'a> = &'a dyn Fn(&str, &[u8]) -> io::Result<(u64, i64)>;
/// Removes a file (and the folders it leaves empty).
pub type Remover<'a> = &'a dyn Fn(&str) -> io::Result<()>;

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
    write: Writer<'_>,
    remove: Remover<'_>,
) -> Result<Stats, Error> {
    // Every error names the file (a full disk says which part it stopped at).
    let named = |rel: &str, e: io::Error| -> Error {
        io::Error::new(e.kind(), format!("{}: {e}", output.join(rel).display())).into()
    };
    if state.meta(META_KEY)?.as_deref() != Some(FORMAT) {
        match std::fs::remove_dir_all(output.join(DIR)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(named(DIR, e)),
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
        let members = state.manifest_members(out_dir, &dirty)?;
        let mut stale: BTreeSet<i64> = members.values().copied().collect();
        // New inputs fill the newest part, then new ones.
        let mut open = state.newest_manifest_part(out_dir)?;
        let mut joining: HashMap<i64, Vec<i64>> = HashMap::new();
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
                    next_id = next_id.max(state.next_manifest_part_id()?);
                    let id = next_id;
                    next_id += 1;
                    open = Some((id, n));
                    id
                }
            };
            joining.entry(part).or_default().push(input);
            stale.insert(part);
        }
        let mut update = ManifestUpdate {
            out_dir,
            cleared: dirty,
            ..ManifestUpdate::default()
        };
        for part in stale {
            let mut inputs = state.manifest_part_inputs(part)?;
            let new = joining.remove(&part).unwrap_or_default();
            inputs.extend(&new);
            let rows = part_rows(state, &dir, &inputs, &mut pipelines)?;
            let with_rows: HashSet<i64> = rows.iter().map(|r| r.input).collect();
            for &i in &inputs {
                if !with_rows.contains(&i) {
                    update.members.push((i, None));
                } else if new.contains(&i) {
                    update.members.push((i, Some(part)));
                }
            }
            let (csv, pq) = (csv_path(&dir, part), parquet_path(&dir, part));
            if rows.is_empty() {
                remove(&csv).map_err(|e| named(&csv, e))?;
                remove(&pq).map_err(|e| named(&pq, e))?;
                update.parts.push((part, None));
                stats.parts_removed += 1;
                continue;
            }
            let csv_bytes = csv_text(&rows);
            let pq_bytes = parquet_file(&rows);
            let (cs, cm) = write(&csv, csv_bytes.as_bytes()).map_err(|e| named(&csv, e))?;
            let (ps, pm) = write(&pq, &pq_bytes).map_err(|e| named(&pq, e))?;
            update.parts.push((
                part,
                Some((
                    rows.len() as u64,
                    PartFile {
                        blake3: blake3::hash(csv_bytes.as_bytes()).to_hex().to_string(),
                        bytes: cs,
                        mtime_ns: cm,
                    },
                    PartFile {
                        blake3: blake3::hash(&pq_bytes).to_hex().to_string(),
                        bytes: ps,
                        mtime_ns: pm,
                    },
                )),
            ));
            stats.parts_written += 1;
            stats.rows_written += rows.len() as u64;
        }
        state.commit_manifests(&update)?;
    }
    Ok(stats)
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
}

/// The rows of `inputs` in folder `dir`, sorted by path.
fn part_rows(
    state: &State,
    dir: &str,
    inputs: &[i64],
    pipelines: &mut Pipelines,
) -> Result<Vec<Row>, Error> {
    let filter = OutputFilter {
        dirs: vec![dir.to_string()],
        inputs: inputs.to_vec(),
        ..OutputFilter::default()
    };
    let mut rows = Vec::new();
    let mut err = None;
    state.for_each_output(
        &filter,
        &facts::tile_name,
        &mut super::stop_at_error(&mut err, |f: OutputFacts| {
            rows.push(row(state, f, pipelines)?);
            Ok(())
        }),
    )?;
    if let Some(e) = err {
        return Err(e);
    }
    rows.sort_by(|a, b| a.facts.name.cmp(&b.facts.name));
    Ok(rows)
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
        facts: f,
    })
}

/// The reference's CSV shape: output path, then `origin path` (the source
/// as `root:path`).
pub fn csv_text(rows: &[Row]) -> String {
    let mut out = String::from("path,origin path\n");
    for r in rows {
        out.push_str(&csv_field(&r.facts.path()));
        out.push(',');
        out.push_str(&csv_field(&facts::source_id(&r.facts)));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The Parquet columns, one row per output (docs/state.md "Manifests").
pub fn parquet_file(rows: &[Row]) -> Vec<u8> {
    let s = |f: &dyn Fn(&Row) -> Option<String>| Column::Str(rows.iter().map(f).collect());
    let i = |f: &dyn Fn(&Row) -> Option<i64>| Column::I64(rows.iter().map(f).collect());
    let d = |f: &dyn Fn(&Row) -> Option<f64>| Column::F64(rows.iter().map(f).collect());
    let region = |k: usize| d(&|r: &Row| r.region.map(|g| g[k]));
    let cols: Vec<(&str, Column)> = vec![
        ("path", s(&|r| Some(r.facts.path()))),
        ("collection", s(&|r| Some(r.facts.collection.clone()))),
        (
            "scale",
            s(&|r| Some(facts::scale_and_sub(&r.facts.dir).0.to_string())),
        ),
        (
            "sub_dataset",
            s(&|r| Some(facts::scale_and_sub(&r.facts.dir).1.to_string())),
        ),
        ("class", s(&|r| r.facts.class.clone())),
        ("blake3", s(&|r| Some(r.facts.file.content_hash.clone()))),
        ("bytes", i(&|r| Some(r.facts.file.size as i64))),
        ("source_root", s(&|r| Some(r.facts.source_root.clone()))),
        ("source_path", s(&|r| Some(r.facts.source_rel.clone()))),
        ("source_blake3", s(&|r| Some(r.facts.source_hash.clone()))),
        ("key", s(&|r| Some(r.key.clone()))),
        ("region_x", region(0)),
        ("region_y", region(1)),
        ("region_w", region(2)),
        ("region_h", region(3)),
        ("level", i(&|r| r.level.map(i64::from))),
        (
            "cell",
            s(&|r| {
                r.facts
                    .tile
                    .as_ref()
                    .map(|t| format!("{},{}", t.cell.0, t.cell.1))
            }),
        ),
        ("mpp", d(&|r| r.facts.read.as_ref().map(|x| x.mpp))),
        (
            "mpp_source",
            s(&|r| r.facts.read.as_ref().map(|x| x.mpp_origin.clone())),
        ),
        (
            "reader",
            s(&|r| r.facts.read.as_ref().map(|x| x.reader.clone())),
        ),
        (
            "recipe_hash",
            s(&|r| Some(r.facts.maker.recipe_hash.clone())),
        ),
        (
            "tool_version",
            s(&|r| Some(r.facts.maker.tool_version.clone())),
        ),
        ("pipeline_hash", s(&|r| Some(r.facts.pipeline_hash.clone()))),
        ("step", s(&|r| Some(r.facts.sink.clone()))),
        ("build", i(&|r| Some(r.facts.build))),
        ("built_at", i(&|r| Some(r.facts.built_at))),
    ];
    parquet::write(&cols)
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
