//! Croissant metadata: `export/<name>/croissant.json`, MLCommons' JSON-LD
//! description of a dataset (Croissant 1.0), which Hugging Face, Kaggle
//! and OpenML read, and `mlcroissant` validates and iterates.
//!
//! It lists the export's files (each shard a `FileObject` with its SHA-256;
//! the images inside the tar shards, or the Parquet shards as tables, a
//! `FileSet`), one record set `samples` whose fields are the image and its
//! key, and, for every collection in the
//! export, its citation, URL and licence from its recipe (`citeAs`,
//! `license` and the description). An export whose collections carry
//! different licences — or any without one — says so in its description:
//! several CPIA collections are for non-commercial use only.

use serde_json::{json, Value};

use super::definition::{Definition, Format};
use super::selection::Selection;
use super::Error;
use crate::store::exports::{ExportFile, ExportRow};

/// The file's path, relative to the output folder.
pub fn path(name: &str) -> String {
    format!("{}/croissant.json", super::folder(name))
}

/// The licences of the selection: (licence, collections), and the
/// collections without one.
pub fn licences(sel: &Selection) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut none = Vec::new();
    for c in &sel.collections {
        match sel.meta.get(c).and_then(|m| m.licence.clone()) {
            Some(l) => by.entry(l).or_default().push(c.clone()),
            None => none.push(c.clone()),
        }
    }
    (by.into_iter().collect(), none)
}

/// What the selection's licences mean together, in one sentence.
pub fn licence_note(sel: &Selection) -> String {
    let (by, none) = licences(sel);
    let mut parts: Vec<String> = by
        .iter()
        .map(|(l, cs)| format!("{l} ({})", cs.join(", ")))
        .collect();
    if !none.is_empty() {
        parts.push(format!(
            "no licence in the recipe ({}): see each collection's URL",
            none.join(", ")
        ));
    }
    match (by.len(), none.is_empty()) {
        (0, true) => "It holds no collection.".into(),
        (1, true) => format!("Every collection in it is licensed {}.", by[0].0),
        _ => format!(
            "It MIXES LICENCES — each image is under its collection's terms, and some may forbid commercial use: {}.",
            parts.join("; ")
        ),
    }
}

