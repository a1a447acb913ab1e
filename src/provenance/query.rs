//! `cpia query`: the questions auditors ask, answered from a SQLite cursor
//! and printed as each row arrives (one line, or one JSON object per line),
//! so a query over millions of outputs starts printing at once and holds
//! one row in memory.

use std::io::Write;

use serde_json::{json, Value};

use super::facts::{self, Pipelines};
use super::Error;
use crate::store::audit::{FailureFacts, OutputFacts, OutputFilter};
use crate::store::State;

/// The MPP origins a unit can record.
pub const MPP_SOURCES: &[&str] = &["openslide", "tiff-resolution", "override", "default"];

/// Which outputs `cpia query` lists.
#[derive(Clone, Debug, Default)]
pub struct Question {
    /// Source files as `root:path`: every output made from them.
    pub from_sources: Vec<(String, String)>,
    pub recipe_hash: Option<String>,
    pub mpp_source: Option<String>,
    pub built_by: Option<i64>,
    pub collections: Vec<String>,
}

/// The row `cpia query --json` prints for an output.
pub fn output_json(
    f: &OutputFacts,
    pipelines: &mut Pipelines,
    state: &State,
) -> Result<Value, Error> {
    let (scale, sub) = facts::scale_and_sub(&f.dir);
    let mut v = json!({
        "path": f.path(),
        "blake3": f.file.content_hash,
        "bytes": f.file.size,
        "key": facts::key(f),
        "collection": f.collection,
        "scale": scale,
        "sub_dataset": sub,
        "class": f.class,
        "source": facts::source_id(f),
        "source_blake3": f.source_hash,
        "recipe_hash": f.maker.recipe_hash,
        "tool_version": f.maker.tool_version,
        "build": f.build,
    });
    if let Some(r) = &f.read {
        v["mpp"] = json!(r.mpp);
        v["mpp_source"] = json!(r.mpp_origin);
        v["reader"] = json!(r.reader);
    }
    if f.tile.is_some() {
        if let Some(p) = pipelines.get(state, &f.pipeline_hash)? {
            if let Some(place) = facts::placement(f, &p, None) {
                v["region"] = json!(place.region);
            }
        }
    }
    Ok(v)
}

/// Streams the outputs `q` selects to `out`; returns how many.
pub fn outputs(state: &State, q: &Question, json: bool, out: &mut dyn Write) -> Result<u64, Error> {
    let mut filter = OutputFilter {
        collections: q.collections.clone(),
        recipe_hash: q.recipe_hash.clone(),
        mpp_origin: q.mpp_source.clone(),
        build: q.built_by,
        ..OutputFilter::default()
    };
    for (root, rel) in &q.from_sources {
        let ids = state.inputs_of_source(root, rel)?;
        if ids.is_empty() {
            return Err(Error::Other(format!(
                "{root}:{rel} is not an input of any collection in the build state"
            )));
        }
        filter.inputs.extend(ids);
    }
    let mut pipelines = Pipelines::default();
    let mut n = 0;
    let mut err = None;
    state.for_each_output(
        &filter,
        &facts::tile_name,
        &mut super::stop_at_error(&mut err, |f: OutputFacts| {
            n += 1;
            if json {
                writeln!(out, "{}", output_json(&f, &mut pipelines, state)?)?;
            } else {
                let mpp = f
                    .read
                    .as_ref()
                    .map(|r| format!("\t{} ({})", r.mpp, r.mpp_origin))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}\t{}\t{}\tbuild {}{mpp}",
                    f.path(),
                    facts::source_id(&f),
                    &f.maker.recipe_hash[..16.min(f.maker.recipe_hash.len())],
                    f.build
                )?;
            }
            Ok(())
        }),
    )?;
    err.map_or(Ok(n), Err)
}

/// Streams the inputs (and WSI cells, QC pictures) whose last attempt
/// failed, with the error; returns how many.
pub fn failed(
    state: &State,
    collections: &[String],
    json: bool,
    out: &mut dyn Write,
) -> Result<u64, Error> {
    let mut n = 0;
    let mut err = None;
    state.for_each_failure(
        collections,
        &mut super::stop_at_error(&mut err, |f: FailureFacts| {
            n += 1;
            let what = match f.unit.as_str() {
                "" => String::new(),
                "qc" => " (QC picture)".to_string(),
                cell => format!(" (cell {cell})"),
            };
            if json {
                let v = json!({
                    "collection": f.collection,
                    "source": format!("{}:{}", f.source_root, f.source_rel),
                    "unit": f.unit,
                    "error": f.error,
                    "at": f.at,
                    "at_utc": super::log::utc(f.at),
                    "source_blake3": f.source_hash,
                });
                writeln!(out, "{v}")?;
            } else {
                let first = f.error.lines().next().unwrap_or("");
                writeln!(
                    out,
                    "{}\t{}:{}{what}\t{first}",
                    f.collection, f.source_root, f.source_rel
                )?;
            }
            Ok(())
        }),
    )?;
    err.map_or(Ok(n), Err)
}
