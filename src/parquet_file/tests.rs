//! The writer read back by the `parquet` crate's own reader (pyarrow,
//! polars and `datasets` read it in tests/parquet_file.rs).

use super::*;
use parquet::basic::{Compression, Encoding};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

fn columns() -> Vec<Column> {
    vec![
        Column::new("name", Kind::Str),
        Column::new("n", Kind::Int),
        Column::new("x", Kind::Float),
        Column::new("ok", Kind::Bool),
        Column::new("blob", Kind::Binary),
        Column::new("image", Kind::Image),
    ]
}

fn write(rows: &[Vec<Value<'_>>], options: &Options) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &columns(), options).unwrap();
    for r in rows {
        w.push(r).unwrap();
    }
    assert_eq!(w.rows(), rows.len() as u64);
    w.finish().unwrap()
}

fn read(file: Vec<u8>) -> (SerializedFileReader<Bytes>, Vec<Row>) {
    let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
    let rows = reader
        .get_row_iter(None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (reader, rows)
}

fn sample(i: usize) -> Vec<Value<'static>> {
    const NAMES: [&str; 3] = ["M/A", "M/B", "S/C"];
    vec![
        Value::Str(NAMES[i % 3]),
        Value::Int(i as i64 * 1000),
        if i.is_multiple_of(4) {
            Value::Null
        } else {
            Value::Float(i as f64 / 2.0)
        },
        Value::Bool(i.is_multiple_of(2)),
        Value::Binary(b"\x00\x01\xff"),
        match i % 3 {
            0 => Value::Null,
            1 => Value::Image {
                bytes: b"\xff\xd8jpeg",
                path: Some("M/A/x.jpg"),
            },
            _ => Value::Image {
                bytes: b"\xff\xd8other",
                path: None,
            },
        },
    ]
}

#[test]
fn values_and_nulls_round_trip() {
    let rows: Vec<_> = (0..7).map(sample).collect();
    let (_, back) = read(write(&rows, &Options::default()));
    assert_eq!(back.len(), 7);
    let fields = |r: &Row| {
        r.get_column_iter()
            .map(|(_, f)| f.clone())
            .collect::<Vec<_>>()
    };
    let f = fields(&back[1]);
    assert_eq!(f[0], Field::Str("M/B".into()));
    assert_eq!(f[1], Field::Long(1000));
    assert_eq!(f[2], Field::Double(0.5));
    assert_eq!(f[3], Field::Bool(false));
    assert_eq!(f[4], Field::Bytes(vec![0, 1, 255].into()));
    let Field::Group(image) = &f[5] else {
        panic!("image is not a struct: {:?}", f[5]);
    };
    let image = fields(image);
    assert_eq!(image[0], Field::Bytes(b"\xff\xd8jpeg".to_vec().into()));
    assert_eq!(image[1], Field::Str("M/A/x.jpg".into()));
    // A null float, a null image, and an image without a path.
    let f0 = fields(&back[0]);
    assert_eq!((f0[2].clone(), f0[5].clone()), (Field::Null, Field::Null));
    let Field::Group(image) = &fields(&back[2])[5] else {
        panic!("image 2");
    };
    assert_eq!(fields(image)[1], Field::Null);
}

#[test]
fn row_groups_are_cut_by_rows_and_by_bytes() {
    let rows: Vec<_> = (0..25).map(sample).collect();
    let by_rows = Options {
        row_group_rows: 10,
        ..Options::default()
    };
    let (reader, back) = read(write(&rows, &by_rows));
    let sizes: Vec<i64> = (reader.metadata().row_groups().iter())
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(back.len(), 25);
    // Each sample buffers well over 20 bytes, so every row is a group.
    let by_bytes = Options {
        row_group_bytes: 20,
        ..Options::default()
    };
    let (reader, _) = read(write(&rows[..3], &by_bytes));
    assert_eq!(reader.metadata().num_row_groups(), 3);
}

#[test]
fn pages_are_zstd_with_dictionaries_and_statistics_except_blobs() {
    let rows: Vec<_> = (0..100).map(sample).collect();
    let (reader, _) = read(write(&rows, &Options::default()));
    let group = reader.metadata().row_group(0);
    for col in group.columns() {
        let path = col.column_path().string();
        assert!(
            matches!(col.compression(), Compression::ZSTD(_)),
            "{path}: {:?}",
            col.compression()
        );
        let blob = path == "blob" || path == "image.bytes";
        let dict = col.dictionary_page_offset().is_some();
        assert_eq!(dict, !blob && path != "ok", "{path}: dictionary");
        assert_eq!(col.statistics().is_none(), blob, "{path}: statistics");
    }
    let name = group.column(0);
    assert!(name.encodings().any(|e| e == Encoding::RLE_DICTIONARY));
    let stats = name.statistics().unwrap();
    assert_eq!(stats.min_bytes_opt(), Some(&b"M/A"[..]));
    assert_eq!(stats.max_bytes_opt(), Some(&b"S/C"[..]));
}

#[test]
fn the_footer_types_the_columns_for_datasets() {
    let (reader, _) = read(write(&[], &Options::default()));
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let hf = kv.iter().find(|k| k.key == "huggingface").unwrap();
    let v: serde_json::Value = serde_json::from_str(hf.value.as_deref().unwrap()).unwrap();
    let f = &v["info"]["features"];
    assert_eq!(f["image"]["_type"], "Image");
    assert_eq!(f["name"]["dtype"], "string");
    assert_eq!(f["n"]["dtype"], "int64");
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
}

#[test]
fn a_row_that_does_not_fit_is_refused_whole() {
    let mut w = Writer::new(Vec::new(), &columns(), &Options::default()).unwrap();
    let mut bad = sample(1);
    bad[1] = Value::Str("not a number");
    let e = w.push(&bad).unwrap_err();
    assert!(e.to_string().contains("column `n`"), "{e}");
    assert!(w.push(&bad[..2]).is_err());
    w.push(&sample(1)).unwrap();
    let (_, back) = read(w.finish().unwrap());
    assert_eq!(back.len(), 1);
    let repeated = [Column::new("a", Kind::Int), Column::new("a", Kind::Str)];
    assert!(Writer::new(Vec::new(), &repeated, &Options::default()).is_err());
}

#[test]
fn a_failing_sink_reports_its_own_error() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let rows: Vec<_> = (0..3).map(sample).collect();
    let e = (|| {
        let mut w = Writer::new(Full, &columns(), &Options::default())?;
        for r in &rows {
            w.push(r)?;
        }
        w.finish().map(|_| ())
    })()
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
}

