//! Microns per pixel: where a slide's resolution comes from, and which values
//! are nonsense.
//!
//! A recipe declares a fallback chain; the first source that yields a value is
//! used, and the value and its origin are recorded with every output:
//!
//! | source | where the value comes from |
//! |---|---|
//! | `openslide` | the `openslide.mpp-x` / `openslide.mpp-y` properties (parsed from their strings: the typed API is only f32) |
//! | `tiff-resolution` | `tiff.XResolution` / `tiff.YResolution` with `tiff.ResolutionUnit` centimeter or inch (OpenSlide 3.4.1 does not convert them) |
//! | `override` | the recipe's `[mpp.overrides]` table, by slide name (file name up to its first dot) or glob on it |
//! | `default` | the recipe's `[mpp] default` |
//!
//! A value that a source yields but that fails the sanity checks (below
//! [`MIN_MPP`], above [`MAX_MPP`], x and y more than 1% apart, or a
//! 72/96-dpi screen resolution)
//! is not silently skipped: the chain stops with an error naming the value,
//! so a wrong scanner header never becomes a wrong dataset.

use std::collections::BTreeMap;

/// Above this, a "slide" is not microscopy.
pub const MAX_MPP: f64 = 100.0;

/// Below this, a header is not a microscope's: 0.01 µm/px is ten times
/// finer than the finest optical scanners (oil immersion at 100×, about
/// 0.1 µm/px) and far below the diffraction limit. A smaller value (1e-300,
/// 0.0001) would make every grid cell a few pixels of the slide.
pub const MIN_MPP: f64 = 0.01;

/// One link of the fallback chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MppSource {
    OpenSlide,
    TiffResolution,
    Override,
    Default,
}

impl MppSource {
    /// Parses the recipe spelling.
    pub fn parse(s: &str) -> Option<MppSource> {
        match s {
            "openslide" => Some(MppSource::OpenSlide),
            "tiff-resolution" | "tiff" => Some(MppSource::TiffResolution),
            "override" | "overrides" => Some(MppSource::Override),
            "default" => Some(MppSource::Default),
            _ => None,
        }
    }

    /// The recipe spelling, also recorded as the MPP's origin.
    pub fn as_str(self) -> &'static str {
        match self {
            MppSource::OpenSlide => "openslide",
            MppSource::TiffResolution => "tiff-resolution",
            MppSource::Override => "override",
            MppSource::Default => "default",
        }
    }

    /// Every spelling, for hints.
    pub const NAMES: [&'static str; 4] = ["openslide", "tiff-resolution", "override", "default"];
}

/// A recipe's MPP policy (`[mpp]`).
#[derive(Clone, Debug, PartialEq)]
pub struct MppPolicy {
    pub sources: Vec<MppSource>,
    /// (pattern, value): a slide name or a glob on it, sorted by pattern; an
    /// exact name wins over globs, then the first matching glob.
    pub overrides: Vec<(String, f64)>,
    pub default: Option<f64>,
}

impl Default for MppPolicy {
    fn default() -> Self {
        MppPolicy {
            sources: vec![
                MppSource::OpenSlide,
                MppSource::TiffResolution,
                MppSource::Override,
                MppSource::Default,
            ],
            overrides: Vec::new(),
            default: None,
        }
    }
}

impl Eq for MppPolicy {}

impl std::hash::Hash for MppPolicy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.sources.hash(state);
        for (p, v) in &self.overrides {
            p.hash(state);
            v.to_bits().hash(state);
        }
        self.default.map(f64::to_bits).hash(state);
    }
}

/// The MPP used for a slide and where it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mpp {
    pub value: f64,
    pub origin: MppSource,
}

/// Resolves the MPP of slide `name` (its file name up to the first dot) from
/// its properties under `policy`.
pub fn resolve(
    props: &BTreeMap<String, String>,
    name: &str,
    policy: &MppPolicy,
) -> Result<Mpp, String> {
    let mut tried = Vec::new();
    for &src in &policy.sources {
        let found = match src {
            MppSource::OpenSlide => from_openslide(props)?,
            MppSource::TiffResolution => from_tiff(props)?,
            // An exact name wins over globs; among globs, the first in
            // (sorted) key order.
            MppSource::Override => policy
                .overrides
                .iter()
                .find(|(pat, _)| pat == name)
                .or_else(|| policy.overrides.iter().find(|(pat, _)| matches(pat, name)))
                .map(|&(_, v)| (v, v)),
            MppSource::Default => policy.default.map(|v| (v, v)),
        };
        match found {
            Some((x, y)) => {
                check(x, y, src)?;
                return Ok(Mpp {
                    value: x,
                    origin: src,
                });
            }
            None => tried.push(src.as_str()),
        }
    }
    Err(format!(
        "no microns-per-pixel: none of {} gave a value; add `[mpp.overrides] \"{name}\" = <µm/px>` or `[mpp] default` to the recipe",
        tried.join(", ")
    ))
}

fn num(props: &BTreeMap<String, String>, key: &str) -> Result<Option<f64>, String> {
    match props.get(key) {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("property {key} = `{s}` is not a number")),
    }
}

