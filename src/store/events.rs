//! The one write path for results: a batch of [`Event`]s applied in one
//! transaction by [`State::record`], whichever executor produced them (the
//! local engine's recorder thread, or the merge of Slurm workers' journals).
//!
//! Every event is idempotent (an upsert, or a delete of what may already be
//! gone), so replaying a batch — a journal merged twice — changes nothing.

use rusqlite::{params, OptionalExtension, Transaction};

use super::records::{FailureRecord, Maker, OutputRecord, ReadFacts, UnitRecord};
use super::state::{hex_blob, State, StateError};

/// One change to record.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A named output (ROI output, QC picture) was written and renamed into
    /// place; it replaces any record at its path.
    Output(Box<OutputRecord>),
    /// A named output's file was deleted (or found already gone).
    OutputRemoved { id: i64 },
    /// A named output was touched but its content is unchanged.
    OutputRestat { id: i64, ino: u64, mtime_ns: i64 },
    /// A named output is up to date but was made under another recipe
    /// version (a metadata-only edit) or class: its record follows.
    OutputMeta {
        id: i64,
        class: Option<String>,
        maker: Maker,
    },
    /// A unit is up to date but its recipe version or MPP origin moved.
    UnitMeta {
        id: i64,
        maker: Maker,
        read: ReadFacts,
    },
    /// A WSI unit was built (completely, or part-way: `complete` false).
    Unit(Box<UnitRecord>),
    /// A WSI unit is no longer planned and its tiles are deleted.
    UnitRemoved { id: i64 },
    /// One tile of a unit was deleted (the unit stays).
    TileRemoved { unit: i64, x: u32, y: u32 },
    /// A tile was touched but its content is unchanged.
    TileRestat {
        unit: i64,
        x: u32,
        y: u32,
        ino: u64,
        mtime_ns: i64,
    },
    /// A source is no longer an input of its collection and every file it
    /// produced is deleted: its rows go.
    InputRemoved { id: i64 },
    /// An input (or one of its cells) failed; the failure replaces the
    /// previous one of the same unit, and the input is no longer complete.
    Failed(FailureRecord),
    /// An input or one of its cells (`unit`) succeeded: forget its failure
    /// and the input-wide one.
    Succeeded { input: i64, unit: String },
    /// The input's work is about to change its outputs: it is incomplete
    /// until [`Event::InputComplete`].
    InputPending { id: i64 },
    /// Every output of the input is built under plan fingerprint `fp` (an id
    /// of `fingerprints`): later plans may skip it while nothing changes.
    InputComplete { id: i64, fp: i64 },
    /// Every input of a source folder of a collection is complete under
    /// `fp`, and its files' names and stats hash to `digest`: later plans
    /// may skip the folder without reading a row of it while the digest of
    /// what they find is the same. Recorded only if it is true.
    FolderComplete {
        collection: i64,
        src_dir: i64,
        digest: String,
        fp: i64,
    },
}

impl State {
    /// Applies a batch of events in one transaction: all or nothing.
    pub fn record(&mut self, events: &[Event]) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        self.record_then(events, |_| Ok(()))
    }

    /// [`State::record`], and `then` in the same transaction (a journal's
    /// merge cursor: the records and how far they reach, or neither).
    pub(super) fn record_then(
        &mut self,
        events: &[Event],
        then: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StateError> {
        // Interned ids are resolved before the transaction (they are
        // committed on their own: a row of `pipelines` without users is
        // harmless, and they are few).
        let mut resolved = Vec::with_capacity(events.len());
        for ev in events {
            resolved.push(match ev {
                Event::Output(o) => Resolved::Output {
                    dir: self.out_dir_id(&o.dir)?,
                    pipeline: self.pipeline_id_known(&o.pipeline_hash)?,
                    maker: self.maker_id(&o.maker)?,
                    read: match &o.read {
                        Some(r) => Some(self.read_id(r)?),
                        None => None,
                    },
                },
                Event::Unit(u) => Resolved::Unit {
                    dir: self.out_dir_id(&u.dir)?,
                    pipeline: self.pipeline_id_known(&u.pipeline_hash)?,
                    maker: self.maker_id(&u.maker)?,
                    read: self.read_id(&u.read)?,
                },
                Event::OutputMeta { maker, .. } => Resolved::Meta {
                    maker: self.maker_id(maker)?,
                    read: None,
                },
                Event::UnitMeta { maker, read, .. } => Resolved::Meta {
                    maker: self.maker_id(maker)?,
                    read: Some(self.read_id(read)?),
                },
                _ => Resolved::None,
            });
        }
        self.transaction("recording results", |tx| {
            for (ev, ids) in events.iter().zip(&resolved) {
                apply(tx, ev, ids)?;
            }
            then(tx)
        })
    }

    /// The id of a pipeline whose description was stored by planning; an
    /// unknown hash (a journal from another state) gets a bare row.
    fn pipeline_id_known(&mut self, hash: &str) -> Result<i64, StateError> {
        self.pipeline_id(hash, "{}")
    }
}

