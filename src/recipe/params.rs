//! Typed operator parameters: op names, defaults, ranges, value kinds.
//!
//! Everything here is checked at load time, so an operator never sees a
//! parameter it cannot use. The filter and subsampling spellings are parsed
//! here (not in `ops`) so the recipe format does not depend on `ops` helpers.

use super::diagnostic::{known_hint, Problem, SourceMap};
use super::raw::{PVal, RawParam, Sp};
use super::Kind;
use crate::ops::wsi::otsu::OtsuParams;
use crate::ops::wsi::{
    GridParams, LevelPolicy, ReaderChoice, SubtileParams, TileEncodeParams, TissueParams,
};
use crate::ops::{
    BoxExpr, CropParams, DecodeParams, Filter, JpegParams, JpegWarnings, Operator, ResizeParams,
    Subsampling, ValueKind,
};

/// Operator names as written in `op = "..."`.
pub(crate) const OPERATORS: [&str; 9] = [
    "decode",
    "crop",
    "resize",
    "encode_jpeg",
    "jpeg_round_trip",
    "wsi_grid",
    "tissue",
    "subtiles",
    "encode_tiles",
];

const GRID_KEYS: [&str; 7] = [
    "size",
    "target_mpp",
    "tolerance",
    "skip_ring",
    "filter",
    "level",
    "reader",
];
const READERS: [&str; 2] = ["auto", "openslide"];
const COLOR_KEYS: [&str; 6] = [
    "detector",
    "statistic",
    "max",
    "min_r",
    "min_b",
    "r_minus_g",
];
const OTSU_KEYS: [&str; 5] = ["detector", "thumbnail", "median", "close", "min_fraction"];
const SUBTILE_KEYS: [&str; 4] = ["size", "pick", "white", "statistic"];
const TILE_ENCODE_KEYS: [&str; 3] = ["quality", "subsampling", "scale"];
const LEVELS: [&str; 2] = ["finest", "auto"];
const DETECTORS: [&str; 2] = ["cpia-color", "otsu"];
const SCALES: [&str; 4] = ["XL", "L", "M", "S"];

const DECODE_KEYS: [&str; 1] = ["jpeg_warnings"];
const JPEG_WARNINGS: [&str; 2] = ["error", "accept"];
const CROP_KEYS: [&str; 4] = ["left", "top", "width", "height"];
const RESIZE_KEYS: [&str; 3] = ["width", "height", "filter"];
const JPEG_KEYS: [&str; 2] = ["quality", "subsampling"];

const FILTERS: [&str; 5] = ["lanczos3", "catmullrom", "bilinear", "box", "nearest"];
const SUBSAMPLINGS: [&str; 6] = ["4:2:0", "420", "4:2:2", "422", "4:4:4", "444"];

/// Default edge of `resize`: the CPIA ROI size.
pub(crate) const DEFAULT_SIZE: u32 = 384;
/// Default JPEG quality: Pillow's, which the standard's datasets used.
pub(crate) const DEFAULT_QUALITY: u8 = 75;
/// Largest `resize` edge: the largest JPEG dimension. The area is bounded
/// too, by the decode limit ([`MAX_PIXELS`]).
const MAX_EDGE: i64 = 65535;
/// Largest tile edge of `wsi_grid` and `subtiles`: a square tile within the
/// decode limit.
const MAX_TILE: i64 = 32768;
use crate::ops::decode::MAX_PIXELS;

fn parse_filter(s: &str) -> Option<Filter> {
    match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
        "lanczos3" => Some(Filter::Lanczos3),
        "catmullrom" => Some(Filter::CatmullRom),
        "bilinear" => Some(Filter::Bilinear),
        "box" => Some(Filter::Box),
        "nearest" => Some(Filter::Nearest),
        _ => None,
    }
}

fn parse_jpeg_warnings(s: &str) -> Option<JpegWarnings> {
    match s {
        "error" => Some(JpegWarnings::Error),
        "accept" => Some(JpegWarnings::Accept),
        _ => None,
    }
}

fn parse_level(s: &str) -> Option<LevelPolicy> {
    match s {
        "finest" => Some(LevelPolicy::Finest),
        "auto" => Some(LevelPolicy::Auto),
        _ => None,
    }
}

fn parse_reader(s: &str) -> Option<ReaderChoice> {
    match s {
        "auto" => Some(ReaderChoice::Auto),
        "openslide" => Some(ReaderChoice::OpenSlide),
        _ => None,
    }
}

fn parse_detector(s: &str) -> Option<&'static str> {
    DETECTORS.iter().copied().find(|d| *d == s)
}

fn parse_scale(s: &str) -> Option<&'static str> {
    SCALES.iter().copied().find(|d| d.eq_ignore_ascii_case(s))
}

