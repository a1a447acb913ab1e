//! [`Operator`]: one configured operator of a step — its name, version and
//! canonical parameters (what keys are made of), the kinds it takes and
//! gives, and running it on its inputs.

use std::sync::Arc;

use super::catalog::{IN_BYTES, IN_IMAGE, IN_REGION, IN_TILES};
use super::{
    crop, decode, encode, resize, round_trip, wsi, CropParams, DecodeParams, JpegParams,
    JpegWarnings, OpError, ResizeParams, Value, ValueKind,
};

/// One configured operator of a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Operator {
    Decode(DecodeParams),
    Crop(CropParams),
    Resize(ResizeParams),
    EncodeJpeg(JpegParams),
    JpegRoundTrip(JpegParams),
    WsiGrid(wsi::GridParams),
    Tissue(wsi::TissueParams),
    Subtiles(wsi::SubtileParams),
    EncodeTiles(wsi::TileEncodeParams),
}

// Parameters are validated finite numbers, so equality is reflexive; hashing
// goes through the canonical parameter strings the cache keys use.
impl Eq for Operator {}

impl std::hash::Hash for Operator {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
        self.params().hash(state);
    }
}

/// Parameters added after their operator's first version, which enter
/// [`Operator::params`] (and so keys and recipe hashes) only when set to
/// something other than their default: adding them changed no existing key.
pub const KEYED_ONLY_WHEN_SET: &[(&str, &str)] = &[("decode", "jpeg_warnings")];

