//! Tests of the state database: events round-trip and are idempotent, the
//! stat index invalidates inputs only on new bytes, the views give the flat
//! records, and errors name the file and the remedy.

use super::*;

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const H3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn open() -> (tempfile::TempDir, State) {
    let dir = tempfile::tempdir().unwrap();
    let st = State::open(&dir.path().join("s.sqlite")).unwrap();
    (dir, st)
}

/// A collection `C` with one input `a/x.png` (hash H1); returns its id.
fn one_input(st: &mut State) -> i64 {
    let c = st.collection_id("C").unwrap();
    let d = st.src_dir_id("R", "a").unwrap();
    let stat = FileStat {
        dev: 1,
        ino: 2,
        size: 3,
        mtime_ns: 4,
        ctime_ns: 5,
    };
    st.record_files(c, &[(d, "x.png", stat, H1)]).unwrap()[0].1
}

fn maker() -> Maker {
    Maker {
        recipe_hash: "r1".into(),
        tool_version: "cpia test".into(),
        libraries: "libjpeg-turbo 3.1.0, png 0.18.1".into(),
    }
}

fn file(hash: &str) -> WrittenFile {
    WrittenFile {
        ino: 7,
        size: 10,
        mtime_ns: 11,
        content_hash: hash.into(),
    }
}

fn output(input: i64, name: &str) -> OutputRecord {
    OutputRecord {
        input,
        dir: "M/C".into(),
        name: name.into(),
        sink: "encode".into(),
        pipeline_hash: "p1".into(),
        source_hash: H1.into(),
        class: Some("tumour".into()),
        maker: maker(),
        read: None,
        file: file(H2),
        built_at: 5,
        build: 1,
    }
}

fn unit(input: i64, tiles: &[(u32, u32)], removed: &[(u32, u32)]) -> UnitRecord {
    UnitRecord {
        input,
        sink: "write_M".into(),
        cell: (1, 2),
        dir: "M/C-384".into(),
        size: 384,
        pipeline_hash: "p2".into(),
        read: ReadFacts {
            source_hash: H1.into(),
            read_size: 3840,
            mpp: 0.25,
            mpp_origin: "openslide".into(),
            reader: "direct".into(),
        },
        encoding: "crop".into(),
        maker: maker(),
        kept: Some(true),
        complete: true,
        tiles: tiles
            .iter()
            .map(|&(x, y)| TileRecord {
                x,
                y,
                file: file(H3),
            })
            .collect(),
        removed_tiles: removed.to_vec(),
        built_at: 6,
        build: 1,
    }
}

#[test]
fn outputs_round_trip_and_replaying_a_batch_changes_nothing() {
    let (_d, mut st) = open();
    let input = one_input(&mut st);
    let batch = vec![
        Event::Output(Box::new(output(input, "a.jpg"))),
        Event::Output(Box::new(output(input, "b.jpg"))),
    ];
    st.record(&batch).unwrap();
    st.record(&batch).unwrap();
    let rows = st.outputs_of_input(input).unwrap();
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!(
        (a.path().as_str(), a.class.as_deref(), &a.maker, &a.file),
        ("M/C/a.jpg", Some("tumour"), &maker(), &file(H2))
    );
    assert_eq!(a.source_hash, H1);
    st.record(&[Event::OutputRemoved { id: a.id }]).unwrap();
    st.record(&[Event::OutputRemoved { id: a.id }]).unwrap();
    assert_eq!(st.outputs_of_input(input).unwrap().len(), 1);
    assert!(st.output_at("M/C", "b.jpg").unwrap().is_some());
    assert!(st.output_at("M/C", "a.jpg").unwrap().is_none());
}

