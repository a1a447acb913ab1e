//! One recipe file as written: every key with its span, nothing resolved.
//!
//! The loader walks toml's span-preserving document tree (`toml::de::DeTable`)
//! by hand instead of deriving serde structs: it reports every unknown key and
//! wrong type of a file at once (serde stops at the first), keeps the span of
//! every key and value (step parameters are arbitrary per-operator keys), and
//! keeps "absent" apart from "present but wrong", which `extends` merging and
//! missing-key checks need.

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnostic::{known_hint, Loc, Problem};

/// A value with its location.
#[derive(Clone, Debug)]
pub(crate) struct Sp<T> {
    pub v: T,
    pub loc: Loc,
}

/// A key of a file: absent, present with an error already reported, or valid.
#[derive(Clone, Debug)]
pub(crate) enum Slot<T> {
    Absent,
    Bad,
    Val(Sp<T>),
}

impl<T> Slot<T> {
    /// `over` wins unless it is absent: the `extends` rule for scalar keys.
    pub fn overridden_by(self, over: Slot<T>) -> Slot<T> {
        match over {
            Slot::Absent => self,
            o => o,
        }
    }

    pub fn val(&self) -> Option<&Sp<T>> {
        match self {
            Slot::Val(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Slot::Absent)
    }
}

/// A list of strings, or a single string standing for a list of one.
pub(crate) type List = Vec<Sp<String>>;

#[derive(Clone, Debug)]
pub(crate) struct RawCollection {
    pub header: Option<Loc>,
    pub name: Slot<String>,
    pub kind: Slot<String>,
    pub organs: Slot<List>,
    pub diseases: Slot<List>,
    pub stain: Slot<String>,
    pub field: Slot<String>,
    pub year: Slot<i64>,
    pub licence: Slot<String>,
    pub citation: Slot<String>,
    pub url: Slot<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct RawInputs {
    pub header: Option<Loc>,
    pub source: Slot<String>,
    pub include: Slot<List>,
    pub exclude: Slot<List>,
    pub suffixes: Slot<List>,
    pub hidden: Slot<bool>,
}

#[derive(Clone, Debug)]
pub(crate) struct RawRoute {
    pub header: Loc,
    pub glob: Slot<String>,
    pub regex: Slot<String>,
    pub sub_dataset: Slot<String>,
    pub scale: Slot<String>,
    pub class: Slot<String>,
}

/// `[mpp]`: the microns-per-pixel policy of a WSI recipe.
#[derive(Clone, Debug)]
pub(crate) struct RawMpp {
    pub header: Option<Loc>,
    pub sources: Slot<List>,
    pub default: Slot<f64>,
    /// `[mpp.overrides]`: slide name or glob = µm/px; replaced wholesale by a child.
    pub overrides: Slot<Vec<(Sp<String>, Sp<f64>)>>,
}

/// A parameter value of a step: only what typing needs, owned.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PVal {
    Str(String),
    /// None: an integer outside i64.
    Int(Option<i64>),
    Float(f64),
    Bool(bool),
    /// Any other TOML type, by name.
    Other(&'static str),
}

impl PVal {
    /// The value as a number: a float, or an integer taken as one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            PVal::Float(f) => Some(f),
            PVal::Int(Some(n)) => Some(n as f64),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            PVal::Str(_) => "string",
            PVal::Int(_) => "integer",
            PVal::Float(_) => "float",
            PVal::Bool(_) => "boolean",
            PVal::Other(t) => t,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RawParam {
    pub key: Sp<String>,
    pub value: Sp<PVal>,
}

#[derive(Clone, Debug)]
pub(crate) struct RawStep {
    pub header: Loc,
    pub id: Sp<String>,
    pub op: Slot<String>,
    /// `input = "a"` or `inputs = ["a", "b"]`.
    pub inputs: Slot<List>,
    pub params: Vec<RawParam>,
}

#[derive(Clone, Debug)]
pub(crate) struct RawRecipe {
    pub file: usize,
    pub extends: Slot<String>,
    pub collection: RawCollection,
    pub inputs: RawInputs,
    /// None when the file has no `route` key at all.
    pub routes: Option<Vec<RawRoute>>,
    pub output_name: Slot<String>,
    pub mpp: RawMpp,
    pub steps: Vec<RawStep>,
    /// The file has more than [`super::MAX_STEPS`] steps (reported; none read).
    pub too_many_steps: bool,
}

const TOP_KEYS: [&str; 7] = [
    "extends",
    "collection",
    "inputs",
    "route",
    "output",
    "mpp",
    "steps",
];
const MPP_KEYS: [&str; 3] = ["sources", "default", "overrides"];
const COLLECTION_KEYS: [&str; 10] = [
    "name", "kind", "organs", "diseases", "stain", "field", "year", "licence", "citation", "url",
];
const INPUT_KEYS: [&str; 5] = ["source", "include", "exclude", "suffixes", "hidden"];
const ROUTE_KEYS: [&str; 5] = ["glob", "regex", "sub_dataset", "scale", "class"];
const OUTPUT_KEYS: [&str; 1] = ["name"];

/// Reads the keys of one table, reporting wrong types and unknown keys.
struct Reader<'a, 'i> {
    table: &'a DeTable<'i>,
    file: usize,
    /// Dotted prefix for messages, e.g. `collection.`.
    prefix: &'a str,
}

fn loc(file: usize, span: std::ops::Range<usize>) -> Loc {
    Loc { file, span }
}

fn article(t: &str) -> &'static str {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl<'a, 'i> Reader<'a, 'i> {
    fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    fn wrong_type(&self, key: &str, want: &str, v: &Spanned<DeValue<'_>>, p: &mut Vec<Problem>) {
        let t = v.get_ref().type_str();
        p.push(Problem::at(
            &loc(self.file, v.span()),
            format!(
                "`{}{key}` must be {want}, found {} {t}",
                self.prefix,
                article(t)
            ),
        ));
    }

