//! Splitting a build's jobs into shards of about equal cost.
//!
//! The unit of assignment is an **input**: a ROI source with all its
//! outputs, or a slide with all its cells, units and QC picture — so a slide
//! is opened by one task, and its QC picture is drawn from decisions that
//! task made itself.
//!
//! Cost is estimated in bytes of pixels to read and decode, the work that
//! dominates a build:
//! - a WSI grid cell: its level-0 region as RGB (`read_size² × 3`), once
//!   however many writing steps use it, plus [`PER_ACTION`] per unit;
//! - a QC picture: a 1024-px thumbnail ([`QC`]);
//! - a ROI source: its file size × [`DECODE_RATIO`] (compressed images
//!   expand about that much when decoded), plus [`PER_ACTION`] per output.
//!
//! Inputs are assigned collection by collection, largest first, each to the
//! least loaded shard so far (greedy LPT: within 4/3 of the best possible
//! longest shard); loads carry over between collections, so memory holds one
//! collection's inputs, never the build's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;

use crate::plan::{CollectionPlan, Input};
use crate::store::State;

use super::planfile::{keys_digest, InputWork, UnitWork};
use crate::engine::EngineError;

/// Fixed cost of each output, unit or picture: opening, encoding, writing.
pub const PER_ACTION: u64 = 256 << 10;
/// Cost of drawing a QC picture (reading a 1024-px thumbnail).
pub const QC: u64 = 3 << 20;
/// Decoded bytes per byte of a compressed ROI image (PNG, TIFF, JPEG).
pub const DECODE_RATIO: u64 = 4;

