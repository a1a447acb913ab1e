//! Pure operators: bytes or pixels in, pixels or bytes out.
//!
//! Architecture invariant: nothing in `ops` touches the filesystem, the build
//! state, keys or recipes. Every operator is a deterministic function of its
//! inputs and parameters, so the engine may cache, skip or re-run it freely.
//! An operator's [`Operator::version`] must be bumped whenever its output bytes
//! can change for the same inputs: the version is part of every cache key.

pub mod crop;
pub mod decode;
pub mod encode;
pub mod expr;
pub mod jpeg_crop;
pub mod libraries;
pub mod pool;
pub mod probe;
pub mod resize;
pub mod round_trip;
#[cfg(test)]
pub(crate) mod testutil;
pub mod wsi;

use std::sync::Arc;

pub use encode::ENCODER;
pub use expr::BoxExpr;

/// An RGB8 image, row-major, 3 bytes per pixel, no padding.
pub type RgbImage = image::RgbImage;

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

/// Resampling filter of [`ResizeParams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    Lanczos3,
    CatmullRom,
    Bilinear,
    Box,
    Nearest,
}

/// Chroma subsampling of [`JpegParams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subsampling {
    S444,
    S422,
    S420,
}

/// Parameters of `decode` (16-bit images are scaled to 8 bits and alpha,
/// grey and palette images become RGB, always).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DecodeParams {
    pub jpeg_warnings: JpegWarnings,
}

/// What `decode` does when libjpeg warns about a JPEG (corrupt data, a file
/// that ends early): libjpeg itself would go on and paint the rest grey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum JpegWarnings {
    /// The file fails, with libjpeg's message.
    #[default]
    Error,
    /// The image is built as libjpeg decodes it.
    Accept,
}

impl JpegWarnings {
    /// Recipe spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JpegWarnings::Error => "error",
            JpegWarnings::Accept => "accept",
        }
    }
}

/// Parameters added after their operator's first version, which enter
/// [`Operator::params`] (and so keys and recipe hashes) only when set to
/// something other than their default: adding them changed no existing key.
pub const KEYED_ONLY_WHEN_SET: &[(&str, &str)] = &[("decode", "jpeg_warnings")];

/// Parameters of `crop`: a box of integer expressions of `w`, `h`, `s`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CropParams {
    pub left: BoxExpr,
    pub top: BoxExpr,
    pub width: BoxExpr,
    pub height: BoxExpr,
}

/// Parameters of `resize`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResizeParams {
    pub width: u32,
    pub height: u32,
    pub filter: Filter,
}

/// Parameters of `encode_jpeg`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JpegParams {
    pub quality: u8,
    pub subsampling: Subsampling,
}

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

/// Default output side of `resize` (the CPIA standard's 384×384 tiles).
pub const DEFAULT_SIDE: u32 = 384;
/// Default JPEG quality of `encode_jpeg` (the CPIA standard's quality 75).
pub const DEFAULT_QUALITY: u8 = 75;

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

impl Filter {
    /// Every filter, so hints and docs can list the accepted spellings.
    pub const ALL: [Filter; 5] = [
        Filter::Lanczos3,
        Filter::CatmullRom,
        Filter::Bilinear,
        Filter::Box,
        Filter::Nearest,
    ];

    /// Parses a recipe spelling (ASCII case-insensitive), so that `catmull-rom`
    /// and `CatmullRom` become one cache-key string.
    pub fn parse(text: &str) -> Result<Filter, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "lanczos3" | "lanczos-3" => Ok(Filter::Lanczos3),
            "catmullrom" | "catmull-rom" => Ok(Filter::CatmullRom),
            "bilinear" => Ok(Filter::Bilinear),
            "box" => Ok(Filter::Box),
            "nearest" => Ok(Filter::Nearest),
            _ => Err(format!(
                "unknown resize filter `{text}`: expected one of lanczos3, catmullrom, bilinear, box, nearest"
            )),
        }
    }

    /// The canonical spelling: what cache keys and `plan --explain` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Filter::Lanczos3 => "lanczos3",
            Filter::CatmullRom => "catmullrom",
            Filter::Bilinear => "bilinear",
            Filter::Box => "box",
            Filter::Nearest => "nearest",
        }
    }
}

impl Subsampling {
    /// Every subsampling, so hints and docs can list the accepted spellings.
    pub const ALL: [Subsampling; 3] = [Subsampling::S444, Subsampling::S422, Subsampling::S420];

