//! Exports (`cpia export`, `[export.NAME]`): read by the real readers
//! (Python `webdataset`, `wids`, `mlcroissant`), incremental to the shard,
//! verified, explained, surviving SIGKILL; ImageFolder trees; keys that
//! need escaping; the CPIA-Mini sampling rule. Real images of
//! `shared/testdata`; real Python packages (scripts/setup.sh installs them;
//! in CI a missing one is a failure, elsewhere a counted skip: tests/common/need.rs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{stderr, stdout, Ws};

/// Whether python3 has every module; in CI a missing one fails the test
/// (tests/common/need.rs).
fn need_python(modules: &[&str]) -> bool {
    for m in modules {
        let mut c = Command::new("python3");
        c.args(["-c", &format!("import {m}")]);
        if *m == "wids" {
            c.env("PYTHONPATH", torch_stub());
        }
        let ok = c.output().is_ok_and(|o| o.status.success());
        if !ok {
            // The tests' one rule (tests/common/need.rs): in CI
            // (CPIA_TEST_STRICT=1) a failure naming the module, else a
            // counted skip of this part.
            common::need::part(|| {
                common::need::missing(
                    &format!("python3 module `{m}`"),
                    "scripts/setup.sh installs it",
                )
            });
            return false;
        }
    }
    true
}

/// `wids` imports `torch.distributed` and `torch.utils.data` at load time
/// for rank queries and base classes only; PyPI's torch needs several GB of
/// CUDA libraries. This folder holds a stand-in for those two names (no
/// data path of wids goes through it), so the real wids reads the index and
/// the shards.
fn torch_stub() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("torch-stub");
    let t = dir.join("torch");
    std::fs::create_dir_all(t.join("utils")).unwrap();
    let files = [
        ("__init__.py", "from . import distributed, utils\n"),
        (
            "distributed.py",
            "def is_initialized():\n    return False\ndef get_rank():\n    return 0\ndef get_world_size():\n    return 1\n",
        ),
        ("utils/__init__.py", "from . import data\n"),
        (
            "utils/data.py",
            "class Dataset:\n    def __class_getitem__(cls, item):\n        return cls\nclass Sampler:\n    def __class_getitem__(cls, item):\n        return cls\nclass IterableDataset(Dataset):\n    pass\n",
        ),
    ];
    for (f, text) in files {
        std::fs::write(t.join(f), text).unwrap();
    }
    dir
}

