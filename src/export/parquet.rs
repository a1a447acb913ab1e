//! Parquet image shards: `export/<name>/data/<name>-<NNNNNN>.parquet`,
//! written through [`crate::parquet_file`] — what Hugging Face `datasets`
//! (`load_dataset("parquet", data_files=…)`, pictures decoded through its
//! `Image` feature), polars and pyarrow read.
//!
//! One row per sample, in the shard's stable pseudo-random order
//! ([`super::key::rank`]), the same samples and placement as a WebDataset
//! shard ([`super::key`]). The columns ([`COLUMNS`]):
//!
//! | column | value |
//! |---|---|
//! | `image` | struct `{bytes, path}`: the output's bytes **unchanged** (checked against their recorded blake3 as they are read), and its path in the dataset |
//! | `key` | the sample's key |
//! | `record` | the sample's record, the JSON text a WebDataset shard holds as `<key>.json` |
//! | the record's fields | scalars flattened with `_` (`output_path`, `source_blake3`, `recipe_hash`, `wsi_mpp`, `wsi_region_x` …; level-0 regions are
//! float64: fractional on the resize path); `organs` and `diseases` as JSON array text (the writer has no list columns); null where the record has none (ROI images have no `wsi_*`) |
//!
//! zstd, dictionaries for repeated strings, statistics
//! except for the image bytes, row groups of 100 pictures ([`crate::parquet_file::Options::images`]).
//! Nothing in the file depends on when or where it is written (no
//! timestamp): the same samples give the same bytes with the same cpia
//! (the footer's `created_by` names its version).

use std::io::{self, Write};

use serde_json::Value as Json;

use super::webdataset::{for_each_checked, hashed, sums, Member, Read, Sums};
use crate::parquet_file::{Column, Kind, Options, Value, Writer};

/// Bump when the bytes written for the same samples change (columns,
/// options). Not bumped by a new cpia: the footer's `created_by` names the
/// cpia that wrote a shard, and shards are not rewritten for that alone.
pub const VERSION: &str = "2";

/// Where a column's value is in a record: a JSON pointer, and how it is
/// stored.
struct Field {
    column: &'static str,
    pointer: &'static str,
    kind: Kind,
}

const fn f(column: &'static str, pointer: &'static str, kind: Kind) -> Field {
    Field {
        column,
        pointer,
        kind,
    }
}

/// The metadata columns, in order, after `image`, `key` and `record`
/// (docs/export.md lists them).
const FIELDS: [Field; 33] = [
    f("collection", "/collection", Kind::Str),
    f("sub_dataset", "/sub_dataset", Kind::Str),
    f("scale", "/scale", Kind::Str),
    f("class", "/class", Kind::Str),
    f("organs", "/organs", Kind::Str),
    f("diseases", "/diseases", Kind::Str),
    f("stain", "/stain", Kind::Str),
    f("output_path", "/output/path", Kind::Str),
    f("output_blake3", "/output/blake3", Kind::Str),
    f("output_bytes", "/output/bytes", Kind::Int),
    f("output_key", "/output/key", Kind::Str),
    f("source_root", "/source/root", Kind::Str),
    f("source_path", "/source/path", Kind::Str),
    f("source_blake3", "/source/blake3", Kind::Str),
    f("recipe_hash", "/recipe/hash", Kind::Str),
    f("pipeline_hash", "/pipeline_hash", Kind::Str),
    f("sink", "/sink", Kind::Str),
    f("tool_version", "/tool_version", Kind::Str),
    f("wsi_level", "/wsi/level", Kind::Int),
    f("wsi_region_x", "/wsi/region/0", Kind::Float),
    f("wsi_region_y", "/wsi/region/1", Kind::Float),
    f("wsi_region_w", "/wsi/region/2", Kind::Float),
    f("wsi_region_h", "/wsi/region/3", Kind::Float),
    f("wsi_cell_x", "/wsi/cell/0", Kind::Int),
    f("wsi_cell_y", "/wsi/cell/1", Kind::Int),
    f("wsi_tile_x", "/wsi/tile/x", Kind::Int),
    f("wsi_tile_y", "/wsi/tile/y", Kind::Int),
    f("wsi_tile_size", "/wsi/tile/size", Kind::Int),
    f("wsi_mpp", "/wsi/mpp", Kind::Float),
    f("wsi_mpp_source", "/wsi/mpp_source", Kind::Str),
    f("wsi_reader", "/wsi/reader", Kind::Str),
    f("wsi_cell_edge", "/wsi/cell_edge", Kind::Int),
    f("wsi_read_size", "/wsi/read_size", Kind::Int),
];

/// Record fields stored as their JSON text (lists).
const AS_JSON: [&str; 2] = ["organs", "diseases"];

/// The shard's columns.
pub fn columns() -> Vec<Column> {
    let mut c = vec![
        Column::new("image", Kind::Image),
        Column::new("key", Kind::Str),
        Column::new("record", Kind::Str),
    ];
    c.extend(FIELDS.iter().map(|x| Column::new(x.column, x.kind)));
    c
}

