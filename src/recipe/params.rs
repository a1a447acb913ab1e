//! Typed operator parameters: op names, defaults, ranges, value kinds.
//!
//! Everything here is checked at load time, so an operator never sees a
//! parameter it cannot use. The filter and subsampling spellings are parsed
//! here (not in `ops`) so the recipe format does not depend on `ops` helpers.

use super::diagnostic::{known_hint, Problem, SourceMap};
use super::raw::{PVal, RawParam, Sp};
use super::Kind;
use crate::ops::{
    BoxExpr, CropParams, DecodeParams, Filter, JpegParams, Operator, ResizeParams, Subsampling,
    ValueKind,
};

/// Operator names as written in `op = "..."`.
pub(crate) const OPERATORS: [&str; 4] = ["decode", "crop", "resize", "encode_jpeg"];

const CROP_KEYS: [&str; 4] = ["left", "top", "width", "height"];
const RESIZE_KEYS: [&str; 3] = ["width", "height", "filter"];
const JPEG_KEYS: [&str; 2] = ["quality", "subsampling"];

const FILTERS: [&str; 5] = ["lanczos3", "catmullrom", "bilinear", "box", "nearest"];
const SUBSAMPLINGS: [&str; 6] = ["4:2:0", "420", "4:2:2", "422", "4:4:4", "444"];

/// Default edge of `resize`: the CPIA ROI size.
pub(crate) const DEFAULT_SIZE: u32 = 384;
/// Default JPEG quality: Pillow's, which the standard's datasets used.
pub(crate) const DEFAULT_QUALITY: u8 = 75;
/// Largest `resize` edge: the largest JPEG dimension.
const MAX_EDGE: i64 = 65535;

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
        "decode" => {
            r.check_keys(&[], p);
            Operator::Decode(DecodeParams {})
        }
        "crop" => {
            r.check_keys(&CROP_KEYS, p);
            Operator::Crop(CropParams {
                left: r.expr("left", p),
                top: r.expr("top", p),
                width: r.expr("width", p),
                height: r.expr("height", p),
            })
        }
        "resize" => {
            r.check_keys(&RESIZE_KEYS, p);
            let size = i64::from(DEFAULT_SIZE);
            let width = r.int("width", size, (1, MAX_EDGE), p);
            let height = r.int("height", size, (1, MAX_EDGE), p);
            Operator::Resize(ResizeParams {
                width: u32::try_from(width).unwrap_or(DEFAULT_SIZE),
                height: u32::try_from(height).unwrap_or(DEFAULT_SIZE),
                filter: r.choice("filter", Filter::Lanczos3, parse_filter, &FILTERS, p),
            })
        }
        "encode_jpeg" => {
            r.check_keys(&JPEG_KEYS, p);
            let q = r.int("quality", i64::from(DEFAULT_QUALITY), (1, 100), p);
            Operator::EncodeJpeg(JpegParams {
                quality: u8::try_from(q).unwrap_or(DEFAULT_QUALITY),
                subsampling: r.choice(
                    "subsampling",
                    Subsampling::S420,
                    parse_subsampling,
                    &SUBSAMPLINGS,
                    p,
                ),
            })
        }
        other => {
            let mut hint = known_hint(other, "operators", &OPERATORS);
            if kind == Kind::Wsi {
                hint.push_str("; WSI operators are not available yet");
            }
            p.push(Problem::at(&op.loc, format!("unknown operator `{other}`")).hint(hint));
            return None;
        }
    };
    r.ok.then_some(typed)
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
