//! Directory handles that reach only real folders: the output folder's
//! confinement, by construction.
//!
//! Every path under the output root is reached from an open descriptor of
//! the root, one component at a time, with `openat(O_DIRECTORY |
//! O_NOFOLLOW)`; files are created, renamed and deleted relative to the
//! descriptor of their final folder (`openat`, `renameat`, `unlinkat`). A
//! symbolic link anywhere below the root is therefore never followed — the
//! kernel refuses it in the same call that would have used it — and there is
//! no check-then-act window in which a path could be swapped for a link. The
//! root itself may be a link (the user chose where the dataset lives).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An open folder, and where it is (for messages).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Path relative to the root (`""` for the root itself).
    rel: String,
}

/// Why a component could not be used as a folder.
fn refused(rel: &str, why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("`{rel}` {why}"))
}

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` contains a NUL byte"),
        )
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Dir {
    /// Opens (creating it and its parents if needed) the root folder at `path`.
    pub fn root(path: &Path) -> io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        // SAFETY: `c` is a valid C string; the result is checked.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            rel: String::new(),
        })
    }

    /// The path of `name` inside this folder, relative to the root.
    pub fn rel_of(&self, name: &str) -> String {
        if self.rel.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.rel)
        }
    }

    /// The sub-folder `name` (a single component), created if `create` and
    /// absent. `Ok(None)` if it is absent and not created. A symbolic link or
    /// a non-folder there is an error naming it.
    pub fn child(&self, name: &str, create: bool) -> io::Result<Option<Dir>> {
        let c = cstr(name)?;
        let rel = self.rel_of(name);
        // Created, then gone before it could be opened, again and again: give up.
        for _ in 0..8 {
            // SAFETY: valid descriptor and C string; the result is checked.
            let fd = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                return Ok(Some(Dir {
                    // SAFETY: `fd` was just opened and is owned by nothing else.
                    fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    rel,
                }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOENT) if create => {
                    // SAFETY: valid descriptor and C string.
                    let r = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o777) };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        // Another thread made it first: open it.
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                    }
                }
                Some(libc::ENOENT) => return Ok(None),
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                    return Err(match self.link_target(name) {
                        Some(to) => refused(
                            &rel,
                            format!(
                                "is a symbolic link (to {}): cpia never follows links inside the output folder",
                                to.display()
                            ),
                        ),
                        None => refused(&rel, "exists and is not a folder".to_string()),
                    })
                }
                _ => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "`{rel}` keeps disappearing while it is created"
        )))
    }

    /// Where the link `name` points, if it is a link.
    fn link_target(&self, name: &str) -> Option<PathBuf> {
        let c = cstr(name).ok()?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: valid descriptor, C string and buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        Some(PathBuf::from(std::ffi::OsString::from(
            String::from_utf8_lossy(&buf).into_owned(),
        )))
    }

    /// Walks `components` down from this folder, creating missing folders if
    /// `create`. Returns every folder opened, this one's children first
    /// (empty `components`: none); `Ok(None)` if one is absent and not created.
    pub fn walk<'c>(
        &self,
        components: impl IntoIterator<Item = &'c str>,
        create: bool,
    ) -> io::Result<Option<Vec<Dir>>> {
        let mut chain: Vec<Dir> = Vec::new();
        for c in components {
            let next = chain.last().unwrap_or(self).child(c, create)?;
            match next {
                Some(d) => chain.push(d),
                None => return Ok(None),
            }
        }
        Ok(Some(chain))
    }

    /// Creates the new file `name` for writing (it must not exist; a link
    /// there is not followed).
    pub fn create_file(&self, name: &str) -> io::Result<std::fs::File> {
        let c = cstr(name)?;
        // SAFETY: valid descriptor and C string; the result is checked.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o666 as libc::c_uint,
            )
        })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// Opens the existing file `name` for reading, without following a link
    /// and without blocking (a FIFO there opens at once; the caller checks
    /// what it opened).
    pub fn open_file(&self, name: &str) -> io::Result<std::fs::File> {
        let c = cstr(name)?;
        // SAFETY: valid descriptor and C string; the result is checked.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// Makes `name` in this folder a hard link to the open file `file`
    /// (through `/proc/self/fd`, so the inode linked is the one opened,
    /// whatever its path became since).
    pub fn link_fd(&self, file: &std::fs::File, name: &str) -> io::Result<()> {
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let to = cstr(name)?;
        // SAFETY: valid C strings and descriptors; the result is checked.
        cvt(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                self.fd.as_raw_fd(),
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
        .map(drop)
    }

    /// Renames `name` of this folder to `to_name` in `to` (replacing a file
    /// or link there, never following it).
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        let (a, b) = (cstr(name)?, cstr(to_name)?);
        // SAFETY: valid descriptors and C strings.
        cvt(unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                a.as_ptr(),
                to.fd.as_raw_fd(),
                b.as_ptr(),
            )
        })
        .map(drop)
    }

    /// Deletes the file (or link) `name`; `folder`: the empty folder `name`.
    pub fn unlink(&self, name: &str, folder: bool) -> io::Result<()> {
        let c = cstr(name)?;
        let flags = if folder { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid descriptor and C string.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
    }

    /// `lstat` of `name`.
    pub fn stat(&self, name: &str) -> io::Result<libc::stat> {
        let c = cstr(name)?;
        // SAFETY: a zeroed `stat` is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, C string and out-parameter.
        cvt(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st)
    }

    /// The names in this folder (not `.` and `..`).
    pub fn entries(&self) -> io::Result<Vec<String>> {
        // fdopendir takes over the descriptor it is given: hand it a copy.
        // SAFETY: valid descriptor; the result is checked.
        let dup = cvt(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: `dup` is an open descriptor we own; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(dup) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            return Err(e);
        }
        // A duplicate shares its position with the original descriptor,
        // which an earlier listing left at the end: start from the top.
        // SAFETY: `stream` is a valid open directory stream.
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        loop {
            // SAFETY: `stream` is a valid open directory stream.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: readdir returned a valid entry whose name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let name = name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        // SAFETY: `stream` is valid and closed once (which closes `dup`).
        unsafe { libc::closedir(stream) };
        Ok(names)
    }

    /// Deletes `name` and, if it is a folder, everything in it — links
    /// deleted, never followed — without recursion.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        match self.unlink(name, false) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
                return Err(e)
            }
            Err(_) => {}
        }
        // A folder: empty it depth-first with an explicit stack of open folders.
        let Some(top) = self.child(name, false)? else {
            return Ok(());
        };
        let mut stack: Vec<(Dir, Vec<String>)> = Vec::new();
        let names = top.entries()?;
        stack.push((top, names));
        while let Some((dir, mut names)) = stack.pop() {
            match names.pop() {
                None => {
                    // `dir` is empty now: remove it from its parent.
                    let leaf = dir.rel.rsplit('/').next().unwrap_or(&dir.rel).to_string();
                    drop(dir);
                    let parent = stack.last().map(|(d, _)| d).unwrap_or(self);
                    parent.unlink(&leaf, true)?;
                }
                Some(n) => match dir.unlink(&n, false) {
                    Ok(()) => stack.push((dir, names)),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
                        let sub = dir.child(&n, false)?;
                        stack.push((dir, names));
                        if let Some(sub) = sub {
                            let inner = sub.entries()?;
                            stack.push((sub, inner));
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => stack.push((dir, names)),
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// A second handle on the same folder.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            rel: self.rel.clone(),
        })
    }

    /// Makes this folder's entries durable (`fsync` of the folder): the
    /// renames into it survive a crash.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: valid descriptor for the whole call.
        cvt(unsafe { libc::fsync(self.fd.as_raw_fd()) }).map(drop)
    }

    /// The type of the filesystem holding this folder (`statfs(2)`'s
    /// `f_type`, a magic number of linux/magic.h).
    pub fn filesystem_type(&self) -> io::Result<u32> {
        // SAFETY: a zeroed `statfs` is a valid out-parameter.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-parameter.
        cvt(unsafe { libc::fstatfs(self.fd.as_raw_fd(), &mut st) })?;
        // Magic numbers are 32 bits; `f_type` is a signed word.
        Ok(st.f_type as u32)
    }

    /// Flushes the whole filesystem holding this folder (`syncfs`); false if
    /// the filesystem cannot.
    pub fn syncfs(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: valid descriptor for the whole call.
            unsafe { libc::syncfs(self.fd.as_raw_fd()) == 0 }
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_real_folders_and_refuses_links_and_files() {
        let t = tempfile::tempdir().unwrap();
        let root = Dir::root(&t.path().join("out")).unwrap();
        let chain = root.walk(["a", "b"], true).unwrap().unwrap();
        assert_eq!(chain[1].rel, "a/b");
        assert!(t.path().join("out/a/b").is_dir());
        assert!(root.walk(["x", "y"], false).unwrap().is_none());

        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), t.path().join("out/a/l")).unwrap();
        let e = root.walk(["a", "l", "c"], true).unwrap_err().to_string();
        assert!(e.contains("`a/l` is a symbolic link (to "), "{e}");
        assert!(e.contains("elsewhere"), "{e}");
        assert!(!t.path().join("elsewhere/c").exists());

        std::fs::write(t.path().join("out/f"), b"x").unwrap();
        let e = root.child("f", true).unwrap_err().to_string();
        assert!(e.contains("`f` exists and is not a folder"), "{e}");
    }

    #[test]
    fn remove_tree_deletes_links_not_their_targets() {
        let t = tempfile::tempdir().unwrap();
        let root = Dir::root(&t.path().join("out")).unwrap();
        std::fs::create_dir_all(t.path().join("victim/inner")).unwrap();
        std::fs::write(t.path().join("victim/inner/keep"), b"k").unwrap();
        std::fs::create_dir_all(t.path().join("out/tmp/d1/d2")).unwrap();
        std::fs::write(t.path().join("out/tmp/d1/d2/f"), b"f").unwrap();
        std::fs::write(t.path().join("out/tmp/g"), b"g").unwrap();
        std::os::unix::fs::symlink(t.path().join("victim"), t.path().join("out/tmp/d1/l")).unwrap();
        root.remove_tree("tmp").unwrap();
        assert!(!t.path().join("out/tmp").exists());
        assert!(t.path().join("victim/inner/keep").is_file());
        // A link given as the tree itself is removed as a link.
        std::os::unix::fs::symlink(t.path().join("victim"), t.path().join("out/l2")).unwrap();
        root.remove_tree("l2").unwrap();
        assert!(t.path().join("victim/inner/keep").is_file());
        root.remove_tree("absent").unwrap();
    }
}
