//! The SQLite state database (`cache/state.sqlite`): opening it, its errors,
//! interned values, and the build log. The other files of this module add
//! the queries of one concept each ([`super::scan`], [`super::outputs`],
//! [`super::dirs`]) and the single write path ([`super::events`]).
//!
//! Why SQLite: transactions make every batch of records all-or-nothing, so a
//! SIGKILL mid-build leaves the last committed state intact; WAL mode lets
//! readers (`cpia plan` in another terminal) run during a build; and it is one
//! file with no server. For Slurm job arrays on a shared filesystem, workers
//! must not all write this one file (SQLite locking over NFS is unreliable):
//! each worker appends its records to a journal of its own and the
//! coordinator merges the journals here with [`State::record`], which is the
//! single entry point for results whichever executor produced them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::schema::{EXPORT_SCHEMA, SCHEMA, SCHEMA_VERSION};
use super::version::{compat, steps_from, Compat};

/// A failure of the state database: which file, what was being done, and
/// what SQLite said; its message says what the user can do about it.
#[derive(Debug)]
pub struct StateError {
    pub path: PathBuf,
    pub what: String,
    pub cause: String,
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Corrupt,
    ReadOnly,
    Busy,
    Full,
    /// Written by a newer cpia: never changed.
    Newer,
    /// An older schema that only a writing command migrates.
    Older,
    Other,
}

impl StateError {
    fn new(path: &Path, what: &str, e: &rusqlite::Error) -> StateError {
        use rusqlite::ErrorCode as C;
        let kind = match e.sqlite_error_code() {
            Some(C::NotADatabase) | Some(C::DatabaseCorrupt) => ErrorKind::Corrupt,
            Some(C::ReadOnly) | Some(C::PermissionDenied) | Some(C::CannotOpen) => {
                ErrorKind::ReadOnly
            }
            Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => ErrorKind::Busy,
            Some(C::DiskFull) => ErrorKind::Full,
            // SQLite says "disk I/O error" when a full disk fails a write
            // it did not expect to fail (the WAL index, a journal).
            Some(C::SystemIoFailure) if disk_full(path) => ErrorKind::Full,
            _ => ErrorKind::Other,
        };
        StateError {
            path: path.to_path_buf(),
            what: what.to_string(),
            cause: e.to_string(),
            kind,
        }
    }

    /// An error that is not SQLite's (a folder that cannot be created, a
    /// value that does not decode).
    pub fn other(path: &Path, what: &str, cause: impl std::fmt::Display) -> StateError {
        StateError {
            path: path.to_path_buf(),
            what: what.to_string(),
            cause: cause.to_string(),
            kind: ErrorKind::Other,
        }
    }

    /// A state of schema `found`, newer than this cpia's.
    fn newer(path: &Path, found: i64) -> StateError {
        StateError {
            path: path.to_path_buf(),
            what: "opening".into(),
            cause: format!(
                "it has schema {found}, written by a newer cpia; this cpia ({}) uses schema {SCHEMA_VERSION}",
                env!("CARGO_PKG_VERSION")
            ),
            kind: ErrorKind::Newer,
        }
    }

    /// A state of an older schema, opened by a command that does not write.
    fn older(path: &Path, found: i64) -> StateError {
        StateError {
            path: path.to_path_buf(),
            what: "opening".into(),
            cause: format!(
                "it has schema {found}, written by an older cpia; this cpia ({}) uses schema {SCHEMA_VERSION}",
                env!("CARGO_PKG_VERSION")
            ),
            kind: ErrorKind::Older,
        }
    }

    /// Whether the state was written by a newer cpia (left unchanged).
    pub fn is_newer(&self) -> bool {
        self.kind == ErrorKind::Newer
    }

