//! A sample's record: the `<key>.json` of a WebDataset sample, the
//! metadata columns of a Parquet shard. Its fields carry the names and
//! values `cpia why --json` gives for the same image (tests/export.rs
//! compares them), plus the collection's organs, diseases and stain; fields
//! that change with every build (build id, time) are left out, so an image
//! rebuilt to the same bytes keeps the same record and its shard is not
//! rewritten.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::provenance::facts::{self, Pipelines};
use crate::recipe::CollectionMeta;
use crate::store::audit::OutputFacts;
use crate::store::{State, StateError};

/// Bump when the record's fields change: every sample's digest changes.
pub const VERSION: &str = "1";

/// What records need besides an output's facts, cached across samples.
#[derive(Default)]
pub struct Context {
    /// Collections' metadata by name (from their recipes).
    pub meta: HashMap<String, Arc<CollectionMeta>>,
    pipelines: Pipelines,
    slides: HashMap<String, Option<String>>,
}

impl Context {
    /// A context over the collections' metadata.
    pub fn new(meta: HashMap<String, Arc<CollectionMeta>>) -> Context {
        Context {
            meta,
            ..Context::default()
        }
    }

    /// The record of output `f` under `key`.
    pub fn record(
        &mut self,
        state: &State,
        f: &OutputFacts,
        key: &str,
    ) -> Result<Value, StateError> {
        let (scale, sub) = facts::scale_and_sub(&f.dir);
        let meta = self.meta.get(&f.collection).cloned();
        let mut v = json!({
            "key": key,
            "output": facts::output_json(f),
            "collection": f.collection,
            "sub_dataset": sub,
            "scale": scale,
            "class": f.class,
            "organs": meta.as_ref().map(|m| m.organs.clone()).unwrap_or_default(),
            "diseases": meta.as_ref().map(|m| m.diseases.clone()).unwrap_or_default(),
            "stain": meta.as_ref().and_then(|m| m.stain.clone()),
            "source": {
                "root": f.source_root,
                "path": f.source_rel,
                "blake3": f.source_hash,
            },
            "recipe": { "hash": f.maker.recipe_hash },
            "pipeline_hash": f.pipeline_hash,
            "sink": f.sink,
            "tool_version": f.maker.tool_version,
        });
        if let Some(r) = &f.read {
            let mut w = json!({
                "level": Value::Null,
                "region": Value::Null,
                "cell": Value::Null,
                "mpp": r.mpp,
                "mpp_source": r.mpp_origin,
                "reader": r.reader,
                "read_size": r.read_size,
            });
            if let (Some(t), Some(p)) = (&f.tile, self.pipelines.get(state, &f.pipeline_hash)?) {
                let meta = self.slide_meta(state, &r.source_hash)?;
                if let Some(place) = facts::placement(f, &p, meta.as_deref()) {
                    facts::add_placement(&mut w, t, &place);
                }
            }
            v["wsi"] = w;
        }
        Ok(v)
    }

    /// A slide's cached metadata (a bounded cache: slides come in runs).
    fn slide_meta(&mut self, state: &State, hash: &str) -> Result<Option<String>, StateError> {
        if let Some(m) = self.slides.get(hash) {
            return Ok(m.clone());
        }
        if self.slides.len() >= 256 {
            self.slides.clear();
        }
        let m = state.slide_meta(hash)?;
        self.slides.insert(hash.to_string(), m.clone());
        Ok(m)
    }
}

/// The record as written: compact JSON, keys sorted, a final newline.
pub fn bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    b
}

/// The 16-byte digest of a sample: its key, its bytes' hash and its record.
pub fn digest(key: &str, content_hash: &str, record: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(content_hash.as_bytes());
    h.update(b"\0");
    h.update(record);
    let mut d = [0u8; 16];
    d.copy_from_slice(&h.finalize().as_bytes()[..16]);
    d
}
