//! Expanding one input of a collection into what it should produce, with
//! keys: an ROI source into its outputs, a slide into its units (grid cell ×
//! writing step) and its QC picture. Pure functions of the recipe and the
//! input's content hash (and, for slides, their metadata).

use std::path::PathBuf;
use std::sync::Arc;

use super::key::{output_key, plan_fingerprint, qc_key, unit_key, Pipeline};
use crate::ops::wsi::{mpp, Geometry, GridParams};
use crate::ops::Operator;
use crate::recipe::{Kind, Recipe, Scale, SubDataset};
use crate::slide::SlideMeta;

/// What planning derives from a recipe once (see [`super::query::collection_spec`]).
#[derive(Debug, PartialEq)]
pub struct CollectionSpec {
    pub recipe: Arc<Recipe>,
    /// One per sink, in `recipe.sinks` order (then, for WSI, the pipeline up
    /// to the tissue test, which the QC pictures use).
    pub pipelines: Vec<Pipeline>,
    /// The plan fingerprint ([`super::key::plan_fingerprint`]).
    pub fingerprint: String,
    /// WSI recipes: the grid and the writing steps.
    pub wsi: Option<WsiSpec>,
}

/// The WSI side of a spec.
#[derive(Debug, PartialEq)]
pub struct WsiSpec {
    pub grid: GridParams,
    /// Per sink: its step index, scale folder and tile edge.
    pub sinks: Vec<(usize, String, u32)>,
    /// Index into [`CollectionSpec::pipelines`] of the decisions pipeline.
    pub qc_pipeline: usize,
}

impl CollectionSpec {
    /// Derives the spec of a loaded recipe.
    pub fn new(recipe: Arc<Recipe>) -> CollectionSpec {
        let mut pipelines: Vec<Pipeline> = recipe
            .sinks
            .iter()
            .map(|&s| Pipeline::for_sink(&recipe, s))
            .collect();
        let wsi = match (recipe.collection.kind, grid_params(&recipe)) {
            (Kind::Wsi, Some(grid)) => {
                // The pipeline deciding kept/rejected: up to the tissue step
                // (or the grid).
                let decider = recipe
                    .steps
                    .iter()
                    .position(|s| matches!(s.op, Operator::Tissue(_)))
                    .or_else(|| {
                        recipe
                            .steps
                            .iter()
                            .position(|s| matches!(s.op, Operator::WsiGrid(_)))
                    })
                    .unwrap_or(0);
                let qc_pipeline = pipelines.len();
                pipelines.push(Pipeline::for_sink(&recipe, decider));
                let sinks = recipe
                    .sinks
                    .iter()
                    .map(|&s| {
                        let scale = match &recipe.steps[s].op {
                            Operator::EncodeTiles(p) => p.scale.clone(),
                            _ => String::new(),
                        };
                        (s, scale, tile_size(&recipe, s))
                    })
                    .collect();
                Some(WsiSpec {
                    grid: grid.clone(),
                    sinks,
                    qc_pipeline,
                })
            }
            _ => None,
        };
        let hashes: Vec<&str> = pipelines.iter().map(|p| p.hash.as_str()).collect();
        let fingerprint = plan_fingerprint(&recipe.hash, &hashes, &recipe.inputs.source);
        CollectionSpec {
            recipe,
            pipelines,
            fingerprint,
            wsi,
        }
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.recipe.collection.name
    }

    /// The sub-datasets the collection writes, known from its recipe alone:
    /// for WSI one per writing step, `<collection>-<tile size>` at the step's
    /// scale (the folder [`expand_wsi`] writes); for ROI those of its routes
    /// ([`Recipe::route_sub_datasets`]).
    pub fn sub_datasets(&self) -> Vec<SubDataset> {
        let Some(wsi) = &self.wsi else {
            return self.recipe.route_sub_datasets();
        };
        wsi.sinks
            .iter()
            .filter_map(|(_, scale, size)| {
                Some(SubDataset {
                    name: format!("{}-{size}", self.name()),
                    scale: Scale::parse(scale)?,
                    exact: true,
                })
            })
            .collect()
    }
}

/// One input of a collection, as the planner found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Its row in the state (`inputs.id`).
    pub id: i64,
    pub collection: String,
    pub source_root: String,
    /// Relative to the root, `/`-separated.
    pub rel: String,
    pub abs: PathBuf,
    pub hash: String,
}

/// Where one input goes and under which key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannedOutput {
    /// Folder relative to the output root (`<scale>/<sub_dataset>`).
    pub dir: String,
    /// File name (`<name>.jpg`).
    pub name: String,
    pub sink: usize,
    /// Index into [`CollectionSpec::pipelines`].
    pub pipeline: usize,
    pub key: String,
    pub sub_dataset: String,
    pub scale: String,
    pub class: Option<String>,
}

impl PlannedOutput {
    /// Relative to the output root, `/`-separated.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }
}

/// One WSI unit: a grid cell of a slide × one writing step.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedUnit {
    /// File name up to its first dot.
    pub slide: String,
    pub cell: (u32, u32),
    /// Index into `recipe.steps` of the writing step.
    pub sink: usize,
    /// Index into [`CollectionSpec::pipelines`].
    pub pipeline: usize,
    pub key: String,
    /// Scale folder, tiles' folder (`<scale>/<collection>-<size>`) and edge.
    pub scale: String,
    pub dir: String,
    pub size: u32,
    pub read_size: u32,
    pub mpp: f64,
    pub mpp_origin: &'static str,
}