    fn unknown_keys(&self, known: &[&str], section: &str, p: &mut Vec<Problem>) {
        for (k, _) in self.table.iter() {
            let name: &str = k.get_ref().as_ref();
            if !known.contains(&name) {
                p.push(
                    Problem::at(
                        &loc(self.file, k.span()),
                        format!("unknown key `{name}` in {section}"),
                    )
                    .hint(known_hint(name, "keys", known)),
                );
            }
        }
    }

    fn string(&self, key: &str, p: &mut Vec<Problem>) -> Slot<String> {
        match self.get(key) {
            None => Slot::Absent,
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Slot::Val(Sp {
                    v: s.to_string(),
                    loc: loc(self.file, v.span()),
                }),
                _ => {
                    self.wrong_type(key, "a string", v, p);
                    Slot::Bad
                }
            },
        }
    }

    fn int(&self, key: &str, p: &mut Vec<Problem>) -> Slot<i64> {
        match self.get(key) {
            None => Slot::Absent,
            Some(v) => match v.get_ref() {
                DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) => Slot::Val(Sp {
                        v: n,
                        loc: loc(self.file, v.span()),
                    }),
                    Err(_) => {
                        p.push(Problem::at(
                            &loc(self.file, v.span()),
                            format!("`{}{key}` is out of range", self.prefix),
                        ));
                        Slot::Bad
                    }
                },
                _ => {
                    self.wrong_type(key, "an integer", v, p);
                    Slot::Bad
                }
            },
        }
    }

    fn boolean(&self, key: &str, p: &mut Vec<Problem>) -> Slot<bool> {
        match self.get(key) {
            None => Slot::Absent,
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => Slot::Val(Sp {
                    v: *b,
                    loc: loc(self.file, v.span()),
                }),
                _ => {
                    self.wrong_type(key, "a boolean (true or false)", v, p);
                    Slot::Bad
                }
            },
        }
    }

    /// A number (an integer is accepted as a float).
    fn float(&self, key: &str, p: &mut Vec<Problem>) -> Slot<f64> {
        match self.get(key) {
            None => Slot::Absent,
            Some(v) => match pval(v.get_ref()).as_f64().filter(|f| f.is_finite()) {
                Some(f) => Slot::Val(Sp {
                    v: f,
                    loc: loc(self.file, v.span()),
                }),
                None => {
                    self.wrong_type(key, "a number", v, p);
                    Slot::Bad
                }
            },
        }
    }

    /// A table of numbers keyed by free-form strings (`[mpp.overrides]`).
    fn number_table(&self, key: &str, p: &mut Vec<Problem>) -> Slot<Vec<(Sp<String>, Sp<f64>)>> {
        let Some(v) = self.get(key) else {
            return Slot::Absent;
        };
        let DeValue::Table(t) = v.get_ref() else {
            self.wrong_type(key, "a table of numbers", v, p);
            return Slot::Bad;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (k, val) in t.iter() {
            let num = pval(val.get_ref()).as_f64().filter(|f| f.is_finite());
            match num {
                Some(n) => out.push((
                    Sp {
                        v: k.get_ref().to_string(),
                        loc: loc(self.file, k.span()),
                    },
                    Sp {
                        v: n,
                        loc: loc(self.file, val.span()),
                    },
                )),
                None => {
                    self.wrong_type(&format!("{key}.{}", k.get_ref()), "a number", val, p);
                    ok = false;
                }
            }
        }
        if ok {
            Slot::Val(Sp {
                v: out,
                loc: loc(self.file, v.span()),
            })
        } else {
            Slot::Bad
        }
    }

    /// A string or an array of strings.
    fn list(&self, key: &str, p: &mut Vec<Problem>) -> Slot<List> {
        let Some(v) = self.get(key) else {
            return Slot::Absent;
        };
        let whole = loc(self.file, v.span());
        match v.get_ref() {
            DeValue::String(s) => Slot::Val(Sp {
                v: vec![Sp {
                    v: s.to_string(),
                    loc: whole.clone(),
                }],
                loc: whole,
            }),
            DeValue::Array(a) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in a.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(Sp {
                            v: s.to_string(),
                            loc: loc(self.file, item.span()),
                        }),
                        _ => {
                            let t = item.get_ref().type_str();
                            p.push(Problem::at(
                                &loc(self.file, item.span()),
                                format!(
                                    "`{}{key}` must list strings, found {} {t}",
                                    self.prefix,
                                    article(t)
                                ),
                            ));
                            ok = false;
                        }
                    }
                }
                if ok {
                    Slot::Val(Sp { v: out, loc: whole })
                } else {
                    Slot::Bad
                }
            }
            _ => {
                self.wrong_type(key, "a string or an array of strings", v, p);
                Slot::Bad
            }
        }
    }
}

