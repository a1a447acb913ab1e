//! Reading a journal back, stopping cleanly where it stops being whole.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::format::{self, HeaderError, JournalId, FRAME_LEN, HEADER_LEN};
use super::writer::with_path;

/// How the readable part of a journal ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// At a record boundary at the end of the file.
    Clean,
    /// In a last record cut short (its writer was killed, or is still
    /// writing it): normal after a crash; the record was never synced, so
    /// nothing it described was promised.
    Torn {
        /// Offset of the incomplete record.
        at: u64,
    },
    /// At a damaged record followed by more bytes: the file was altered
    /// after it was written. Nothing from here on is trusted.
    Corrupt {
        /// Offset of the damaged record.
        at: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a journal cannot be read at all.
#[derive(Debug)]
pub enum OpenError {
    /// Shorter than a header, or a zero-filled header: its writer died while
    /// creating it, before it held any record.
    Unfinished(PathBuf),
    /// Not a journal, or a journal of another format version.
    Header(PathBuf, String),
    /// The merge cursor lies beyond the end of the file (the file was
    /// truncated or replaced after records were merged from it).
    CursorBeyondEnd(PathBuf, u64, u64),
    Io(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Unfinished(p) => write!(f, "{}: journal header incomplete", p.display()),
            OpenError::Header(p, e) => write!(f, "{}: {e}", p.display()),
            OpenError::CursorBeyondEnd(p, at, len) => write!(
                f,
                "{}: merged up to byte {at}, but the file has only {len} bytes (truncated or replaced?)",
                p.display()
            ),
            OpenError::Io(e) => e.fmt(f),
        }
    }
}
impl std::error::Error for OpenError {}

/// Reads the records of one journal file in order.
pub struct JournalReader {
    input: BufReader<File>,
    path: PathBuf,
    id: JournalId,
    /// Offset just after the last whole record read.
    pos: u64,
    buf: Vec<u8>,
    tail: Option<Tail>,
}

impl JournalReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<JournalReader, OpenError> {
        let file = File::open(path).map_err(|e| OpenError::Io(with_path(path, e)))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut h = [0u8; HEADER_LEN];
        let n = read_full(&mut input, &mut h).map_err(|e| OpenError::Io(with_path(path, e)))?;
        if n < HEADER_LEN || h.iter().all(|&b| b == 0) {
            return Err(OpenError::Unfinished(path.to_path_buf()));
        }
        let id = format::parse_header(&h).map_err(|e| {
            let msg = match e {
                HeaderError::Magic => "not a cpia journal (wrong magic bytes)".to_string(),
                HeaderError::Version(v) => format!(
                    "journal format version {v}, this cpia reads version {}",
                    format::VERSION
                ),
            };
            OpenError::Header(path.to_path_buf(), msg)
        })?;
        Ok(JournalReader {
            input,
            path: path.to_path_buf(),
            id,
            pos: HEADER_LEN as u64,
            buf: Vec::new(),
            tail: None,
        })
    }

    /// Continues from `offset`, the end of a record read before (a merge
    /// cursor). Offsets before the first record mean the first record.
    pub fn seek(&mut self, offset: u64) -> Result<(), OpenError> {
        let offset = offset.max(HEADER_LEN as u64);
        let len = self
            .input
            .get_ref()
            .metadata()
            .map_err(|e| OpenError::Io(with_path(&self.path, e)))?
            .len();
        if offset > len {
            return Err(OpenError::CursorBeyondEnd(self.path.clone(), offset, len));
        }
        self.input
            .seek(SeekFrom::Start(offset))
            .map_err(|e| OpenError::Io(with_path(&self.path, e)))?;
        self.pos = offset;
        self.tail = None;
        Ok(())
    }

    /// The next whole, verified record, or `None` at the end of the readable
    /// part (then [`tail`](JournalReader::tail) says how it ends). A damaged
    /// record is never returned, nor anything after it.
    pub fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        if self.tail.is_some() {
            return Ok(None);
        }
        let at = self.pos;
        let mut frame = [0u8; FRAME_LEN];
        let n = read_full(&mut self.input, &mut frame).map_err(|e| with_path(&self.path, e))?;
        if n == 0 {
            self.tail = Some(Tail::Clean);
            return Ok(None);
        }
        if n < FRAME_LEN {
            self.tail = Some(Tail::Torn { at });
            return Ok(None);
        }
        let Some(len) = format::frame_len(&frame) else {
            self.tail = Some(self.damaged(at, "record length damaged")?);
            return Ok(None);
        };
        self.buf.resize(len, 0);
        let n = read_full(&mut self.input, &mut self.buf).map_err(|e| with_path(&self.path, e))?;
        if n < len {
            self.tail = Some(Tail::Torn { at });
            return Ok(None);
        }
        if format::checksum(&self.buf) != format::frame_checksum(&frame) {
            self.tail = Some(self.damaged(at, "checksum mismatch")?);
            return Ok(None);
        }
        self.pos = at + (FRAME_LEN + len) as u64;
        Ok(Some(&self.buf))
    }

    /// The next record decoded from JSON (see [`JournalWriter::append_json`](super::JournalWriter::append_json)).
    /// A verified record that does not decode is an error naming the file and
    /// offset (a journal written by another version of the event type).
    pub fn next_json<T: serde::de::DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        let at = self.pos;
        let path = self.path.clone();
        match self.next_record()? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: record at byte {at}: {e}", path.display()),
                )
            }),
        }
    }

    /// The record at `at` failed its checks: torn if it ends the file (only
    /// zeros may follow it, as a crash can leave when a file's size reached
    /// the disk before its data), corrupt if real bytes follow it.
    fn damaged(&mut self, at: u64, reason: &'static str) -> io::Result<Tail> {
        let mut rest_zero = true;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = self
                .input
                .read(&mut chunk)
                .map_err(|e| with_path(&self.path, e))?;
            if n == 0 {
                break;
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                rest_zero = false;
                break;
            }
        }
        Ok(if rest_zero {
            Tail::Torn { at }
        } else {
            Tail::Corrupt { at, reason }
        })
    }

    /// How the readable part ended, once [`next_record`](JournalReader::next_record) returned `None`.
    pub fn tail(&self) -> Option<&Tail> {
        self.tail.as_ref()
    }

    /// Offset just after the last whole record read: where a merge resumes.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// The identity in the header.
    pub fn id(&self) -> JournalId {
        self.id
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