enum Resolved {
    None,
    Meta {
        maker: i64,
        read: Option<i64>,
    },
    Output {
        dir: i64,
        pipeline: i64,
        maker: i64,
        read: Option<i64>,
    },
    Unit {
        dir: i64,
        pipeline: i64,
        maker: i64,
        read: i64,
    },
}

/// Applies one event (with the ids [`State::record`] interned for it); each
/// kind of event is one statement, or one named step below.
fn apply(tx: &Transaction<'_>, ev: &Event, ids: &Resolved) -> rusqlite::Result<()> {
    match (ev, ids) {
        (
            Event::Output(o),
            &Resolved::Output {
                dir,
                pipeline,
                maker,
                read,
            },
        ) => put_output(tx, o, dir, pipeline, maker, read),
        (
            Event::Unit(u),
            &Resolved::Unit {
                dir,
                pipeline,
                maker,
                read,
            },
        ) => put_unit(tx, u, dir, pipeline, maker, read),
        (Event::OutputMeta { id, class, .. }, &Resolved::Meta { maker, .. }) => {
            tx.prepare_cached("UPDATE outputs SET class = ?2, prov = ?3 WHERE id = ?1")?
                .execute(params![id, class, maker])?;
            Ok(())
        }
        (Event::UnitMeta { id, .. }, &Resolved::Meta { maker, read }) => {
            tx.prepare_cached(
                "UPDATE units SET prov = ?2, read = coalesce(?3, read) WHERE id = ?1",
            )?
            .execute(params![id, maker, read])?;
            Ok(())
        }
        (Event::OutputRemoved { id }, _) => {
            tx.prepare_cached("DELETE FROM outputs WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        }
        (Event::OutputRestat { id, ino, mtime_ns }, _) => {
            tx.prepare_cached("UPDATE outputs SET ino = ?2, mtime_ns = ?3 WHERE id = ?1")?
                .execute(params![id, *ino as i64, mtime_ns])?;
            Ok(())
        }
        (Event::UnitRemoved { id }, _) => {
            tx.prepare_cached("DELETE FROM tiles WHERE unit = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM units WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        }
        (Event::TileRemoved { unit, x, y }, _) => {
            tx.prepare_cached("DELETE FROM tiles WHERE unit = ?1 AND x = ?2 AND y = ?3")?
                .execute(params![unit, x, y])?;
            count_tiles(tx, *unit)
        }
        (
            Event::TileRestat {
                unit,
                x,
                y,
                ino,
                mtime_ns,
            },
            _,
        ) => {
            tx.prepare_cached(
                "UPDATE tiles SET ino = ?4, mtime_ns = ?5 WHERE unit = ?1 AND x = ?2 AND y = ?3",
            )?
            .execute(params![unit, x, y, *ino as i64, mtime_ns])?;
            Ok(())
        }
        (Event::InputRemoved { id }, _) => remove_input(tx, *id),
        (Event::Failed(f), _) => put_failure(tx, f),
        (Event::Succeeded { input, unit }, _) => {
            tx.prepare_cached("DELETE FROM failures WHERE input = ?1 AND unit IN (?2, '')")?
                .execute(params![input, unit])?;
            Ok(())
        }
        (Event::InputPending { id }, _) => {
            tx.prepare_cached("UPDATE inputs SET fp = NULL WHERE id = ?1")?
                .execute([id])?;
            forget_folder(tx, *id)
        }
        (
            Event::FolderComplete {
                collection,
                src_dir,
                digest,
                fp,
            },
            _,
        ) => complete_folder(tx, *collection, *src_dir, digest, *fp),
        (Event::InputComplete { id, fp }, _) => complete_input(tx, *id, *fp),
        _ => Ok(()),
    }
}

/// A named output's row (replacing any at its path), and its folder linked
/// to its collection (`dir`, `pipeline`, `maker`, `read`: the ids interned
/// for it).
fn put_output(
    tx: &Transaction<'_>,
    o: &OutputRecord,
    dir: i64,
    pipeline: i64,
    maker: i64,
    read: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO outputs (out_dir, name, input, sink, pipeline, source_hash,
                    class, prov, read, ino, size, mtime_ns, content_hash, built_at, build)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        dir,
        o.name,
        o.input,
        o.sink,
        pipeline,
        hex_blob(&o.source_hash),
        o.class,
        maker,
        read,
        o.file.ino as i64,
        o.file.size as i64,
        o.file.mtime_ns,
        hex_blob(&o.file.content_hash),
        o.built_at,
        o.build
    ])?;
    link_dir(tx, o.input, dir)
}

/// A WSI unit's row (updated in place when it exists), its removed and
/// written tiles, its tile count, and its folder linked to its collection.
fn put_unit(
    tx: &Transaction<'_>,
    u: &UnitRecord,
    dir: i64,
    pipeline: i64,
    maker: i64,
    read: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO units (input, sink, i, j, out_dir, size, pipeline, read, prov, outputs,
                    kept, complete, built_at, build)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?12, ?13)
                 ON CONFLICT (input, sink, i, j) DO UPDATE SET out_dir = excluded.out_dir,
                    size = excluded.size, pipeline = excluded.pipeline, read = excluded.read,
                    prov = excluded.prov, kept = excluded.kept, complete = excluded.complete,
                    built_at = excluded.built_at, build = excluded.build",
    )?
    .execute(params![
        u.input,
        u.sink,
        u.cell.0,
        u.cell.1,
        dir,
        u.size,
        pipeline,
        read,
        maker,
        u.kept.map(i64::from),
        u.complete,
        u.built_at,
        u.build
    ])?;
    let id: i64 = tx
        .prepare_cached(
            "SELECT id FROM units WHERE input = ?1 AND sink = ?2 AND i = ?3 AND j = ?4",
        )?
        .query_row(params![u.input, u.sink, u.cell.0, u.cell.1], |r| r.get(0))?;
    put_tiles(tx, id, u)?;
    count_tiles(tx, id)?;
    link_dir(tx, u.input, dir)
}

