//! The SQLite state database (`cache/state.sqlite`).
//!
//! Why SQLite: transactions make every batch of records all-or-nothing, so a
//! SIGKILL mid-build leaves the last committed state intact; WAL mode lets
//! readers (`cpia plan` in another terminal) run during a build; and it is one
//! file with no server. For Slurm job arrays on a shared filesystem, workers
//! must not all write this one file (SQLite locking over NFS is unreliable):
//! each worker appends its records to a journal of its own and the
//! coordinator merges the journals here with [`State::record`], which is the
//! single entry point for results whichever executor produced them.
//!
//! Schema (version [`SCHEMA_VERSION`], in `PRAGMA user_version`):
//! - `sources(path, size, mtime_ns, inode, hash)`: the stat index.
//! - `outputs(path, collection, key, content_hash, …)`: one row per file written.
//! - `pipelines(hash, description)`: the step chains outputs were built with,
//!   shared by all outputs of a recipe version, for `plan --explain` diffs.
//! - `failures(collection, source_root, source_rel, …)`: inputs whose last build failed.
//! - `units(collection, source_rel, unit, sink, key, outputs, kept, mpp, …)`: WSI
//!   units of work (grid cell × writing step) and what they produced.
//! - `slides(hash, meta)`: slide metadata by content hash, so an unchanged
//!   slide is never opened to be planned.
//! - `builds(id, started, finished, …)`: one row per build, for the log.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::records::{FailureRecord, OutputRecord, SourceStat, UnitRecord};

/// Bump when the schema changes; an older database is then rebuilt from empty
/// (every output is rebuilt once, nothing is silently misread).
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    path TEXT PRIMARY KEY, collection TEXT NOT NULL, key TEXT NOT NULL,
    content_hash TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    source_root TEXT NOT NULL, source_rel TEXT NOT NULL, source_hash TEXT NOT NULL,
    pipeline_hash TEXT NOT NULL, recipe_hash TEXT NOT NULL, tool_version TEXT NOT NULL,
    sub_dataset TEXT NOT NULL, scale TEXT NOT NULL, class TEXT, built_at INTEGER NOT NULL,
    unit TEXT NOT NULL, sink TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    collection TEXT NOT NULL, source_root TEXT NOT NULL, source_rel TEXT NOT NULL,
    source_hash TEXT NOT NULL, unit TEXT NOT NULL, sink TEXT NOT NULL, key TEXT NOT NULL,
    pipeline_hash TEXT NOT NULL, outputs INTEGER NOT NULL, kept INTEGER, mpp REAL NOT NULL,
    mpp_origin TEXT NOT NULL, reader TEXT NOT NULL, recipe_hash TEXT NOT NULL,
    tool_version TEXT NOT NULL, built_at INTEGER NOT NULL,
    PRIMARY KEY (collection, source_rel, unit, sink)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slides (hash TEXT PRIMARY KEY, meta TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outputs_by_collection ON outputs(collection);
CREATE INDEX IF NOT EXISTS outputs_by_source ON outputs(source_root, source_rel);
CREATE TABLE IF NOT EXISTS pipelines (hash TEXT PRIMARY KEY, description TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    collection TEXT NOT NULL, source_root TEXT NOT NULL, source_rel TEXT NOT NULL,
    source_hash TEXT, error TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (collection, source_rel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY, started INTEGER NOT NULL, finished INTEGER,
    built INTEGER, up_to_date INTEGER, removed INTEGER, failed INTEGER,
    tool_version TEXT NOT NULL, command TEXT NOT NULL
);
";

/// A failure of the state database, with the operation that failed.
#[derive(Debug)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "build state: {}", self.0)
    }
}
impl std::error::Error for StateError {}

trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, StateError>;
}
impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, what: &str) -> Result<T, StateError> {
        self.map_err(|e| StateError(format!("{what}: {e}")))
    }
}

/// Unit records keyed by (collection, source path, unit, sink).
pub type UnitMap = HashMap<(String, String, String, String), UnitRecord>;

