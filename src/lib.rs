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
pub mod regular_file;
pub mod report;
pub mod slide;
pub mod store;
pub mod threads;
pub mod workspace;