/// The Croissant document of export `def`.
pub fn text(
    def: &Definition,
    row: &ExportRow,
    sel: &Selection,
    files: &[ExportFile],
) -> Result<Vec<u8>, Error> {
    let mut shards: Vec<&ExportFile> = files.iter().filter(|f| f.shard.is_some()).collect();
    shards.sort_by_key(|f| f.shard);
    let (by, _) = licences(sel);
    let v = json!({
        "@context": context(),
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": def.name,
        "description": description(def, sel, &shards),
        "url": "https://arxiv.org/abs/2310.17902",
        "license": by.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
        "citeAs": citations(sel).join("\n"),
        "version": format!("1.0.{}", row.shards),
        "distribution": distribution(def.format, &shards),
        "recordSet": [record_set(def.format)],
    });
    let mut b = serde_json::to_vec_pretty(&v).map_err(|e| Error::Other(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}

/// The media type and file extension of a format's shards.
fn shard_media(format: Format) -> (&'static str, &'static str) {
    match format {
        Format::Parquet => ("application/x-parquet", "parquet"),
        _ => ("application/x-tar", "tar"),
    }
}

/// A shard's file name (its path's last component): its `@id` here.
fn shard_name(f: &ExportFile) -> &str {
    f.path.rsplit('/').next().unwrap_or(&f.path)
}

/// The files of the export: each shard a `FileObject` (with its size and
/// SHA-256), then the `FileSet` of the images, which the record set reads.
fn distribution(format: Format, shards: &[&ExportFile]) -> Vec<Value> {
    let mut distribution: Vec<Value> = shards.iter().map(|f| file_object(format, f)).collect();
    distribution.push(images_file_set(format, shards));
    distribution
}

/// One shard as a `FileObject`; Parquet shards are under `data/`.
fn file_object(format: Format, f: &ExportFile) -> Value {
    let (mime, _) = shard_media(format);
    let name = shard_name(f);
    let url = if format == Format::Parquet {
        format!("data/{name}")
    } else {
        name.to_string()
    };
    json!({
        "@type": "cr:FileObject",
        "@id": name,
        "name": name,
        "contentUrl": url,
        "contentSize": format!("{} B", f.bytes),
        "encodingFormat": mime,
        "sha256": f.sha256,
    })
}

/// The `FileSet` `images`: the Parquet shards themselves, read as tables,
/// or the JPEG members of the tar shards.
fn images_file_set(format: Format, shards: &[&ExportFile]) -> Value {
    let (mime, _) = shard_media(format);
    match format {
        // The shards themselves, read as tables (a local FileSet: found
        // beside this file).
        Format::Parquet => json!({
            "@type": "cr:FileSet",
            "@id": "images",
            "name": "images",
            "encodingFormat": mime,
            "includes": "data/*.parquet",
        }),
        _ => {
            let contained: Vec<Value> = shards
                .iter()
                .map(|f| json!({"@id": shard_name(f)}))
                .collect();
            json!({
                "@type": "cr:FileSet",
                "@id": "images",
                "name": "images",
                "containedIn": contained,
                "encodingFormat": "image/jpeg",
                "includes": "**/*.jpg",
            })
        }
    }
}

/// The dataset's description: what the export holds, its licences, and
/// each collection's citation, URL and licence.
fn description(def: &Definition, sel: &Selection, shards: &[&ExportFile]) -> String {
    let (_, ext) = shard_media(def.format);
    let layout = match def.format {
        Format::Parquet => "one row per image: the dataset's JPEG bytes unchanged (`image`), its key and its provenance record (`record`, and its fields as columns)",
        _ => "images unchanged from the dataset (`<key>.jpg`), each with its provenance record (`<key>.json`)",
    };
    format!(
        "A {} export of a CPIA dataset built by cpia {}: {} samples in {} {} shard(s), {}. {} Collections: {}.",
        def.format.name(),
        env!("CARGO_PKG_VERSION"),
        shards.iter().map(|f| f.samples).sum::<u64>(),
        shards.len(),
        ext,
        layout,
        licence_note(sel),
        serde_json::to_string(&collections(sel)).unwrap_or_default(),
    )
}

/// Each collection of the selection with its citation, URL and licence
/// (from its recipe; null where the recipe has none).
fn collections(sel: &Selection) -> Vec<Value> {
    sel.collections
        .iter()
        .map(|c| {
            let m = sel.meta.get(c);
            json!({
                "name": c,
                "citation": m.and_then(|m| m.citation.clone()),
                "url": m.and_then(|m| m.url.clone()),
                "license": m.and_then(|m| m.licence.clone()),
            })
        })
        .collect()
}

/// The citations of the selection's collections that have one, in order.
fn citations(sel: &Selection) -> Vec<String> {
    sel.collections
        .iter()
        .filter_map(|c| sel.meta.get(c).and_then(|m| m.citation.clone()))
        .collect()
}

/// The record set `samples`: each sample's key and image — tar members'
/// names and contents, or a Parquet shard's `key` column and the `bytes`
/// of its `image` column.
fn record_set(format: Format) -> Value {
    let (key, image) = match format {
        Format::Parquet => (
            json!({"fileSet": {"@id": "images"}, "extract": {"column": "key"}}),
            json!({
                "fileSet": {"@id": "images"},
                "extract": {"column": "image"},
                "transform": {"jsonPath": "bytes"},
            }),
        ),
        _ => (
            json!({
                "fileSet": {"@id": "images"},
                "extract": {"fileProperty": "filename"},
                "transform": {"regex": "^(.*)\\.jpg$"},
            }),
            json!({"fileSet": {"@id": "images"}, "extract": {"fileProperty": "content"}}),
        ),
    };
    json!({
        "@type": "cr:RecordSet",
        "@id": "samples",
        "name": "samples",
        "description": "One record per image: its key and its JPEG bytes.",
        "field": [
            {
                "@type": "cr:Field",
                "@id": "samples/key",
                "name": "key",
                "description": "The sample's key (`<scale>/<sub-dataset>/<name>`, escaped).",
                "dataType": "sc:Text",
                "source": key,
            },
            {
                "@type": "cr:Field",
                "@id": "samples/image",
                "name": "image",
                "description": "The image, the dataset's JPEG bytes unchanged.",
                "dataType": "sc:ImageObject",
                "source": image,
            },
        ],
    })
}

/// The Croissant 1.0 JSON-LD context.
fn context() -> Value {
    json!({
        "@language": "en",
        "@vocab": "https://schema.org/",
        "citeAs": "cr:citeAs",
        "column": "cr:column",
        "conformsTo": "dct:conformsTo",
        "cr": "http://mlcommons.org/croissant/",
        "rai": "http://mlcommons.org/croissant/RAI/",
        "data": {"@id": "cr:data", "@type": "@json"},
        "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
        "dct": "http://purl.org/dc/terms/",
        "equivalentProperty": "cr:equivalentProperty",
        "examples": {"@id": "cr:examples", "@type": "@json"},
        "extract": "cr:extract",
        "field": "cr:field",
        "fileProperty": "cr:fileProperty",
        "fileObject": "cr:fileObject",
        "fileSet": "cr:fileSet",
        "format": "cr:format",
        "includes": "cr:includes",
        "isLiveDataset": "cr:isLiveDataset",
        "jsonPath": "cr:jsonPath",
        "key": "cr:key",
        "md5": "cr:md5",
        "parentField": "cr:parentField",
        "path": "cr:path",
        "recordSet": "cr:recordSet",
        "references": "cr:references",
        "regex": "cr:regex",
        "repeated": "cr:repeated",
        "replace": "cr:replace",
        "samplingRate": "cr:samplingRate",
        "sc": "https://schema.org/",
        "separator": "cr:separator",
        "source": "cr:source",
        "subField": "cr:subField",
        "transform": "cr:transform",
    })
}
