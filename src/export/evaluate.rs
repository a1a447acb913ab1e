//! Re-evaluating an export's samples, one (output folder, input) pair at a
//! time: what the pair's samples are now (key, shard, digest), against what
//! the export recorded for it — the shards where they differ are the ones an
//! update rewrites, and `plan --explain` says why.
//!
//! Which pairs: every pair of the selected folders when the export is new,
//! its definition or its collections' metadata changed, or it is resharded
//! ([`Scope::Whole`]); otherwise only the pairs the triggers marked since it
//! last looked ([`Scope::Changed`]), and those of sampling categories whose
//! size moved. Pairs are read in pages, so memory is one page of pairs and
//! the samples of one pair.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use super::definition::{Definition, Format};
use super::sample::SampleFacts;
use super::selection::Selection;
use super::webdataset::Member;
use super::{key, record, Error};
use crate::provenance::facts;
use crate::store::audit::{OutputFacts, OutputFilter};
use crate::store::exports::{Item, PairUpdate, SampleRow};
use crate::store::State;

/// Pairs per page (and per transaction).
pub const PAGE: usize = 256;

/// Which pairs an update looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every pair of the selection, and every pair the export holds.
    Whole,
    /// The pairs whose records changed.
    Changed,
}

/// A sample as an export holds it: its key, record (JSON bytes) and digest.
pub type Sample = (String, Vec<u8>, [u8; 16]);

/// What is done with each page of pairs.
pub type PageFn<'a> = dyn FnMut(&mut State, &[(i64, i64)]) -> Result<(), Error> + 'a;

/// Category sizes of a sampling rule: (category, scale) → samples.
pub type Sizes = BTreeMap<(String, String), u64>;

/// What a pair's samples are, given the export's definition.
pub struct Evaluator<'a> {
    pub def: &'a Definition,
    pub sel: &'a Selection,
    pub shards: u64,
    pub sizes: &'a Sizes,
    pub records: record::Context,
    /// Selected folders: id → path.
    dirs: HashMap<i64, String>,
    /// Samples evaluated by this run, as a shard writes them, while they
    /// fit [`Evaluator::keep_members`]'s bound: writing a shard then needs
    /// neither the state's facts nor the record again.
    kept: HashMap<Item, Member>,
    /// Bytes `kept` may still take.
    keep_room: usize,
}

/// Why a shard changes, for `plan --explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub shard: u64,
    /// `added`, `changed` or `removed`.
    pub what: &'static str,
    /// The sample's output path, or its folder for a removed one.
    pub path: String,
}

/// A pair re-evaluated: its new rows and what changed.
pub struct Evaluated {
    pub update: PairUpdate,
    pub changes: Vec<Change>,
}

impl<'a> Evaluator<'a> {
    pub fn new(def: &'a Definition, sel: &'a Selection, shards: u64, sizes: &'a Sizes) -> Self {
        Evaluator {
            def,
            sel,
            shards,
            sizes,
            records: record::Context::new(sel.meta.clone()),
            dirs: sel.dirs.iter().map(|d| (d.id, d.path.clone())).collect(),
            kept: HashMap::new(),
            keep_room: 0,
        }
    }

    /// Keeps the samples evaluated from now on as shard members, up to
    /// `bytes` of keys, paths and records ([`Evaluator::take_member`]).
    pub fn keep_members(&mut self, bytes: usize) {
        self.keep_room = bytes;
    }

    /// The member of `item` kept when it was evaluated, if it was.
    pub fn take_member(&mut self, item: &Item) -> Option<Member> {
        self.kept.remove(item)
    }

    /// The members kept (another evaluator's, for [`Evaluator::absorb`]).
    pub fn into_kept(self) -> HashMap<Item, Member> {
        self.kept
    }

    /// Takes over members another evaluator of the same export kept.
    pub fn absorb(&mut self, kept: HashMap<Item, Member>) {
        self.kept.extend(kept);
    }

    fn keep(&mut self, item: Item, member: impl FnOnce() -> Member, size: usize) {
        if size <= self.keep_room {
            self.keep_room -= size;
            self.kept.insert(item, member());
        }
    }

    /// The key, record and digest of output `f` as a sample, or `None`
    /// when it is not one (another collection, left out by the rule).
    pub fn sample(&mut self, state: &State, f: &OutputFacts) -> Result<Option<Sample>, Error> {
        if !self.sel.takes(&f.collection) || f.sink == "qc" {
            return Ok(None);
        }
        let k = key::key(&f.dir, &f.name);
        if let Some(rule) = &self.def.sample {
            let (scale, sub) = facts::scale_and_sub(&f.dir);
            let organ = self
                .sel
                .meta
                .get(&f.collection)
                .and_then(|m| m.organs.first().cloned());
            let cat = rule.category(&SampleFacts {
                scale,
                sub_dataset: sub,
                class: f.class.as_deref(),
                collection: &f.collection,
                organ: organ.as_deref(),
            });
            let size = self
                .sizes
                .get(&(cat, scale.to_string()))
                .copied()
                .unwrap_or(0);
            if !rule.admits(&k, scale, size) {
                return Ok(None);
            }
        }
        let rec = record::bytes(&self.records.record(state, f, &k)?);
        let d = record::digest(&k, &f.file.content_hash, &rec);
        Ok(Some((k, rec, d)))
    }

