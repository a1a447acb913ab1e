//! From the merged raw recipe to typed, validated parts.
//!
//! Each section is checked independently and reports every problem it finds;
//! a value that already failed to read (`Slot::Bad`) is skipped silently so
//! one mistake is reported once.

use std::ops::Range;

use super::dag::{self, Draft};
use super::diagnostic::{known_hint, Loc, Problem, SourceMap};
use super::params;
use super::raw::{List, RawCollection, RawInputs, RawMpp, RawRecipe, RawRoute, Slot, Sp};
use super::route::{Matcher, Route};
use super::template::{check_component, Template, Var, BUILTIN_VARS};
use super::{CollectionMeta, Field, InputSpec, Kind, Scale, Step};
use crate::ops::wsi::mpp::{MppPolicy, MppSource};

/// The validated content of a recipe (everything but path, hash and files).
pub(crate) struct Resolved {
    pub collection: CollectionMeta,
    pub inputs: InputSpec,
    pub routes: Vec<Route>,
    pub name: Template,
    pub steps: Vec<Step>,
    pub sinks: Vec<usize>,
    pub mpp: MppPolicy,
}

/// Default `[output].name`: the standard's `{stem}.jpg`.
pub(crate) const DEFAULT_NAME: &str = "{stem}";
/// Default `sub_dataset` of a route: the collection name.
pub(crate) const DEFAULT_SUB_DATASET: &str = "{collection}";

/// The start of the recipe file: where errors about missing sections point.
fn root() -> Loc {
    Loc {
        file: 0,
        span: 0..0,
    }
}

fn required<'a, T>(
    slot: &'a Slot<T>,
    key: &str,
    at: &Loc,
    p: &mut Vec<Problem>,
) -> Option<&'a Sp<T>> {
    match slot {
        Slot::Val(v) => Some(v),
        Slot::Bad => None,
        Slot::Absent => {
            p.push(Problem::at(at, format!("missing required key `{key}`")));
            None
        }
    }
}

fn opt_string(slot: &Slot<String>) -> Option<String> {
    slot.val().map(|s| s.v.clone())
}

fn strings(slot: &Slot<List>) -> Vec<String> {
    slot.val()
        .map(|l| l.v.iter().map(|s| s.v.clone()).collect())
        .unwrap_or_default()
}

/// Validates everything; None if any problem was reported (here or before).
pub(crate) fn resolve(r: &RawRecipe, sm: &SourceMap, p: &mut Vec<Problem>) -> Option<Resolved> {
    let before = p.len();
    let collection = collection(&r.collection, p);
    let kind = collection.as_ref().map_or(Kind::Roi, |c| c.kind);
    let inputs = inputs(&r.inputs, p);
    let routes = routes(r.routes.as_deref().unwrap_or(&[]), kind, r, sm, p);
    let name = output_name(r, routes.as_deref(), sm, p);
    let steps = steps(r, kind, sm, p);
    let mpp = mpp(&r.mpp, p);
    if p.len() > before {
        return None;
    }
    let (steps, sinks) = steps?;
    if kind == Kind::Wsi {
        let grids = steps
            .iter()
            .filter(|s| matches!(s.op, crate::ops::Operator::WsiGrid(_)))
            .count();
        if grids != 1 {
            p.push(
                Problem::at(&root(), format!("a WSI recipe needs exactly one `wsi_grid` step, it has {grids}"))
                    .hint("the grid step reads each cell of the slide; every other step works on its tiles"),
            );
            return None;
        }
    }
    Some(Resolved {
        collection: collection?,
        inputs: inputs?,
        routes: routes?.into_iter().map(|r| r.route).collect(),
        name: name?,
        steps,
        sinks,
        mpp: mpp?,
    })
}