/// Runs a Python script with arguments; its stdout, or a panic with its
/// stderr. `wids` scripts get the torch stand-in; every run fresh caches
/// (mlcroissant keeps extracted archives by URL, and an export's shard
/// URLs are the same in every workspace).
fn python(script: &str, args: &[&str]) -> String {
    let cache = tempfile::tempdir().unwrap();
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    if script.contains("import wids") {
        c.env("PYTHONPATH", torch_stub());
    }
    let out = c
        .env("WIDS_CACHE", cache.path().join("wids"))
        .env("CROISSANT_CACHE", cache.path().join("croissant"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn roi_template() -> String {
    common::TEMPLATE.to_string()
}

/// A workspace with ROI collections A and B (real images, each copied
/// `copies` times under numbered names) and the given extra `cpia.toml` text.
fn roi_ws(td: &Path, copies: usize, extra: &str) -> Ws {
    let ws = Ws::empty();
    ws.write(
        "cpia.toml",
        &format!("[sources]\nA = \"sources/A\"\nB = \"sources/B\"\n{extra}"),
    );
    ws.write("recipes/templates/centre.toml", &roi_template());
    ws.write("recipes/a.toml", &common::recipe("A", "A"));
    ws.write("recipes/b.toml", &common::recipe("B", "B"));
    for k in 0..copies {
        for (i, f) in common::IMAGES_A.iter().enumerate() {
            let ext = f.rsplit('.').next().unwrap();
            ws.copy_in(td, f, &format!("sources/A/a{k}-{i}.{ext}"));
        }
        for (i, f) in common::IMAGES_B.iter().enumerate() {
            let ext = f.rsplit('.').next().unwrap();
            ws.copy_in(td, f, &format!("sources/B/b{k}-{i}.{ext}"));
        }
    }
    ws
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// The export's shard files: name → blake3 (tar shards in the export's
/// folder, Parquet shards in its `data/`).
fn shard_hashes(ws: &Ws, name: &str) -> BTreeMap<String, String> {
    let mut out = shard_files(ws, &format!("dataset/export/{name}"), ".tar");
    out.extend(shard_files(
        ws,
        &format!("dataset/export/{name}/data"),
        ".parquet",
    ));
    out
}

/// The files of `dir` ending in `ext`: name → blake3 (none if no `dir`).
fn shard_files(ws: &Ws, dir: &str, ext: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(ws.path(dir)) else {
        return out;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(ext) {
            out.insert(
                n,
                blake3::hash(&std::fs::read(e.path()).unwrap())
                    .to_hex()
                    .to_string(),
            );
        }
    }
    out
}

/// Every sample key in the export's shards: key → shard file.
fn keys_in_shards(ws: &Ws, name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for shard in shard_hashes(ws, name).keys() {
        let f = std::fs::File::open(ws.path(&format!("dataset/export/{name}/{shard}"))).unwrap();
        for e in tar::Archive::new(f).entries().unwrap() {
            let p = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            if let Some(k) = p.strip_suffix(".jpg") {
                assert!(
                    out.insert(k.to_string(), shard.clone()).is_none(),
                    "{k} twice"
                );
            }
        }
    }
    out
}

/// Every output image of the dataset under `dirs`: relative path.
fn outputs_in(ws: &Ws, dirs: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in dirs {
        for e in std::fs::read_dir(ws.path(&format!("dataset/{d}")))
            .unwrap()
            .flatten()
        {
            out.insert(format!("{d}/{}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// Asserts that every field of `sample` that `why` also has is equal
/// (objects compared member by member); the number of leaves compared.
fn same_where_overlapping(sample: &serde_json::Value, why: &serde_json::Value, at: &str) -> usize {
    match (sample, why) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a
            .iter()
            .filter_map(|(k, v)| {
                b.get(k)
                    .map(|w| same_where_overlapping(v, w, &format!("{at}.{k}")))
            })
            .sum(),
        (a, b) => {
            assert_eq!(a, b, "{at} differs from `cpia why --json`");
            1
        }
    }
}

const READ_WDS: &str = r#"
import sys, json, glob, io
import webdataset as wds
from PIL import Image
urls = sorted(glob.glob(sys.argv[1] + "/*.tar"))
for s in wds.WebDataset(urls, shardshuffle=False):
    im = Image.open(io.BytesIO(s["jpg"])); im.load()
    print(json.dumps({"key": s["__key__"], "url": s["__url__"].rsplit("/", 1)[-1],
                      "size": list(im.size), "record": json.loads(s["json"])}))
"#;

const READ_WIDS: &str = r#"
import sys, json
import wids
ds = wids.ShardListDataset(sys.argv[1])
n = len(ds)
picks = sorted({0, n // 2, n - 1})
print(json.dumps({"len": n, "keys": {str(i): ds[i]["__key__"] for i in picks}}))
"#;

const READ_CROISSANT: &str = r#"
import sys, json
import mlcroissant as mlc
ds = mlc.Dataset(jsonld=sys.argv[1])
n = 0
for r in ds.records("samples"):
    img = r["samples/image"]
    img.load()
    n += 1
print(json.dumps({"records": n}))
"#;

/// A workspace with ROI collections A, B and a WSI collection W on the
/// real CMU-1 slide at a scaled-down geometry, exporting some of each.
fn mixed_ws(td: &Path) -> Ws {
    mixed_ws_with(td, "pretrain", "webdataset")
}

/// [`mixed_ws`] with export `name` in `format`.
fn mixed_ws_with(td: &Path, name: &str, format: &str) -> Ws {
    let ws = roi_ws(td, 1, &format!("W = \"src\"\n\n[export.{name}]\nformat = \"{format}\"\nselect = {{ sub_datasets = [\"A\", \"B\", \"W-384\", \"W-96\"] }}\nshard_samples = 16\n"));
    ws.write(
        "recipes/templates/cpia-wsi.toml",
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/templates/cpia-wsi.toml"),
        )
        .unwrap(),
    );
    ws.write(
        "recipes/w.toml",
        &common::wsi_recipe("W", common::SMALL_GEOMETRY),
    );
    std::fs::create_dir_all(ws.path("src")).unwrap();
    std::fs::copy(
        td.join("wsi/CMU-1-Small-Region.svs"),
        ws.path("src/CMU-1-Small-Region.svs"),
    )
    .unwrap();
    ws
}

#[test]
fn the_real_readers_find_exactly_the_recorded_samples_and_why_agrees() {
    let td = require_testdata!();
    let ws = mixed_ws(&td);
    let (j, o) = ws.build(&[]);
    ok(&o);
    let dirs = ["M/A", "M/B", "XL/W-384", "L/W-96"];
    let outputs = outputs_in(&ws, &dirs);
    assert!(outputs.len() > 100, "{}", outputs.len());
    assert_eq!(
        j["exports"][0]["samples"],
        outputs.len() as u64,
        "{j}\n{}",
        stderr(&o)
    );
    let expected: BTreeSet<String> = outputs
        .iter()
        .map(|p| p.trim_end_matches(".jpg").to_string())
        .collect();
    assert_eq!(
        keys_in_shards(&ws, "pretrain")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        expected
    );

    let export = ws.path("dataset/export/pretrain");
    if need_python(&["webdataset", "PIL"]) {
        let lines = python(READ_WDS, &[export.to_str().unwrap()]);
        let samples: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let keys: BTreeSet<String> = samples
            .iter()
            .map(|s| s["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            keys, expected,
            "webdataset read other samples than the build recorded"
        );
        assert_eq!(samples.len(), expected.len(), "a sample twice");
        for s in &samples {
            let path = format!("{}.jpg", s["key"].as_str().unwrap());
            let why: serde_json::Value =
                serde_json::from_str(&stdout(&ws.cpia(&["why", "--json", &path]))).unwrap();
            let n = same_where_overlapping(&s["record"], &why, &path);
            assert!(n >= 12, "{path}: only {n} fields in common with `why`");
            assert_eq!(s["record"]["output"]["path"], path.as_str());
            let edge = why["wsi"]["tile"]["size"].as_u64().unwrap_or(384);
            assert_eq!(s["size"], serde_json::json!([edge, edge]), "{path}");
        }
        // `why` of a shard member names the same output and its place.
        let s = &samples[samples.len() / 2];
        let member = format!(
            "export/pretrain/{}:{}",
            s["url"].as_str().unwrap(),
            s["key"].as_str().unwrap()
        );
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&ws.cpia(&["why", "--json", &member]))).unwrap();
        assert_eq!(v["export"]["key"], s["key"]);
        assert_eq!(v["output"]["path"], s["record"]["output"]["path"]);
        let wrong = ws.cpia(&["why", "export/pretrain/pretrain-000099.tar:M/A/nothing"]);
        assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));

        if need_python(&["wids", "numpy"]) {
            let index = export.join("pretrain.wids.json");
            let v: serde_json::Value =
                serde_json::from_str(&python(READ_WIDS, &[index.to_str().unwrap()])).unwrap();
            assert_eq!(v["len"], samples.len() as u64);
            // Position i is the i-th sample of the shards in index order.
            let index_json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
            let order: Vec<&str> = index_json["shardlist"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["url"].as_str().unwrap())
                .collect();
            let mut by_position = Vec::new();
            for url in order {
                by_position.extend(
                    samples
                        .iter()
                        .filter(|s| s["url"] == url)
                        .map(|s| s["key"].as_str().unwrap()),
                );
            }
            for (i, k) in v["keys"].as_object().unwrap() {
                assert_eq!(
                    by_position[i.parse::<usize>().unwrap()],
                    k.as_str().unwrap(),
                    "wids position {i}"
                );
            }
        }
    }
    if need_python(&["mlcroissant"]) {
        let v: serde_json::Value = serde_json::from_str(&python(
            READ_CROISSANT,
            &[export.join("croissant.json").to_str().unwrap()],
        ))
        .unwrap();
        assert_eq!(v["records"], expected.len() as u64);
    }

    // verify: clean; a modified shard and a missing one are findings (exit 1); a build repairs them.
    ok(&ws.cpia(&["verify"]));
    let shards: Vec<String> = shard_hashes(&ws, "pretrain").into_keys().collect();
    let victim = export.join(&shards[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[700] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::remove_file(export.join(&shards[1])).unwrap();
    let v = ws.cpia(&["verify", "--deep"]);
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    let text = stdout(&v);
    assert!(
        text.contains(&format!("modified\texport/pretrain/{}", shards[0])),
        "{text}"
    );
    assert!(
        text.contains(&format!("missing\texport/pretrain/{}", shards[1])),
        "{text}"
    );
    let (j, o) = ws.build(&[]);
    ok(&o);
    assert_eq!(j["exports"][0]["shards_written"], 2, "{j}");
    ok(&ws.cpia(&["verify", "--deep"]));
}

#[test]
fn a_change_rewrites_only_the_shards_holding_affected_samples() {
    let td = require_testdata!();
    let ws = roi_ws(
        &td,
        3,
        "\n[export.pretrain]\nformat = \"webdataset\"\nshard_samples = 2\n",
    );
    ok(&ws.build(&[]).1);
    let h0 = shard_hashes(&ws, "pretrain");
    let k0 = keys_in_shards(&ws, "pretrain");
    assert!(h0.len() >= 8, "{h0:?}");

    // One source changed, one added, one deleted.
    ws.copy_in(&td, "skimage_ihc.png", "sources/A/a1-0.png");
    ws.copy_in(&td, "tiatoolbox_target_image.png", "sources/A/new.png");
    std::fs::remove_file(ws.path("sources/B/b2-1.png")).unwrap();
    let (j, o) = ws.build(&[]);
    ok(&o);
    let h1 = shard_hashes(&ws, "pretrain");
    let k1 = keys_in_shards(&ws, "pretrain");
    let expected: BTreeSet<&String> = [
        &k0["M/A/a1-0"],
        &k1["M/A/a1-0"],
        &k1["M/A/new"],
        &k0["M/B/b2-1"],
    ]
    .into_iter()
    .collect();
    let differ: BTreeSet<&String> = h0
        .keys()
        .chain(h1.keys())
        .filter(|s| h0.get(*s) != h1.get(*s))
        .collect();
    assert_eq!(differ, expected, "{j}");
    let e = &j["exports"][0];
    let touched = e["shards_written"].as_u64().unwrap() + e["shards_removed"].as_u64().unwrap();
    assert_eq!(touched as usize, expected.len(), "{j}");
    assert!(!k1.contains_key("M/B/b2-1"));
    ok(&ws.cpia(&["verify"]));
    // A rewritten shard holds exactly what a fresh export of the same samples
    // holds: its changed samples were kept from their evaluation, the others
    // read back from the state; a fresh export keeps them all.
    ok(&ws.cpia(&[
        "export",
        "--format",
        "webdataset",
        "--shard-samples",
        "2",
        "--name",
        "fresh",
    ]));
    let fresh: BTreeMap<String, String> = shard_hashes(&ws, "fresh")
        .into_iter()
        .map(|(name, h)| (name.replace("fresh-", "pretrain-"), h))
        .collect();
    assert_eq!(
        fresh, h1,
        "the incremental shards differ from a fresh export's"
    );
    ok(&ws.cpia(&["export", "--remove", "fresh"]));

    // A recipe parameter of B changed: exactly the shards holding B's samples.
    ws.write(
        "recipes/b.toml",
        &format!(
            "{}\n[[steps]]\nid = \"encode\"\nquality = 80\n",
            common::recipe("B", "B")
        ),
    );
    ok(&ws.build(&[]).1);
    let h2 = shard_hashes(&ws, "pretrain");
    let expected: BTreeSet<&String> = k1
        .iter()
        .filter(|(k, _)| k.starts_with("M/B/"))
        .map(|(_, s)| s)
        .collect();
    let differ: BTreeSet<&String> = h1.keys().filter(|s| h1.get(*s) != h2.get(*s)).collect();
    assert_eq!(differ, expected);
    // A no-op rewrites nothing.
    let (j, o) = ws.build(&[]);
    ok(&o);
    assert_eq!(j["exports"][0]["shards_written"], 0, "{j}");
    assert_eq!(shard_hashes(&ws, "pretrain"), h2);
    ok(&ws.cpia(&["verify"]));
}

#[test]
fn a_killed_export_then_a_build_gives_the_shards_of_an_uninterrupted_one() {
    let td = require_testdata!();
    let ws = roi_ws(&td, 12, "");
    ok(&ws.build(&[]).1);
    let toml = std::fs::read_to_string(ws.path("cpia.toml")).unwrap();
    ws.write(
        "cpia.toml",
        &format!("{toml}\n[export.pretrain]\nformat = \"webdataset\"\nshard_samples = 1\n"),
    );
    let dir = ws.path("dataset/export/pretrain");
    let mut child = ws.command(&["export", "-j", "1"]).spawn().unwrap();
    // Killed at an observed point, not after a time: once the first shard
    // is in place (frozen while it is signalled, so it cannot finish first).
    let shards = |dir: &std::path::Path| {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
                .count()
        })
    };
    common::process::signal_when(
        &mut child,
        "the first shard in place",
        || shards(&dir) >= 1,
        libc::SIGKILL,
    );
    child.wait().unwrap();
    let after_kill = shard_hashes(&ws, "pretrain");
    assert!(!after_kill.is_empty(), "killed before its first shard");
    eprintln!("{} shard(s) in place when killed", after_kill.len());
    ok(&ws.build(&[]).1);
    let recovered = shard_hashes(&ws, "pretrain");
    for (s, h) in &after_kill {
        assert_eq!(
            recovered.get(s),
            Some(h),
            "{s}: a shard in place when killed was not whole"
        );
    }
    ok(&ws.cpia(&["verify", "--deep"]));
    ok(&ws.cpia(&["export", "--remove", "pretrain"]));
    assert!(!dir.exists());
    ok(&ws.cpia(&["export", "pretrain"]));
    assert_eq!(shard_hashes(&ws, "pretrain"), recovered);
    assert_eq!(keys_in_shards(&ws, "pretrain").len(), 12 * 7);
}

#[test]
fn an_imagefolder_export_equals_the_dataset_and_follows_it() {
    let td = require_testdata!();
    let ws = roi_ws(&td, 1, "\n[export.folders]\nformat = \"imagefolder\"\n");
    ok(&ws.build(&[]).1);
    let check = |ws: &Ws| {
        use std::os::unix::fs::MetadataExt;
        let outputs = outputs_in(ws, &["M/A", "M/B"]);
        let mut exported = BTreeSet::new();
        for e in walkdir::WalkDir::new(ws.path("dataset/export/folders"))
            .into_iter()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "jpg") {
                exported.insert(e.path().to_path_buf());
            }
        }
        assert_eq!(exported.len(), outputs.len());
        for o in &outputs {
            let sub = o.split('/').nth(1).unwrap();
            let flat = o.trim_end_matches(".jpg").replace('/', ".");
            let p = ws.path(&format!("dataset/export/folders/{sub}/{flat}.jpg"));
            let src = ws.path(&format!("dataset/{o}"));
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(&src).unwrap(),
                "{o}"
            );
            assert_eq!(
                std::fs::metadata(&p).unwrap().ino(),
                std::fs::metadata(&src).unwrap().ino(),
                "{o}: not a hard link"
            );
        }
    };
    check(&ws);
    std::fs::remove_file(ws.path("sources/A/a0-1.png")).unwrap();
    ws.copy_in(&td, "skimage_ihc.png", "sources/B/b0-0.png");
    let (j, o) = ws.build(&[]);
    ok(&o);
    assert_eq!(j["exports"][0]["files_removed"], 1, "{j}");
    assert_eq!(j["exports"][0]["files_placed"], 1, "{j}");
    check(&ws);
    ok(&ws.cpia(&["verify", "--deep"]));
    // A removed definition removes its files.
    let toml = std::fs::read_to_string(ws.path("cpia.toml")).unwrap();
    ws.write(
        "cpia.toml",
        toml.split("\n[export.folders]").next().unwrap(),
    );
    ok(&ws.build(&[]).1);
    assert!(!ws.path("dataset/export").exists());
    ok(&ws.cpia(&["verify"]));
}

#[test]
fn keys_with_dots_non_ascii_and_escaping_collisions_stay_apart() {
    let td = require_testdata!();
    let ws = Ws::empty();
    ws.write("cpia.toml", "[sources]\nA = \"src\"\n");
    ws.write("recipes/templates/centre.toml", &roi_template());
    ws.write(
        "recipes/a.toml",
        &format!(
            "{}\n[output]\nname = \"{{name}}\"\n",
            common::recipe("A", "A")
        ),
    );
    let names = ["a.b.png", "a_b.png", "é.png", "a%2Eb.png", "a%252Eb.png"];
    for (n, f) in names.iter().zip([
        "skimage_ihc.png",
        "tiatoolbox_source_image.png",
        "histolab_tcga-lung-rgb.png",
        "histolab_no-tissue.png",
        "histolab_almost-white-1.png",
    ]) {
        ws.copy_in(&td, f, &format!("src/{n}"));
    }
    ok(&ws.build(&[]).1);
    ok(&ws.cpia(&["export", "--format", "webdataset", "--shard-samples", "2"]));
    let keys = keys_in_shards(&ws, "webdataset");
    assert_eq!(keys.len(), names.len(), "{keys:?}");
    // An export made with --format is brought up to date by name (its
    // recorded definition), and a no-op rewrites nothing.
    let before = shard_hashes(&ws, "webdataset");
    let again = ws.cpia(&["export", "webdataset", "--json"]);
    ok(&again);
    let v: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(v["exports"][0]["shards_written"], 0, "{v}");
    assert_eq!(shard_hashes(&ws, "webdataset"), before);
    for k in keys.keys() {
        assert!(!k.contains('.') && k.is_ascii(), "{k}");
    }
    if need_python(&["webdataset", "PIL"]) {
        let export = ws.path("dataset/export/webdataset");
        let lines = python(READ_WDS, &[export.to_str().unwrap()]);
        let mut paths = BTreeSet::new();
        for l in lines.lines() {
            let s: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(keys.contains_key(s["key"].as_str().unwrap()), "{s}");
            paths.insert(s["record"]["output"]["path"].as_str().unwrap().to_string());
        }
        let want: BTreeSet<String> = names.iter().map(|n| format!("M/A/{n}.jpg")).collect();
        assert_eq!(paths, want);
    }
    for (k, shard) in &keys {
        let v: serde_json::Value = serde_json::from_str(&stdout(&ws.cpia(&[
            "why",
            "--json",
            &format!("export/webdataset/{shard}:{k}"),
        ])))
        .unwrap();
        assert_eq!(v["export"]["key"], k.as_str());
    }
}

#[test]
fn cpia_mini_membership_is_stable_when_a_collection_is_added() {
    let td = require_testdata!();
    let rule = "\n[export.mini]\nformat = \"webdataset\"\nshard_samples = 4\nsample = { by = \"sub_dataset\", cap = 1, ratios = { M = 5 }, seed = 3 }\n";
    let ws = roi_ws(&td, 4, rule);
    ok(&ws.build(&[]).1);
    let members = |ws: &Ws, prefix: &str| -> BTreeSet<String> {
        keys_in_shards(ws, "mini")
            .into_keys()
            .filter(|k| k.starts_with(prefix))
            .collect()
    };
    let (a, b) = (members(&ws, "M/A/"), members(&ws, "M/B/"));
    // 16 and 12 samples, quota 5: within the documented tolerance 4·√5 + 1.
    let tol = 4.0 * 5f64.sqrt() + 1.0;
    for (n, m) in [(a.len(), "A"), (b.len(), "B")] {
        assert!((n as f64 - 5.0).abs() <= tol, "{m}: {n}");
    }
    assert!(
        a.len() < 16 && b.len() < 12,
        "the rule kept everything: {a:?} {b:?}"
    );
    // Collection C added: A's and B's members are the same.
    let toml = std::fs::read_to_string(ws.path("cpia.toml")).unwrap();
    ws.write(
        "cpia.toml",
        &toml.replace(
            "B = \"sources/B\"\n",
            "B = \"sources/B\"\nC = \"sources/C\"\n",
        ),
    );
    ws.write("recipes/c.toml", &common::recipe("C", "C"));
    for i in 0..9 {
        ws.copy_in(&td, "skimage_ihc.png", &format!("sources/C/c{i}.png"));
    }
    ok(&ws.build(&[]).1);
    assert_eq!(members(&ws, "M/A/"), a);
    assert_eq!(members(&ws, "M/B/"), b);
    assert!(!members(&ws, "M/C/").is_empty());
    let dry: serde_json::Value =
        serde_json::from_str(&stdout(&ws.cpia(&["export", "--dry-run", "--json"]))).unwrap();
    let rows = dry[0]["built"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{dry}");
    assert!(rows.iter().all(|r| r["kept"] == 5), "{dry}");
}

#[test]
fn the_dry_run_compares_a_rule_with_the_published_cpia_mini() {
    let ws = Ws::empty();
    ws.write(
        "cpia.toml",
        "[export.mini]\nformat = \"webdataset\"\nsample = { by = \"sub_dataset\", cap = 705 }\n",
    );
    ws.write("recipes/templates/centre.toml", &roi_template());
    let o = ws.cpia(&["export", "--dry-run", "--json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let total = v[0]["published"]["total"].as_u64().unwrap();
    // The published CPIA-Mini: 3,383,970 images.
    assert!(
        (total as f64 - 3_383_970.0).abs() / 3_383_970.0 < 0.001,
        "{total}"
    );
    let s = &v[0]["published"]["per_scale"];
    let (xl, l, m) = (
        s["XL"].as_f64().unwrap(),
        s["L"].as_f64().unwrap(),
        s["M"].as_f64().unwrap(),
    );
    assert!(l / xl > 12.0 && l / xl < 20.0 && m / xl > 28.0, "{s}");
    let text = stdout(&ws.cpia(&["export", "--dry-run"]));
    assert!(text.contains("total (published): "), "{text}");
}

/// Reads a Parquet export with `datasets` (pictures decoded through its
/// `Image` feature, raw bytes written to `out/<i>.jpg`), polars and pyarrow;
/// prints one JSON object of what each saw.
const READ_PARQUET: &str = r#"
import sys, json, glob, os
import datasets, polars as pl, pyarrow.parquet as pq
root, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(root + "/data/*.parquet"))
ds = datasets.load_dataset("parquet", data_files=files, split="train")
raw = ds.cast_column("image", datasets.Image(decode=False))
seen = {"features": {k: repr(v) for k, v in ds.features.items()}, "rows": []}
for i, (row, r) in enumerate(zip(ds, raw)):
    img = row.pop("image")
    img.load()
    row["decoded"] = [img.width, img.height]
    row["image_path"] = r["image"]["path"]
    with open(os.path.join(out, f"{i}.jpg"), "wb") as f:
        f.write(r["image"]["bytes"])
    seen["rows"].append(row)
df = pl.read_parquet(files)
seen["polars"] = {}
for row in df.iter_rows(named=True):
    img = row.pop("image")
    row["image_path"] = img["path"]
    row["image_bytes"] = len(img["bytes"])
    seen["polars"][row["key"]] = row
seen["files"] = {}
for f in files:
    p = pq.ParquetFile(f)
    md = p.metadata
    seen["files"][os.path.basename(f)] = {
        "keys": p.read(columns=["key"]).column("key").to_pylist(),
        "row_groups": md.num_row_groups,
        "image_type": str(p.schema_arrow.field("image").type),
        "compression": sorted({(md.row_group(g).column(c).path_in_schema,
                                md.row_group(g).column(c).compression)
                               for g in range(md.num_row_groups) for c in range(md.num_columns)}),
    }
print(json.dumps(seen))
"#;

/// Where each column of a Parquet export is in the sample's record
/// (docs/export.md's table), written out here independently of the writer.
const PARQUET_COLUMNS: &[(&str, &str)] = &[
    ("collection", "/collection"),
    ("sub_dataset", "/sub_dataset"),
    ("scale", "/scale"),
    ("class", "/class"),
    ("stain", "/stain"),
    ("output_path", "/output/path"),
    ("output_blake3", "/output/blake3"),
    ("output_bytes", "/output/bytes"),
    ("output_key", "/output/key"),
    ("source_root", "/source/root"),
    ("source_path", "/source/path"),
    ("source_blake3", "/source/blake3"),
    ("recipe_hash", "/recipe/hash"),
    ("pipeline_hash", "/pipeline_hash"),
    ("sink", "/sink"),
    ("tool_version", "/tool_version"),
    ("wsi_level", "/wsi/level"),
    ("wsi_region_x", "/wsi/region/0"),
    ("wsi_region_y", "/wsi/region/1"),
    ("wsi_region_w", "/wsi/region/2"),
    ("wsi_region_h", "/wsi/region/3"),
    ("wsi_cell_x", "/wsi/cell/0"),
    ("wsi_cell_y", "/wsi/cell/1"),
    ("wsi_tile_x", "/wsi/tile/x"),
    ("wsi_tile_y", "/wsi/tile/y"),
    ("wsi_tile_size", "/wsi/tile/size"),
    ("wsi_cell_edge", "/wsi/cell_edge"),
    ("wsi_mpp", "/wsi/mpp"),
    ("wsi_mpp_source", "/wsi/mpp_source"),
    ("wsi_reader", "/wsi/reader"),
    ("wsi_read_size", "/wsi/read_size"),
];

/// Runs [`READ_PARQUET`] on export `name` (`None`: a module is missing).
fn read_parquet(ws: &Ws, name: &str) -> Option<(serde_json::Value, tempfile::TempDir)> {
    if !common::need::part(|| common::need::python(&["datasets", "polars", "pyarrow", "PIL"])) {
        return None;
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("python3")
        .args(["-c", READ_PARQUET])
        .arg(ws.path(&format!("dataset/export/{name}")))
        .arg(out.path())
        // Local files only: no hub, a private cache.
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", out.path().join("hf"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the Parquet readers failed:\n{}",
        stderr(&o)
    );
    Some((serde_json::from_slice(&o.stdout).unwrap(), out))
}

/// The keys of each Parquet shard, read by pyarrow: key → shard file.
fn parquet_keys(ws: &Ws, name: &str) -> Option<BTreeMap<String, String>> {
    let script = r#"
import sys, json, glob, os
import pyarrow.parquet as pq
print(json.dumps({os.path.basename(f): pq.read_table(f, columns=["key"]).column("key").to_pylist()
                  for f in sorted(glob.glob(sys.argv[1] + "/data/*.parquet"))}))
"#;
    let dir = ws.path(&format!("dataset/export/{name}"));
    let out = common::python::run(&["pyarrow"], script, &[dir.as_os_str()], &[])?;
    let v: BTreeMap<String, Vec<String>> = serde_json::from_slice(&out).unwrap();
    let mut keys = BTreeMap::new();
    for (file, ks) in v {
        for k in ks {
            assert!(keys.insert(k.clone(), file.clone()).is_none(), "{k} twice");
        }
    }
    Some(keys)
}

#[test]
fn parquet_shards_load_in_datasets_polars_and_pyarrow_and_agree_with_why() {
    let td = require_testdata!();
    let ws = mixed_ws_with(&td, "parq", "parquet");
    let (j, o) = ws.build(&[]);
    ok(&o);
    let outputs = outputs_in(&ws, &["M/A", "M/B", "XL/W-384", "L/W-96"]);
    assert!(outputs.len() > 100, "{}", outputs.len());
    assert_eq!(j["exports"][0]["samples"], outputs.len() as u64, "{j}");
    let shards = shard_hashes(&ws, "parq");
    assert_eq!(
        j["exports"][0]["shards_written"].as_u64(),
        Some(shards.len() as u64),
        "{j}"
    );
    assert!(shards
        .keys()
        .all(|s| s.starts_with("parq-") && s.ends_with(".parquet")));
    ok(&ws.cpia(&["verify", "--deep"]));

    let Some((seen, bytes_dir)) = read_parquet(&ws, "parq") else {
        return;
    };
    let features = &seen["features"];
    assert!(
        features["image"].as_str().unwrap().starts_with("Image("),
        "{features}"
    );
    for (c, t) in [
        ("output_bytes", "int64"),
        ("wsi_mpp", "float64"),
        ("record", "string"),
    ] {
        assert!(features[c].as_str().unwrap().contains(t), "{c}: {features}");
    }
    let rows = seen["rows"].as_array().unwrap();
    let keys: BTreeSet<String> = rows
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = outputs
        .iter()
        .map(|p| p.trim_end_matches(".jpg").to_string())
        .collect();
    assert_eq!(
        keys, expected,
        "datasets read other samples than the build recorded"
    );
    assert_eq!(rows.len(), expected.len(), "a sample twice");
    let mut wsi_rows = 0;
    for (i, row) in rows.iter().enumerate() {
        let key = row["key"].as_str().unwrap();
        let path = format!("{key}.jpg");
        // The image: the dataset's bytes unchanged, decoded at its size.
        let back = std::fs::read(bytes_dir.path().join(format!("{i}.jpg"))).unwrap();
        assert!(
            back == std::fs::read(ws.path(&format!("dataset/{path}"))).unwrap(),
            "{path}: other bytes"
        );
        assert_eq!(row["image_path"], path.as_str());
        // The record: `why`'s fields, and every column its field.
        let record: serde_json::Value =
            serde_json::from_str(row["record"].as_str().unwrap()).unwrap();
        let why: serde_json::Value =
            serde_json::from_str(&stdout(&ws.cpia(&["why", "--json", &path]))).unwrap();
        let n = same_where_overlapping(&record, &why, &path);
        assert!(n >= 12, "{path}: only {n} fields in common with `why`");
        let edge = why["wsi"]["tile"]["size"].as_u64().unwrap_or(384);
        assert_eq!(row["decoded"], serde_json::json!([edge, edge]), "{path}");
        for (column, pointer) in PARQUET_COLUMNS {
            let want = record
                .pointer(pointer)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            assert_eq!(&row[*column], &want, "{path}: column {column}");
        }
        for list in ["organs", "diseases"] {
            let v: serde_json::Value = serde_json::from_str(row[list].as_str().unwrap()).unwrap();
            assert_eq!(v, record[list], "{path}: {list}");
        }
        wsi_rows += usize::from(!row["wsi_level"].is_null());
        // polars: the same row.
        let p = &seen["polars"][key];
        assert_eq!(p["image_bytes"], back.len(), "{path}");
        for (c, v) in row.as_object().unwrap() {
            if c != "decoded" {
                assert_eq!(&p[c], v, "{path}: polars' {c}");
            }
        }
    }
    assert!(
        wsi_rows > 50 && wsi_rows < rows.len(),
        "{wsi_rows} WSI rows"
    );
    // pyarrow: the struct `datasets` decodes, zstd (the JPEG bytes too),
    // row groups of ≤ 100.
    let files = seen["files"].as_object().unwrap();
    assert_eq!(
        files.keys().cloned().collect::<BTreeSet<_>>(),
        shards.keys().cloned().collect()
    );
    for (name, f) in files {
        assert_eq!(
            f["image_type"], "struct<bytes: binary, path: string>",
            "{name}"
        );
        let compression = f["compression"].as_array().unwrap();
        assert!(compression.len() > 3, "{name}: {compression:?}");
        for pc in compression {
            assert_eq!(pc[1], "ZSTD", "{name}: {pc}");
        }
        assert!(
            compression.iter().any(|pc| pc[0] == "image.bytes"),
            "{name}: {compression:?}"
        );
        let n = f["keys"].as_array().unwrap().len();
        assert_eq!(f["row_groups"], n.div_ceil(100), "{name}");
        // `why` of a row names its shard, key and output.
        let k = f["keys"][0].as_str().unwrap();
        let v: serde_json::Value = serde_json::from_str(&stdout(&ws.cpia(&[
            "why",
            "--json",
            &format!("export/parq/data/{name}:{k}"),
        ])))
        .unwrap();
        assert_eq!(v["export"]["key"], k);
        assert_eq!(v["output"]["path"], format!("{k}.jpg"));
    }
    if need_python(&["mlcroissant"]) {
        let export = ws.path("dataset/export/parq");
        let v: serde_json::Value = serde_json::from_str(&python(
            READ_CROISSANT,
            &[export.join("croissant.json").to_str().unwrap()],
        ))
        .unwrap();
        assert_eq!(v["records"], expected.len() as u64);
    }
}

#[test]
fn a_parquet_export_rewrites_only_the_changed_shard_and_verify_finds_a_modified_one() {
    let td = require_testdata!();
    let ws = roi_ws(
        &td,
        3,
        "\n[export.parq]\nformat = \"parquet\"\nshard_samples = 3\n",
    );
    ok(&ws.build(&[]).1);
    let h0 = shard_hashes(&ws, "parq");
    assert!(h0.len() >= 6, "{h0:?}");
    let Some(k0) = parquet_keys(&ws, "parq") else {
        return;
    };
    assert_eq!(
        k0.len(),
        3 * (common::IMAGES_A.len() + common::IMAGES_B.len())
    );

    // One source changed: its shard alone is rewritten, every other is byte-identical.
    ws.copy_in(&td, "skimage_ihc.png", "sources/A/a1-0.png");
    let (j, o) = ws.build(&[]);
    ok(&o);
    let h1 = shard_hashes(&ws, "parq");
    let differ: Vec<&String> = h0.keys().filter(|s| h0.get(*s) != h1.get(*s)).collect();
    assert_eq!(differ, [&k0["M/A/a1-0"]], "{j}");
    assert_eq!(j["exports"][0]["shards_written"], 1, "{j}");
    assert_eq!(parquet_keys(&ws, "parq"), Some(k0.clone()));
    ok(&ws.cpia(&["verify"]));

    // A byte of a shard changed: verify reports it (exit 1); a build repairs it.
    let victim = ws.path(&format!("dataset/export/parq/data/{}", differ[0]));
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let v = ws.cpia(&["verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert!(
        stdout(&v).contains(&format!("modified\texport/parq/data/{}", differ[0])),
        "{}",
        stdout(&v)
    );
    let (j, o) = ws.build(&[]);
    ok(&o);
    assert_eq!(j["exports"][0]["shards_written"], 1, "{j}");
    assert_eq!(shard_hashes(&ws, "parq"), h1);
    ok(&ws.cpia(&["verify", "--deep"]));

    // Written again from nothing: the same bytes.
    ok(&ws.cpia(&["export", "--remove", "parq"]));
    assert!(!ws.path("dataset/export/parq").exists());
    ok(&ws.cpia(&["export", "parq"]));
    assert_eq!(shard_hashes(&ws, "parq"), h1);
}
