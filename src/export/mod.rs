//! Training-ready exports of the dataset: WebDataset tar shards (with a
//! `wids` index), ImageFolder trees, Parquet image shards, each with
//! Croissant metadata — build outputs like the images, under
//! `<output>/export/<name>/`, rewritten only where their samples changed,
//! recorded in the state, verified and explained.
//!
//! One file per concept: [`definition`] (`[export.NAME]`), [`selection`]
//! (which outputs), [`sample`] (balanced selections: CPIA-Mini), [`key`]
//! (keys, shards, order — the one place), [`record`] (a sample's JSON),
//! [`webdataset`] (the tar writer), [`parquet`] (Parquet image shards),
//! [`imagefolder`], [`index`] (the `wids`
//! shard index), [`croissant`] (the dataset's description), [`evaluate`]
//! (which samples changed: the state side of an update), [`update`] (bringing
//! an export up to date), [`verify`], [`why`] (a shard member's story) and
//! [`dryrun`] (counts before anything is built).
//!
//! Above `store`, `provenance` (records), `report` (recipes' metadata,
//! published counts) and `engine` (its confined writer, through which every
//! file is written, linked and removed); called by `cli` — the build command
//! after its images. Library code returns values; `cli` prints them.
//!
//! **Invariants:** a shard's bytes are a function of its samples (keys,
//! bytes, records) alone; a sample's shard is a function of its key and the
//! export's recorded shard count; an update rewrites exactly the shards
//! whose samples changed (those a re-evaluated (folder, input) pair moved
//! in or out, or whose digest changed), each atomically and recorded only
//! once it is durably in place; memory is one shard's member list plus a
//! batch of pairs, whatever the corpus; nothing is written, linked or
//! removed outside `<output>/export/`, and no link there is ever followed.

pub mod croissant;
pub mod definition;
pub mod dryrun;
pub mod evaluate;
pub mod explain;
pub mod imagefolder;
pub mod index;
pub mod key;
pub mod parquet;
pub mod record;
pub mod sample;
pub mod second_reader;
pub mod selection;
pub mod sync;
pub mod update;
pub mod verify;
pub mod webdataset;
pub mod why;

use crate::store::StateError;

/// The folder of the exports inside the output folder (the dataset's own
/// verification skips it: [`crate::provenance::verify::EXPORT_DIR`]).
pub const DIR: &str = crate::provenance::verify::EXPORT_DIR;

/// The folder of export `name`, relative to the output folder.
pub fn folder(name: &str) -> String {
    format!("{DIR}/{name}")
}

/// A failure of an export.
#[derive(Debug)]
pub enum Error {
    State(StateError),
    Io(std::io::Error),
    /// A bad definition: names `cpia.toml`, the export and the key.
    Definition(String),
    Other(String),
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::State(e)
    }
}
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
impl From<crate::provenance::Error> for Error {
    fn from(e: crate::provenance::Error) -> Self {
        match e {
            crate::provenance::Error::State(s) => Error::State(s),
            crate::provenance::Error::Io(e) => Error::Io(e),
            crate::provenance::Error::Other(s) => Error::Other(s),
        }
    }
}
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::State(e) => e.fmt(f),
            Error::Io(e) => write!(f, "{e}"),
            Error::Definition(s) | Error::Other(s) => f.write_str(s),
        }
    }
}
impl std::error::Error for Error {}
