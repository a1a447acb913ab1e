//! The `wids` shard index of a WebDataset export:
//! `export/<name>/<name>.wids.json`, the descriptor
//! `wids.ShardListDataset` opens — `wids_version` 1, the export's name and
//! one entry per shard: `url` (relative to the index, so the export folder
//! can be moved or served as it is), `nsamples`, `filesize` (its bytes, as
//! wids names them) and `blake3`. Shards are listed in shard order; an empty
//! shard has no file and no entry.

use serde_json::json;

use super::definition::Definition;
use crate::store::exports::ExportFile;

/// The index's path, relative to the output folder.
pub fn path(name: &str) -> String {
    format!("{}/{name}.wids.json", super::folder(name))
}

/// The index's text for the recorded files of `def`.
pub fn text(def: &Definition, files: &[ExportFile]) -> Vec<u8> {
    let mut shards: Vec<&ExportFile> = files.iter().filter(|f| f.shard.is_some()).collect();
    shards.sort_by_key(|f| f.shard);
    let list: Vec<serde_json::Value> = shards
        .iter()
        .map(|f| {
            json!({
                "url": f.path.rsplit('/').next().unwrap_or(&f.path),
                "nsamples": f.samples,
                "filesize": f.bytes,
                "blake3": f.blake3,
            })
        })
        .collect();
    let v = json!({
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": def.name,
        "shardlist": list,
    });
    let mut b = serde_json::to_vec_pretty(&v).unwrap_or_default();
    b.push(b'\n');
    b
}
