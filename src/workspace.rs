//! The workspace: a folder with `cpia.toml`, its `recipes/`, its source roots
//! and the exclusive lock that keeps two builds from writing one state.
//!
//! ```toml
//! output = "dataset"        # default
//! cache = "cache"           # default; holds the state database and the lock
//! jobs = 4                  # default: number of cores
//! max_memory = "16G"        # default: 3/4 of the memory available
//!
//! [sources]
//! BreakHis = "/data/BreakHis"   # relative paths are relative to the workspace
//!
//! [executor.slurm]          # `cpia build --executor slurm` (docs/cluster.md)
//! partition = "cpu"
//!
//! [export.pretrain]         # training-ready exports (docs/export.md)
//! format = "webdataset"
//! ```
//! A source root is resolved, strongest first, from `--source NAME=PATH`, the
//! environment variable `CPIA_SOURCE_<NAME>` (name upper-cased, every
//! non-alphanumeric character replaced by `_`), then `[sources]`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod slurm;

use slurm::SlurmConfig;

/// The file that marks a workspace.
pub const CONFIG_FILE: &str = "cpia.toml";

/// The folder of temporaries at the root of the output folder: the engine's
/// atomic writer stages every file there before renaming it into place, and
/// whatever reads the output folder (`verify`, the check for untracked files)
/// knows it holds no outputs. Here, below both, because both need the name.
pub const TMP_DIR: &str = ".cpia-tmp";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    output: Option<PathBuf>,
    cache: Option<PathBuf>,
    jobs: Option<usize>,
    max_memory: Option<toml::Value>,
    #[serde(default)]
    sources: BTreeMap<String, PathBuf>,
    #[serde(default)]
    executor: BTreeMap<String, toml::Table>,
    #[serde(default)]
    export: BTreeMap<String, toml::Value>,
}

/// The most `cpia.toml` may hold (it is a few hundred lines).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A located, parsed workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The folder holding `cpia.toml` (absolute).
    pub root: PathBuf,
    /// Where the dataset is written (absolute).
    pub output: PathBuf,
    /// Where the state database and the lock live (absolute).
    pub cache: PathBuf,
    /// Default parallelism.
    pub jobs: usize,
    /// The memory budget of builds (`max_memory`), if set.
    pub max_memory: Option<u64>,
    /// Source roots after applying overrides, by name.
    pub sources: BTreeMap<String, PathBuf>,
    /// `[executor.slurm]`: sbatch options and shards of Slurm builds.
    pub slurm: SlurmConfig,
    /// `[export.NAME]` tables as written: the export layer reads them
    /// (`crate::export::definition`), so that a bad one stops only exports.
    pub exports: BTreeMap<String, toml::Value>,
}

/// Errors of finding or reading a workspace.
#[derive(Debug)]
pub enum WorkspaceError {
    NotFound(PathBuf),
    Read(PathBuf, io::Error),
    Parse(PathBuf, String),
    BadOverride(String),
    /// Folders that must be kept apart are not (see [`Workspace::check_layout`]).
    Layout(String),
}

impl std::fmt::Display for WorkspaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkspaceError::NotFound(p) => write!(
                f,
                "no {CONFIG_FILE} found in {} or any parent folder: create a workspace with `cpia init` (the CPIA catalog) or `cpia init --empty`, or use --workspace DIR",
                p.display()
            ),
            WorkspaceError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            WorkspaceError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
            WorkspaceError::BadOverride(s) => {
                write!(f, "--source expects NAME=PATH, got `{s}`")
            }
            WorkspaceError::Layout(s) => f.write_str(s),
        }
    }
}
impl std::error::Error for WorkspaceError {}

impl Workspace {
    /// Finds the workspace at `explicit`, or from `start` upwards.
    pub fn discover(explicit: Option<&Path>, start: &Path) -> Result<Workspace, WorkspaceError> {
        let root = match explicit {
            Some(dir) => {
                let dir = absolute(dir);
                if !dir.join(CONFIG_FILE).is_file() {
                    return Err(WorkspaceError::NotFound(dir));
                }
                dir
            }
            None => {
                let start = absolute(start);
                start
                    .ancestors()
                    .find(|d| d.join(CONFIG_FILE).is_file())
                    .map(Path::to_path_buf)
                    .ok_or(WorkspaceError::NotFound(start))?
            }
        };
        Workspace::open(&root)
    }

