//! Parquet files, written row by row with bounded memory: the manifests in
//! the dataset and the exports' image shards. A leaf that every layer may use.
//!
//! A [`Writer`] takes rows of [`Value`]s for a fixed list of [`Column`]s,
//! buffers them column by column, and writes a row group once it holds
//! [`Options::row_group_rows`] rows or [`Options::row_group_bytes`] bytes of
//! values, whichever comes first: memory is one row group, whatever the
//! file's size. Every column is optional (nullable, as Arrow and
//! `datasets` expect). What the file holds:
//!
//! | column kind | Parquet | read by pyarrow as | encoding |
//! |---|---|---|---|
//! | [`Kind::Int`] | INT64 | `int64` | dictionary, statistics |
//! | [`Kind::Float`] | DOUBLE | `double` | dictionary, statistics |
//! | [`Kind::Bool`] | BOOLEAN | `bool` | statistics |
//! | [`Kind::Str`] | BYTE_ARRAY (STRING) | `string` | dictionary, statistics (64-byte bounds) |
//! | [`Kind::Binary`] | BYTE_ARRAY | `binary` | plain, no statistics |
//! | [`Kind::Image`] | group `{bytes: BYTE_ARRAY, path: BYTE_ARRAY (STRING)}` | `struct<bytes: binary, path: string>` | `bytes` plain, no statistics; `path` as a string |
//!
//! Pages are zstd-compressed ([`Options::zstd_level`]), the pictures' too:
//! on the demo's 971 real tiles zstd (level 3) stores the `bytes` column in
//! 46.8 MB against 49.7 MB uncompressed (5.7 % smaller; the bench's
//! synthetic JPEGs gain nothing, which once led to storing them plain). A dictionary that
//! outgrows its page limit (1 MiB) falls back to plain, so unique strings
//! (hashes, paths) cost what they are. Blobs get no statistics, since a
//! statistic of a JPEG would copy it into the footer. The footer carries
//! Hugging Face `datasets`' feature list (key `huggingface`), so
//! `datasets.load_dataset("parquet", data_files=…)` types every column, and
//! decodes an [`Kind::Image`] column through its `Image` feature (whose Arrow
//! type is exactly that struct).
//!
//! ```
//! use cpia::parquet_file::{Column, Kind, Options, Value, Writer};
//!
//! let columns = [
//!     Column::new("image", Kind::Image),
//!     Column::new("scale", Kind::Str),
//!     Column::new("bytes", Kind::Int),
//! ];
//! let mut shard = Vec::new(); // any `Write + Send`: a file being written
//! let mut w = Writer::new(&mut shard, &columns, &Options::images())?;
//! let jpeg: &[u8] = b"\xff\xd8...";
//! w.push(&[
//!     Value::Image { bytes: jpeg, path: Some("M/BreaKHis_100x/a.jpg") },
//!     Value::Str("M"),
//!     Value::Int(jpeg.len() as i64),
//! ])?;
//! w.push(&[Value::Null, Value::Null, Value::Null])?;
//! assert_eq!(w.rows(), 2);
//! w.finish()?;
//! assert_eq!(&shard[..4], b"PAR1");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! **Why the `parquet` crate, without its `arrow` feature.** The manifests
//! used to come from a hand-written writer (one uncompressed PLAIN page per
//! column, no dictionary, no statistics): 653 bytes per row on a real build,
//! 6× what pyarrow writes. The low-level writer of the `parquet` crate
//! (`SerializedFileWriter`, columns written with definition levels) is all a
//! row-at-a-time writer needs; Arrow arrays would be one more copy of each
//! row group. Measured on the 2-core development machine (CPU time, user +
//! sys, of a clean release build of a crate that depends on `parquet` alone;
//! wall time meant little there, other builds ran): `zstd` only, 112 s;
//! `zstd` + `arrow`, 370 s (3.3×: seven `arrow-*` crates, and the crate's own
//! Arrow reader and writer). Rebuilding a crate that holds this module after
//! an edit costs the same either way (6.3–6.8 CPU-s for the module and its
//! generic instances): the dependency is compiled once. zstd-sys turns on
//! `cc`'s `parallel` feature, so the C dependencies (SQLite, libjpeg-turbo,
//! mimalloc) build once more after the change, not at each rebuild. Sizes
//! against pyarrow: `cargo bench --bench provenance -- bytes`.
//!
//! **Why 58.4, not 59 or later.** From 59 the crate writes the column order
//! `IEEE_754_TOTAL_ORDER` for floats (PARQUET-2249, new in the format):
//! pyarrow 26 then ignores every float statistic, and polars 1.x refuses the
//! whole file (polars issue 27893). 58.4 writes the type-defined order that
//! every reader knows (tests/parquet_file.rs checks float statistics through
//! pyarrow). The build measurements above were taken with 60.2.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical, ZstdLevel};
use parquet::column::writer::ColumnWriterImpl;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, Type, TypePtr};

