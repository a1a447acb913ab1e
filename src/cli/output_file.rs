//! Files that commands write where the user says (`report -o`, `lineage
//! -o`): checked first, then written whole under a temporary name beside
//! the destination, made durable and renamed over it, so a reader never
//! sees half a file and a failed write leaves nothing behind.
//!
//! | `-o FILE` is | what happens |
//! |---|---|
//! | a regular file, or absent in an existing folder | replaced atomically (through a symbolic link: its target is replaced, the link kept) |
//! | a character device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe) | written through, never replaced |
//! | a folder, a block device, a socket, a link to nothing | refused |
//! | in a folder that does not exist | refused (no folder is created) |
//! | one of the workspace's own files ([`Workspace::owner_of`]: `cpia.toml`, the cache, `recipes/`, a source root, the dataset below its top) | refused |
//!
//! A temporary left by a killed writer (`.NAME.cpia-PID.tmp`, PID no longer
//! running) is removed by the next write of the same file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::regular_file::kind_of;
use crate::workspace::Workspace;

/// A checked destination.
#[derive(Debug)]
pub(super) enum Target {
    /// Replaced atomically (the resolved path).
    Replace(PathBuf),
    /// A device or FIFO, written through.
    Through(PathBuf),
}

/// Checks `path` as a destination for a command of workspace `ws`.
pub(super) fn check(path: &Path, ws: &Workspace) -> Result<Target, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = abs.display();
    let target = match std::fs::metadata(&abs) {
        Ok(m) if m.is_file() => {
            Target::Replace(abs.canonicalize().map_err(|e| format!("{shown}: {e}"))?)
        }
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_char_device() => {
            return Ok(Target::Through(abs))
        }
        Ok(m) => {
            return Err(format!(
                "{shown} is {}: give the name of a file to write",
                kind_of(&m.file_type())
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Target::Replace(new_file(&abs)?),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let Target::Replace(real) = &target else {
        return Ok(target);
    };
    match ws.owner_of(real) {
        Some(what) => Err(format!(
            "refusing to write {shown}: it is {what}; write it elsewhere"
        )),
        None => Ok(target),
    }
}

/// The resolved path of the file to create at `abs`, which does not exist:
/// its folder must.
fn new_file(abs: &Path) -> Result<PathBuf, String> {
    if let Ok(to) = std::fs::read_link(abs) {
        return Err(format!(
            "{} is a symbolic link to {}, which does not exist; cpia does not create files through links",
            abs.display(),
            to.display()
        ));
    }
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(format!("{} cannot name a file", abs.display()));
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(format!(
                "{} is {}, not a folder",
                parent.display(),
                kind_of(&m.file_type())
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "the folder {} does not exist (cpia does not create it: check the path, or create it first)",
                parent.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", parent.display())),
    }
    let real = parent
        .canonicalize()
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    Ok(real.join(name))
}

impl Target {
    /// The path written.
    pub(super) fn path(&self) -> &Path {
        match self {
            Target::Replace(p) | Target::Through(p) => p,
        }
    }

    /// Writes what `fill` writes: atomically for a file, through for a device.
    pub(super) fn write_with<T, E: From<io::Error>>(
        &self,
        fill: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Target::Through(path) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(path)?;
                let mut f = BufWriter::new(file);
                let value = fill(&mut f)?;
                f.flush()?;
                Ok(value)
            }
            Target::Replace(path) => replace(path, fill),
        }
    }

    /// Writes `bytes` ([`Target::write_with`]).
    pub(super) fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_with(|f| f.write_all(bytes))
    }
}

/// The temporary name of `name` for process `pid`.
pub(super) fn tmp_name(name: &str, pid: u32) -> String {
    format!(".{name}.cpia-{pid}.tmp")
}

/// The process id in a temporary name of `name`, if `entry` is one.
pub(super) fn tmp_pid(entry: &str, name: &str) -> Option<u32> {
    entry
        .strip_prefix(&format!(".{name}.cpia-"))?
        .strip_suffix(".tmp")?
        .parse()
        .ok()
}

/// Whether process `pid` is running (a temporary of a live writer is its own).
pub(super) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the temporaries of `name` in `dir` left by writers that died.
fn clear_stale(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let entry = e.file_name().to_string_lossy().into_owned();
        let stale = tmp_pid(&entry, name).is_some_and(|pid| !alive(pid));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `path` through a temporary file beside it and a rename.
fn replace<T, E: From<io::Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<T, E> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    clear_stale(parent, &name);
    let tmp = parent.join(tmp_name(&name, std::process::id()));
    let result = (|| {
        // O_EXCL and O_NOFOLLOW: a file or link planted at the temporary
        // name is never written through.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let mut f = BufWriter::new(file);
        let value = fill(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(dir: &Path) -> Workspace {
        std::fs::write(dir.join("cpia.toml"), "[sources]\nA = \"src\"\n").unwrap();
        Workspace::open(dir).unwrap()
    }

    #[test]
    fn a_failed_write_leaves_neither_a_file_nor_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let ws = ws(dir.path());
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let path = dir.path().join("sub/out.txt");
        let t = check(&path, &ws).unwrap();
        t.write_bytes(b"first").unwrap();
        let failed: Result<(), io::Error> = t.write_with(|f| {
            f.write_all(b"half")?;
            Err(io::Error::other("the exporter failed"))
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"first",
            "the old file stays whole"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
    }

    #[test]
    fn targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ws = ws(dir.path());
        let at = |p: &str| dir.path().join(p);
        let refused = |p: &Path| check(p, &ws).unwrap_err();
        assert!(refused(&at("missing/x.json")).contains("does not exist"));
        assert!(!at("missing").exists());
        for d in ["cache", "recipes", "src", "dataset/M/A"] {
            std::fs::create_dir_all(at(d)).unwrap();
        }
        assert!(refused(&at("cpia.toml")).contains("cpia.toml"));
        assert!(refused(&at("cache/state.sqlite")).contains("cache folder"));
        assert!(refused(&at("recipes/a.toml")).contains("recipes folder"));
        assert!(refused(&at("src/a.png")).contains("source root `A`"));
        assert!(refused(&at("dataset/M/A/x.jpg")).contains("output folder"));
        assert!(refused(dir.path()).contains("a folder"));
        assert!(matches!(
            check(&at("dataset/report.html"), &ws),
            Ok(Target::Replace(_))
        ));
        assert!(matches!(
            check(Path::new("/dev/null"), &ws),
            Ok(Target::Through(_))
        ));
        // Through a link: the link's target is what counts.
        std::fs::write(at("cache/state.sqlite"), b"db").unwrap();
        std::os::unix::fs::symlink(at("cache/state.sqlite"), at("innocent.json")).unwrap();
        assert!(refused(&at("innocent.json")).contains("cache folder"));
        std::os::unix::fs::symlink(at("nowhere"), at("dangling")).unwrap();
        assert!(refused(&at("dangling")).contains("does not exist"));
    }

    #[test]
    fn temporaries_of_dead_writers_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let ws = ws(dir.path());
        // A pid that cannot be running (beyond pid_max), and our own.
        let dead = dir.path().join(tmp_name("out.json", 999_999_999));
        let live = dir.path().join(tmp_name("out.json", std::process::id()));
        std::fs::write(&dead, b"partial").unwrap();
        std::fs::write(dir.path().join(".other.cpia-1.tmp"), b"x").unwrap();
        check(&dir.path().join("out.json"), &ws)
            .unwrap()
            .write_bytes(b"whole")
            .unwrap();
        assert!(!dead.exists());
        assert!(!live.exists());
        assert!(dir.path().join(".other.cpia-1.tmp").exists());
    }
}
