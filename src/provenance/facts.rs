//! What follows from an output's record: its key (recomputed with
//! [`crate::plan::key`], the one definition), its steps, and for a WSI tile
//! its place on the slide — the level-0 region it covers, computed from its
//! cell, the read size and the tile's position on the standardized grid.

use std::collections::HashMap;
use std::sync::Arc;

use crate::plan::key::{output_key, qc_key, unit_key, Pipeline, StepDesc};
use crate::store::audit::OutputFacts;
use crate::store::{State, StateError};

/// Pipeline descriptions by hash, read from the state once each.
#[derive(Default)]
pub struct Pipelines(HashMap<String, Option<Arc<Pipeline>>>);

impl Pipelines {
    /// The recorded description of pipeline `hash` (`None`: not stored or
    /// not readable, e.g. a journal from another state).
    pub fn get(&mut self, state: &State, hash: &str) -> Result<Option<Arc<Pipeline>>, StateError> {
        if let Some(p) = self.0.get(hash) {
            return Ok(p.clone());
        }
        let p = state
            .pipeline(hash)?
            .and_then(|j| serde_json::from_str::<Pipeline>(&j).ok())
            .map(Arc::new);
        self.0.insert(hash.to_string(), p.clone());
        Ok(p)
    }
}

/// The key the output was built under, from its recorded ingredients: a
/// tile's is its unit's key, a QC picture's the QC key.
pub fn key(f: &OutputFacts) -> String {
    match (&f.tile, &f.read) {
        (Some(t), Some(r)) => {
            unit_key(&f.pipeline_hash, &r.source_hash, t.cell, r.read_size, r.mpp)
        }
        (None, Some(r)) => qc_key(&f.pipeline_hash, &r.source_hash, r.read_size, r.mpp),
        _ => output_key(&f.pipeline_hash, &f.source_hash),
    }
}

/// Where a WSI tile lies on its slide.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The pyramid level the cell was read from (`None`: `auto` and the
    /// slide's levels are not cached).
    pub level: Option<u32>,
    /// `[x, y, w, h]` in level-0 pixels (fractional when the read size is
    /// not a multiple of the standardized cell).
    pub region: [f64; 4],
    /// The cell's edge on the standardized grid (`wsi_grid` `size`).
    pub cell_edge: u32,
    /// The tile it was cut from: (edge, x, y) on the standardized grid;
    /// `None` for a tile that is a whole cell (XL).
    pub parent: Option<(u32, u32, u32)>,
}

/// `output` of a record, as `why` and the exports' records say it: the
/// file, its bytes' blake3 and size, and its build key.
pub fn output_json(f: &OutputFacts) -> serde_json::Value {
    serde_json::json!({
        "path": f.path(),
        "blake3": f.file.content_hash,
        "bytes": f.file.size,
        "key": key(f),
    })
}

/// The WSI placement fields of a tile's record (`wsi` in `why` and in the
/// exports' records): level, region, cell, tile and cell edge.
pub fn add_placement(
    wsi: &mut serde_json::Value,
    tile: &crate::store::audit::TileFacts,
    place: &Placement,
) {
    wsi["level"] = serde_json::json!(place.level);
    wsi["region"] = serde_json::json!(place.region);
    wsi["cell"] = serde_json::json!([tile.cell.0, tile.cell.1]);
    wsi["tile"] = serde_json::json!({"x": tile.x, "y": tile.y, "size": tile.size});
    wsi["cell_edge"] = serde_json::json!(place.cell_edge);
}

fn param<'a>(s: &'a StepDesc, k: &str) -> Option<&'a str> {
    s.params
        .iter()
        .find(|(name, _)| name == k)
        .map(|(_, v)| v.as_str())
}

/// The tile's placement, from its pipeline (`None` for outputs that are not
/// tiles, or when the pipeline description is missing).
pub fn placement(f: &OutputFacts, p: &Pipeline, slide_meta: Option<&str>) -> Option<Placement> {
    let (t, r) = (f.tile.as_ref()?, f.read.as_ref()?);
    let grid = p.steps.iter().find(|s| s.op == "wsi_grid")?;
    let cell_edge: u32 = param(grid, "size")?.parse().ok()?;
    let scale = f64::from(r.read_size) / f64::from(cell_edge);
    let region = [
        f64::from(t.x) * f64::from(t.size) * scale,
        f64::from(t.y) * f64::from(t.size) * scale,
        f64::from(t.size) * scale,
        f64::from(t.size) * scale,
    ];
    let level = match param(grid, "level") {
        Some("finest") | None => Some(0),
        Some(_) => {
            let target: f64 = param(grid, "target_mpp")?.parse().ok()?;
            auto_level(slide_meta, target / r.mpp)
        }
    };
    // The writer is the pipeline's last step; the step it writes, and the
    // step that one was cut from, give the parent's edge.
    let writer = p.steps.last()?;
    let written = p.steps.get(*writer.inputs.first()?)?;
    let parent = if written.op == "subtiles" {
        let from = p.steps.get(*written.inputs.first()?)?;
        let edge: u32 = match from.op.as_str() {
            "subtiles" => param(from, "size")?.parse().ok()?,
            _ => cell_edge,
        };
        let k = edge / t.size.max(1);
        Some((edge, t.x / k.max(1), t.y / k.max(1)))
    } else {
        None
    };
    Some(Placement {
        level,
        region,
        cell_edge,
        parent,
    })
}

/// The level `auto` reads: the coarsest whose downsample does not exceed
/// the target MPP over the slide's (as the engine chooses).
fn auto_level(meta: Option<&str>, max_downsample: f64) -> Option<u32> {
    let meta: crate::slide::SlideMeta = serde_json::from_str(meta?).ok()?;
    meta.levels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.downsample <= max_downsample + 1e-9)
        .max_by(|a, b| a.1.downsample.total_cmp(&b.1.downsample))
        .map(|(k, _)| k as u32)
}

/// The name of a tile of `slide file` (the planner's rule).
pub fn tile_name(file: &str, size: u32, x: u32, y: u32) -> String {
    crate::plan::expand::tile_name(crate::slide::slide_name(file), size, x, y)
}

/// `root:path`, how cpia names a source file everywhere.
pub fn source_id(f: &OutputFacts) -> String {
    format!("{}:{}", f.source_root, f.source_rel)
}

/// `(scale, sub-dataset)` of an output folder (`M/BreaKHis_100x`).
pub fn scale_and_sub(dir: &str) -> (&str, &str) {
    dir.split_once('/').unwrap_or((dir, ""))
}
