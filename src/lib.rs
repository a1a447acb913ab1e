//! cpia: a declarative, incremental build system for standardized,
//! multi-scale pathology pre-training datasets (the CPIA standard).
//!
//! Data flows one way: [`recipe`] → [`plan`] → [`engine`] → [`ops`] →
//! [`store`]. See `ARCHITECTURE.md` for the code map and the invariants each
//! layer keeps.

pub mod catalog;
pub mod civil_time;
pub mod cli;
pub mod engine;
pub mod executor;
pub mod fixture;
pub mod ops;
pub mod plan;
pub mod provenance;
pub mod recipe;
pub mod report;
pub mod slide;
pub mod store;
pub mod workspace;

// Test support shared with the integration tests (tests/common): what a test
// needs from the machine and what a missing need means (`need`), and python3
// as the reference implementation (`python`). One copy of each, compiled here
// too, so unit and integration tests follow one rule.
#[cfg(test)]
#[path = "../tests/common/need.rs"]
pub(crate) mod need;
#[cfg(test)]
#[path = "../tests/common/python.rs"]
pub(crate) mod python;
/// The library itself, under the name tests/common/need.rs uses for it.
#[cfg(test)]
use crate as lib;
