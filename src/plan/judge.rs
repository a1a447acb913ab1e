//! The detailed plan of one input: what it should produce now (from
//! [`super::expand`]) against what it recorded, output by output and unit by
//! unit. Only inputs the early cutoff could not skip come here.
//!
//! | recorded | result (the `--explain` reason) |
//! |---|---|
//! | nothing at the path / for the cell | build: `new output (never built)` / `new cell (never built)` |
//! | a unit whose last build stopped part-way | build: `its last build did not finish` |
//! | a key, recomputed from the recorded ingredients, that differs | build, explained by [`super::explain::key_change`] |
//! | the file damaged (found by the output-folder check, [`super::outdirs`]) | build: `output missing on disk`, `output replaced on disk`, … |
//! | otherwise | up to date; recipe hash, class or MPP origin updated in the record if they moved |
//!
//! Recorded outputs and units the input no longer produces are removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::actions::{BuildAction, InputPlan, Problem, QcAction, Removal, UnitAction};
use super::expand::{tile_name, CollectionSpec, Input, PlannedOutput, PlannedQc, PlannedUnit};
use super::key::{output_key, qc_key, unit_key, Pipeline};
use super::outdirs::Damage;
use crate::store::{Event, FailureRecord, Maker, OutputRow, Owner, ReadFacts, StateError, UnitRow};

/// What the judge needs to know beyond the input itself.
pub struct Context<'a> {
    pub spec: &'a Arc<CollectionSpec>,
    /// Damage found in output folders, for this input's files.
    pub damage: &'a [Damage],
    /// The input's recorded failures.
    pub failures: &'a [FailureRecord],
    /// The maker the build would record now.
    pub maker: &'a Maker,
    /// Old pipeline descriptions by hash, for explanations.
    pub old_pipeline: &'a dyn Fn(&str) -> Option<Pipeline>,
}

impl<'a> Context<'a> {
    /// This context for one input: its damage and its recorded failures.
    pub fn for_input<'b>(&self, damage: &'b [Damage], failures: &'b [FailureRecord]) -> Context<'b>
    where
        'a: 'b,
    {
        Context {
            damage,
            failures,
            ..*self
        }
    }

    fn damage_of(&self, owner: Owner) -> Option<&'static str> {
        self.damage
            .iter()
            .find(|d| d.owner == owner)
            .map(|d| d.reason)
    }

    fn failure(&self, unit: &str) -> Option<&FailureRecord> {
        self.failures
            .iter()
            .find(|f| f.unit == unit)
            .or_else(|| self.failures.iter().find(|f| f.unit.is_empty()))
    }

    fn explain(
        &self,
        old_source_hash: &str,
        old_pipeline_hash: &str,
        input: &Input,
        new_pipeline: &Pipeline,
    ) -> Vec<String> {
        let old = (self.old_pipeline)(old_pipeline_hash);
        super::explain::key_change(
            old_source_hash,
            old_pipeline_hash,
            &input.hash,
            &input.rel,
            &new_pipeline.hash,
            old.as_ref(),
            Some(new_pipeline),
        )
    }
}

/// Paths other inputs of the plan claim or give up, for collisions and moves.
pub trait Claims {
    /// Another input of the plan also produces `path` (both are errors).
    fn contested(&self, path: &str, input: i64) -> Option<Vec<String>>;
    /// Another input of the plan produces `path` now (a recorded output of
    /// this input there is taken over, not removed).
    fn taken_by_other(&self, path: &str, input: i64) -> bool;
    /// Why `path`, recorded for another input, cannot be written for this
    /// one (that input still produces it), naming it.
    fn owned_elsewhere(&self, path: &str, input: i64) -> Option<String>;
}