/// The sub-table `key` of `top`, or None (reported) if it is not a table.
fn sub_table<'a, 'i>(
    top: &Reader<'a, 'i>,
    key: &str,
    p: &mut Vec<Problem>,
) -> Option<(&'a DeTable<'i>, Loc)> {
    let v = top.get(key)?;
    match v.get_ref() {
        DeValue::Table(t) => Some((t, loc(top.file, v.span()))),
        _ => {
            top.wrong_type(key, "a table", v, p);
            None
        }
    }
}

/// The tables of an array of tables `key` (`[[key]]`), each with its span.
fn table_array<'a, 'i>(
    top: &Reader<'a, 'i>,
    key: &str,
    p: &mut Vec<Problem>,
) -> Option<Vec<(&'a DeTable<'i>, Loc)>> {
    let v = top.get(key)?;
    let DeValue::Array(a) = v.get_ref() else {
        top.wrong_type(key, &format!("an array of tables (`[[{key}]]`)"), v, p);
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    for item in a.iter() {
        match item.get_ref() {
            DeValue::Table(t) => out.push((t, loc(top.file, item.span()))),
            _ => top.wrong_type(key, "a list of tables", item, p),
        }
    }
    Some(out)
}

/// Reads one parsed file. Problems are pushed to `p`; a problem never stops
/// the reading of the other keys.
pub(crate) fn read(file: usize, doc: &DeTable<'_>, p: &mut Vec<Problem>) -> RawRecipe {
    let top = Reader {
        table: doc,
        file,
        prefix: "",
    };
    top.unknown_keys(&TOP_KEYS, "the recipe", p);
    // In the order of the file's sections, so problems are reported so.
    let collection = read_collection(&top, p);
    let inputs = read_inputs(&top, p);
    let routes = read_routes(&top, p);
    let output_name = read_output_name(&top, p);
    let mpp = read_mpp(&top, p);
    let (steps, too_many_steps) = read_steps(&top, p);
    RawRecipe {
        file,
        extends: top.string("extends", p),
        collection,
        inputs,
        routes,
        output_name,
        mpp,
        steps,
        too_many_steps,
    }
}

/// The table `[key]` of `top` (an empty one when absent or not a table) as a
/// reader whose messages say `key.`, its unknown keys reported; and the
/// span of its header, when present.
fn section<'a, 'i>(
    top: &Reader<'a, 'i>,
    key: &'a str,
    prefix: &'a str,
    known: &[&str],
    empty: &'a DeTable<'i>,
    p: &mut Vec<Problem>,
) -> (Reader<'a, 'i>, Option<Loc>) {
    let (table, header) = match sub_table(top, key, p) {
        Some((t, l)) => (t, Some(l)),
        None => (empty, None),
    };
    let r = Reader {
        table,
        file: top.file,
        prefix,
    };
    r.unknown_keys(known, &format!("[{key}]"), p);
    (r, header)
}

/// `[collection]`: the collection's name, kind and descriptive metadata.
fn read_collection(top: &Reader<'_, '_>, p: &mut Vec<Problem>) -> RawCollection {
    let empty = DeTable::new();
    let (c, header) = section(
        top,
        "collection",
        "collection.",
        &COLLECTION_KEYS,
        &empty,
        p,
    );
    RawCollection {
        header,
        name: c.string("name", p),
        kind: c.string("kind", p),
        organs: c.list("organs", p),
        diseases: c.list("diseases", p),
        stain: c.string("stain", p),
        field: c.string("field", p),
        year: c.int("year", p),
        licence: c.string("licence", p),
        citation: c.string("citation", p),
        url: c.string("url", p),
    }
}

/// `[inputs]`: the source root and which files of it are inputs.
fn read_inputs(top: &Reader<'_, '_>, p: &mut Vec<Problem>) -> RawInputs {
    let empty = DeTable::new();
    let (i, header) = section(top, "inputs", "inputs.", &INPUT_KEYS, &empty, p);
    RawInputs {
        header,
        source: i.string("source", p),
        include: i.list("include", p),
        exclude: i.list("exclude", p),
        suffixes: i.list("suffixes", p),
        hidden: i.boolean("hidden", p),
    }
}

/// `[[route]]`: the routing rules, in order; `None` when there are none.
fn read_routes(top: &Reader<'_, '_>, p: &mut Vec<Problem>) -> Option<Vec<RawRoute>> {
    let tables = table_array(top, "route", p)?;
    let routes = tables
        .into_iter()
        .map(|(t, header)| {
            let r = Reader {
                table: t,
                file: top.file,
                prefix: "route.",
            };
            r.unknown_keys(&ROUTE_KEYS, "[[route]]", p);
            RawRoute {
                header,
                glob: r.string("glob", p),
                regex: r.string("regex", p),
                sub_dataset: r.string("sub_dataset", p),
                scale: r.string("scale", p),
                class: r.string("class", p),
            }
        })
        .collect();
    Some(routes)
}

/// `[output]`: the output name template.
fn read_output_name(top: &Reader<'_, '_>, p: &mut Vec<Problem>) -> Slot<String> {
    match sub_table(top, "output", p) {
        Some((t, _)) => {
            let o = Reader {
                table: t,
                file: top.file,
                prefix: "output.",
            };
            o.unknown_keys(&OUTPUT_KEYS, "[output]", p);
            o.string("name", p)
        }
        None => Slot::Absent,
    }
}

/// `[mpp]`: the MPP fallback chain.
fn read_mpp(top: &Reader<'_, '_>, p: &mut Vec<Problem>) -> RawMpp {
    let empty = DeTable::new();
    let (m, header) = section(top, "mpp", "mpp.", &MPP_KEYS, &empty, p);
    RawMpp {
        header,
        sources: m.list("sources", p),
        default: m.float("default", p),
        overrides: m.number_table("overrides", p),
    }
}

/// `[[steps]]`, each read alone (a duplicate id reported at the second);
/// none at all when there are more than [`super::MAX_STEPS`] (then the
/// second value is true).
fn read_steps(top: &Reader<'_, '_>, p: &mut Vec<Problem>) -> (Vec<RawStep>, bool) {
    let mut steps: Vec<RawStep> = Vec::new();
    let mut ids: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let tables = table_array(top, "steps", p).unwrap_or_default();
    let too_many_steps = tables.len() > super::MAX_STEPS;
    if let Some((_, header)) = tables.get(super::MAX_STEPS) {
        p.push(too_many_steps_problem(header, tables.len()));
    }
    for (t, header) in tables.into_iter().filter(|_| !too_many_steps) {
        if let Some(s) = read_step(top.file, t, header, p) {
            if let Some(&first) = ids.get(&s.id.v) {
                p.push(
                    Problem::at(&s.id.loc, format!("duplicate step id `{}`", s.id.v))
                        .also("first defined at", &steps[first].id.loc),
                );
            } else {
                ids.insert(s.id.v.clone(), steps.len());
                steps.push(s);
            }
        }
    }
    (steps, too_many_steps)
}

/// The error of a recipe with more than [`super::MAX_STEPS`] steps, at the
/// first step beyond the bound.
pub(crate) fn too_many_steps_problem(first_beyond: &Loc, steps: usize) -> Problem {
    Problem::at(
        first_beyond,
        format!(
            "the recipe has {steps} steps, more than the limit of {}",
            super::MAX_STEPS
        ),
    )
    .hint("this is the first step beyond the limit; a recipe this large is surely generated by mistake")
}

fn read_step(file: usize, t: &DeTable<'_>, header: Loc, p: &mut Vec<Problem>) -> Option<RawStep> {
    let r = Reader {
        table: t,
        file,
        prefix: "steps.",
    };
    let id = match r.string("id", p) {
        Slot::Val(id) => id,
        Slot::Bad => return None,
        Slot::Absent => {
            p.push(
                Problem::at(&header, "step without an `id`")
                    .hint("every step needs `id = \"...\"`"),
            );
            return None;
        }
    };
    let valid_id = !id.v.is_empty()
        && id
            .v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_id {
        p.push(
            Problem::at(&id.loc, format!("invalid step id `{}`", id.v))
                .hint("ids use letters, digits, `_` and `-`"),
        );
    }
    let op = r.string("op", p);
    let input = r.list("input", p);
    let inputs = r.list("inputs", p);
    let inputs = match (input, inputs) {
        (Slot::Val(a), Slot::Val(b)) => {
            p.push(
                Problem::at(&b.loc, "a step has either `input` or `inputs`, not both")
                    .also("`input` is set at", &a.loc),
            );
            Slot::Bad
        }
        (Slot::Absent, b) => b,
        (a, Slot::Absent) => a,
        _ => Slot::Bad,
    };
    let mut params = Vec::new();
    for (k, v) in t.iter() {
        let key: &str = k.get_ref().as_ref();
        if matches!(key, "id" | "op" | "input" | "inputs") {
            continue;
        }
        params.push(RawParam {
            key: Sp {
                v: key.to_string(),
                loc: loc(file, k.span()),
            },
            value: Sp {
                v: pval(v.get_ref()),
                loc: loc(file, v.span()),
            },
        });
    }
    Some(RawStep {
        header,
        id,
        op,
        inputs,
        params,
    })
}

fn pval(v: &DeValue<'_>) -> PVal {
    match v {
        DeValue::String(s) => PVal::Str(Cow::to_string(s)),
        DeValue::Integer(i) => PVal::Int(i64::from_str_radix(i.as_str(), i.radix()).ok()),
        DeValue::Float(f) => PVal::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => PVal::Bool(*b),
        other => PVal::Other(other.type_str()),
    }
}