    /// The pair's samples now, and the shards where they differ from `old`.
    pub fn evaluate(
        &mut self,
        state: &State,
        out_dir: i64,
        input: i64,
        old: &[SampleRow],
    ) -> Result<Evaluated, Error> {
        let mut rows = Vec::new();
        let mut paths: HashMap<Item, String> = HashMap::new();
        if let Some(dir) = self.dirs.get(&out_dir).cloned() {
            let filter = OutputFilter {
                dirs: vec![dir],
                inputs: vec![input],
                no_qc: true,
                ..OutputFilter::default()
            };
            let mut err = None;
            state.for_each_output(&filter, &facts::tile_name, &mut |f| {
                match self.row(state, &f) {
                    Ok(Some(row)) => {
                        paths.insert(row.item, f.path());
                        rows.push(row);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        err = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        let changes = diff(old, &rows, &paths, self.dirs.get(&out_dir));
        Ok(Evaluated {
            update: PairUpdate {
                out_dir,
                input,
                samples: rows,
            },
            changes,
        })
    }

    fn row(&mut self, state: &State, f: &OutputFacts) -> Result<Option<SampleRow>, Error> {
        let item = match &f.tile {
            Some(t) if Item::representable(t.unit, t.x, t.y) => Item::Tile {
                unit: t.unit,
                x: t.x,
                y: t.y,
            },
            Some(t) => {
                return Err(Error::Other(format!(
                    "{}: tile position {},{} is beyond what an export can locate (65535)",
                    f.path(),
                    t.x,
                    t.y
                )))
            }
            None => Item::Output(f.id),
        };
        let Some((k, rec, digest)) = self.sample(state, f)? else {
            return Ok(None);
        };
        let path = match self.def.format {
            Format::ImageFolder => Some(super::imagefolder::path(&self.def.name, f, &k)),
            _ => None,
        };
        let shard = if self.def.format.sharded() {
            key::shard(&k, self.shards)
        } else {
            0
        };
        let size = k.len() + rec.len() + f.dir.len() + f.name.len() + 3 * 64;
        self.keep(item, || Member::of(f, k, rec), size);
        Ok(Some(SampleRow {
            out_dir: f.out_dir,
            input: f.input,
            item,
            shard,
            digest,
            path,
        }))
    }
}

/// The changes between a pair's recorded samples and its samples now.
fn diff(
    old: &[SampleRow],
    new: &[SampleRow],
    paths: &HashMap<Item, String>,
    dir: Option<&String>,
) -> Vec<Change> {
    let before: HashMap<Item, &SampleRow> = old.iter().map(|r| (r.item, r)).collect();
    let after: HashMap<Item, &SampleRow> = new.iter().map(|r| (r.item, r)).collect();
    let mut out = Vec::new();
    for r in new {
        let path = paths.get(&r.item).cloned().unwrap_or_default();
        match before.get(&r.item) {
            None => out.push(Change {
                shard: r.shard,
                what: "added",
                path,
            }),
            Some(o) if o.digest != r.digest || o.shard != r.shard || o.path != r.path => {
                if o.shard != r.shard {
                    out.push(Change {
                        shard: o.shard,
                        what: "removed",
                        path: path.clone(),
                    });
                }
                out.push(Change {
                    shard: r.shard,
                    what: "changed",
                    path,
                });
            }
            Some(_) => {}
        }
    }
    for o in old.iter().filter(|o| !after.contains_key(&o.item)) {
        out.push(Change {
            shard: o.shard,
            what: "removed",
            path: o.path.clone().unwrap_or_else(|| {
                dir.cloned()
                    .unwrap_or_else(|| "a folder no longer selected".into())
            }),
        });
    }
    out
}

/// Calls `f` with every page of pairs in `scope`.
pub fn for_each_page(
    state: &mut State,
    export: i64,
    scope: Scope,
    sel: &Selection,
    f: &mut PageFn<'_>,
) -> Result<(), Error> {
    match scope {
        Scope::Changed => {
            // Each page's marks are cleared by the caller before the next
            // read, so the first page is always the next one.
            let mut after = (i64::MIN, i64::MIN);
            loop {
                let page = state.export_dirty_pairs(export, after, PAGE)?;
                let Some(&last) = page.last() else { break };
                f(state, &page)?;
                after = last;
            }
        }
        Scope::Whole => {
            let recorded: BTreeSet<(i64, i64)> = state.export_pairs(export)?.into_iter().collect();
            // Pages run across folders: a folder often holds one slide's
            // tiles, and a page of one pair leaves nothing to share
            // between threads.
            let mut page = Vec::with_capacity(PAGE);
            for d in &sel.dirs {
                let inputs = state.inputs_in_dir(d.id)?;
                for pair in inputs.into_iter().map(|i| (d.id, i)) {
                    if recorded.contains(&pair) {
                        continue;
                    }
                    page.push(pair);
                    if page.len() == PAGE {
                        f(state, &page)?;
                        page.clear();
                    }
                }
            }
            if !page.is_empty() {
                f(state, &page)?;
            }
            let recorded: Vec<(i64, i64)> = recorded.into_iter().collect();
            for page in recorded.chunks(PAGE) {
                f(state, page)?;
            }
        }
    }
    Ok(())
}