impl PlannedUnit {
    /// `"i,j"`: how messages and the state name a cell.
    pub fn cell_id(&self) -> String {
        format!("{},{}", self.cell.0, self.cell.1)
    }

    /// Where this unit's tiles go, for messages: the folder and name pattern.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}-{}-*-* (cell {},{})",
            self.dir, self.slide, self.size, self.cell.0, self.cell.1
        )
    }

    /// The path of one of its tiles.
    pub fn tile_path(&self, x: u32, y: u32) -> String {
        format!("{}/{}", self.dir, tile_name(&self.slide, self.size, x, y))
    }
}

/// The name of a WSI tile: `{slide}-{size}-{x}-{y}.jpg` (the standard).
pub fn tile_name(slide: &str, size: u32, x: u32, y: u32) -> String {
    format!("{slide}-{size}-{x}-{y}.jpg")
}

/// The QC picture of one slide.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedQc {
    /// `qc/<collection>` and `<slide>.png`.
    pub dir: String,
    pub name: String,
    pub key: String,
    /// Index into [`CollectionSpec::pipelines`] of the decisions pipeline.
    pub pipeline: usize,
    pub geometry: Geometry,
    pub read_size: u32,
    pub mpp: f64,
    pub mpp_origin: &'static str,
}

impl PlannedQc {
    /// Relative to the output root.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }
}

/// An ROI input's outputs, `Ok(None)` when no route takes it.
pub fn expand_roi(
    spec: &CollectionSpec,
    rel: &str,
    hash: &str,
) -> Result<Option<Vec<PlannedOutput>>, String> {
    let recipe = &spec.recipe;
    let Some(routed) = recipe.route(rel)? else {
        return Ok(None);
    };
    let outputs = recipe
        .sinks
        .iter()
        .zip(&spec.pipelines)
        .enumerate()
        .map(|(i, (&sink, pipeline))| {
            let name = if recipe.sinks.len() > 1 {
                format!("{}_{}", routed.name, recipe.steps[sink].id)
            } else {
                routed.name.clone()
            };
            PlannedOutput {
                dir: format!("{}/{}", routed.scale.dir(), routed.sub_dataset),
                name: format!("{name}.jpg"),
                sink,
                pipeline: i,
                key: output_key(&pipeline.hash, hash),
                sub_dataset: routed.sub_dataset.clone(),
                scale: routed.scale.dir().to_string(),
                class: routed.class.clone(),
            }
        })
        .collect();
    Ok(Some(outputs))
}

/// A slide's units and QC picture.
pub fn expand_wsi(
    spec: &CollectionSpec,
    rel: &str,
    hash: &str,
    meta: &SlideMeta,
) -> Result<(Vec<PlannedUnit>, PlannedQc), String> {
    let Some(wsi) = &spec.wsi else {
        return Err("the recipe has no wsi_grid step".into());
    };
    let recipe = &spec.recipe;
    let slide = crate::slide::slide_name(rel).to_string();
    if let Err(why) = crate::recipe::check_component(&slide) {
        return Err(format!(
            "the slide name `{slide}` (the file name up to its first dot) cannot name tiles: {why}"
        ));
    }
    let mpp = mpp::resolve(&meta.properties, &slide, &recipe.mpp)?;
    let g = Geometry::new(meta.width, meta.height, mpp.value, &wsi.grid);
    let collection = &recipe.collection.name;
    let mut units = Vec::new();
    for cell in g.cells() {
        for (i, (sink, scale, size)) in wsi.sinks.iter().enumerate() {
            units.push(PlannedUnit {
                slide: slide.clone(),
                cell,
                sink: *sink,
                pipeline: i,
                key: unit_key(&spec.pipelines[i].hash, hash, cell, g.read_size, mpp.value),
                scale: scale.clone(),
                dir: format!("{scale}/{collection}-{size}"),
                size: *size,
                read_size: g.read_size,
                mpp: mpp.value,
                mpp_origin: mpp.origin.as_str(),
            });
        }
    }
    let qc = PlannedQc {
        dir: format!("qc/{collection}"),
        name: format!("{slide}.png"),
        key: qc_key(
            &spec.pipelines[wsi.qc_pipeline].hash,
            hash,
            g.read_size,
            mpp.value,
        ),
        pipeline: wsi.qc_pipeline,
        read_size: g.read_size,
        mpp: mpp.value,
        mpp_origin: mpp.origin.as_str(),
        geometry: g,
    };
    Ok((units, qc))
}

/// The grid step's parameters (a loaded WSI recipe has exactly one).
pub fn grid_params(recipe: &Recipe) -> Option<&GridParams> {
    recipe.steps.iter().find_map(|s| match &s.op {
        Operator::WsiGrid(g) => Some(g),
        _ => None,
    })
}

/// The tile edge a step's tiles have: the nearest `subtiles` or `wsi_grid`
/// up its input chain.
fn tile_size(recipe: &Recipe, mut i: usize) -> u32 {
    loop {
        match &recipe.steps[i].op {
            Operator::Subtiles(p) => return p.size,
            Operator::WsiGrid(p) => return p.size,
            _ => match recipe.steps[i].inputs.first() {
                Some(&j) => i = j,
                None => return 0,
            },
        }
    }
}