/// What a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit signed integers.
    Int,
    /// 64-bit floats.
    Float,
    Bool,
    /// UTF-8 text, dictionary-encoded.
    Str,
    /// Bytes (no dictionary, no statistics).
    Binary,
    /// A picture as Hugging Face `datasets` stores one: a struct of its
    /// encoded `bytes` and an optional `path`.
    Image,
}

/// A named column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

impl Column {
    /// A column `name` of `kind`.
    pub fn new(name: &str, kind: Kind) -> Column {
        Column {
            name: name.to_string(),
            kind,
        }
    }
}

/// One cell of a row; [`Value::Null`] fits every column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    Binary(&'a [u8]),
    Image {
        bytes: &'a [u8],
        path: Option<&'a str>,
    },
}

/// How a file is cut and compressed.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// A row group is written once it holds this many rows…
    pub row_group_rows: usize,
    /// …or this many bytes of buffered values, whichever comes first (the
    /// writer's memory).
    pub row_group_bytes: usize,
    /// zstd level of every page (1–22).
    pub zstd_level: i32,
    /// More key-value pairs for the footer.
    pub metadata: Vec<(String, String)>,
}

impl Default for Options {
    /// Tables (manifests): large row groups, for dictionaries and compression.
    fn default() -> Options {
        Options {
            row_group_rows: 128 * 1024,
            row_group_bytes: 32 << 20,
            zstd_level: 3,
            metadata: Vec::new(),
        }
    }
}

impl Options {
    /// Image shards: row groups of 100 pictures (as `datasets` writes image
    /// datasets, so a streaming reader holds little), at most 64 MiB.
    pub fn images() -> Options {
        Options {
            row_group_rows: 100,
            row_group_bytes: 64 << 20,
            ..Options::default()
        }
    }
}

/// A leaf column's buffered values of the current row group.
enum Values {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    /// Concatenated values and the end offset of each.
    Bytes {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
}

/// A leaf column (an [`Kind::Image`] has two): values and definition levels.
struct Leaf {
    values: Values,
    defs: Vec<i16>,
    /// The definition level of a present value (2 inside an image's struct).
    max_def: i16,
    /// Pictures or other blobs: written a page at a time ([`write_paged`]).
    blob: bool,
}

impl Leaf {
    fn new(kind: Kind, max_def: i16) -> Leaf {
        let values = match kind {
            Kind::Int => Values::Int(Vec::new()),
            Kind::Float => Values::Float(Vec::new()),
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Str | Kind::Binary | Kind::Image => Values::Bytes {
                data: Vec::new(),
                ends: Vec::new(),
            },
        };
        Leaf {
            values,
            defs: Vec::new(),
            max_def,
            blob: matches!(kind, Kind::Binary | Kind::Image),
        }
    }