    /// Reads `root/cpia.toml`.
    pub fn open(root: &Path) -> Result<Workspace, WorkspaceError> {
        let root = absolute(root);
        let path = root.join(CONFIG_FILE);
        // Never blocks on a FIFO, never reads a device without end.
        let text = crate::regular_file::read_to_string(&path, MAX_CONFIG_BYTES)
            .map_err(|e| WorkspaceError::Read(path.clone(), e))?;
        let cfg: ConfigFile = toml::from_str(&text)
            .map_err(|e| WorkspaceError::Parse(path.clone(), e.to_string()))?;
        let max_memory = match &cfg.max_memory {
            None => None,
            Some(toml::Value::String(t)) => Some(parse_size(t)),
            Some(toml::Value::Integer(n)) => Some(parse_size(&n.to_string())),
            Some(_) => Some(Err("a size such as \"16G\" or \"512M\"".to_string())),
        }
        .transpose()
        .map_err(|e| WorkspaceError::Parse(path.clone(), format!("`max_memory`: {e}")))?;
        let at = |p: PathBuf| if p.is_absolute() { p } else { root.join(p) };
        let sources = cfg.sources.into_iter().map(|(k, v)| (k, at(v))).collect();
        let mut slurm = SlurmConfig::default();
        for (name, table) in &cfg.executor {
            match name.as_str() {
                "slurm" => {
                    slurm = SlurmConfig::from_toml(table)
                        .map_err(|e| WorkspaceError::Parse(path.clone(), e.to_string()))?;
                }
                _ => {
                    return Err(WorkspaceError::Parse(
                        path.clone(),
                        format!("[executor.{name}]: unknown executor (known: slurm)"),
                    ))
                }
            }
        }
        Ok(Workspace {
            output: at(cfg.output.unwrap_or_else(|| "dataset".into())),
            cache: at(cfg.cache.unwrap_or_else(|| "cache".into())),
            jobs: cfg
                .jobs
                .filter(|&j| j > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            max_memory,
            sources,
            slurm,
            exports: cfg.export,
            root,
        })
    }

    /// Applies `CPIA_SOURCE_<NAME>` variables, then `--source NAME=PATH` flags.
    pub fn apply_overrides(&mut self, flags: &[String]) -> Result<(), WorkspaceError> {
        for (name, path) in self.sources.iter_mut() {
            if let Some(v) = std::env::var_os(env_var_name(name)) {
                *path = absolute(Path::new(&v));
            }
        }
        for flag in flags {
            let (name, path) = flag
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| WorkspaceError::BadOverride(flag.clone()))?;
            let path = absolute(Path::new(path));
            self.sources.insert(name.to_string(), path);
        }
        Ok(())
    }

    /// Checks, after the source overrides, that the folders a build writes
    /// are apart from what it reads: the output folder is neither the
    /// workspace folder nor inside or around a source root (a build would
    /// read its own outputs as inputs, without end), no source root is inside
    /// the cache folder, and the output and cache are folders if they exist.
    /// Paths are compared resolved (symlinks followed as far as they exist),
    /// and every source root counts: `cpia.toml`, `--source` and every
    /// `CPIA_SOURCE_*` variable.
    pub fn check_layout(&self) -> Result<(), WorkspaceError> {
        let err = |m: String| Err(WorkspaceError::Layout(m));
        let config = self.root.join(CONFIG_FILE);
        for (what, key, path) in [
            ("output", "output", &self.output),
            ("cache", "cache", &self.cache),
        ] {
            if let Ok(m) = std::fs::metadata(path) {
                if !m.is_dir() {
                    return err(format!(
                        "the {what} folder {} exists and is not a folder (`{key}` in {})",
                        path.display(),
                        config.display()
                    ));
                }
            }
        }
        let root = real_path(&self.root);
        let output = real_path(&self.output);
        let cache = real_path(&self.cache);
        if root.starts_with(&output) {
            let how = if root == output {
                "is the workspace folder itself"
            } else {
                "contains the workspace folder"
            };
            return err(format!(
                "the output folder {} {how} (`output` in {}): the dataset needs a folder of its own, \
                 such as the default \"dataset\"",
                self.output.display(),
                config.display()
            ));
        }
        if root == cache {
            return err(format!(
                "the cache folder {} is the workspace folder itself (`cache` in {}): the build state \
                 needs a folder of its own, such as the default \"cache\"",
                self.cache.display(),
                config.display()
            ));
        }
        if output.starts_with(&cache) || cache.starts_with(&output) {
            return err(format!(
                "the output folder {} and the cache folder {} overlap (`output` and `cache` in {}): \
                 the dataset and the build state need folders of their own",
                self.output.display(),
                self.cache.display(),
                config.display()
            ));
        }
        let recipes = real_path(&self.recipes_dir());
        for (what, key, path, real) in [
            ("output", "output", &self.output, &output),
            ("cache", "cache", &self.cache, &cache),
        ] {
            if real.starts_with(&recipes) || recipes.starts_with(real) {
                return err(format!(
                    "the {what} folder {} and the recipes folder {} overlap (`{key}` in {}): \
                     give the {what} a folder of its own, such as the default \"{}\"",
                    path.display(),
                    self.recipes_dir().display(),
                    config.display(),
                    if what == "output" { "dataset" } else { "cache" }
                ));
            }
        }
        for (label, path) in self.all_source_roots() {
            let src = real_path(&path);
            let shown = format!("{label} ({})", path.display());
            if output.starts_with(&src) {
                let how = if output == src { "is" } else { "is inside" };
                return err(format!(
                    "the output folder {} {how} {shown}: every build would read its own outputs as \
                     new inputs; keep the output folder outside every source root",
                    self.output.display()
                ));
            }
            if src.starts_with(&output) {
                return err(format!(
                    "{shown} is inside the output folder {}: keep sources and the dataset apart",
                    self.output.display()
                ));
            }
            if src.starts_with(&cache) {
                return err(format!(
                    "{shown} is inside the cache folder {}: keep sources and the build state apart",
                    self.cache.display()
                ));
            }
        }
        Ok(())
    }