/// The value of `pointer` in `record` as a column of `kind` (null when
/// absent, null, or of another type).
fn cell<'a>(record: &'a Json, pointer: &str, kind: Kind, texts: &'a [String]) -> Value<'a> {
    let Some(v) = record.pointer(pointer).filter(|v| !v.is_null()) else {
        return Value::Null;
    };
    let name = pointer.trim_start_matches('/');
    if let Some(i) = AS_JSON.iter().position(|n| *n == name) {
        return Value::Str(&texts[i]);
    }
    match kind {
        Kind::Int => v.as_i64().map_or(Value::Null, Value::Int),
        Kind::Float => v.as_f64().map_or(Value::Null, Value::Float),
        Kind::Str => v.as_str().map_or(Value::Null, Value::Str),
        _ => Value::Null,
    }
}

/// Writes the shard of `members` (already in shard order) to `out`;
/// `read(source, recorded size)` gives an output's bytes. Returns the shard's sums. An
/// output whose bytes do not match its record stops the shard with an
/// error naming it.
pub fn write_shard(
    out: impl Write + Send,
    members: &[Member],
    read: &Read<'_>,
) -> io::Result<Sums> {
    let sink = hashed(out);
    let mut w = Writer::new(sink, &columns(), &Options::images())?;
    for_each_checked(members, read, |m, bytes| {
        let record: Json = serde_json::from_slice(&m.record)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", m.key)))?;
        let texts: Vec<String> = AS_JSON
            .iter()
            .map(|n| record.get(n).map(Json::to_string).unwrap_or_default())
            .collect();
        let text = std::str::from_utf8(&m.record)
            .unwrap_or_default()
            .trim_end();
        let mut row = vec![
            Value::Image {
                bytes: &bytes,
                path: Some(&m.source),
            },
            Value::Str(&m.key),
            Value::Str(text),
        ];
        row.extend(
            FIELDS
                .iter()
                .map(|x| cell(&record, x.pointer, x.kind, &texts)),
        );
        w.push(&row)
    })?;
    sums(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(key: &str, record: &str) -> Member {
        Member {
            key: key.into(),
            rank: 1,
            source: format!("{key}.jpg"),
            blake3: blake3::hash(b"jpeg").to_hex().to_string(),
            bytes: 4,
            record: format!("{record}\n").into_bytes(),
        }
    }

    #[test]
    fn a_shard_is_the_same_bytes_every_time_and_a_parquet_file() {
        let read = |_: &str, _: u64| Ok(b"jpeg".to_vec());
        let members = [
            member(
                "M/sub/a",
                r#"{"collection":"A","organs":["breast","skin"],"output":{"bytes":4},"wsi":{"region":[1,2,3,4],"mpp":0.5}}"#,
            ),
            member("M/sub/b", r#"{"collection":"A","class":null}"#),
        ];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let sa = write_shard(&mut a, &members, &read).unwrap();
        let sb = write_shard(&mut b, &members, &read).unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(sa.bytes as usize, a.len());
        assert_eq!(sa.blake3, blake3::hash(&a).to_hex().as_str());
        assert_eq!(&a[..4], b"PAR1");
        assert_eq!(&a[a.len() - 4..], b"PAR1");
        assert_eq!(columns().len(), 3 + FIELDS.len());
    }

    #[test]
    fn fields_come_from_the_record_and_absent_ones_are_null() {
        let r: Json = serde_json::from_str(
            r#"{"organs":["a"],"wsi":{"region":[1,2,3,4],"mpp":0.5,"level":null},"output":{"bytes":7}}"#,
        )
        .unwrap();
        let texts = vec![r#"["a"]"#.to_string(), String::new()];
        assert_eq!(
            cell(&r, "/wsi/region/2", Kind::Float, &texts),
            Value::Float(3.0)
        );
        assert_eq!(cell(&r, "/wsi/mpp", Kind::Float, &texts), Value::Float(0.5));
        assert_eq!(cell(&r, "/wsi/level", Kind::Int, &texts), Value::Null);
        assert_eq!(cell(&r, "/source/root", Kind::Str, &texts), Value::Null);
        assert_eq!(
            cell(&r, "/organs", Kind::Str, &texts),
            Value::Str(r#"["a"]"#)
        );
        assert_eq!(cell(&r, "/output/bytes", Kind::Int, &texts), Value::Int(7));
    }

    #[test]
    fn bytes_that_are_not_the_recorded_ones_stop_the_shard() {
        let read = |_: &str, _: u64| Ok(b"other".to_vec());
        let e = write_shard(Vec::new(), &[member("M/sub/a", "{}")], &read).unwrap_err();
        assert!(e.to_string().contains("M/sub/a.jpg: its bytes"), "{e}");
    }
}
