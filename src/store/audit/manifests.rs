//! The bookkeeping of the manifests in the dataset: which part of which
//! output folder holds an input's rows, what each part file was when it was
//! written, and which (folder, input) pairs changed since — marked by
//! triggers (schema.rs) in the very transaction that changed the records, so
//! a crash can never lose a change the manifests have not seen.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use crate::store::state::{blob_hex, hex_blob, State, StateError};

/// A manifest file as written: enough to notice later that it changed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PartFile {
    pub blake3: String,
    pub bytes: u64,
    pub mtime_ns: i64,
}

/// A recorded manifest part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestPart {
    pub id: i64,
    pub out_dir: i64,
    /// The output folder it lists (`M/BreaKHis_100x`).
    pub dir: String,
    pub rows: u64,
    pub csv: PartFile,
    pub parquet: PartFile,
}

/// A written part: its row count, CSV file and Parquet file.
pub type WrittenPart = (u64, PartFile, PartFile);

/// What one update of an output folder's manifests did, committed at once.
#[derive(Clone, Debug, Default)]
pub struct ManifestUpdate {
    pub out_dir: i64,
    /// Dirty marks of these inputs are cleared.
    pub cleared: Vec<i64>,
    /// Input → its part (`None`: it has no rows here any more).
    pub members: Vec<(i64, Option<i64>)>,
    /// Part → its files and row count (`None`: deleted).
    pub parts: Vec<(i64, Option<WrittenPart>)>,
}

impl State {
    /// Forgets every part and marks every (folder, input) with records as
    /// changed: the next update writes all manifests anew.
    pub fn mark_all_manifests_dirty(&mut self) -> Result<(), StateError> {
        self.transaction("resetting the manifests", |tx| {
            tx.execute_batch(
                "DELETE FROM manifest_members; DELETE FROM manifest_parts;
                 INSERT OR IGNORE INTO manifest_dirty SELECT DISTINCT out_dir, input FROM outputs;
                 INSERT OR IGNORE INTO manifest_dirty SELECT DISTINCT out_dir, input FROM units;",
            )
        })
    }

    /// How many (folder, input) pairs changed since the manifests were written.
    pub fn manifest_pending(&self) -> Result<u64, StateError> {
        self.conn
            .query_row("SELECT count(*) FROM manifest_dirty", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(self.err("reading the manifests' changes"))
    }

    /// Output folders with changes: (id, path), by path.
    pub fn manifest_dirty_dirs(&self) -> Result<Vec<(i64, String)>, StateError> {
        self.rows(
            "SELECT d.id, d.path FROM out_dirs d
              WHERE d.id IN (SELECT DISTINCT out_dir FROM manifest_dirty) ORDER BY d.path",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading the manifests' changes",
        )
    }

    /// The changed inputs of output folder `out_dir`.
    pub fn manifest_dirty_inputs(&self, out_dir: i64) -> Result<Vec<i64>, StateError> {
        self.rows(
            "SELECT input FROM manifest_dirty WHERE out_dir = ?1 ORDER BY input",
            [out_dir],
            |r| r.get(0),
            "reading the manifests' changes",
        )
    }

    /// Clears the dirty marks of folder `out_dir` (a folder manifests skip).
    pub fn clear_manifest_dirty(&mut self, out_dir: i64) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM manifest_dirty WHERE out_dir = ?1", [out_dir])
            .map_err(self.err("clearing the manifests' changes"))?;
        Ok(())
    }

    /// The parts holding `inputs` in folder `out_dir`: input → part.
    pub fn manifest_members(
        &self,
        out_dir: i64,
        inputs: &[i64],
    ) -> Result<HashMap<i64, i64>, StateError> {
        let mut out = HashMap::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT part FROM manifest_members WHERE out_dir = ?1 AND input = ?2")
            .map_err(self.err("reading manifest parts"))?;
        for &i in inputs {
            let part: Option<i64> = stmt
                .query_row(params![out_dir, i], |r| r.get(0))
                .optional()
                .map_err(self.err("reading manifest parts"))?;
            if let Some(p) = part {
                out.insert(i, p);
            }
        }
        Ok(out)
    }

    /// The inputs whose rows part `part` holds.
    pub fn manifest_part_inputs(&self, part: i64) -> Result<Vec<i64>, StateError> {
        self.rows(
            "SELECT input FROM manifest_members WHERE part = ?1 ORDER BY input",
            [part],
            |r| r.get(0),
            "reading manifest parts",
        )
    }