fn parse_subsampling(s: &str) -> Option<Subsampling> {
    match s {
        "4:2:0" | "420" => Some(Subsampling::S420),
        "4:2:2" | "422" => Some(Subsampling::S422),
        "4:4:4" | "444" => Some(Subsampling::S444),
        _ => None,
    }
}

/// What a step consumes and produces. A step without `input` is given the
/// source file's bytes, so `decode` "consumes bytes" and nothing else can.
pub(crate) fn signature(op: &Operator) -> (ValueKind, ValueKind) {
    let input = op
        .input_kinds()
        .first()
        .copied()
        .unwrap_or(ValueKind::Bytes);
    (input, op.output_kind())
}

/// The operator name of a typed operator, as written in recipes.
pub(crate) fn op_name(op: &Operator) -> &'static str {
    op.name()
}

/// Reads parameters of one operator, reporting every problem.
struct Params<'a> {
    op: &'a Sp<String>,
    params: &'a [RawParam],
    sm: &'a SourceMap,
    ok: bool,
}

impl<'a> Params<'a> {
    fn check_keys(&mut self, known: &[&str], p: &mut Vec<Problem>) {
        for prm in self.params {
            if !known.contains(&prm.key.v.as_str()) {
                let hint = if known.is_empty() {
                    format!("`{}` takes no parameters", self.op.v)
                } else {
                    known_hint(&prm.key.v, "parameters", known)
                };
                p.push(
                    Problem::at(
                        &prm.key.loc,
                        format!(
                            "unknown parameter `{}` for operator `{}`",
                            prm.key.v, self.op.v
                        ),
                    )
                    .hint(hint),
                );
                self.ok = false;
            }
        }
    }

    fn get(&self, key: &str) -> Option<&'a RawParam> {
        self.params.iter().find(|p| p.key.v == key)
    }

    fn wrong(&mut self, prm: &RawParam, want: &str, p: &mut Vec<Problem>) {
        p.push(Problem::at(
            &prm.value.loc,
            format!(
                "`{}` of `{}` must be {want}, found {}",
                prm.key.v,
                self.op.v,
                prm.value.v.type_name()
            ),
        ));
        self.ok = false;
    }

    fn int(&mut self, key: &str, default: i64, range: (i64, i64), p: &mut Vec<Problem>) -> i64 {
        let Some(prm) = self.get(key) else {
            return default;
        };
        match prm.value.v {
            PVal::Int(Some(n)) if (range.0..=range.1).contains(&n) => n,
            PVal::Int(_) => {
                p.push(Problem::at(
                    &prm.value.loc,
                    format!(
                        "`{key}` of `{}` must be in {}..={}",
                        self.op.v, range.0, range.1
                    ),
                ));
                self.ok = false;
                default
            }
            _ => {
                self.wrong(prm, "an integer", p);
                default
            }
        }
    }

    fn float(&mut self, key: &str, default: f64, range: (f64, f64), p: &mut Vec<Problem>) -> f64 {
        let Some(prm) = self.get(key) else {
            return default;
        };
        let Some(v) = prm.value.v.as_f64() else {
            self.wrong(prm, "a number", p);
            return default;
        };
        if !(v.is_finite() && range.0 <= v && v <= range.1) {
            p.push(Problem::at(
                &prm.value.loc,
                format!(
                    "`{key}` of `{}` must be in {}..={}",
                    self.op.v, range.0, range.1
                ),
            ));
            self.ok = false;
            return default;
        }
        v
    }

    fn byte(&mut self, key: &str, default: u8, p: &mut Vec<Problem>) -> u8 {
        u8::try_from(self.int(key, i64::from(default), (0, 255), p)).unwrap_or(default)
    }

    fn required_int(&mut self, key: &str, range: (i64, i64), p: &mut Vec<Problem>) -> i64 {
        if self.get(key).is_none() {
            p.push(Problem::at(
                &self.op.loc,
                format!("operator `{}` requires the parameter `{key}`", self.op.v),
            ));
            self.ok = false;
            return range.0;
        }
        self.int(key, range.0, range, p)
    }

    fn choice<T>(
        &mut self,
        key: &str,
        default: T,
        parse: fn(&str) -> Option<T>,
        known: &[&str],
        p: &mut Vec<Problem>,
    ) -> T {
        let Some(prm) = self.get(key) else {
            return default;
        };
        match &prm.value.v {
            PVal::Str(s) => match parse(s) {
                Some(v) => v,
                None => {
                    p.push(
                        Problem::at(&prm.value.loc, format!("unknown {key} `{s}`"))
                            .hint(known_hint(s, &format!("{key} values"), known)),
                    );
                    self.ok = false;
                    default
                }
            },
            _ => {
                self.wrong(prm, "a string", p);
                default
            }
        }
    }

    fn expr(&mut self, key: &str, p: &mut Vec<Problem>) -> BoxExpr {
        let Some(prm) = self.get(key) else {
            p.push(
                Problem::at(
                    &self.op.loc,
                    format!("operator `{}` requires the parameter `{key}`", self.op.v),
                )
                .hint("crop takes `left`, `top`, `width` and `height`: integer expressions of `w`, `h` and `s = min(w, h)`, e.g. `left = \"(w - s) / 2\"`"),
            );
            self.ok = false;
            return BoxExpr::constant(0);
        };
        match &prm.value.v {
            PVal::Int(Some(n)) => BoxExpr::constant(*n),
            PVal::Str(s) => match BoxExpr::parse(s) {
                Ok(e) => e,
                Err(e) => {
                    let at = self.sm.inner(&prm.value.loc, s, e.offset, 1);
                    p.push(Problem::at(
                        &at,
                        format!("invalid expression for `{key}`: {}", e.message),
                    ));
                    self.ok = false;
                    BoxExpr::constant(0)
                }
            },
            _ => {
                self.wrong(prm, "an expression string (or an integer)", p);
                BoxExpr::constant(0)
            }
        }
    }
}

