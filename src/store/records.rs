//! The rows of the state database, as plain structs. Hashes are hex strings
//! here (blobs in the database).

/// What identifies a file's bytes without reading them: if all five are
/// unchanged, the recorded content hash is trusted. The ctime is the one a
/// user cannot set (`touch -d`, `cp -p`, `rsync -t` and archive tools set
/// the mtime; every write and every such reset moves the ctime to now).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// [`UNKNOWN_CTIME`] in a record that must not vouch for the file (a
    /// state from before ctimes were recorded, or a file still changing
    /// when it was hashed): it equals no real stat, so the file is hashed.
    pub ctime_ns: i64,
}

/// The ctime of a stat index entry that vouches for nothing (stored as
/// NULL).
pub const UNKNOWN_CTIME: i64 = i64::MIN;

/// A source file as the stat index remembers it, with the collection's
/// input record for it, if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFile {
    pub id: i64,
    /// File name inside its source folder.
    pub name: String,
    pub stat: FileStat,
    /// blake3 of the content, hex.
    pub hash: String,
    pub input: Option<RecordedInput>,
}

/// A (collection, source file) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedInput {
    pub id: i64,
    /// The plan fingerprint under which every output of this input was last
    /// built completely, or `None` (never, or something failed since).
    pub fp: Option<i64>,
    /// How many outputs (files) the input had when it was last complete.
    pub outputs: u64,
}

/// What a written file was when it was placed: enough to notice later that
/// it was replaced (inode), touched (mtime) or altered (size, content).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WrittenFile {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// blake3 of the bytes written, hex.
    pub content_hash: String,
}

/// How a slide was read for a unit (or QC picture): shared by all units of a
/// slide version, stored once (`reads`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReadFacts {
    pub source_hash: String,
    pub read_size: u32,
    pub mpp: f64,
    /// `openslide`, `tiff-resolution`, `override` or `default`.
    pub mpp_origin: String,
    /// What read the pixels: `openslide` or `direct`.
    pub reader: String,
}

/// Who built something: the recipe version, the tool, and the versions of
/// the libraries that made its pixels (`provenance`, `libraries`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Maker {
    pub recipe_hash: String,
    pub tool_version: String,
    /// `name version` pairs, `, `-separated (`plan::libraries`); empty when
    /// not known (records from before cpia recorded them).
    pub libraries: String,
}

impl Maker {
    /// This maker, with the libraries of `made`: an update of a record whose
    /// pixels are not rebuilt (a metadata edit) keeps the libraries that
    /// made them.
    pub fn keeping_libraries_of(&self, made: &Maker) -> Maker {
        Maker {
            libraries: made.libraries.clone(),
            ..self.clone()
        }
    }
}

/// A named output file (an ROI output or a slide's QC picture) to record.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputRecord {
    pub input: i64,
    /// Folder relative to the output root (`M/BreaKHis_100x`) and file name.
    pub dir: String,
    pub name: String,
    /// Id of the recipe step that wrote it (`"qc"` for a QC picture).
    pub sink: String,
    pub pipeline_hash: String,
    pub source_hash: String,
    pub class: Option<String>,
    pub maker: Maker,
    /// QC pictures: the slide read whose decisions they draw (key ingredients).
    pub read: Option<ReadFacts>,
    pub file: WrittenFile,
    pub built_at: i64,
    pub build: i64,
}

/// A recorded named output, as planning and provenance read it back.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputRow {
    pub id: i64,
    pub input: i64,
    pub dir: String,
    pub name: String,
    pub sink: String,
    pub pipeline_hash: String,
    pub source_hash: String,
    pub class: Option<String>,
    pub maker: Maker,
    pub read: Option<ReadFacts>,
    pub file: WrittenFile,
    pub built_at: i64,
    pub build: i64,
}

impl OutputRow {
    /// The path relative to the output root.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }
}

/// One WSI tile of a unit: its position on the standardized grid in units
/// of its own size (the `x`, `y` of its name) and the file written.
#[derive(Clone, Debug, PartialEq)]
pub struct TileRecord {
    pub x: u32,
    pub y: u32,
    pub file: WrittenFile,
}

/// A WSI unit (grid cell × writing step) as built, to record. Its tiles are
/// upserted, `removed_tiles` deleted; the unit's tile count follows.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitRecord {
    pub input: i64,
    /// Id of the writing step (`write_M`).
    pub sink: String,
    pub cell: (u32, u32),
    /// Folder of its tiles (`M/TCGA-BRCA-384`) and their edge in pixels.
    pub dir: String,
    pub size: u32,
    pub pipeline_hash: String,
    pub read: ReadFacts,
    /// How its tiles were encoded: `pixels`, or `crop` (lossless crops of
    /// the cell's whole-tile JPEG, byte-identical to encoding the pixels).
    pub encoding: String,
    pub maker: Maker,
    /// Whether the `tissue` step kept the cell (`None` without such a step).
    pub kept: Option<bool>,
    /// False when the unit's build failed part-way: it is rebuilt next time.
    pub complete: bool,
    pub tiles: Vec<TileRecord>,
    pub removed_tiles: Vec<(u32, u32)>,
    pub built_at: i64,
    pub build: i64,
}

/// A recorded WSI unit, as planning and provenance read it back.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitRow {
    pub id: i64,
    pub input: i64,
    pub sink: String,
    pub cell: (u32, u32),
    pub dir: String,
    pub size: u32,
    pub pipeline_hash: String,
    pub read: ReadFacts,
    /// See [`UnitRecord::encoding`].
    pub encoding: String,
    pub maker: Maker,
    pub outputs: u64,
    pub kept: Option<bool>,
    pub complete: bool,
    pub built_at: i64,
    pub build: i64,
}

impl UnitRow {
    /// `"i,j"`, as messages and the `unit_records` view write a cell.
    pub fn cell_id(&self) -> String {
        format!("{},{}", self.cell.0, self.cell.1)
    }
}

/// The last failure of an input (`unit` empty) or of one of its WSI cells
/// (`"i,j"`) or QC picture (`"qc"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    pub input: i64,
    pub unit: String,
    pub source_hash: Option<String>,
    pub error: String,
    pub at: i64,
}

/// The identity of an output folder: if it is unchanged, no entry of the
/// folder was added, removed, renamed or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirIdentity {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// An output folder with its last verified identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutDir {
    pub id: i64,
    /// Relative to the output root, e.g. `M/TCGA-BRCA-384`.
    pub path: String,
    pub identity: Option<DirIdentity>,
}

/// One recorded file in an output folder, as folder verification needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryRecord {
    pub name: String,
    pub input: i64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub content_hash: String,
    /// Which record: a named output's id, or a tile's (unit id, x, y).
    pub owner: Owner,
}

/// The row a file in an output folder belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    Output(i64),
    Tile { unit: i64, x: u32, y: u32 },
}
