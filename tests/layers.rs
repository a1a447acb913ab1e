//! House rules that hold themselves: ARCHITECTURE.md's layer table and code
//! map, checked against `src/` on every `cargo test`.
//!
//! - **Layers.** Every path a module names — `use` trees, and `crate::…`,
//!   `super::…`, `self::…` paths anywhere, inside macro calls too — is
//!   resolved to the module it reaches (following `use` re-exports). A path
//!   from one top-level module into another must be allowed by the
//!   "May use" cell of its row in the table of ARCHITECTURE.md's "Layers"
//!   section (test code: "May use" or "Tests may also use"). The table is the
//!   one source of truth: it is parsed here, its rows are ordered so that
//!   each layer uses only rows below it (so it has no cycle), and a cell that
//!   allows what nothing uses is an error too, so the table stays what is.
//! - **No cycles inside a layer.** Files and folders of one folder (siblings
//!   under their common parent) must not import each other in a circle
//!   (test code aside: a test module is a leaf nobody imports).
//! - **Only the layers whose row says "prints" print.** `print!`,
//!   `println!`, `eprint!`, `eprintln!`, `dbg!`, `io::stdout`, `io::stderr`
//!   elsewhere, outside test code, are errors: library layers return values.
//! - **The code map.** Every `.rs` file under `src/` is a module of the crate
//!   and is named in the "Code map" section, under the heading of its
//!   top-level module.
//!
//! Why a lexer of its own rather than `syn`: paths also sit inside macro
//! calls (`assert_eq!(…, crate::store::schema::SCHEMA_VERSION)`,
//! `format!`), which `syn` keeps as opaque tokens; a token stream with
//! comments and literals removed is all this check needs, and it costs no
//! dependency and no compilation of one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------- tokens

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string literal's text (for `#[path = "…"]`).
    Str(String),
    /// Any other literal, or a lifetime.
    Lit,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Rust source as tokens, without comments; literals reduced to `Lit` (or
/// `Str` with their raw text).
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let newlines = |s: &[char]| s.iter().filter(|&&ch| ch == '\n').count();
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch.is_whitespace() {
            line += usize::from(ch == '\n');
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let (start, mut depth) = (i, 0);
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += newlines(&c[start..i]);
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let at = |k: usize| c.get(i + k).copied();
            let raw_string = matches!(word.as_str(), "r" | "br" | "cr")
                && (at(0) == Some('"') || (at(0) == Some('#') && matches!(at(1), Some('"' | '#'))));
            if raw_string {
                let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
                let body = i + hashes + 1;
                let mut j = body;
                while j < c.len()
                    && !(c[j] == '"'
                        && c[j + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&h| h == '#')
                            .count()
                            == hashes)
                {
                    j += 1;
                }
                let text: String = c[body..j.min(c.len())].iter().collect();
                line += newlines(&c[start..j.min(c.len())]);
                out.push(Token {
                    tok: Tok::Str(text),
                    line,
                });
                i = (j + 1 + hashes).min(c.len());
            } else if matches!(word.as_str(), "b" | "c") && at(0) == Some('"') {
                let (text, end) = string_body(&c, i);
                line += newlines(&c[start..end]);
                out.push(Token {
                    tok: Tok::Str(text),
                    line,
                });
                i = end;
            } else if word == "b" && at(0) == Some('\'') {
                i = char_end(&c, i);
                out.push(Token {
                    tok: Tok::Lit,
                    line,
                });
            } else if word == "r" && at(0) == Some('#') && at(1).is_some_and(is_ident_start) {
                i += 1; // a raw identifier: the word follows
            } else {
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (is_ident_char(c[i])
                    || (c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == '"' {
            let (text, end) = string_body(&c, i);
            out.push(Token {
                tok: Tok::Str(text),
                line,
            });
            line += newlines(&c[i..end]);
            i = end;
        } else if ch == '\'' {
            // A character literal, or a lifetime / label.
            if next == Some('\\') || c.get(i + 2) == Some(&'\'') {
                i = char_end(&c, i);
            } else {
                i += 1;
                while i < c.len() && is_ident_char(c[i]) {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == ':' && next == Some(':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// The text of the string literal whose opening quote is at `open`, and the
/// index after its closing quote.
fn string_body(c: &[char], open: usize) -> (String, usize) {
    let mut j = open + 1;
    while j < c.len() && c[j] != '"' {
        j += if c[j] == '\\' { 2 } else { 1 };
    }
    (
        c[open + 1..j.min(c.len())].iter().collect(),
        (j + 1).min(c.len()),
    )
}

/// The index after the character literal whose opening quote is at `open`.
fn char_end(c: &[char], open: usize) -> usize {
    let mut j = open + 1;
    if c.get(j) == Some(&'\\') {
        j += 2;
    } else {
        j += 1;
    }
    while j < c.len() && c[j] != '\'' {
        j += 1;
    }
    (j + 1).min(c.len())
}

// ---------------------------------------------------------------- modules

type ModPath = Vec<String>;

/// A `mod name;` declaration: its module, the file it is in, test or not.
struct ModDecl {
    module: ModPath,
    file: PathBuf,
    test: bool,
}

/// A path named by a module: `raw` as written (starting with `crate`,
/// `super`, `self`, `cpia`, or a name in scope), in module `scope`.
struct PathRef {
    scope: ModPath,
    raw: Vec<String>,
    line: usize,
    test: bool,
}

/// What one file says.
#[derive(Default)]
struct FileScan {
    mods: Vec<ModDecl>,
    inline_mods: Vec<ModPath>,
    paths: Vec<PathRef>,
    /// (scope, name) → raw path, from `use` declarations.
    bindings: Vec<(ModPath, String, Vec<String>)>,
    /// (line, what) of printing outside test code.
    prints: Vec<(usize, String)>,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Punct(q)) if *q == p)
}

fn is_sep(t: Option<&Token>) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::PathSep))
}

/// Index after the bracketed group opening at `open` (`(`, `[` or `{`).
fn group_end(toks: &[Token], open: usize) -> usize {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Index after the item starting at `start`: its `;`, or its `{…}` body.
fn item_end(toks: &[Token], start: usize) -> usize {
    let mut k = start;
    while k < toks.len() {
        match toks[k].tok {
            Tok::Punct(';') => return k + 1,
            Tok::Punct('{') => return group_end(toks, k),
            Tok::Punct('(' | '[') => k = group_end(toks, k),
            _ => k += 1,
        }
    }
    toks.len()
}

/// Scans one file of module `module`. `dir` is where its `mod x;` children live.
fn scan_file(
    text: &str,
    file: &Path,
    module: &ModPath,
    file_test: bool,
    child_dir: &Path,
) -> FileScan {
    let toks = lex(text);
    let mut scan = FileScan::default();
    // (module, test, brace depth at which its block closes)
    let mut scopes: Vec<(ModPath, bool, i32)> = vec![(module.clone(), file_test, -1)];
    let mut depth = 0i32;
    let mut test_until = 0usize;
    let (mut attr_test, mut attr_path): (bool, Option<String>) = (false, None);
    let mut consumed_until = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        // Attributes: `#[cfg(test)]` and `#[path = "…"]` matter.
        if is_punct(Some(t), '#')
            && (is_punct(toks.get(i + 1), '[') || is_punct(toks.get(i + 1), '!'))
        {
            let open = if is_punct(toks.get(i + 1), '!') {
                i + 2
            } else {
                i + 1
            };
            let end = group_end(&toks, open);
            let inner: Vec<&Tok> = toks[open + 1..end.saturating_sub(1)]
                .iter()
                .map(|t| &t.tok)
                .collect();
            let cfg_test = inner.len() == 4
                && inner[0] == &Tok::Ident("cfg".into())
                && inner[2] == &Tok::Ident("test".into());
            attr_test |= cfg_test && open == i + 1;
            if let [Tok::Ident(p), Tok::Punct('='), Tok::Str(s)] = inner.as_slice() {
                if p == "path" {
                    attr_path = Some(s.clone());
                }
            }
            i = end;
            continue;
        }
        // An item after attributes: `[pub[(…)]] mod name ;|{`, or any item.
        if attr_test || attr_path.is_some() {
            let mut k = i;
            if ident(toks.get(k)) == Some("pub") {
                k += 1;
                if is_punct(toks.get(k), '(') {
                    k = group_end(&toks, k);
                }
            }
            let is_mod = ident(toks.get(k)) == Some("mod") && ident(toks.get(k + 1)).is_some();
            if attr_test && !is_mod {
                test_until = test_until.max(item_end(&toks, i));
            }
            if !is_mod {
                attr_test = false;
                attr_path = None;
            }
        }
        let (scope, scope_test, _) = scopes.last().cloned().expect("a scope");
        let test = scope_test || i < test_until;
        match &t.tok {
            Tok::Ident(w)
                if w == "mod"
                    && ident(toks.get(i + 1)).is_some()
                    && !is_sep(toks.get(i.wrapping_sub(1))) =>
            {
                let name = ident(toks.get(i + 1)).expect("checked").to_string();
                let mut child = scope.clone();
                child.push(name.clone());
                let child_test = test || attr_test;
                if is_punct(toks.get(i + 2), ';') {
                    let f = match attr_path.take() {
                        Some(p) => file.parent().expect("a folder").join(p),
                        None => {
                            let flat = child_dir.join(format!("{name}.rs"));
                            if flat.is_file() {
                                flat
                            } else {
                                child_dir.join(&name).join("mod.rs")
                            }
                        }
                    };
                    scan.mods.push(ModDecl {
                        module: child,
                        file: f,
                        test: child_test,
                    });
                    i += 3;
                } else if is_punct(toks.get(i + 2), '{') {
                    scan.inline_mods.push(child.clone());
                    scopes.push((child, child_test, depth));
                    depth += 1;
                    i += 3;
                } else {
                    i += 1;
                }
                attr_test = false;
                attr_path = None;
                continue;
            }
            Tok::Ident(w) if w == "use" && i >= consumed_until => {
                let mut trees = Vec::new();
                let end = use_tree(&toks, i + 1, Vec::new(), &mut trees);
                for (raw, alias, line) in trees {
                    if let Some(name) = alias {
                        scan.bindings.push((scope.clone(), name, raw.clone()));
                    }
                    scan.paths.push(PathRef {
                        scope: scope.clone(),
                        raw,
                        line,
                        test,
                    });
                }
                consumed_until = end;
                i = end;
                continue;
            }
            Tok::Ident(w)
                if matches!(w.as_str(), "crate" | "super" | "self" | "cpia")
                    && is_sep(toks.get(i + 1))
                    && !is_sep(toks.get(i.wrapping_sub(1)))
                    && !is_punct(toks.get(i.wrapping_sub(1)), '$') =>
            {
                let mut raw = vec![w.clone()];
                let mut k = i + 1;
                while is_sep(toks.get(k)) {
                    match ident(toks.get(k + 1)) {
                        Some(s) => raw.push(s.to_string()),
                        None => break,
                    }
                    k += 2;
                }
                scan.paths.push(PathRef {
                    scope: scope.clone(),
                    raw,
                    line: t.line,
                    test,
                });
                i = k;
                continue;
            }
            Tok::Ident(w)
                if matches!(
                    w.as_str(),
                    "print" | "println" | "eprint" | "eprintln" | "dbg"
                ) && is_punct(toks.get(i + 1), '!')
                    && !test =>
            {
                scan.prints.push((t.line, format!("{w}!")));
            }
            Tok::Ident(w)
                if matches!(w.as_str(), "stdout" | "stderr")
                    && is_sep(toks.get(i.wrapping_sub(1)))
                    && ident(toks.get(i.wrapping_sub(2))) == Some("io")
                    && !test =>
            {
                scan.prints.push((t.line, format!("io::{w}")));
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if scopes.len() > 1 && scopes.last().expect("a scope").2 == depth {
                    scopes.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// Parses a use tree from `k`, appending (path, bound name, line) for each
/// leaf; returns the index after the tree (after `;` at the top).
fn use_tree(
    toks: &[Token],
    mut k: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) -> usize {
    if is_sep(toks.get(k)) {
        // `use ::extern_crate::…`: another crate.
        prefix.push(String::new());
        k += 1;
    }
    loop {
        let t = toks.get(k);
        match t.map(|t| &t.tok) {
            Some(Tok::Ident(s)) => {
                let line = t.expect("some").line;
                if is_sep(toks.get(k + 1)) {
                    prefix.push(s.clone());
                    k += 2;
                    continue;
                }
                let mut path = prefix.clone();
                let bound = if s == "self" {
                    prefix.last().cloned()
                } else {
                    path.push(s.clone());
                    Some(s.clone())
                };
                k += 1;
                let bound = if ident(toks.get(k)) == Some("as") {
                    k += 2;
                    ident(toks.get(k - 1))
                        .filter(|a| *a != "_")
                        .map(str::to_string)
                } else {
                    bound
                };
                out.push((path, bound, line));
                break;
            }
            Some(Tok::Punct('*')) => {
                out.push((prefix.clone(), None, t.expect("some").line));
                k += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                k += 1;
                while !is_punct(toks.get(k), '}') && k < toks.len() {
                    k = use_tree(toks, k, prefix.clone(), out);
                    if is_punct(toks.get(k), ',') {
                        k += 1;
                    }
                }
                k += 1;
                break;
            }
            _ => break,
        }
    }
    if is_punct(toks.get(k), ';') {
        k += 1;
    }
    k
}

/// The crate's modules, and what their files say.
struct Crate {
    /// Module → its file (inline modules: the file they are in).
    modules: BTreeMap<ModPath, PathBuf>,
    /// Files with the module they are, and whether they are test code.
    files: Vec<(PathBuf, ModPath, bool, FileScan)>,
    /// (scope, name) → raw path.
    bindings: HashMap<(ModPath, String), Vec<String>>,
}

/// The module name given to the binary's root (`src/main.rs`).
const BIN: &str = "main";

fn read_crate(src: &Path) -> Crate {
    let mut modules = BTreeMap::new();
    let mut files = Vec::new();
    // (file, module, test, folder of its `mod x;` children)
    let mut todo = vec![(src.join("lib.rs"), Vec::new(), false, src.to_path_buf())];
    if src.join("main.rs").is_file() {
        todo.push((
            src.join("main.rs"),
            vec![BIN.to_string()],
            false,
            src.to_path_buf(),
        ));
    }
    while let Some((file, module, test, child_dir)) = todo.pop() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let scan = scan_file(&text, &file, &module, test, &child_dir);
        modules.insert(module.clone(), file.clone());
        for m in &scan.inline_mods {
            modules.insert(m.clone(), file.clone());
        }
        for d in &scan.mods {
            let is_mod_rs = d.file.file_name().is_some_and(|n| n == "mod.rs");
            let dir = if is_mod_rs {
                d.file.parent().expect("a folder").to_path_buf()
            } else {
                d.file.with_extension("")
            };
            todo.push((d.file.clone(), d.module.clone(), d.test, dir));
        }
        files.push((file, module, test, scan));
    }
    let mut bindings = HashMap::new();
    for (_, _, _, scan) in &files {
        for (scope, name, raw) in &scan.bindings {
            bindings.insert((scope.clone(), name.clone()), raw.clone());
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Crate {
        modules,
        files,
        bindings,
    }
}

impl Crate {
    /// `raw` (as written in `scope`) as an absolute path, or `None` for
    /// another crate's path or a local item's.
    fn absolute(&self, scope: &ModPath, raw: &[String], hops: usize) -> Option<Vec<String>> {
        let first = raw.first()?;
        let crate_root = |scope: &ModPath| -> ModPath {
            if scope.first().map(String::as_str) == Some(BIN) {
                vec![BIN.to_string()]
            } else {
                Vec::new()
            }
        };
        let (mut base, rest): (ModPath, &[String]) = match first.as_str() {
            "crate" => (crate_root(scope), &raw[1..]),
            "cpia" => (Vec::new(), &raw[1..]),
            "self" => (scope.clone(), &raw[1..]),
            "super" => {
                let supers = raw.iter().take_while(|s| *s == "super").count();
                let mut b = scope.clone();
                for _ in 0..supers {
                    b.pop()?;
                }
                (b, &raw[supers..])
            }
            "" => return None,
            name => {
                let mut child = scope.clone();
                child.push(name.to_string());
                if self.modules.contains_key(&child) {
                    (scope.clone(), raw)
                } else if let Some(bound) = self.bindings.get(&(scope.clone(), name.to_string())) {
                    if hops > 8 || bound.as_slice() == raw {
                        return None;
                    }
                    let mut b = self.absolute(scope, bound, hops + 1)?;
                    b.extend_from_slice(&raw[1..]);
                    return Some(b);
                } else {
                    return None;
                }
            }
        };
        base.extend_from_slice(rest);
        Some(base)
    }

    /// The module an absolute path reaches, following `use` bindings of the
    /// modules it goes through (re-exports).
    fn target(&self, abs: &[String]) -> ModPath {
        let mut path = abs.to_vec();
        for _ in 0..8 {
            let k = (0..=path.len())
                .rev()
                .find(|&k| self.modules.contains_key(&path[..k]))
                .unwrap_or(0);
            if k < path.len() {
                let module = path[..k].to_vec();
                if let Some(bound) = self.bindings.get(&(module.clone(), path[k].clone())) {
                    if let Some(mut next) = self.absolute(&module, bound, 0) {
                        next.extend_from_slice(&path[k + 1..]);
                        if next != path {
                            path = next;
                            continue;
                        }
                    }
                }
            }
            return path[..k].to_vec();
        }
        path
    }
}

// ---------------------------------------------------------------- ARCHITECTURE.md

/// One row of the layer table.
#[derive(Debug)]
struct Layer {
    name: String,
    may_use: BTreeSet<String>,
    tests_may_use: BTreeSet<String>,
    prints: bool,
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The lines of the `## {title}` section (up to the next `## `).
fn section<'a>(doc: &'a str, title: &str) -> Option<Vec<&'a str>> {
    let mut lines = doc
        .lines()
        .skip_while(|l| !(l.starts_with("## ") && l[3..].starts_with(title)));
    lines.next()?;
    Some(lines.take_while(|l| !l.starts_with("## ")).collect())
}

/// The layer table, top row first; or what is wrong with it.
fn layer_table(doc: &str) -> Result<Vec<Layer>, String> {
    let lines = section(doc, "Layers").ok_or("ARCHITECTURE.md has no `## Layers` section")?;
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect()
        })
        .collect();
    let header = rows.first().ok_or("the `## Layers` section has no table")?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or(format!("the layer table has no `{name}` column"))
    };
    let (c_layer, c_may, c_tests, c_prints) = (
        col("Layer")?,
        col("May use")?,
        col("Tests may also use")?,
        col("Prints")?,
    );
    let mut layers = Vec::new();
    for row in rows.iter().skip(2) {
        let cell = |c: usize| row.get(c).copied().unwrap_or("");
        let names = backticked(cell(c_layer));
        let [name] = names.as_slice() else {
            return Err(format!(
                "layer table row `{}`: the Layer cell must name one module in backticks",
                row.join(" | ")
            ));
        };
        layers.push(Layer {
            name: name.clone(),
            may_use: backticked(cell(c_may)).into_iter().collect(),
            tests_may_use: backticked(cell(c_tests)).into_iter().collect(),
            prints: cell(c_prints).eq_ignore_ascii_case("yes"),
        });
    }
    Ok(layers)
}

/// The code map: a heading's backticked names → the backticked names of its text.
fn code_map(doc: &str) -> Vec<(Vec<String>, HashSet<String>)> {
    let mut out: Vec<(Vec<String>, HashSet<String>)> = Vec::new();
    for line in section(doc, "Code map").unwrap_or_default() {
        if let Some(h) = line.strip_prefix("### ") {
            out.push((
                backticked(h.split(" — ").next().unwrap_or(h)),
                HashSet::new(),
            ));
        } else if let Some((_, names)) = out.last_mut() {
            names.extend(backticked(line));
        }
    }
    out
}

// ---------------------------------------------------------------- the check

/// Where a path or a file is, for messages: `src/x/y.rs:12`.
fn at(src: &Path, file: &Path, line: usize) -> String {
    let rel = file
        .strip_prefix(src.parent().unwrap_or(src))
        .unwrap_or(file);
    format!("{}:{line}", rel.display())
}

fn layer_of(module: &ModPath) -> Option<&str> {
    module.first().map(String::as_str)
}

/// Everything wrong with `src/` against `doc` (ARCHITECTURE.md's text).
fn check(src: &Path, doc: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let layers = match layer_table(doc) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let krate = read_crate(src);
    problems.extend(check_table(&layers, &krate));
    problems.extend(check_imports(src, &layers, &krate));
    problems.extend(check_prints(src, &layers, &krate));
    problems.extend(check_code_map(src, doc, &krate));
    problems
}

const TABLE: &str = "ARCHITECTURE.md, `## Layers`";

/// Every top-level module has a row, every row a module, rows use only rows below.
fn check_table(layers: &[Layer], krate: &Crate) -> Vec<String> {
    let mut problems = Vec::new();
    let tops: BTreeSet<&str> = krate
        .modules
        .keys()
        .filter(|m| m.len() == 1)
        .map(|m| m[0].as_str())
        .collect();
    let rows: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    for top in &tops {
        if !rows.contains_key(top) {
            problems.push(format!(
                "`{top}` (src/{top}) has no row in the layer table ({TABLE}): add `| `{top}` | <the modules it uses, in backticks> | <what only its tests use> | <yes if it prints> |` \
                 above every layer it uses and below every layer that uses it, and a `### `{top}/`` section to the code map"
            ));
        }
    }
    for (i, l) in layers.iter().enumerate() {
        if !tops.contains(l.name.as_str()) {
            problems.push(format!("the layer table ({TABLE}) has a row for `{}`, which is not a module of src/: remove the row", l.name));
        }
        for used in l.may_use.iter().chain(&l.tests_may_use) {
            match rows.get(used.as_str()) {
                None => problems.push(format!("layer `{}` may use `{used}`, which has no row in the layer table ({TABLE})", l.name)),
                Some(&j) if j <= i && l.may_use.contains(used) => problems.push(format!(
                    "layer `{}` may use `{used}`, but `{used}`'s row is not below `{}`'s ({TABLE}): rows go from the top of the house down, each using only rows below it (so the table has no cycle)",
                    l.name, l.name
                )),
                _ => {}
            }
        }
    }
    problems
}

/// One use of a module of another layer, for the table's "unused" check.
#[derive(Default)]
struct Uses {
    code: BTreeSet<(String, String)>,
    tests: BTreeSet<(String, String)>,
}

fn check_imports(src: &Path, layers: &[Layer], krate: &Crate) -> Vec<String> {
    let mut problems = Vec::new();
    let rows: HashMap<&str, &Layer> = layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut uses = Uses::default();
    // parent → (child a → child b → first place)
    let mut siblings: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    for (file, _, _, scan) in &krate.files {
        for p in &scan.paths {
            let Some(abs) = krate.absolute(&p.scope, &p.raw, 0) else {
                continue;
            };
            let target = krate.target(&abs);
            let (Some(from), Some(to)) = (layer_of(&p.scope), layer_of(&target)) else {
                continue;
            };
            let written = p.raw.join("::");
            if from != to {
                if p.test {
                    uses.tests.insert((from.into(), to.into()));
                } else {
                    uses.code.insert((from.into(), to.into()));
                }
                let Some(row) = rows.get(from) else { continue };
                let allowed =
                    row.may_use.contains(to) || (p.test && row.tests_may_use.contains(to));
                if !allowed {
                    let may: Vec<&str> = row.may_use.iter().map(String::as_str).collect();
                    let what = if p.test { "its tests" } else { "it" };
                    problems.push(format!(
                        "{}: `{written}`: layer `{from}` may not use `{to}` ({TABLE}: `{from}` may use {}{}). \
                         Move what both need down to a layer both may use; or, if `{from}` really sits above `{to}`, add `{to}` to the {} cell of `{from}`'s row (rows stay ordered: `{to}` below `{from}`)",
                        at(src, file, p.line),
                        if may.is_empty() { "nothing".to_string() } else { format!("`{}`", may.join("`, `")) },
                        if row.tests_may_use.is_empty() { String::new() } else { format!("; {what} also `{}`", row.tests_may_use.iter().cloned().collect::<Vec<_>>().join("`, `")) },
                        if p.test { "\"Tests may also use\"" } else { "\"May use\"" },
                    ));
                }
            }
            if !p.test {
                let common = p
                    .scope
                    .iter()
                    .zip(&target)
                    .take_while(|(a, b)| a == b)
                    .count();
                if common < p.scope.len() && common < target.len() {
                    siblings
                        .entry(p.scope[..common].to_vec())
                        .or_default()
                        .entry(p.scope[common].clone())
                        .or_default()
                        .entry(target[common].clone())
                        .or_insert_with(|| format!("{} `{written}`", at(src, file, p.line)));
                }
            }
        }
    }
    for l in layers {
        for used in &l.may_use {
            if !uses.code.contains(&(l.name.clone(), used.clone())) {
                problems.push(format!(
                    "the layer table lets `{}` use `{used}`, but no non-test code of `{}` does: remove `{used}` from its \"May use\" cell ({TABLE})",
                    l.name, l.name
                ));
            }
        }
        for used in &l.tests_may_use {
            if l.may_use.contains(used) || !uses.tests.contains(&(l.name.clone(), used.clone())) {
                problems.push(format!(
                    "the layer table lets the tests of `{}` use `{used}`, but none does (or its code may anyway): remove `{used}` from its \"Tests may also use\" cell ({TABLE})",
                    l.name
                ));
            }
        }
    }
    for (parent, graph) in &siblings {
        for cycle in cycles(graph) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("`{}` → `{}` ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            let folder = if parent.is_empty() {
                "src/".to_string()
            } else {
                format!("src/{}/", parent.join("/"))
            };
            problems.push(format!(
                "an import cycle between modules of {folder}: {}. Move what they share into a module both may use (below both), so the imports go one way",
                steps.join(", ")
            ));
        }
    }
    problems
}

/// One cycle through each strongly connected group of more than one node
/// (as a closed walk: first = last).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for m in graph.get(&n).map(|e| e.keys()).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for start in graph.keys() {
        if done.contains(start) || !reach(start).contains(start) {
            continue;
        }
        // The shortest way back to `start` (breadth first).
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        'bfs: while let Some(n) = queue.pop_front() {
            for m in graph.get(&n).map(|e| e.keys()).into_iter().flatten() {
                if m == start {
                    prev.insert(start.clone(), n.clone());
                    break 'bfs;
                }
                if !prev.contains_key(m) {
                    prev.insert(m.clone(), n.clone());
                    queue.push_back(m.clone());
                }
            }
        }
        let mut cycle = vec![start.clone()];
        let mut n = prev[start].clone();
        while &n != start {
            cycle.push(n.clone());
            n = prev[&n].clone();
        }
        cycle.push(start.clone());
        cycle.reverse();
        // Everything in the group is reported by this one cycle.
        let back = reach(start);
        done.extend(
            graph
                .keys()
                .filter(|k| back.contains(*k) && reach(k).contains(start))
                .cloned(),
        );
        out.push(cycle);
    }
    out
}

fn check_prints(src: &Path, layers: &[Layer], krate: &Crate) -> Vec<String> {
    let printing: Vec<&str> = layers
        .iter()
        .filter(|l| l.prints)
        .map(|l| l.name.as_str())
        .collect();
    let mut problems = Vec::new();
    for (file, module, _, scan) in &krate.files {
        let Some(layer) = layer_of(module) else {
            continue;
        };
        if printing.contains(&layer) {
            continue;
        }
        for (line, what) in &scan.prints {
            problems.push(format!(
                "{}: `{what}` in layer `{layer}`: only {} print ({TABLE}, \"Prints\"). Return the message as a value (or send it to an event sink) and let `cli` print it",
                at(src, file, *line),
                printing.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "),
            ));
        }
    }
    problems
}

fn check_code_map(src: &Path, doc: &str, krate: &Crate) -> Vec<String> {
    let map = code_map(doc);
    let module_files: HashSet<&PathBuf> = krate.modules.values().collect();
    let mut problems = Vec::new();
    let mut all = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                all.push(p);
            }
        }
    }
    all.sort();
    for file in all {
        let rel = file
            .strip_prefix(src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if !module_files.contains(&file) {
            problems.push(format!(
                "src/{rel} is not a module of the crate (no `mod` declaration reaches it): declare it, or delete it"
            ));
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let top = if parts.len() == 1 {
            parts[0].to_string()
        } else {
            format!("{}/", parts[0])
        };
        let Some((_, names)) = map.iter().find(|(heading, _)| heading.contains(&top)) else {
            problems.push(format!(
                "src/{rel} is not in ARCHITECTURE.md's code map: add a section `### `{top}` — <what it is>` under `## Code map` that says what each of its files is"
            ));
            continue;
        };
        let mentioned = |name: &str| {
            names
                .iter()
                .any(|n| n == name || n.ends_with(&format!("/{name}")))
        };
        // Folders between the top and the file, then the file (a folder's
        // `mod.rs` is the folder).
        let folders = if parts.len() > 2 {
            &parts[1..parts.len() - 1]
        } else {
            &[][..]
        };
        let mut wanted: Vec<String> = folders.iter().map(|d| format!("{d}/")).collect();
        let base = parts[parts.len() - 1];
        if parts.len() > 1 && base != "mod.rs" {
            wanted.push(base.to_string());
        }
        for w in wanted {
            if !mentioned(&w) {
                problems.push(format!(
                    "src/{rel} is not in ARCHITECTURE.md's code map: name `{w}` (in backticks) in the `### `{top}`` section, with what it is"
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------- tests

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn report(problems: &[String]) -> String {
    let mut s = String::new();
    for p in problems {
        let _ = writeln!(s, "- {p}");
    }
    s
}

#[test]
fn src_keeps_the_layer_table_and_the_code_map_of_architecture_md() {
    let doc = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let problems = check(&repo().join("src"), &doc);
    assert!(
        problems.is_empty(),
        "{} house rule(s) broken:\n{}",
        problems.len(),
        report(&problems)
    );
}

/// A small crate with a layer table, in a temporary folder.
struct Toy {
    dir: tempfile::TempDir,
}

const TOY_DOC: &str = "\
# Architecture

## Layers

| Layer | May use | Tests may also use | Prints |
|---|---|---|---|
| `cli` | `engine` | | yes |
| `engine` | `store` | | |
| `store` | | | |

## Code map

### `lib.rs` — the root

### `cli/`
`mod.rs`.

### `engine/` — doing it
`run.rs` runs, `atomic.rs` writes.

### `store/`
`state.rs`, `events.rs`.

## Why
";

impl Toy {
    fn new() -> Toy {
        let toy = Toy {
            dir: tempfile::tempdir().expect("a temporary folder"),
        };
        toy.write("lib.rs", "pub mod cli;\npub mod engine;\npub mod store;\n");
        toy.write(
            "cli/mod.rs",
            "use crate::engine::run;\npub fn main() { println!(\"{}\", run::go()); }\n",
        );
        toy.write("engine/mod.rs", "pub mod atomic;\npub mod run;\n");
        toy.write("engine/atomic.rs", "pub const TMP: &str = \".tmp\";\n");
        toy.write(
            "engine/run.rs",
            "use super::atomic::TMP;\npub fn go() -> usize { crate::store::state::open(TMP) }\n",
        );
        toy.write(
            "store/mod.rs",
            "pub mod events;\npub mod state;\npub use state::State;\n",
        );
        toy.write(
            "store/state.rs",
            "pub struct State;\npub fn open(s: &str) -> usize { s.len() }\n",
        );
        toy.write(
            "store/events.rs",
            "use super::State;\npub fn record(_: &State) {}\n",
        );
        toy
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.src().join(rel);
        std::fs::create_dir_all(p.parent().expect("a folder")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn check(&self, doc: &str) -> Vec<String> {
        check(&self.src(), doc)
    }
}

/// The one problem found (failing with all of them otherwise).
fn only_problem(problems: Vec<String>) -> String {
    assert_eq!(problems.len(), 1, "{}", report(&problems));
    problems.into_iter().next().unwrap_or_default()
}

/// Fails unless some problem contains each of `parts`.
fn assert_mentions(problems: &[String], parts: &[&str]) {
    let text = report(problems);
    for part in parts {
        assert!(text.contains(part), "no problem says `{part}`:\n{text}");
    }
}

#[test]
fn the_toy_crate_keeps_its_rules() {
    let toy = Toy::new();
    assert_eq!(toy.check(TOY_DOC), Vec::<String>::new());
}

#[test]
fn an_upward_import_is_refused_naming_the_file_the_line_and_the_rule() {
    let toy = Toy::new();
    toy.write(
        "store/state.rs",
        "pub struct State;\n\npub fn open(s: &str) -> usize {\n    s.len() + crate::engine::atomic::TMP.len()\n}\n",
    );
    let problems = toy.check(TOY_DOC);
    // The import itself, and the cycle it closes between `engine` and `store`.
    assert_eq!(problems.len(), 2, "{}", report(&problems));
    assert!(
        problems[0].starts_with("src/store/state.rs:4: `crate::engine::atomic::TMP`: layer `store` may not use `engine`")
            && problems[0].contains("`store` may use nothing"),
        "{}",
        problems[0]
    );
    // …and the table cannot be bent to allow it: `engine` is above `store`.
    let bent = TOY_DOC.replace("| `store` | | | |", "| `store` | `engine` | | |");
    assert_mentions(
        &toy.check(&bent),
        &["`engine`'s row is not below `store`'s"],
    );
    // A `use` through a re-export, inside a test module, is still seen.
    let toy = Toy::new();
    toy.write(
        "store/events.rs",
        "use super::State;\npub fn record(_: &State) {}\n#[cfg(test)]\nmod tests {\n    use crate::{engine::{self as e}, store};\n}\n",
    );
    let problem = only_problem(toy.check(TOY_DOC));
    assert!(
        problem.starts_with(
            "src/store/events.rs:5: `crate::engine`: layer `store` may not use `engine`"
        ) && problem.contains("\"Tests may also use\""),
        "{problem}"
    );
}

#[test]
fn a_cycle_between_files_of_a_layer_is_refused() {
    let toy = Toy::new();
    toy.write("store/state.rs", "pub struct State;\npub fn open(s: &str) -> usize { s.len() }\npub use super::events::record;\n");
    let problem = only_problem(toy.check(TOY_DOC));
    assert!(
        problem.starts_with("an import cycle between modules of src/store/: `events` → `state`"),
        "{problem}"
    );
}

#[test]
fn printing_outside_the_printing_layers_is_refused() {
    let toy = Toy::new();
    toy.write("engine/atomic.rs", "pub const TMP: &str = \".tmp\";\npub fn say() {\n    eprintln!(\"{TMP}\");\n}\n#[cfg(test)]\nmod tests {\n    fn t() { println!(\"fine in a test\"); }\n}\n");
    let problem = only_problem(toy.check(TOY_DOC));
    assert!(
        problem
            .starts_with("src/engine/atomic.rs:3: `eprintln!` in layer `engine`: only `cli` print"),
        "{problem}"
    );
}

#[test]
fn files_and_layers_missing_from_the_architecture_are_named() {
    let toy = Toy::new();
    toy.write(
        "engine/mod.rs",
        "pub mod atomic;\npub mod run;\npub mod budget;\n",
    );
    toy.write("engine/budget.rs", "pub fn bytes() -> u64 { 1 }\n");
    toy.write(
        "lib.rs",
        "pub mod cli;\npub mod engine;\npub mod store;\npub mod export;\n",
    );
    toy.write("export/mod.rs", "");
    toy.write("store/stray.rs", "");
    assert_mentions(
        &toy.check(TOY_DOC),
        &[
            "`export` (src/export) has no row in the layer table",
            "src/engine/budget.rs is not in ARCHITECTURE.md's code map: name `budget.rs`",
            "src/export/mod.rs is not in ARCHITECTURE.md's code map: add a section `### `export/`",
            "src/store/stray.rs is not a module of the crate",
            "src/store/stray.rs is not in ARCHITECTURE.md's code map",
        ],
    );
    // A row allowing what nothing uses is stale.
    let toy = Toy::new();
    let stale = TOY_DOC.replace(
        "| `engine` | `store` | | |",
        "| `engine` | `store` | `cli` | |",
    );
    let problem = only_problem(toy.check(&stale));
    assert!(
        problem.contains("lets the tests of `engine` use `cli`"),
        "{problem}"
    );
}

#[test]
fn the_lexer_skips_comments_and_literals() {
    let toks = lex("// crate::a\n/* crate::b /* nested */ crate::c */ let s = \"crate::d\"; let r = r#\"crate::e\"#; let c = '\\''; let l: &'a str = x; crate::f");
    let idents: Vec<&str> = toks.iter().filter_map(|t| ident(Some(t))).collect();
    assert_eq!(
        idents,
        ["let", "s", "let", "r", "let", "c", "let", "l", "str", "x", "crate", "f"]
    );
    assert_eq!(toks.last().map(|t| t.line), Some(2));
}