#[test]
fn units_keep_their_tile_count_and_lose_only_removed_tiles() {
    let (_d, mut st) = open();
    let input = one_input(&mut st);
    st.record(&[Event::Unit(Box::new(unit(
        input,
        &[(10, 20), (11, 20)],
        &[],
    )))])
    .unwrap();
    let u = st.unit(input, "write_M", (1, 2)).unwrap().unwrap();
    assert_eq!((u.outputs, u.kept, u.complete), (2, Some(true), true));
    assert_eq!(u.read.reader, "direct");
    assert_eq!(u.encoding, "crop");
    // Rebuilt: (11,20) no longer written, (12,20) new; replayed twice.
    let again = Event::Unit(Box::new(unit(input, &[(10, 20), (12, 20)], &[(11, 20)])));
    st.record(&[again.clone(), again]).unwrap();
    let tiles: Vec<(u32, u32)> = st
        .tiles_of_unit(u.id)
        .unwrap()
        .iter()
        .map(|t| (t.x, t.y))
        .collect();
    assert_eq!(tiles, [(10, 20), (12, 20)]);
    assert_eq!(
        st.unit(input, "write_M", (1, 2)).unwrap().unwrap().outputs,
        2
    );
    st.record(&[Event::TileRemoved {
        unit: u.id,
        x: 10,
        y: 20,
    }])
    .unwrap();
    assert_eq!(
        st.unit(input, "write_M", (1, 2)).unwrap().unwrap().outputs,
        1
    );
    assert!(st.decisions(input).unwrap()[&(1, 2)]);
    st.record(&[Event::UnitRemoved { id: u.id }]).unwrap();
    assert!(st.units_of_input(input).unwrap().is_empty());
    assert!(st.tiles_of_unit(u.id).unwrap().is_empty());
}

#[test]
fn inputs_are_complete_until_their_bytes_change_or_they_fail() {
    let (_d, mut st) = open();
    let input = one_input(&mut st);
    let c = st.collection_id("C").unwrap();
    let d = st.src_dir_id("R", "a").unwrap();
    let fp = st.fingerprint_id(H3).unwrap();
    st.record(&[
        Event::Output(Box::new(output(input, "a.jpg"))),
        Event::InputComplete { id: input, fp },
    ])
    .unwrap();
    let rec = |st: &State| st.files_in(d, c).unwrap()[0].input.unwrap();
    assert_eq!((rec(&st).fp, rec(&st).outputs), (Some(fp), 1));
    // Touched: new stat, same bytes → still complete.
    let touched = FileStat {
        dev: 1,
        ino: 2,
        size: 3,
        mtime_ns: 99,
        ctime_ns: 100,
    };
    st.record_files(c, &[(d, "x.png", touched, H1)]).unwrap();
    assert_eq!(rec(&st).fp, Some(fp));
    // New bytes → incomplete.
    st.record_files(c, &[(d, "x.png", touched, H2)]).unwrap();
    assert_eq!(rec(&st).fp, None);
    st.record(&[Event::InputComplete { id: input, fp }])
        .unwrap();
    // A failure of one cell → incomplete; a success of another cell keeps
    // the first cell's failure.
    st.record(&[Event::Failed(FailureRecord {
        input,
        unit: "1,2".into(),
        source_hash: Some(H2.into()),
        error: "boom".into(),
        at: 1,
    })])
    .unwrap();
    assert_eq!(rec(&st).fp, None);
    st.record(&[Event::Succeeded {
        input,
        unit: "3,4".into(),
    }])
    .unwrap();
    assert_eq!(st.failures_of(input).unwrap().len(), 1);
    st.record(&[Event::Succeeded {
        input,
        unit: "1,2".into(),
    }])
    .unwrap();
    assert!(st.failures_of(input).unwrap().is_empty());
}

#[test]
fn removing_an_input_removes_its_rows_and_pruning_its_stat_and_slide() {
    let (_d, mut st) = open();
    let input = one_input(&mut st);
    st.put_slide_meta(H1, "{}").unwrap();
    st.record(&[
        Event::Output(Box::new(output(input, "a.jpg"))),
        Event::Unit(Box::new(unit(input, &[(1, 1)], &[]))),
    ])
    .unwrap();
    st.record(&[Event::InputRemoved { id: input }]).unwrap();
    assert!(st.outputs_of_input(input).unwrap().is_empty());
    assert!(st.units_of_input(input).unwrap().is_empty());
    st.prune_unused().unwrap();
    assert!(st.src_dirs_of_root("R").unwrap().is_empty());
    assert!(st.slide_meta(H1).unwrap().is_none());
}

#[test]
fn the_views_give_the_flat_records() {
    let (_d, mut st) = open();
    let input = one_input(&mut st);
    st.pipeline_id("p1", "{}").unwrap();
    st.record(&[
        Event::Output(Box::new(output(input, "a.jpg"))),
        Event::Unit(Box::new(unit(input, &[(10, 20)], &[]))),
    ])
    .unwrap();
    let rows: Vec<(String, String, String, String, String)> = st
        .rows(
            "SELECT path, source_rel, scale, sub_dataset, unit FROM output_records ORDER BY path",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            "test",
        )
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                "M/C-384/x-384-10-20.jpg".into(),
                "a/x.png".into(),
                "M".into(),
                "C-384".into(),
                "1,2".into()
            ),
            (
                "M/C/a.jpg".into(),
                "a/x.png".into(),
                "M".into(),
                "C".into(),
                "".into()
            ),
        ]
    );
    let (mpp, origin): (f64, String) = st
        .conn
        .query_row("SELECT mpp, mpp_origin FROM unit_records", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((mpp, origin.as_str()), (0.25, "openslide"));
}

