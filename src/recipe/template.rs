//! Name templates: `{var}` placeholders for sub-dataset, class and output names.
//!
//! Output names become paths on disk, so a template is parsed (and its
//! variables checked against what the route can provide) when the recipe is
//! loaded, and every rendered value is checked by [`check_component`] before
//! it is used: a recipe can never write outside its output folder.

use std::fmt;
use std::ops::Range;

/// A parsed template. Equality and hashing use the text, which is canonical
/// (the grammar admits no spacing variants).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Part {
    Lit(String),
    /// A placeholder and its byte span in the template text (braces included).
    Var(Var, Range<usize>),
}

/// A template variable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    /// File name up to its first dot (`a.ome.tif` → `a`).
    Stem,
    /// File name with its suffix.
    Name,
    /// Suffix after the last dot, without the dot (empty if none).
    Ext,
    /// Name of the folder holding the file (empty at the source root).
    Dir,
    /// `[collection].name`.
    Collection,
    /// The route's rendered class.
    Class,
    /// The route's rendered sub-dataset.
    SubDataset,
    /// The route's scale (`XL`, `L`, `M`, `S`).
    Scale,
    /// Regex capture group by number (`{0}` is the whole match).
    Capture(usize),
    /// Regex capture group by name.
    Named(String),
}

/// Names of the built-in variables, in the order hints list them.
pub const BUILTIN_VARS: [&str; 8] = [
    "stem",
    "name",
    "ext",
    "dir",
    "collection",
    "class",
    "sub_dataset",
    "scale",
];

impl Var {
    fn from_name(name: &str) -> Var {
        match name {
            "stem" => Var::Stem,
            "name" => Var::Name,
            "ext" => Var::Ext,
            "dir" => Var::Dir,
            "collection" => Var::Collection,
            "class" => Var::Class,
            "sub_dataset" => Var::SubDataset,
            "scale" => Var::Scale,
            _ => match name.parse::<usize>() {
                Ok(n) => Var::Capture(n),
                Err(_) => Var::Named(name.to_string()),
            },
        }
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Var::Stem => "stem",
            Var::Name => "name",
            Var::Ext => "ext",
            Var::Dir => "dir",
            Var::Collection => "collection",
            Var::Class => "class",
            Var::SubDataset => "sub_dataset",
            Var::Scale => "scale",
            Var::Capture(n) => return write!(f, "{n}"),
            Var::Named(n) => n,
        };
        f.write_str(s)
    }
}

/// A syntax error at a byte span of the template text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset of the culprit in the template text.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    pub message: String,
}

