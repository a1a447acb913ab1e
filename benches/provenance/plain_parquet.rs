//! The bytes-per-row baseline of `-- bytes`: the hand-written Parquet writer
//! the manifests used before `cpia::parquet_file` (one row group, one
//! uncompressed PLAIN data page per column, no dictionary, no statistics),
//! kept here unchanged so its size and speed are measured side by side with
//! the writer that replaced it. Not used by cpia.
//!
//! Layout (Apache Parquet format 2.x, data page v1): `PAR1`, per column a
//! page header (Thrift compact protocol) and the page — definition levels
//! (RLE, length-prefixed), then the non-null values — then the file
//! metadata (Thrift compact), its length (u32 LE) and `PAR1`.

use cpia::provenance::facts;
use cpia::provenance::manifest::Row;

/// A column's values; `None` is a null.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    Str(Vec<Option<String>>),
    I64(Vec<Option<i64>>),
    F64(Vec<Option<f64>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::F64(v) => v.len(),
        }
    }

    /// Parquet physical type: INT64 = 2, DOUBLE = 5, BYTE_ARRAY = 6.
    fn physical(&self) -> i32 {
        match self {
            Column::Str(_) => 6,
            Column::I64(_) => 2,
            Column::F64(_) => 5,
        }
    }

    fn present(&self) -> Vec<bool> {
        match self {
            Column::Str(v) => v.iter().map(Option::is_some).collect(),
            Column::I64(v) => v.iter().map(Option::is_some).collect(),
            Column::F64(v) => v.iter().map(Option::is_some).collect(),
        }
    }

    /// PLAIN encoding of the non-null values.
    fn plain(&self, out: &mut Vec<u8>) {
        match self {
            Column::Str(v) => {
                for s in v.iter().flatten() {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
            Column::I64(v) => v
                .iter()
                .flatten()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Column::F64(v) => v
                .iter()
                .flatten()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }
}

/// Encodes `columns` (name, values; all of one length) as a Parquet file.
pub fn write(columns: &[(&str, Column)]) -> Vec<u8> {
    let rows = columns.first().map_or(0, |(_, c)| c.len());
    let mut out = b"PAR1".to_vec();
    let mut chunks = Vec::new();
    for (name, col) in columns {
        debug_assert_eq!(col.len(), rows, "column {name}");
        let mut page = Vec::new();
        let levels = rle_levels(&col.present());
        page.extend_from_slice(&(levels.len() as u32).to_le_bytes());
        page.extend_from_slice(&levels);
        col.plain(&mut page);
        let mut header = Thrift::default();
        // PageHeader { 1: type DATA_PAGE, 2: uncompressed, 3: compressed, 5: DataPageHeader }
        header.i32(1, 0);
        header.i32(2, page.len() as i32);
        header.i32(3, page.len() as i32);
        header.begin_struct(5);
        // DataPageHeader { 1: num_values, 2: PLAIN, 3: RLE, 4: RLE }
        header.i32(1, rows as i32);
        header.i32(2, 0);
        header.i32(3, 3);
        header.i32(4, 3);
        header.end_struct();
        header.stop();
        let offset = out.len() as i64;
        out.extend_from_slice(&header.buf);
        out.extend_from_slice(&page);
        let size = out.len() as i64 - offset;
        chunks.push((name, col.physical(), offset, size));
    }
    let mut meta = Thrift::default();
    // FileMetaData { 1: version, 2: schema, 3: num_rows, 4: row_groups, 6: created_by }
    meta.i32(1, 1);
    meta.list_begin(2, 12, columns.len() + 1);
    // The root of the schema: a group with one child per column.
    meta.string(4, "schema");
    meta.i32(5, columns.len() as i32);
    meta.stop_elem();
    for (name, col) in columns {
        // SchemaElement { 1: type, 3: OPTIONAL, 4: name, 6: converted type UTF8 }
        meta.i32(1, col.physical());
        meta.i32(3, 1);
        meta.string(4, name);
        if matches!(col, Column::Str(_)) {
            meta.i32(6, 0);
        }
        meta.stop_elem();
    }
    meta.end_list();
    meta.i64(3, rows as i64);
    meta.list_begin(4, 12, 1);
    // RowGroup { 1: columns, 2: total_byte_size, 3: num_rows }
    meta.list_begin(1, 12, chunks.len());
    let mut total = 0;
    for (name, physical, offset, size) in &chunks {
        total += size;
        // ColumnChunk { 2: file_offset, 3: ColumnMetaData }
        meta.i64(2, *offset);
        meta.begin_struct(3);
        // ColumnMetaData { 1: type, 2: encodings, 3: path, 4: codec, 5: num_values,
        //                  6: uncompressed, 7: compressed, 9: data_page_offset }
        meta.i32(1, *physical);
        meta.list_begin(2, 5, 2);
        meta.zigzag(0);
        meta.zigzag(3);
        meta.end_list();
        meta.list_begin(3, 8, 1);
        meta.bytes(name.as_bytes());
        meta.end_list();
        meta.i32(4, 0);
        meta.i64(5, rows as i64);
        meta.i64(6, *size);
        meta.i64(7, *size);
        meta.i64(9, *offset);
        meta.end_struct();
        meta.stop_elem();
    }
    meta.end_list();
    meta.i64(2, total);
    meta.i64(3, rows as i64);
    meta.stop_elem();
    meta.end_list();
    meta.string(6, "cpia (hand-written writer, parquet format 2)");
    meta.stop();
    out.extend_from_slice(&meta.buf);
    out.extend_from_slice(&(meta.buf.len() as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

/// Definition levels (bit width 1) in the RLE/bit-packed hybrid, as RLE
/// runs: a varint `(run << 1)` then the level in one byte.
fn rle_levels(present: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < present.len() {
        let v = present[i];
        let mut j = i;
        while j < present.len() && present[j] == v {
            j += 1;
        }
        varint(&mut out, ((j - i) as u64) << 1);
        out.push(u8::from(v));
        i = j;
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Thrift compact protocol, the few forms Parquet metadata needs. Field ids
/// are delta-encoded per struct, so nested structs keep a stack of them.
#[derive(Default)]
struct Thrift {
    buf: Vec<u8>,
    last: Vec<i16>,
    current: i16,
}

impl Thrift {
    fn field(&mut self, id: i16, kind: u8) {
        let delta = id - self.current;
        if (1..=15).contains(&delta) {
            self.buf.push(((delta as u8) << 4) | kind);
        } else {
            self.buf.push(kind);
            self.zigzag(i64::from(id));
        }
        self.current = id;
    }
    fn zigzag(&mut self, v: i64) {
        varint(&mut self.buf, ((v << 1) ^ (v >> 63)) as u64);
    }
    fn i32(&mut self, id: i16, v: i32) {
        self.field(id, 5);
        self.zigzag(i64::from(v));
    }
    fn i64(&mut self, id: i16, v: i64) {
        self.field(id, 6);
        self.zigzag(v);
    }
    fn bytes(&mut self, b: &[u8]) {
        varint(&mut self.buf, b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    fn string(&mut self, id: i16, s: &str) {
        self.field(id, 8);
        self.bytes(s.as_bytes());
    }
    fn begin_struct(&mut self, id: i16) {
        self.field(id, 12);
        self.last.push(self.current);
        self.current = 0;
    }
    fn end_struct(&mut self) {
        self.buf.push(0);
        self.current = self.last.pop().unwrap_or(0);
    }
    /// A list field of `n` elements of compact type `kind`; struct elements
    /// each end with [`Thrift::stop_elem`].
    fn list_begin(&mut self, id: i16, kind: u8, n: usize) {
        self.field(id, 9);
        if n < 15 {
            self.buf.push(((n as u8) << 4) | kind);
        } else {
            self.buf.push(0xf0 | kind);
            varint(&mut self.buf, n as u64);
        }
        self.last.push(self.current);
        self.current = 0;
    }
    fn end_list(&mut self) {
        self.current = self.last.pop().unwrap_or(0);
    }
    /// Ends one struct element of a list; the next starts its ids afresh.
    fn stop_elem(&mut self) {
        self.buf.push(0);
        self.current = 0;
    }
    fn stop(&mut self) {
        self.buf.push(0);
    }
}

/// A manifest part as the old writer wrote it (the same columns).
pub fn manifest_file(rows: &[&Row]) -> Vec<u8> {
    let s = |f: &dyn Fn(&Row) -> Option<String>| Column::Str(rows.iter().map(|r| f(r)).collect());
    let i = |f: &dyn Fn(&Row) -> Option<i64>| Column::I64(rows.iter().map(|r| f(r)).collect());
    let d = |f: &dyn Fn(&Row) -> Option<f64>| Column::F64(rows.iter().map(|r| f(r)).collect());
    let region = |k: usize| d(&|r: &Row| r.region.map(|g| g[k]));
    let cols: Vec<(&str, Column)> = vec![
        ("path", s(&|r| Some(r.facts.path()))),
        ("collection", s(&|r| Some(r.facts.collection.clone()))),
        (
            "scale",
            s(&|r| Some(facts::scale_and_sub(&r.facts.dir).0.to_string())),
        ),
        (
            "sub_dataset",
            s(&|r| Some(facts::scale_and_sub(&r.facts.dir).1.to_string())),
        ),
        ("class", s(&|r| r.facts.class.clone())),
        ("blake3", s(&|r| Some(r.facts.file.content_hash.clone()))),
        ("bytes", i(&|r| Some(r.facts.file.size as i64))),
        ("source_root", s(&|r| Some(r.facts.source_root.clone()))),
        ("source_path", s(&|r| Some(r.facts.source_rel.clone()))),
        ("source_blake3", s(&|r| Some(r.facts.source_hash.clone()))),
        ("key", s(&|r| Some(r.key.clone()))),
        ("region_x", region(0)),
        ("region_y", region(1)),
        ("region_w", region(2)),
        ("region_h", region(3)),
        ("level", i(&|r| r.level.map(i64::from))),
        (
            "cell",
            s(&|r| {
                r.facts
                    .tile
                    .as_ref()
                    .map(|t| format!("{},{}", t.cell.0, t.cell.1))
            }),
        ),
        ("mpp", d(&|r| r.facts.read.as_ref().map(|x| x.mpp))),
        (
            "mpp_source",
            s(&|r| r.facts.read.as_ref().map(|x| x.mpp_origin.clone())),
        ),
        (
            "reader",
            s(&|r| r.facts.read.as_ref().map(|x| x.reader.clone())),
        ),
        (
            "recipe_hash",
            s(&|r| Some(r.facts.maker.recipe_hash.clone())),
        ),
        (
            "tool_version",
            s(&|r| Some(r.facts.maker.tool_version.clone())),
        ),
        ("pipeline_hash", s(&|r| Some(r.facts.pipeline_hash.clone()))),
        ("step", s(&|r| Some(r.facts.sink.clone()))),
        ("build", i(&|r| Some(r.facts.build))),
        ("built_at", i(&|r| Some(r.facts.built_at))),
    ];
    write(&cols)
}