fn mpp(m: &RawMpp, p: &mut Vec<Problem>) -> Option<MppPolicy> {
    let mut policy = MppPolicy::default();
    let before = p.len();
    if let Some(list) = m.sources.val() {
        policy.sources.clear();
        for s in &list.v {
            match MppSource::parse(&s.v) {
                Some(src) if !policy.sources.contains(&src) => policy.sources.push(src),
                Some(_) => p.push(Problem::at(&s.loc, format!("`{}` is listed twice", s.v))),
                None => {
                    p.push(
                        Problem::at(&s.loc, format!("unknown MPP source `{}`", s.v))
                            .hint(known_hint(&s.v, "MPP sources", &MppSource::NAMES)),
                    )
                }
            }
        }
    }
    let sane = |v: &Sp<f64>, p: &mut Vec<Problem>| {
        use crate::ops::wsi::mpp::{MAX_MPP, MIN_MPP};
        if !(v.v >= MIN_MPP && v.v <= MAX_MPP) {
            p.push(Problem::at(
                &v.loc,
                format!(
                    "{} is not a plausible µm/px (must be >= {MIN_MPP} and <= {MAX_MPP})",
                    v.v
                ),
            ));
        }
    };
    if let Some(d) = m.default.val() {
        sane(d, p);
        policy.default = Some(d.v);
        if !policy.sources.contains(&MppSource::Default) {
            p.push(
                Problem::at(
                    &d.loc,
                    "`mpp.default` is set but `default` is not in `mpp.sources`",
                )
                .hint("add \"default\" to `sources`, or remove `default`"),
            );
        }
    }
    if let Some(o) = m.overrides.val() {
        if !o.v.is_empty() && !policy.sources.contains(&MppSource::Override) {
            p.push(
                Problem::at(
                    &o.loc,
                    "`mpp.overrides` are set but `override` is not in `mpp.sources`",
                )
                .hint("add \"override\" to `sources`, or remove the overrides"),
            );
        }
        for (k, v) in &o.v {
            sane(v, p);
            if globset::Glob::new(&k.v).is_err() {
                p.push(Problem::at(
                    &k.loc,
                    format!("`{}` is not a valid slide name or glob", k.v),
                ));
            }
            policy.overrides.push((k.v.clone(), v.v));
        }
    }
    (p.len() == before).then_some(policy)
}

fn collection(c: &RawCollection, p: &mut Vec<Problem>) -> Option<CollectionMeta> {
    let at = c.header.clone().unwrap_or_else(root);
    let name = required(&c.name, "collection.name", &at, p);
    if let Some(n) = name {
        if let Err(e) = check_component(&n.v) {
            p.push(
                Problem::at(&n.loc, format!("collection name `{}` {e}", n.v))
                    .hint("the name is the default sub-dataset folder: it must be one safe path component"),
            );
        }
    }
    let kind =
        required(&c.kind, "collection.kind", &at, p).and_then(|k| match k.v.as_str() {
            "roi" => Some(Kind::Roi),
            "wsi" => Some(Kind::Wsi),
            other => {
                p.push(
                    Problem::at(&k.loc, format!("unknown collection kind `{other}`"))
                        .hint(known_hint(other, "kinds", &["roi", "wsi"])),
                );
                None
            }
        });
    let field = match c.field.val() {
        None => None,
        Some(f) => match f.v.as_str() {
            "histo" => Some(Field::Histo),
            "cyto" => Some(Field::Cyto),
            other => {
                p.push(
                    Problem::at(&f.loc, format!("unknown field `{other}`")).hint(known_hint(
                        other,
                        "fields",
                        &["histo", "cyto"],
                    )),
                );
                None
            }
        },
    };
    Some(CollectionMeta {
        name: name?.v.clone(),
        kind: kind?,
        organs: strings(&c.organs),
        diseases: strings(&c.diseases),
        stain: opt_string(&c.stain),
        field,
        year: c.year.val().map(|y| y.v),
        licence: opt_string(&c.licence),
        citation: opt_string(&c.citation),
        url: opt_string(&c.url),
    })
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}