/// The parameters of `encode_jpeg` and `jpeg_round_trip`: `quality` and
/// `subsampling`, Pillow's defaults, and no other key.
fn jpeg_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> JpegParams {
    r.check_keys(&JPEG_KEYS, p);
    jpeg_settings(r, p)
}

/// `quality` and `subsampling` of a JPEG-encoding operator.
fn jpeg_settings(r: &mut Params<'_>, p: &mut Vec<Problem>) -> JpegParams {
    let q = r.int("quality", i64::from(DEFAULT_QUALITY), (1, 100), p);
    JpegParams {
        quality: u8::try_from(q).unwrap_or(DEFAULT_QUALITY),
        subsampling: r.choice(
            "subsampling",
            Subsampling::S420,
            parse_subsampling,
            &SUBSAMPLINGS,
            p,
        ),
    }
}

/// Types the operator `op` of a step with its parameters; None (with
/// problems reported) if the name or any parameter is wrong.
pub(crate) fn operator(
    op: &Sp<String>,
    params: &[RawParam],
    kind: Kind,
    sm: &SourceMap,
    p: &mut Vec<Problem>,
) -> Option<Operator> {
    let mut r = Params {
        op,
        params,
        sm,
        ok: true,
    };
    let typed = match op.v.as_str() {
        "decode" => decode_params(&mut r, p),
        "crop" => crop_params(&mut r, p),
        "resize" => resize_params(&mut r, p),
        "encode_jpeg" => Operator::EncodeJpeg(jpeg_params(&mut r, p)),
        "jpeg_round_trip" => Operator::JpegRoundTrip(jpeg_params(&mut r, p)),
        "wsi_grid" => grid_params(&mut r, p),
        "tissue" => tissue_params(&mut r, p),
        "subtiles" => subtile_params(&mut r, p),
        "encode_tiles" => tile_encode_params(&mut r, p),
        other => {
            let _ = kind;
            let hint = known_hint(other, "operators", &OPERATORS);
            p.push(Problem::at(&op.loc, format!("unknown operator `{other}`")).hint(hint));
            return None;
        }
    };
    r.ok.then_some(typed)
}

/// `decode`'s parameters.
fn decode_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    r.check_keys(&DECODE_KEYS, p);
    Operator::Decode(DecodeParams {
        jpeg_warnings: r.choice(
            "jpeg_warnings",
            JpegWarnings::Error,
            parse_jpeg_warnings,
            &JPEG_WARNINGS,
            p,
        ),
    })
}

/// `crop`'s box expressions.
fn crop_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    r.check_keys(&CROP_KEYS, p);
    Operator::Crop(CropParams {
        left: r.expr("left", p),
        top: r.expr("top", p),
        width: r.expr("width", p),
        height: r.expr("height", p),
    })
}

/// `resize`'s size (refused when it makes more pixels than any image may
/// have) and filter.
fn resize_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    r.check_keys(&RESIZE_KEYS, p);
    let size = i64::from(DEFAULT_SIZE);
    let width = r.int("width", size, (1, MAX_EDGE), p);
    let height = r.int("height", size, (1, MAX_EDGE), p);
    let pixels = width as u64 * height as u64;
    if pixels > MAX_PIXELS {
        let at = r
            .get("width")
            .or(r.get("height"))
            .map_or(&r.op.loc, |q| &q.value.loc);
        p.push(
            Problem::at(
                at,
                format!(
                    "`resize` to {width}×{height} makes {pixels} pixels, more than any \
                     image may have ({MAX_PIXELS}, the decode limit): it cannot be useful"
                ),
            )
            .hint(
                "the standard's tiles are 384×384; a side of 32768 is the most a square may have",
            ),
        );
        r.ok = false;
    }
    Operator::Resize(ResizeParams {
        width: u32::try_from(width).unwrap_or(DEFAULT_SIZE),
        height: u32::try_from(height).unwrap_or(DEFAULT_SIZE),
        filter: r.choice("filter", Filter::Lanczos3, parse_filter, &FILTERS, p),
    })
}

