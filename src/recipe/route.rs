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