    /// Whether the database file itself is damaged or not a database.
    pub fn is_corrupt(&self) -> bool {
        self.kind == ErrorKind::Corrupt
    }
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        write!(f, "build state {p}: {} failed: {}", self.what, self.cause)?;
        match self.kind {
            ErrorKind::Corrupt => write!(
                f,
                "\n  the file is damaged or is not a cpia state database; nothing was built or removed.\
                 \n  `cpia verify --state` runs SQLite's integrity check on it. To start over, move it away\
                 \n  (e.g. `mv {p} {p}.broken`): the next build records everything anew and rebuilds every\
                 \n  output once; files of outputs that are no longer produced are then not removed."
            ),
            ErrorKind::ReadOnly => write!(
                f,
                "\n  cpia cannot write it: check the permissions of {p} and of its folder (and -wal/-shm beside it),\
                 \n  or point `cache` in cpia.toml at a writable folder."
            ),
            ErrorKind::Busy => write!(
                f,
                "\n  another process keeps the database locked; wait for it, or find it with `fuser {p}`."
            ),
            ErrorKind::Full => write!(f, "\n  the disk holding {p} is full; free space and build again."),
            ErrorKind::Newer => write!(
                f,
                "\n  nothing was read, changed or removed. Use the newer cpia that wrote it (`cpia --version` of\
                 \n  the binary on every node must match), or move the state away to start over with this one."
            ),
            ErrorKind::Older => write!(
                f,
                "\n  nothing was changed. `cpia build` (or `cpia plan`) migrates it to schema {SCHEMA_VERSION} in place;\
                 \n  read-only commands never change it."
            ),
            ErrorKind::Other => Ok(()),
        }
    }
}
impl std::error::Error for StateError {}

/// Values shared by many rows, interned to integer ids once per process.
#[derive(Default)]
pub(super) struct Interned {
    pub collections: HashMap<String, i64>,
    pub pipelines: HashMap<String, i64>,
    pub makers: HashMap<super::Maker, i64>,
    pub fingerprints: HashMap<String, i64>,
    pub out_dirs: HashMap<String, i64>,
    pub src_dirs: HashMap<(String, String), i64>,
}

/// An open state database.
pub struct State {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) interned: Interned,
    opened: Opened,
}

/// What opening the state found and did (for the note a build prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An existing state of this cpia's schema.
    Existing,
    /// A new, empty state.
    Created,
    /// An older state, migrated in one transaction.
    Migrated { from: i64 },
    /// An older state that cannot be migrated, moved to `backup`; this one is new.
    SetAside { from: i64, backup: PathBuf },
}

