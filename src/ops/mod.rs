//! Pure operators: bytes or pixels in, pixels or bytes out.
//!
//! Architecture invariant: nothing in `ops` touches the filesystem, the build
//! state, keys or recipes. Every operator is a deterministic function of its
//! inputs and parameters, so the engine may cache, skip or re-run it freely.
//! An operator's [`Operator::version`] must be bumped whenever its output bytes
//! can change for the same inputs: the version is part of every cache key.
//!
//! The step's vocabulary is a file each: [`Value`] and its kinds (`value.rs`),
//! the operators' parameters and their spellings (`params.rs`), [`Operator`]
//! itself (`operator.rs`: names, versions, canonical parameters, `apply`),
//! and the catalog that describes them for hints, `cpia new` and the docs
//! (`catalog.rs`); each operator's work has its own file below. Tests of the
//! vocabulary in `tests.rs`.

pub mod crop;
pub mod decode;
pub mod encode;
pub mod expr;
pub mod jpeg_crop;
pub mod lanczos_replay;
pub mod libraries;
pub mod pool;
pub mod probe;
pub mod resize;
pub mod round_trip;
#[cfg(test)]
pub(crate) mod testutil;
pub mod wsi;

mod catalog;
mod operator;
mod params;
mod value;

pub use catalog::{catalog, OpInfo, ParamInfo};
pub use encode::ENCODER;
pub use expr::BoxExpr;
pub use operator::{Operator, KEYED_ONLY_WHEN_SET};
pub use params::{
    CropParams, DecodeParams, Filter, JpegParams, JpegWarnings, ResizeParams, Subsampling,
    DEFAULT_QUALITY, DEFAULT_SIDE,
};
pub use value::{Value, ValueKind};

/// An RGB8 image, row-major, 3 bytes per pixel, no padding.
pub type RgbImage = image::RgbImage;

/// Error of an operator on one input: the message names the problem, the
/// engine adds the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(pub String);

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OpError {}

#[cfg(test)]
mod tests;