    /// Appends `b` at definition level `def`; returns the bytes buffered.
    fn push_bytes(&mut self, b: &[u8], def: i16) -> usize {
        if let Values::Bytes { data, ends } = &mut self.values {
            data.extend_from_slice(b);
            ends.push(data.len());
        }
        self.defs.push(def);
        b.len() + 8
    }
}

/// Writes one Parquet file, a row at a time (module doc).
pub struct Writer<W: Write + Send> {
    file: SerializedFileWriter<W>,
    columns: Vec<Column>,
    /// Leaf columns in schema order; `first_leaf[i]` is column `i`'s first.
    leaves: Vec<Leaf>,
    first_leaf: Vec<usize>,
    options: Options,
    buffered_rows: usize,
    buffered_bytes: usize,
    rows: u64,
}

impl<W: Write + Send> Writer<W> {
    /// Starts a file of `columns` (distinct, non-empty names) on `sink`.
    pub fn new(sink: W, columns: &[Column], options: &Options) -> io::Result<Writer<W>> {
        check_columns(columns)?;
        let schema = schema(columns)?;
        let props = properties(columns, options)?;
        let file = SerializedFileWriter::new(sink, schema, Arc::new(props)).map_err(error)?;
        let mut leaves = Vec::new();
        let mut first_leaf = Vec::new();
        for c in columns {
            first_leaf.push(leaves.len());
            if c.kind == Kind::Image {
                leaves.push(Leaf::new(Kind::Image, 2));
                leaves.push(Leaf::new(Kind::Str, 2));
            } else {
                leaves.push(Leaf::new(c.kind, 1));
            }
        }
        Ok(Writer {
            file,
            columns: columns.to_vec(),
            leaves,
            first_leaf,
            options: options.clone(),
            buffered_rows: 0,
            buffered_bytes: 0,
            rows: 0,
        })
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a row: one value per column, in order, each of its column's
    /// kind or [`Value::Null`]. A row that does not fit is refused whole.
    pub fn push(&mut self, row: &[Value<'_>]) -> io::Result<()> {
        if row.len() != self.columns.len() {
            return Err(invalid(format!(
                "a row of {} values for {} columns",
                row.len(),
                self.columns.len()
            )));
        }
        for (c, v) in self.columns.iter().zip(row) {
            if !fits(c.kind, v) {
                return Err(invalid(format!(
                    "column `{}` holds {:?} values, not {v:?}",
                    c.name, c.kind
                )));
            }
        }
        for (i, v) in row.iter().enumerate() {
            self.buffered_bytes += self.append(i, v);
        }
        self.buffered_rows += 1;
        self.rows += 1;
        if self.buffered_rows >= self.options.row_group_rows
            || self.buffered_bytes >= self.options.row_group_bytes
        {
            self.write_row_group()?;
        }
        Ok(())
    }

    /// Buffers value `v` of column `i` (already checked); returns its bytes.
    fn append(&mut self, i: usize, v: &Value<'_>) -> usize {
        let first = self.first_leaf[i];
        let leaf = &mut self.leaves[first];
        match (v, &mut leaf.values) {
            (Value::Null, _) => {
                leaf.defs.push(0);
                if self.columns[i].kind == Kind::Image {
                    self.leaves[first + 1].defs.push(0);
                }
                1
            }
            (Value::Int(x), Values::Int(out)) => {
                out.push(*x);
                leaf.defs.push(1);
                8
            }
            (Value::Float(x), Values::Float(out)) => {
                out.push(*x);
                leaf.defs.push(1);
                8
            }
            (Value::Bool(x), Values::Bool(out)) => {
                out.push(*x);
                leaf.defs.push(1);
                1
            }
            (Value::Str(s), _) => leaf.push_bytes(s.as_bytes(), 1),
            (Value::Binary(b), _) => leaf.push_bytes(b, 1),
            (Value::Image { bytes, path }, _) => {
                let n = leaf.push_bytes(bytes, 2);
                let path_leaf = &mut self.leaves[first + 1];
                n + match path {
                    Some(p) => path_leaf.push_bytes(p.as_bytes(), 2),
                    None => {
                        path_leaf.defs.push(1);
                        1
                    }
                }
            }
            _ => 0, // unreachable: `push` checked the kinds
        }
    }

    /// Writes the buffered rows as one row group, column after column.
    fn write_row_group(&mut self) -> io::Result<()> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let mut group = self.file.next_row_group().map_err(error)?;
        for leaf in &mut self.leaves {
            let Some(mut col) = group.next_column().map_err(error)? else {
                return Err(io::Error::other("the schema has fewer leaf columns"));
            };
            let defs = Some(&leaf.defs[..]);
            match &mut leaf.values {
                Values::Int(v) => col.typed::<Int64Type>().write_batch(v, defs, None),
                Values::Float(v) => col.typed::<DoubleType>().write_batch(v, defs, None),
                Values::Bool(v) => col.typed::<BoolType>().write_batch(v, defs, None),
                Values::Bytes { data, ends } => {
                    // The next row group's buffer, as large as this one's.
                    let taken = std::mem::replace(data, Vec::with_capacity(data.len()));
                    let values = byte_arrays(taken, ends);
                    let col = col.typed::<ByteArrayType>();
                    if leaf.blob {
                        write_paged(col, &values, &leaf.defs, leaf.max_def)
                    } else {
                        col.write_batch(&values, defs, None)
                    }
                }
            }
            .map_err(error)?;
            col.close().map_err(error)?;
            leaf.clear();
        }
        group.close().map_err(error)?;
        self.buffered_rows = 0;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_row_group()?;
        self.file.into_inner().map_err(error)
    }
}

impl Leaf {
    fn clear(&mut self) {
        self.defs.clear();
        match &mut self.values {
            Values::Int(v) => v.clear(),
            Values::Float(v) => v.clear(),
            Values::Bool(v) => v.clear(),
            Values::Bytes { data, ends } => {
                data.clear();
                ends.clear();
            }
        }
    }
}

/// A byte column's page holds about this many bytes of values (the
/// `parquet` crate's page limit).
const PAGE_BYTES: usize = 1 << 20;

/// Writes a byte column's values in runs of about [`PAGE_BYTES`]. The
/// `parquet` crate checks a page's size only between the runs it is handed
/// (of up to 1,024 rows): given a row group of 100 pictures at once it made
/// one 5 MB page of them, growing its buffers by doubling and copying them
/// several times over (a quarter of a Parquet export's CPU in `memmove`).
/// Handed ~1 MiB at a time, each run closes a page of about that size.
fn write_paged(
    col: &mut ColumnWriterImpl<'_, ByteArrayType>,
    values: &[ByteArray],
    defs: &[i16],
    max_def: i16,
) -> parquet::errors::Result<usize> {
    let (mut level_start, mut value_start, mut next, mut bytes) = (0, 0, 0, 0);
    let mut written = 0;
    for (level, &def) in defs.iter().enumerate() {
        if def == max_def {
            bytes += values.get(next).map_or(0, |v| v.len());
            next += 1;
        }
        if bytes >= PAGE_BYTES {
            let run = &values[value_start..next.min(values.len())];
            written += col.write_batch(run, Some(&defs[level_start..=level]), None)?;
            (level_start, value_start, bytes) = (level + 1, next, 0);
        }
    }
    if level_start < defs.len() {
        let run = &values[value_start.min(values.len())..];
        written += col.write_batch(run, Some(&defs[level_start..]), None)?;
    }
    Ok(written)
}

/// The values of a byte column as slices of one buffer (no copy each).
fn byte_arrays(data: Vec<u8>, ends: &[usize]) -> Vec<ByteArray> {
    let data = Bytes::from(data);
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let v = ByteArray::from(data.slice(start..end));
            start = end;
            v
        })
        .collect()
}

