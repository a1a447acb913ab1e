//! `cpia why export/<name>/<name>-000012.tar:KEY` (a shard's member) and
//! `cpia why export/<name>/<label>/<file>.jpg` (an ImageFolder file): the
//! export's view of a sample — its export, shard, key and file — beside
//! the whole story of the output it is (`provenance::why`).

use serde_json::{json, Value};

use super::definition::Format;
use super::{key, Error};
use crate::provenance::{facts, why};
use crate::store::audit::OutputFacts;
use crate::store::exports::Item;
use crate::store::State;

/// Whether `path` (relative to the output folder) names something in an export.
pub fn is_export_path(path: &str) -> bool {
    path.starts_with(&format!("{}/", super::DIR))
}

/// Undoes [`key::escape`] on one component (`None`: not an escape's output,
/// or a shortened component).
fn unescape(c: &str) -> Option<String> {
    if c.contains("%-") {
        return None;
    }
    let b = c.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The output a key names, read back by unescaping it.
fn output_of_key(state: &State, k: &str) -> Result<Option<OutputFacts>, Error> {
    let parts: Vec<Option<String>> = k.split('/').map(unescape).collect();
    let [Some(scale), Some(sub), Some(stem)] = parts.as_slice() else {
        return Ok(None);
    };
    let f = why::find(state, &format!("{scale}/{sub}/{stem}.jpg"))?;
    Ok(f.filter(|f| key::key(&f.dir, &f.name) == k))
}

/// The output a shard's member is, by scanning the shard's samples (for a
/// key whose components were shortened).
fn output_in_shard(
    state: &State,
    export: i64,
    shard: u64,
    k: &str,
) -> Result<Option<OutputFacts>, Error> {
    for s in state.export_shard_samples(export, shard)? {
        let f = match s.item {
            Item::Output(id) => state.output_facts_by_id(id)?,
            Item::Tile { unit, x, y } => state.tile_facts_at(unit, x, y, &facts::tile_name)?,
        };
        if let Some(f) = f.filter(|f| key::key(&f.dir, &f.name) == k) {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

/// `why`'s object for the export sample `path` (`None`: no such sample is
/// recorded), with an `export` member: name, format, file, shard, key.
pub fn explain(state: &State, path: &str) -> Result<Option<Value>, Error> {
    let (file, member) = path
        .split_once(':')
        .map_or((path, None), |(f, k)| (f, Some(k)));
    let mut parts = file.splitn(3, '/');
    let (Some(_), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let Some(row) = state.export(name)? else {
        return Ok(None);
    };
    let format = Format::parse(&row.format);
    let (k, shard) = match (format, member) {
        (Some(Format::ImageFolder), None) => {
            let Some(stem) = rest.rsplit('/').next().and_then(|f| f.strip_suffix(".jpg")) else {
                return Ok(None);
            };
            (stem.replace('.', "/"), None)
        }
        (Some(_), Some(k)) => {
            let s = key::shard(k, row.shards);
            let want = key::shard_name(
                name,
                s,
                if format == Some(Format::Parquet) {
                    "parquet"
                } else {
                    "tar"
                },
            );
            if rest.rsplit('/').next() != Some(want.as_str()) {
                return Ok(None);
            }
            (k.to_string(), Some(s))
        }
        _ => return Ok(None),
    };
    let found = match output_of_key(state, &k)? {
        Some(f) => Some(f),
        None => match shard {
            Some(s) => output_in_shard(state, row.id, s, &k)?,
            None => None,
        },
    };
    let Some(f) = found else { return Ok(None) };
    // The sample must be in the export (the selection or rule may leave the output out).
    let held = state
        .export_pair_samples(row.id, f.out_dir, f.input)?
        .into_iter()
        .any(|s| match (s.item, &f.tile) {
            (Item::Output(id), None) => id == f.id,
            (Item::Tile { unit, x, y }, Some(t)) => unit == t.unit && x == t.x && y == t.y,
            _ => false,
        });
    if !held {
        return Ok(None);
    }
    let mut v = why::explain(state, &f)?;
    v["export"] = json!({
        "name": row.name,
        "format": row.format,
        "file": file,
        "shard": shard,
        "key": k,
        "members": match format {
            Some(Format::WebDataset) => json!([format!("{k}.jpg"), format!("{k}.json")]),
            _ => Value::Null,
        },
    });
    Ok(Some(v))
}
