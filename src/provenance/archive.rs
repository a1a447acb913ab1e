//! Archiving the recipes a build uses: for each selected collection, its
//! recipe hash, the canonical text that hash is computed from, and the
//! texts of the recipe file and the templates it extends — exactly as
//! planning read them — so `cpia log --recipe HASH` (and `why`) can show the
//! recipe of an old output after the file changed.

use crate::plan::{Catalog, Planner};
use crate::store::audit::history::{text_hash, RecipeFile, UsedRecipe};
use crate::store::{State, StateError};
use crate::workspace::Workspace;

/// Records, for build `build`, the recipe version of every collection in
/// `catalog` (texts stored once by content hash).
pub fn record(
    state: &mut State,
    build: i64,
    ws: &Workspace,
    planner: &Planner,
    catalog: &Catalog,
) -> Result<(), StateError> {
    let used: Vec<UsedRecipe> = catalog
        .selected
        .iter()
        .map(|s| {
            let recipe = &s.spec.recipe;
            let files = recipe
                .files
                .iter()
                .map(|p| {
                    let text = planner.text(p).unwrap_or_default().to_string();
                    let path = ws.display(&crate::plan::query::normalize(p)).into_owned();
                    (
                        RecipeFile {
                            path,
                            blake3: text_hash(&text),
                        },
                        text,
                    )
                })
                .collect();
            UsedRecipe {
                collection: recipe.collection.name.clone(),
                recipe_hash: recipe.hash.clone(),
                canonical: recipe.canonical(),
                files,
            }
        })
        .collect();
    state.record_build_recipes(build, &used)
}
