//! The stat index and the inputs of collections: what planning reads for
//! every source folder it walks, and the rows it adds for files it hashed.
//!
//! Source files are recorded per source root *name* and folder (`src_dirs`),
//! then file name (`files`), so that a walk reads the records of one folder
//! at a time and a path is stored once however deep it is.

use rusqlite::{params, OptionalExtension};

use super::records::{FileStat, RecordedFile, RecordedInput, UNKNOWN_CTIME};
use super::state::{blob_hex, hex_blob, State, StateError};

impl State {
    /// The id of source folder `path` (relative to root `root`, `""` for the
    /// root itself), created if new.
    pub fn src_dir_id(&mut self, root: &str, path: &str) -> Result<i64, StateError> {
        let k = (root.to_string(), path.to_string());
        if let Some(&id) = self.interned.src_dirs.get(&k) {
            return Ok(id);
        }
        let id = self.upsert_id(
            "SELECT id FROM src_dirs WHERE root = ?1 AND path = ?2",
            "INSERT INTO src_dirs (root, path) VALUES (?1, ?2)",
            &[&root, &path],
            "recording a source folder",
        )?;
        self.interned.src_dirs.insert(k, id);
        Ok(id)
    }

    /// The id of source folder `path` of `root` if it was ever recorded.
    pub fn find_src_dir(&self, root: &str, path: &str) -> Result<Option<i64>, StateError> {
        if let Some(&id) = self
            .interned
            .src_dirs
            .get(&(root.to_string(), path.to_string()))
        {
            return Ok(Some(id));
        }
        self.conn
            .prepare_cached("SELECT id FROM src_dirs WHERE root = ?1 AND path = ?2")
            .and_then(|mut s| s.query_row(params![root, path], |r| r.get(0)).optional())
            .map_err(self.err("reading source folders"))
    }

    /// Every recorded folder of source root `root`: (id, path).
    pub fn src_dirs_of_root(&self, root: &str) -> Result<Vec<(i64, String)>, StateError> {
        self.rows(
            "SELECT id, path FROM src_dirs WHERE root = ?1 ORDER BY path",
            params![root],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading source folders",
        )
    }

