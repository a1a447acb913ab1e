//! Who plans and who owns each ROI output path of a collection, so that
//! judging an input sees collisions between inputs and outputs that move
//! from one input (or collection) to another.

use std::collections::{HashMap, HashSet};

use crate::store::{State, StateError};

use super::{inputs, judge, PlannedOutput};

/// Who plans which ROI output paths, for collisions and moves.
#[derive(Default)]
pub(super) struct RoiClaims {
    /// Planned path → the detail inputs planning it (id, file).
    by_path: HashMap<String, Vec<(i64, String)>>,
    /// Recorded owners of planned paths: (input, collection, root, path).
    owners: HashMap<String, (i64, String, String, String)>,
    /// Inputs of this plan that are gone (their outputs are removed first).
    gone: HashSet<i64>,
    /// Inputs planned in detail.
    detail: HashSet<i64>,
}

impl RoiClaims {
    /// Who plans each path (the inputs planned in detail), and which
    /// inputs are gone; owners are added input by input ([`Self::add_owners`]).
    pub(super) fn of(
        classified: &inputs::Classified,
        expanded: &[Result<Option<Vec<PlannedOutput>>, String>],
    ) -> RoiClaims {
        let mut claims = RoiClaims::default();
        for (d, e) in classified.detail.iter().zip(expanded) {
            if let Ok(Some(outs)) = e {
                for o in outs {
                    claims
                        .by_path
                        .entry(o.path())
                        .or_default()
                        .push((d.input.id, d.input.abs.display().to_string()));
                }
            }
        }
        for g in &classified.gone {
            claims.gone.insert(g.id);
        }
        claims.detail = classified.detail.iter().map(|d| d.input.id).collect();
        claims
    }

    /// The recorded owners of the paths an input plans that it has no
    /// record of.
    pub(super) fn add_owners(
        &mut self,
        state: &State,
        planned: &Result<Option<Vec<PlannedOutput>>, String>,
        recorded: &[crate::store::OutputRow],
    ) -> Result<(), StateError> {
        if let Ok(Some(outs)) = planned {
            for o in outs {
                if !recorded.iter().any(|r| r.dir == o.dir && r.name == o.name) {
                    if let Some(owner) = state.owner_of(&o.dir, &o.name)? {
                        self.owners.insert(o.path(), owner);
                    }
                }
            }
        }
        Ok(())
    }
}

impl judge::Claims for RoiClaims {
    fn contested(&self, path: &str, input: i64) -> Option<Vec<String>> {
        let v = self.by_path.get(path)?;
        (v.len() > 1).then(|| {
            v.iter()
                .filter(|(i, _)| *i != input)
                .map(|(_, f)| f.clone())
                .collect()
        })
    }

    fn taken_by_other(&self, path: &str, input: i64) -> bool {
        self.by_path
            .get(path)
            .is_some_and(|v| v.iter().any(|(i, _)| *i != input))
    }

    fn owned_elsewhere(&self, path: &str, input: i64) -> Option<String> {
        let (owner, collection, root, rel) = self.owners.get(path)?;
        if *owner == input || self.gone.contains(owner) {
            return None;
        }
        // A detail input of this plan that no longer plans the path gives
        // it up (its record is removed before anything is built).
        if self.detail.contains(owner) && !self.taken_by_other(path, input) {
            return None;
        }
        Some(format!(
            "{root}:{rel} (collection {collection}, which recorded it)"
        ))
    }
}
