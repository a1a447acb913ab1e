//! Reading provenance back, for `why`, `query`, `lineage` and manifests:
//! every recorded output file (ROI outputs, QC pictures, WSI tiles) with
//! what made it, streamed from a SQLite cursor so that millions of rows
//! cost one row of memory at a time.
//!
//! The naming rule of tiles belongs to the planner, so callers hand it in
//! (as for [`State::for_each_in_dir`]).

use std::ops::ControlFlow;

use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Row};

use crate::store::records::{Maker, ReadFacts, WrittenFile};
use crate::store::state::{blob_hex, State, StateError};

/// A WSI tile's place: its unit (cell × writing step) and its position on
/// the standardized grid in units of its own edge (`x`, `y` of its name).
#[derive(Clone, Debug, PartialEq)]
pub struct TileFacts {
    pub unit: i64,
    pub cell: (u32, u32),
    /// Tile edge in standardized pixels.
    pub size: u32,
    pub x: u32,
    pub y: u32,
    /// False when the unit's last build stopped part-way.
    pub complete: bool,
    /// How the unit's tiles were encoded (`pixels` or `crop`).
    pub encoding: String,
}

/// One recorded output file and everything recorded about how it was made.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputFacts {
    /// Folder relative to the output root (`M/BreaKHis_100x`) and file name.
    pub dir: String,
    pub name: String,
    pub collection: String,
    pub input: i64,
    pub source_root: String,
    /// Path of the source inside its root.
    pub source_rel: String,
    /// The source's content hash the output was built from.
    pub source_hash: String,
    pub file: WrittenFile,
    /// The writing step's id (`qc` for a QC picture).
    pub sink: String,
    pub pipeline_hash: String,
    pub maker: Maker,
    pub class: Option<String>,
    pub built_at: i64,
    pub build: i64,
    /// WSI units and QC pictures: how the slide was read.
    pub read: Option<ReadFacts>,
    pub tile: Option<TileFacts>,
    /// The output folder's id.
    pub out_dir: i64,
    /// A named output's row id (0 for a tile).
    pub id: i64,
}

impl OutputFacts {
    /// The path relative to the output root.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }
}

/// Which outputs to read; every set field must match (empty = all).
#[derive(Clone, Debug, Default)]
pub struct OutputFilter {
    /// Collection names.
    pub collections: Vec<String>,
    /// Inputs (source files of collections) by id.
    pub inputs: Vec<i64>,
    pub recipe_hash: Option<String>,
    /// `openslide`, `tiff-resolution`, `override` or `default`: only WSI
    /// tiles and QC pictures have one.
    pub mpp_origin: Option<String>,
    pub build: Option<i64>,
    /// Output folders by path (`M/X`).
    pub dirs: Vec<String>,
    /// Leave out QC pictures.
    pub no_qc: bool,
    /// In the order of their places (folder, name; a slide's tiles by
    /// input, cell and position), whatever order the build recorded them
    /// in: what a file made from them must follow to be the same bytes
    /// after every build (walked along the units' unique index; named
    /// outputs may be sorted by SQLite first). Otherwise in record order.
    pub place_order: bool,
}

const SOURCE: &str = "JOIN inputs i ON i.id = {t}.input JOIN collections c ON c.id = i.collection
    JOIN files f ON f.id = i.file JOIN src_dirs sd ON sd.id = f.src_dir";

const OUTPUT_SQL: &str = "SELECT d.path, o.name, c.name, o.input, sd.root,
    CASE sd.path WHEN '' THEN f.name ELSE sd.path || '/' || f.name END, o.source_hash,
    o.ino, o.size, o.mtime_ns, o.content_hash, o.sink, p.hash, pv.recipe_hash, pv.tool_version,
    o.class, o.built_at, o.build, r.source_hash, r.read_size, r.mpp, r.mpp_origin, r.reader,
    o.id, o.out_dir, NULL, NULL, NULL, NULL, NULL, NULL, NULL, coalesce(l.versions, '')
    FROM outputs o JOIN out_dirs d ON d.id = o.out_dir {source}
    JOIN pipelines p ON p.id = o.pipeline JOIN provenance pv ON pv.id = o.prov
    LEFT JOIN libraries l ON l.id = pv.libraries
    LEFT JOIN reads r ON r.id = o.read";

