//! `cpia plan --explain` for exports: which shard an output the plan
//! builds or removes lies in — the shard a build will rewrite because of
//! it — and what each export will do as a whole (new, re-evaluated because
//! its definition or metadata changed, or changes recorded and not written
//! yet).

use std::collections::HashSet;

use super::definition::{Definition, Format};
use super::selection::{self, Selection};
use super::{key, sync, update, Error};
use crate::store::exports::ExportRow;
use crate::store::State;
use crate::workspace::Workspace;

/// The declared exports, resolved against the state as it is.
pub struct Explainer {
    exports: Vec<(Definition, Selection, Option<ExportRow>, HashSet<String>)>,
}

impl Explainer {
    /// The workspace's declared exports (a bad definition: an error).
    pub fn new(ws: &Workspace, state: &State) -> Result<Explainer, Error> {
        let meta = sync::collection_meta(ws);
        let mut exports = Vec::new();
        for def in sync::declared(ws)? {
            let sel = selection::resolve(&def, state, &meta)?;
            let row = state.export(&def.name)?;
            let dirs = sel.dirs.iter().map(|d| d.path.clone()).collect();
            exports.push((def, sel, row, dirs));
        }
        Ok(Explainer { exports })
    }

    /// Whether there is anything to explain.
    pub fn is_empty(&self) -> bool {
        self.exports.is_empty()
    }

    /// Why shards change because output `path` of `collection` is built or
    /// removed: one line per export holding it.
    pub fn shards_of(&self, collection: &str, path: &str) -> Vec<String> {
        let Some((dir, name)) = path.rsplit_once('/').filter(|(_, n)| n.ends_with(".jpg")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (def, sel, row, dirs) in &self.exports {
            // A folder the export does not hold yet may be new: its scale
            // and sub-dataset decide (the selection is resolved again then).
            let (scale, sub) = dir.split_once('/').unwrap_or((dir, ""));
            let s = &def.select;
            let selected = dirs.contains(dir)
                || ((s.scales.is_empty() || s.scales.iter().any(|x| x == scale))
                    && (s.sub_datasets.is_empty() || s.sub_datasets.iter().any(|x| x == sub))
                    && (s.collections.is_empty() || s.collections.iter().any(|c| c == collection)));
            if !selected
                || (!sel.collections.is_empty() && !sel.takes(collection) && dirs.contains(dir))
            {
                continue;
            }
            let k = key::key(dir, name);
            let rule = if def.sample.is_some() {
                " if the sampling rule keeps it"
            } else {
                ""
            };
            match (def.format, row) {
                (Format::ImageFolder, _) => out.push(format!(
                    "export {}: its file {} is placed or removed{rule}",
                    def.name,
                    k.replace('/', ".")
                )),
                (_, Some(r)) => out.push(format!(
                    "export {}: shard {} is rewritten (sample {k}){rule}",
                    def.name,
                    update::shard_path(def, key::shard(&k, r.shards))
                )),
                (_, None) => {}
            }
        }
        out
    }

    /// What each export will do as a whole.
    pub fn summary(&self, state: &State) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (def, sel, row, _) in &self.exports {
            let line = match row {
                None => format!("export {}: new: every shard is written", def.name),
                Some(r) if r.definition != def.canonical() => format!(
                    "export {}: its definition changed: every sample is re-evaluated; shards whose samples changed are rewritten",
                    def.name
                ),
                Some(r) if r.digest != update::digest(def, sel) => format!(
                    "export {}: its collections' recipe metadata changed: every sample is re-evaluated",
                    def.name
                ),
                Some(r) => {
                    let pending = state.export_pending(r.id)? + state.export_stale(r.id)?.len() as u64;
                    if pending == 0 {
                        format!("export {}: up to date but for what this plan builds", def.name)
                    } else {
                        format!(
                            "export {}: {pending} recorded change(s) not written yet (an export that failed or was interrupted)",
                            def.name
                        )
                    }
                }
            };
            out.push(line);
        }
        Ok(out)
    }
}
