//! Reading back what an input produced: its named outputs, its WSI units and
//! their tiles, its failures. Planning reads these only for inputs it plans
//! in detail (new, changed, damaged or incomplete ones).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Row};

use super::records::{
    FailureRecord, Maker, OutputRow, ReadFacts, TileRecord, UnitRow, WrittenFile,
};
use super::state::{blob_hex, State, StateError};

const OUTPUT_COLUMNS: &str =
    "o.id, o.input, d.path, o.name, o.sink, p.hash, o.source_hash, o.class,
    pv.recipe_hash, pv.tool_version, r.source_hash, r.read_size, r.mpp, r.mpp_origin, r.reader,
    o.ino, o.size, o.mtime_ns, o.content_hash, o.built_at, o.build, coalesce(l.versions, '')";
const OUTPUT_JOINS: &str = "FROM outputs o JOIN out_dirs d ON d.id = o.out_dir
    JOIN pipelines p ON p.id = o.pipeline JOIN provenance pv ON pv.id = o.prov
    LEFT JOIN libraries l ON l.id = pv.libraries
    LEFT JOIN reads r ON r.id = o.read";

fn output_row(r: &Row<'_>) -> rusqlite::Result<OutputRow> {
    let read_hash: Option<Vec<u8>> = r.get(10)?;
    Ok(OutputRow {
        id: r.get(0)?,
        input: r.get(1)?,
        dir: r.get(2)?,
        name: r.get(3)?,
        sink: r.get(4)?,
        pipeline_hash: r.get(5)?,
        source_hash: blob_hex(&r.get::<_, Vec<u8>>(6)?),
        class: r.get(7)?,
        maker: Maker {
            recipe_hash: r.get(8)?,
            tool_version: r.get(9)?,
            libraries: r.get(21)?,
        },
        read: match read_hash {
            Some(h) => Some(ReadFacts {
                source_hash: blob_hex(&h),
                read_size: r.get::<_, i64>(11)? as u32,
                mpp: r.get(12)?,
                mpp_origin: r.get(13)?,
                reader: r.get(14)?,
            }),
            None => None,
        },
        file: WrittenFile {
            ino: r.get::<_, i64>(15)? as u64,
            size: r.get::<_, i64>(16)? as u64,
            mtime_ns: r.get(17)?,
            content_hash: blob_hex(&r.get::<_, Vec<u8>>(18)?),
        },
        built_at: r.get(19)?,
        build: r.get(20)?,
    })
}

const UNIT_COLUMNS: &str = "u.id, u.input, u.sink, u.i, u.j, d.path, u.size, p.hash,
    r.source_hash, r.read_size, r.mpp, r.mpp_origin, r.reader, pv.recipe_hash, pv.tool_version,
    u.outputs, u.kept, u.complete, u.built_at, u.build, u.encoding, coalesce(l.versions, '')";
const UNIT_JOINS: &str = "FROM units u JOIN out_dirs d ON d.id = u.out_dir
    JOIN pipelines p ON p.id = u.pipeline JOIN reads r ON r.id = u.read
    JOIN provenance pv ON pv.id = u.prov LEFT JOIN libraries l ON l.id = pv.libraries";

fn unit_row(r: &Row<'_>) -> rusqlite::Result<UnitRow> {
    Ok(UnitRow {
        id: r.get(0)?,
        input: r.get(1)?,
        sink: r.get(2)?,
        cell: (r.get::<_, i64>(3)? as u32, r.get::<_, i64>(4)? as u32),
        dir: r.get(5)?,
        size: r.get::<_, i64>(6)? as u32,
        pipeline_hash: r.get(7)?,
        read: ReadFacts {
            source_hash: blob_hex(&r.get::<_, Vec<u8>>(8)?),
            read_size: r.get::<_, i64>(9)? as u32,
            mpp: r.get(10)?,
            mpp_origin: r.get(11)?,
            reader: r.get(12)?,
        },
        maker: Maker {
            recipe_hash: r.get(13)?,
            tool_version: r.get(14)?,
            libraries: r.get(21)?,
        },
        outputs: r.get::<_, i64>(15)? as u64,
        kept: r.get::<_, Option<i64>>(16)?.map(|k| k != 0),
        complete: r.get::<_, i64>(17)? != 0,
        built_at: r.get(18)?,
        build: r.get(19)?,
        encoding: r.get(20)?,
    })
}