const TILE_SQL: &str = "SELECT d.path, f.name, c.name, u.input, sd.root,
    CASE sd.path WHEN '' THEN f.name ELSE sd.path || '/' || f.name END, r.source_hash,
    t.ino, t.size, t.mtime_ns, t.content_hash, u.sink, p.hash, pv.recipe_hash, pv.tool_version,
    NULL, u.built_at, u.build, r.source_hash, r.read_size, r.mpp, r.mpp_origin, r.reader,
    u.id, u.i, u.j, u.size, t.x, t.y, u.complete, u.out_dir, u.encoding, coalesce(l.versions, '')
    FROM tiles t JOIN units u ON u.id = t.unit JOIN out_dirs d ON d.id = u.out_dir {source}
    JOIN pipelines p ON p.id = u.pipeline JOIN provenance pv ON pv.id = u.prov
    LEFT JOIN libraries l ON l.id = pv.libraries
    JOIN reads r ON r.id = u.read";

/// Builds the row of either query; `tile_name(file, size, x, y)` names tiles.
fn facts(
    r: &Row<'_>,
    tile: bool,
    tile_name: &dyn Fn(&str, u32, u32, u32) -> String,
) -> rusqlite::Result<OutputFacts> {
    let read_hash: Option<Vec<u8>> = r.get(18)?;
    let read = match read_hash {
        Some(h) => Some(ReadFacts {
            source_hash: blob_hex(&h),
            read_size: r.get::<_, i64>(19)? as u32,
            mpp: r.get(20)?,
            mpp_origin: r.get(21)?,
            reader: r.get(22)?,
        }),
        None => None,
    };
    let tile = if tile {
        Some(TileFacts {
            unit: r.get(23)?,
            cell: (r.get::<_, i64>(24)? as u32, r.get::<_, i64>(25)? as u32),
            size: r.get::<_, i64>(26)? as u32,
            x: r.get::<_, i64>(27)? as u32,
            y: r.get::<_, i64>(28)? as u32,
            complete: r.get::<_, i64>(29)? != 0,
            encoding: r.get(31)?,
        })
    } else {
        None
    };
    let name: String = r.get(1)?;
    let (id, out_dir) = if tile.is_some() {
        (0, r.get(30)?)
    } else {
        (r.get(23)?, r.get(24)?)
    };
    Ok(OutputFacts {
        out_dir,
        id,
        dir: r.get(0)?,
        name: match &tile {
            Some(t) => tile_name(&name, t.size, t.x, t.y),
            None => name,
        },
        collection: r.get(2)?,
        input: r.get(3)?,
        source_root: r.get(4)?,
        source_rel: r.get(5)?,
        source_hash: blob_hex(&r.get::<_, Vec<u8>>(6)?),
        file: WrittenFile {
            ino: r.get::<_, i64>(7)? as u64,
            size: r.get::<_, i64>(8)? as u64,
            mtime_ns: r.get(9)?,
            content_hash: blob_hex(&r.get::<_, Vec<u8>>(10)?),
        },
        sink: r.get(11)?,
        pipeline_hash: r.get(12)?,
        maker: Maker {
            recipe_hash: r.get(13)?,
            tool_version: r.get(14)?,
            libraries: r.get(32)?,
        },
        class: r.get(15)?,
        built_at: r.get(16)?,
        build: r.get(17)?,
        read,
        tile,
    })
}

/// `?, ?, …` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl OutputFilter {
    /// The WHERE clause for table alias `t` (`o` or `u`) and its values.
    fn clause(&self, t: &str) -> (String, Vec<Value>) {
        let mut w = Vec::new();
        let mut v: Vec<Value> = Vec::new();
        if !self.collections.is_empty() {
            w.push(format!("c.name IN ({})", marks(self.collections.len())));
            v.extend(self.collections.iter().map(|c| Value::Text(c.clone())));
        }
        if !self.inputs.is_empty() {
            w.push(format!("{t}.input IN ({})", marks(self.inputs.len())));
            v.extend(self.inputs.iter().map(|&i| Value::Integer(i)));
        }
        if let Some(h) = &self.recipe_hash {
            w.push("pv.recipe_hash = ?".into());
            v.push(Value::Text(h.clone()));
        }
        if let Some(m) = &self.mpp_origin {
            w.push("r.mpp_origin = ?".into());
            v.push(Value::Text(m.clone()));
        }
        if let Some(b) = self.build {
            w.push(format!("{t}.build = ?"));
            v.push(Value::Integer(b));
        }
        if !self.dirs.is_empty() {
            w.push(format!("d.path IN ({})", marks(self.dirs.len())));
            v.extend(self.dirs.iter().map(|d| Value::Text(d.clone())));
        }
        if self.no_qc && t == "o" {
            w.push("o.sink <> 'qc'".into());
        }
        let clause = if w.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", w.join(" AND "))
        };
        (clause, v)
    }
}