fn check_globs(slot: &Slot<List>, p: &mut Vec<Problem>) -> Option<Vec<String>> {
    let mut ok = true;
    for g in slot.val().map(|l| l.v.as_slice()).unwrap_or(&[]) {
        if let Err(e) = glob(&g.v) {
            p.push(Problem::at(
                &g.loc,
                format!("invalid glob `{}`: {}", g.v, e.kind()),
            ));
            ok = false;
        }
    }
    ok.then(|| strings(slot))
}

fn inputs(i: &RawInputs, p: &mut Vec<Problem>) -> Option<InputSpec> {
    let at = i.header.clone().unwrap_or_else(root);
    let source = required(&i.source, "inputs.source", &at, p);
    if let Some(s) = source {
        if s.v.trim().is_empty() {
            p.push(
                Problem::at(&s.loc, "`inputs.source` is empty")
                    .hint("name a source root of the workspace (`[sources]` in cpia.toml)"),
            );
        }
    }
    let include = check_globs(&i.include, p);
    let exclude = check_globs(&i.exclude, p);
    let mut suffixes = Vec::new();
    for s in i.suffixes.val().map(|l| l.v.as_slice()).unwrap_or(&[]) {
        let v = s.v.strip_prefix('.').unwrap_or(&s.v);
        if v.is_empty() || v.contains(['/', '\\', '.']) {
            p.push(
                Problem::at(&s.loc, format!("invalid suffix `{}`", s.v))
                    .hint("write suffixes without the dot, e.g. `suffixes = [\"png\", \"tif\"]`"),
            );
        } else {
            suffixes.push(v.to_ascii_lowercase());
        }
    }
    let (source, include, exclude) = (source?, include?, exclude?);
    match InputSpec::new(source.v.clone(), include, exclude, suffixes) {
        Ok(mut spec) => {
            spec.hidden = i.hidden.val().is_none_or(|h| h.v);
            Some(spec)
        }
        Err(e) => {
            p.push(Problem::at(&at, format!("invalid glob: {e}")));
            None
        }
    }
}

/// A route with what its templates may refer to.
struct RouteInfo {
    route: Route,
    header: Loc,
    /// Number of capture groups including group 0; None for glob/all routes.
    groups: Option<usize>,
    names: Vec<String>,
}

/// Which route template a placeholder is in (the output name is checked
/// separately, against every route).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slotted {
    SubDataset,
    Class,
}

/// Parses the template at `value`, checking syntax, that it is not a literal
/// unsafe path component, and every placeholder against `ok_var`.
fn template(
    value: &Sp<String>,
    what: &str,
    sm: &SourceMap,
    p: &mut Vec<Problem>,
    mut ok_var: impl FnMut(&Var, &Loc, &mut Vec<Problem>) -> bool,
) -> Option<Template> {
    let span_of = |r: Range<usize>| sm.inner(&value.loc, &value.v, r.start, r.len());
    let t = match Template::parse(&value.v) {
        Ok(t) => t,
        Err(e) => {
            p.push(Problem::at(
                &span_of(e.offset..e.offset + e.len),
                format!("invalid {what} template: {}", e.message),
            ));
            return None;
        }
    };
    let mut ok = true;
    for (v, r) in t.vars() {
        ok &= ok_var(v, &span_of(r), p);
    }
    if let Some((r, e)) = t.literal_problem() {
        p.push(
            Problem::at(&span_of(r), format!("{what} `{}` {e}", value.v))
                .hint(format!("every {what} must render to one safe path component: no `/`, `\\`, `.` or `..`, no leading `.`")),
        );
        ok = false;
    }
    ok.then_some(t)
}

/// Checks a capture placeholder against one route.
fn capture_ok(v: &Var, info_groups: Option<usize>, names: &[String]) -> Result<(), String> {
    match (v, info_groups) {
        (Var::Capture(n), Some(g)) if *n < g => Ok(()),
        (Var::Capture(n), Some(g)) => Err(format!(
            "capture `{{{n}}}` does not exist: the route's regex has {} group(s)",
            g.saturating_sub(1)
        )),
        (Var::Capture(n), None) => Err(format!("capture `{{{n}}}` needs a route with a `regex`")),
        (Var::Named(n), _) if names.iter().any(|m| m == n) => Ok(()),
        (Var::Named(n), _) => Err(format!("unknown template variable `{n}`")),
        _ => Ok(()),
    }
}

