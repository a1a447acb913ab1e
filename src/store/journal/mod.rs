//! Worker journals: how tasks that must not share the state database
//! (Slurm array tasks on a shared filesystem, where SQLite locking is
//! unreliable) hand their results to the one process that records them.
//!
//! Each task appends to files of its own under `cache/journal/`
//! ([`JournalWriter::create`] picks a fresh `<stem>-<n>.journal`, so a task
//! that runs twice writes two files and no file ever has two writers). A
//! record is opaque bytes (JSON helpers for `serde` types), framed with its
//! length and a checksum ([`format`]).
//!
//! Durability, for NFS and Lustre as for a local disk: the writer appends the
//! records of files that are *already durably in place*, then
//! [`sync`](JournalWriter::sync)s (fdatasync, which on NFS also commits to
//! the server). The order is the caller's duty; the journal offers `append`
//! and `sync`. So a record never promises a file a crash can take away; a
//! crash loses at most the unsynced records, whose files the next build
//! sees as unrecorded and makes again.
//!
//! Reading ([`JournalReader`]) verifies every record and stops at the first
//! that fails — a torn tail (normal after a crash, or while the task still
//! writes) or corruption before the end — and never returns a damaged
//! record or anything after it.
//!
//! Merging ([`merge`]) is exactly once through a [`Cursor`]: the state
//! remembers, per journal (by the random id in its header, not its name),
//! the offset up to which it applied records, in the same transaction as
//! the records. Why a cursor and not only idempotent upserts: replaying an
//! old record is not harmless once something newer was recorded (a later
//! build rewrote the output, or a removal followed); the cursor guarantees
//! no record is applied twice. Upserts are still needed for the one
//! duplication a cursor cannot see — a task run twice, whose two journals
//! describe the same outputs. [`State::record_merged`](crate::store::State::record_merged)
//! applies a batch and saves its cursor in one transaction.
//!
//! Payloads: [`codec`] encodes the store's [`Event`](crate::store::Event)s
//! compactly (varints, hashes as bytes); JSON helpers exist for tests and
//! small tools.

pub mod codec;
pub mod cursor;
pub mod format;
pub mod merge;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;

pub use cursor::{Cursor, CURSOR_SCHEMA};
pub use format::JournalId;
pub use merge::{journal_files, json, merge, ApplyError, Batch, MergeReport};
pub use reader::{JournalReader, OpenError, Tail};
pub use writer::JournalWriter;
