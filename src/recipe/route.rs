//! Routing: which sub-dataset, scale, class and output name an input gets.
//!
//! Collections mix magnifications and patch sizes (BreakHis `-40-`/`-100-`,
//! GasHisSDB `80/`/`160/`), so a recipe lists routes, first match wins. Every
//! rendered name is checked to be one safe path component: a file called
//! `..` in a source tree must not make the build write outside its output.

use super::template::{check_component, Template, Var};
use super::{Recipe, Scale};

/// What selects the inputs of a route.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Every input.
    All,
    /// A glob over the relative path (`*` does not cross `/`).
    Glob {
        pattern: String,
        matcher: globset::GlobMatcher,
    },
    /// A regex searched in the relative path (anchor with `^…$` if needed);
    /// its capture groups are template variables.
    Regex(regex::Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Matcher::All, Matcher::All) => true,
            (Matcher::Glob { pattern: a, .. }, Matcher::Glob { pattern: b, .. }) => a == b,
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}
impl Eq for Matcher {}

/// One `[[route]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Which inputs the route takes.
    pub matcher: Matcher,
    /// Sub-dataset folder name; defaults to `{collection}`.
    pub sub_dataset: Template,
    /// Scale folder of every input of the route.
    pub scale: Scale,
    /// Class recorded for each input (and `{class}` of the output name).
    pub class: Option<Template>,
}

/// Where one input goes: `{out}/{scale}/{sub_dataset}/{name}.jpg`, with the
/// class recorded in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Routed {
    /// One safe path component.
    pub sub_dataset: String,
    pub scale: Scale,
    /// One safe path component, if the route gives a class.
    pub class: Option<String>,
    /// Output file name without extension.
    pub name: String,
}

/// The path-derived variables of an input.
struct PathVars<'a> {
    stem: &'a str,
    name: &'a str,
    ext: &'a str,
    dir: &'a str,
}