    /// Parses `4:2:0` or `420` (and the 4:4:4 / 4:2:2 forms), so both
    /// spellings give one cache-key string.
    pub fn parse(text: &str) -> Result<Subsampling, String> {
        match text.trim() {
            "4:4:4" | "444" => Ok(Subsampling::S444),
            "4:2:2" | "422" => Ok(Subsampling::S422),
            "4:2:0" | "420" => Ok(Subsampling::S420),
            _ => Err(format!(
                "unknown chroma subsampling `{text}`: expected 4:2:0, 4:2:2 or 4:4:4 (or 420, 422, 444)"
            )),
        }
    }

    /// The canonical spelling (`4:2:0`): what cache keys and `plan --explain` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Subsampling::S444 => "4:4:4",
            Subsampling::S422 => "4:2:2",
            Subsampling::S420 => "4:2:0",
        }
    }
}

impl CropParams {
    /// The standard's largest centred square (`a = s`, left `(w-s)/2`, top
    /// `(h-s)/2`), so recipes and tests need not spell it out.
    pub fn centre_square() -> CropParams {
        let e = |t: &str| BoxExpr::parse(t).unwrap_or_else(|_| BoxExpr::constant(0));
        CropParams {
            left: e(CROP_DEFAULT_LEFT),
            top: e(CROP_DEFAULT_TOP),
            width: e(CROP_DEFAULT_SIDE),
            height: e(CROP_DEFAULT_SIDE),
        }
    }
}

const CROP_DEFAULT_LEFT: &str = "(w - s) / 2";
const CROP_DEFAULT_TOP: &str = "(h - s) / 2";
const CROP_DEFAULT_SIDE: &str = "s";

impl Default for ResizeParams {
    /// The standard's 384×384 Lanczos-3.
    fn default() -> Self {
        ResizeParams {
            width: DEFAULT_SIDE,
            height: DEFAULT_SIDE,
            filter: Filter::Lanczos3,
        }
    }
}

impl Default for JpegParams {
    /// The standard's quality 75 with 4:2:0 chroma (Pillow's default for that quality).
    fn default() -> Self {
        JpegParams {
            quality: DEFAULT_QUALITY,
            subsampling: Subsampling::S420,
        }
    }
}

/// Describes one parameter of an operator, for recipe hints, `cpia new` and docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// The key in the recipe (and in [`Operator::params`]).
    pub name: &'static str,
    /// `"integer"`, `"string"` (one of a fixed set) or `"expression"` (a [`BoxExpr`]).
    pub ty: &'static str,
    /// The default in recipe syntax; `None` if the parameter is required.
    pub default: Option<&'static str>,
    /// One line for hints and generated docs.
    pub doc: &'static str,
}

/// Describes one operator, so the recipe checker, `cpia new` and the docs
/// share a single source of truth with the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// The recipe name, as [`Operator::name`].
    pub name: &'static str,
    /// One or two sentences for hints, `cpia new` and generated docs.
    pub summary: &'static str,
    /// Input kinds in order, as [`Operator::input_kinds`].
    pub inputs: &'static [ValueKind],
    /// Output kind, as [`Operator::output_kind`].
    pub output: ValueKind,
    /// Parameters sorted by name, as [`Operator::params`] lists them.
    pub params: &'static [ParamInfo],
}

const IN_BYTES: &[ValueKind] = &[ValueKind::Bytes];
const IN_IMAGE: &[ValueKind] = &[ValueKind::Image];
const IN_REGION: &[ValueKind] = &[ValueKind::Region];
const IN_TILES: &[ValueKind] = &[ValueKind::Tiles];

/// Shortest decimal that parses back to the same f64: stable key text.
fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}

/// The parameters of `encode_jpeg` and `jpeg_round_trip`, sorted by name.
const JPEG_PARAMS: &[ParamInfo] = &[
    ParamInfo {
        name: "quality",
        ty: "integer",
        default: Some("75"),
        doc: "JPEG quality, 1 to 100 (libjpeg scale, as Pillow's `quality`).",
    },
    ParamInfo {
        name: "subsampling",
        ty: "string",
        default: Some("4:2:0"),
        doc: "Chroma subsampling: 4:2:0, 4:2:2 or 4:4:4 (420, 422, 444 also accepted).",
    },
];

