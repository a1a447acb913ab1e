//! The operator catalog: each operator's name, summary, input and output
//! kinds and parameters, the one description the recipe checker's hints,
//! `cpia new` and the docs share with the code (a test in `tests.rs` holds
//! it to [`Operator`](super::Operator)).

use super::ValueKind;

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

pub(super) const IN_BYTES: &[ValueKind] = &[ValueKind::Bytes];
pub(super) const IN_IMAGE: &[ValueKind] = &[ValueKind::Image];
pub(super) const IN_REGION: &[ValueKind] = &[ValueKind::Region];
pub(super) const IN_TILES: &[ValueKind] = &[ValueKind::Tiles];
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
