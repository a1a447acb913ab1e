//! Which outputs an export takes: its `select` resolved against the
//! recorded output folders and the collections' recipes.
//!
//! An output folder `<scale>/<sub-dataset>` is selected when its scale and
//! sub-dataset are in the lists given (an empty list takes all) and one of
//! its collections is: named in `collections`, or having one of `organs`
//! (case-insensitive) in its recipe. QC pictures are never exported.
//! Within a folder, only outputs of selected collections are samples.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::definition::Definition;
use super::Error;
use crate::recipe::CollectionMeta;
use crate::store::State;

/// A selected output folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dir {
    pub id: i64,
    /// `<scale>/<sub-dataset>`.
    pub path: String,
}

/// A definition's selection, resolved.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub dirs: Vec<Dir>,
    /// The selected collections (of the selected folders).
    pub collections: BTreeSet<String>,
    /// Every collection's metadata (from its recipe), by name.
    pub meta: HashMap<String, Arc<CollectionMeta>>,
    /// Names in `select` that matched nothing: said, not an error.
    pub unmatched: Vec<String>,
}

impl Selection {
    /// Whether an output of `collection` is a sample.
    pub fn takes(&self, collection: &str) -> bool {
        self.collections.contains(collection)
    }

    /// What every sample's record depends on besides its output: the
    /// metadata of the selected collections, as text for a digest.
    pub fn meta_text(&self) -> String {
        let mut out = String::new();
        for c in &self.collections {
            if let Some(m) = self.meta.get(c) {
                out.push_str(&format!(
                    "{c}\t{:?}\t{:?}\t{:?}\n",
                    m.organs, m.diseases, m.stain
                ));
            } else {
                out.push_str(&format!("{c}\t-\n"));
            }
        }
        out
    }
}

/// Resolves `def`'s selection; `meta`: the workspace's collections.
pub fn resolve(
    def: &Definition,
    state: &State,
    meta: &HashMap<String, Arc<CollectionMeta>>,
) -> Result<Selection, Error> {
    let s = &def.select;
    let lower = |v: &[String]| v.iter().map(|x| x.to_lowercase()).collect::<HashSet<_>>();
    let organs = lower(&s.organs);
    let collection_ok = |c: &str| {
        (s.collections.is_empty() || s.collections.iter().any(|x| x == c))
            && (organs.is_empty()
                || meta
                    .get(c)
                    .is_some_and(|m| m.organs.iter().any(|o| organs.contains(&o.to_lowercase()))))
    };
    let mut sel = Selection {
        meta: meta.clone(),
        ..Selection::default()
    };
    let mut seen_scales = HashSet::new();
    let mut seen_subs = HashSet::new();
    let mut last: Option<i64> = None;
    for (id, path, collection) in state.out_dirs_with_collection()? {
        let Some((scale, sub)) = path.split_once('/') else {
            continue;
        };
        if crate::recipe::Scale::parse(scale).map(|x| x.dir()) != Some(scale) {
            continue; // qc/ and anything that is not a scale folder
        }
        seen_scales.insert(scale.to_string());
        seen_subs.insert(sub.to_string());
        if !(s.scales.is_empty() || s.scales.iter().any(|x| x == scale))
            || !(s.sub_datasets.is_empty() || s.sub_datasets.iter().any(|x| x == sub))
            || !collection_ok(&collection)
        {
            continue;
        }
        sel.collections.insert(collection);
        if last != Some(id) {
            sel.dirs.push(Dir { id, path });
            last = Some(id);
        }
    }
    let known: HashSet<&str> = meta.keys().map(String::as_str).collect();
    sel.unmatched.extend(
        s.collections
            .iter()
            .filter(|c| !known.contains(c.as_str()))
            .map(|c| format!("collection {c}")),
    );
    sel.unmatched.extend(
        s.sub_datasets
            .iter()
            .filter(|x| !seen_subs.contains(x.as_str()))
            .map(|x| format!("sub-dataset {x} (not built)")),
    );
    Ok(sel)
}