impl State {
    /// Calls `f` with every recorded output file that `filter` selects:
    /// named outputs (by id), then tiles (by unit and position), streamed.
    /// `f` may stop the walk with [`ControlFlow::Break`].
    pub fn for_each_output(
        &self,
        filter: &OutputFilter,
        tile_name: &dyn Fn(&str, u32, u32, u32) -> String,
        f: &mut dyn FnMut(OutputFacts) -> ControlFlow<()>,
    ) -> Result<(), StateError> {
        let what = "reading output records";
        let (outputs, tiles) = if filter.place_order {
            (
                "d.path, o.name",
                "d.path, u.input, u.sink, u.i, u.j, t.x, t.y",
            )
        } else {
            ("o.id", "t.unit, t.x, t.y")
        };
        for (sql, alias, tile, order) in [
            (OUTPUT_SQL, "o", false, outputs),
            (TILE_SQL, "u", true, tiles),
        ] {
            let (clause, values) = filter.clause(alias);
            let sql = format!(
                "{}{clause} ORDER BY {order}",
                sql.replace("{source}", &SOURCE.replace("{t}", alias))
            );
            // Cached: an export walks each of thousands of (folder, input)
            // pairs with the same statement (its preparation was ~8 % of
            // an export's evaluation, `perf`).
            let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err(what))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(values))
                .map_err(self.err(what))?;
            while let Some(r) = rows.next().map_err(self.err(what))? {
                let facts = facts(r, tile, tile_name).map_err(self.err(what))?;
                if f(facts).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The named output (ROI output or QC picture) at `dir`/`name`.
    pub fn output_facts(&self, dir: &str, name: &str) -> Result<Option<OutputFacts>, StateError> {
        let what = "reading an output record";
        let sql = format!(
            "{} WHERE d.path = ?1 AND o.name = ?2",
            OUTPUT_SQL.replace("{source}", &SOURCE.replace("{t}", "o"))
        );
        self.conn
            .prepare(&sql)
            .and_then(|mut s| {
                s.query_row(params![dir, name], |r| {
                    facts(r, false, &|_, _, _, _| String::new())
                })
                .optional()
            })
            .map_err(self.err(what))
    }

    /// The named output (ROI output or QC picture) whose row id is `id`.
    pub fn output_facts_by_id(&self, id: i64) -> Result<Option<OutputFacts>, StateError> {
        // Built once: an export asks this for every one of its samples.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{} WHERE o.id = ?1",
                OUTPUT_SQL.replace("{source}", &SOURCE.replace("{t}", "o"))
            )
        });
        self.conn
            .prepare_cached(&SQL)
            .and_then(|mut s| {
                s.query_row([id], |r| facts(r, false, &|_, _, _, _| String::new()))
                    .optional()
            })
            .map_err(self.err("reading an output record"))
    }

    /// The tile of unit `unit` at (`x`, `y`).
    pub fn tile_facts_at(
        &self,
        unit: i64,
        x: u32,
        y: u32,
        tile_name: &dyn Fn(&str, u32, u32, u32) -> String,
    ) -> Result<Option<OutputFacts>, StateError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{} WHERE t.unit = ?1 AND t.x = ?2 AND t.y = ?3",
                TILE_SQL.replace("{source}", &SOURCE.replace("{t}", "u"))
            )
        });
        self.conn
            .prepare_cached(&SQL)
            .and_then(|mut s| {
                s.query_row(params![unit, x, y], |r| facts(r, true, tile_name))
                    .optional()
            })
            .map_err(self.err("reading a tile record"))
    }

    /// The tiles of edge `size` at (`x`, `y`) recorded in folder `dir`, of
    /// any slide (the caller matches the slide name).
    pub fn tile_facts(
        &self,
        dir: &str,
        size: u32,
        x: u32,
        y: u32,
        tile_name: &dyn Fn(&str, u32, u32, u32) -> String,
    ) -> Result<Vec<OutputFacts>, StateError> {
        let what = "reading a tile record";
        let sql = format!(
            "{} WHERE d.path = ?1 AND u.size = ?2 AND t.x = ?3 AND t.y = ?4",
            TILE_SQL.replace("{source}", &SOURCE.replace("{t}", "u"))
        );
        self.rows(
            &sql,
            params![dir, size, x, y],
            |r| facts(r, true, tile_name),
            what,
        )
    }

    /// The units of `input` at cell `cell` whose tiles have edge `size`:
    /// (folder, writing step, whether tile (`x`, `y`) is recorded).
    pub fn units_at(
        &self,
        input: i64,
        cell: (u32, u32),
        size: u32,
        x: u32,
        y: u32,
    ) -> Result<Vec<(String, String, bool)>, StateError> {
        self.rows(
            "SELECT d.path, u.sink,
                    EXISTS (SELECT 1 FROM tiles t WHERE t.unit = u.id AND t.x = ?4 AND t.y = ?5)
               FROM units u JOIN out_dirs d ON d.id = u.out_dir
              WHERE u.input = ?1 AND u.i = ?2 AND u.j = ?3 AND u.size = ?6 ORDER BY u.sink",
            params![input, cell.0, cell.1, x, y, size],
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)),
            "reading units",
        )
    }

    /// The stat-index entry of an input's source file: (size, content hash).
    pub fn source_of_input(&self, input: i64) -> Result<Option<(u64, String)>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT f.size, f.hash FROM inputs i JOIN files f ON f.id = i.file WHERE i.id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([input], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        blob_hex(&r.get::<_, Vec<u8>>(1)?),
                    ))
                })
                .optional()
            })
            .map_err(self.err("reading a source file"))
    }

    /// The inputs whose source is `root`:`rel` (one per collection reading it).
    pub fn inputs_of_source(&self, root: &str, rel: &str) -> Result<Vec<i64>, StateError> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        self.rows(
            "SELECT i.id FROM src_dirs sd JOIN files f ON f.src_dir = sd.id
               JOIN inputs i ON i.file = f.id
              WHERE sd.root = ?1 AND sd.path = ?2 AND f.name = ?3 ORDER BY i.id",
            params![root, dir, name],
            |r| r.get(0),
            "reading inputs",
        )
    }

    /// Every source root name with recorded files.
    pub fn source_roots(&self) -> Result<Vec<String>, StateError> {
        self.rows(
            "SELECT DISTINCT root FROM src_dirs ORDER BY root",
            [],
            |r| r.get(0),
            "reading source folders",
        )
    }

    /// Calls `f` with every recorded failure of the inputs of `collections`
    /// (all when empty), streamed, by collection and source.
    pub fn for_each_failure(
        &self,
        collections: &[String],
        f: &mut dyn FnMut(FailureFacts) -> ControlFlow<()>,
    ) -> Result<(), StateError> {
        let what = "reading failures";
        let mut sql = String::from(
            "SELECT ir.collection, ir.source_root, ir.source_rel, fl.unit, fl.error, fl.at,
                    fl.source_hash
               FROM failures fl JOIN input_records ir ON ir.input = fl.input",
        );
        if !collections.is_empty() {
            sql.push_str(&format!(
                " WHERE ir.collection IN ({})",
                marks(collections.len())
            ));
        }
        sql.push_str(" ORDER BY ir.collection, ir.source_root, ir.source_rel, fl.unit");
        let mut stmt = self.conn.prepare(&sql).map_err(self.err(what))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(collections))
            .map_err(self.err(what))?;
        while let Some(r) = rows.next().map_err(self.err(what))? {
            let row = (|| -> rusqlite::Result<FailureFacts> {
                Ok(FailureFacts {
                    collection: r.get(0)?,
                    source_root: r.get(1)?,
                    source_rel: r.get(2)?,
                    unit: r.get(3)?,
                    error: r.get(4)?,
                    at: r.get(5)?,
                    source_hash: r.get::<_, Option<Vec<u8>>>(6)?.map(|b| blob_hex(&b)),
                })
            })()
            .map_err(self.err(what))?;
            if f(row).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` with every distinct (source root, path, content hash) that
    /// recorded outputs of `collections` (all when empty) were built from.
    pub fn for_each_source_version(
        &self,
        collections: &[String],
        f: &mut dyn FnMut(&str, &str, String) -> ControlFlow<()>,
    ) -> Result<(), StateError> {
        let what = "reading sources";
        let filter = if collections.is_empty() {
            String::new()
        } else {
            format!(" WHERE c.name IN ({})", marks(collections.len()))
        };
        let source = |t: &str| SOURCE.replace("{t}", t);
        let sql = format!(
            "SELECT sd.root, CASE sd.path WHEN '' THEN f.name ELSE sd.path || '/' || f.name END, h
               FROM (SELECT DISTINCT input, source_hash AS h FROM outputs
                     UNION SELECT DISTINCT u.input, r.source_hash FROM units u JOIN reads r ON r.id = u.read) x
               {}{filter} ORDER BY 1, 2, 3",
            source("x")
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err(what))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(collections))
            .map_err(self.err(what))?;
        while let Some(r) = rows.next().map_err(self.err(what))? {
            let root: String = r.get(0).map_err(self.err(what))?;
            let rel: String = r.get(1).map_err(self.err(what))?;
            let hash: Vec<u8> = r.get(2).map_err(self.err(what))?;
            if f(&root, &rel, blob_hex(&hash)).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Every output folder ever recorded: (id, path), by path.
    pub fn all_out_dirs(&self) -> Result<Vec<(i64, String)>, StateError> {
        self.rows(
            "SELECT id, path FROM out_dirs ORDER BY path",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading output folders",
        )
    }
}

/// The last failure of an input (`unit` empty), a WSI cell (`"i,j"`) or a
/// QC picture (`"qc"`), with its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureFacts {
    pub collection: String,
    pub source_root: String,
    pub source_rel: String,
    pub unit: String,
    pub error: String,
    pub at: i64,
    pub source_hash: Option<String>,
}

/// One recorded file of an output folder, borrowed from the SQLite row:
/// what `verify` compares with the disk, without building strings.
pub struct FileRef<'a> {
    /// A named output's file name, or a tile's slide file name (the caller
    /// applies the planner's naming rule with `tile`).
    pub name: &'a str,
    /// A tile's (edge, x, y).
    pub tile: Option<(u32, u32, u32)>,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// blake3 of the bytes written.
    pub content_hash: &'a [u8],
}

impl State {
    /// Calls `f` with every file recorded in output folder `out_dir`
    /// (named outputs, then tiles), streamed.
    pub fn for_each_file_ref(
        &self,
        out_dir: i64,
        f: &mut dyn FnMut(FileRef<'_>),
    ) -> Result<(), StateError> {
        let what = "reading the records of an output folder";
        for sql in [
            "SELECT name, NULL, NULL, NULL, ino, size, mtime_ns, content_hash FROM outputs WHERE out_dir = ?1",
            "SELECT f.name, u.size, t.x, t.y, t.ino, t.size, t.mtime_ns, t.content_hash
               FROM units u JOIN inputs i ON i.id = u.input JOIN files f ON f.id = i.file
               JOIN tiles t ON t.unit = u.id WHERE u.out_dir = ?1",
        ] {
            let mut stmt = self.conn.prepare_cached(sql).map_err(self.err(what))?;
            let mut rows = stmt.query([out_dir]).map_err(self.err(what))?;
            while let Some(r) = rows.next().map_err(self.err(what))? {
                let mut get = || -> rusqlite::Result<()> {
                    let name = r.get_ref(0)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
                    })?;
                    let tile = match r.get::<_, Option<i64>>(1)? {
                        Some(size) => Some((
                            size as u32,
                            r.get::<_, i64>(2)? as u32,
                            r.get::<_, i64>(3)? as u32,
                        )),
                        None => None,
                    };
                    let hash = r.get_ref(7)?.as_blob().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Blob, e.into())
                    })?;
                    f(FileRef {
                        name,
                        tile,
                        ino: r.get::<_, i64>(4)? as u64,
                        size: r.get::<_, i64>(5)? as u64,
                        mtime_ns: r.get(6)?,
                        content_hash: hash,
                    });
                    Ok(())
                };
                get().map_err(self.err(what))?;
            }
        }
        Ok(())
    }
}
