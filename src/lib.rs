//! cpia: a declarative, incremental build system for standardized,
//! multi-scale pathology pre-training datasets (the CPIA standard).
//!
//! Data flows one way: a [`recipe`] is checked; [`plan`] compares it and the
//! sources with the [`store`] into actions (reading slide metadata through
//! [`slide`]); the [`engine`] runs them with the pure operators of [`ops`]
//! on the regions [`slide`] reads, and records the results in the [`store`]
//! (or, in a Slurm array task submitted through [`executor`], in a journal
//! that the coordinator merges).
//! [`provenance`] reads the records back (`why`, `verify`, manifests,
//! PROV-JSON), [`report`] sums them up beside the published counts, and
//! [`export`] turns them into training datasets. Only [`cli`] (and
//! `main.rs`) prints; the other layers return values or send notes
//! ([`engine::note`]). The bottom of the house: [`workspace`], the leaves
//! [`regular_file`], [`threads`], [`civil_time`], [`parquet_file`];
//! [`catalog`] is the shipped recipes, [`fixture`] test tooling.
//!
//! A module uses only the layers below it, as `ARCHITECTURE.md`'s layer
//! table says (checked by `tests/layers.rs`, with its code map and
//! invariants).

pub mod catalog;
pub mod civil_time;
pub mod cli;
pub mod engine;
pub mod executor;
pub mod export;
pub mod fixture;
pub mod ops;
pub mod parquet_file;
pub mod plan;
pub mod provenance;
pub mod recipe;
pub mod regular_file;
pub mod report;
pub mod slide;
pub mod store;
pub mod threads;
pub mod workspace;

// Test support shared with the integration tests (tests/common): what a test
// needs from the machine and what a missing need means (`need`), python3
// as the reference implementation (`python`), and the watchdog its children
// are waited under (`process`). One copy of each, compiled here too, so unit
// and integration tests follow one rule.
#[cfg(test)]
#[path = "../tests/common/need.rs"]
mod need;
#[cfg(test)]
#[path = "../tests/common/process.rs"]
mod process;
#[cfg(test)]
#[path = "../tests/common/python.rs"]
mod python;
/// The library itself, under the name tests/common/need.rs uses for it.
#[cfg(test)]
use crate as lib;