impl State {
    /// Opens (creating if needed) the database at `path` for a command that
    /// writes it. An older schema is migrated or set aside, a newer one is
    /// refused unchanged ([`super::version`]).
    pub fn open(path: &Path) -> Result<State, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StateError::other(path, &format!("creating its folder {}", dir.display()), e)
            })?;
        }
        let existed = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => true,
            Ok(m) => return Err(not_a_file(path, &m)),
            Err(_) => false,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StateError::new(path, "opening", &e))?;
        let version = schema_version(&conn, path)?;
        let mut opened = if existed {
            Opened::Existing
        } else {
            Opened::Created
        };
        if version == 0 && existed && has_tables(&conn, path)? {
            return Err(StateError::other(
                path,
                "opening",
                "it is an SQLite database, but not a cpia build state (it has tables and no schema version); \
                 nothing was changed: move it away, or point `cache` in cpia.toml elsewhere",
            ));
        }
        let mut conn = match compat(version) {
            Compat::Newer { found } => return Err(StateError::newer(path, found)),
            Compat::SetAside { from } => {
                drop(conn);
                let backup = set_aside(path, from)?;
                opened = Opened::SetAside { from, backup };
                Connection::open(path).map_err(|e| StateError::new(path, "opening", &e))?
            }
            Compat::Migrate { from } => {
                opened = Opened::Migrated { from };
                conn
            }
            Compat::Empty => {
                opened = Opened::Created;
                conn
            }
            Compat::Current => conn,
        };
        configure(&conn, path)?;
        if let Opened::Migrated { from } = opened {
            migrate(&mut conn, path, from)?;
        }
        if opened != Opened::Existing && !matches!(opened, Opened::Migrated { .. }) {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| StateError::new(path, "setting the schema version", &e))?;
        }
        // Every statement is `IF NOT EXISTS`: on a current state this
        // changes nothing; on a new one it creates everything.
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(EXPORT_SCHEMA))
            .map_err(|e| StateError::new(path, "creating the schema", &e))?;
        Ok(State {
            conn,
            path: path.to_path_buf(),
            interned: Interned::default(),
            opened,
        })
    }

    /// Opens an existing state for a command that only reads it, without
    /// ever writing it (a read-only workspace works too): `None` when there
    /// is no state yet; an error naming both versions for any schema but
    /// this cpia's.
    pub fn open_read_only(path: &Path) -> Result<Option<State>, StateError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::other(path, "opening", e)),
            Ok(m) if !m.is_file() => return Err(not_a_file(path, &m)),
            Ok(_) => {}
        }
        let conn = open_read_only_conn(path)?;
        let version = schema_version(&conn, path)?;
        match compat(version) {
            Compat::Current => {}
            Compat::Empty => return Ok(None),
            Compat::Newer { found } => return Err(StateError::newer(path, found)),
            Compat::Migrate { from } | Compat::SetAside { from } => {
                return Err(StateError::older(path, from))
            }
        }
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| StateError::new(path, "setting the busy timeout", &e))?;
        Ok(Some(State {
            conn,
            path: path.to_path_buf(),
            interned: Interned::default(),
            opened: Opened::Existing,
        }))
    }

    /// Whether this database was created (or emptied) by this process: the
    /// output folder may hold files it does not know.
    pub fn is_new(&self) -> bool {
        matches!(self.opened, Opened::Created | Opened::SetAside { .. })
    }

    /// What opening found and did.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps a SQLite error with this database's path and the operation.
    pub(super) fn err(&self, what: &str) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        let what = what.to_string();
        move |e| StateError::new(&self.path, &what, &e)
    }

    /// SQLite's `PRAGMA integrity_check`: `Ok(())` or the problems it lists.
    pub fn integrity_check(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(self.err("checking integrity"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.err("checking integrity"))?;
        let lines: Vec<String> = rows
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err("checking integrity"))?;
        Ok(if lines == ["ok"] { Vec::new() } else { lines })
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err("reading meta"))
    }

    /// Sets a value of the `meta` table.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(self.err("writing meta"))?;
        Ok(())
    }

    /// The id of collection `name` (created if new).
    pub fn collection_id(&mut self, name: &str) -> Result<i64, StateError> {
        if let Some(&id) = self.interned.collections.get(name) {
            return Ok(id);
        }
        let id = self.upsert_id(
            "SELECT id FROM collections WHERE name = ?1",
            "INSERT INTO collections (name) VALUES (?1)",
            &[&name],
            "recording a collection",
        )?;
        self.interned.collections.insert(name.to_string(), id);
        Ok(id)
    }

    /// Every recorded collection: (id, name).
    pub fn collections(&self) -> Result<Vec<(i64, String)>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name FROM collections ORDER BY name")
            .map_err(self.err("reading collections"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err("reading collections"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.err("reading collections"))
    }

    /// The id of a plan fingerprint (created if new).
    pub fn fingerprint_id(&mut self, fp: &str) -> Result<i64, StateError> {
        if let Some(&id) = self.interned.fingerprints.get(fp) {
            return Ok(id);
        }
        let blob = hex_blob(fp);
        let id = self.upsert_id(
            "SELECT id FROM fingerprints WHERE fp = ?1",
            "INSERT INTO fingerprints (fp) VALUES (?1)",
            &[&blob],
            "recording a fingerprint",
        )?;
        self.interned.fingerprints.insert(fp.to_string(), id);
        Ok(id)
    }

    /// Stores a pipeline description under its hash (idempotent); its id.
    pub fn pipeline_id(&mut self, hash: &str, description: &str) -> Result<i64, StateError> {
        if let Some(&id) = self.interned.pipelines.get(hash) {
            return Ok(id);
        }
        let id = match self
            .conn
            .query_row("SELECT id FROM pipelines WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err("reading pipelines"))?
        {
            Some(id) => id,
            None => {
                self.conn
                    .execute(
                        "INSERT INTO pipelines (hash, description) VALUES (?1, ?2)",
                        params![hash, description],
                    )
                    .map_err(self.err("storing a pipeline"))?;
                self.conn.last_insert_rowid()
            }
        };
        self.interned.pipelines.insert(hash.to_string(), id);
        Ok(id)
    }

    /// The description stored for pipeline `hash`, if any.
    pub fn pipeline(&self, hash: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row(
                "SELECT description FROM pipelines WHERE hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("reading a pipeline"))
    }

    /// The id of a (recipe hash, tool version, library versions) triple.
    pub(super) fn maker_id(&mut self, m: &super::Maker) -> Result<i64, StateError> {
        if let Some(&id) = self.interned.makers.get(m) {
            return Ok(id);
        }
        let libraries: Option<i64> = if m.libraries.is_empty() {
            None
        } else {
            Some(self.upsert_id(
                "SELECT id FROM libraries WHERE versions = ?1",
                "INSERT INTO libraries (versions) VALUES (?1)",
                &[&m.libraries],
                "recording library versions",
            )?)
        };
        let id = self.upsert_id(
            "SELECT id FROM provenance WHERE recipe_hash = ?1 AND tool_version = ?2 AND libraries IS ?3",
            "INSERT INTO provenance (recipe_hash, tool_version, libraries) VALUES (?1, ?2, ?3)",
            &[&m.recipe_hash, &m.tool_version, &libraries],
            "recording provenance",
        )?;
        self.interned.makers.insert(m.clone(), id);
        Ok(id)
    }

    /// The id of a slide read.
    pub(super) fn read_id(&mut self, r: &super::ReadFacts) -> Result<i64, StateError> {
        let blob = hex_blob(&r.source_hash);
        self.upsert_id(
            "SELECT id FROM reads WHERE source_hash = ?1 AND read_size = ?2 AND mpp = ?3 AND mpp_origin = ?4 AND reader = ?5",
            "INSERT INTO reads (source_hash, read_size, mpp, mpp_origin, reader) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[&blob, &r.read_size, &r.mpp, &r.mpp_origin, &r.reader],
            "recording a slide read",
        )
    }

    /// The id of output folder `path` (created if new).
    pub fn out_dir_id(&mut self, path: &str) -> Result<i64, StateError> {
        if let Some(&id) = self.interned.out_dirs.get(path) {
            return Ok(id);
        }
        let id = self.upsert_id(
            "SELECT id FROM out_dirs WHERE path = ?1",
            "INSERT INTO out_dirs (path) VALUES (?1)",
            &[&path],
            "recording an output folder",
        )?;
        self.interned.out_dirs.insert(path.to_string(), id);
        Ok(id)
    }

    /// Looks a row up by `select`, inserting it with `insert` when absent.
    pub(super) fn upsert_id(
        &self,
        select: &str,
        insert: &str,
        values: &[&dyn rusqlite::ToSql],
        what: &str,
    ) -> Result<i64, StateError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached(select)
            .and_then(|mut s| s.query_row(values, |r| r.get(0)).optional())
            .map_err(self.err(what))?;
        if let Some(id) = found {
            return Ok(id);
        }
        self.conn
            .prepare_cached(insert)
            .and_then(|mut s| s.execute(values))
            .map_err(self.err(what))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The cached metadata of the slide whose content hash is `hash`.
    pub fn slide_meta(&self, hash: &str) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached("SELECT meta FROM slides WHERE hash = ?1")
            .and_then(|mut s| s.query_row([hex_blob(hash)], |r| r.get(0)).optional())
            .map_err(self.err("reading slide metadata"))
    }

    /// Caches slide metadata by content hash.
    pub fn put_slide_meta(&mut self, hash: &str, meta: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO slides (hash, meta) VALUES (?1, ?2)",
                params![hex_blob(hash), meta],
            )
            .map_err(self.err("caching slide metadata"))?;
        Ok(())
    }

    /// Opens a row in `builds`; returns its id.
    pub fn begin_build(&mut self, command: &str, tool_version: &str) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO builds (started, tool_version, command) VALUES (?1, ?2, ?3)",
                params![now(), tool_version, command],
            )
            .map_err(self.err("starting the build record"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes the row opened by [`State::begin_build`] with the summary counts.
    pub fn finish_build(&mut self, id: i64, counts: [u64; 4]) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE builds SET finished = ?1, built = ?2, up_to_date = ?3, removed = ?4, failed = ?5 WHERE id = ?6",
                params![now(), counts[0] as i64, counts[1] as i64, counts[2] as i64, counts[3] as i64, id],
            )
            .map_err(self.err("finishing the build record"))?;
        Ok(())
    }

    /// SQLite's own size figures: (page count, page size, free pages).
    pub fn size(&self) -> Result<(u64, u64, u64), StateError> {
        let q = |p: &str| -> Result<u64, StateError> {
            self.conn
                .pragma_query_value(None, p, |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
                .map_err(self.err("reading the database size"))
        };
        Ok((q("page_count")?, q("page_size")?, q("freelist_count")?))
    }

    /// Rewrites the database compactly (`VACUUM`).
    pub fn vacuum(&mut self) -> Result<(), StateError> {
        self.conn
            .execute_batch("VACUUM")
            .map_err(self.err("vacuuming"))
    }

    /// Runs `f`, which only reads, inside one read transaction: its many
    /// small queries see one snapshot and take SQLite's lock on the database
    /// once (outside a transaction every query locks and unlocks it, two
    /// `fcntl` calls each: 42,000 of them for an export of 20,000 images).
    pub fn reading<T, E: From<StateError>>(
        &self,
        f: impl FnOnce(&State) -> Result<T, E>,
    ) -> Result<T, E> {
        let e = |e: rusqlite::Error| StateError::new(&self.path, "starting a read", &e);
        let tx = self.conn.unchecked_transaction().map_err(e)?;
        let v = f(self)?;
        tx.commit().map_err(e)?;
        Ok(v)
    }

    /// Runs `f` in one transaction: all of its writes or none.
    pub(super) fn transaction<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let path = self.path.clone();
        let e = |e: rusqlite::Error| StateError::new(&path, what, &e);
        let tx = self.conn.transaction().map_err(e)?;
        let v = f(&tx).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(v)
    }
}

