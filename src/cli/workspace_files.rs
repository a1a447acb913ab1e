//! Writing the files of a workspace (`init`, `demo`, `new`), confined to its
//! folder and never over the user's files.
//!
//! Every file is reached from the workspace folder one component at a time
//! through [`crate::engine::confined::Dir`] (`O_NOFOLLOW`): a symbolic link
//! inside the folder (`recipes/templates -> /etc`) is refused, never
//! followed, so nothing is written outside it. A file is written under a
//! temporary name in its folder, made durable and renamed into place.
//!
//! Before anything is written, every destination is compared with what
//! would be written ([`Files::existing`]): a file that already holds those
//! bytes is left alone (so a command killed half-way is simply run again),
//! anything else there is the user's and the command refuses, naming it.
//! A temporary left by a killed writer (`.NAME.cpia-PID.tmp`, PID not
//! running) is removed when the same file is written again.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::confined::Dir;

use super::output_file::{alive, tmp_name, tmp_pid};

/// The most a file written here may hold (recipes, `cpia.toml`, demo
/// sources); anything larger at a destination is not one of ours.
const MAX_COMPARED: u64 = 64 << 20;

/// Files to write: (path relative to the workspace folder, bytes).
pub(super) type FileList = Vec<(String, Vec<u8>)>;

/// What is at a destination now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Existing {
    Absent,
    /// A regular file holding exactly the bytes to write.
    Same,
    /// Something else: why it cannot be written, in words.
    Other(String),
}

/// The workspace folder, open.
pub(super) struct Files {
    root: Dir,
    path: PathBuf,
}

impl Files {
    /// Opens (creating it and its parents) the folder `path`; `path` itself
    /// may be a link (the user chose it).
    pub(super) fn open(path: &Path) -> io::Result<Files> {
        Ok(Files {
            root: Dir::root(path).map_err(|e| with_path(path, e))?,
            path: path.to_path_buf(),
        })
    }

    /// `rel` under the folder, for messages.
    pub(super) fn at(&self, rel: &str) -> PathBuf {
        rel.split('/').fold(self.path.clone(), |p, c| p.join(c))
    }

    /// The folder holding `rel`, walked without following links; `Ok(None)`
    /// if a folder on the way is absent and `create` is false.
    fn folder_of<'r>(&self, rel: &'r str, create: bool) -> io::Result<Option<(Dir, &'r str)>> {
        let mut parts: Vec<&str> = rel.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        let mut here = self.root.try_clone()?;
        let mut walked = String::new();
        for part in parts {
            walked = if walked.is_empty() {
                part.to_string()
            } else {
                format!("{walked}/{part}")
            };
            if let Some(why) = self.not_a_folder(&here, part, &walked) {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
            }
            match here.child(part, create) {
                Ok(Some(d)) => here = d,
                Ok(None) => return Ok(None),
                Err(e) => return Err(with_path(&self.at(&walked), e)),
            }
        }
        Ok(Some((here, name)))
    }

    /// Why `name` in `dir` cannot be walked into, if it exists and is not a
    /// real folder.
    fn not_a_folder(&self, dir: &Dir, name: &str, rel: &str) -> Option<String> {
        let st = dir.stat(name).ok()?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => None,
            libc::S_IFLNK => Some(format!(
                "{} is a symbolic link (to {}): cpia writes nothing through a link inside {}",
                self.at(rel).display(),
                std::fs::read_link(self.at(rel)).map_or("?".into(), |t| t.display().to_string()),
                self.path.display()
            )),
            _ => Some(format!(
                "{} exists and is not a folder",
                self.at(rel).display()
            )),
        }
    }

    /// What is at `rel` now, compared with `bytes`.
    pub(super) fn existing(&self, rel: &str, bytes: &[u8]) -> io::Result<Existing> {
        let (dir, name) = match self.folder_of(rel, false) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Existing::Absent),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(Existing::Other(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let st = match dir.stat(name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
            Err(e) => return Err(with_path(&self.at(rel), e)),
        };
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFLNK => Some("a symbolic link"),
            libc::S_IFDIR => Some("a folder"),
            _ => Some("not a regular file"),
        };
        if let Some(kind) = kind {
            return Ok(Existing::Other(format!(
                "{} exists and is {kind}",
                self.at(rel).display()
            )));
        }
        let same = st.st_size as u64 == bytes.len() as u64
            && st.st_size as u64 <= MAX_COMPARED
            && dir
                .open_file(name)
                .and_then(|f| {
                    let mut old = Vec::with_capacity(bytes.len());
                    f.take(bytes.len() as u64 + 1).read_to_end(&mut old)?;
                    Ok(old == bytes)
                })
                .map_err(|e| with_path(&self.at(rel), e))?;
        Ok(if same {
            Existing::Same
        } else {
            Existing::Other(format!(
                "{} already exists with other content",
                self.at(rel).display()
            ))
        })
    }

    /// Writes `bytes` to `rel` (creating its folders), atomically.
    pub(super) fn write(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let Some((dir, name)) = self.folder_of(rel, true)? else {
            return Err(io::Error::other(format!(
                "{}: its folder vanished",
                self.at(rel).display()
            )));
        };
        clear_stale(&dir, name);
        let tmp = tmp_name(name, std::process::id());
        let result = (|| {
            let mut f = dir.create_file(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            dir.rename(&tmp, &dir, name)
        })();
        if result.is_err() {
            let _ = dir.unlink(&tmp, false);
        }
        result.map_err(|e| with_path(&self.at(rel), e))
    }

    /// Makes the folder `rel` (and its parents) without following links.
    pub(super) fn make_folder(&self, rel: &str) -> io::Result<()> {
        self.folder_of(&format!("{rel}/x"), true).map(drop)
    }
}

