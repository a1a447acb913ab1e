//! Parquet image shards written by `cpia::parquet_file`, read by the real
//! readers: Hugging Face `datasets` (`load_dataset("parquet", …)`, every
//! picture decoded through its `Image` feature), polars and pyarrow. The
//! pictures are the real ROI images of shared/testdata, encoded by the
//! project's JPEG encoder. (The manifests, read by pyarrow, are checked in
//! tests/provenance.rs.)

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cpia::parquet_file::{Column, Kind, Options, Value, Writer};

/// One sample: a real picture, encoded as cpia encodes outputs, and the
/// metadata an export would carry.
struct Sample {
    key: String,
    jpeg: Vec<u8>,
    width: u32,
    height: u32,
    scale: &'static str,
    mpp: Option<f64>,
    tissue: bool,
}

fn samples(testdata: &Path) -> Vec<Sample> {
    let mut files: Vec<_> = std::fs::read_dir(testdata.join("roi"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).unwrap();
        let img =
            cpia::ops::decode::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let jpeg = cpia::ops::encode::encode_jpeg(&img, &Default::default()).unwrap();
        out.push(Sample {
            // Keys with a dot and non-ASCII text, as export keys may have.
            key: format!("{}-é.{i}", f.file_stem().unwrap().to_string_lossy()),
            jpeg,
            width: img.width(),
            height: img.height(),
            scale: ["XL", "L", "M", "S"][i % 4],
            mpp: (!i.is_multiple_of(3)).then_some(0.25 * (i + 1) as f64),
            tissue: i.is_multiple_of(2),
        });
    }
    assert!(
        out.len() >= 10,
        "too few ROI images in {}",
        testdata.display()
    );
    out
}

fn columns() -> Vec<Column> {
    vec![
        Column::new("image", Kind::Image),
        Column::new("key", Kind::Str),
        Column::new("scale", Kind::Str),
        Column::new("width", Kind::Int),
        Column::new("height", Kind::Int),
        Column::new("mpp", Kind::Float),
        Column::new("tissue", Kind::Bool),
        Column::new("blake3", Kind::Str),
    ]
}

/// Writes `samples` into `n` shards of `dir/data/`, row groups of 3
/// pictures; returns the shard paths.
fn write_shards(dir: &Path, samples: &[Sample], n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let options = Options {
        row_group_rows: 3,
        ..Options::images()
    };
    let mut paths = Vec::new();
    for shard in 0..n {
        let path = dir.join(format!("data/test-{shard:06}.parquet"));
        let file = std::fs::File::create(&path).unwrap();
        let mut w = Writer::new(file, &columns(), &options).unwrap();
        for s in samples.iter().skip(shard).step_by(n) {
            let hash = blake3::hash(&s.jpeg).to_hex();
            let name = format!("{}.jpg", s.key);
            w.push(&[
                Value::Image {
                    bytes: &s.jpeg,
                    path: Some(&name),
                },
                Value::Str(&s.key),
                Value::Str(s.scale),
                Value::Int(i64::from(s.width)),
                Value::Int(i64::from(s.height)),
                s.mpp.map_or(Value::Null, Value::Float),
                Value::Bool(s.tissue),
                Value::Str(&hash),
            ])
            .unwrap();
        }
        w.finish().unwrap().sync_all().unwrap();
        paths.push(path.to_string_lossy().into_owned());
    }
    paths
}

/// Reads the shards with `datasets`, polars and pyarrow; writes each
/// picture's bytes as `datasets` hands them back to `out/<key>.jpg` and
/// prints one JSON object of what each reader saw.
const READERS: &str = r#"
import json, os, sys
files, out = sys.argv[1:-1], sys.argv[-1]
import datasets, polars as pl, pyarrow.parquet as pq
from PIL import Image as PILImage

ds = datasets.load_dataset("parquet", data_files=files, split="train")
seen = {"features": {k: repr(v) for k, v in ds.features.items()}, "datasets": {}}
for row in ds:
    img = row.pop("image")
    assert isinstance(img, PILImage.Image), type(img)
    img.load()
    row["decoded"] = [img.width, img.height, img.mode]
    seen["datasets"][row["key"]] = row
raw = ds.cast_column("image", datasets.Image(decode=False))
for row in raw:
    with open(os.path.join(out, row["key"] + ".jpg"), "wb") as f:
        f.write(row["image"]["bytes"])
    seen["datasets"][row["key"]]["path"] = row["image"]["path"]