/// A hex hash as its bytes (invalid hex gives the UTF-8 bytes, so a value
/// that is not a hash still round-trips distinctly).
pub fn hex_blob(hex: &str) -> Vec<u8> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex.as_bytes().to_vec();
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect()
}

/// Bytes as lower-case hex.
pub fn blob_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The error for a state path that holds something other than a file.
fn not_a_file(path: &Path, m: &std::fs::Metadata) -> StateError {
    StateError::other(
        path,
        "opening",
        format!(
            "it is {}, not the database file; nothing was changed: move it away (cpia keeps its build state there)",
            crate::regular_file::kind_of(&m.file_type())
        ),
    )
}

/// Whether the filesystem holding `path` has (next to) no space left for
/// this process: what a "disk I/O error" of SQLite then means.
fn disk_full(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statvfs is a valid out-parameter; `c` is a C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the result is checked.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < 1 << 20
}

/// The state's `PRAGMA user_version`.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| StateError::new(path, "reading the schema version", &e))
}

/// Whether the database holds any table (a version-0 file that does is
/// not an empty state but somebody else's database).
fn has_tables(conn: &Connection, path: &Path) -> Result<bool, StateError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
    .map_err(|e| StateError::new(path, "reading the schema", &e))
}

/// Busy timeout, WAL, synchronous: the settings of a writing connection.
fn configure(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let err = |what: &'static str| move |e: rusqlite::Error| StateError::new(path, what, &e);
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(err("setting the busy timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err("switching to WAL mode"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err("setting synchronous"))?;
    Ok(())
}

/// Runs the migration steps from `from` and sets the version, all in one
/// transaction: a failure (or a kill) leaves the state as it was.
fn migrate(conn: &mut Connection, path: &Path, from: i64) -> Result<(), StateError> {
    let err = |what: &'static str| move |e: rusqlite::Error| StateError::new(path, what, &e);
    let tx = conn.transaction().map_err(err("starting a migration"))?;
    for step in steps_from(from) {
        tx.execute_batch(step.sql)
            .map_err(|e| StateError::new(path, &format!("migrating ({})", step.what), &e))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err("setting the schema version"))?;
    tx.commit().map_err(err("committing a migration"))
}

/// Moves an unmigratable older state (and its WAL files) beside itself as
/// `<name>.schema-<from>.bak` (a free name: never over an earlier backup).
fn set_aside(path: &Path, from: i64) -> Result<PathBuf, StateError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state.sqlite".into());
    let free = (0..1000)
        .map(|n| {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            path.with_file_name(format!("{name}.schema-{from}{suffix}.bak"))
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .ok_or_else(|| {
            StateError::other(path, "setting an old state aside", "no free backup name")
        })?;
    for ext in ["-wal", "-shm"] {
        let side = path.with_file_name(format!("{name}{ext}"));
        if side.exists() {
            let to = free.with_file_name(format!(
                "{}{ext}",
                free.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            std::fs::rename(&side, &to)
                .map_err(|e| StateError::other(path, "setting an old state aside", e))?;
        }
    }
    std::fs::rename(path, &free)
        .map_err(|e| StateError::other(path, "setting an old state aside", e))?;
    Ok(free)
}

/// A read-only connection. A WAL database in a folder this process cannot
/// write opens read-only only while its `-shm` exists; otherwise it is
/// opened immutable (no locks: a read-only workspace has no writer; nor
/// can a full disk, where the `-shm` cannot be made).
fn open_read_only_conn(path: &Path) -> Result<Connection, StateError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let first =
        Connection::open_with_flags(path, flags).and_then(|c| schema_version_raw(&c).map(|_| c));
    match first {
        Ok(c) => Ok(c),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::CannotOpen)
                    | Some(rusqlite::ErrorCode::ReadOnly)
                    | Some(rusqlite::ErrorCode::PermissionDenied)
            ) || (e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure)
                && disk_full(path)) =>
        {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .and_then(|c| schema_version_raw(&c).map(|_| c))
                .map_err(|e2| StateError::new(path, "opening read-only", &e2))
        }
        Err(e) => Err(StateError::new(path, "opening read-only", &e)),
    }
}

fn schema_version_raw(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// `path` percent-encoded for an SQLite URI (absolute, so `file:` URIs
/// resolve the same from any working folder).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = String::new();
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
