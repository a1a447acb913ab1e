//! Recipe errors with a file, a 1-based line:column and a rustc-style rendering.
//!
//! Every stage of the loader records [`Problem`]s (a [`Loc`] — file index and
//! byte span — plus a message) instead of formatted errors, so that parsing
//! never has to borrow the text it reports on; the loader turns them into
//! [`Diagnostic`]s once, against the [`SourceMap`] of every file it read.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One error of a recipe, located in the file that caused it (a template's
/// own errors point into the template, not into the recipe extending it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the loader was given it (or as `extends` resolved it).
    pub file: PathBuf,
    /// 1-based line; 0 when the error has no position (an unreadable file).
    pub line: usize,
    /// 1-based column, counted in characters; 0 when there is no position.
    pub column: usize,
    /// Byte span in the file.
    pub span: Range<usize>,
    /// What is wrong, one line.
    pub message: String,
    /// How to fix it (known names, did-you-mean, a second location).
    pub hint: Option<String>,
    /// The text of `line`, shown under the location.
    pub source_line: String,
    /// Number of `^` under the line (at least 1 when there is a position).
    pub width: usize,
}

impl Diagnostic {
    /// Locates `span` of `text` (the content of `file`) and computes line,
    /// column and underline; out-of-range spans are clamped, never a panic.
    pub fn new(
        file: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = floor_boundary(text, span.start.min(text.len()));
        let end = floor_boundary(text, span.end.clamp(start, text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let source_line = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let width = text[start..end.min(line_end)]
            .trim_end_matches('\r')
            .chars()
            .count()
            .max(1);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            span: start..end,
            message: message.into(),
            hint: None,
            source_line,
            width,
        }
    }

    /// An error about a whole file (e.g. it could not be read).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            span: 0..0,
            message: message.into(),
            hint: None,
            source_line: String::new(),
            width: 0,
        }
    }

    /// Adds the `= hint:` line.
    pub fn with_hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let pad = if self.line == 0 {
            1
        } else {
            self.line.to_string().len()
        };
        let blank = " ".repeat(pad + 1);
        if self.line == 0 {
            writeln!(f, "{}--> {}", " ".repeat(pad), self.file.display())?;
        } else {
            writeln!(
                f,
                "{}--> {}:{}:{}",
                " ".repeat(pad),
                self.file.display(),
                self.line,
                self.column
            )?;
            writeln!(f, "{blank}|")?;
            writeln!(f, "{} | {}", self.line, self.source_line)?;
            // Keep tabs so the carets line up with the source line.
            let lead: String = self
                .source_line
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{blank}| {lead}{}", "^".repeat(self.width))?;
        }
        if let Some(h) = &self.hint {
            writeln!(f, "{blank}= hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// All the errors of one recipe load, in file order then position order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            writeln!(f, "\nerror: {} errors in the recipe", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A byte span in one of the files of a [`SourceMap`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct Loc {
    pub file: usize,
    pub span: Range<usize>,
}

/// An error found before rendering: where, what, and an optional hint.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    pub loc: Option<Loc>,
    /// File of an error without position (`loc` is None).
    pub file: usize,
    pub message: String,
    pub hint: Option<String>,
    /// A second place, rendered into the hint as `TEXT file:line:col`.
    pub also: Option<(String, Loc)>,
}

impl Problem {
    pub fn at(loc: &Loc, message: impl Into<String>) -> Problem {
        Problem {
            loc: Some(loc.clone()),
            file: loc.file,
            message: message.into(),
            hint: None,
            also: None,
        }
    }

    /// An error about a whole file.
    pub fn file(file: usize, message: impl Into<String>) -> Problem {
        Problem {
            loc: None,
            file,
            message: message.into(),
            hint: None,
            also: None,
        }
    }