/// The tile rows of unit `id`: those it no longer writes deleted, those it
/// wrote put.
fn put_tiles(tx: &Transaction<'_>, id: i64, u: &UnitRecord) -> rusqlite::Result<()> {
    {
        let mut del =
            tx.prepare_cached("DELETE FROM tiles WHERE unit = ?1 AND x = ?2 AND y = ?3")?;
        for (x, y) in &u.removed_tiles {
            del.execute(params![id, x, y])?;
        }
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO tiles (unit, x, y, ino, size, mtime_ns, content_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for t in &u.tiles {
            put.execute(params![
                id,
                t.x,
                t.y,
                t.file.ino as i64,
                t.file.size as i64,
                t.file.mtime_ns,
                hex_blob(&t.file.content_hash)
            ])?;
        }
    }
    Ok(())
}

/// An input and everything recorded of it (its folder is no longer complete).
fn remove_input(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<()> {
    forget_folder(tx, id)?;
    for sql in [
        "DELETE FROM tiles WHERE unit IN (SELECT id FROM units WHERE input = ?1)",
        "DELETE FROM units WHERE input = ?1",
        "DELETE FROM outputs WHERE input = ?1",
        "DELETE FROM failures WHERE input = ?1",
        "DELETE FROM inputs WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id])?;
    }
    Ok(())
}

/// A failure's row; its input (and the input's folder) is no longer complete.
fn put_failure(tx: &Transaction<'_>, f: &FailureRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO failures (input, unit, source_hash, error, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        f.input,
        f.unit,
        f.source_hash.as_deref().map(hex_blob),
        f.error,
        f.at
    ])?;
    tx.prepare_cached("UPDATE inputs SET fp = NULL WHERE id = ?1")?
        .execute([f.input])?;
    forget_folder(tx, f.input)
}

/// A source folder whose every input is complete under `fp`, with its
/// counts (nothing when one of its inputs is not).
fn complete_folder(
    tx: &Transaction<'_>,
    collection: i64,
    src_dir: i64,
    digest: &str,
    fp: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO folders (collection, src_dir, digest, fp, inputs, outputs)
                 SELECT ?1, ?2, ?3, ?4, count(*), coalesce(sum(i.outputs), 0)
                   FROM files f JOIN inputs i ON i.file = f.id AND i.collection = ?1
                  WHERE f.src_dir = ?2
                 HAVING count(*) > 0 AND count(*) = sum(i.fp IS ?4)",
    )?
    .execute(params![collection, src_dir, hex_blob(digest), fp])?;
    Ok(())
}

/// An input complete under `fp`, with its output count.
fn complete_input(tx: &Transaction<'_>, id: i64, fp: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE inputs SET fp = ?2,
                    outputs = (SELECT count(*) FROM outputs WHERE input = ?1)
                            + (SELECT coalesce(sum(outputs), 0) FROM units WHERE input = ?1)
                  WHERE id = ?1",
    )?
    .execute(params![id, fp])?;
    Ok(())
}

/// The folder of an input that is no longer complete is not complete either.
fn forget_folder(tx: &Transaction<'_>, input: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM folders WHERE (collection, src_dir) IN
           (SELECT i.collection, f.src_dir FROM inputs i JOIN files f ON f.id = i.file WHERE i.id = ?1)",
    )?
    .execute([input])?;
    Ok(())
}

/// Keeps a unit's tile count equal to its tile rows.
fn count_tiles(tx: &Transaction<'_>, unit: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE units SET outputs = (SELECT count(*) FROM tiles WHERE unit = ?1) WHERE id = ?1",
    )?
    .execute([unit])?;
    Ok(())
}

/// Notes that the input's collection has outputs in folder `dir`.
fn link_dir(tx: &Transaction<'_>, input: i64, dir: i64) -> rusqlite::Result<()> {
    let collection: Option<i64> = tx
        .prepare_cached("SELECT collection FROM inputs WHERE id = ?1")?
        .query_row([input], |r| r.get(0))
        .optional()?;
    if let Some(c) = collection {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO collection_dirs (collection, out_dir) VALUES (?1, ?2)",
        )?
        .execute(params![c, dir])?;
    }
    Ok(())
}