#[test]
fn a_damaged_database_is_an_error_naming_it_and_the_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let e = State::open(&path)
        .err()
        .expect("garbage opened as a database");
    let msg = e.to_string();
    assert!(e.is_corrupt(), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("cpia verify --state") && msg.contains("mv "),
        "{msg}"
    );
}

#[test]
fn a_fresh_state_knows_it_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    assert!(State::open(&path).unwrap().is_new());
    assert!(!State::open(&path).unwrap().is_new());
    assert!(State::open(&path)
        .unwrap()
        .integrity_check()
        .unwrap()
        .is_empty());
}

/// Sets a state's schema version by hand, as another cpia would have.
fn stamp_version(path: &std::path::Path, v: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update(None, "user_version", v).unwrap();
}

fn output_rows(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("SELECT count(*) FROM collections", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_state_of_a_newer_cpia_is_refused_unchanged_by_every_kind_of_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        let mut s = State::open(&path).unwrap();
        s.collection_id("kept").unwrap();
    }
    let newer = crate::store::schema::SCHEMA_VERSION + 1;
    stamp_version(&path, newer);
    let e = State::open(&path)
        .err()
        .expect("a newer state was opened for writing");
    assert!(e.is_newer(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("schema {newer}")), "{msg}");
    assert!(
        msg.contains(&format!("schema {}", crate::store::schema::SCHEMA_VERSION)),
        "{msg}"
    );
    let e = State::open_read_only(&path)
        .err()
        .expect("a newer state was opened for reading");
    assert!(e.is_newer(), "{e}");
    assert_eq!(output_rows(&path), 1, "the newer state lost its rows");
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, newer);
}

#[test]
fn a_schema_3_state_is_migrated_with_its_units_encoded_from_pixels() {
    // A state exactly as schema 3 made it (the frozen schema-3 text).
    let v3 = include_str!("testdata/schema-v3.sql");
    assert!(!v3.contains("encoding"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(v3).unwrap();
        c.execute_batch(
            "INSERT INTO units (input, sink, i, j, out_dir, size, pipeline, read, prov, outputs,
                kept, complete, built_at, build) VALUES (1, 'write_M', 2, 3, 1, 384, 1, 1, 1, 7,
                1, 1, 100, 1);
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let s = State::open(&path).unwrap();
    assert_eq!(s.opened(), &crate::store::Opened::Migrated { from: 3 });
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let (outputs, encoding): (i64, String) = c
        .query_row("SELECT outputs, encoding FROM units", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (outputs, encoding.as_str()),
        (7, "pixels"),
        "the unit was not carried over"
    );
    // The view has the column (its joins find no row for this bare unit).
    c.prepare("SELECT encoding FROM unit_records").unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, crate::store::schema::SCHEMA_VERSION);
}

#[test]
fn a_state_too_old_to_migrate_is_set_aside_not_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        let mut s = State::open(&path).unwrap();
        s.collection_id("old").unwrap();
    }
    stamp_version(&path, 2);
    // Read-only commands neither migrate nor set aside.
    let e = State::open_read_only(&path)
        .err()
        .expect("opened an old state");
    assert!(e.to_string().contains("schema 2"), "{e}");
    assert_eq!(output_rows(&path), 1);
    let s = State::open(&path).unwrap();
    let backup = match s.opened() {
        crate::store::Opened::SetAside { from: 2, backup } => backup.clone(),
        other => panic!("{other:?}"),
    };
    assert!(s.is_new());
    assert_eq!(backup, dir.path().join("state.sqlite.schema-2.bak"));
    assert_eq!(output_rows(&backup), 1, "the backup lost the old rows");
    assert_eq!(s.collections().unwrap().len(), 0);
}

#[test]
fn read_only_open_never_creates_a_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    assert!(State::open_read_only(&path).unwrap().is_none());
    assert!(!path.exists());
    State::open(&path).unwrap();
    let s = State::open_read_only(&path)
        .unwrap()
        .expect("an existing state");
    assert!(!s.is_new());
}