df = pl.read_parquet(files)
seen["polars"] = {"schema": {k: str(v) for k, v in df.schema.items()}, "rows": {}}
for row in df.iter_rows(named=True):
    img = row.pop("image")
    row["image_bytes"] = len(img["bytes"])
    row["path"] = img["path"]
    seen["polars"]["rows"][row["key"]] = row

stats = []
for f in files:
    md = pq.ParquetFile(f).metadata
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            st = col.statistics
            stats.append([col.path_in_schema, col.compression, st is not None, st is not None and st.has_min_max])
seen["pyarrow"] = {"row_groups": sum(pq.ParquetFile(f).metadata.num_row_groups for f in files), "columns": stats}
print(json.dumps(seen))
"#;

#[test]
fn image_shards_load_in_datasets_polars_and_pyarrow() {
    let td = require_testdata!();
    if !common::need::python(&["datasets", "polars", "pyarrow", "PIL"]) {
        return;
    }
    let samples = samples(&td);
    let tmp = tempfile::tempdir().unwrap();
    let files = write_shards(tmp.path(), &samples, 2);
    let out = tmp.path().join("bytes");
    std::fs::create_dir(&out).unwrap();
    let run = Command::new("python3")
        .args(["-c", READERS])
        .args(&files)
        .arg(&out)
        // Local files only: no hub, a private cache.
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path().join("hf"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "readers failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();

    // `datasets` typed the column from the footer as its Image feature and
    // decoded every picture; its metadata and bytes are the ones written.
    let features = &seen["features"];
    assert!(
        features["image"].as_str().unwrap().starts_with("Image("),
        "{features}"
    );
    assert!(
        features["mpp"].as_str().unwrap().contains("float64"),
        "{features}"
    );
    let by_key: BTreeMap<&str, &Sample> = samples.iter().map(|s| (s.key.as_str(), s)).collect();
    let rows = seen["datasets"].as_object().unwrap();
    assert_eq!(rows.len(), samples.len());
    for (key, row) in rows {
        let s = by_key[key.as_str()];
        assert_eq!(
            row["decoded"],
            serde_json::json!([s.width, s.height, "RGB"]),
            "{key}"
        );
        assert_eq!(row["scale"], s.scale, "{key}");
        assert_eq!(row["width"], s.width, "{key}");
        assert_eq!(row["height"], s.height, "{key}");
        assert_eq!(row["mpp"].as_f64(), s.mpp, "{key}");
        assert_eq!(row["tissue"], s.tissue, "{key}");
        assert_eq!(
            row["blake3"],
            blake3::hash(&s.jpeg).to_hex().as_str(),
            "{key}"
        );
        assert_eq!(row["path"], format!("{key}.jpg"), "{key}");
        let back = std::fs::read(out.join(format!("{key}.jpg"))).unwrap();
        assert!(back == s.jpeg, "{key}: the bytes read back differ");
    }

    // polars: the struct column and the same metadata.
    let schema = &seen["polars"]["schema"];
    let image = schema["image"].as_str().unwrap();
    assert!(
        image.contains("Binary") && image.contains("String"),
        "{schema}"
    );
    let rows = seen["polars"]["rows"].as_object().unwrap();
    assert_eq!(rows.len(), samples.len());
    for (key, row) in rows {
        let s = by_key[key.as_str()];
        assert_eq!(row["image_bytes"], s.jpeg.len(), "{key}");
        assert_eq!(row["path"], format!("{key}.jpg"), "{key}");
        assert_eq!(
            (&row["scale"], &row["tissue"]),
            (&s.scale.into(), &s.tissue.into())
        );
        assert_eq!(row["mpp"].as_f64(), s.mpp, "{key}");
    }

    // pyarrow: row groups of 3, zstd everywhere, statistics except the blob.
    let pa = &seen["pyarrow"];
    let expected_groups: usize = (0..2)
        .map(|k| samples.iter().skip(k).step_by(2).count().div_ceil(3))
        .sum();
    assert_eq!(pa["row_groups"], expected_groups);
    let mut bounded = std::collections::BTreeSet::new();
    for c in pa["columns"].as_array().unwrap() {
        let path = c[0].as_str().unwrap();
        assert_eq!(c[1], "ZSTD", "{path}");
        assert_eq!(c[2], path != "image.bytes", "{path}: statistics");
        if c[3] == true {
            bounded.insert(path);
        }
    }
    // Min and max in some row group of every column but the blob (a group
    // whose values are all null has only a null count).
    let want = [
        "image.path",
        "key",
        "scale",
        "width",
        "height",
        "mpp",
        "tissue",
        "blake3",
    ];
    assert_eq!(bounded, want.into_iter().collect());
}
