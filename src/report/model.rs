//! What a report says, as data: gathered once ([`super::gather`]) and
//! rendered as HTML, Markdown, JSON (this structure, serialized) or the
//! terminal summary of `cpia status`. docs/cli.md documents the JSON fields.

use serde::Serialize;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool_version: String,
    /// Seconds since the epoch.
    pub generated_at: i64,
    pub workspace: String,
    /// The output folder (absolute).
    pub output: String,
    pub last_build: Option<Build>,
    pub summary: Summary,
    /// Images per published sheet (L = XL + L, M, S), built and published.
    pub sheets: Vec<SheetTotal>,
    /// Images per scale folder.
    pub scales: Vec<ScaleTotal>,
    /// Organ, disease, stain and field.
    pub breakdowns: Vec<Breakdown>,
    /// Every collection with a recipe, by name.
    pub collections: Vec<CollectionReport>,
    /// Published sub-datasets that no recipe of the workspace writes.
    pub unclaimed: Vec<PublishedOnly>,
    /// Collections with outputs in the state but no recipe.
    pub orphans: Vec<Orphan>,
    /// Recipes that could not be used (they are not in `collections`).
    pub problems: Vec<RecipeProblem>,
    /// The exports recorded in the state (docs/export.md).
    pub exports: Vec<ExportReport>,
}

/// One export as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    pub name: String,
    pub format: String,
    /// Declared in `cpia.toml` (false: made by `cpia export --format`).
    pub declared: bool,
    pub shards: u64,
    pub samples: u64,
    pub bytes: u64,
    /// Changed (folder, input) pairs and stale shards not written yet.
    pub pending: u64,
    /// When it was last brought up to date (s).
    pub updated_at: i64,
}

/// The latest build of the build log.
#[derive(Clone, Debug, Serialize)]
pub struct Build {
    pub id: i64,
    pub started: i64,
    /// None: killed, or stopped by an internal error.
    pub finished: Option<i64>,
    pub built: u64,
    pub up_to_date: u64,
    pub removed: u64,
    pub failed: u64,
}

/// The numbers at the top.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub collections: u64,
    pub roi_collections: u64,
    pub wsi_collections: u64,
    pub sources_available: u64,
    /// Not configured, missing or empty.
    pub sources_not_available: u64,
    /// There but not usable (not a folder, unreadable).
    pub sources_unusable: u64,
    /// Collections with at least one image.
    pub collections_built: u64,
    /// Images in the dataset (all scales; not QC pictures).
    pub images: u64,
    pub qc_pictures: u64,
    /// Inputs recorded (source files of ROI collections, slides).
    pub inputs: u64,
    /// Of those, complete under the current recipes.
    pub inputs_complete: u64,
    pub slides: u64,
    /// Inputs with a recorded failure.
    pub failed_inputs: u64,
    pub collections_with_failures: u64,
    /// Slides whose MPP did not come from the scanner's metadata (OpenSlide).
    pub mpp_fallback_slides: u64,
    /// Sum of the published table.
    pub published_images: u64,
}

/// One published sheet.
#[derive(Clone, Debug, Serialize)]
pub struct SheetTotal {
    /// `L`, `M` or `S`.
    pub sheet: String,
    /// The scale folders counted on it (`["XL", "L"]` for sheet L).
    pub scales: Vec<String>,
    pub built: u64,
    pub published: u64,
    /// built − published.
    pub difference: i64,
}

/// One scale folder.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleTotal {
    pub scale: String,
    pub images: u64,
    /// Sub-dataset folders with images.
    pub sub_datasets: u64,
}

/// Images by one metadata field.
#[derive(Clone, Debug, Serialize)]
pub struct Breakdown {
    /// `organ`, `disease`, `stain` or `field`.
    pub by: String,
    /// Largest first; a collection with several values counts in each.
    pub bars: Vec<Bar>,
}

/// One value of a breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct Bar {
    /// The value (`breast`), or `unknown` where recipes leave it out.
    pub label: String,
    pub collections: u64,
    pub built: u64,
    pub published: u64,
}