impl State {
    /// The named outputs (ROI outputs, QC pictures) of an input.
    pub fn outputs_of_input(&self, input: i64) -> Result<Vec<OutputRow>, StateError> {
        self.rows(
            &format!("SELECT {OUTPUT_COLUMNS} {OUTPUT_JOINS} WHERE o.input = ?1 ORDER BY o.id"),
            params![input],
            output_row,
            "reading outputs",
        )
    }

    /// The named output at `dir`/`name`, if recorded.
    pub fn output_at(&self, dir: &str, name: &str) -> Result<Option<OutputRow>, StateError> {
        Ok(self
            .rows(
                &format!(
                    "SELECT {OUTPUT_COLUMNS} {OUTPUT_JOINS} WHERE d.path = ?1 AND o.name = ?2"
                ),
                params![dir, name],
                output_row,
                "reading outputs",
            )?
            .pop())
    }

    /// The WSI units of an input.
    pub fn units_of_input(&self, input: i64) -> Result<Vec<UnitRow>, StateError> {
        self.rows(
            &format!("SELECT {UNIT_COLUMNS} {UNIT_JOINS} WHERE u.input = ?1 ORDER BY u.id"),
            params![input],
            unit_row,
            "reading units",
        )
    }

    /// The unit of `input` for (`sink`, cell), if recorded.
    pub fn unit(
        &self,
        input: i64,
        sink: &str,
        cell: (u32, u32),
    ) -> Result<Option<UnitRow>, StateError> {
        Ok(self
            .rows(
                &format!(
                    "SELECT {UNIT_COLUMNS} {UNIT_JOINS} WHERE u.input = ?1 AND u.sink = ?2 AND u.i = ?3 AND u.j = ?4"
                ),
                params![input, sink, cell.0, cell.1],
                unit_row,
                "reading units",
            )?
            .pop())
    }

    /// The tiles recorded for a unit.
    pub fn tiles_of_unit(&self, unit: i64) -> Result<Vec<TileRecord>, StateError> {
        self.rows(
            "SELECT x, y, ino, size, mtime_ns, content_hash FROM tiles WHERE unit = ?1 ORDER BY x, y",
            params![unit],
            |r| {
                Ok(TileRecord {
                    x: r.get::<_, i64>(0)? as u32,
                    y: r.get::<_, i64>(1)? as u32,
                    file: WrittenFile {
                        ino: r.get::<_, i64>(2)? as u64,
                        size: r.get::<_, i64>(3)? as u64,
                        mtime_ns: r.get(4)?,
                        content_hash: blob_hex(&r.get::<_, Vec<u8>>(5)?),
                    },
                })
            },
            "reading tiles",
        )
    }

    /// The kept/rejected decisions of an input's cells (any writing step).
    pub fn decisions(&self, input: i64) -> Result<HashMap<(u32, u32), bool>, StateError> {
        let rows: Vec<((u32, u32), bool)> = self.rows(
            "SELECT i, j, kept FROM units WHERE input = ?1 AND kept IS NOT NULL",
            params![input],
            |r| {
                Ok((
                    (r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u32),
                    r.get::<_, i64>(2)? != 0,
                ))
            },
            "reading cell decisions",
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Who records output `dir`/`name`: (input id, collection, source root,
    /// path in the root).
    pub fn owner_of(
        &self,
        dir: &str,
        name: &str,
    ) -> Result<Option<(i64, String, String, String)>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT o.input, ir.collection, ir.source_root, ir.source_rel
                   FROM outputs o JOIN out_dirs d ON d.id = o.out_dir
                   JOIN input_records ir ON ir.input = o.input
                  WHERE d.path = ?1 AND o.name = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![dir, name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
            })
            .map_err(self.err("reading outputs"))
    }

    /// The recorded failures of an input (its own, its cells', its QC's).
    pub fn failures_of(&self, input: i64) -> Result<Vec<FailureRecord>, StateError> {
        self.rows(
            "SELECT input, unit, source_hash, error, at FROM failures WHERE input = ?1 ORDER BY unit",
            params![input],
            |r| {
                Ok(FailureRecord {
                    input: r.get(0)?,
                    unit: r.get(1)?,
                    source_hash: r.get::<_, Option<Vec<u8>>>(2)?.map(|b| blob_hex(&b)),
                    error: r.get(3)?,
                    at: r.get(4)?,
                })
            },
            "reading failures",
        )
    }

    /// Runs `sql` and collects its rows.
    pub(super) fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
        what: &str,
    ) -> Result<Vec<T>, StateError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err(what))?;
        let rows = stmt.query_map(params, map).map_err(self.err(what))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.err(what))
    }
}