    /// What of this workspace the file `path` would overwrite, if it is one
    /// of the files a command's `-o` must never replace: `cpia.toml`,
    /// anything in the cache folder (the build state, the lock), in
    /// `recipes/`, in a source root, or in the output folder below its top
    /// (outputs, manifests, temporaries; files directly in it, such as
    /// `report.html`, are not cpia's). Paths are compared resolved.
    pub fn owner_of(&self, path: &Path) -> Option<String> {
        let p = real_path(path);
        if p == real_path(&self.root.join(CONFIG_FILE)) {
            return Some(format!("the workspace's {CONFIG_FILE}"));
        }
        let inside = |dir: &Path| p.starts_with(real_path(dir));
        if inside(&self.cache) {
            return Some(format!(
                "inside the cache folder {} (the build state and the lock)",
                self.cache.display()
            ));
        }
        if inside(&self.recipes_dir()) {
            return Some(format!(
                "inside the recipes folder {}",
                self.recipes_dir().display()
            ));
        }
        for (label, root) in self.all_source_roots() {
            if inside(&root) {
                return Some(format!("inside {label} ({})", root.display()));
            }
        }
        let output = real_path(&self.output);
        if p.starts_with(&output) && p.parent() != Some(output.as_path()) {
            return Some(format!(
                "inside the output folder {}, whose sub-folders hold the dataset (a file directly in it, \
                 such as report.html, is fine)",
                self.output.display()
            ));
        }
        None
    }