    /// The recorded files of one source folder, each with `collection`'s
    /// input for it when there is one, sorted by name.
    pub fn files_in(&self, src_dir: i64, collection: i64) -> Result<Vec<RecordedFile>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT f.name, f.id, f.dev, f.ino, f.size, f.mtime_ns, f.hash, i.id, i.fp, i.outputs,
                        f.ctime_ns
                   FROM files f LEFT JOIN inputs i ON i.file = f.id AND i.collection = ?2
                  WHERE f.src_dir = ?1 ORDER BY f.name",
            )
            .map_err(self.err("reading the stat index"))?;
        let rows = stmt
            .query_map(params![src_dir, collection], |r| {
                let input_id: Option<i64> = r.get(7)?;
                Ok(RecordedFile {
                    name: r.get(0)?,
                    id: r.get(1)?,
                    stat: FileStat {
                        dev: r.get::<_, i64>(2)? as u64,
                        ino: r.get::<_, i64>(3)? as u64,
                        size: r.get::<_, i64>(4)? as u64,
                        mtime_ns: r.get(5)?,
                        ctime_ns: r.get::<_, Option<i64>>(10)?.unwrap_or(UNKNOWN_CTIME),
                    },
                    hash: blob_hex(&r.get::<_, Vec<u8>>(6)?),
                    input: match input_id {
                        Some(id) => Some(RecordedInput {
                            id,
                            fp: r.get(8)?,
                            outputs: r.get::<_, i64>(9)? as u64,
                        }),
                        None => None,
                    },
                })
            })
            .map_err(self.err("reading the stat index"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.err("reading the stat index"))
    }

    /// Records files just hashed (new or changed) and makes each an input of
    /// `collection`; a file whose bytes changed makes every input of it
    /// incomplete. A stat whose ctime is [`UNKNOWN_CTIME`] is stored as NULL
    /// (the next walk hashes the file again). Returns (file id, input id)
    /// per entry, in order.
    pub fn record_files(
        &mut self,
        collection: i64,
        entries: &[(i64, &str, FileStat, &str)],
    ) -> Result<Vec<(i64, i64)>, StateError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.transaction("updating the stat index", |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO files (src_dir, name, id, dev, ino, size, mtime_ns, hash, ctime_ns)
                 VALUES (?1, ?2, (SELECT coalesce(max(id), 0) + 1 FROM files), ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (src_dir, name) DO UPDATE SET
                   dev = excluded.dev, ino = excluded.ino, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, hash = excluded.hash, ctime_ns = excluded.ctime_ns",
            )?;
            let mut file_id =
                tx.prepare_cached("SELECT id FROM files WHERE src_dir = ?1 AND name = ?2")?;
            let mut old_hash =
                tx.prepare_cached("SELECT hash FROM files WHERE src_dir = ?1 AND name = ?2")?;
            let mut incomplete =
                tx.prepare_cached("UPDATE inputs SET fp = NULL WHERE file = ?1")?;
            let mut input = tx.prepare_cached(
                "INSERT INTO inputs (collection, file) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            let mut input_id =
                tx.prepare_cached("SELECT id FROM inputs WHERE collection = ?1 AND file = ?2")?;
            let mut ids = Vec::with_capacity(entries.len());
            for (dir, name, s, hash) in entries {
                let blob = hex_blob(hash);
                let old: Option<Vec<u8>> = old_hash
                    .query_row(params![dir, name], |r| r.get(0))
                    .optional()?;
                upsert.execute(params![
                    dir,
                    name,
                    s.dev as i64,
                    s.ino as i64,
                    s.size as i64,
                    s.mtime_ns,
                    blob,
                    (s.ctime_ns != UNKNOWN_CTIME).then_some(s.ctime_ns)
                ])?;
                let f: i64 = file_id.query_row(params![dir, name], |r| r.get(0))?;
                if old.is_some_and(|o| o != blob) {
                    // Other bytes: every input of the file has work to do.
                    incomplete.execute([f])?;
                }
                input.execute(params![collection, f])?;
                let i: i64 = input_id.query_row(params![collection, f], |r| r.get(0))?;
                ids.push((f, i));
            }
            Ok(ids)
        })
    }

    /// Makes recorded, unchanged files inputs of `collection` (a second
    /// recipe on a root another recipe already hashed). Returns input ids.
    pub fn add_inputs(&mut self, collection: i64, files: &[i64]) -> Result<Vec<i64>, StateError> {
        self.transaction("recording inputs", |tx| {
            let mut input = tx.prepare_cached(
                "INSERT INTO inputs (collection, file) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            let mut input_id =
                tx.prepare_cached("SELECT id FROM inputs WHERE collection = ?1 AND file = ?2")?;
            files
                .iter()
                .map(|f| {
                    input.execute(params![collection, f])?;
                    input_id.query_row(params![collection, f], |r| r.get(0))
                })
                .collect()
        })
    }

    /// After removals: forgets stat-index rows of files that are no input
    /// of any collection any more, source folders without files, and cached
    /// metadata of slides that no recorded file has.
    pub fn prune_unused(&mut self) -> Result<(), StateError> {
        self.transaction("pruning the state", |tx| {
            tx.execute(
                "DELETE FROM files WHERE NOT EXISTS (SELECT 1 FROM inputs WHERE file = files.id)",
                [],
            )?;
            tx.execute(
                "DELETE FROM src_dirs WHERE NOT EXISTS (SELECT 1 FROM files WHERE src_dir = src_dirs.id)",
                [],
            )?;
            tx.execute(
                "DELETE FROM slides WHERE hash NOT IN (SELECT hash FROM files)",
                [],
            )?;
            Ok(())
        })?;
        self.interned.src_dirs.clear();
        Ok(())
    }

    /// The recorded state of a source folder of a collection, when all of its
    /// inputs were complete: (digest of its files' names and stats, plan
    /// fingerprint id, inputs, outputs).
    pub fn folder(
        &self,
        collection: i64,
        src_dir: i64,
    ) -> Result<Option<(String, i64, u64, u64)>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT digest, fp, inputs, outputs FROM folders WHERE collection = ?1 AND src_dir = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![collection, src_dir], |r| {
                    Ok((
                        blob_hex(&r.get::<_, Vec<u8>>(0)?),
                        r.get(1)?,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ))
                })
                .optional()
            })
            .map_err(self.err("reading source folders"))
    }

    /// The source folder of each of `inputs` (for damage found in outputs).
    pub fn src_dirs_of(&self, inputs: &[i64]) -> Result<Vec<(i64, i64)>, StateError> {
        let mut out = Vec::new();
        for &i in inputs {
            out.extend(self.rows(
                "SELECT i.collection, f.src_dir FROM inputs i JOIN files f ON f.id = i.file WHERE i.id = ?1",
                params![i],
                |r| Ok((r.get(0)?, r.get(1)?)),
                "reading inputs",
            )?);
        }
        Ok(out)
    }

    /// The inputs of `collection`: (input id, source root, path in the root).
    pub fn inputs_of(&self, collection: i64) -> Result<Vec<(i64, String, String)>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT i.id, d.root, CASE d.path WHEN '' THEN f.name ELSE d.path || '/' || f.name END
                   FROM inputs i JOIN files f ON f.id = i.file JOIN src_dirs d ON d.id = f.src_dir
                  WHERE i.collection = ?1 ORDER BY 3",
            )
            .map_err(self.err("reading inputs"))?;
        let rows = stmt
            .query_map([collection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err("reading inputs"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.err("reading inputs"))
    }

    /// Sum of the recorded output counts of `collection`'s inputs, plus the
    /// outputs of inputs that are not complete (counted from their rows).
    pub fn recorded_outputs(&self, collection: i64) -> Result<u64, StateError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(CASE WHEN i.fp IS NOT NULL THEN i.outputs ELSE
                    (SELECT count(*) FROM outputs o WHERE o.input = i.id) +
                    (SELECT coalesce(sum(u.outputs), 0) FROM units u WHERE u.input = i.id) END), 0)
                   FROM inputs i WHERE i.collection = ?1",
            )
            .and_then(|mut s| s.query_row([collection], |r| r.get(0)))
            .map_err(self.err("counting outputs"))?;
        Ok(n as u64)
    }
}
