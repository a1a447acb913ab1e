//! Appending to a journal of one's own.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{self, JournalId, MAX_RECORD};

/// File name suffix of journals.
pub const SUFFIX: &str = "journal";

/// Attempts at a free file name before giving up (each is one `O_EXCL` create).
const MAX_ATTEMPTS: u32 = 10_000;

/// A journal file this process created and alone appends to.
///
/// Records are buffered by [`append`](JournalWriter::append) and durable
/// only after [`sync`](JournalWriter::sync): the caller appends the records of
/// files that are already durably in place, then syncs (once per batch).
/// Dropping the writer without `sync` may lose the unsynced records (never
/// damage the synced ones): the reader stops at a torn tail.
pub struct JournalWriter {
    out: BufWriter<File>,
    path: PathBuf,
    id: JournalId,
    /// Bytes appended (header included), synced or not.
    len: u64,
}

impl JournalWriter {
    /// Creates `<dir>/<stem>-<n>.journal` with the smallest `n` not taken
    /// (`O_CREAT | O_EXCL`, so two processes — on two nodes of a shared
    /// filesystem too — never share a file; a re-run task gets a new file and
    /// never appends after a torn tail). `dir` is created if needed. The
    /// header is synced, and so is the folder, so the file survives a crash.
    pub fn create(dir: &Path, stem: &str) -> io::Result<JournalWriter> {
        if stem.is_empty() || stem.contains(['/', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("journal name `{stem}` is not one path component"),
            ));
        }
        create_dir_durably(dir)?;
        for n in 0..MAX_ATTEMPTS {
            let path = dir.join(format!("{stem}-{n}.{SUFFIX}"));
            let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(with_path(&path, e)),
            };
            let id = JournalId(random_bytes().map_err(|e| with_path(&path, e))?);
            let mut w = JournalWriter {
                out: BufWriter::with_capacity(1 << 16, file),
                path,
                id,
                len: 0,
            };
            w.out
                .write_all(&format::header(id))
                .map_err(|e| with_path(&w.path, e))?;
            w.len = format::HEADER_LEN as u64;
            w.sync()?;
            sync_dir(dir)?;
            return Ok(w);
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: {MAX_ATTEMPTS} journals named {stem}-N already exist",
                dir.display()
            ),
        ))
    }

    /// Appends one record (buffered; see [`sync`](JournalWriter::sync)).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if payload.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a record of {} bytes exceeds the journal's limit of {MAX_RECORD}",
                    self.path.display(),
                    payload.len()
                ),
            ));
        }
        self.out
            .write_all(&format::frame(payload))
            .and_then(|()| self.out.write_all(payload))
            .map_err(|e| with_path(&self.path, e))?;
        self.len += (format::FRAME_LEN + payload.len()) as u64;
        Ok(())
    }

    /// Appends `value` as JSON.
    pub fn append_json<T: serde::Serialize>(&mut self, value: &T) -> io::Result<()> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.append(&bytes)
    }

    /// Writes out the buffered records and waits until the file's data is
    /// on stable storage (`fdatasync`; on NFS this also commits to the
    /// server, so a reader on another node sees them).
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| with_path(&self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| with_path(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity written in the file's header.
    pub fn id(&self) -> JournalId {
        self.id
    }

    /// Bytes appended so far, header included (synced or not).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len == format::HEADER_LEN as u64
    }
}

/// Creates `dir` and makes its entry in its parent durable.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// fsync of a folder: makes the names created in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(dir, e))
}

/// 16 bytes from the kernel's random source: ids must differ between every
/// process on every node, which no clock or pid alone guarantees.
fn random_bytes() -> io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

pub(super) fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
