//! Cache keys: the one place where an output's key is computed.
//!
//! An output is up to date when the key recorded for it equals the key
//! computed now, and the file on disk is the one that was recorded. The key
//! is the blake3 of a canonical, length-prefixed encoding of exactly these
//! ingredients, and nothing else:
//!
//! | ingredient | taken from | why it is in the key |
//! |---|---|---|
//! | key format version ([`KEY_FORMAT`]) | this module | changing the encoding below must invalidate every key |
//! | source content hash | blake3 of the source file's bytes (stat index) | the pixels come from these bytes; a touched but identical file keeps its key (early cutoff) |
//! | each step on the path from the source to the output, in topological order: operator name | recipe `op` | another operator makes other bytes |
//! | … its operator version | [`crate::ops::Operator::version`] | a changed implementation makes other bytes |
//! | … its normalized parameters, sorted by name | [`crate::ops::Operator::params`] | `quality = 75` vs `90`; spellings of one value normalize alike |
//! | … its inputs, as positions in this list | recipe `input`/`inputs` | the shape of the DAG |
//! | the JPEG encoder and its version | [`crate::ops::encode::ENCODER`] | another libjpeg-turbo may write other bytes |
//!
//! Whole-slide images have one key per *unit*: a cell of the slide's grid ×
//! one writing step (`encode_tiles`), whose outputs are the tiles that step
//! writes for that cell (which ones exist depends on the pixels). A unit's key
//! ([`unit_key`]) holds the same pipeline ingredients as above (the steps
//! from `wsi_grid` down to that writer, so an S-only parameter change leaves
//! the XL, L and M units' keys alone), plus:
//!
//! | ingredient | why |
//! |---|---|
//! | the slide's content hash | the pixels |
//! | the cell `(i, j)` | which region |
//! | the read size in level-0 pixels | follows from the MPP and the grid parameters |
//! | the MPP used (not its origin) | a different MPP is a different region and resize |
//!
//! The QC picture of a slide has its own key ([`qc_key`]): the slide, the
//! pipeline up to the tissue test, the geometry, and [`QC_VERSION`].
//!
//! Deliberately **not** in the key: absolute paths, times, the machine, step
//! ids (renaming a step changes no pixel), collection metadata, the output's
//! name, sub-dataset, scale and class (they say *where* the file goes — its
//! identity in the state — not what its bytes are), cpia's own version
//! (a release that changes no operator must not rebuild 21 million images;
//! operator versions carry that meaning instead), and the versions of the
//! other libraries that make pixels:
//!
//! | not keyed | instead |
//! |---|---|
//! | the system libopenslide (`openslide_get_version`) | recorded with every WSI output ([`super::libraries`]); `cpia status` counts outputs another OpenSlide made; the direct reader (bit-exact with OpenSlide 3.4.1) is not used beside another version. Keying it would rebuild ~148 M tiles on an `apt upgrade` that changes no pixel |
//! | the decoders, the resizer, the PNG encoder (image, png, tiff, zune-jpeg, fast_image_resize) | recorded with every output; `tests/golden.rs` fails when an update changes an operator's bytes, asking for that operator's version (keyed) to be bumped |
//! | libjpeg-turbo | keyed through [`crate::ops::ENCODER`] (checked against the library built) |

use serde::{Deserialize, Serialize};

use crate::ops::Operator;
use crate::recipe::Recipe;

/// Version of the key encoding below.
pub const KEY_FORMAT: u32 = 1;

/// One step of a pipeline, as recorded for explanations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepDesc {
    /// The recipe's step id: for messages only, not part of the key.
    pub id: String,
    pub op: String,
    pub version: u32,
    pub params: Vec<(String, String)>,
    /// Positions in [`Pipeline::steps`]; empty = reads the source.
    pub inputs: Vec<usize>,
}

/// The chain of steps that makes one sink of a recipe from a source file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pipeline {
    pub steps: Vec<StepDesc>,
    pub encoder: String,
    /// blake3 hex of the canonical encoding (everything above but ids).
    pub hash: String,
}

impl Pipeline {
    /// The pipeline feeding `sink` in `recipe`: the sink's ancestors in
    /// topological order, renumbered.
    pub fn for_sink(recipe: &Recipe, sink: usize) -> Pipeline {
        let needed = recipe.ancestors(&[sink]);
        let mut position = vec![usize::MAX; recipe.steps.len()];
        let mut steps = Vec::new();
        for (i, step) in recipe.steps.iter().enumerate() {
            if !needed[i] {
                continue;
            }
            position[i] = steps.len();
            steps.push(describe(&step.id, &step.op, &step.inputs, &position));
        }
        Pipeline::new(steps, crate::ops::encode::ENCODER.to_string())
    }

    /// Builds a pipeline and computes its hash.
    pub fn new(steps: Vec<StepDesc>, encoder: String) -> Pipeline {
        let mut enc = Encoder::new("cpia-pipeline");
        enc.u64(steps.len() as u64);
        for s in &steps {
            enc.str(&s.op);
            enc.u64(u64::from(s.version));
            enc.u64(s.params.len() as u64);
            for (k, v) in &s.params {
                enc.str(k);
                enc.str(v);
            }
            enc.u64(s.inputs.len() as u64);
            for &i in &s.inputs {
                enc.u64(i as u64);
            }
        }
        enc.str(&encoder);
        Pipeline {
            hash: enc.finish(),
            steps,
            encoder,
        }
    }

    /// The JSON stored in the state's `pipelines` table; the error names the
    /// pipeline (an empty description would make its outputs unexplainable).
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self)
            .map_err(|e| format!("cannot describe pipeline {}: {e}", self.hash))
    }
}