/// Shortest decimal that parses back to the same f64: stable key text.
fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}
impl Operator {
    /// The recipe name of the operator; also the first component of its cache key.
    pub fn name(&self) -> &'static str {
        match self {
            Operator::Decode(_) => "decode",
            Operator::Crop(_) => "crop",
            Operator::Resize(_) => "resize",
            Operator::EncodeJpeg(_) => "encode_jpeg",
            Operator::JpegRoundTrip(_) => "jpeg_round_trip",
            Operator::WsiGrid(_) => "wsi_grid",
            Operator::Tissue(_) => "tissue",
            Operator::Subtiles(_) => "subtiles",
            Operator::EncodeTiles(_) => "encode_tiles",
        }
    }

    /// The operator's implementation version, part of every cache key.
    ///
    /// Bump it whenever the output bytes may change for the same inputs and
    /// parameters (a new conversion rule, a different library version or
    /// filter implementation, a changed encoder setting), so that stale cached
    /// results are rebuilt instead of silently reused.
    pub fn version(&self) -> u32 {
        match self {
            Operator::Decode(_) => 1,
            Operator::Crop(_) => 1,
            Operator::Resize(_) => 1,
            Operator::EncodeJpeg(_) => 1,
            Operator::JpegRoundTrip(_) => 1,
            Operator::WsiGrid(_) => 1,
            Operator::Tissue(_) => 1,
            Operator::Subtiles(_) => 1,
            Operator::EncodeTiles(_) => 1,
        }
    }

    /// The normalized parameters sorted by name: they feed cache keys and
    /// `plan --explain` diffs, so two spellings of one setting give equal strings.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        match self {
            Operator::Decode(p) => match p.jpeg_warnings {
                JpegWarnings::Error => Vec::new(),
                w => vec![("jpeg_warnings", w.as_str().to_string())],
            },
            Operator::Crop(p) => vec![
                ("height", p.height.canonical()),
                ("left", p.left.canonical()),
                ("top", p.top.canonical()),
                ("width", p.width.canonical()),
            ],
            Operator::Resize(p) => vec![
                ("filter", p.filter.as_str().to_string()),
                ("height", p.height.to_string()),
                ("width", p.width.to_string()),
            ],
            Operator::EncodeJpeg(p) | Operator::JpegRoundTrip(p) => vec![
                ("quality", p.quality.to_string()),
                ("subsampling", p.subsampling.as_str().to_string()),
            ],
            Operator::WsiGrid(p) => vec![
                ("filter", p.filter.as_str().to_string()),
                ("level", p.level.as_str().to_string()),
                ("reader", p.reader.as_str().to_string()),
                ("size", p.size.to_string()),
                ("skip_ring", p.skip_ring.to_string()),
                ("target_mpp", fmt_f64(p.target_mpp)),
                ("tolerance", fmt_f64(p.tolerance)),
            ],
            Operator::Tissue(wsi::TissueParams::Color {
                statistic,
                max,
                min_r,
                min_b,
                r_minus_g,
            }) => vec![
                ("detector", "cpia-color".to_string()),
                ("max", max.to_string()),
                ("min_b", min_b.to_string()),
                ("min_r", min_r.to_string()),
                ("r_minus_g", r_minus_g.to_string()),
                ("statistic", statistic.as_str().to_string()),
            ],
            Operator::Tissue(wsi::TissueParams::Otsu(o)) => vec![
                ("close", o.close.to_string()),
                ("detector", "otsu".to_string()),
                ("median", o.median.to_string()),
                ("min_fraction", fmt_f64(o.min_fraction)),
                ("thumbnail", o.thumbnail.to_string()),
            ],
            Operator::Subtiles(p) => vec![
                ("pick", p.pick.map_or("all".to_string(), |n| n.to_string())),
                ("size", p.size.to_string()),
                ("statistic", p.statistic.as_str().to_string()),
                ("white", p.white.to_string()),
            ],
            Operator::EncodeTiles(p) => vec![
                ("quality", p.jpeg.quality.to_string()),
                ("scale", p.scale.clone()),
                ("subsampling", p.jpeg.subsampling.as_str().to_string()),
            ],
        }
    }

    /// The kinds of the inputs, in order, so the recipe layer can check edges before running.
    pub fn input_kinds(&self) -> &'static [ValueKind] {
        match self {
            Operator::Decode(_) => IN_BYTES,
            Operator::Crop(_)
            | Operator::Resize(_)
            | Operator::EncodeJpeg(_)
            | Operator::JpegRoundTrip(_) => IN_IMAGE,
            Operator::WsiGrid(_) => IN_REGION,
            Operator::Tissue(_) | Operator::Subtiles(_) | Operator::EncodeTiles(_) => IN_TILES,
        }
    }

    /// The kind of the output, so the recipe layer can check edges before running.
    pub fn output_kind(&self) -> ValueKind {
        match self {
            Operator::Decode(_)
            | Operator::Crop(_)
            | Operator::Resize(_)
            | Operator::JpegRoundTrip(_) => ValueKind::Image,
            Operator::EncodeJpeg(_) => ValueKind::Encoded,
            Operator::WsiGrid(_) | Operator::Tissue(_) | Operator::Subtiles(_) => ValueKind::Tiles,
            Operator::EncodeTiles(_) => ValueKind::EncodedTiles,
        }
    }

    /// Checks parameters that are wrong for every input (a zero resize side, a
    /// JPEG quality outside 1–100), so a recipe fails before any file is read.
    pub fn validate(&self) -> Result<(), OpError> {
        match self {
            Operator::Decode(_) | Operator::Crop(_) => Ok(()),
            Operator::Resize(p) => resize::check_params(p),
            Operator::EncodeJpeg(p) | Operator::JpegRoundTrip(p) => encode::check_params(p),
            Operator::EncodeTiles(p) => encode::check_params(&p.jpeg),
            Operator::WsiGrid(_) | Operator::Tissue(_) | Operator::Subtiles(_) => Ok(()),
        }
    }

    /// Runs the operator on its inputs; checks their number and kinds first,
    /// since the engine wires values by position.
    pub fn apply(&self, inputs: &[Value]) -> Result<Value, OpError> {
        let kinds = self.input_kinds();
        if inputs.len() != kinds.len() {
            return Err(OpError(format!(
                "operator `{}` takes {} input(s), got {}",
                self.name(),
                kinds.len(),
                inputs.len()
            )));
        }
        for (i, (v, k)) in inputs.iter().zip(kinds).enumerate() {
            if v.kind() != *k {
                return Err(OpError(format!(
                    "operator `{}` expects input {} to be {}, got {}",
                    self.name(),
                    i + 1,
                    k.as_str(),
                    v.kind().as_str()
                )));
            }
        }
        match (self, &inputs[0]) {
            (Operator::Decode(p), Value::Bytes(b)) => {
                Ok(Value::Image(Arc::new(decode::decode_with(b, p)?)))
            }
            (Operator::Crop(p), Value::Image(img)) => {
                // A box that is the whole image (the centre square of a
                // square image) shares the pixels instead of copying them.
                let (w, h) = img.dimensions();
                if crop::eval_box(p, w, h)? == (0, 0, i64::from(w), i64::from(h)) {
                    return Ok(Value::Image(img.clone()));
                }
                Ok(Value::Image(Arc::new(crop::crop(img, p)?)))
            }
            (Operator::Resize(p), Value::Image(img)) => {
                Ok(Value::Image(Arc::new(resize::resize(img, p)?)))
            }
            (Operator::EncodeJpeg(p), Value::Image(img)) => {
                Ok(Value::Encoded(Arc::new(encode::encode_jpeg(img, p)?)))
            }
            (Operator::JpegRoundTrip(p), Value::Image(img)) => {
                Ok(Value::Image(Arc::new(round_trip::round_trip(img, p)?)))
            }
            (Operator::WsiGrid(p), Value::Region(r)) => {
                Ok(Value::Tiles(Arc::new(wsi::grid(r, p)?)))
            }
            (Operator::Tissue(p), Value::Tiles(t)) => {
                Ok(Value::Tiles(Arc::new(wsi::tissue(t, p)?)))
            }
            (Operator::Subtiles(p), Value::Tiles(t)) => {
                Ok(Value::Tiles(Arc::new(wsi::subtiles(t, p)?)))
            }
            (Operator::EncodeTiles(p), Value::Tiles(t)) => {
                Ok(Value::EncodedTiles(Arc::new(wsi::encode(t, p)?)))
            }
            _ => Err(OpError(format!(
                "operator `{}` got an input of the wrong kind",
                self.name()
            ))),
        }
    }
}
