//! `cpia export --dry-run`: what an export would hold before anything is
//! written — samples per category and scale under its `sample` rule (or
//! whole), from the build state and from the published CPIA counts (the
//! report layer's `published.csv`), and the licences its collections carry.
//!
//! From the published counts a sub-dataset is a category (`by =
//! "sub_dataset"`, or `"collection"` by the paper's collection name); the
//! 3840-px WSI sub-datasets the paper lists on sheet L are XL here
//! (docs/recipes.md, "WSI scales"). `select` applies its `scales` and
//! `sub_datasets` to them; `collections` and `organs` need the recipes, so
//! they apply to the state's counts only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::definition::Definition;
use super::sample::By;
use super::selection::{self, Selection};
use super::{croissant, update, Error};
use crate::recipe::CollectionMeta;
use crate::store::State;

/// One category at one scale.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Count {
    pub category: String,
    pub scale: String,
    /// Samples in the category.
    pub size: u64,
    /// Samples the rule keeps on average: `min(size, quota)` (all without a rule).
    pub kept: u64,
}

/// Counts of one source (the state or the published tables).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub rows: Vec<Count>,
    /// Kept per scale, and in all.
    pub per_scale: BTreeMap<String, u64>,
    pub total: u64,
}

impl Counts {
    fn from_rows(rows: Vec<Count>) -> Counts {
        let mut per_scale = BTreeMap::new();
        for r in &rows {
            *per_scale.entry(r.scale.clone()).or_insert(0) += r.kept;
        }
        let total = rows.iter().map(|r| r.kept).sum();
        Counts {
            rows,
            per_scale,
            total,
        }
    }
}

/// What `--dry-run` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    pub name: String,
    pub format: String,
    pub built: Counts,
    pub published: Counts,
    /// Shards the export would have if it were new.
    pub shards: u64,
    /// (licence, collections) and the collections without one (state selection).
    pub licences: Vec<(String, Vec<String>)>,
    pub unlicensed: Vec<String>,
    pub licence_note: String,
    /// The rule's tolerance per category at each scale (`4·√quota + 1`).
    pub tolerance: BTreeMap<String, f64>,
}

/// The dry run of `def` (`state`: `None` before any build).
pub fn dry_run(
    state: Option<&State>,
    def: &Definition,
    meta: &HashMap<String, Arc<CollectionMeta>>,
) -> Result<DryRun, Error> {
    let sel = match state {
        Some(s) => selection::resolve(def, s, meta)?,
        None => Selection {
            meta: meta.clone(),
            ..Selection::default()
        },
    };
    let built = match state {
        Some(s) => built_counts(s, def, &sel)?,
        None => Counts::default(),
    };
    let shards = match state {
        Some(s) => {
            let (mut n, mut b) = (0, 0);
            for d in &sel.dirs {
                let (x, y) = s.dir_totals(d.id)?;
                n += x;
                b += y;
            }
            let kept = built.total.min(n);
            let b = if n > 0 {
                (b as u128 * kept as u128 / n as u128) as u64
            } else {
                0
            };
            update::shard_count(def.target, kept, b)
        }
        None => 0,
    };
    let (licences, unlicensed) = croissant::licences(&sel);
    let tolerance = def
        .sample
        .as_ref()
        .map(|r| {
            r.ratios
                .keys()
                .map(|s| (s.clone(), r.tolerance(s)))
                .collect()
        })
        .unwrap_or_default();
    Ok(DryRun {
        name: def.name.clone(),
        format: def.format.name().into(),
        published: published_counts(def),
        built,
        shards,
        licences,
        unlicensed,
        licence_note: croissant::licence_note(&sel),
        tolerance,
    })
}

fn built_counts(state: &State, def: &Definition, sel: &Selection) -> Result<Counts, Error> {
    let rows = match &def.sample {
        Some(rule) => update::category_sizes(state, def, sel)?
            .into_iter()
            .map(|((category, scale), size)| Count {
                kept: size.min(rule.quota(&scale)),
                category,
                scale,
                size,
            })
            .collect(),
        None => {
            let mut rows = Vec::new();
            for d in &sel.dirs {
                let (scale, sub) = d.path.split_once('/').unwrap_or((&d.path, ""));
                let (n, _) = state.dir_totals(d.id)?;
                rows.push(Count {
                    category: sub.to_string(),
                    scale: scale.to_string(),
                    size: n,
                    kept: n,
                });
            }
            rows
        }
    };
    Ok(Counts::from_rows(rows))
}

/// The published sub-datasets under the definition's scales, sub-datasets and rule.
fn published_counts(def: &Definition) -> Counts {
    let s = &def.select;
    let mut by_cat: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in crate::report::published::rows() {
        let scale = if r.sheet == "L" && r.data_type == "WSIs" && r.sub_dataset.ends_with("-3840") {
            "XL".to_string()
        } else {
            r.sheet.clone()
        };
        if !(s.scales.is_empty() || s.scales.contains(&scale))
            || !(s.sub_datasets.is_empty() || s.sub_datasets.contains(&r.sub_dataset))
        {
            continue;
        }
        let cat = match def.sample.as_ref().map(|x| x.by) {
            Some(By::Collection) => r.original_name.clone(),
            _ => r.sub_dataset.clone(),
        };
        *by_cat.entry((cat, scale)).or_insert(0) += r.images;
    }
    let rows = by_cat
        .into_iter()
        .map(|((category, scale), size)| Count {
            kept: def
                .sample
                .as_ref()
                .map_or(size, |r| size.min(r.quota(&scale))),
            category,
            scale,
            size,
        })
        .collect();
    Counts::from_rows(rows)
}
