//! The starting recipe written by `cpia new NAME --kind roi|wsi`.
//!
//! The text documents every key in place, so a new collection starts from a
//! recipe that loads (ROI) and explains what to change.

use super::Kind;

/// `s` as a TOML basic string, quotes included.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A fully commented recipe for a new collection `name` (also used as the
/// source root name). The caller should check `name` with
/// [`super::template::check_component`]: an unsafe name gives a recipe that
/// does not load.
pub fn new_recipe_text(name: &str, kind: Kind) -> String {
    let q = toml_string(name);
    match kind {
        Kind::Roi => ROI.replace("@NAME@", &q),
        Kind::Wsi => WSI.replace("@NAME@", &q).replace("@STEPS@", CPIA_WSI_STEPS),
    }
}

const ROI: &str = r#"# Recipe of one ROI (region-of-interest) collection: which files are inputs,
# where each goes (sub-dataset, scale, class, name) and the steps that turn
# each into a standardized 384x384 JPEG. Key reference: docs/recipes.md.

# Optional: start from a template (path relative to this file's folder);
# keys below override it, steps merge by `id`.
# extends = "templates/roi-centre-square.toml"

[collection]
name = @NAME@          # required; default sub-dataset name (one safe path component)
kind = "roi"           # "roi" or "wsi"
organs = []            # e.g. ["breast"] (a single string is accepted too)
diseases = []          # e.g. ["breast cancer"]
# stain = "H&E"
# field = "histo"      # "histo" or "cyto"
# year = 2016
# licence = "CC BY 4.0"
# citation = "Author et al. 2016"
# url = "https://example.org/dataset"

[inputs]
source = @NAME@        # required: a source root of the workspace ([sources] in cpia.toml)
include = []           # globs relative to the source root, `/`-separated; empty = every file
exclude = ["**/.DS_Store", "**/*.txt"]
suffixes = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"]  # case-insensitive; empty = any
hidden = false         # false: a file or folder named .* (macOS ._ copies) is never an input

# Routes, first match wins; an input no route matches is skipped.
# A route has `glob = "..."` or `regex = '...'` (searched in the relative
# path; its groups are {1}, {2}, ... and {name}), or neither: match all.
[[route]]
# regex = '-(40)-'
sub_dataset = "{collection}"   # template; variables: {stem} {name} {ext} {dir}
                               # {collection} {scale} and regex captures
scale = "M"                    # XL | L | M | S, from the magnification
# class = "{dir}"              # optional class (e.g. the folder name); enables {class}

[output]
name = "{stem}"                # file name without `.jpg`; e.g. "{class}_{stem}"

# The standard ROI pipeline: decode, the largest centred square,
# Lanczos-3 to 384x384, JPEG quality 75 with 4:2:0 subsampling.
[[steps]]
id = "decode"
op = "decode"                  # no `input`: reads the source file's bytes
# jpeg_warnings = "accept"     # build JPEGs libjpeg warns about (corrupt data); default "error"

[[steps]]
id = "crop"
op = "crop"
input = "decode"
left = "(w - s) / 2"           # integer expressions of w, h and s = min(w, h);
top = "(h - s) / 2"            # `/` is floor division
width = "s"
height = "s"

[[steps]]
id = "resize"
op = "resize"
input = "crop"
width = 384
height = 384
filter = "lanczos3"            # lanczos3 | catmullrom | bilinear | box | nearest

[[steps]]
id = "encode"
op = "encode_jpeg"             # every final step (sink) must be encode_jpeg
input = "resize"
quality = 75                   # 1..=100
subsampling = "4:2:0"          # 4:2:0 | 4:2:2 | 4:4:4
"#;

/// The `[[steps]]` of the CPIA WSI standard, as in `recipes/templates/cpia-wsi.toml`.
pub const CPIA_WSI_TEMPLATE: &str = include_str!("../../recipes/templates/cpia-wsi.toml");

/// The steps part of [`CPIA_WSI_TEMPLATE`] (from its first `[[steps]]`).
const CPIA_WSI_STEPS: &str = {
    // Everything from the first step table on; the template's header comment
    // and [mpp] are repeated in the skeleton with more explanation.
    let bytes = CPIA_WSI_TEMPLATE.as_bytes();
    let needle = b"[[steps]]";
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        let mut j = 0;
        while j < needle.len() && bytes[i + j] == needle[j] {
            j += 1;
        }
        if j == needle.len() {
            break;
        }
        i += 1;
    }
    match std::str::from_utf8(bytes.split_at(i).1) {
        Ok(s) => s,
        Err(_) => panic!("template is UTF-8"),
    }
};

/// The CPIA ROI template, as in `recipes/templates/roi-centre-square.toml`.
pub const ROI_CENTRE_SQUARE_TEMPLATE: &str =
    include_str!("../../recipes/templates/roi-centre-square.toml");

const WSI: &str = r#"# Recipe of one WSI (whole-slide image) collection. Key reference:
# docs/recipes.md. The steps below are the CPIA standard (the same as
# recipes/templates/cpia-wsi.toml): a recipe may instead write
# `extends = "templates/cpia-wsi.toml"` and keep only [collection] and [inputs].

[collection]
name = @NAME@          # required; tiles go to <scale>/<name>-<size>/
kind = "wsi"
organs = []            # e.g. ["lymph node"]
diseases = []          # e.g. ["breast cancer metastasis"]
# stain = "H&E"
# field = "histo"
# year = 2016
# licence = "CC0"
# citation = "Author et al. 2016"
# url = "https://example.org/dataset"

[inputs]
source = @NAME@        # required: a source root of the workspace ([sources] in cpia.toml)
include = []           # globs relative to the source root; empty = every file
exclude = []
suffixes = ["svs", "tif", "tiff", "ndpi", "mrxs"]
hidden = false         # false: a file or folder named .* (macOS ._ copies) is never an input

# Where each slide's microns per pixel come from, first that gives a value wins.
[mpp]
sources = ["openslide", "tiff-resolution", "override", "default"]
# default = 0.25                      # used when nothing else gives a value
# [mpp.overrides]                     # by slide name (file name up to its first dot) or glob
# "TCGA-XX-0000-01Z-00-DX1" = 0.2520

@STEPS@"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::load_recipe;
    use std::path::Path;

    fn load(text: String) -> Result<crate::recipe::Recipe, crate::recipe::Diagnostics> {
        load_recipe(Path::new("recipes/new.toml"), &mut |_| Ok(text.clone()))
    }

    #[test]
    fn roi_skeleton_loads() {
        let r = load(new_recipe_text("My \"Set\"", Kind::Roi));
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.collection.name, "My \"Set\"");
        assert_eq!(r.steps.len(), 4);
        assert_eq!(r.sinks, vec![3]);
        assert_eq!(
            r.route("a/b.png").ok().flatten().map(|x| x.name),
            Some("b".into())
        );
    }

    #[test]
    fn wsi_skeleton_loads_as_the_cpia_standard() {
        let r = load(new_recipe_text("CAMELYON16", Kind::Wsi)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.collection.kind, Kind::Wsi);
        assert_eq!(r.sinks.len(), 4, "XL, L, M and S writers");
        assert!(r
            .steps
            .iter()
            .any(|s| matches!(s.op, crate::ops::Operator::WsiGrid(_))));
    }
}