    /// How many files `input` has recorded in folder `out_dir`.
    pub fn files_in_dir_of(&self, out_dir: i64, input: i64) -> Result<u64, StateError> {
        self.conn
            .prepare_cached(
                "SELECT (SELECT count(*) FROM outputs WHERE input = ?1 AND out_dir = ?2)
                      + (SELECT coalesce(sum(outputs), 0) FROM units WHERE input = ?1 AND out_dir = ?2)",
            )
            .and_then(|mut s| s.query_row(params![input, out_dir], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(self.err("counting outputs"))
    }

    /// The newest part of folder `out_dir` and its rows, where new inputs go.
    pub fn newest_manifest_part(&self, out_dir: i64) -> Result<Option<(i64, u64)>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT id, rows FROM manifest_parts WHERE out_dir = ?1 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([out_dir], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                    .optional()
            })
            .map_err(self.err("reading manifest parts"))
    }

    /// An id no part has had (parts are numbered across folders).
    pub fn next_manifest_part_id(&self) -> Result<i64, StateError> {
        self.conn
            .query_row(
                "SELECT coalesce(max(id), 0) + 1 FROM manifest_parts",
                [],
                |r| r.get(0),
            )
            .map_err(self.err("reading manifest parts"))
    }

    /// Every recorded part (of folders `dirs`, or all when `None`), by folder.
    pub fn manifest_parts(&self, dirs: Option<&[i64]>) -> Result<Vec<ManifestPart>, StateError> {
        let all = self.rows(
            "SELECT p.id, p.out_dir, d.path, p.rows, p.csv_hash, p.csv_bytes, p.csv_mtime_ns,
                    p.parquet_hash, p.parquet_bytes, p.parquet_mtime_ns
               FROM manifest_parts p JOIN out_dirs d ON d.id = p.out_dir ORDER BY d.path, p.id",
            [],
            |r| {
                Ok(ManifestPart {
                    id: r.get(0)?,
                    out_dir: r.get(1)?,
                    dir: r.get(2)?,
                    rows: r.get::<_, i64>(3)? as u64,
                    csv: PartFile {
                        blake3: blob_hex(&r.get::<_, Vec<u8>>(4)?),
                        bytes: r.get::<_, i64>(5)? as u64,
                        mtime_ns: r.get(6)?,
                    },
                    parquet: PartFile {
                        blake3: blob_hex(&r.get::<_, Vec<u8>>(7)?),
                        bytes: r.get::<_, i64>(8)? as u64,
                        mtime_ns: r.get(9)?,
                    },
                })
            },
            "reading manifest parts",
        )?;
        Ok(match dirs {
            Some(d) => all.into_iter().filter(|p| d.contains(&p.out_dir)).collect(),
            None => all,
        })
    }

    /// Applies one folder's manifest update in one transaction.
    pub fn commit_manifests(&mut self, u: &ManifestUpdate) -> Result<(), StateError> {
        self.transaction("recording the manifests", |tx| {
            let mut put_part = tx.prepare_cached(
                "INSERT OR REPLACE INTO manifest_parts (id, out_dir, rows, csv_hash, csv_bytes,
                    csv_mtime_ns, parquet_hash, parquet_bytes, parquet_mtime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut del_part = tx.prepare_cached("DELETE FROM manifest_parts WHERE id = ?1")?;
            for (id, p) in &u.parts {
                match p {
                    Some((rows, csv, pq)) => put_part.execute(params![
                        id,
                        u.out_dir,
                        *rows as i64,
                        hex_blob(&csv.blake3),
                        csv.bytes as i64,
                        csv.mtime_ns,
                        hex_blob(&pq.blake3),
                        pq.bytes as i64,
                        pq.mtime_ns
                    ])?,
                    None => del_part.execute([id])?,
                };
            }
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO manifest_members (out_dir, input, part) VALUES (?1, ?2, ?3)",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM manifest_members WHERE out_dir = ?1 AND input = ?2")?;
            for (input, part) in &u.members {
                match part {
                    Some(p) => put.execute(params![u.out_dir, input, p])?,
                    None => del.execute(params![u.out_dir, input])?,
                };
            }
            let mut clear =
                tx.prepare_cached("DELETE FROM manifest_dirty WHERE out_dir = ?1 AND input = ?2")?;
            for input in &u.cleared {
                clear.execute(params![u.out_dir, input])?;
            }
            Ok(())
        })
    }
}