/// Whether value `v` may go in a column of `kind`.
fn fits(kind: Kind, v: &Value<'_>) -> bool {
    matches!(
        (kind, v),
        (_, Value::Null)
            | (Kind::Int, Value::Int(_))
            | (Kind::Float, Value::Float(_))
            | (Kind::Bool, Value::Bool(_))
            | (Kind::Str, Value::Str(_))
            | (Kind::Binary, Value::Binary(_))
            | (Kind::Image, Value::Image { .. })
    )
}

fn check_columns(columns: &[Column]) -> io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if c.name.is_empty() || !seen.insert(c.name.as_str()) {
            return Err(invalid(format!(
                "column name `{}` is empty or repeated",
                c.name
            )));
        }
    }
    Ok(())
}

/// The Parquet schema: every column optional.
fn schema(columns: &[Column]) -> io::Result<TypePtr> {
    let leaf = |name: &str, physical: Physical, string: bool| {
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(string.then_some(LogicalType::String))
            .build()
            .map(Arc::new)
    };
    let mut fields = Vec::new();
    for c in columns {
        let field = match c.kind {
            Kind::Int => leaf(&c.name, Physical::INT64, false),
            Kind::Float => leaf(&c.name, Physical::DOUBLE, false),
            Kind::Bool => leaf(&c.name, Physical::BOOLEAN, false),
            Kind::Str => leaf(&c.name, Physical::BYTE_ARRAY, true),
            Kind::Binary => leaf(&c.name, Physical::BYTE_ARRAY, false),
            Kind::Image => Type::group_type_builder(&c.name)
                .with_repetition(Repetition::OPTIONAL)
                .with_fields(vec![
                    leaf("bytes", Physical::BYTE_ARRAY, false).map_err(error)?,
                    leaf("path", Physical::BYTE_ARRAY, true).map_err(error)?,
                ])
                .build()
                .map(Arc::new),
        };
        fields.push(field.map_err(error)?);
    }
    Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .map(Arc::new)
        .map_err(error)
}