impl<'a> PathVars<'a> {
    fn of(rel: &'a str) -> PathVars<'a> {
        let (dir_path, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = dir_path.rsplit('/').next().unwrap_or("");
        let stem = name.split('.').next().unwrap_or("");
        let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
        PathVars {
            stem,
            name,
            ext,
            dir,
        }
    }
}

impl Route {
    /// The capture values of `rel` if the route matches it (index 0 is the
    /// whole match; None entries are groups that did not participate).
    fn captures(&self, rel: &str) -> Option<Captures> {
        match &self.matcher {
            Matcher::All => Some(Captures::default()),
            Matcher::Glob { matcher, .. } => matcher.is_match(rel).then(Captures::default),
            Matcher::Regex(re) => re.captures(rel).map(|c| Captures {
                numbered: c
                    .iter()
                    .map(|m| m.map(|m| m.as_str().to_string()))
                    .collect(),
                named: re
                    .capture_names()
                    .enumerate()
                    .filter_map(|(i, n)| n.map(|n| (n.to_string(), i)))
                    .collect(),
            }),
        }
    }
}

#[derive(Default)]
struct Captures {
    numbered: Vec<Option<String>>,
    named: Vec<(String, usize)>,
}

impl Captures {
    fn get(&self, v: &Var) -> Option<String> {
        let i = match v {
            Var::Capture(i) => *i,
            Var::Named(n) => self.named.iter().find(|(m, _)| m == n)?.1,
            _ => return None,
        };
        self.numbered.get(i).cloned().flatten()
    }
}

impl Recipe {
    /// Routes the input at `rel` (relative to the source root, `/`-separated):
    /// None if no route matches; Err if a rendered name is not a safe path
    /// component or a placeholder has no value (e.g. an optional regex group
    /// that did not participate).
    pub fn route(&self, rel: &str) -> Result<Option<Routed>, String> {
        let Some((route, caps)) = self
            .routes
            .iter()
            .find_map(|r| r.captures(rel).map(|c| (r, c)))
        else {
            return Ok(None);
        };
        let pv = PathVars::of(rel);
        let scale = route.scale;
        let collection = self.collection.name.as_str();
        let lookup = |v: &Var, sub: Option<&str>, class: Option<&str>| -> Option<String> {
            Some(match v {
                Var::Stem => pv.stem.to_string(),
                Var::Name => pv.name.to_string(),
                Var::Ext => pv.ext.to_string(),
                Var::Dir => pv.dir.to_string(),
                Var::Collection => collection.to_string(),
                Var::Scale => scale.dir().to_string(),
                Var::SubDataset => sub?.to_string(),
                Var::Class => class?.to_string(),
                v => caps.get(v)?,
            })
        };
        let checked = |what: &str, value: String| -> Result<String, String> {
            check_component(&value)
                .map(|()| value.clone())
                .map_err(|e| {
                    format!("`{rel}`: {what} `{value}` {e}; it must be one safe path component")
                })
        };
        let render = |what: &str, t: &Template, sub: Option<&str>, class: Option<&str>| {
            t.render(&|v| lookup(v, sub, class))
                .map_err(|e| format!("`{rel}`: {what}: {e}"))
                .and_then(|s| checked(what, s))
        };
        let sub_dataset = render("sub_dataset", &route.sub_dataset, None, None)?;
        let class = match &route.class {
            Some(t) => Some(render("class", t, Some(&sub_dataset), None)?),
            None => None,
        };
        if class.is_none() && self.name.uses(&Var::Class) {
            return Err(format!(
                "`{rel}`: the output name `{}` uses `{{class}}` but the matching route gives no class",
                self.name
            ));
        }
        let name = render(
            "output name",
            &self.name,
            Some(&sub_dataset),
            class.as_deref(),
        )?;
        Ok(Some(Routed {
            sub_dataset,
            scale,
            class,
            name,
        }))
    }
}

/// A sub-dataset a recipe can write, known without looking at any input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubDataset {
    /// Its folder name; when `exact` is false, the route's template with
    /// `{collection}` filled in (`SIPaKMeD_{cell}`): the names depend on inputs.
    pub name: String,
    pub scale: Scale,
    pub exact: bool,
}

/// Most names one route's template is expanded into before it is shown as
/// a pattern instead.
const MAX_EXPANSION: usize = 64;

impl Recipe {
    /// The sub-datasets the routes can produce, in route order, without
    /// duplicates: a route's `sub_dataset` template expanded over the values
    /// its variables can take — `{collection}`, `{scale}`, and capture groups
    /// whose pattern matches a finite set of strings (`(?P<mag>100|200|400)`)
    /// — or the template itself when a variable is open (`{dir}`, `[^/]+`).
    pub fn route_sub_datasets(&self) -> Vec<SubDataset> {
        let mut out: Vec<SubDataset> = Vec::new();
        for route in &self.routes {
            let collection = self.collection.name.clone();
            let scale = route.scale;
            let values = |v: &Var| -> Option<Vec<String>> {
                match v {
                    Var::Collection => Some(vec![collection.clone()]),
                    Var::Scale => Some(vec![scale.dir().to_string()]),
                    Var::Capture(_) | Var::Named(_) => route.capture_values(v),
                    _ => None,
                }
            };
            let found = match route.sub_dataset.expand(&values, MAX_EXPANSION) {
                Some(names) => names
                    .into_iter()
                    .map(|name| SubDataset {
                        name,
                        scale,
                        exact: true,
                    })
                    .collect(),
                None => {
                    let only_collection = |v: &Var| match v {
                        Var::Collection => Some(vec![collection.clone()]),
                        other => Some(vec![format!("{{{other}}}")]),
                    };
                    let name = route
                        .sub_dataset
                        .expand(&only_collection, 1)
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_else(|| route.sub_dataset.to_string());
                    vec![SubDataset {
                        name,
                        scale,
                        exact: false,
                    }]
                }
            };
            for sd in found {
                if !out.contains(&sd) {
                    out.push(sd);
                }
            }
        }
        out
    }
}

impl Route {
    /// The strings a capture group of this route's regex can match, when
    /// they are few and known from the pattern alone (literals, alternations,
    /// small classes); None otherwise, or for a glob route.
    pub fn capture_values(&self, var: &Var) -> Option<Vec<String>> {
        let Matcher::Regex(re) = &self.matcher else {
            return None;
        };
        let hir = regex_syntax::Parser::new().parse(re.as_str()).ok()?;
        let group = find_capture(&hir, var)?;
        let mut values = finite_language(group, MAX_EXPANSION)?;
        values.dedup();
        Some(values)
    }
}

/// The sub-expression of the capture group `var` names.
fn find_capture<'h>(
    hir: &'h regex_syntax::hir::Hir,
    var: &Var,
) -> Option<&'h regex_syntax::hir::Hir> {
    use regex_syntax::hir::HirKind;
    if let HirKind::Capture(c) = hir.kind() {
        let hit = match var {
            Var::Capture(i) => c.index as usize == *i,
            Var::Named(n) => c.name.as_deref() == Some(n.as_str()),
            _ => false,
        };
        if hit {
            return Some(&c.sub);
        }
    }
    hir.kind().subs().iter().find_map(|s| find_capture(s, var))
}