/// One change to record; a batch of them is applied in one transaction.
#[derive(Clone, Debug)]
pub enum Event {
    /// A file was written and renamed into place.
    Built(Box<OutputRecord>),
    /// A file was deleted (or found already gone).
    Removed(String),
    /// An input failed; its previous failure (if any) is replaced.
    Failed(FailureRecord),
    /// An input succeeded: forget its previous failure.
    Succeeded {
        collection: String,
        source_rel: String,
    },
    /// A WSI unit was built.
    Unit(Box<UnitRecord>),
    /// A WSI unit is no longer planned (its outputs are removed separately).
    UnitRemoved {
        collection: String,
        source_rel: String,
        unit: String,
        sink: String,
    },
}

/// An open state database.
pub struct State {
    conn: Connection,
}

impl State {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<State, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StateError(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).ctx(&format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .ctx("setting busy timeout")?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .ctx("enabling WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .ctx("setting synchronous")?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("reading schema version")?;
        if version != SCHEMA_VERSION {
            if version != 0 {
                eprintln!(
                    "note: build state schema {version} is not {SCHEMA_VERSION}: starting a fresh state (everything is rebuilt once)"
                );
                conn.execute_batch(
                    "DROP TABLE IF EXISTS sources; DROP TABLE IF EXISTS outputs;
                     DROP TABLE IF EXISTS pipelines; DROP TABLE IF EXISTS failures;
                     DROP TABLE IF EXISTS builds; DROP TABLE IF EXISTS units;
                     DROP TABLE IF EXISTS slides;",
                )
                .ctx("dropping old schema")?;
            }
            conn.execute_batch(SCHEMA).ctx("creating schema")?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .ctx("setting schema version")?;
        }
        Ok(State { conn })
    }

    /// The whole stat index, keyed by absolute source path.
    pub fn source_index(&self) -> Result<HashMap<String, SourceStat>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, size, mtime_ns, inode, hash FROM sources")
            .ctx("reading stat index")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    SourceStat {
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                        inode: r.get::<_, i64>(3)? as u64,
                        hash: r.get(4)?,
                    },
                ))
            })
            .ctx("reading stat index")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading stat index")
    }

    /// Upserts changed stat-index entries in one transaction.
    pub fn update_source_index(
        &mut self,
        entries: &[(String, SourceStat)],
    ) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().ctx("updating stat index")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO sources (path, size, mtime_ns, inode, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .ctx("updating stat index")?;
            for (path, s) in entries {
                stmt.execute(params![
                    path,
                    s.size as i64,
                    s.mtime_ns,
                    s.inode as i64,
                    s.hash
                ])
                .ctx("updating stat index")?;
            }
        }
        tx.commit().ctx("updating stat index")
    }

    /// Drops stat-index entries for files that no longer exist.
    pub fn forget_sources(&mut self, paths: &[String]) -> Result<(), StateError> {
        if paths.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().ctx("pruning stat index")?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM sources WHERE path = ?1")
                .ctx("pruning stat index")?;
            for p in paths {
                stmt.execute([p]).ctx("pruning stat index")?;
            }
        }
        tx.commit().ctx("pruning stat index")
    }

    /// Every output record, keyed by output path.
    pub fn outputs(&self) -> Result<HashMap<String, OutputRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, collection, key, content_hash, size, mtime_ns, source_root, source_rel,
                        source_hash, pipeline_hash, recipe_hash, tool_version, sub_dataset, scale,
                        class, built_at, unit, sink FROM outputs",
            )
            .ctx("reading outputs")?;
        let rows = stmt
            .query_map([], |r| {
                let rec = OutputRecord {
                    path: r.get(0)?,
                    collection: r.get(1)?,
                    key: r.get(2)?,
                    content_hash: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    mtime_ns: r.get(5)?,
                    source_root: r.get(6)?,
                    source_rel: r.get(7)?,
                    source_hash: r.get(8)?,
                    pipeline_hash: r.get(9)?,
                    recipe_hash: r.get(10)?,
                    tool_version: r.get(11)?,
                    sub_dataset: r.get(12)?,
                    scale: r.get(13)?,
                    class: r.get(14)?,
                    built_at: r.get(15)?,
                    unit: r.get(16)?,
                    sink: r.get(17)?,
                };
                Ok((rec.path.clone(), rec))
            })
            .ctx("reading outputs")?;
        rows.collect::<rusqlite::Result<_>>().ctx("reading outputs")
    }

    /// Every recorded failure, keyed by (collection, source path).
    pub fn failures(&self) -> Result<HashMap<(String, String), FailureRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT collection, source_root, source_rel, source_hash, error, at FROM failures",
            )
            .ctx("reading failures")?;
        let rows = stmt
            .query_map([], |r| {
                let f = FailureRecord {
                    collection: r.get(0)?,
                    source_root: r.get(1)?,
                    source_rel: r.get(2)?,
                    source_hash: r.get(3)?,
                    error: r.get(4)?,
                    at: r.get(5)?,
                };
                Ok(((f.collection.clone(), f.source_rel.clone()), f))
            })
            .ctx("reading failures")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading failures")
    }

    /// Every WSI unit record, keyed by (collection, source path, unit, sink).
    pub fn units(&self) -> Result<UnitMap, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT collection, source_root, source_rel, source_hash, unit, sink, key, pipeline_hash,
                        outputs, kept, mpp, mpp_origin, reader, recipe_hash, tool_version, built_at FROM units",
            )
            .ctx("reading units")?;
        let rows = stmt
            .query_map([], |r| {
                let u = UnitRecord {
                    collection: r.get(0)?,
                    source_root: r.get(1)?,
                    source_rel: r.get(2)?,
                    source_hash: r.get(3)?,
                    unit: r.get(4)?,
                    sink: r.get(5)?,
                    key: r.get(6)?,
                    pipeline_hash: r.get(7)?,
                    outputs: r.get::<_, i64>(8)? as u64,
                    kept: r.get(9)?,
                    mpp: r.get(10)?,
                    mpp_origin: r.get(11)?,
                    reader: r.get(12)?,
                    recipe_hash: r.get(13)?,
                    tool_version: r.get(14)?,
                    built_at: r.get(15)?,
                };
                Ok((
                    (
                        u.collection.clone(),
                        u.source_rel.clone(),
                        u.unit.clone(),
                        u.sink.clone(),
                    ),
                    u,
                ))
            })
            .ctx("reading units")?;
        rows.collect::<rusqlite::Result<_>>().ctx("reading units")
    }

    /// The cached metadata of the slide whose content hash is `hash`.
    pub fn slide_meta(&self, hash: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT meta FROM slides WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()
            .ctx("reading slide metadata")
    }

    /// Caches slide metadata by content hash.
    pub fn put_slide_meta(&mut self, hash: &str, meta: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO slides (hash, meta) VALUES (?1, ?2)",
                params![hash, meta],
            )
            .ctx("caching slide metadata")?;
        Ok(())
    }

    /// Stores a pipeline description under its hash (idempotent).
    pub fn put_pipeline(&mut self, hash: &str, description: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO pipelines (hash, description) VALUES (?1, ?2)",
                params![hash, description],
            )
            .ctx("storing pipeline")?;
        Ok(())
    }

    /// The pipeline description stored under `hash`, if any.
    pub fn pipeline(&self, hash: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row(
                "SELECT description FROM pipelines WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading pipeline")
    }

    /// Applies a batch of events in one transaction: all or nothing.
    pub fn record(&mut self, events: &[Event]) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().ctx("recording results")?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO outputs (path, collection, key, content_hash, size, mtime_ns,
                        source_root, source_rel, source_hash, pipeline_hash, recipe_hash, tool_version,
                        sub_dataset, scale, class, built_at, unit, sink)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )
                .ctx("recording results")?;
            let mut del = tx
                .prepare_cached("DELETE FROM outputs WHERE path = ?1")
                .ctx("recording results")?;
            let mut fail = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO failures (collection, source_root, source_rel, source_hash, error, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .ctx("recording results")?;
            let mut ok = tx
                .prepare_cached("DELETE FROM failures WHERE collection = ?1 AND source_rel = ?2")
                .ctx("recording results")?;
            let mut unit = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO units (collection, source_root, source_rel, source_hash, unit,
                        sink, key, pipeline_hash, outputs, kept, mpp, mpp_origin, reader, recipe_hash,
                        tool_version, built_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .ctx("recording results")?;
            let mut unit_gone = tx
                .prepare_cached(
                    "DELETE FROM units WHERE collection = ?1 AND source_rel = ?2 AND unit = ?3 AND sink = ?4",
                )
                .ctx("recording results")?;
            for ev in events {
                match ev {
                    Event::Built(o) => put.execute(params![
                        o.path,
                        o.collection,
                        o.key,
                        o.content_hash,
                        o.size as i64,
                        o.mtime_ns,
                        o.source_root,
                        o.source_rel,
                        o.source_hash,
                        o.pipeline_hash,
                        o.recipe_hash,
                        o.tool_version,
                        o.sub_dataset,
                        o.scale,
                        o.class,
                        o.built_at,
                        o.unit,
                        o.sink
                    ]),
                    Event::Removed(path) => del.execute([path]),
                    Event::Failed(f) => fail.execute(params![
                        f.collection,
                        f.source_root,
                        f.source_rel,
                        f.source_hash,
                        f.error,
                        f.at
                    ]),
                    Event::Succeeded {
                        collection,
                        source_rel,
                    } => ok.execute([collection, source_rel]),
                    Event::Unit(u) => unit.execute(params![
                        u.collection,
                        u.source_root,
                        u.source_rel,
                        u.source_hash,
                        u.unit,
                        u.sink,
                        u.key,
                        u.pipeline_hash,
                        u.outputs as i64,
                        u.kept,
                        u.mpp,
                        u.mpp_origin,
                        u.reader,
                        u.recipe_hash,
                        u.tool_version,
                        u.built_at
                    ]),
                    Event::UnitRemoved {
                        collection,
                        source_rel,
                        unit,
                        sink,
                    } => unit_gone.execute([collection, source_rel, unit, sink]),
                }
                .ctx("recording results")?;
            }
        }
        tx.commit().ctx("recording results")
    }

    /// Opens a row in `builds`; returns its id.
    pub fn begin_build(&mut self, command: &str, tool_version: &str) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO builds (started, tool_version, command) VALUES (?1, ?2, ?3)",
                params![now(), tool_version, command],
            )
            .ctx("starting build record")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes the row opened by [`State::begin_build`] with the summary counts.
    pub fn finish_build(&mut self, id: i64, counts: [u64; 4]) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE builds SET finished = ?1, built = ?2, up_to_date = ?3, removed = ?4, failed = ?5 WHERE id = ?6",
                params![now(), counts[0] as i64, counts[1] as i64, counts[2] as i64, counts[3] as i64, id],
            )
            .ctx("finishing build record")?;
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str) -> OutputRecord {
        OutputRecord {
            path: path.into(),
            collection: "C".into(),
            key: "k".into(),
            content_hash: "h".into(),
            size: 3,
            mtime_ns: 5,
            source_root: "R".into(),
            source_rel: "a.png".into(),
            source_hash: "s".into(),
            pipeline_hash: "p".into(),
            recipe_hash: "r".into(),
            tool_version: "t".into(),
            sub_dataset: "C".into(),
            scale: "M".into(),
            class: None,
            built_at: 1,
            unit: String::new(),
            sink: String::new(),
        }
    }

    #[test]
    fn record_round_trip_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut st = State::open(&path).unwrap();
        st.record(&[
            Event::Built(Box::new(rec("M/C/a.jpg"))),
            Event::Built(Box::new(rec("M/C/b.jpg"))),
        ])
        .unwrap();
        st.record(&[Event::Removed("M/C/a.jpg".into())]).unwrap();
        drop(st);
        let st = State::open(&path).unwrap();
        let outs = st.outputs().unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs["M/C/b.jpg"], rec("M/C/b.jpg"));
    }

    #[test]
    fn failures_are_replaced_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.sqlite")).unwrap();
        let f = FailureRecord {
            collection: "C".into(),
            source_root: "R".into(),
            source_rel: "x.png".into(),
            source_hash: None,
            error: "bad".into(),
            at: 1,
        };
        st.record(&[Event::Failed(f.clone()), Event::Failed(f)])
            .unwrap();
        assert_eq!(st.failures().unwrap().len(), 1);
        st.record(&[Event::Succeeded {
            collection: "C".into(),
            source_rel: "x.png".into(),
        }])
        .unwrap();
        assert!(st.failures().unwrap().is_empty());
    }

    #[test]
    fn stat_index_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.sqlite")).unwrap();
        let s = SourceStat {
            size: 10,
            mtime_ns: 1_700_000_000_123_456_789,
            inode: 42,
            hash: "abc".into(),
        };
        st.update_source_index(&[("/a".into(), s.clone())]).unwrap();
        assert_eq!(st.source_index().unwrap()["/a"], s);
        st.forget_sources(&["/a".into()]).unwrap();
        assert!(st.source_index().unwrap().is_empty());
    }
}