/// The detailed plan of an ROI input.
pub fn roi(
    cx: &Context<'_>,
    input: &Arc<Input>,
    planned: Result<Option<Vec<PlannedOutput>>, String>,
    recorded: Vec<OutputRow>,
    claims: &dyn Claims,
) -> InputPlan {
    let mut plan = InputPlan::default();
    let planned = match planned {
        Ok(Some(p)) => p,
        Ok(None) => {
            plan.unrouted = true;
            Vec::new()
        }
        Err(e) => {
            // Cannot be planned: reported, and its outputs are kept.
            plan.problem = Some(Problem {
                input: input.abs.display().to_string(),
                error: e,
                input_id: Some(input.id),
                outputs: cx.spec.recipe.sinks.len(),
            });
            return plan;
        }
    };
    let by_path: HashMap<String, &OutputRow> = recorded.iter().map(|r| (r.path(), r)).collect();
    let mut produced: HashSet<String> = HashSet::new();
    let mut blocked = 0;
    for p in planned {
        let path = p.path();
        produced.insert(path.clone());
        if let Some(others) = claims.contested(&path, input.id) {
            blocked += 1;
            plan.problem = Some(collision(cx, input, &path, &others));
            continue;
        }
        let rec = by_path.get(&path).copied();
        if rec.is_none() {
            if let Some(owner) = claims.owned_elsewhere(&path, input.id) {
                blocked += 1;
                plan.problem = Some(collision(cx, input, &path, &[owner]));
                continue;
            }
        }
        let pipeline = &cx.spec.pipelines[p.pipeline];
        let reasons = match rec {
            None => vec!["new output (never built)".to_string()],
            Some(r) if output_key(&r.pipeline_hash, &r.source_hash) != p.key => {
                cx.explain(&r.source_hash, &r.pipeline_hash, input, pipeline)
            }
            Some(r) => match cx.damage_of(Owner::Output(r.id)) {
                Some(why) => vec![why.to_string()],
                None => {
                    plan.up_to_date += 1;
                    let maker = cx.maker.keeping_libraries_of(&r.maker);
                    if r.class != p.class || r.maker != maker {
                        plan.updates.push(Event::OutputMeta {
                            id: r.id,
                            class: p.class.clone(),
                            maker,
                        });
                    }
                    continue;
                }
            },
        };
        let mut reasons = reasons;
        if let Some(f) = cx.failure("") {
            reasons.push(format!("previous attempt failed: {}", first_line(&f.error)));
        }
        plan.builds.push(BuildAction {
            input: input.clone(),
            output: p,
            spec: cx.spec.clone(),
            reasons,
        });
    }
    if let Some(p) = &mut plan.problem {
        p.outputs = blocked;
    }
    // What it recorded and produces no more.
    for r in &recorded {
        let path = r.path();
        if produced.contains(&path) || claims.taken_by_other(&path, input.id) {
            continue;
        }
        plan.removals.push(Removal {
            source: source(input),
            reason: "no rule produces it any more (routing or naming changed)".into(),
            files: vec![(path, Event::OutputRemoved { id: r.id })],
            then: None,
        });
    }
    plan
}

/// The recorded tiles `(x, y)` of a unit (read from the state on demand).
pub type PreviousTiles<'a> = dyn FnMut(&UnitRow) -> Result<Vec<(u32, u32)>, StateError> + 'a;

/// The detailed plan of a slide.
pub fn wsi(
    cx: &Context<'_>,
    input: &Arc<Input>,
    planned: Result<(Vec<PlannedUnit>, PlannedQc), String>,
    recorded_units: Vec<UnitRow>,
    recorded_outputs: Vec<OutputRow>,
    previous_tiles: &mut PreviousTiles<'_>,
) -> Result<InputPlan, StateError> {
    let mut plan = InputPlan::default();
    let (units, qc) = match planned {
        Ok(p) => p,
        Err(e) => {
            plan.problem = Some(Problem {
                input: input.abs.display().to_string(),
                error: e,
                input_id: Some(input.id),
                outputs: 1,
            });
            return Ok(plan);
        }
    };
    let judged = judge_units(cx, input, units, &recorded_units, previous_tiles, &mut plan)?;
    remove_unplanned_units(
        input,
        &recorded_units,
        &judged.cells,
        previous_tiles,
        &mut plan,
    )?;
    judge_qc(
        cx,
        input,
        qc,
        &recorded_outputs,
        judged.undecided,
        &mut plan,
    );
    Ok(plan)
}

/// What judging a slide's units found, for the rest of its plan.
struct JudgedUnits {
    /// Every planned (writing step, cell).
    cells: HashSet<(String, (u32, u32))>,
    /// Whether a planned cell has never been built (so it has no decision).
    undecided: bool,
}