/// Assigns work to the least loaded of `n` shards.
pub struct Sharder {
    loads: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Sharder {
    /// `n` empty shards.
    pub fn new(n: u32) -> Sharder {
        Sharder {
            loads: (0..n.max(1)).map(|i| Reverse((0, i))).collect(),
        }
    }

    /// The shard for work of `cost`: the least loaded (the lowest index
    /// among equals, so shards fill from 0 and only trailing ones can stay
    /// empty).
    pub fn assign(&mut self, cost: u64) -> u32 {
        let Some(Reverse((load, i))) = self.loads.pop() else {
            return 0;
        };
        self.loads.push(Reverse((load.saturating_add(cost), i)));
        i
    }

    /// Assigns a collection's inputs, largest first; the shard of each, in
    /// the order given.
    pub fn assign_all(&mut self, works: &[InputWork]) -> Vec<u32> {
        let mut order: Vec<usize> = (0..works.len()).collect();
        order.sort_by_key(|&i| (Reverse(works[i].cost), works[i].id));
        let mut out = vec![0; works.len()];
        for i in order {
            out[i] = self.assign(works[i].cost);
        }
        out
    }

    /// Every shard's load, by index.
    pub fn loads(&self) -> Vec<u64> {
        let mut l: Vec<(u32, u64)> = self.loads.iter().map(|r| (r.0 .1, r.0 .0)).collect();
        l.sort_unstable();
        l.into_iter().map(|(_, load)| load).collect()
    }
}

/// The jobs of a collection plan, by input, as a shard file describes them,
/// with their estimated costs; a slide's metadata (cached by planning) and
/// the decisions recorded for slides whose QC picture is drawn come from
/// the state.
pub fn inputs_of(state: &State, plan: &CollectionPlan) -> Result<Vec<InputWork>, EngineError> {
    type Entry = (Arc<Input>, InputWork, Vec<String>);
    fn entry<'m>(by_input: &'m mut BTreeMap<i64, Entry>, input: &Arc<Input>) -> &'m mut Entry {
        by_input.entry(input.id).or_insert_with(|| {
            (
                input.clone(),
                InputWork {
                    id: input.id,
                    source_root: input.source_root.clone(),
                    rel: input.rel.clone(),
                    abs: input.abs.clone(),
                    hash: input.hash.clone(),
                    cost: 0,
                    actions: 0,
                    outputs: Vec::new(),
                    meta: None,
                    units: Vec::new(),
                    qc: None,
                    keys: String::new(),
                },
                Vec::new(),
            )
        })
    }
    let mut by_input: BTreeMap<i64, Entry> = BTreeMap::new();
    for b in &plan.builds {
        let (_, w, keys) = entry(&mut by_input, &b.input);
        w.outputs.push(b.output.path());
        w.actions += 1;
        w.cost += PER_ACTION;
        keys.push(b.output.key.clone());
    }
    let mut cells: HashSet<(i64, (u32, u32))> = HashSet::new();
    for u in &plan.units {
        let (_, w, keys) = entry(&mut by_input, &u.input);
        w.units.push(UnitWork {
            cell: u.unit.cell,
            sink: u.unit.sink,
            previous: u.previous.clone(),
        });
        w.actions += 1;
        w.cost += PER_ACTION;
        if cells.insert((u.input.id, u.unit.cell)) {
            let n = u64::from(u.unit.read_size);
            w.cost += n * n * 3;
        }
        keys.push(u.unit.key.clone());
    }
    for q in &plan.qc {
        let decisions = state.decisions(q.input.id)?;
        let (_, w, keys) = entry(&mut by_input, &q.input);
        let mut d: Vec<(u32, u32, bool)> =
            decisions.into_iter().map(|((i, j), k)| (i, j, k)).collect();
        d.sort_unstable();
        w.qc = Some(d);
        w.actions += 1;
        w.cost += QC;
        keys.push(q.qc.key.clone());
    }
    let mut out = Vec::with_capacity(by_input.len());
    for (_, (input, mut w, keys)) in by_input {
        if !w.units.is_empty() || w.qc.is_some() {
            let meta = state.slide_meta(&input.hash)?.ok_or_else(|| {
                EngineError(format!(
                    "{}: its slide metadata is not in the state; plan again",
                    input.abs.display()
                ))
            })?;
            w.meta = Some(meta);
        }
        if !w.outputs.is_empty() {
            let size = std::fs::metadata(&input.abs).map_or(0, |m| m.len());
            w.cost += size.saturating_mul(DECODE_RATIO);
        }
        w.keys = keys_digest(keys.iter().map(String::as_str));
        out.push(w);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn work(id: i64, cost: u64) -> InputWork {
        InputWork {
            id,
            source_root: String::new(),
            rel: String::new(),
            abs: PathBuf::new(),
            hash: String::new(),
            cost,
            actions: 1,
            outputs: vec![],
            meta: None,
            units: vec![],
            qc: None,
            keys: String::new(),
        }
    }

    #[test]
    fn inputs_go_largest_first_to_the_least_loaded_shard() {
        let mut s = Sharder::new(3);
        let works: Vec<InputWork> = [5, 9, 1, 7, 3, 8, 2]
            .iter()
            .enumerate()
            .map(|(i, &c)| work(i as i64, c))
            .collect();
        let a = s.assign_all(&works);
        // 9→0, 8→1, 7→2, 5→2, 3→1, 2→0, 1→0: loads 12, 11, 12.
        let loads = s.loads();
        assert_eq!(loads.iter().sum::<u64>(), 35);
        assert_eq!(loads, [12, 11, 12]);
        assert_eq!(a[1], 0, "the largest goes to shard 0");
        // Loads carry over: the next collection tops up the lightest shard.
        let lightest = loads
            .iter()
            .enumerate()
            .min_by_key(|&(i, &l)| (l, i))
            .unwrap()
            .0 as u32;
        assert_eq!(s.assign_all(&[work(10, 4)]), [lightest]);
    }

    #[test]
    fn with_fewer_inputs_than_shards_only_the_first_shards_get_work() {
        let mut s = Sharder::new(8);
        let a = s.assign_all(&[work(1, 5), work(2, 5), work(3, 0)]);
        let mut used = a.clone();
        used.sort_unstable();
        assert_eq!(used, [0, 1, 2]);
    }
}