static CATALOG: [OpInfo; 5] = [
    OpInfo {
        name: "decode",
        summary: "Decodes JPEG, PNG, TIFF or BMP bytes (detected from content) to 8-bit RGB; \
                  alpha is dropped, not composited; 16-bit samples keep their high byte.",
        inputs: IN_BYTES,
        output: ValueKind::Image,
        params: &[ParamInfo {
            name: "jpeg_warnings",
            ty: "string",
            default: Some("error"),
            doc: "error: a JPEG libjpeg warns about (corrupt data, ends early) fails; accept: build it as libjpeg decodes it.",
        }],
    },
    OpInfo {
        name: "crop",
        summary: "Crops a box given by integer expressions of w, h and s = min(w, h); \
                  `/` is floor division. All four are required (a crop is never implicit); \
                  the standard's centred square is `(w - s) / 2`, `(h - s) / 2`, `s`, `s`.",
        inputs: IN_IMAGE,
        output: ValueKind::Image,
        params: &[
            ParamInfo {
                name: "height",
                ty: "expression",
                default: None,
                doc: "Height of the box in pixels.",
            },
            ParamInfo {
                name: "left",
                ty: "expression",
                default: None,
                doc: "Left edge of the box, in pixels from the image's left edge.",
            },
            ParamInfo {
                name: "top",
                ty: "expression",
                default: None,
                doc: "Top edge of the box, in pixels from the image's top edge.",
            },
            ParamInfo {
                name: "width",
                ty: "expression",
                default: None,
                doc: "Width of the box in pixels.",
            },
        ],
    },
    OpInfo {
        name: "resize",
        summary:
            "Resizes to a fixed size (up or down, aspect ratio not kept) with a convolution filter.",
        inputs: IN_IMAGE,
        output: ValueKind::Image,
        params: &[
            ParamInfo {
                name: "filter",
                ty: "string",
                default: Some("lanczos3"),
                doc: "lanczos3, catmullrom (Pillow's BICUBIC), bilinear, box or nearest.",
            },
            ParamInfo {
                name: "height",
                ty: "integer",
                default: Some("384"),
                doc: "Output height in pixels (at least 1).",
            },
            ParamInfo {
                name: "width",
                ty: "integer",
                default: Some("384"),
                doc: "Output width in pixels (at least 1).",
            },
        ],
    },
    OpInfo {
        name: "encode_jpeg",
        summary: "Encodes baseline JPEG with libjpeg-turbo (deterministic bytes).",
        inputs: IN_IMAGE,
        output: ValueKind::Encoded,
        params: JPEG_PARAMS,
    },
    OpInfo {
        name: "jpeg_round_trip",
        summary: "Saves the image as a JPEG (as `encode_jpeg`) and reads it back (as `decode`): \
                  the extra JPEG generation the CPIA reference gave the collections it received \
                  as PNG or BMP.",
        inputs: IN_IMAGE,
        output: ValueKind::Image,
        params: JPEG_PARAMS,
    },
];