fn from_openslide(props: &BTreeMap<String, String>) -> Result<Option<(f64, f64)>, String> {
    let x = num(props, "openslide.mpp-x")?;
    let y = num(props, "openslide.mpp-y")?;
    Ok(x.map(|x| (x, y.unwrap_or(x))))
}

fn from_tiff(props: &BTreeMap<String, String>) -> Result<Option<(f64, f64)>, String> {
    let (Some(xr), unit) = (
        num(props, "tiff.XResolution")?,
        props.get("tiff.ResolutionUnit"),
    ) else {
        return Ok(None);
    };
    let yr = num(props, "tiff.YResolution")?.unwrap_or(xr);
    let per = match unit.map(|u| u.to_ascii_lowercase()) {
        Some(u) if u == "centimeter" || u == "3" => 10_000.0,
        Some(u) if u == "inch" || u == "2" => 25_400.0,
        _ => return Ok(None), // "none": unitless aspect ratio, not a resolution
    };
    if xr <= 0.0 || yr <= 0.0 {
        return Err(format!("tiff.XResolution = {xr} is not a resolution"));
    }
    // 72 and 96 dpi are what image editors write when they know nothing.
    for dpi in [72.0, 96.0] {
        let screen_mpp = 25_400.0 / dpi;
        if ((per / xr) - screen_mpp).abs() < 0.01 * screen_mpp {
            return Err(format!(
                "TIFF resolution tags say {dpi} dpi ({:.1} µm/px): a screen default, not a scanner's resolution",
                per / xr
            ));
        }
    }
    Ok(Some((per / xr, per / yr)))
}

fn check(x: f64, y: f64, src: MppSource) -> Result<(), String> {
    let from = src.as_str();
    if !(x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite()) {
        return Err(format!("MPP from {from} is {x} x {y}: must be positive"));
    }
    if x > MAX_MPP || y > MAX_MPP {
        return Err(format!(
            "MPP from {from} is {x} µm/px: above {MAX_MPP}, not microscopy"
        ));
    }
    if x < MIN_MPP || y < MIN_MPP {
        return Err(format!(
            "MPP from {from} is {:e} µm/px: below {MIN_MPP}, finer than any optical scanner",
            x.min(y)
        ));
    }
    if (x - y).abs() > 0.01 * x.max(y) {
        return Err(format!(
            "MPP from {from} differs between x ({x}) and y ({y}) by more than 1%: non-square pixels are not supported"
        ));
    }
    Ok(())
}

fn matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn openslide_first_with_full_precision() {
        let p = props(&[("openslide.mpp-x", "0.4990"), ("openslide.mpp-y", "0.4990")]);
        let m = resolve(&p, "s", &MppPolicy::default()).unwrap();
        assert_eq!(m.value, 0.499);
        assert_eq!(m.origin, MppSource::OpenSlide);
    }

    #[test]
    fn tiff_tags_in_centimetres_and_inches() {
        let p = props(&[
            ("tiff.XResolution", "40000"),
            ("tiff.ResolutionUnit", "centimeter"),
        ]);
        assert_eq!(resolve(&p, "s", &MppPolicy::default()).unwrap().value, 0.25);
        let p = props(&[
            ("tiff.XResolution", "101600"),
            ("tiff.ResolutionUnit", "inch"),
        ]);
        assert_eq!(resolve(&p, "s", &MppPolicy::default()).unwrap().value, 0.25);
    }

    #[test]
    fn screen_resolutions_are_rejected() {
        // openslide-python's boxes.tiff: 28.35 px/cm = 72 dpi.
        let p = props(&[
            ("tiff.XResolution", "28.35"),
            ("tiff.ResolutionUnit", "centimeter"),
        ]);
        let e = resolve(&p, "boxes", &MppPolicy::default()).unwrap_err();
        assert!(e.contains("72 dpi"), "{e}");
    }

    #[test]
    fn overrides_and_defaults() {
        let policy = MppPolicy {
            overrides: vec![("tcga-*".into(), 0.252)],
            ..MppPolicy::default()
        };
        let m = resolve(&props(&[]), "tcga-cr-7395-01a-01-ts1", &policy).unwrap();
        assert_eq!((m.value, m.origin), (0.252, MppSource::Override));
        let e = resolve(&props(&[]), "other", &policy).unwrap_err();
        assert!(e.contains("no microns-per-pixel"), "{e}");
        let policy = MppPolicy {
            default: Some(0.5),
            ..policy
        };
        assert_eq!(
            resolve(&props(&[]), "other", &policy).unwrap().origin,
            MppSource::Default
        );
    }

    #[test]
    fn nonsense_is_rejected() {
        for (x, y) in [
            ("0", "0"),
            ("-1", "-1"),
            ("150", "150"),
            ("0.25", "0.5"),
            ("1e-300", "1e-300"),
            ("0.0001", "0.0001"),
            ("0.25", "0.0001"),
        ] {
            let p = props(&[("openslide.mpp-x", x), ("openslide.mpp-y", y)]);
            assert!(resolve(&p, "s", &MppPolicy::default()).is_err(), "{x} {y}");
        }
    }
}
