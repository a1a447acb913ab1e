//! The exports' bookkeeping (`export/` above): which samples each export
//! holds and in which shard, the files it wrote, the shards whose samples
//! changed and are not rewritten yet, and the (folder, input) pairs whose
//! records changed since the export last looked — marked by triggers
//! (`schema::EXPORT_SCHEMA`) in the transaction of the change itself, so a
//! crash can never lose a change an export has not seen.
//!
//! A sample is located by its output folder, input and *item*: a named
//! output's row id (positive), or a tile as `-(unit << 32 | x << 16 | y)`
//! ([`Item`]). Its key, record and bytes are read back from the output
//! records when its shard is written; only the shard and a 16-byte digest
//! are stored per sample.

use rusqlite::{params, OptionalExtension};

use crate::store::state::{blob_hex, hex_blob, now, State, StateError};

/// Where a sample's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// A named output (ROI output or QC picture) by row id.
    Output(i64),
    /// A WSI tile: its unit and position.
    Tile { unit: i64, x: u32, y: u32 },
}

impl Item {
    /// The stored integer.
    pub fn encode(self) -> i64 {
        match self {
            Item::Output(id) => id,
            Item::Tile { unit, x, y } => {
                -((unit << 32) | (i64::from(x & 0xffff) << 16) | i64::from(y & 0xffff))
            }
        }
    }

    /// The item a stored integer names.
    pub fn decode(v: i64) -> Item {
        if v > 0 {
            Item::Output(v)
        } else {
            let v = -v;
            Item::Tile {
                unit: v >> 32,
                x: ((v >> 16) & 0xffff) as u32,
                y: (v & 0xffff) as u32,
            }
        }
    }

    /// Whether a tile's position fits the encoding (positions below 65536).
    pub fn representable(unit: i64, x: u32, y: u32) -> bool {
        (0..1 << 31).contains(&unit) && x < 1 << 16 && y < 1 << 16
    }
}

/// One export as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    pub id: i64,
    pub name: String,
    pub format: String,
    /// From `cpia.toml` (true) or made by `cpia export --format` (false).
    pub declared: bool,
    /// The definition, canonical JSON.
    pub definition: String,
    /// Hex digest of what every sample's record depends on besides its output.
    pub digest: String,
    pub shards: u64,
    pub samples: u64,
    pub bytes: u64,
    pub updated_at: i64,
}

/// A sample as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRow {
    pub out_dir: i64,
    pub input: i64,
    pub item: Item,
    pub shard: u64,
    /// 16 bytes: blake3 of the sample's key, bytes' hash and record.
    pub digest: [u8; 16],
    /// An ImageFolder sample's file, relative to the output folder.
    pub path: Option<String>,
}

/// A file an export wrote, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFile {
    /// Relative to the output folder.
    pub path: String,
    /// The shard it holds (`None`: the index or the metadata).
    pub shard: Option<u64>,
    pub samples: u64,
    /// Hex digest of its samples (a shard) or of its text.
    pub digest: String,
    /// blake3 of its bytes.
    pub blake3: String,
    /// SHA-256 of its bytes (what Croissant readers check).
    pub sha256: String,
    pub bytes: u64,
    pub mtime_ns: i64,
}

/// The samples of one (folder, input) pair after a re-evaluation.
#[derive(Clone, Debug, Default)]
pub struct PairUpdate {
    pub out_dir: i64,
    pub input: i64,
    pub samples: Vec<SampleRow>,
}

fn digest16(b: &[u8]) -> [u8; 16] {
    let mut d = [0u8; 16];
    let n = b.len().min(16);
    d[..n].copy_from_slice(&b[..n]);
    d
}

fn sample_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SampleRow> {
    Ok(SampleRow {
        out_dir: r.get(0)?,
        input: r.get(1)?,
        item: Item::decode(r.get(2)?),
        shard: r.get::<_, i64>(3)? as u64,
        digest: digest16(&r.get::<_, Vec<u8>>(4)?),
        path: r.get(5)?,
    })
}

const EXPORT_COLUMNS: &str =
    "id, name, format, declared, definition, digest, shards, samples, bytes, updated_at";

fn export_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExportRow> {
    Ok(ExportRow {
        id: r.get(0)?,
        name: r.get(1)?,
        format: r.get(2)?,
        declared: r.get::<_, i64>(3)? != 0,
        definition: r.get(4)?,
        digest: blob_hex(&r.get::<_, Vec<u8>>(5)?),
        shards: r.get::<_, i64>(6)? as u64,
        samples: r.get::<_, i64>(7)? as u64,
        bytes: r.get::<_, i64>(8)? as u64,
        updated_at: r.get(9)?,
    })
}