fn describe(id: &str, op: &Operator, inputs: &[usize], position: &[usize]) -> StepDesc {
    StepDesc {
        id: id.to_string(),
        op: op.name().to_string(),
        version: op.version(),
        params: op
            .params()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        inputs: inputs.iter().map(|&i| position[i]).collect(),
    }
}

/// The key of an output made by `pipeline` from a source whose content hash
/// is `source_hash`. See the module documentation for the full table.
pub fn output_key(pipeline_hash: &str, source_hash: &str) -> String {
    let mut enc = Encoder::new("cpia-output-key");
    enc.str(pipeline_hash);
    enc.str(source_hash);
    enc.finish()
}

/// Version of the QC drawing (bump when the picture changes).
pub const QC_VERSION: u32 = 1;

/// The key of a WSI unit: cell `(i, j)` of the slide with content hash
/// `source_hash`, written by the sink whose pipeline is `pipeline`.
pub fn unit_key(
    pipeline_hash: &str,
    source_hash: &str,
    cell: (u32, u32),
    read_size: u32,
    mpp: f64,
) -> String {
    let mut enc = Encoder::new("cpia-wsi-unit-key");
    enc.str(pipeline_hash);
    enc.str(source_hash);
    enc.u64(u64::from(cell.0));
    enc.u64(u64::from(cell.1));
    enc.u64(u64::from(read_size));
    enc.u64(mpp.to_bits());
    enc.finish()
}

/// The key of a slide's QC picture: `decisions` is the pipeline up to the
/// tissue test (what decides kept/rejected).
pub fn qc_key(decisions_hash: &str, source_hash: &str, read_size: u32, mpp: f64) -> String {
    let mut enc = Encoder::new("cpia-wsi-qc-key");
    enc.u64(u64::from(QC_VERSION));
    enc.str(decisions_hash);
    enc.str(source_hash);
    enc.u64(u64::from(read_size));
    enc.u64(mpp.to_bits());
    enc.finish()
}

/// Version of the planner's rules that the recipe text does not show (how
/// names, routes and units are derived from a recipe): bump when they change.
pub const PLAN_FORMAT: u32 = 1;

/// The plan fingerprint of a collection.
///
/// An input whose bytes are unchanged, and all of whose outputs were last
/// built completely under the current fingerprint, has nothing to do: the
/// planner skips it without reading any of its records (the input-level
/// early cutoff, docs/state.md). So the fingerprint holds everything that can
/// change what a collection plans for an unchanged source file:
///
/// | ingredient | why |
/// |---|---|
/// | [`PLAN_FORMAT`], [`KEY_FORMAT`], [`QC_VERSION`] | the planner's own rules, the key encoding, the QC drawing |
/// | the recipe hash | the resolved recipe: `[inputs]`, routes, names, steps and their parameters, `[mpp]`, metadata (a metadata edit re-plans the collection, rebuilds nothing, and updates the recorded recipe hash) |
/// | every pipeline hash, in sink order (WSI: and the QC decisions pipeline) | operator versions and the JPEG encoder, which the recipe text does not show |
/// | the source root's name | recorded with every output |
///
/// Not in it: the source root's path (a moved root keeps its inputs: their
/// stat index entries are per root *name*), the output folder, the machine.
pub fn plan_fingerprint(recipe_hash: &str, pipeline_hashes: &[&str], source_root: &str) -> String {
    let mut enc = Encoder::new("cpia-plan-fingerprint");
    enc.u64(u64::from(PLAN_FORMAT));
    enc.u64(u64::from(QC_VERSION));
    enc.str(recipe_hash);
    enc.u64(pipeline_hashes.len() as u64);
    for h in pipeline_hashes {
        enc.str(h);
    }
    enc.str(source_root);
    enc.finish()
}

/// Unambiguous encoding: every field is length-prefixed, so no two different
/// ingredient lists can produce the same byte stream.
struct Encoder(blake3::Hasher);

impl Encoder {
    fn new(domain: &str) -> Encoder {
        let mut e = Encoder(blake3::Hasher::new());
        e.str(domain);
        e.u64(u64::from(KEY_FORMAT));
        e
    }
    fn u64(&mut self, v: u64) {
        self.0.update(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
    }
    fn finish(self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, op: &str, params: &[(&str, &str)], inputs: &[usize]) -> StepDesc {
        StepDesc {
            id: id.into(),
            op: op.into(),
            version: 1,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inputs: inputs.to_vec(),
        }
    }

    #[test]
    fn ids_do_not_matter_params_do() {
        let a = Pipeline::new(
            vec![step("enc", "encode_jpeg", &[("quality", "75")], &[])],
            "e".into(),
        );
        let b = Pipeline::new(
            vec![step("x", "encode_jpeg", &[("quality", "75")], &[])],
            "e".into(),
        );
        let c = Pipeline::new(
            vec![step("enc", "encode_jpeg", &[("quality", "90")], &[])],
            "e".into(),
        );
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert_ne!(output_key(&a.hash, "s1"), output_key(&a.hash, "s2"));
        assert_eq!(output_key(&a.hash, "s1"), output_key(&b.hash, "s1"));
    }

    #[test]
    fn encoding_is_unambiguous() {
        let a = Pipeline::new(vec![step("a", "ab", &[("c", "")], &[])], "e".into());
        let b = Pipeline::new(vec![step("a", "a", &[("bc", "")], &[])], "e".into());
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn operator_version_and_encoder_matter() {
        let mut s = step("a", "resize", &[], &[]);
        let a = Pipeline::new(vec![s.clone()], "e".into());
        s.version = 2;
        let b = Pipeline::new(vec![s.clone()], "e".into());
        let c = Pipeline::new(vec![s], "f".into());
        assert_ne!(a.hash, b.hash);
        assert_ne!(b.hash, c.hash);
    }
}