fn available(names: &[String], groups: Option<usize>, allow: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    if let Some(g) = groups {
        v.extend((0..g).map(|i| i.to_string()));
    }
    v.extend(names.iter().cloned());
    v
}

fn var_problem(v: &Var, at: &Loc, msg: String, candidates: &[String]) -> Problem {
    let c: Vec<&str> = candidates.iter().map(String::as_str).collect();
    let word = v.to_string();
    Problem::at(at, msg).hint(known_hint(&word, "variables", &c))
}

fn builtins_for(slot: Slotted) -> Vec<&'static str> {
    BUILTIN_VARS
        .iter()
        .copied()
        .filter(|v| match slot {
            Slotted::SubDataset => *v != "class" && *v != "sub_dataset",
            Slotted::Class => *v != "class",
        })
        .collect()
}

/// A placeholder check for the templates of one route.
/// `unknown`: the regex did not compile (already reported), so captures
/// cannot be checked and are accepted.
fn route_var_ok(
    slot: Slotted,
    groups: Option<usize>,
    names: &[String],
    unknown: bool,
) -> impl FnMut(&Var, &Loc, &mut Vec<Problem>) -> bool + '_ {
    move |v, at, p| {
        if unknown && matches!(v, Var::Capture(_) | Var::Named(_)) {
            return true;
        }
        let allow = builtins_for(slot);
        let name = v.to_string();
        let builtin = BUILTIN_VARS.contains(&name.as_str());
        if builtin && !allow.contains(&name.as_str()) {
            let what = if slot == Slotted::SubDataset {
                "sub_dataset"
            } else {
                "class"
            };
            p.push(
                Problem::at(at, format!("`{{{name}}}` cannot be used in `{what}`"))
                    .hint(format!(
                        "sub_dataset is rendered first, then class, then the output name; `{what}` may use: {}",
                        available(names, groups, &allow).join(", ")
                    )),
            );
            return false;
        }
        match capture_ok(v, groups, names) {
            Ok(()) => true,
            Err(m) => {
                p.push(var_problem(v, at, m, &available(names, groups, &allow)));
                false
            }
        }
    }
}