    /// Every source root a recipe could name: `[sources]` (with overrides
    /// applied), then roots defined only by a `CPIA_SOURCE_*` variable.
    fn all_source_roots(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = self
            .sources
            .iter()
            .map(|(n, p)| (format!("source root `{n}`"), p.clone()))
            .collect();
        let listed: Vec<String> = self.sources.keys().map(|n| env_var_name(n)).collect();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            if k.starts_with("CPIA_SOURCE_") && !v.is_empty() && !listed.iter().any(|l| l == k) {
                out.push((
                    format!("the source root set by {k}"),
                    absolute(Path::new(&v)),
                ));
            }
        }
        out
    }

    /// The folder of source root `name`: from the overrides and `cpia.toml`,
    /// else from `CPIA_SOURCE_<NAME>` alone (a root the file does not list).
    /// Paths given on the command line or in the environment are relative to
    /// the current folder; paths in `cpia.toml` to the workspace.
    pub fn source_root(&self, name: &str) -> Option<PathBuf> {
        self.sources
            .get(name)
            .cloned()
            .or_else(|| std::env::var_os(env_var_name(name)).map(|v| absolute(Path::new(&v))))
    }

    /// The folder holding the recipe files.
    pub fn recipes_dir(&self) -> PathBuf {
        self.root.join("recipes")
    }

    /// Path of the state database.
    pub fn state_path(&self) -> PathBuf {
        self.cache.join("state.sqlite")
    }

    /// Every `recipes/*.toml` (not templates under sub-folders), sorted.
    pub fn recipe_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let dir = self.recipes_dir();
        if !dir.is_dir() {
            return Ok(out);
        }
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// A path relative to the workspace root, for messages.
    pub fn display<'a>(&self, p: &'a Path) -> std::borrow::Cow<'a, str> {
        match p.strip_prefix(&self.root) {
            Ok(rel) => std::borrow::Cow::Owned(rel.to_string_lossy().into_owned()),
            Err(_) => p.to_string_lossy(),
        }
    }

    /// Takes the workspace lock. If another process holds it: with `wait`,
    /// tells `waiting` who (for the caller to say so) and waits; without, an
    /// error naming the holder. The lock is released when the returned guard
    /// is dropped, and by the OS if the process dies, so a killed build never
    /// leaves it stuck. Errors name the lock file.
    pub fn lock(&self, wait: bool, waiting: impl FnOnce(&str)) -> io::Result<WorkspaceLock> {
        let path = self.lock_path();
        let named = |e: io::Error| named_lock_error(&path, e);
        std::fs::create_dir_all(&self.cache).map_err(named)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(named)?;
        self.acquire(&file, wait, waiting)?;
        file.set_len(0).map_err(named)?;
        let _ = write!(file, "pid {}", std::process::id());
        let _ = file.flush();
        Ok(WorkspaceLock { _file: file })
    }

    /// The lock for a command that only reads (`verify`): as [`Self::lock`]
    /// where the cache folder can be written; in a read-only workspace the
    /// existing lock file is locked through a read-only descriptor, and with
    /// no lock file at all (nothing was ever built there by a writer) there
    /// is nothing to wait for: `None`.
    pub fn lock_for_reading(
        &self,
        wait: bool,
        waiting: impl Fn(&str),
    ) -> io::Result<Option<WorkspaceLock>> {
        let e = match self.lock(wait, &waiting) {
            Ok(l) => return Ok(Some(l)),
            Err(e) => e,
        };
        if !matches!(
            e.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
        ) {
            return Err(e);
        }
        let path = self.lock_path();
        match File::open(&path) {
            Ok(file) => {
                self.acquire(&file, wait, waiting)?;
                Ok(Some(WorkspaceLock { _file: file }))
            }
            Err(n) if n.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(n) => Err(named_lock_error(&path, n)),
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.cache.join("lock")
    }

    /// Locks `file`, waiting if `wait` (and telling `waiting` whose lock it
    /// waits for).
    fn acquire(&self, file: &File, wait: bool, waiting: impl FnOnce(&str)) -> io::Result<()> {
        let path = self.lock_path();
        match file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another cpia process".to_string()
                } else {
                    format!("another cpia process ({holder})")
                };
                if !wait {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "the workspace {} is locked by {who}; try again when it finishes",
                            self.root.display()
                        ),
                    ));
                }
                waiting(&who);
                file.lock().map_err(|e| named_lock_error(&path, e))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(named_lock_error(&path, e)),
        }
    }
}

/// An error of taking the lock at `path`, naming it.
fn named_lock_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot take the workspace lock {}: {e}", path.display()),
    )
}

/// Holds the workspace lock while alive.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: File,
}

/// Smallest memory budget accepted: less cannot decode even a small image.
pub const MIN_MEMORY: u64 = 1 << 20;

/// Parses a memory size: bytes, or a number with `K`, `M`, `G` or `T`
/// (optionally followed by `iB` or `B`; all powers of 1024): `512M`, `1.5G`,
/// `16GiB`. At least [`MIN_MEMORY`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}` is not a size such as \"16G\" or \"512M\""
            ))
        }
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as \"16G\" or \"512M\""))?;
    let bytes = v * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!(
            "`{text}` is more bytes than any machine has (at most {}T)",
            u64::MAX >> 40
        ));
    }
    if bytes < MIN_MEMORY as f64 {
        return Err(format!(
            "`{text}` is less than 1M, too little to build anything"
        ));
    }
    Ok(bytes as u64)
}