impl Template {
    /// Parses `{var}` placeholders; `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut it = text.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            match c {
                '{' if it.peek().map(|p| p.1) == Some('{') => {
                    it.next();
                    lit.push('{');
                }
                '}' if it.peek().map(|p| p.1) == Some('}') => {
                    it.next();
                    lit.push('}');
                }
                '}' => {
                    return Err(TemplateError {
                        offset: i,
                        len: 1,
                        message: "unmatched `}` in template (write `}}` for a literal brace)"
                            .into(),
                    })
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(close) = rest.find('}') else {
                        return Err(TemplateError {
                            offset: i,
                            len: 1,
                            message: "unclosed `{` in template (write `{{` for a literal brace)"
                                .into(),
                        });
                    };
                    let name = &rest[..close];
                    let end = i + 1 + close + 1;
                    let ident = name
                        .chars()
                        .next()
                        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let number = !name.is_empty() && name.chars().all(|c| c.is_ascii_digit());
                    if !(ident || number) || (number && name.parse::<usize>().is_err()) {
                        return Err(TemplateError {
                            offset: i,
                            len: end - i,
                            message: format!(
                                "invalid placeholder `{{{name}}}`: expected a variable name or a capture number"
                            ),
                        });
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(Var::from_name(name), i..end));
                    while it.peek().is_some_and(|p| p.0 < end) {
                        it.next();
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The placeholders with their byte spans in [`Template::as_str`].
    pub fn vars(&self) -> impl Iterator<Item = (&Var, Range<usize>)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, span) => Some((v, span.clone())),
            Part::Lit(_) => None,
        })
    }

    /// Whether the template uses `var`.
    pub fn uses(&self, var: &Var) -> bool {
        self.vars().any(|(v, _)| v == var)
    }

    /// Substitutes every placeholder; `lookup` returns None for a variable
    /// without a value, which is an error naming it.
    pub fn render(&self, lookup: &dyn Fn(&Var) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v, _) => match lookup(v) {
                    Some(s) => out.push_str(&s),
                    None => {
                        return Err(format!("template `{}`: `{{{v}}}` has no value", self.text))
                    }
                },
            }
        }
        Ok(out)
    }

    /// Every rendering of the template when each variable has a known, finite
    /// set of values (`values` returns None for one that has not): the
    /// cartesian product, in the order of the values, at most `limit` strings.
    /// None when a variable is open or there would be more than `limit`.
    pub fn expand(
        &self,
        values: &dyn Fn(&Var) -> Option<Vec<String>>,
        limit: usize,
    ) -> Option<Vec<String>> {
        let mut out = vec![String::new()];
        for p in &self.parts {
            let options = match p {
                Part::Lit(s) => vec![s.clone()],
                Part::Var(v, _) => values(v)?,
            };
            if out.len() * options.len() > limit {
                return None;
            }
            out = out
                .iter()
                .flat_map(|prefix| options.iter().map(move |o| format!("{prefix}{o}")))
                .collect();
        }
        Some(out)
    }

    /// A reason why every rendering of this template is an unsafe path
    /// component, judged from its literal text alone, with the byte span of
    /// the culprit; None if some substitution could be safe.
    pub fn literal_problem(&self) -> Option<(Range<usize>, String)> {
        let all = 0..self.text.len();
        if self.parts.is_empty() {
            return Some((all, "is empty".into()));
        }
        // Separators first: they are what would escape the output folder.
        for p in &self.parts {
            if let Part::Lit(s) = p {
                if let Some(c) = s.chars().find(|c| is_forbidden(*c)) {
                    let at = self.text.find(c).unwrap_or(0);
                    return Some((at..at + c.len_utf8(), forbidden_message(c)));
                }
            }
        }
        if let [Part::Lit(s)] = self.parts.as_slice() {
            if let Err(e) = check_component(s) {
                return Some((all, e));
            }
        }
        if let Some(Part::Lit(s)) = self.parts.first() {
            if s.starts_with('.') {
                return Some((0..1, "starts with `.`".into()));
            }
        }
        None
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Longest accepted component, in bytes (file systems allow 255; `.jpg` and
/// temporary suffixes need room).
pub const MAX_COMPONENT: usize = 240;

fn is_forbidden(c: char) -> bool {
    c == '/' || c == '\\' || c.is_control()
}

fn forbidden_message(c: char) -> String {
    match c {
        '/' | '\\' => format!("contains a path separator `{c}`"),
        '\0' => "contains a NUL byte".into(),
        c => format!("contains the control character {:?}", c),
    }
}

/// Checks that `value` is one safe path component: non-empty, not `.` or
/// `..`, no leading `.` (no hidden files), no `/`, `\`, NUL or other control
/// character, at most [`MAX_COMPONENT`] bytes. The error names the problem;
/// the caller names the value.
pub fn check_component(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value == "." || value == ".." {
        return Err(format!("`{value}` is a relative path component"));
    }
    if value.starts_with('.') {
        return Err("starts with `.`".into());
    }
    if let Some(c) = value.chars().find(|c| is_forbidden(*c)) {
        return Err(forbidden_message(c));
    }
    if value.len() > MAX_COMPONENT {
        return Err(format!("is longer than {MAX_COMPONENT} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &Template) -> Vec<(Var, Range<usize>)> {
        t.vars().map(|(v, s)| (v.clone(), s)).collect()
    }

    #[test]
    fn parses_placeholders_captures_and_escapes() {
        let t = Template::parse("{class}_{stem}-{1}{{x}}{kind}").unwrap();
        assert_eq!(
            vars(&t),
            vec![
                (Var::Class, 0..7),
                (Var::Stem, 8..14),
                (Var::Capture(1), 15..18),
                (Var::Named("kind".into()), 23..29),
            ]
        );
        let r = t
            .render(&|v| {
                Some(match v {
                    Var::Class => "c".into(),
                    Var::Stem => "s".into(),
                    Var::Capture(1) => "40".into(),
                    _ => "k".into(),
                })
            })
            .unwrap();
        assert_eq!(r, "c_s-40{x}k");
    }

    #[test]
    fn expands_finite_variables_only() {
        let t = Template::parse("{collection}_{mag}x{{}}").unwrap();
        let values = |v: &Var| match v {
            Var::Collection => Some(vec!["B".to_string()]),
            Var::Named(n) if n == "mag" => Some(vec!["40".into(), "100".into()]),
            _ => None,
        };
        assert_eq!(
            t.expand(&values, 8),
            Some(vec!["B_40x{}".to_string(), "B_100x{}".to_string()])
        );
        assert_eq!(t.expand(&values, 1), None, "over the limit");
        let open = Template::parse("{stem}").unwrap();
        assert_eq!(open.expand(&values, 8), None);
    }

    #[test]
    fn syntax_errors_have_offsets() {
        let e = Template::parse("a{stem").unwrap_err();
        assert_eq!((e.offset, e.len), (1, 1));
        let e = Template::parse("a}b").unwrap_err();
        assert_eq!(e.offset, 1);
        let e = Template::parse("x{}").unwrap_err();
        assert_eq!((e.offset, e.len), (1, 2));
        let e = Template::parse("{a-b}").unwrap_err();
        assert_eq!((e.offset, e.len), (0, 5));
    }

    #[test]
    fn literal_problems() {
        let p = |s: &str| Template::parse(s).unwrap().literal_problem();
        assert!(p("../escape").is_some());
        assert_eq!(p("{1}/x").map(|x| x.0), Some(3..4));
        assert!(p("..").is_some());
        assert!(p("").is_some());
        assert!(p(".{stem}").is_some());
        assert!(p("{stem}").is_none());
        assert!(p("BreaKHis_{1}x").is_none());
    }

    #[test]
    fn components() {
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "a\nb"] {
            assert!(check_component(bad).is_err(), "{bad:?}");
        }
        assert!(check_component(&"x".repeat(MAX_COMPONENT + 1)).is_err());
        for good in ["adenosis", "BreaKHis_40x", "a.b", "a..b", "é"] {
            assert!(check_component(good).is_ok(), "{good:?}");
        }
    }
}