fn routes(
    raw: &[RawRoute],
    kind: Kind,
    r: &RawRecipe,
    sm: &SourceMap,
    p: &mut Vec<Problem>,
) -> Option<Vec<RouteInfo>> {
    if raw.is_empty() && kind == Kind::Roi && r.routes.is_none() {
        p.push(
            Problem::at(&root(), "an ROI recipe needs at least one `[[route]]`")
                .hint("routes give each input its scale, e.g. `[[route]]` with `scale = \"M\"` (a route without glob or regex matches every input)"),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for rr in raw {
        match route(rr, sm, p) {
            Some(i) => out.push(i),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn route(rr: &RawRoute, sm: &SourceMap, p: &mut Vec<Problem>) -> Option<RouteInfo> {
    let mut ok = true;
    let mut groups = None;
    let mut names = Vec::new();
    let matcher = match (rr.glob.val(), rr.regex.val()) {
        (Some(_), Some(re)) => {
            p.push(Problem::at(
                &re.loc,
                "a route has either `glob` or `regex`, not both",
            ));
            None
        }
        (Some(g), None) => match glob(&g.v) {
            Ok(gl) => Some(Matcher::Glob {
                pattern: g.v.clone(),
                matcher: gl.compile_matcher(),
            }),
            Err(e) => {
                p.push(Problem::at(
                    &g.loc,
                    format!("invalid glob `{}`: {}", g.v, e.kind()),
                ));
                None
            }
        },
        (None, Some(re)) => match regex::Regex::new(&re.v) {
            Ok(rx) => {
                groups = Some(rx.captures_len());
                for n in rx.capture_names().flatten() {
                    if BUILTIN_VARS.contains(&n) {
                        p.push(
                            Problem::at(
                                &re.loc,
                                format!("capture group name `{n}` is a built-in template variable"),
                            )
                            .hint("rename the group"),
                        );
                        ok = false;
                    }
                    names.push(n.to_string());
                }
                Some(Matcher::Regex(rx))
            }
            Err(e) => {
                p.push(regex_problem(re, &e, sm));
                None
            }
        },
        (None, None) if rr.glob.is_absent() && rr.regex.is_absent() => Some(Matcher::All),
        (None, None) => None,
    };
    // A glob/regex error was reported: captures cannot be checked.
    let bad_regex = matcher.is_none();
    let scale = required(&rr.scale, "route.scale", &rr.header, p).and_then(|s| {
        let v = Scale::parse(&s.v);
        if v.is_none() {
            p.push(
                Problem::at(&s.loc, format!("unknown scale `{}`", s.v))
                    .hint("scales are XL, L, M and S"),
            );
        }
        v
    });
    let default_sub = Sp {
        v: DEFAULT_SUB_DATASET.to_string(),
        loc: rr.header.clone(),
    };
    let sub_value = match &rr.sub_dataset {
        Slot::Val(v) => Some(v),
        Slot::Absent => Some(&default_sub),
        Slot::Bad => None,
    };
    let sub_dataset = sub_value.and_then(|v| {
        template(
            v,
            "sub_dataset",
            sm,
            p,
            route_var_ok(Slotted::SubDataset, groups, &names, bad_regex),
        )
    });
    // None: an error was reported; Some(None): the route gives no class.
    let class: Option<Option<Template>> = match &rr.class {
        Slot::Absent => Some(None),
        Slot::Bad => None,
        Slot::Val(v) => template(
            v,
            "class",
            sm,
            p,
            route_var_ok(Slotted::Class, groups, &names, bad_regex),
        )
        .map(Some),
    };
    if !ok {
        return None;
    }
    Some(RouteInfo {
        route: Route {
            matcher: matcher?,
            sub_dataset: sub_dataset?,
            scale: scale?,
            class: class?,
        },
        header: rr.header.clone(),
        groups,
        names,
    })
}

/// The regex crate's error as a diagnostic: its last `error:` line as the
/// message and, for a one-line pattern, its caret mapped into the file.
fn regex_problem(re: &Sp<String>, e: &regex::Error, sm: &SourceMap) -> Problem {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let short = lines
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.as_str());
    // Format: "regex parse error:", "    PATTERN", "    ^^^", "error: ...".
    let caret = match lines.as_slice() {
        [_, pat, marks, ..] if pat.strip_prefix("    ") == Some(re.v.as_str()) => {
            marks.strip_prefix("    ").and_then(|m| {
                let start = m.find('^')?;
                let n = m[start..].chars().take_while(|c| *c == '^').count();
                // Columns are characters of the pattern; convert to bytes.
                let byte = |col: usize| re.v.char_indices().nth(col).map_or(re.v.len(), |(b, _)| b);
                let from = byte(start);
                Some(sm.inner(&re.loc, &re.v, from, byte(start + n) - from))
            })
        }
        _ => None,
    };
    Problem::at(
        &caret.unwrap_or_else(|| re.loc.clone()),
        format!("invalid regex: {short}"),
    )
}

fn output_name(
    r: &RawRecipe,
    routes: Option<&[RouteInfo]>,
    sm: &SourceMap,
    p: &mut Vec<Problem>,
) -> Option<Template> {
    let default = Sp {
        v: DEFAULT_NAME.to_string(),
        loc: root(),
    };
    let value = match &r.output_name {
        Slot::Val(v) => v,
        Slot::Absent => &default,
        Slot::Bad => return None,
    };
    // Without valid routes, placeholders can only be checked for syntax.
    let routes = routes.unwrap_or(&[]);
    let check_routes = !routes.is_empty();
    let no_route_captures = r.routes.as_ref().is_none_or(|v| v.is_empty());
    template(value, "output name", sm, p, |v, at, p| {
        let name = v.to_string();
        if BUILTIN_VARS.contains(&name.as_str()) {
            if *v == Var::Class {
                if let Some(ri) = routes.iter().find(|ri| ri.route.class.is_none()) {
                    p.push(
                        Problem::at(
                            at,
                            "the output name uses `{class}` but a route gives no class",
                        )
                        .hint("add `class = \"...\"` to every route, e.g. `class = \"{dir}\"`")
                        .also("the route is at", &ri.header),
                    );
                    return false;
                }
            }
            return true;
        }
        if no_route_captures {
            let msg = match v {
                Var::Capture(n) => format!("capture `{{{n}}}` needs a route with a `regex`"),
                _ => format!("unknown template variable `{name}`"),
            };
            let all: Vec<String> = BUILTIN_VARS.iter().map(|s| s.to_string()).collect();
            p.push(var_problem(v, at, msg, &all));
            return false;
        }
        if !check_routes {
            return true;
        }
        for ri in routes {
            if let Err(m) = capture_ok(v, ri.groups, &ri.names) {
                p.push(
                    var_problem(v, at, m, &available(&ri.names, ri.groups, &BUILTIN_VARS))
                        .also("every route must provide it; this one is at", &ri.header),
                );
                return false;
            }
        }
        true
    })
}

fn steps(
    r: &RawRecipe,
    kind: Kind,
    sm: &SourceMap,
    p: &mut Vec<Problem>,
) -> Option<(Vec<Step>, Vec<usize>)> {
    if r.too_many_steps {
        return None;
    }
    if let Some(s) = r.steps.get(super::MAX_STEPS) {
        // Within the bound file by file, beyond it once merged.
        p.push(super::raw::too_many_steps_problem(&s.header, r.steps.len()));
        return None;
    }
    if r.steps.is_empty() {
        let hint = match kind {
            Kind::Roi => "an ROI recipe decodes, crops, resizes and encodes: `[[steps]]` with `op = \"decode\"`, `\"crop\"`, `\"resize\"`, `\"encode_jpeg\"` (`cpia new NAME --kind roi` writes them)",
            Kind::Wsi => "a WSI recipe reads cells with `wsi_grid`, keeps tissue with `tissue`, cuts `subtiles` and writes them with `encode_tiles` (`cpia new NAME --kind wsi` writes them; `templates/cpia-wsi.toml` in the demo is the CPIA standard)",
        };
        p.push(Problem::at(&root(), "the recipe has no `[[steps]]`").hint(hint));
        return None;
    }
    let mut drafts = Vec::new();
    for s in &r.steps {
        let (op, op_loc) = match &s.op {
            Slot::Val(op) => (params::operator(op, &s.params, kind, sm, p), op.loc.clone()),
            Slot::Bad => (None, s.header.clone()),
            Slot::Absent => {
                let ids: Vec<&str> = r
                    .steps
                    .iter()
                    .filter(|o| !o.op.is_absent())
                    .map(|o| o.id.v.as_str())
                    .collect();
                let hint = match super::diagnostic::did_you_mean(&s.id.v, &ids) {
                    Some(id) => format!("to override the template's step `{id}`, use its id; a new step needs `op` (known operators: {})", params::OPERATORS.join(", ")),
                    None => format!("known operators: {}", params::OPERATORS.join(", ")),
                };
                p.push(Problem::at(&s.id.loc, format!("step `{}` has no `op`", s.id.v)).hint(hint));
                (None, s.header.clone())
            }
        };
        let inputs = match &s.inputs {
            Slot::Val(l) => Some(l.v.clone()),
            Slot::Absent => Some(Vec::new()),
            Slot::Bad => None,
        };
        drafts.push(Draft {
            id: s.id.clone(),
            op_loc,
            op,
            inputs,
        });
    }
    dag::build(&drafts, kind, p)
}