/// The operator descriptions, in a fixed order, for hints, `cpia new` and docs.
pub fn catalog() -> &'static [OpInfo] {
    &CATALOG
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<Operator> {
        vec![
            Operator::Decode(DecodeParams::default()),
            Operator::Crop(CropParams::centre_square()),
            Operator::Resize(ResizeParams::default()),
            Operator::JpegRoundTrip(JpegParams::default()),
            Operator::EncodeJpeg(JpegParams::default()),
        ]
    }

    #[test]
    fn spellings_normalize() {
        assert_eq!(Filter::parse("catmull-rom"), Filter::parse("CatmullRom"));
        assert_eq!(Filter::parse("Lanczos3").unwrap().as_str(), "lanczos3");
        assert!(Filter::parse("cubic").unwrap_err().contains("lanczos3"));
        assert_eq!(Subsampling::parse("420"), Ok(Subsampling::S420));
        assert_eq!(Subsampling::parse("4:2:2"), Subsampling::parse("422"));
        assert_eq!(Subsampling::parse("444").unwrap().as_str(), "4:4:4");
        assert!(Subsampling::parse("4:1:1").is_err());
        for f in Filter::ALL {
            assert_eq!(Filter::parse(f.as_str()), Ok(f));
        }
        for s in Subsampling::ALL {
            assert_eq!(Subsampling::parse(s.as_str()), Ok(s));
        }
    }

    #[test]
    fn params_are_canonical_and_sorted() {
        let a = Operator::EncodeJpeg(JpegParams {
            quality: 75,
            subsampling: Subsampling::parse("420").unwrap(),
        });
        assert_eq!(
            a.params(),
            vec![
                ("quality", "75".to_string()),
                ("subsampling", "4:2:0".to_string())
            ]
        );
        let e = |t: &str| BoxExpr::parse(t).unwrap();
        let c1 = Operator::Crop(CropParams {
            left: e("(w-s)/2"),
            top: e("(h - s) // 2"),
            width: e("s"),
            height: e(" s "),
        });
        assert_eq!(
            c1.params(),
            Operator::Crop(CropParams::centre_square()).params()
        );
        assert_eq!(c1.params()[1], ("left", "((w-s)/2)".to_string()));
        let r = Operator::Resize(ResizeParams::default()).params();
        assert_eq!(r[0], ("filter", "lanczos3".to_string()));
        for op in ops() {
            let names: Vec<_> = op.params().iter().map(|p| p.0).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "{}", op.name());
        }
    }

    #[test]
    fn catalog_agrees_with_the_operators() {
        let cat = catalog();
        for op in ops() {
            let info = cat.iter().find(|i| i.name == op.name()).unwrap();
            assert_eq!(info.inputs, op.input_kinds());
            assert_eq!(info.output, op.output_kind());
            assert_eq!(op.version(), 1);
            // The defaults in the catalog are exactly the Default params
            // (less those keyed only when set).
            let names: Vec<_> = info
                .params
                .iter()
                .map(|p| p.name)
                .filter(|n| !KEYED_ONLY_WHEN_SET.contains(&(op.name(), n)))
                .collect();
            let op_names: Vec<_> = op.params().iter().map(|p| p.0).collect();
            assert_eq!(names, op_names);
            let keyed = info
                .params
                .iter()
                .filter(|p| !KEYED_ONLY_WHEN_SET.contains(&(op.name(), p.name)));
            for (pi, (_, v)) in keyed.zip(op.params()) {
                // Crop boxes are required: no default to compare.
                let Some(d) = pi.default else {
                    assert_eq!(
                        pi.ty,
                        "expression",
                        "{}.{} has no default",
                        op.name(),
                        pi.name
                    );
                    continue;
                };
                let canon = match pi.ty {
                    "expression" => BoxExpr::parse(d).unwrap().canonical(),
                    "integer" => d.parse::<u32>().unwrap().to_string(),
                    _ if pi.name == "filter" => Filter::parse(d).unwrap().as_str().to_string(),
                    _ => Subsampling::parse(d).unwrap().as_str().to_string(),
                };
                assert_eq!(canon, v, "{}.{}", op.name(), pi.name);
            }
        }
        assert_eq!(cat.len(), 5);
        assert!(ENCODER.contains("libjpeg-turbo"));
    }

    #[test]
    fn apply_runs_the_pipeline_and_checks_kinds() {
        let rgb = RgbImage::from_fn(90, 60, |x, y| image::Rgb([x as u8, y as u8, 100]));
        let jpg = encode::encode_jpeg(&rgb, &JpegParams::default()).unwrap();
        let mut v = Value::Bytes(Arc::new(jpg));
        for op in ops() {
            assert!(op.validate().is_ok());
            v = op.apply(std::slice::from_ref(&v)).unwrap();
            assert_eq!(v.kind(), op.output_kind());
        }
        let Value::Encoded(out) = &v else { panic!() };
        let img = decode::decode(out).unwrap();
        assert_eq!(img.dimensions(), (384, 384));

        let resize = Operator::Resize(ResizeParams::default());
        let e = resize.apply(&[]).unwrap_err().0;
        assert!(e.contains("takes 1 input(s), got 0"), "{e}");
        let e = resize.apply(&[v.clone()]).unwrap_err().0;
        assert!(
            e.contains("expects input 1 to be image, got encoded"),
            "{e}"
        );
        let bad = Operator::EncodeJpeg(JpegParams {
            quality: 0,
            subsampling: Subsampling::S444,
        });
        assert!(bad.validate().is_err());
        let bad = Operator::Resize(ResizeParams {
            width: 0,
            height: 1,
            filter: Filter::Box,
        });
        assert!(bad.validate().is_err());
    }
}