/// Every string `hir` matches, if there are at most `limit` of them and the
/// expression is made of literals, alternations, concatenations, bounded
/// repetitions and small classes; None otherwise.
fn finite_language(hir: &regex_syntax::hir::Hir, limit: usize) -> Option<Vec<String>> {
    use regex_syntax::hir::{Class, HirKind};
    let product = |a: Vec<String>, b: &[String]| -> Option<Vec<String>> {
        if a.len() * b.len() > limit {
            return None;
        }
        Some(
            a.iter()
                .flat_map(|x| b.iter().map(move |y| format!("{x}{y}")))
                .collect(),
        )
    };
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![String::new()]),
        HirKind::Literal(l) => Some(vec![String::from_utf8(l.0.to_vec()).ok()?]),
        HirKind::Class(Class::Unicode(c)) => {
            let mut out = Vec::new();
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    if out.len() >= limit {
                        return None;
                    }
                    out.push(ch.to_string());
                }
            }
            Some(out)
        }
        HirKind::Class(Class::Bytes(_)) => None,
        HirKind::Capture(c) => finite_language(&c.sub, limit),
        HirKind::Concat(subs) => subs.iter().try_fold(vec![String::new()], |acc, s| {
            product(acc, &finite_language(s, limit)?)
        }),
        HirKind::Alternation(subs) => {
            let mut out = Vec::new();
            for s in subs {
                out.extend(finite_language(s, limit)?);
                if out.len() > limit {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Repetition(r) => {
            let max = r.max?;
            let one = finite_language(&r.sub, limit)?;
            let mut out = Vec::new();
            let mut level = vec![String::new()];
            for n in 0..=max {
                if n >= r.min {
                    out.extend(level.iter().cloned());
                }
                if n < max {
                    level = product(level, &one)?;
                }
                if out.len() > limit {
                    return None;
                }
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{load, BREAKHIS, STEPS};
    use super::*;

    fn routed(sub: &str, scale: Scale, class: Option<&str>, name: &str) -> Option<Routed> {
        Some(Routed {
            sub_dataset: sub.into(),
            scale,
            class: class.map(String::from),
            name: name.into(),
        })
    }

    #[test]
    fn breakhis_routes_by_magnification() {
        let r = load(BREAKHIS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.route("benign/adenosis/SOB_B_A-14-22549AB-40-001.png"),
            Ok(routed(
                "BreaKHis_40x",
                Scale::L,
                Some("adenosis"),
                "adenosis_SOB_B_A-14-22549AB-40-001"
            ))
        );
        assert_eq!(
            r.route("malignant/ductal_carcinoma/SOB_M_DC-14-2523-100-012.png"),
            Ok(routed(
                "BreaKHis_100x",
                Scale::M,
                Some("ductal_carcinoma"),
                "ductal_carcinoma_SOB_M_DC-14-2523-100-012"
            ))
        );
        assert_eq!(r.route("README.txt"), Ok(None));
    }

    #[test]
    fn gashissdb_routes_by_folder_glob() {
        let text = format!(
            "[collection]\nname = \"GasHisSDB\"\nkind = \"roi\"\n[inputs]\nsource = \"GasHisSDB\"\n\
             [[route]]\nglob = \"80/**\"\nsub_dataset = \"{{collection}}_80\"\nscale = \"S\"\nclass = \"{{dir}}\"\n\
             [[route]]\nglob = \"160/**\"\nsub_dataset = \"{{collection}}_160\"\nscale = \"M\"\nclass = \"{{dir}}\"\n\
             [output]\nname = \"{{class}}_{{stem}}\"\n{STEPS}"
        );
        let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.route("80/Normal/img-1.png"),
            Ok(routed(
                "GasHisSDB_80",
                Scale::S,
                Some("Normal"),
                "Normal_img-1"
            ))
        );
        assert_eq!(
            r.route("160/Abnormal/x.y.png"),
            Ok(routed(
                "GasHisSDB_160",
                Scale::M,
                Some("Abnormal"),
                "Abnormal_x"
            ))
        );
        // `*` does not cross `/`, and unmatched folders are not inputs.
        assert_eq!(r.route("120/Normal/img-1.png"), Ok(None));
        assert_eq!(r.route("x/80/Normal/img-1.png"), Ok(None));
    }

    #[test]
    fn unsafe_rendered_names_are_rejected() {
        let r = load(BREAKHIS).unwrap_or_else(|e| panic!("{e}"));
        let e = r.route("benign/../SOB-40-1.png").err().unwrap_or_default();
        assert!(e.contains("class `..`"), "{e}");
        let e = r
            .route("benign/.hidden/SOB-40-1.png")
            .err()
            .unwrap_or_default();
        assert!(e.contains("class `.hidden` starts with `.`"), "{e}");
        // A file name starting with a dot has an empty stem: `{stem}` alone
        // renders an empty, unsafe name.
        let text = BREAKHIS.replace("name = \"{class}_{stem}\"", "name = \"{stem}\"");
        let plain = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let e = plain
            .route("benign/a/.SOB-40-1.png")
            .err()
            .unwrap_or_default();
        assert!(e.contains("output name `` is empty"), "{e}");
        // A backslash in a file name cannot smuggle a separator.
        let e = r
            .route("benign/a\\b/SOB-40-1.png")
            .err()
            .unwrap_or_default();
        assert!(e.contains("path separator"), "{e}");
    }

    #[test]
    fn captures_that_did_not_participate_are_errors() {
        let text = BREAKHIS.replacen("'-(40)-'", "'-(40)-|(x)'", 1);
        let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let e = r.route("a/b/x.png").err().unwrap_or_default();
        assert!(e.contains("`{1}` has no value"), "{e}");
    }

    #[test]
    fn named_captures() {
        let text = BREAKHIS
            .replacen("'-(40)-'", "'-(?P<mag>40)-'", 1)
            .replacen("\"BreaKHis_{1}x\"", "\"BreaKHis_{mag}x\"", 1);
        let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.route("a/b/S-40-1.png")
                .ok()
                .flatten()
                .map(|x| x.sub_dataset),
            Some("BreaKHis_40x".into())
        );
    }

    #[test]
    fn sub_datasets_expand_finite_captures_and_keep_open_templates() {
        let r = load(BREAKHIS).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(String, Scale, bool)> = r
            .route_sub_datasets()
            .into_iter()
            .map(|s| (s.name, s.scale, s.exact))
            .collect();
        let want = |n: &str, s| (n.to_string(), s, true);
        assert_eq!(
            got,
            vec![
                want("BreaKHis_40x", Scale::L),
                want("BreaKHis_100x", Scale::M),
                want("BreaKHis_200x", Scale::M),
                want("BreaKHis_400x", Scale::M),
            ]
        );
        // An open capture stays a pattern; `{collection}` is filled in.
        let text = BREAKHIS.replacen("'-(40)-'", "'-(\\d+)-'", 1).replacen(
            "\"BreaKHis_{1}x\"",
            "\"{collection}_{1}\"",
            1,
        );
        let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let first = &r.route_sub_datasets()[0];
        assert_eq!((first.name.as_str(), first.exact), ("BreakHis_{1}", false));
        // Classes, optional parts and case-insensitive literals are finite.
        for (re, want) in [
            ("'x(a[12]b?)'", vec!["a1", "a1b", "a2", "a2b"]),
            ("'(?i)(x)'", vec!["X", "x"]),
            ("'(4|10)x'", vec!["4", "10"]),
        ] {
            let text = BREAKHIS.replacen("'-(40)-'", re, 1);
            let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
            let mut got = r.routes[0].capture_values(&Var::Capture(1)).unwrap();
            got.sort();
            let mut want: Vec<String> = want.into_iter().map(String::from).collect();
            want.sort();
            assert_eq!(got, want, "{re}");
        }
    }

    #[test]
    fn path_vars() {
        let p = PathVars::of("benign/adenosis/SOB_B_A-14-22549AB-40-001.ome.png");
        assert_eq!(p.stem, "SOB_B_A-14-22549AB-40-001");
        assert_eq!(p.name, "SOB_B_A-14-22549AB-40-001.ome.png");
        assert_eq!(p.ext, "png");
        assert_eq!(p.dir, "adenosis");
        let p = PathVars::of("top.jpg");
        assert_eq!((p.dir, p.stem, p.ext), ("", "top", "jpg"));
        let p = PathVars::of("a/noext");
        assert_eq!((p.dir, p.stem, p.ext), ("a", "noext", ""));
    }
}
