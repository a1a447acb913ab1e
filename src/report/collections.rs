//! The collections of a workspace as `list`, `status` and `report` show them:
//! each loaded recipe with its metadata, the sub-datasets it writes (with
//! their scales), and whether its source root is available — one `stat` and
//! one directory entry per root, never a walk.

use std::path::PathBuf;

use crate::plan::sources::{usable_root, RootError};
use crate::plan::{Planner, Selection};
use crate::recipe::{CollectionMeta, SubDataset};
use crate::workspace::Workspace;

/// One collection of the workspace.
#[derive(Clone, Debug)]
pub struct Collection {
    pub meta: CollectionMeta,
    /// The recipe file, as the user would name it (`recipes/breakhis.toml`).
    pub recipe: String,
    /// The source root's name (`[inputs] source`).
    pub source_root: String,
    /// The root's folder if it is usable, or why not.
    pub source: Result<PathBuf, RootError>,
    /// From the recipe alone ([`crate::plan::CollectionSpec::sub_datasets`]).
    pub sub_datasets: Vec<SubDataset>,
    /// The plan fingerprint inputs must be complete under to be up to date.
    pub fingerprint: String,
}

impl Collection {
    /// "source not available": not configured, missing or empty.
    pub fn unavailable(&self) -> bool {
        self.source.as_ref().is_err_and(|e| e.is_unavailable())
    }
}

/// The workspace's collections, and the recipes that could not be used.
#[derive(Clone, Debug, Default)]
pub struct Collections {
    /// Sorted by collection name.
    pub list: Vec<Collection>,
    /// (recipe file, error): recipes that do not load, names used twice.
    pub problems: Vec<(String, String)>,
}

/// Reads every recipe of `ws` and checks every source root.
pub fn collections(ws: &Workspace) -> Collections {
    let mut planner = Planner::new();
    planner.refresh_recipes(ws);
    let catalog = planner.catalog(ws, &Selection::default());
    let mut list: Vec<Collection> = catalog
        .selected
        .iter()
        .map(|s| {
            let recipe = &s.spec.recipe;
            Collection {
                meta: recipe.collection.clone(),
                recipe: ws.display(&s.path).into_owned(),
                source_root: recipe.inputs.source.clone(),
                source: usable_root(ws, &recipe.inputs.source),
                sub_datasets: s.spec.sub_datasets(),
                fingerprint: s.spec.fingerprint.clone(),
            }
        })
        .collect();
    list.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
    let problems = catalog
        .problems
        .into_iter()
        .map(|p| (p.input, p.error))
        .collect();
    Collections { list, problems }
}