/// `CPIA_SOURCE_<NAME>` for a source root name.
pub fn env_var_name(name: &str) -> String {
    let norm: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CPIA_SOURCE_{norm}")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `p` with symlinks resolved as far as it exists, the rest appended (with
/// `.` and `..` resolved lexically), so paths that do not exist yet compare.
fn real_path(p: &Path) -> PathBuf {
    let p = absolute(p);
    let mut existing = p.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                match *c {
                    c if c == ".." => {
                        out.pop();
                    }
                    c if c == "." => {}
                    c => out.push(c),
                }
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_normalized() {
        assert_eq!(env_var_name("BreakHis"), "CPIA_SOURCE_BREAKHIS");
        assert_eq!(env_var_name("P. vivax-1"), "CPIA_SOURCE_P__VIVAX_1");
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "jobs = 3\n[sources]\nA = \"src/a\"\nB = \"/abs/b\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("x/y")).unwrap();
        let mut ws = Workspace::discover(None, &dir.path().join("x/y")).unwrap();
        assert_eq!(ws.jobs, 3);
        assert_eq!(ws.output, absolute(dir.path()).join("dataset"));
        assert_eq!(ws.sources["A"], absolute(dir.path()).join("src/a"));
        ws.apply_overrides(&["B=/elsewhere".into()]).unwrap();
        assert_eq!(ws.sources["B"], PathBuf::from("/elsewhere"));
        assert!(ws.apply_overrides(&["nonsense".into()]).is_err());
    }

    #[test]
    fn layouts_that_feed_back_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws_with = |toml: &str| {
            std::fs::write(dir.path().join(CONFIG_FILE), toml).unwrap();
            Workspace::open(dir.path()).unwrap()
        };
        assert!(ws_with("[sources]\nA = \"src\"\n").check_layout().is_ok());
        let e = ws_with("output = \"src/out\"\n[sources]\nA = \"src\"\n")
            .check_layout()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is inside source root `A`"), "{e}");
        let e = ws_with("[sources]\nA = \"dataset/x/../y\"\n")
            .check_layout()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is inside the output folder"), "{e}");
        let e = ws_with("output = \"\"\n")
            .check_layout()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the workspace folder itself"), "{e}");
        let e = ws_with("output = \"..\"\n")
            .check_layout()
            .unwrap_err()
            .to_string();
        assert!(e.contains("contains the workspace folder"), "{e}");
        // Sibling names that share a prefix are apart.
        assert!(ws_with("output = \"src2\"\n[sources]\nA = \"src\"\n")
            .check_layout()
            .is_ok());
        // The recipes folder, and output and cache in each other.
        for toml in [
            "output = \"recipes\"\n",
            "cache = \"recipes\"\n",
            "output = \"recipes/out\"\n",
            "cache = \".\"\noutput = \"x\"\n",
        ] {
            let e = ws_with(toml).check_layout().unwrap_err().to_string();
            assert!(e.contains("overlap") || e.contains("itself"), "{toml}: {e}");
        }
        for toml in [
            "output = \"cache\"\n",
            "cache = \"dataset/c\"\n",
            "output = \"a\"\ncache = \"a\"\n",
        ] {
            let e = ws_with(toml).check_layout().unwrap_err().to_string();
            assert!(
                e.contains("output folder") && e.contains("cache folder"),
                "{toml}: {e}"
            );
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        assert_eq!(parse_size("8 gb"), Ok(8 << 30));
        assert_eq!(parse_size("2097152"), Ok(2 << 20));
        for bad in ["lots", "0", "12Q", "", "-1G", "100K"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        for huge in ["99999999999999999999999", "20000000T"] {
            let e = parse_size(huge).unwrap_err();
            assert!(e.contains("more bytes than"), "{huge}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "max_memory = \"2G\"\n").unwrap();
        assert_eq!(
            Workspace::open(dir.path()).unwrap().max_memory,
            Some(2 << 30)
        );
        std::fs::write(dir.path().join(CONFIG_FILE), "max_memory = 0\n").unwrap();
        let e = Workspace::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("`max_memory`") && e.contains("cpia.toml"), "{e}");
    }

    #[test]
    fn slurm_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |t: &str| std::fs::write(dir.path().join(CONFIG_FILE), t).unwrap();
        write("[executor.slurm]\npartition = \"cpu\"\nshards = 8\ncpus_per_task = 4\n");
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.slurm.partition.as_deref(), Some("cpu"));
        assert_eq!((ws.slurm.shards, ws.slurm.cpus_per_task), (8, Some(4)));
        write("[executor.slurm]\ntime = \"soon\"\n");
        let err = Workspace::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("[executor.slurm] time"), "{err}");
        write("[executor.pbs]\nqueue = \"x\"\n");
        let err = Workspace::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unknown executor"), "{err}");
        write("jobs = 2\n");
        assert_eq!(
            Workspace::open(dir.path()).unwrap().slurm,
            SlurmConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "outptu = \"x\"\n").unwrap();
        let err = Workspace::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("outptu"), "{err}");
    }
}