#[test]
fn pictures_are_cut_into_pages_of_about_a_mebibyte_and_read_back_whole() {
    // 100 pictures of 100 KiB (with nulls between) in one row group: pages
    // of ~1 MiB (11 pictures each), not one 10 MB page.
    let pictures: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 100 << 10]).collect();
    let cols = [
        Column::new("image", Kind::Image),
        Column::new("k", Kind::Int),
    ];
    let mut w = Writer::new(Vec::new(), &cols, &Options::images()).unwrap();
    for (i, p) in pictures.iter().enumerate() {
        let image = match i % 10 {
            9 => Value::Null,
            _ => Value::Image {
                bytes: p,
                path: Some("M/x.jpg"),
            },
        };
        w.push(&[image, Value::Int(i as i64)]).unwrap();
    }
    let file = w.finish().unwrap();
    let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 1);
    let group = reader.get_row_group(0).unwrap();
    let mut pages = Vec::new();
    for page in group.get_column_page_reader(0).unwrap() {
        let page = page.unwrap();
        if page.page_type() == parquet::basic::PageType::DATA_PAGE {
            pages.push((page.num_values(), page.buffer().len()));
        }
    }
    let values: u32 = pages.iter().map(|p| p.0).sum();
    assert_eq!(values, 100, "every row's level is in a page: {pages:?}");
    assert!(pages.len() >= 8, "about 1 MiB a page: {pages:?}");
    let rows: Vec<Row> = reader
        .get_row_iter(None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let (_, image) = &row.get_column_iter().next().unwrap();
        match (i % 10, image) {
            (9, Field::Null) => {}
            (_, Field::Group(g)) => {
                let (_, bytes) = g.get_column_iter().next().unwrap();
                assert_eq!(
                    bytes,
                    &Field::Bytes(ByteArray::from(pictures[i].clone())),
                    "row {i}"
                );
            }
            (_, other) => panic!("row {i}: {other:?}"),
        }
    }
}
