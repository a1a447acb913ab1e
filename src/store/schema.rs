//! The SQL schema of the state database, version [`SCHEMA_VERSION`].
//!
//! Sized for the corpus (~150 M outputs): everything shared by many rows is a
//! row of its own, referenced by an integer id (collections, source folders,
//! pipelines, "who built it" contexts, slide reads, output folders), and the
//! per-output rows hold only what is per output. Keys are *not* stored:
//! [`crate::plan::key`] computes them from the recorded ingredients, so the
//! key table in that module stays the one definition. Hashes are 32-byte
//! blobs. See docs/state.md for the meaning of every column.

/// The schema this cpia writes. Bump it with every change to a table, index,
/// view or trigger, and add the step to [`super::version::MIGRATIONS`]:
/// what an older or newer state means is [`super::version`]'s table.
pub const SCHEMA_VERSION: i64 = 4;

/// Tables, indexes and views (idempotent).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS collections (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS src_dirs (
    id INTEGER PRIMARY KEY, root TEXT NOT NULL, path TEXT NOT NULL, UNIQUE (root, path)
);
CREATE TABLE IF NOT EXISTS files (
    src_dir INTEGER NOT NULL, name TEXT NOT NULL, id INTEGER NOT NULL,
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (src_dir, name)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS files_by_id ON files(id);
CREATE TABLE IF NOT EXISTS fingerprints (id INTEGER PRIMARY KEY, fp BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS inputs (
    id INTEGER PRIMARY KEY, collection INTEGER NOT NULL, file INTEGER NOT NULL,
    fp INTEGER, outputs INTEGER NOT NULL DEFAULT 0,
    UNIQUE (collection, file)
);
CREATE INDEX IF NOT EXISTS inputs_by_file ON inputs(file);
CREATE TABLE IF NOT EXISTS folders (
    collection INTEGER NOT NULL, src_dir INTEGER NOT NULL, digest BLOB NOT NULL,
    fp INTEGER NOT NULL, inputs INTEGER NOT NULL, outputs INTEGER NOT NULL,
    PRIMARY KEY (collection, src_dir)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pipelines (
    id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY, recipe_hash TEXT NOT NULL, tool_version TEXT NOT NULL,
    UNIQUE (recipe_hash, tool_version)
);
CREATE TABLE IF NOT EXISTS reads (
    id INTEGER PRIMARY KEY, source_hash BLOB NOT NULL, read_size INTEGER NOT NULL,
    mpp REAL NOT NULL, mpp_origin TEXT NOT NULL, reader TEXT NOT NULL,
    UNIQUE (source_hash, read_size, mpp, mpp_origin, reader)
);
CREATE TABLE IF NOT EXISTS out_dirs (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
    dev INTEGER, ino INTEGER, mtime_ns INTEGER, ctime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS collection_dirs (
    collection INTEGER NOT NULL, out_dir INTEGER NOT NULL, PRIMARY KEY (collection, out_dir)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    id INTEGER PRIMARY KEY, out_dir INTEGER NOT NULL, name TEXT NOT NULL,
    input INTEGER NOT NULL, sink TEXT NOT NULL, pipeline INTEGER NOT NULL,
    source_hash BLOB NOT NULL, class TEXT, prov INTEGER NOT NULL, read INTEGER,
    ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    content_hash BLOB NOT NULL, built_at INTEGER NOT NULL, build INTEGER NOT NULL,
    UNIQUE (out_dir, name)
);
CREATE INDEX IF NOT EXISTS outputs_by_input ON outputs(input);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY, input INTEGER NOT NULL, sink TEXT NOT NULL,
    i INTEGER NOT NULL, j INTEGER NOT NULL, out_dir INTEGER NOT NULL, size INTEGER NOT NULL,
    pipeline INTEGER NOT NULL, read INTEGER NOT NULL, prov INTEGER NOT NULL,
    outputs INTEGER NOT NULL, kept INTEGER, complete INTEGER NOT NULL,
    built_at INTEGER NOT NULL, build INTEGER NOT NULL,
    UNIQUE (input, sink, i, j)
);
CREATE INDEX IF NOT EXISTS units_by_dir ON units(out_dir);
CREATE TABLE IF NOT EXISTS tiles (
    unit INTEGER NOT NULL, x INTEGER NOT NULL, y INTEGER NOT NULL,
    ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    PRIMARY KEY (unit, x, y)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slides (hash BLOB PRIMARY KEY, meta TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    input INTEGER NOT NULL, unit TEXT NOT NULL, source_hash BLOB, error TEXT NOT NULL,
    at INTEGER NOT NULL, PRIMARY KEY (input, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY, started INTEGER NOT NULL, finished INTEGER,
    built INTEGER, up_to_date INTEGER, removed INTEGER, failed INTEGER,
    tool_version TEXT NOT NULL, command TEXT NOT NULL
);

CREATE VIEW IF NOT EXISTS input_records AS
  SELECT i.id AS input, c.name AS collection, d.root AS source_root,
         CASE d.path WHEN '' THEN f.name ELSE d.path || '/' || f.name END AS source_rel,
         lower(hex(f.hash)) AS source_hash, i.outputs AS outputs, i.fp IS NOT NULL AS clean
    FROM inputs i JOIN collections c ON c.id = i.collection
    JOIN files f ON f.id = i.file JOIN src_dirs d ON d.id = f.src_dir;
CREATE VIEW IF NOT EXISTS output_records AS
  SELECT od.path || '/' || o.name AS path, ir.collection, lower(hex(o.content_hash)) AS content_hash,
         o.size, o.mtime_ns, o.ino, ir.source_root, ir.source_rel,
         lower(hex(o.source_hash)) AS source_hash, p.hash AS pipeline_hash,
         pv.recipe_hash, pv.tool_version,
         substr(od.path, instr(od.path, '/') + 1) AS sub_dataset,
         substr(od.path, 1, instr(od.path, '/') - 1) AS scale,
         o.class, o.built_at, o.build, CASE o.sink WHEN 'qc' THEN 'qc' ELSE '' END AS unit, o.sink
    FROM outputs o JOIN out_dirs od ON od.id = o.out_dir JOIN input_records ir ON ir.input = o.input
    JOIN pipelines p ON p.id = o.pipeline JOIN provenance pv ON pv.id = o.prov
  UNION ALL
  SELECT od.path || '/' || s.slide || '-' || u.size || '-' || t.x || '-' || t.y || '.jpg',
         ir.collection, lower(hex(t.content_hash)), t.size, t.mtime_ns, t.ino, ir.source_root,
         ir.source_rel, lower(hex(r.source_hash)), p.hash, pv.recipe_hash, pv.tool_version,
         substr(od.path, instr(od.path, '/') + 1), substr(od.path, 1, instr(od.path, '/') - 1),
         NULL, u.built_at, u.build, u.i || ',' || u.j, u.sink
    FROM tiles t JOIN units u ON u.id = t.unit JOIN out_dirs od ON od.id = u.out_dir
    JOIN input_records ir ON ir.input = u.input
    JOIN (SELECT i.id AS input, CASE WHEN instr(f.name, '.') > 0
                 THEN substr(f.name, 1, instr(f.name, '.') - 1) ELSE f.name END AS slide
            FROM inputs i JOIN files f ON f.id = i.file) s ON s.input = u.input
    JOIN reads r ON r.id = u.read JOIN pipelines p ON p.id = u.pipeline
    JOIN provenance pv ON pv.id = u.prov;
CREATE VIEW IF NOT EXISTS unit_records AS
  SELECT ir.collection, ir.source_root, ir.source_rel, lower(hex(r.source_hash)) AS source_hash,
         u.i || ',' || u.j AS unit, u.sink, p.hash AS pipeline_hash, u.outputs, u.kept,
         r.read_size, r.mpp, r.mpp_origin, r.reader, pv.recipe_hash, pv.tool_version,
         u.built_at, u.build, u.complete
    FROM units u JOIN input_records ir ON ir.input = u.input JOIN reads r ON r.id = u.read
    JOIN pipelines p ON p.id = u.pipeline JOIN provenance pv ON pv.id = u.prov;

-- ---- provenance (issue 10): recipe archive, build records, manifests ----
-- Recipe file texts by blake3 of their bytes; the files of each recipe
-- version (recipe hash) and its canonical text, whose blake3 is the hash.
CREATE TABLE IF NOT EXISTS recipe_texts (hash BLOB PRIMARY KEY, text TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipe_versions (
    recipe_hash TEXT PRIMARY KEY, collection TEXT NOT NULL, canonical TEXT NOT NULL,
    files TEXT NOT NULL, first_build INTEGER NOT NULL
) WITHOUT ROWID;
-- What each build used: per collection, its recipe version and file texts.
CREATE TABLE IF NOT EXISTS build_recipes (
    build INTEGER NOT NULL, collection TEXT NOT NULL, recipe_hash TEXT NOT NULL,
    file TEXT NOT NULL, files TEXT NOT NULL, PRIMARY KEY (build, collection)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS build_recipes_by_hash ON build_recipes(recipe_hash);
-- The failures a build reported (its summary), kept with the build.
CREATE TABLE IF NOT EXISTS build_failures (
    build INTEGER NOT NULL, n INTEGER NOT NULL, input TEXT NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (build, n)
) WITHOUT ROWID;
-- Manifest parts: per output folder, parts of whole inputs; the files of a
-- part are rewritten only when one of its inputs' records changed.
CREATE TABLE IF NOT EXISTS manifest_parts (
    id INTEGER PRIMARY KEY, out_dir INTEGER NOT NULL, rows INTEGER NOT NULL,
    csv_hash BLOB NOT NULL, csv_bytes INTEGER NOT NULL, csv_mtime_ns INTEGER NOT NULL,
    parquet_hash BLOB NOT NULL, parquet_bytes INTEGER NOT NULL, parquet_mtime_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS manifest_parts_by_dir ON manifest_parts(out_dir);
CREATE TABLE IF NOT EXISTS manifest_members (
    out_dir INTEGER NOT NULL, input INTEGER NOT NULL, part INTEGER NOT NULL,
    PRIMARY KEY (out_dir, input)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_members_by_part ON manifest_members(part);
-- (output folder, input) pairs whose records changed since the manifests
-- were written: filled by triggers in the transaction of the change itself.
CREATE TABLE IF NOT EXISTS manifest_dirty (
    out_dir INTEGER NOT NULL, input INTEGER NOT NULL, PRIMARY KEY (out_dir, input)
) WITHOUT ROWID;
-- (Not `INSERT OR IGNORE`: an outer statement's conflict clause, such as an
-- upsert's, overrides a trigger's, so duplicates are skipped by NOT EXISTS.)
CREATE TRIGGER IF NOT EXISTS manifest_output_replaced BEFORE INSERT ON outputs BEGIN
    INSERT INTO manifest_dirty SELECT o.out_dir, o.input FROM outputs o
     WHERE o.out_dir = NEW.out_dir AND o.name = NEW.name AND NOT EXISTS
       (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = o.out_dir AND d.input = o.input);
END;
CREATE TRIGGER IF NOT EXISTS manifest_output_added AFTER INSERT ON outputs BEGIN
    INSERT INTO manifest_dirty SELECT NEW.out_dir, NEW.input WHERE NOT EXISTS
       (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = NEW.out_dir AND d.input = NEW.input);
END;
CREATE TRIGGER IF NOT EXISTS manifest_output_changed
  AFTER UPDATE OF out_dir, name, input, pipeline, source_hash, class, prov, read, size,
                  content_hash, build ON outputs BEGIN
    INSERT INTO manifest_dirty SELECT x.o, x.i
      FROM (SELECT OLD.out_dir AS o, OLD.input AS i UNION SELECT NEW.out_dir, NEW.input) x
     WHERE NOT EXISTS (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = x.o AND d.input = x.i);
END;
CREATE TRIGGER IF NOT EXISTS manifest_output_removed AFTER DELETE ON outputs BEGIN
    INSERT INTO manifest_dirty SELECT OLD.out_dir, OLD.input WHERE NOT EXISTS
       (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = OLD.out_dir AND d.input = OLD.input);
END;
CREATE TRIGGER IF NOT EXISTS manifest_unit_added AFTER INSERT ON units BEGIN
    INSERT INTO manifest_dirty SELECT NEW.out_dir, NEW.input WHERE NOT EXISTS
       (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = NEW.out_dir AND d.input = NEW.input);
END;
CREATE TRIGGER IF NOT EXISTS manifest_unit_changed
  AFTER UPDATE OF out_dir, input, size, pipeline, read, prov, outputs, complete, build
  ON units BEGIN
    INSERT INTO manifest_dirty SELECT x.o, x.i
      FROM (SELECT OLD.out_dir AS o, OLD.input AS i UNION SELECT NEW.out_dir, NEW.input) x
     WHERE NOT EXISTS (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = x.o AND d.input = x.i);
END;
CREATE TRIGGER IF NOT EXISTS manifest_unit_removed AFTER DELETE ON units BEGIN
    INSERT INTO manifest_dirty SELECT OLD.out_dir, OLD.input WHERE NOT EXISTS
       (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = OLD.out_dir AND d.input = OLD.input);
END;
CREATE TRIGGER IF NOT EXISTS manifest_tile_changed
  AFTER UPDATE OF size, content_hash ON tiles BEGIN
    INSERT INTO manifest_dirty SELECT u.out_dir, u.input FROM units u
     WHERE u.id = NEW.unit AND NOT EXISTS
       (SELECT 1 FROM manifest_dirty d WHERE d.out_dir = u.out_dir AND d.input = u.input);
END;
-- ---- end of provenance ----
-- ---- issue 12 part B: Slurm builds (src/store/merging.rs, src/store/submitted.rs) ----
-- How far each worker journal is merged (journal::CURSOR_SCHEMA, the same
-- statement), and the plans submitted as job arrays and not merged yet.
CREATE TABLE IF NOT EXISTS journal_cursors (
    journal TEXT PRIMARY KEY, path TEXT NOT NULL, offset INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS submitted (
    plan TEXT PRIMARY KEY, build INTEGER NOT NULL, job INTEGER, merge_job INTEGER,
    tasks INTEGER NOT NULL, at INTEGER NOT NULL
) WITHOUT ROWID;
-- ---- end of issue 12 part B ----
"#;

/// The exports' tables and triggers (schema 4, `export/`): also the
/// migration step from schema 3, so one text defines them.
pub const EXPORT_SCHEMA: &str = r#"
-- ---- exports (issue 16): training-ready copies under <output>/export/<name>/ ----
-- One row per export: its definition (canonical JSON), the digest of
-- everything its samples' records depend on besides their outputs, and the
-- shard count fixed when it was first built (or resharded); `sizes`: the
-- category sizes a sampling rule last used (JSON).
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, format TEXT NOT NULL,
    declared INTEGER NOT NULL, definition TEXT NOT NULL, digest BLOB NOT NULL,
    shards INTEGER NOT NULL, samples INTEGER NOT NULL, bytes INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, sizes TEXT NOT NULL DEFAULT '{}'
);
-- Its samples: where each lies (an output row id, or a tile as
-- -(unit << 32 | x << 16 | y)), its shard and the digest of what it
-- contributes (its key, bytes and record); `path`: an ImageFolder file.
CREATE TABLE IF NOT EXISTS export_samples (
    export INTEGER NOT NULL, out_dir INTEGER NOT NULL, input INTEGER NOT NULL,
    item INTEGER NOT NULL, shard INTEGER NOT NULL, digest BLOB NOT NULL, path TEXT,
    PRIMARY KEY (export, out_dir, input, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS export_samples_by_shard ON export_samples(export, shard);
-- The files written: shards (`shard` set) and the index and metadata files.
CREATE TABLE IF NOT EXISTS export_files (
    export INTEGER NOT NULL, path TEXT NOT NULL, shard INTEGER, samples INTEGER NOT NULL,
    digest BLOB NOT NULL, hash BLOB NOT NULL, sha256 BLOB NOT NULL, bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, PRIMARY KEY (export, path)
) WITHOUT ROWID;
-- Shards whose samples changed and whose files are not rewritten yet.
CREATE TABLE IF NOT EXISTS export_stale (
    export INTEGER NOT NULL, shard INTEGER NOT NULL, PRIMARY KEY (export, shard)
) WITHOUT ROWID;
-- (export, output folder, input) whose records changed since the export
-- last looked: filled by triggers in the transaction of the change, for
-- every export, as manifest_dirty is for the manifests.
CREATE TABLE IF NOT EXISTS export_dirty (
    export INTEGER NOT NULL, out_dir INTEGER NOT NULL, input INTEGER NOT NULL,
    PRIMARY KEY (export, out_dir, input)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS export_output_replaced BEFORE INSERT ON outputs BEGIN
    INSERT INTO export_dirty SELECT e.id, o.out_dir, o.input FROM exports e, outputs o
     WHERE o.out_dir = NEW.out_dir AND o.name = NEW.name AND NOT EXISTS
       (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = o.out_dir AND d.input = o.input);
END;
CREATE TRIGGER IF NOT EXISTS export_output_added AFTER INSERT ON outputs BEGIN
    INSERT INTO export_dirty SELECT e.id, NEW.out_dir, NEW.input FROM exports e WHERE NOT EXISTS
       (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = NEW.out_dir AND d.input = NEW.input);
END;
CREATE TRIGGER IF NOT EXISTS export_output_changed
  AFTER UPDATE OF out_dir, name, input, pipeline, source_hash, class, prov, read, size,
                  content_hash ON outputs BEGIN
    INSERT INTO export_dirty SELECT e.id, x.o, x.i
      FROM exports e, (SELECT OLD.out_dir AS o, OLD.input AS i UNION SELECT NEW.out_dir, NEW.input) x
     WHERE NOT EXISTS (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = x.o AND d.input = x.i);
END;
CREATE TRIGGER IF NOT EXISTS export_output_removed AFTER DELETE ON outputs BEGIN
    INSERT INTO export_dirty SELECT e.id, OLD.out_dir, OLD.input FROM exports e WHERE NOT EXISTS
       (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = OLD.out_dir AND d.input = OLD.input);
END;
CREATE TRIGGER IF NOT EXISTS export_unit_added AFTER INSERT ON units BEGIN
    INSERT INTO export_dirty SELECT e.id, NEW.out_dir, NEW.input FROM exports e WHERE NOT EXISTS
       (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = NEW.out_dir AND d.input = NEW.input);
END;
CREATE TRIGGER IF NOT EXISTS export_unit_changed
  AFTER UPDATE OF out_dir, input, size, pipeline, read, prov, outputs, complete, build
  ON units BEGIN
    INSERT INTO export_dirty SELECT e.id, x.o, x.i
      FROM exports e, (SELECT OLD.out_dir AS o, OLD.input AS i UNION SELECT NEW.out_dir, NEW.input) x
     WHERE NOT EXISTS (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = x.o AND d.input = x.i);
END;
CREATE TRIGGER IF NOT EXISTS export_unit_removed AFTER DELETE ON units BEGIN
    INSERT INTO export_dirty SELECT e.id, OLD.out_dir, OLD.input FROM exports e WHERE NOT EXISTS
       (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = OLD.out_dir AND d.input = OLD.input);
END;
CREATE TRIGGER IF NOT EXISTS export_tile_changed
  AFTER UPDATE OF size, content_hash ON tiles BEGIN
    INSERT INTO export_dirty SELECT e.id, u.out_dir, u.input FROM exports e, units u
     WHERE u.id = NEW.unit AND NOT EXISTS
       (SELECT 1 FROM export_dirty d WHERE d.export = e.id AND d.out_dir = u.out_dir AND d.input = u.input);
END;
-- ---- end of exports ----
"#;
