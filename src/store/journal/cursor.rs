//! How far each journal has been merged, and where that is remembered.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection};

use super::format::JournalId;
use crate::store::{Event, State, StateError};

/// The table that remembers merge cursors, in the state database. A cursor
/// must be written in the same transaction as the records it covers: then
/// a merge interrupted at any instant either applied a batch and moved past
/// it, or did neither.
pub const CURSOR_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal_cursors (
    journal TEXT PRIMARY KEY, path TEXT NOT NULL, offset INTEGER NOT NULL
) WITHOUT ROWID;
";

/// For each journal (by the id in its header), the offset just after the
/// last record merged from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    merged: HashMap<JournalId, u64>,
}

impl Cursor {
    /// Where merging `id` resumes (`None`: at its first record).
    pub fn get(&self, id: JournalId) -> Option<u64> {
        self.merged.get(&id).copied()
    }

    /// Notes that `id` is merged up to `offset`.
    pub fn set(&mut self, id: JournalId, offset: u64) {
        self.merged.insert(id, offset);
    }

    /// Forgets `id` (its file was deleted).
    pub fn remove(&mut self, id: JournalId) {
        self.merged.remove(&id);
    }

    /// Number of journals with a position.
    pub fn len(&self) -> usize {
        self.merged.len()
    }

    /// Whether no journal has a position.
    pub fn is_empty(&self) -> bool {
        self.merged.is_empty()
    }

    /// Reads every cursor from `conn` (which has [`CURSOR_SCHEMA`]).
    pub fn load(conn: &Connection) -> rusqlite::Result<Cursor> {
        let mut stmt = conn.prepare("SELECT journal, offset FROM journal_cursors")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut merged = HashMap::new();
        for row in rows {
            let (id, offset) = row?;
            let id: JournalId = id.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?;
            merged.insert(id, offset.max(0) as u64);
        }
        Ok(Cursor { merged })
    }

    /// Writes the position of `id` (call it inside the transaction that
    /// applies the records up to `offset`). `path` is for people reading the
    /// table.
    pub fn save(conn: &Connection, id: JournalId, path: &str, offset: u64) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO journal_cursors (journal, path, offset) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id.to_string(), path, offset as i64])?;
        Ok(())
    }

    /// Deletes the position of `id` (after its file is deleted).
    pub fn delete(conn: &Connection, id: JournalId) -> rusqlite::Result<()> {
        conn.execute(
            "DELETE FROM journal_cursors WHERE journal = ?1",
            [id.to_string()],
        )?;
        Ok(())
    }
}

impl State {
    /// Where merging resumes, for every journal merged from before.
    pub fn merge_cursor(&self) -> Result<Cursor, StateError> {
        Cursor::load(&self.conn).map_err(self.err("reading journal cursors"))
    }

    /// Applies `events` (records of journal `journal`, file `path`) and
    /// moves its cursor to `end`, in one transaction: each record is applied
    /// once however often a merge is interrupted and run again.
    pub fn record_merged(
        &mut self,
        events: &[Event],
        journal: JournalId,
        path: &Path,
        end: u64,
    ) -> Result<(), StateError> {
        let path = path.to_string_lossy();
        self.record_then(events, |tx| Cursor::save(tx, journal, &path, end))
    }
}