/// Each planned unit against its record: up to date (its record's metadata
/// updated if it moved) or a unit action with its reasons and the tiles it
/// wrote before.
fn judge_units(
    cx: &Context<'_>,
    input: &Arc<Input>,
    units: Vec<PlannedUnit>,
    recorded_units: &[UnitRow],
    previous_tiles: &mut PreviousTiles<'_>,
    plan: &mut InputPlan,
) -> Result<JudgedUnits, StateError> {
    let slide = crate::slide::slide_name(&input.rel);
    let by_cell: HashMap<(&str, (u32, u32)), &UnitRow> = recorded_units
        .iter()
        .map(|u| ((u.sink.as_str(), u.cell), u))
        .collect();
    let mut judged = JudgedUnits {
        cells: HashSet::new(),
        undecided: false,
    };
    for u in units {
        let sink_id = cx.spec.recipe.steps[u.sink].id.clone();
        judged.cells.insert((sink_id.clone(), u.cell));
        let rec = by_cell.get(&(sink_id.as_str(), u.cell)).copied();
        judged.undecided |= rec.is_none();
        let Some(mut reasons) = unit_reasons(cx, input, &u, rec, plan) else {
            continue;
        };
        if let Some(f) = cx.failure(&u.cell_id()) {
            reasons.push(format!("previous attempt failed: {}", first_line(&f.error)));
        }
        let previous = match rec {
            Some(r) => previous_tiles(r)?
                .into_iter()
                .map(|(x, y)| {
                    (
                        format!("{}/{}", r.dir, tile_name(slide, r.size, x, y)),
                        x,
                        y,
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        plan.units.push(UnitAction {
            input: input.clone(),
            unit: u,
            spec: cx.spec.clone(),
            reasons,
            previous,
        });
    }
    Ok(judged)
}

/// Why a planned unit must be built, or `None` when its record is up to
/// date (counted, and its maker or read facts updated if they moved).
fn unit_reasons(
    cx: &Context<'_>,
    input: &Input,
    u: &PlannedUnit,
    rec: Option<&UnitRow>,
    plan: &mut InputPlan,
) -> Option<Vec<String>> {
    let pipeline = &cx.spec.pipelines[u.pipeline];
    match rec {
        None => Some(vec!["new cell (never built)".to_string()]),
        Some(r) if !r.complete => Some(vec!["its last build did not finish".to_string()]),
        Some(r) if recorded_unit_key(r) != u.key => {
            let mut reasons = cx.explain(&r.read.source_hash, &r.pipeline_hash, input, pipeline);
            if r.read.mpp.to_bits() != u.mpp.to_bits() {
                reasons.retain(|x| x != "key format changed");
                reasons.push(format!("MPP changed ({} -> {})", r.read.mpp, u.mpp));
            }
            Some(reasons)
        }
        Some(r) => {
            let damaged = cx
                .damage
                .iter()
                .find(|d| matches!(d.owner, Owner::Tile { unit, .. } if unit == r.id));
            if let Some(d) = damaged {
                return Some(vec![d.reason.to_string()]);
            }
            plan.up_to_date += r.outputs;
            let read = read_facts(input, u, &r.read.reader);
            let maker = cx.maker.keeping_libraries_of(&r.maker);
            if r.maker != maker || r.read != read {
                plan.updates.push(Event::UnitMeta {
                    id: r.id,
                    maker,
                    read,
                });
            }
            None
        }
    }
}

/// Units the slide recorded and plans no more (grid, MPP or steps
/// changed): their tiles removed, then their rows.
fn remove_unplanned_units(
    input: &Input,
    recorded_units: &[UnitRow],
    planned_cells: &HashSet<(String, (u32, u32))>,
    previous_tiles: &mut PreviousTiles<'_>,
    plan: &mut InputPlan,
) -> Result<(), StateError> {
    let slide = crate::slide::slide_name(&input.rel);
    for r in recorded_units {
        if planned_cells.contains(&(r.sink.clone(), r.cell)) {
            continue;
        }
        let files = previous_tiles(r)?
            .into_iter()
            .map(|(x, y)| {
                (
                    format!("{}/{}", r.dir, tile_name(slide, r.size, x, y)),
                    Event::TileRemoved { unit: r.id, x, y },
                )
            })
            .collect();
        plan.removals.push(Removal {
            source: source(input),
            reason:
                "its grid cell or writing step is no longer planned (grid, MPP or steps changed)"
                    .into(),
            files,
            then: Some(Event::UnitRemoved { id: r.id }),
        });
    }
    Ok(())
}

/// The QC picture: judged like an output, and redrawn when cells of the
/// slide that had no decision are built now (it showed them as unknown).
/// Any other output the slide recorded is produced by no rule any more.
fn judge_qc(
    cx: &Context<'_>,
    input: &Arc<Input>,
    qc: PlannedQc,
    recorded_outputs: &[OutputRow],
    undecided_cells: bool,
    plan: &mut InputPlan,
) {
    let qc_path = qc.path();
    let rec = recorded_outputs.iter().find(|r| r.path() == qc_path);
    let reasons = match rec {
        None => vec!["new output (never built)".to_string()],
        Some(r) if recorded_qc_key(r) != Some(qc.key.clone()) => {
            vec!["slide, tissue test or grid changed".to_string()]
        }
        Some(r) => match cx.damage_of(Owner::Output(r.id)) {
            Some(why) => vec![why.to_string()],
            None if undecided_cells => {
                vec!["cells of the slide without a decision are being built".to_string()]
            }
            None => {
                plan.up_to_date += 1;
                let maker = cx.maker.keeping_libraries_of(&r.maker);
                if r.maker != maker {
                    plan.updates.push(Event::OutputMeta {
                        id: r.id,
                        class: None,
                        maker,
                    });
                }
                Vec::new()
            }
        },
    };
    if !reasons.is_empty() {
        plan.qc = Some(QcAction {
            input: input.clone(),
            qc,
            spec: cx.spec.clone(),
            reasons,
        });
    }
    for r in recorded_outputs {
        if r.path() != qc_path {
            plan.removals.push(Removal {
                source: source(input),
                reason: "no rule produces it any more (routing or naming changed)".into(),
                files: vec![(r.path(), Event::OutputRemoved { id: r.id })],
                then: None,
            });
        }
    }
}

/// The key a unit was built under, from its recorded ingredients.
pub fn recorded_unit_key(r: &UnitRow) -> String {
    unit_key(
        &r.pipeline_hash,
        &r.read.source_hash,
        r.cell,
        r.read.read_size,
        r.read.mpp,
    )
}

/// The key a named output was built under, from its recorded ingredients:
/// a QC picture's from its slide read, an ROI output's from its source.
pub fn recorded_output_key(r: &OutputRow) -> String {
    recorded_qc_key(r).unwrap_or_else(|| output_key(&r.pipeline_hash, &r.source_hash))
}

fn recorded_qc_key(r: &OutputRow) -> Option<String> {
    r.read
        .as_ref()
        .map(|rd| qc_key(&r.pipeline_hash, &rd.source_hash, rd.read_size, rd.mpp))
}

/// How a unit reads its slide, as the build would record it (the reader is
/// the one that read it last; it changes only with a rebuild).
fn read_facts(input: &Input, u: &PlannedUnit, reader: &str) -> ReadFacts {
    ReadFacts {
        source_hash: input.hash.clone(),
        read_size: u.read_size,
        mpp: u.mpp,
        mpp_origin: u.mpp_origin.to_string(),
        reader: reader.to_string(),
    }
}

fn collision(cx: &Context<'_>, input: &Input, path: &str, others: &[String]) -> Problem {
    let recipe = cx
        .spec
        .recipe
        .path
        .file_name()
        .map_or_else(String::new, |f| {
            format!(", recipe recipes/{}", f.to_string_lossy())
        });
    Problem {
        input: input.abs.display().to_string(),
        error: format!(
            "output {path} would be written by {} inputs: {} (collection {}{recipe}) and {}; rename one, or change the recipe's name template",
            others.len() + 1,
            input.abs.display(),
            input.collection,
            others.join(" and ")
        ),
        input_id: Some(input.id),
        outputs: 1,
    }
}

/// `root:path`, how messages name an input.
pub fn source(input: &Input) -> String {
    format!("{}:{}", input.source_root, input.rel)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