/// Removes the temporaries of `name` in `dir` whose writer is dead.
fn clear_stale(dir: &Dir, name: &str) {
    for entry in dir.entries().unwrap_or_default() {
        let dead = tmp_pid(&entry, name).is_some_and(|pid| !alive(pid));
        let file = dir
            .stat(&entry)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        if dead && file {
            let _ = dir.unlink(&entry, false);
        }
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The files `files` would write (relative path, bytes) that are not
/// there yet; an error naming the first destination that is the user's
/// (with how many more), so nothing is written over anything.
pub(super) fn plan_writes<'f>(
    root: &Files,
    files: &'f [(String, Vec<u8>)],
) -> Result<Vec<&'f (String, Vec<u8>)>, String> {
    let mut todo = Vec::new();
    let mut conflicts = Vec::new();
    for f in files {
        match root.existing(&f.0, &f.1).map_err(|e| e.to_string())? {
            Existing::Absent => todo.push(f),
            Existing::Same => {}
            Existing::Other(why) => conflicts.push(why),
        }
    }
    match conflicts.as_slice() {
        [] => Ok(todo),
        [first, rest @ ..] => Err(match rest.len() {
            0 => first.clone(),
            n => format!("{first} (and {n} more of the files it writes)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_and_same_files_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let files = Files::open(&root).unwrap();
        files.write("recipes/a.toml", b"a").unwrap();
        assert_eq!(
            files.existing("recipes/a.toml", b"a").unwrap(),
            Existing::Same
        );
        assert!(matches!(
            files.existing("recipes/a.toml", b"b").unwrap(),
            Existing::Other(_)
        ));
        std::os::unix::fs::symlink(outside.path(), root.join("recipes/templates")).unwrap();
        let e = files.write("recipes/templates/t.toml", b"t").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(matches!(
            files.existing("recipes/templates/t.toml", b"t").unwrap(),
            Existing::Other(_)
        ));
        std::os::unix::fs::symlink(outside.path().join("x"), root.join("b.toml")).unwrap();
        assert!(matches!(
            files.existing("b.toml", b"x").unwrap(),
            Existing::Other(_)
        ));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
