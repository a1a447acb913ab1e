//! The rows of the state database, as plain structs.

/// What the stat index remembers of a source file, so that an unchanged file
/// is never read again: if size, mtime and inode match, `hash` is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    /// blake3 of the content, hex.
    pub hash: String,
}

/// One written output file and everything it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// Relative to the output root, `/`-separated, e.g. `M/BreaKHis_100x/a.jpg`.
    pub path: String,
    pub collection: String,
    /// The cache key the file was built for (hex); see `plan::key`.
    pub key: String,
    /// blake3 of the bytes written (hex), for `verify` and modification checks.
    pub content_hash: String,
    pub size: u64,
    /// mtime of the written file, to notice edits without re-reading it.
    pub mtime_ns: i64,
    /// Source root name and path relative to it: portable across machines.
    pub source_root: String,
    pub source_rel: String,
    pub source_hash: String,
    /// Hash of the pipeline description stored in the `pipelines` table.
    pub pipeline_hash: String,
    pub recipe_hash: String,
    pub tool_version: String,
    pub sub_dataset: String,
    pub scale: String,
    pub class: Option<String>,
    /// Seconds since the Unix epoch.
    pub built_at: i64,
    /// For WSI outputs: the grid cell (`"i,j"`) and the writing step's id,
    /// which together name the unit the output belongs to; empty for ROI.
    pub unit: String,
    pub sink: String,
}

/// One WSI unit of work (a grid cell × a writing step) as last built: its
/// key, and what it produced. A cell whose tiles were all rejected produced
/// zero outputs, and that is remembered too, so it is not re-read.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitRecord {
    pub collection: String,
    pub source_root: String,
    pub source_rel: String,
    pub source_hash: String,
    /// `"i,j"`, or `"qc"` for the slide's QC picture.
    pub unit: String,
    pub sink: String,
    pub key: String,
    pub pipeline_hash: String,
    pub outputs: u64,
    /// Whether the cell passed the tissue test, when a tissue step ran.
    pub kept: Option<bool>,
    pub mpp: f64,
    pub mpp_origin: String,
    pub reader: String,
    pub recipe_hash: String,
    pub tool_version: String,
    pub built_at: i64,
}

/// An input that failed in the last build that tried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    pub collection: String,
    pub source_root: String,
    pub source_rel: String,
    pub source_hash: Option<String>,
    pub error: String,
    pub at: i64,
}
