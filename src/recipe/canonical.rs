//! The recipe hash: blake3 of a canonical encoding of the resolved recipe.
//!
//! It goes into provenance records and cache keys, so it must depend on what
//! the recipe means and on nothing else: not on whitespace, comments, key
//! order, the split between a recipe and its templates, or the order in which
//! steps are declared (steps are encoded sorted by id, inputs by id).

use super::route::{Matcher, Route};
use super::template::Template;
use super::{CollectionMeta, Field, InputSpec, Kind, Step};
use crate::ops::Operator;

/// Version of the encoding: bump when it changes, so old hashes never match.
const ENCODING: &str = "cpia-recipe-v1";

/// Canonical text of an operator and its parameters.
///
/// The operator's name, version and normalized parameters: the same
/// canonical form the cache keys use, so two spellings of one setting hash alike.
fn canonical_op(op: &Operator) -> String {
    let mut s = format!("{}@{}", op.name(), op.version());
    for (k, v) in op.params() {
        s.push_str(&format!(";{}={}", k.len(), k));
        s.push_str(&format!("{}={}", v.len(), v));
    }
    s
}

/// Length-prefixed fields: no value can be confused with a separator.
struct Enc(String);

impl Enc {
    fn field(&mut self, tag: &str, value: &str) {
        self.0.push_str(tag);
        self.0.push('=');
        self.0.push_str(&value.len().to_string());
        self.0.push(':');
        self.0.push_str(value);
        self.0.push('\n');
    }

    fn opt(&mut self, tag: &str, value: Option<&str>) {
        match value {
            Some(v) => self.field(tag, v),
            None => self.field(&format!("{tag}?"), ""),
        }
    }

    fn list(&mut self, tag: &str, values: &[String]) {
        self.field(tag, &values.len().to_string());
        for v in values {
            self.field("-", v);
        }
    }

    fn template(&mut self, tag: &str, t: &Template) {
        self.field(tag, t.as_str());
    }
}

/// The hash of a resolved recipe (lower-case hex): blake3 of [`canonical`].
pub(crate) fn recipe_hash(
    meta: &CollectionMeta,
    inputs: &InputSpec,
    routes: &[Route],
    name: &Template,
    steps: &[Step],
    mpp: &crate::ops::wsi::mpp::MppPolicy,
) -> String {
    let text = canonical(meta, inputs, routes, name, steps, mpp);
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The canonical text of a resolved recipe: what the recipe hash hashes,
/// archived with every build so a hash can be shown as the recipe it names.
pub(crate) fn canonical(
    meta: &CollectionMeta,
    inputs: &InputSpec,
    routes: &[Route],
    name: &Template,
    steps: &[Step],
    mpp: &crate::ops::wsi::mpp::MppPolicy,
) -> String {
    let mut e = Enc(String::new());
    e.field("encoding", ENCODING);
    e.field("name", &meta.name);
    e.field(
        "kind",
        match meta.kind {
            Kind::Roi => "roi",
            Kind::Wsi => "wsi",
        },
    );
    e.list("organs", &meta.organs);
    e.list("diseases", &meta.diseases);
    e.opt("stain", meta.stain.as_deref());
    e.opt(
        "field",
        meta.field.map(|f| match f {
            Field::Histo => "histo",
            Field::Cyto => "cyto",
        }),
    );
    e.opt("year", meta.year.map(|y| y.to_string()).as_deref());
    e.opt("licence", meta.licence.as_deref());
    e.opt("citation", meta.citation.as_deref());
    e.opt("url", meta.url.as_deref());

    e.field("source", &inputs.source);
    e.list("include", &inputs.include);
    e.list("exclude", &inputs.exclude);
    e.list("suffixes", &inputs.suffixes);
    // Only when set, so recipes written before the key existed keep their hash.
    if !inputs.hidden {
        e.field("hidden", "false");
    }

    e.field("routes", &routes.len().to_string());
    for r in routes {
        match &r.matcher {
            Matcher::All => e.field("all", ""),
            Matcher::Glob { pattern, .. } => e.field("glob", pattern),
            Matcher::Regex(re) => e.field("regex", re.as_str()),
        }
        e.template("sub_dataset", &r.sub_dataset);
        e.field("scale", r.scale.dir());
        match &r.class {
            Some(c) => e.template("class", c),
            None => e.field("class?", ""),
        }
    }
    e.template("output", name);

    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by(|&a, &b| steps[a].id.cmp(&steps[b].id));
    e.field("steps", &steps.len().to_string());
    for i in order {
        let s = &steps[i];
        e.field("id", &s.id);
        e.field("op", &canonical_op(&s.op));
        let ins: Vec<String> = s.inputs.iter().map(|&j| steps[j].id.clone()).collect();
        e.list("inputs", &ins);
    }
    let sources: Vec<String> = mpp.sources.iter().map(|s| s.as_str().to_string()).collect();
    e.list("mpp.sources", &sources);
    e.opt(
        "mpp.default",
        mpp.default.map(|d| format!("{d:?}")).as_deref(),
    );
    e.field("mpp.overrides", &mpp.overrides.len().to_string());
    for (k, v) in &mpp.overrides {
        e.field("-", k);
        e.field("=", &format!("{v:?}"));
    }
    e.0
}

impl super::Recipe {
    /// The canonical text whose blake3 is [`super::Recipe::hash`].
    pub fn canonical(&self) -> String {
        canonical(
            &self.collection,
            &self.inputs,
            &self.routes,
            &self.name,
            &self.steps,
            &self.mpp,
        )
    }
}