/// zstd everywhere; no dictionary and no statistics for blobs; the
/// `datasets` features and the caller's pairs in the footer.
fn properties(columns: &[Column], options: &Options) -> io::Result<WriterProperties> {
    let level = ZstdLevel::try_new(options.zstd_level).map_err(error)?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(None)
        .set_created_by(format!("cpia {} (parquet-rs)", env!("CARGO_PKG_VERSION")));
    for c in columns {
        let blob = match c.kind {
            Kind::Binary => Some(vec![c.name.clone()]),
            Kind::Image => Some(vec![c.name.clone(), "bytes".into()]),
            _ => None,
        };
        if let Some(path) = blob {
            let path = ColumnPath::new(path);
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_statistics_enabled(path, EnabledStatistics::None);
        }
    }
    let mut kv = vec![KeyValue::new("huggingface".into(), hf_features(columns))];
    kv.extend((options.metadata.iter()).map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    Ok(props.set_key_value_metadata(Some(kv)).build())
}

/// The columns as Hugging Face `datasets` features (`{"info": {"features":
/// …}}`, what `datasets` itself writes into a Parquet footer).
fn hf_features(columns: &[Column]) -> String {
    let mut features = serde_json::Map::new();
    for c in columns {
        let value = |dtype: &str| serde_json::json!({"dtype": dtype, "_type": "Value"});
        let f = match c.kind {
            Kind::Int => value("int64"),
            Kind::Float => value("float64"),
            Kind::Bool => value("bool"),
            Kind::Str => value("string"),
            Kind::Binary => value("binary"),
            Kind::Image => serde_json::json!({"_type": "Image"}),
        };
        features.insert(c.name.clone(), f);
    }
    serde_json::json!({"info": {"features": features}}).to_string()
}

fn error(e: parquet::errors::ParquetError) -> io::Error {
    match e {
        parquet::errors::ParquetError::External(e) => match e.downcast::<io::Error>() {
            Ok(e) => *e,
            Err(e) => io::Error::other(e),
        },
        e => io::Error::other(format!("writing Parquet: {e}")),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests;