impl State {
    /// Every recorded export, by name.
    pub fn exports(&self) -> Result<Vec<ExportRow>, StateError> {
        self.rows(
            &format!("SELECT {EXPORT_COLUMNS} FROM exports ORDER BY name"),
            [],
            export_row,
            "reading exports",
        )
    }

    /// The export called `name`, if recorded.
    pub fn export(&self, name: &str) -> Result<Option<ExportRow>, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE name = ?1"),
                [name],
                export_row,
            )
            .optional()
            .map_err(self.err("reading an export"))
    }

    /// Records a new export (its definition and shard count) and forgets
    /// any pending changes it might have: it is evaluated whole next.
    pub fn create_export(
        &mut self,
        name: &str,
        format: &str,
        declared: bool,
        definition: &str,
        shards: u64,
    ) -> Result<i64, StateError> {
        self.transaction("recording an export", |tx| {
            tx.execute(
                "INSERT INTO exports (name, format, declared, definition, digest, shards, samples,
                    bytes, updated_at) VALUES (?1, ?2, ?3, ?4, x'', ?5, 0, 0, ?6)",
                params![
                    name,
                    format,
                    declared as i64,
                    definition,
                    shards as i64,
                    now()
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Changes an export's definition, shard count or digest (the caller
    /// re-evaluates its samples in the same run).
    pub fn set_export_definition(
        &mut self,
        id: i64,
        declared: bool,
        definition: &str,
        shards: u64,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE exports SET declared = ?2, definition = ?3, shards = ?4 WHERE id = ?1",
                params![id, declared as i64, definition, shards as i64],
            )
            .map_err(self.err("recording an export"))?;
        Ok(())
    }

    /// Records that export `id` is up to date with `digest`: its totals.
    pub fn finish_export(
        &mut self,
        id: i64,
        digest: &str,
        samples: u64,
        bytes: u64,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE exports SET digest = ?2, samples = ?3, bytes = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, hex_blob(digest), samples as i64, bytes as i64, now()],
            )
            .map_err(self.err("recording an export"))?;
        Ok(())
    }

    /// Forgets export `id` and everything recorded about it (its files
    /// must be gone already).
    pub fn delete_export(&mut self, id: i64) -> Result<(), StateError> {
        self.transaction("forgetting an export", |tx| {
            for t in [
                "export_samples",
                "export_files",
                "export_stale",
                "export_dirty",
            ] {
                tx.execute(&format!("DELETE FROM {t} WHERE export = ?1"), [id])?;
            }
            tx.execute("DELETE FROM exports WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Up to `limit` pairs of export `id` whose records changed, after
    /// `after` (keyset paging: pass the last pair returned).
    pub fn export_dirty_pairs(
        &self,
        id: i64,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<(i64, i64)>, StateError> {
        self.rows(
            "SELECT out_dir, input FROM export_dirty WHERE export = ?1 AND (out_dir, input) > (?2, ?3)
              ORDER BY out_dir, input LIMIT ?4",
            params![id, after.0, after.1, limit as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading an export's changes",
        )
    }

    /// How many pairs of export `id` changed since it last looked.
    pub fn export_pending(&self, id: i64) -> Result<u64, StateError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM export_dirty WHERE export = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(self.err("reading an export's changes"))
    }

    /// The inputs that have files in output folder `out_dir`.
    pub fn inputs_in_dir(&self, out_dir: i64) -> Result<Vec<i64>, StateError> {
        self.rows(
            "SELECT input FROM outputs WHERE out_dir = ?1
             UNION SELECT input FROM units WHERE out_dir = ?1 ORDER BY 1",
            [out_dir],
            |r| r.get(0),
            "reading an output folder's inputs",
        )
    }

    /// Every pair export `id` holds samples of.
    pub fn export_pairs(&self, id: i64) -> Result<Vec<(i64, i64)>, StateError> {
        self.rows(
            "SELECT DISTINCT out_dir, input FROM export_samples WHERE export = ?1 ORDER BY 1, 2",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading an export's samples",
        )
    }

    /// Clears every change mark of export `id` (after it looked at everything).
    pub fn clear_export_dirty(&mut self, id: i64) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM export_dirty WHERE export = ?1", [id])
            .map_err(self.err("clearing an export's changes"))?;
        Ok(())
    }

    /// Marks every pair with files in folders `dirs` changed for export `id`
    /// (a sampling category whose size moved).
    pub fn mark_export_dirs(&mut self, id: i64, dirs: &[i64]) -> Result<(), StateError> {
        self.transaction("marking an export's changes", |tx| {
            let mut m = tx.prepare_cached(
                "INSERT OR IGNORE INTO export_dirty (export, out_dir, input)
                 SELECT ?1, ?2, input FROM outputs WHERE out_dir = ?2
                 UNION SELECT ?1, ?2, input FROM units WHERE out_dir = ?2",
            )?;
            for d in dirs {
                m.execute(params![id, d])?;
            }
            Ok(())
        })
    }

    /// The sampling category sizes export `id` last used (JSON).
    pub fn export_sizes(&self, id: i64) -> Result<String, StateError> {
        self.conn
            .query_row("SELECT sizes FROM exports WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(self.err("reading an export"))
    }

    /// Records the sampling category sizes of export `id`.
    pub fn set_export_sizes(&mut self, id: i64, sizes: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE exports SET sizes = ?2 WHERE id = ?1",
                params![id, sizes],
            )
            .map_err(self.err("recording an export"))?;
        Ok(())
    }

    /// Samples per class in output folder `out_dir` (named outputs; tiles
    /// have none: counted under `None`).
    pub fn class_counts(&self, out_dir: i64) -> Result<Vec<(Option<String>, u64)>, StateError> {
        let mut out: Vec<(Option<String>, u64)> = self.rows(
            "SELECT class, count(*) FROM outputs WHERE out_dir = ?1 AND sink <> 'qc' GROUP BY class",
            [out_dir],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            "counting classes",
        )?;
        let tiles: i64 = self
            .conn
            .query_row(
                "SELECT coalesce(sum(outputs), 0) FROM units WHERE out_dir = ?1",
                [out_dir],
                |r| r.get(0),
            )
            .map_err(self.err("counting tiles"))?;
        if tiles > 0 {
            match out.iter_mut().find(|(c, _)| c.is_none()) {
                Some((_, n)) => *n += tiles as u64,
                None => out.push((None, tiles as u64)),
            }
        }
        Ok(out)
    }

    /// The samples export `id` holds of one pair.
    pub fn export_pair_samples(
        &self,
        id: i64,
        out_dir: i64,
        input: i64,
    ) -> Result<Vec<SampleRow>, StateError> {
        self.rows(
            "SELECT out_dir, input, item, shard, digest, path FROM export_samples
              WHERE export = ?1 AND out_dir = ?2 AND input = ?3 ORDER BY item",
            params![id, out_dir, input],
            sample_row,
            "reading an export's samples",
        )
    }

    /// Replaces the samples of each pair of `updates`, marks `stale` shards,
    /// and clears the pairs' change marks: one transaction.
    pub fn apply_export_pairs(
        &mut self,
        id: i64,
        updates: &[PairUpdate],
        stale: &[u64],
    ) -> Result<(), StateError> {
        self.transaction("recording an export's samples", |tx| {
            let mut del = tx.prepare_cached(
                "DELETE FROM export_samples WHERE export = ?1 AND out_dir = ?2 AND input = ?3",
            )?;
            let mut put = tx.prepare_cached(
                "INSERT INTO export_samples (export, out_dir, input, item, shard, digest, path)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut clear = tx.prepare_cached(
                "DELETE FROM export_dirty WHERE export = ?1 AND out_dir = ?2 AND input = ?3",
            )?;
            for u in updates {
                del.execute(params![id, u.out_dir, u.input])?;
                for s in &u.samples {
                    put.execute(params![
                        id,
                        s.out_dir,
                        s.input,
                        s.item.encode(),
                        s.shard as i64,
                        &s.digest[..],
                        s.path
                    ])?;
                }
                clear.execute(params![id, u.out_dir, u.input])?;
            }
            let mut mark = tx.prepare_cached(
                "INSERT OR IGNORE INTO export_stale (export, shard) VALUES (?1, ?2)",
            )?;
            for &s in stale {
                mark.execute(params![id, s as i64])?;
            }
            Ok(())
        })
    }

    /// Marks shards `shards` of export `id` stale (to be checked and, if
    /// their samples changed, rewritten).
    pub fn mark_export_stale(&mut self, id: i64, shards: &[u64]) -> Result<(), StateError> {
        self.apply_export_pairs(id, &[], shards)
    }

    /// The stale shards of export `id`, in order.
    pub fn export_stale(&self, id: i64) -> Result<Vec<u64>, StateError> {
        self.rows(
            "SELECT shard FROM export_stale WHERE export = ?1 ORDER BY shard",
            [id],
            |r| Ok(r.get::<_, i64>(0)? as u64),
            "reading an export's stale shards",
        )
    }

    /// The samples of shard `shard` of export `id`.
    pub fn export_shard_samples(&self, id: i64, shard: u64) -> Result<Vec<SampleRow>, StateError> {
        self.rows(
            "SELECT out_dir, input, item, shard, digest, path FROM export_samples
              WHERE export = ?1 AND shard = ?2",
            params![id, shard as i64],
            sample_row,
            "reading a shard's samples",
        )
    }

    /// Calls `f` with every sample of export `id` (by folder and input), streamed.
    pub fn for_each_export_sample(
        &self,
        id: i64,
        f: &mut dyn FnMut(SampleRow),
    ) -> Result<(), StateError> {
        let what = "reading an export's samples";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT out_dir, input, item, shard, digest, path FROM export_samples
                  WHERE export = ?1 ORDER BY out_dir, input, item",
            )
            .map_err(self.err(what))?;
        let mut rows = stmt.query([id]).map_err(self.err(what))?;
        while let Some(r) = rows.next().map_err(self.err(what))? {
            f(sample_row(r).map_err(self.err(what))?);
        }
        Ok(())
    }

    /// Samples and bytes of the files export `id` recorded.
    pub fn export_totals(&self, id: i64) -> Result<(u64, u64), StateError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(samples), 0), coalesce(sum(bytes), 0) FROM export_files
                  WHERE export = ?1 AND shard IS NOT NULL",
                [id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(self.err("reading an export's files"))
    }

    /// How many samples export `id` holds.
    pub fn export_sample_count(&self, id: i64) -> Result<u64, StateError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM export_samples WHERE export = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(self.err("reading an export's samples"))
    }

    /// The files export `id` recorded, by path.
    pub fn export_files(&self, id: i64) -> Result<Vec<ExportFile>, StateError> {
        self.rows(
            "SELECT path, shard, samples, digest, hash, bytes, mtime_ns, sha256 FROM export_files
              WHERE export = ?1 ORDER BY path",
            [id],
            |r| {
                Ok(ExportFile {
                    path: r.get(0)?,
                    shard: r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
                    samples: r.get::<_, i64>(2)? as u64,
                    digest: blob_hex(&r.get::<_, Vec<u8>>(3)?),
                    blake3: blob_hex(&r.get::<_, Vec<u8>>(4)?),
                    bytes: r.get::<_, i64>(5)? as u64,
                    mtime_ns: r.get(6)?,
                    sha256: blob_hex(&r.get::<_, Vec<u8>>(7)?),
                })
            },
            "reading an export's files",
        )
    }

    /// Records file `f` of export `id` (replacing the record of its path),
    /// and that shard `f.shard` is no longer stale: one transaction.
    pub fn record_export_file(&mut self, id: i64, f: &ExportFile) -> Result<(), StateError> {
        self.transaction("recording an export file", |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO export_files (export, path, shard, samples, digest, hash,
                    bytes, mtime_ns, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    f.path,
                    f.shard.map(|s| s as i64),
                    f.samples as i64,
                    hex_blob(&f.digest),
                    hex_blob(&f.blake3),
                    f.bytes as i64,
                    f.mtime_ns,
                    hex_blob(&f.sha256)
                ],
            )?;
            if let Some(s) = f.shard {
                tx.execute(
                    "DELETE FROM export_stale WHERE export = ?1 AND shard = ?2",
                    params![id, s as i64],
                )?;
            }
            Ok(())
        })
    }

    /// Forgets file `path` of export `id` (removed from disk), and that
    /// shard `shard` is stale.
    pub fn forget_export_file(
        &mut self,
        id: i64,
        path: &str,
        shard: Option<u64>,
    ) -> Result<(), StateError> {
        self.transaction("forgetting an export file", |tx| {
            tx.execute(
                "DELETE FROM export_files WHERE export = ?1 AND path = ?2",
                params![id, path],
            )?;
            if let Some(s) = shard {
                tx.execute(
                    "DELETE FROM export_stale WHERE export = ?1 AND shard = ?2",
                    params![id, s as i64],
                )?;
            }
            Ok(())
        })
    }

    /// Output folders with their collection: (id, path, collection name).
    pub fn out_dirs_with_collection(&self) -> Result<Vec<(i64, String, String)>, StateError> {
        self.rows(
            "SELECT d.id, d.path, c.name FROM collection_dirs cd JOIN out_dirs d ON d.id = cd.out_dir
               JOIN collections c ON c.id = cd.collection ORDER BY d.path, c.name",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            "reading output folders",
        )
    }

    /// Files and bytes recorded in output folder `out_dir` (named outputs
    /// and tiles).
    pub fn dir_totals(&self, out_dir: i64) -> Result<(u64, u64), StateError> {
        let q = |sql: &str| {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_row([out_dir], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                    })
                })
                .map_err(self.err("counting an output folder's files"))
        };
        let (a, b) = q("SELECT count(*), coalesce(sum(size), 0) FROM outputs WHERE out_dir = ?1")?;
        let (c, d) = q("SELECT count(*), coalesce(sum(t.size), 0) FROM units u
                          JOIN tiles t ON t.unit = u.id WHERE u.out_dir = ?1")?;
        Ok((a + c, b + d))
    }
}
