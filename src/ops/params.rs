//! The operators' parameters: their types, recipe spellings (parsed to one
//! canonical string each, so two spellings give one cache key) and the
//! CPIA standard's defaults.

use super::BoxExpr;

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

/// Default output side of `resize` (the CPIA standard's 384×384 tiles).
pub const DEFAULT_SIDE: u32 = 384;
/// Default JPEG quality of `encode_jpeg` (the CPIA standard's quality 75).
pub const DEFAULT_QUALITY: u8 = 75;

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