    pub fn also(mut self, text: &str, loc: &Loc) -> Problem {
        self.also = Some((text.to_string(), loc.clone()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
}

/// The files read by one load, indexed by [`Loc::file`].
#[derive(Default)]
pub(crate) struct SourceMap {
    files: Vec<(PathBuf, String)>,
}

impl SourceMap {
    pub fn add(&mut self, path: PathBuf, text: String) -> usize {
        self.files.push((path, text));
        self.files.len() - 1
    }

    pub fn text(&self, file: usize) -> &str {
        self.files.get(file).map_or("", |f| f.1.as_str())
    }

    pub fn path(&self, file: usize) -> &Path {
        self.files
            .get(file)
            .map_or(Path::new(""), |f| f.0.as_path())
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.0.as_path())
    }

    /// `file:line:col` of a location, for hints pointing at a second place.
    pub fn describe(&self, loc: &Loc) -> String {
        let d = Diagnostic::new(
            self.path(loc.file),
            self.text(loc.file),
            loc.span.clone(),
            "",
        );
        format!("{}:{}:{}", d.file.display(), d.line, d.column)
    }

    /// The location of bytes `offset..offset + len` of the decoded string
    /// `value` whose TOML literal (quotes included) is at `loc`. Falls back to
    /// the whole literal when escapes make the decoded text differ from the
    /// source text.
    pub fn inner(&self, loc: &Loc, value: &str, offset: usize, len: usize) -> Loc {
        let raw = self.text(loc.file).get(loc.span.clone()).unwrap_or("");
        let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            3
        } else if raw.starts_with('"') || raw.starts_with('\'') {
            1
        } else {
            return loc.clone();
        };
        let inner = raw
            .get(quote..raw.len().saturating_sub(quote))
            .unwrap_or("");
        if inner != value || offset > value.len() {
            return loc.clone();
        }
        let start = loc.span.start + quote + offset;
        let end = (start + len.max(1))
            .min(loc.span.end.saturating_sub(quote))
            .max(start);
        Loc {
            file: loc.file,
            span: start..end,
        }
    }

    /// Renders problems, sorted by file then position, duplicates removed.
    pub fn render(&self, mut problems: Vec<Problem>) -> Diagnostics {
        problems.sort_by_key(|p| {
            (
                p.file,
                p.loc.as_ref().map_or(0, |l| l.span.start),
                p.message.clone(),
            )
        });
        problems.dedup_by(|a, b| a.loc == b.loc && a.message == b.message && a.file == b.file);
        Diagnostics(
            problems
                .into_iter()
                .map(|p| {
                    let hint = match (&p.also, p.hint.clone()) {
                        (Some((t, l)), Some(h)) => Some(format!("{h}; {t} {}", self.describe(l))),
                        (Some((t, l)), None) => Some(format!("{t} {}", self.describe(l))),
                        (None, h) => h,
                    };
                    let path = self.path(p.file);
                    match &p.loc {
                        Some(l) => {
                            Diagnostic::new(path, self.text(l.file), l.span.clone(), p.message)
                        }
                        None => Diagnostic::whole_file(path, p.message),
                    }
                    .with_hint(hint)
                })
                .collect(),
        )
    }
}

/// Edit distance counting an adjacent transposition as one edit (optimal
/// string alignment), for "did you mean": `stian` is one edit from `stain`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    if lower.len() >= 3 {
        if let Some(c) = candidates.iter().find(|c| c.starts_with(&lower)) {
            return Some(c);
        }
    }
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(&lower, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean `x`? known THINGS: a, b, c`.
pub(crate) fn known_hint(word: &str, what: &str, candidates: &[&str]) -> String {
    // A hint lists at most this many (a generated recipe may have thousands).
    const SHOWN: usize = 24;
    let mut list = candidates[..candidates.len().min(SHOWN)].join(", ");
    if candidates.len() > SHOWN {
        list.push_str(&format!(", … ({} more)", candidates.len() - SHOWN));
    }
    match did_you_mean(word, candidates) {
        Some(s) => format!("did you mean `{s}`? known {what}: {list}"),
        None => format!("known {what}: {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_render_like_rustc() {
        let text = "[collection]\nname = \"x\"\n\n\n\n\n\n\n\n\n\nop = \"resise\"\n";
        let start = text.find("\"resise\"").unwrap_or(0);
        let d = Diagnostic::new(
            Path::new("recipes/breakhis.toml"),
            text,
            start..start + 8,
            "unknown operator `resise`",
        )
        .with_hint(Some("did you mean `resize`?".into()));
        assert_eq!((d.line, d.column), (12, 6));
        let want = "error: unknown operator `resise`\n  --> recipes/breakhis.toml:12:6\n   |\n12 | op = \"resise\"\n   |      ^^^^^^^^\n   = hint: did you mean `resize`?\n";
        assert_eq!(d.to_string(), want);
    }

    #[test]
    fn columns_count_characters_and_spans_are_clamped() {
        let d = Diagnostic::new(Path::new("f"), "a = \"é\" x", 9..9, "m");
        assert_eq!((d.line, d.column), (1, 9));
        let d = Diagnostic::new(Path::new("f"), "ab", 10..20, "m");
        assert_eq!((d.line, d.column, d.width), (1, 3, 1));
    }

    #[test]
    fn suggestions() {
        let ops = ["decode", "crop", "resize", "encode_jpeg"];
        assert_eq!(did_you_mean("resise", &ops), Some("resize"));
        assert_eq!(did_you_mean("encode", &ops), Some("encode_jpeg"));
        assert_eq!(did_you_mean("Decod", &ops), Some("decode"));
        assert_eq!(did_you_mean("zzz", &ops), None);
        assert_eq!(did_you_mean("stian", &["name", "stain"]), Some("stain"));
    }
}
