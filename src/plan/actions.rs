//! What a plan asks the engine to do: build outputs, units and QC pictures,
//! remove files, update records; and what it could not plan (problems).

use std::sync::Arc;

use super::expand::{CollectionSpec, Input, PlannedOutput, PlannedQc, PlannedUnit};
use crate::store::Event;

/// Something that stops one input or one collection, reported in the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is about (a source file, a recipe, a root).
    pub input: String,
    pub error: String,
    /// For input problems: the input's id in the state, when it has one.
    pub input_id: Option<i64>,
    /// How many planned outputs this problem stops (counted as failed).
    pub outputs: usize,
}

/// One ROI output to (re)build.
#[derive(Clone, Debug)]
pub struct BuildAction {
    pub input: Arc<Input>,
    pub output: PlannedOutput,
    pub spec: Arc<CollectionSpec>,
    pub reasons: Vec<String>,
}

impl BuildAction {
    /// The hash of the pipeline that makes it.
    pub fn pipeline_hash(&self) -> &str {
        &self.spec.pipelines[self.output.pipeline].hash
    }
}

/// One WSI unit (cell × writing step) to (re)build.
#[derive(Clone, Debug)]
pub struct UnitAction {
    pub input: Arc<Input>,
    pub unit: PlannedUnit,
    pub spec: Arc<CollectionSpec>,
    pub reasons: Vec<String>,
    /// The tiles the unit recorded last time, as (path, x, y): those it does
    /// not write again are removed.
    pub previous: Vec<(String, u32, u32)>,
}

impl UnitAction {
    /// The hash of the pipeline from the grid to this writing step.
    pub fn pipeline_hash(&self) -> &str {
        &self.spec.pipelines[self.unit.pipeline].hash
    }

    /// The id of the writing step.
    pub fn sink_id(&self) -> &str {
        &self.spec.recipe.steps[self.unit.sink].id
    }
}

/// One QC picture to (re)draw.
#[derive(Clone, Debug)]
pub struct QcAction {
    pub input: Arc<Input>,
    pub qc: PlannedQc,
    pub spec: Arc<CollectionSpec>,
    pub reasons: Vec<String>,
}

impl QcAction {
    /// The hash of the decisions pipeline the picture draws.
    pub fn pipeline_hash(&self) -> &str {
        &self.spec.pipelines[self.qc.pipeline].hash
    }
}

/// Files to delete for one reason, then a record to apply once all are gone.
#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    /// `root:path` of the input the files came from, for messages.
    pub source: String,
    pub reason: String,
    /// Each file (relative to the output root) with the event recording
    /// its removal.
    pub files: Vec<(String, Event)>,
    /// Recorded when every file is gone (a unit's or an input's rows).
    pub then: Option<Event>,
}

/// Everything the detailed plan of one input says.
#[derive(Debug, Default)]
pub struct InputPlan {
    pub builds: Vec<BuildAction>,
    pub units: Vec<UnitAction>,
    pub qc: Option<QcAction>,
    pub removals: Vec<Removal>,
    /// Record updates that need no file work (touched outputs, recipe hash
    /// or class of outputs whose bytes stay).
    pub updates: Vec<Event>,
    pub up_to_date: u64,
    pub problem: Option<Problem>,
    /// No route takes the input (not an error).
    pub unrouted: bool,
}

impl InputPlan {
    /// Whether the engine has anything to do for this input.
    pub fn has_work(&self) -> bool {
        !self.builds.is_empty()
            || !self.units.is_empty()
            || self.qc.is_some()
            || !self.removals.is_empty()
    }
}