/// One collection.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionReport {
    pub name: String,
    /// `roi` or `wsi`.
    pub kind: String,
    pub recipe: String,
    pub organs: Vec<String>,
    pub diseases: Vec<String>,
    pub stain: Option<String>,
    /// `histo` or `cyto`.
    pub field: Option<String>,
    pub year: Option<i64>,
    pub licence: Option<String>,
    pub citation: Option<String>,
    pub url: Option<String>,
    pub source: Source,
    /// `complete`, `incomplete`, `failures`, `not built`, `not available`,
    /// `source missing` (built, but its root is gone) or `source unusable`.
    pub status: String,
    pub inputs: u64,
    /// Inputs complete under the current recipe.
    pub complete: u64,
    pub images: u64,
    pub qc_pictures: u64,
    /// Sum of the published counts of its sub-datasets (None: none published).
    pub published: Option<u64>,
    pub sub_datasets: Vec<SubDatasetReport>,
    pub failures: Failures,
    /// Slides per MPP origin (WSI).
    pub mpp: Vec<OriginCount>,
    /// The first slides whose MPP is not from OpenSlide.
    pub mpp_fallbacks: Vec<SlideMpp>,
    /// WSI: a sample of slides with their QC pictures.
    pub slides: Option<Gallery>,
}

/// A collection's source root.
#[derive(Clone, Debug, Serialize)]
pub struct Source {
    /// The root's name (`[inputs] source`).
    pub root: String,
    pub available: bool,
    /// Why it is not available or not usable.
    pub reason: Option<String>,
}

/// One sub-dataset of a collection: built beside published.
#[derive(Clone, Debug, Serialize)]
pub struct SubDatasetReport {
    /// The folder name; a pattern (`{dir}`) when `exact` is false.
    pub name: String,
    /// The scale folder (`XL`, `L`, `M`, `S`).
    pub scale: String,
    /// The published sheet that scale belongs on.
    pub sheet: String,
    /// False for a route whose sub-dataset depends on the inputs.
    pub exact: bool,
    pub built: u64,
    pub published: Option<u64>,
    /// The sheet the paper lists it on, when it differs from `sheet`.
    pub published_sheet: Option<String>,
    /// built − published.
    pub difference: Option<i64>,
    /// A sample of its images.
    pub samples: Vec<Thumb>,
}

/// Recorded failures of a collection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Failures {
    /// Inputs with a failure.
    pub inputs: u64,
    /// Failure records (a WSI slide may have one per cell).
    pub records: u64,
    /// The first of them.
    pub shown: Vec<FailureItem>,
}

/// One recorded failure.
#[derive(Clone, Debug, Serialize)]
pub struct FailureItem {
    /// The source file, relative to its root.
    pub input: String,
    /// `""` (the input), `"i,j"` (a WSI cell) or `"qc"`.
    pub unit: String,
    pub error: String,
}

/// Slides whose MPP came from one origin.
#[derive(Clone, Debug, Serialize)]
pub struct OriginCount {
    pub origin: String,
    pub slides: u64,
}

/// A slide and its MPP.
#[derive(Clone, Debug, Serialize)]
pub struct SlideMpp {
    pub slide: String,
    pub origin: String,
    pub mpp: f64,
}

/// A bounded sample of a WSI collection's slides.
#[derive(Clone, Debug, Serialize)]
pub struct Gallery {
    /// Slides recorded.
    pub total: u64,
    /// Their QC pictures' folder, relative to the output folder.
    pub folder: String,
    pub shown: Vec<SlideView>,
}

/// One slide of a gallery.
#[derive(Clone, Debug, Serialize)]
pub struct SlideView {
    pub slide: String,
    pub cells: u64,
    pub kept: u64,
    pub tiles: u64,
    pub qc: Option<Thumb>,
}

/// An image of the dataset shown small.
#[derive(Clone, Debug, Serialize)]
pub struct Thumb {
    /// Relative to the output folder.
    pub path: String,
    /// A `data:image/jpeg;base64,…` thumbnail (HTML only; filled by
    /// [`super::thumbs::embed`]).
    #[serde(skip)]
    pub data: Option<String>,
}

/// A published sub-dataset no recipe claims.
#[derive(Clone, Debug, Serialize)]
pub struct PublishedOnly {
    pub sheet: String,
    pub sub_dataset: String,
    pub original_name: String,
    pub images: u64,
}

/// A collection with outputs but no recipe.
#[derive(Clone, Debug, Serialize)]
pub struct Orphan {
    pub collection: String,
    pub images: u64,
}

/// A recipe that could not be used.
#[derive(Clone, Debug, Serialize)]
pub struct RecipeProblem {
    pub recipe: String,
    pub error: String,
}
