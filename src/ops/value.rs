//! The values that flow along the edges of a step DAG, and their kinds
//! (what the recipe layer checks edges with before anything runs).

use std::sync::Arc;

use super::{wsi, RgbImage};

/// A value flowing along an edge of the step DAG.
#[derive(Clone, Debug)]
pub enum Value {
    /// The raw bytes of a source file.
    Bytes(Arc<Vec<u8>>),
    /// Decoded pixels.
    Image(Arc<RgbImage>),
    /// Encoded output bytes (a sink's result), ready to be written.
    Encoded(Arc<Vec<u8>>),
    /// One grid cell of a whole slide, as read (the source of WSI recipes).
    Region(Arc<wsi::Region>),
    /// Standardized tiles of one cell.
    Tiles(Arc<wsi::Tiles>),
    /// Encoded tiles (a WSI sink's result), ready to be written.
    EncodedTiles(Arc<wsi::EncodedTiles>),
}

/// What kind of value an operator consumes or produces; the recipe layer checks
/// that the DAG's edges agree before anything runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Bytes,
    Image,
    Encoded,
    Region,
    Tiles,
    EncodedTiles,
}

impl Value {
    /// The kind of this value, so callers can check a DAG edge without matching.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Bytes(_) => ValueKind::Bytes,
            Value::Image(_) => ValueKind::Image,
            Value::Encoded(_) => ValueKind::Encoded,
            Value::Region(_) => ValueKind::Region,
            Value::Tiles(_) => ValueKind::Tiles,
            Value::EncodedTiles(_) => ValueKind::EncodedTiles,
        }
    }
}

impl ValueKind {
    /// The recipe-facing name, used in kind-mismatch messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Bytes => "bytes",
            ValueKind::Image => "image",
            ValueKind::Encoded => "encoded",
            ValueKind::Region => "slide region",
            ValueKind::Tiles => "tiles",
            ValueKind::EncodedTiles => "encoded tiles",
        }
    }
}
