//! Recipes: one TOML file per source collection, parsed into a checked DAG.
//!
//! Architecture invariant: this layer reads text it is given (through a
//! loader callback, so the salsa layer can track which files a recipe read)
//! and never scans sources, touches the build state or runs an operator.
//! Everything a recipe can get wrong is reported here, before anything runs,
//! as a [`Diagnostic`] with file:line:column.

mod canonical;
mod dag;
pub mod diagnostic;
pub mod load;
mod merge;
mod params;
mod raw;
mod resolve;
pub mod route;
pub mod skeleton;
pub mod template;
#[cfg(test)]
mod testing;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::load_recipe;
pub use route::{Matcher, Route, Routed};
pub use skeleton::new_recipe_text;
pub use template::{check_component, Template, Var};

use crate::ops::Operator;

/// Most steps a recipe may have (after `extends` merging). The CPIA WSI
/// template has 9; nothing is walked recursively, but a bound keeps every
/// per-step cost of loading, planning and explaining small and makes a
/// runaway generated recipe a clear error instead of a slow one.
pub const MAX_STEPS: usize = 10_000;

/// Largest recipe or template file, in bytes.
pub const MAX_RECIPE_BYTES: usize = 8 << 20;

/// Whether a collection holds region-of-interest images or whole-slide images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Roi,
    Wsi,
}

/// Histology or cytology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Histo,
    Cyto,
}

/// The CPIA scales. Each is a folder of the dataset (`dataset/M/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scale {
    XL,
    L,
    M,
    S,
}

impl Scale {
    /// The folder name under the output root.
    pub fn dir(self) -> &'static str {
        match self {
            Scale::XL => "XL",
            Scale::L => "L",
            Scale::M => "M",
            Scale::S => "S",
        }
    }

    /// Parses `XL`, `L`, `M` or `S` (case-insensitive).
    pub fn parse(s: &str) -> Option<Scale> {
        match s.to_ascii_uppercase().as_str() {
            "XL" => Some(Scale::XL),
            "L" => Some(Scale::L),
            "M" => Some(Scale::M),
            "S" => Some(Scale::S),
            _ => None,
        }
    }
}

/// Descriptive metadata of a collection (`[collection]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CollectionMeta {
    pub name: String,
    pub kind: Kind,
    pub organs: Vec<String>,
    pub diseases: Vec<String>,
    pub stain: Option<String>,
    pub field: Option<Field>,
    pub year: Option<i64>,
    pub licence: Option<String>,
    pub citation: Option<String>,
    pub url: Option<String>,
}

/// Which files of a source root belong to the collection (`[inputs]`).
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// Name of a source root of the workspace (`[sources]` in `cpia.toml`).
    pub source: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Accepted file suffixes, lower case, without the dot; empty = any.
    pub suffixes: Vec<String>,
    /// Whether a file can be an input when its name or a folder on its path
    /// starts with `.` (`._x.png` copies of macOS, `.ipynb_checkpoints/`).
    pub hidden: bool,
    include_set: globset::GlobSet,
    exclude_set: globset::GlobSet,
}

impl PartialEq for InputSpec {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
            && self.include == o.include
            && self.exclude == o.exclude
            && self.suffixes == o.suffixes
            && self.hidden == o.hidden
    }
}
impl Eq for InputSpec {}

impl InputSpec {
    /// Builds the spec, hidden files accepted (set [`InputSpec::hidden`] to
    /// change that); globs were validated by the loader.
    pub fn new(
        source: String,
        include: Vec<String>,
        exclude: Vec<String>,
        suffixes: Vec<String>,
    ) -> Result<InputSpec, globset::Error> {
        let build = |pats: &[String]| -> Result<globset::GlobSet, globset::Error> {
            let mut b = globset::GlobSetBuilder::new();
            for p in pats {
                b.add(
                    globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .build()?,
                );
            }
            b.build()
        };
        Ok(InputSpec {
            include_set: build(&include)?,
            exclude_set: build(&exclude)?,
            source,
            include,
            exclude,
            suffixes: suffixes
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            hidden: true,
        })
    }

    /// Whether the file at `rel` (relative to the source root, `/`-separated)
    /// is an input of the collection.
    pub fn accepts(&self, rel: &str) -> bool {
        let suffix_ok = self.suffixes.is_empty()
            || rel
                .rsplit_once('.')
                .map(|(_, ext)| self.suffixes.iter().any(|s| s.eq_ignore_ascii_case(ext)))
                .unwrap_or(false);
        suffix_ok
            && (self.hidden || !rel.split('/').any(|c| c.starts_with('.')))
            && (self.include.is_empty() || self.include_set.is_match(rel))
            && !self.exclude_set.is_match(rel)
    }
}

/// One step of the DAG.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub id: String,
    pub op: Operator,
    /// Indices into [`Recipe::steps`] of the steps feeding this one, in the
    /// operator's argument order; empty means the step reads the source file.
    pub inputs: Vec<usize>,
}

/// A loaded, validated recipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// Path of the recipe file, as the loader was given it.
    pub path: std::path::PathBuf,
    pub collection: CollectionMeta,
    pub inputs: InputSpec,
    /// First matching route wins; a file no route matches is not an input.
    pub routes: Vec<Route>,
    /// In topological order: every step comes after its inputs.
    pub steps: Vec<Step>,
    /// Indices of the steps whose result is written (those nothing consumes).
    pub sinks: Vec<usize>,
    /// Output file name without extension, e.g. `{class}_{stem}`.
    pub name: Template,
    /// Microns-per-pixel policy (WSI recipes; `[mpp]`).
    pub mpp: crate::ops::wsi::mpp::MppPolicy,
    /// blake3 (hex) of the canonical form of everything above, templates
    /// (`extends`) resolved: the recipe hash of provenance records.
    pub hash: String,
    /// Every file read to build this recipe (itself, then its templates).
    pub files: Vec<std::path::PathBuf>,
}

impl Recipe {
    /// Which steps `sinks` need, themselves included. One backward sweep:
    /// [`Recipe::steps`] is in topological order (inputs first), so nothing
    /// walks the DAG recursively, however long a chain of steps is.
    pub fn ancestors(&self, sinks: &[usize]) -> Vec<bool> {
        let mut needed = vec![false; self.steps.len()];
        for &s in sinks {
            if let Some(n) = needed.get_mut(s) {
                *n = true;
            }
        }
        for i in (0..self.steps.len()).rev() {
            if needed[i] {
                for &j in &self.steps[i].inputs {
                    needed[j] = true;
                }
            }
        }
        needed
    }
}
