//! Test fixtures: an in-memory file system for `load_recipe` and positions.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{load_recipe, Diagnostic, Diagnostics, Recipe};

/// A BreakHis-like recipe: two regex routes by magnification, class = folder.
pub const BREAKHIS: &str = r#"# BreakHis
[collection]
name = "BreakHis"
kind = "roi"
organs = "breast"
diseases = ["breast cancer"]
stain = "H&E"
field = "histo"
year = 2016

[inputs]
source = "BreakHis"
include = ["**/*.png"]
exclude = ["**/*_anno.*", "**/.DS_Store"]
suffixes = ["PNG"]

[[route]]
regex = '-(40)-'
sub_dataset = "BreaKHis_{1}x"
scale = "L"
class = "{dir}"

[[route]]
regex = '-(100|200|400)-'
sub_dataset = "BreaKHis_{1}x"
scale = "M"
class = "{dir}"

[output]
name = "{class}_{stem}"

[[steps]]
id = "decode"
op = "decode"

[[steps]]
id = "crop"
op = "crop"
input = "decode"
left = "(w - s) / 2"
top = "(h - s) / 2"
width = "s"
height = "s"

[[steps]]
id = "resize"
op = "resize"
input = "crop"
width = 384
height = 384
filter = "lanczos3"

[[steps]]
id = "encode"
op = "encode_jpeg"
input = "resize"
quality = 75
subsampling = "4:2:0"
"#;

/// The standard ROI steps, for recipes that only test other sections.
pub const STEPS: &str = r#"
[[steps]]
id = "decode"
op = "decode"
[[steps]]
id = "crop"
op = "crop"
input = "decode"
left = "(w - s) / 2"
top = "(h - s) / 2"
width = "s"
height = "s"
[[steps]]
id = "resize"
op = "resize"
input = "crop"
[[steps]]
id = "encode"
op = "encode_jpeg"
input = "resize"
"#;

/// Loads `root` from the in-memory files `files` (path, text).
pub fn load_from(files: &[(&str, &str)], root: &str) -> Result<Recipe, Diagnostics> {
    let map: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    load_recipe(Path::new(root), &mut |p: &Path| {
        map.get(p)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    })
}

/// Loads one recipe text as `recipes/test.toml`.
pub fn load(text: &str) -> Result<Recipe, Diagnostics> {
    load_from(&[("recipes/test.toml", text)], "recipes/test.toml")
}

/// Loads a text that must fail; returns its diagnostics.
pub fn errors(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.0,
    }
}

/// 1-based line and column (in characters) of the `nth` (0-based)
/// occurrence of `needle` in `text`, computed independently of the loader.
pub fn pos(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let (at, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in the text"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The single diagnostic of `text`, asserting its message contains `msg` and
/// it is at `needle` (occurrence `nth`), shifted by `shift` columns.
pub fn single(text: &str, msg: &str, needle: &str, nth: usize, shift: usize) -> Diagnostic {
    let errs = errors(text);
    let rendered: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got:\n{}",
        rendered.join("\n")
    );
    let d = errs
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no error"));
    assert!(
        d.message.contains(msg),
        "message `{}` lacks `{msg}`",
        d.message
    );
    let (line, col) = pos(text, needle, nth);
    assert_eq!((d.line, d.column), (line, col + shift), "{d}");
    d
}
