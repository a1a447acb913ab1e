//! The workspace: a folder with `cpia.toml`, its `recipes/`, its source roots
//! and the exclusive lock that keeps two builds from writing one state.
//!
//! ```toml
//! output = "dataset"        # default
//! cache = "cache"           # default; holds the state database and the lock
//! jobs = 4                  # default: number of cores
//!
//! [sources]
//! BreakHis = "/data/BreakHis"   # relative paths are relative to the workspace
//!
//! [executor.slurm]          # `cpia build --executor slurm` (docs/cluster.md)
//! partition = "cpu"
//! ```
//! A source root is resolved, strongest first, from `--source NAME=PATH`, the
//! environment variable `CPIA_SOURCE_<NAME>` (name upper-cased, every
//! non-alphanumeric character replaced by `_`), then `[sources]`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::executor::slurm::SlurmConfig;

/// The file that marks a workspace.
pub const CONFIG_FILE: &str = "cpia.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    output: Option<PathBuf>,
    cache: Option<PathBuf>,
    jobs: Option<usize>,
    #[serde(default)]
    sources: BTreeMap<String, PathBuf>,
    #[serde(default)]
    executor: BTreeMap<String, toml::Table>,
}

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
    /// Source roots after applying overrides, by name.
    pub sources: BTreeMap<String, PathBuf>,
    /// `[executor.slurm]`: sbatch options and shards of Slurm builds.
    pub slurm: SlurmConfig,
}

/// Errors of finding or reading a workspace.
#[derive(Debug)]
pub enum WorkspaceError {
    NotFound(PathBuf),
    Read(PathBuf, io::Error),
    Parse(PathBuf, String),
    BadOverride(String),
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
        let text =
            std::fs::read_to_string(&path).map_err(|e| WorkspaceError::Read(path.clone(), e))?;
        let cfg: ConfigFile = toml::from_str(&text)
            .map_err(|e| WorkspaceError::Parse(path.clone(), e.to_string()))?;
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
            sources,
            slurm,
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

    /// Takes the workspace lock, waiting (and saying so) if another process
    /// holds it. The lock is released when the returned guard is dropped, and
    /// by the OS if the process dies, so a killed build never leaves it stuck.
    pub fn lock(&self, wait: bool) -> io::Result<WorkspaceLock> {
        std::fs::create_dir_all(&self.cache)?;
        let path = self.cache.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
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
                eprintln!("waiting for the workspace lock held by {who} ...");
                file.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        let _ = write!(file, "pid {}", std::process::id());
        let _ = file.flush();
        Ok(WorkspaceLock { _file: file })
    }
}

/// Holds the workspace lock while alive.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: File,
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