#[test]
fn a_foreign_sqlite_database_is_not_taken_for_an_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE mine (x); INSERT INTO mine VALUES (1);")
            .unwrap();
    }
    let e = State::open(&path)
        .err()
        .expect("a foreign database was used");
    assert!(e.to_string().contains("not a cpia build state"), "{e}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the foreign database was changed");
}

#[test]
fn an_older_state_gains_the_exports_tables_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        // A state as schema 3 made it: no export objects.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("testdata/schema-v3.sql"))
            .unwrap();
        c.execute("INSERT INTO collections (name) VALUES ('old')", [])
            .unwrap();
        c.pragma_update(None, "user_version", 3).unwrap();
    }
    let e = State::open_read_only(&path)
        .err()
        .expect("a read-only open migrated");
    assert!(e.to_string().contains("schema 3"), "{e}");
    let s = State::open(&path).unwrap();
    assert_eq!(s.opened(), &crate::store::Opened::Migrated { from: 3 });
    assert_eq!(s.collections().unwrap().len(), 1, "the migration lost rows");
    let objects: i64 = s
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'export%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // 5 tables, 1 index, 8 triggers.
    assert_eq!(objects, 14);
}

#[test]
fn a_state_of_schema_3_is_migrated_with_every_row_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("testdata/schema-v3.sql"))
            .unwrap();
        c.execute_batch(&format!(
            "INSERT INTO collections VALUES (1, 'C');
             INSERT INTO src_dirs VALUES (1, 'R', 'a');
             INSERT INTO files (src_dir, name, id, dev, ino, size, mtime_ns, hash)
                  VALUES (1, 'x.png', 1, 1, 2, 3, 4, X'{H1}');
             INSERT INTO fingerprints VALUES (1, X'{H3}');
             INSERT INTO inputs (id, collection, file, fp, outputs) VALUES (1, 1, 1, 1, 1);
             INSERT INTO pipelines VALUES (1, 'p1', '{{}}');
             INSERT INTO provenance VALUES (1, 'r1', 'cpia 0.1.0');
             INSERT INTO out_dirs (id, path) VALUES (1, 'M/C');
             INSERT INTO outputs (id, out_dir, name, input, sink, pipeline, source_hash, class,
                                  prov, read, ino, size, mtime_ns, content_hash, built_at, build)
                  VALUES (1, 1, 'x.jpg', 1, 'encode', 1, X'{H1}', NULL, 1, NULL, 7, 10, 11,
                          X'{H2}', 5, 1);"
        ))
        .unwrap();
        c.pragma_update(None, "user_version", 3).unwrap();
    }
    let mut s = State::open(&path).unwrap();
    assert_eq!(s.opened(), &Opened::Migrated { from: 3 });
    // The stat index entry is kept, but vouches for nothing: the file is
    // hashed again (its ctime was never recorded).
    let d = s.src_dir_id("R", "a").unwrap();
    let files = s.files_in(d, 1).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].hash, H1);
    assert_eq!(files[0].stat.ctime_ns, UNKNOWN_CTIME);
    assert_eq!(files[0].input.unwrap().fp, Some(1), "completeness kept");
    // The output keeps its provenance; its libraries are not known.
    let outs = s.outputs_of_input(1).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(
        (
            outs[0].maker.recipe_hash.as_str(),
            outs[0].maker.libraries.as_str()
        ),
        ("r1", "")
    );
    // New records name their libraries; the old one is unchanged.
    s.record(&[Event::Output(Box::new(output(1, "y.jpg")))])
        .unwrap();
    let outs = s.outputs_of_input(1).unwrap();
    let libs = |name: &str| {
        outs.iter()
            .find(|o| o.name == name)
            .unwrap()
            .maker
            .libraries
            .clone()
    };
    assert_eq!(libs("x.jpg"), "");
    assert_eq!(libs("y.jpg"), maker().libraries);
    drop(s);
    // The views were made again, with the new column.
    let s = State::open_read_only(&path).unwrap().unwrap();
    assert!(s.integrity_check().unwrap().is_empty());
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(String, Option<String>)> = c
        .prepare("SELECT path, libraries FROM output_records ORDER BY path")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            ("M/C/x.jpg".to_string(), None),
            ("M/C/y.jpg".to_string(), Some(maker().libraries))
        ]
    );
}
