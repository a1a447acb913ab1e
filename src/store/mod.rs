//! The build state: what was built from what, recorded in an embedded SQLite
//! database under `cache/` (see [`state`]).
//!
//! Architecture invariant: the store knows rows, not recipes or pixels. It is
//! written only after a file is safely on disk (so a crash loses at most the
//! record of a finished file, which the next build re-makes), and every write
//! is a transaction, so the database is never half-updated.

pub mod journal;
pub mod records;
pub mod state;

pub use records::{FailureRecord, OutputRecord, SourceStat, UnitRecord};
pub use state::{State, StateError};