/// `wsi_grid`'s geometry, level policy and reader.
fn grid_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    r.check_keys(&GRID_KEYS, p);
    Operator::WsiGrid(GridParams {
        size: r.int("size", 3840, (1, MAX_TILE), p) as u32,
        target_mpp: r.float("target_mpp", 0.4942, (1e-3, 100.0), p),
        tolerance: r.float("tolerance", 0.1, (0.0, 0.99), p),
        skip_ring: r.int("skip_ring", 1, (0, 1000), p) as u32,
        filter: r.choice("filter", Filter::Lanczos3, parse_filter, &FILTERS, p),
        level: r.choice("level", LevelPolicy::Finest, parse_level, &LEVELS, p),
        reader: r.choice("reader", ReaderChoice::Auto, parse_reader, &READERS, p),
    })
}

/// `tissue`'s detector and that detector's parameters.
fn tissue_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    let detector = r.choice("detector", "cpia-color", parse_detector, &DETECTORS, p);
    if detector == "otsu" {
        r.check_keys(&OTSU_KEYS, p);
        let d = OtsuParams::default();
        Operator::Tissue(TissueParams::Otsu(OtsuParams {
            thumbnail: r.int("thumbnail", i64::from(d.thumbnail), (64, 16384), p) as u32,
            median: odd_median(r, d.median, p),
            close: r.int("close", i64::from(d.close), (0, 64), p) as u32,
            min_fraction: r.float("min_fraction", d.min_fraction, (0.0, 1.0), p),
        }))
    } else {
        r.check_keys(&COLOR_KEYS, p);
        Operator::Tissue(TissueParams::Color {
            statistic: r.choice("statistic", Filter::Lanczos3, parse_filter, &FILTERS, p),
            max: r.byte("max", 220, p),
            min_r: r.byte("min_r", 100, p),
            min_b: r.byte("min_b", 30, p),
            r_minus_g: r.byte("r_minus_g", 20, p),
        })
    }
}

/// The Otsu detector's median window: odd, so that it has a centre.
fn odd_median(r: &mut Params<'_>, default: u32, p: &mut Vec<Problem>) -> u32 {
    let m = r.int("median", i64::from(default), (1, 31), p);
    if m % 2 == 0 {
        if let Some(prm) = r.get("median") {
            p.push(Problem::at(
                &prm.value.loc,
                "`median` of `tissue` must be odd (a window with a centre)",
            ));
            r.ok = false;
        }
    }
    m as u32
}

/// `subtiles`'s size (required), pick, white level and statistic.
fn subtile_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    r.check_keys(&SUBTILE_KEYS, p);
    let size = r.required_int("size", (1, MAX_TILE), p) as u32;
    let pick = r
        .get("pick")
        .is_some()
        .then(|| r.int("pick", 1, (1, 1 << 20), p) as u32);
    Operator::Subtiles(SubtileParams {
        size,
        pick,
        white: r.byte("white", 220, p),
        statistic: r.choice("statistic", Filter::Bilinear, parse_filter, &FILTERS, p),
    })
}

/// `encode_tiles`'s JPEG settings and its scale (required).
fn tile_encode_params(r: &mut Params<'_>, p: &mut Vec<Problem>) -> Operator {
    r.check_keys(&TILE_ENCODE_KEYS, p);
    let jpeg = jpeg_settings(r, p);
    let scale = r.choice("scale", "", parse_scale, &SCALES, p);
    if r.get("scale").is_none() {
        p.push(
            Problem::at(
                &r.op.loc,
                "operator `encode_tiles` requires the parameter `scale`",
            )
            .hint("the scale folder the tiles go to: XL, L, M or S"),
        );
        r.ok = false;
    }
    Operator::EncodeTiles(TileEncodeParams {
        jpeg,
        scale: scale.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(parse_filter("Lanczos3"), Some(Filter::Lanczos3));
        assert_eq!(parse_filter("catmull-rom"), Some(Filter::CatmullRom));
        assert_eq!(parse_filter("cubic"), None);
        for (s, v) in [
            ("4:2:0", Subsampling::S420),
            ("420", Subsampling::S420),
            ("4:2:2", Subsampling::S422),
            ("422", Subsampling::S422),
            ("4:4:4", Subsampling::S444),
            ("444", Subsampling::S444),
        ] {
            assert_eq!(parse_subsampling(s), Some(v));
        }
        assert_eq!(parse_subsampling("4:1:1"), None);
    }
}
