//! The build state: what was built from what, recorded in an embedded SQLite
//! database under `cache/` (see [`state`]).
//!
//! One file per concept: [`schema`] (the tables, sized for ~150 M outputs),
//! [`state`] (opening, errors, interned values, the build log), [`scan`]
//! (the stat index and the inputs of collections), [`outputs`] (what an input
//! produced), [`dirs`] (output folders and their identities), [`events`]
//! (the single write path for results), [`records`] (the rows as plain
//! structs), [`overview`] (aggregates and bounded samples for `list`,
//! `status` and `report`), [`audit`] (what provenance reads: output facts,
//! the build history, the manifests' bookkeeping), [`exports`] (the exports'
//! rows), [`submitted`] (Slurm plans not merged yet), [`journal`] (the
//! journal files of processes that must not open the database), [`version`]
//! (what a state of another cpia's schema means: migrated, set aside or
//! refused).
//!
//! Architecture invariant: the store knows rows, not recipes or pixels. It is
//! written only after a file is safely on disk (so a crash loses at most the
//! record of a finished file, which the next build re-makes), and every write
//! is a transaction, so the database is never half-updated.

pub mod audit;
pub mod dirs;
pub mod events;
pub mod exports;
pub mod journal;
pub mod outputs;
pub mod overview;
pub mod records;
pub mod scan;
pub mod schema;
pub mod state;
pub mod submitted;
pub mod version;

pub use events::Event;
pub use records::{
    DirEntryRecord, DirIdentity, FailureRecord, FileStat, Maker, OutDir, OutputRecord, OutputRow,
    Owner, ReadFacts, RecordedFile, RecordedInput, TileRecord, UnitRecord, UnitRow, WrittenFile,
    UNKNOWN_CTIME,
};
pub use state::{Opened, State, StateError};

#[cfg(test)]
mod tests;
