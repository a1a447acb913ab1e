//! Folding journals into the state exactly once.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::cursor::Cursor;
use super::format::JournalId;
use super::reader::{JournalReader, OpenError, Tail};
use super::writer::SUFFIX;

/// Batches read ahead while the state applies one: reading and decoding run
/// on their own thread, overlapped with the state's transactions.
const READ_AHEAD: usize = 2;

/// Records to apply in one transaction, all from one journal.
pub struct Batch<'a, T> {
    /// The journal they come from.
    pub journal: JournalId,
    /// Its file.
    pub path: &'a Path,
    /// The decoded records, in order.
    pub records: Vec<T>,
    /// The offset just after the last of them: the journal's new cursor,
    /// to be saved in the same transaction ([`Cursor::save`]).
    pub end: u64,
}

/// What a merge did and what it could not read.
#[derive(Debug, Default)]
pub struct MergeReport {
    /// Journal files looked at.
    pub files: usize,
    /// Records applied.
    pub records: u64,
    /// Journals whose readable part ends in an incomplete record (a task
    /// killed mid-write, or still running): the file and the offset.
    pub torn: Vec<(PathBuf, u64)>,
    /// Journals damaged before their end: the file, the offset, what is
    /// wrong. Their records after the damage are not applied; the outputs
    /// they described are rebuilt by the next build.
    pub corrupt: Vec<(PathBuf, u64, &'static str)>,
    /// Journals that could not be read (wholly or from some record on), as
    /// messages naming the file: I/O errors, foreign files, records that do
    /// not decode. Headers never finished (a task killed while creating its
    /// journal) are not listed: they hold nothing.
    pub unreadable: Vec<String>,
}

/// A merge stopped because the state refused a batch: the cursor holds
/// every batch applied before it.
#[derive(Debug)]
pub struct ApplyError<E> {
    /// The journal whose batch failed.
    pub path: PathBuf,
    pub error: E,
}

/// Every `*.journal` file under `dir` (any depth, symlinks not followed),
/// sorted by path. A missing `dir` has none.
pub fn journal_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == SUFFIX) {
            out.push(entry.into_path());
        }
    }
    Ok(out)
}

/// Hands every record under `dir` that `cursor` does not cover, decoded by
/// `decode`, to `apply`, in batches of at most `batch` records of one
/// journal, in file order, and moves `cursor` past each batch `apply`
/// accepts. Reading, verifying and decoding run on a thread of their own,
/// a few batches ahead of `apply`.
///
/// Exactly once: `apply` must apply a batch *and* save the journal's new
/// cursor ([`Batch::end`], with [`Cursor::save`]) in one transaction. Then a
/// merge run twice, or killed and run again, applies nothing twice; and a
/// journal still being written is merged up to its last whole record now
/// and the rest later. A task run twice writes two journals describing the
/// same outputs: both are applied, so the events must be upserts keyed by
/// what they describe (an output path, a unit), as `State::record` is.
///
/// Unreadable and damaged journals are reported and skipped (the others are
/// merged); a record that does not decode ends its journal's merge there
/// (reported; its cursor stays before it). The merge stops at the first
/// batch `apply` refuses.
pub fn merge<T: Send, E>(
    dir: &Path,
    cursor: &mut Cursor,
    batch: usize,
    decode: impl Fn(&[u8]) -> Result<T, String> + Sync,
    mut apply: impl FnMut(Batch<'_, T>) -> Result<(), E>,
) -> Result<MergeReport, ApplyError<E>> {
    let mut report = MergeReport::default();
    let files = match journal_files(dir) {
        Ok(f) => f,
        Err(e) => {
            report
                .unreadable
                .push(format!("{}: listing journals: {e}", dir.display()));
            return Ok(report);
        }
    };
    report.files = files.len();
    let start = cursor.clone();
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        let (files, start, decode) = (&files, &start, &decode);
        s.spawn(move || read_journals(files, start, batch.max(1), decode, tx));
        // Dropping `rx` on an error stops the reader at its next send.
        for item in rx {
            match item {
                Read::Batch {
                    file,
                    journal,
                    records,
                    end,
                } => {
                    let n = records.len() as u64;
                    let path = &files[file];
                    apply(Batch {
                        journal,
                        path,
                        records,
                        end,
                    })
                    .map_err(|error| ApplyError {
                        path: path.clone(),
                        error,
                    })?;
                    cursor.set(journal, end);
                    report.records += n;
                }
                Read::Torn(file, at) => report.torn.push((files[file].clone(), at)),
                Read::Corrupt(file, at, why) => report.corrupt.push((files[file].clone(), at, why)),
                Read::Unreadable(msg) => report.unreadable.push(msg),
            }
        }
        Ok(report)
    })
}

/// What the reading thread hands over, in file order.
enum Read<T> {
    Batch {
        file: usize,
        journal: JournalId,
        records: Vec<T>,
        end: u64,
    },
    Torn(usize, u64),
    Corrupt(usize, u64, &'static str),
    Unreadable(String),
}

/// Reads `files` from the positions in `start`, sending batches of decoded
/// records and how each file ends, until done or the receiver is gone.
fn read_journals<T>(
    files: &[PathBuf],
    start: &Cursor,
    batch: usize,
    decode: &(impl Fn(&[u8]) -> Result<T, String> + Sync),
    tx: mpsc::SyncSender<Read<T>>,
) {
    for (file, path) in files.iter().enumerate() {
        let mut reader = match open_at(path, start) {
            Ok(r) => r,
            Err(OpenError::Unfinished(_)) => continue,
            Err(e) => {
                if tx.send(Read::Unreadable(e.to_string())).is_err() {
                    return;
                }
                continue;
            }
        };
        let journal = reader.id();
        loop {
            let mut records = Vec::with_capacity(batch.min(4096));
            let mut end = reader.offset();
            let mut stop = None;
            while records.len() < batch {
                let at = reader.offset();
                match reader.next_record() {
                    Ok(Some(payload)) => match decode(payload) {
                        Ok(r) => {
                            records.push(r);
                            end = reader.offset();
                        }
                        Err(e) => {
                            stop = Some(Read::Unreadable(format!(
                                "{}: record at byte {at} does not decode: {e}",
                                path.display()
                            )));
                            break;
                        }
                    },
                    Ok(None) => {
                        stop = match reader.tail() {
                            Some(Tail::Torn { at }) => Some(Read::Torn(file, *at)),
                            Some(Tail::Corrupt { at, reason }) => {
                                Some(Read::Corrupt(file, *at, reason))
                            }
                            _ => None,
                        };
                        break;
                    }
                    Err(e) => {
                        stop = Some(Read::Unreadable(e.to_string()));
                        break;
                    }
                }
            }
            let done = stop.is_some() || records.len() < batch;
            if !records.is_empty()
                && tx
                    .send(Read::Batch {
                        file,
                        journal,
                        records,
                        end,
                    })
                    .is_err()
            {
                return;
            }
            if let Some(s) = stop {
                if tx.send(s).is_err() {
                    return;
                }
            }
            if done {
                break;
            }
        }
    }
}

fn open_at(path: &Path, cursor: &Cursor) -> Result<JournalReader, OpenError> {
    let mut reader = JournalReader::open(path)?;
    if let Some(offset) = cursor.get(reader.id()) {
        reader.seek(offset)?;
    }
    Ok(reader)
}

/// A `decode` for [`merge`] of records written with
/// [`JournalWriter::append_json`](super::JournalWriter::append_json).
pub fn json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}
