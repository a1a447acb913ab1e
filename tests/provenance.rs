//! Provenance and audit through the real binary, on the real images and
//! slides of shared/testdata: `why` (ROI outputs, WSI tiles at every scale,
//! checked against the tile's name and the grid geometry), `verify` (a
//! changed byte, a deletion, extra files; clean after every build of an
//! incremental sequence), manifests equal to the state after that sequence
//! (CSV, and Parquet read by pyarrow), `log` and the recipe archive, `query`,
//! and PROV-JSON loaded by the Python `prov` package.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use common::{counts, stderr, stdout, Ws};

fn state(ws: &Ws) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(out), stderr(out)))
}

/// One JSON object per line.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Whether python3 has `module`, for the part of a test that needs it (a
/// missing need: a skip of that part, or in CI a failure).
fn python_has(module: &str) -> bool {
    common::need::part(|| common::need::python(&[module]))
}

/// An output's record as the manifests carry it: (blake3, bytes, source,
/// source hash, recipe hash, build).
type Row = (String, i64, String, String, String, i64);

/// What the state records per dataset output (not QC pictures), straight
/// from the `output_records` view: path → [`Row`].
fn recorded(ws: &Ws) -> BTreeMap<String, Row> {
    let db = state(ws);
    let mut stmt = db
        .prepare(
            "SELECT path, content_hash, size, source_root || ':' || source_rel, source_hash,
                    recipe_hash, build FROM output_records WHERE unit <> 'qc'",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ),
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Every CSV manifest row: path → origin path (parts concatenated).
fn csv_manifests(ws: &Ws) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let root = ws.path("dataset/manifests/csv");
    for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("path,origin path"),
            "{}",
            e.path().display()
        );
        // Named outputs come in path order, not in the order the build
        // recorded them (a rebuilt or added image is recorded last): the
        // same outputs make the same manifest bytes. (A slide's tiles come
        // by cell and position, which is not their names' text order.)
        let paths: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        let is_tile = |p: &str| {
            let stem = p.rsplit('/').next().unwrap_or(p).trim_end_matches(".jpg");
            stem.rsplit('-')
                .take(3)
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        assert!(
            paths.iter().any(|p| is_tile(p)) || paths.windows(2).all(|w| w[0] < w[1]),
            "{}: rows not in path order: {paths:?}",
            e.path().display()
        );
        for l in lines {
            let (p, o) = l.split_once(',').unwrap();
            // A row lives in the part folder of its own output folder.
            let folder = e.path().parent().unwrap().strip_prefix(&root).unwrap();
            assert!(
                p.starts_with(&format!("{}/", folder.display())),
                "{p} in {}",
                e.path().display()
            );
            assert!(
                out.insert(p.to_string(), o.to_string()).is_none(),
                "{p} twice"
            );
        }
    }
    out
}

/// Every Parquet manifest row, read by pyarrow: path → the same tuple as
/// [`recorded`], plus the key.
fn parquet_manifests(ws: &Ws) -> BTreeMap<String, (Row, String)> {
    let script = "import json, sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(json.dumps(t.to_pylist()))";
    let dir = ws.path("dataset/manifests/parquet");
    let out = common::python::run(&["pyarrow"], script, &[dir.as_os_str()], &[])
        .expect("pyarrow, found a moment ago");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    let mut m = BTreeMap::new();
    for r in rows {
        let s = |k: &str| {
            r[k].as_str()
                .unwrap_or_else(|| panic!("{k}: {r}"))
                .to_string()
        };
        let v = (
            s("blake3"),
            r["bytes"].as_i64().unwrap(),
            format!("{}:{}", s("source_root"), s("source_path")),
            s("source_blake3"),
            s("recipe_hash"),
            r["build"].as_i64().unwrap(),
        );
        assert!(m.insert(s("path"), (v, s("key"))).is_none(), "{r}");
    }
    m
}

/// The manifests list exactly what the state records.
fn assert_manifests_equal_state(ws: &Ws, pyarrow: bool) {
    let rec = recorded(ws);
    let csv = csv_manifests(ws);
    let want: BTreeMap<String, String> =
        rec.iter().map(|(p, v)| (p.clone(), v.2.clone())).collect();
    assert_eq!(csv, want, "CSV manifests differ from the state");
    if pyarrow {
        let pq = parquet_manifests(ws);
        let got: BTreeMap<_, _> = pq
            .iter()
            .map(|(p, (v, _))| (p.clone(), v.clone()))
            .collect();
        assert_eq!(got, rec, "Parquet manifests differ from the state");
        // The key column is the key `why` shows.
        let (path, (_, key)) = pq.iter().next().unwrap();
        let why = json_of(&ws.cpia(&["why", path, "--json"]));
        assert_eq!(why["output"]["key"].as_str(), Some(key.as_str()));
    }
}

fn verify(ws: &Ws, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = ws.cpia(&all);
    (out.status.code(), json_of(&out))
}

fn assert_clean(ws: &Ws, step: &str) {
    for deep in [false, true] {
        let args: &[&str] = if deep { &["--deep"] } else { &[] };
        let (code, j) = verify(ws, args);
        assert_eq!(code, Some(0), "verify {args:?} after {step}: {j}");
        assert_eq!(j["clean"], true, "{j}");
        assert!(j["stats"]["files"].as_u64().unwrap() > 0, "{j}");
    }
}

/// Manifest files with their mtimes.
fn manifest_files(ws: &Ws) -> BTreeMap<String, std::time::SystemTime> {
    common::snapshot(&ws.path("dataset/manifests"))
        .into_iter()
        .map(|(p, (_, t))| (p, t))
        .collect()
}

#[test]
fn an_incremental_sequence_keeps_verify_clean_and_the_manifests_equal_to_the_state() {
    let td = require_testdata!();
    let pyarrow = python_has("pyarrow");
    let ws = Ws::two_collections(&td);
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).0, 7);
    assert_clean(&ws, "the first build");
    assert_manifests_equal_state(&ws, pyarrow);

    // A no-op build touches no manifest.
    let before = manifest_files(&ws);
    std::thread::sleep(std::time::Duration::from_millis(20));
    ws.build(&[]);
    assert_eq!(manifest_files(&ws), before, "a no-op rewrote manifests");

    // Add a source to A: B's manifests are not rewritten.
    ws.copy_in(
        &td,
        "histolab_tissue-level0-4302-10273-4814-10785.png",
        "sources/A/added.png",
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 1, "{j}");
    let after = manifest_files(&ws);
    for (p, t) in &before {
        if p.contains("/M/B/") {
            assert_eq!(after.get(p), Some(t), "{p} rewritten for a change in A");
        }
    }
    assert_clean(&ws, "adding a source");
    assert_manifests_equal_state(&ws, pyarrow);

    // Change a source's bytes.
    ws.copy_in(
        &td,
        "histolab_tissue-level2-1784-6289-5880-10386.png",
        "sources/A/added.png",
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 1, "{j}");
    assert_clean(&ws, "changing a source");
    assert_manifests_equal_state(&ws, pyarrow);

    // Change a parameter of B.
    let mut text = common::recipe("B", "B");
    text.push_str("\n[[steps]]\nid = \"encode\"\nquality = 90\n");
    ws.write("recipes/b.toml", &text);
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, common::IMAGES_B.len() as u64, "{j}");
    assert_clean(&ws, "changing a parameter");
    assert_manifests_equal_state(&ws, pyarrow);

    // Delete a source.
    std::fs::remove_file(ws.path("sources/A/added.png")).unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).2, 1, "{j}");
    assert_clean(&ws, "deleting a source");
    assert_manifests_equal_state(&ws, pyarrow);

    // A metadata-only edit: nothing rebuilt, every record of A (and its
    // manifests) gets the new recipe hash.
    let old_hash = recorded(&ws)["M/A/histolab_tcga-lung-rgb.jpg"].4.clone();
    let mut text = common::recipe("A", "A");
    text = text.replace("kind = \"roi\"", "kind = \"roi\"\nlicence = \"CC-BY-4.0\"");
    ws.write("recipes/a.toml", &text);
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 0, "{j}");
    let rec = recorded(&ws);
    let new_hash = rec["M/A/histolab_tcga-lung-rgb.jpg"].4.clone();
    assert_ne!(new_hash, old_hash);
    assert!(rec
        .iter()
        .filter(|(p, _)| p.starts_with("M/A/"))
        .all(|(_, v)| v.4 == new_hash));
    assert_clean(&ws, "a metadata-only edit");
    assert_manifests_equal_state(&ws, pyarrow);

    // The log has every build, with the recipe versions it used.
    let log = json_lines(&ws.cpia(&["log", "--json"]));
    assert_eq!(log.len(), 7, "{log:?}");
    let last = log.last().unwrap();
    assert!(last["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["collection"] == "A" && r["hash"] == new_hash.as_str()));
    assert_eq!(last["counts"]["built"], 0);
}

#[test]
fn verify_finds_a_changed_byte_a_deletion_and_extra_files() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean(&ws, "the build");

    // One byte changed in place, the mtime put back: only --deep sees it.
    let victim = ws.path("dataset/M/A/skimage_ihc.jpg");
    let victim = if victim.exists() {
        victim
    } else {
        ws.path("dataset/M/A/histolab_tcga-lung-rgb.jpg")
    };
    let meta = std::fs::metadata(&victim).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .unwrap();
        f.seek(std::io::SeekFrom::Start(mid as u64)).unwrap();
        f.write_all(&bytes[mid..=mid]).unwrap();
    }
    let f = std::fs::File::options().write(true).open(&victim).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    drop(f);
    let rel = victim
        .strip_prefix(ws.path("dataset"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (code, j) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "stat mode trusts an unchanged stat: {j}");
    let (code, j) = verify(&ws, &["--deep"]);
    assert_eq!(code, Some(1), "{j}");
    let findings = j["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{j}");
    assert_eq!(findings[0]["path"], rel.as_str());
    assert_eq!(findings[0]["kind"], "modified");

    // Rewritten with a new mtime: stat mode re-hashes it and finds it.
    std::fs::write(&victim, &bytes).unwrap();
    let (code, j) = verify(&ws, &[]);
    assert_eq!(code, Some(1), "{j}");
    assert_eq!(j["findings"][0]["kind"], "modified", "{j}");

    // A deletion and extra files, in a recorded folder and elsewhere.
    std::fs::remove_file(ws.path("dataset/M/B/skimage_ihc.jpg")).unwrap();
    ws.write("dataset/M/B/stray.jpg", "x");
    ws.write("dataset/L/notes/readme.txt", "x");
    ws.write("dataset/manifests/csv/M/A/part-999999.csv", "x");
    let out = ws.cpia(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let kinds: BTreeSet<(String, String)> = text
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (f.next().unwrap().to_string(), f.next().unwrap().to_string())
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("modified", rel.as_str()),
        ("missing", "M/B/skimage_ihc.jpg"),
        ("extra", "M/B/stray.jpg"),
        ("extra", "L/notes/readme.txt"),
        ("extra", "manifests/csv/M/A/part-999999.csv"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds, want, "{text}");
    // Limited to collection A: B's problems are not A's.
    let (code, j) = verify(&ws, &["A"]);
    assert_eq!(code, Some(1));
    assert_eq!(j["findings"].as_array().unwrap().len(), 1, "{j}");

    // The build repairs what it notices; the rest is removed by hand.
    std::fs::remove_file(&victim).unwrap();
    std::fs::remove_file(ws.path("dataset/M/B/stray.jpg")).unwrap();
    std::fs::remove_dir_all(ws.path("dataset/L")).unwrap();
    std::fs::remove_file(ws.path("dataset/manifests/csv/M/A/part-999999.csv")).unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 2, "{j}");
    // Temporary files are never findings.
    ws.write("dataset/.cpia-tmp/123-4.tmp", "x");
    assert_clean(&ws, "the repair");

    // A sound state database passes --state; a damaged one is reported.
    let out = ws.cpia(&["verify", "--state"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    {
        // The b-trees of two indexes of different tables swapped: neither
        // index matches its table any more.
        let db = state(&ws);
        let root = |name: &str| -> i64 {
            db.query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
        };
        let (a, b) = (root("inputs_by_file"), root("outputs_by_input"));
        db.execute_batch("PRAGMA writable_schema = ON").unwrap();
        for (name, page) in [("inputs_by_file", b), ("outputs_by_input", a)] {
            db.execute(
                "UPDATE sqlite_schema SET rootpage = ?1 WHERE name = ?2",
                rusqlite::params![page, name],
            )
            .unwrap();
        }
    }
    let out = ws.cpia(&["verify", "--state", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = json_of(&out);
    assert_eq!(j["ok"], false, "{j}");
    assert!(
        j["problems"].as_array().is_some_and(|p| !p.is_empty()),
        "{j}"
    );
    // Outside a workspace (or without a state) verify cannot run: exit 2.
    let empty = Ws::empty();
    empty.write("cpia.toml", "");
    assert_eq!(empty.cpia(&["verify"]).status.code(), Some(2));
}

#[test]
fn why_shows_the_new_lineage_after_a_rebuild_and_the_old_recipe_text_stays() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let path = "M/B/skimage_ihc.jpg";
    let first = json_of(&ws.cpia(&["why", path, "--json"]));
    for k in [
        "output",
        "collection",
        "sub_dataset",
        "scale",
        "class",
        "source",
        "recipe",
        "steps",
        "encoder",
        "tool_version",
        "build",
    ] {
        assert!(first.get(k).is_some(), "key {k} missing: {first}");
    }
    let bytes = std::fs::read(ws.path(&format!("dataset/{path}"))).unwrap();
    assert_eq!(first["output"]["path"], path);
    assert_eq!(
        first["output"]["blake3"],
        blake3::hash(&bytes).to_hex().as_str()
    );
    assert_eq!(first["output"]["bytes"], bytes.len());
    let src = std::fs::read(ws.path("sources/B/skimage_ihc.png")).unwrap();
    assert_eq!(first["source"]["root"], "B");
    assert_eq!(first["source"]["path"], "skimage_ihc.png");
    assert_eq!(
        first["source"]["blake3"],
        blake3::hash(&src).to_hex().as_str()
    );
    assert_eq!(first["source"]["bytes"], src.len());
    assert_eq!(
        (first["collection"].as_str(), first["scale"].as_str()),
        (Some("B"), Some("M"))
    );
    assert_eq!(first["recipe"]["file"], "recipes/b.toml");
    assert_eq!(first["build"]["id"], 1);
    assert_eq!(first["tool_version"], "cpia 0.1.0");
    let steps = first["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["op"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["decode", "crop", "resize", "encode_jpeg"]
    );
    assert_eq!(steps[3]["params"]["quality"], "75");
    // The same file named relative to the current folder, and as text.
    let out = ws.cpia(&["why", &format!("dataset/{path}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("B:skimage_ihc.png"),
        "{}",
        stdout(&out)
    );
    // Not an output: exit 1.
    assert_eq!(ws.cpia(&["why", "M/B/nothing.jpg"]).status.code(), Some(1));

    let old_text = std::fs::read_to_string(ws.path("recipes/b.toml")).unwrap();
    let mut text = common::recipe("B", "B");
    text.push_str("\n[[steps]]\nid = \"encode\"\nquality = 90\n");
    ws.write("recipes/b.toml", &text);
    ws.build(&[]);
    let second = json_of(&ws.cpia(&["why", path, "--json"]));
    assert_eq!(second["build"]["id"], 2);
    assert_eq!(second["steps"][3]["params"]["quality"], "90");
    assert_ne!(second["recipe"]["hash"], first["recipe"]["hash"]);
    assert_ne!(second["output"]["key"], first["output"]["key"]);
    assert_ne!(second["output"]["blake3"], first["output"]["blake3"]);

    // The old recipe, by its hash, as the first build read it.
    let old = first["recipe"]["hash"].as_str().unwrap();
    let out = ws.cpia(&["log", "--recipe", old, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["hash"], old);
    assert_eq!(v["files"][0]["path"], "recipes/b.toml");
    assert_eq!(v["files"][0]["text"], old_text.as_str());
    assert_eq!(v["files"][1]["path"], "recipes/templates/centre.toml");
    let canonical = v["canonical"].as_str().unwrap();
    assert_eq!(blake3::hash(canonical.as_bytes()).to_hex().as_str(), old);
    // A short prefix works; the text form shows the file.
    let out = ws.cpia(&["log", "--recipe", &old[..10]]);
    assert!(
        stdout(&out).contains("# ---- recipes/b.toml"),
        "{}",
        stdout(&out)
    );

    // Queries: by recipe hash, by build, by source.
    let new = second["recipe"]["hash"].as_str().unwrap();
    let q = json_lines(&ws.cpia(&["query", "--recipe-hash", new, "--json"]));
    assert_eq!(q.len(), common::IMAGES_B.len());
    assert!(q
        .iter()
        .all(|r| r["path"].as_str().unwrap().starts_with("M/B/")));
    assert!(json_lines(&ws.cpia(&["query", "--recipe-hash", old, "--json"])).is_empty());
    let q = json_lines(&ws.cpia(&["query", "--built-by", "2", "--json"]));
    assert_eq!(q.len(), common::IMAGES_B.len());
    let q = json_lines(&ws.cpia(&[
        "query",
        "--from-source",
        "sources/B/skimage_ihc.png",
        "--json",
    ]));
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["path"], path);
    let q = json_lines(&ws.cpia(&["query", "--from-source", "B:skimage_ihc.png", "--json"]));
    assert_eq!(q.len(), 1);
}

#[test]
fn lineage_prov_json_loads_in_prov_with_an_entity_per_output() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let out = ws.cpia(&["lineage", "-o", "lineage.json", "--format", "prov-json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("lineage.json")).unwrap()).unwrap();
    let outputs = recorded(&ws);
    let entities = doc["entity"].as_object().unwrap();
    let out_entities: BTreeSet<String> = entities
        .iter()
        .filter(|(_, v)| v["prov:type"] == "cpia:Output")
        .map(|(_, v)| v["prov:label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(out_entities, outputs.keys().cloned().collect());
    for kind in [
        "used",
        "wasGeneratedBy",
        "wasDerivedFrom",
        "wasAssociatedWith",
    ] {
        assert!(!doc[kind].as_object().unwrap().is_empty(), "{kind}");
    }
    if !python_has("prov") {
        return;
    }
    let script = "import sys, prov.model as pm\n\
                  d = pm.ProvDocument.deserialize(open(sys.argv[1]), format='json')\n\
                  t = pm.PROV_TYPE\n\
                  ents = [e for e in d.get_records(pm.ProvEntity) if any(str(v) == 'cpia:Output' for v in e.get_attribute(t))]\n\
                  gen = list(d.get_records(pm.ProvGeneration))\n\
                  print(len(ents), len(gen), len(list(d.get_records(pm.ProvAgent))))";
    let lineage = ws.path("lineage.json");
    let out = common::python::run(&["prov"], script, &[lineage.as_os_str()], &[])
        .expect("prov, found a moment ago");
    let text = String::from_utf8_lossy(&out);
    let n: Vec<usize> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(n, vec![outputs.len(), outputs.len(), 1], "{text}");
}

// ---- WSI -----------------------------------------------------------------

fn wsi_ws(td: &Path, slides: &[&str], extra: &str) -> Ws {
    let paths: Vec<_> = slides.iter().map(|s| td.join("wsi").join(s)).collect();
    let slides: Vec<(&Path, &str)> = paths
        .iter()
        .map(|p| p.as_path())
        .zip(slides.iter().copied())
        .collect();
    Ws::wsi(&slides, &wsi_recipe(extra))
}

/// Collection W with `extra` and the small geometry.
fn wsi_recipe(extra: &str) -> String {
    common::wsi_recipe("W", &format!("{extra}{}", common::SMALL_GEOMETRY))
}

/// Every tile file: (scale, path relative to the dataset).
fn tiles(ws: &Ws, slide: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for scale in ["XL", "L", "M", "S"] {
        for e in walkdir::WalkDir::new(ws.path(&format!("dataset/{scale}")))
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_file() && name.starts_with(&format!("{slide}-")) {
                let rel = e.path().strip_prefix(ws.path("dataset")).unwrap();
                out.push((scale.to_string(), rel.to_string_lossy().into_owned()));
            }
        }
    }
    out
}

/// `(size, x, y)` from `{slide}-{size}-{x}-{y}.jpg`.
fn parse_tile(path: &str) -> (u64, u64, u64) {
    let stem = path
        .rsplit('/')
        .next()
        .unwrap()
        .strip_suffix(".jpg")
        .unwrap();
    let f: Vec<u64> = stem
        .rsplitn(4, '-')
        .take(3)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[2], f[1], f[0])
}

/// `why` of one tile per scale: the region follows from the name, the read
/// size and the cell edge; the parent is the tile the name says it was cut
/// from, and it is on disk.
fn check_tiles(ws: &Ws, slide: &str, read_size: f64, mpp: f64, origin: &str) {
    let all = tiles(ws, slide);
    let parents: BTreeMap<&str, (&str, u64)> =
        BTreeMap::from([("L", ("XL", 384)), ("M", ("XL", 384)), ("S", ("M", 48))]);
    for scale in ["XL", "L", "M", "S"] {
        let (_, path) = all
            .iter()
            .rfind(|(s, _)| s == scale)
            .unwrap_or_else(|| panic!("no {scale} tile of {slide}"));
        let out = ws.cpia(&["why", path, "--json"]);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let v = json_of(&out);
        let (size, x, y) = parse_tile(path);
        let w = &v["wsi"];
        let k = read_size / 384.0;
        let region: Vec<f64> = w["region"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want = [
            (x * size) as f64 * k,
            (y * size) as f64 * k,
            size as f64 * k,
            size as f64 * k,
        ];
        for (a, b) in region.iter().zip(want) {
            assert!(
                (a - b).abs() < 1e-6,
                "{path}: region {region:?}, want {want:?}"
            );
        }
        assert_eq!(
            w["cell"],
            serde_json::json!([x * size / 384, y * size / 384]),
            "{path}"
        );
        assert_eq!(w["tile"]["size"], size);
        assert_eq!(w["level"], 0);
        assert_eq!(w["mpp"].as_f64(), Some(mpp), "{path}");
        assert_eq!(w["mpp_source"], origin);
        assert_eq!(v["scale"], scale);
        assert_eq!(v["source"]["path"], format!("{slide}.svs"));
        match parents.get(scale) {
            None => assert!(w["parent"].is_null(), "{path}: {w}"),
            Some((pscale, psize)) => {
                let k = psize / size;
                let want = format!("{pscale}/W-{psize}/{slide}-{psize}-{}-{}.jpg", x / k, y / k);
                assert_eq!(w["parent"]["path"], want.as_str(), "{path}");
                assert_eq!(w["parent"]["recorded"], true, "{path}");
                assert!(ws.path(&format!("dataset/{want}")).is_file(), "{want}");
            }
        }
        // The manifest row of the tile has the same region and key.
        let q = json_lines(&ws.cpia(&[
            "query",
            "--from-source",
            &format!("W:{slide}.svs"),
            "--json",
        ]));
        let row = q.iter().find(|r| r["path"] == path.as_str()).unwrap();
        assert_eq!(row["region"], w["region"]);
        assert_eq!(row["key"], v["output"]["key"]);
    }
}

#[test]
fn why_for_wsi_tiles_at_every_scale_on_both_read_paths() {
    let td = require_testdata!();
    let ws = wsi_ws(
        &td,
        &["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"],
        "[mpp.overrides]\n\"tcga-cr-7395-01a-01-ts1\" = 0.2520\n",
    );
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Native: 0.499 um/px reads 384-px cells as they are.
    check_tiles(&ws, "CMU-1-Small-Region", 384.0, 0.499, "openslide");
    // Resized: floor(384 * 0.4942 / 0.252) = 753 level-0 px per cell.
    check_tiles(&ws, "tcga-cr-7395-01a-01-ts1", 753.0, 0.252, "override");
    // A QC picture has its read, no region.
    let v = json_of(&ws.cpia(&["why", "qc/W/CMU-1-Small-Region.png", "--json"]));
    assert_eq!(v["wsi"]["mpp_source"], "openslide");
    assert!(v["wsi"]["region"].is_null());
    let q = json_lines(&ws.cpia(&["query", "--mpp-source", "override", "--json"]));
    assert!(!q.is_empty());
    assert!(q
        .iter()
        .all(|r| r["source"] == "W:tcga-cr-7395-01a-01-ts1.svs"));
    assert_clean(&ws, "a WSI build");
    assert_manifests_equal_state(&ws, python_has("pyarrow"));
}

#[test]
fn metadata_class_and_mpp_origin_edits_update_the_records_without_rebuilding() {
    let td = require_testdata!();
    // WSI: an override taking precedence over the header, with the header's
    // value, moves the units' MPP origin, not their keys.
    let ws = wsi_ws(
        &td,
        &["CMU-1-Small-Region.svs", "openslide-python_small.svs"],
        "",
    );
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&ws.cpia(&["query", "--mpp-source", "override", "--json"])).is_empty());
    ws.write(
        "recipes/w.toml",
        &wsi_recipe(
            "[mpp]\nsources = [\"override\", \"openslide\"]\n[mpp.overrides]\n\"CMU-1-Small-Region\" = 0.499\n",
        ),
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 0, "nothing is rebuilt: {j}");
    let q = json_lines(&ws.cpia(&["query", "--mpp-source", "override", "--json"]));
    let n_tiles = tiles(&ws, "CMU-1-Small-Region").len();
    // Its tiles (the QC picture's record keeps the origin it was drawn with).
    let q: Vec<_> = q
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with(".jpg"))
        .collect();
    assert_eq!(q.len(), n_tiles, "{q:?}");
    assert_clean(&ws, "an MPP origin edit");
    assert_manifests_equal_state(&ws, python_has("pyarrow"));
    // A slide deleted: its cached metadata is pruned.
    let slides = |ws: &Ws| -> i64 {
        state(ws)
            .query_row("SELECT count(*) FROM slides", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(slides(&ws), 2);
    std::fs::remove_file(ws.path("src/openslide-python_small.svs")).unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).2, 1, "{j}");
    assert_eq!(slides(&ws), 1);
    // Failures per cell, listed by `query --failed`: an XL tile replaced
    // by a folder cannot be written again, so its cell fails alone.
    let (_, xl) = tiles(&ws, "CMU-1-Small-Region")
        .into_iter()
        .find(|(s, _)| s == "XL")
        .unwrap();
    let (_, x, y) = parse_tile(&xl);
    let blocked = ws.path(&format!("dataset/{xl}"));
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir_all(blocked.join("blocker")).unwrap();
    let (code, v) = verify(&ws, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(v["findings"][0]["kind"], "not-a-file", "{v}");
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).3, 1, "{j}");
    let failed = json_lines(&ws.cpia(&["query", "--failed", "--json"]));
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["unit"], format!("{x},{y}"));
    assert_eq!(failed[0]["source"], "W:CMU-1-Small-Region.svs");
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("cannot write"));
    let log = json_lines(&ws.cpia(&["log", "--json"]));
    let last = log.last().unwrap();
    assert_eq!(last["failures"].as_array().unwrap().len(), 1, "{last}");
    std::fs::remove_dir_all(&blocked).unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).3, 0, "{j}");
    assert!(json_lines(&ws.cpia(&["query", "--failed", "--json"])).is_empty());
    assert_clean(&ws, "the repaired cell");

    // ROI: a class edit (the name does not use {class}) and a metadata edit.
    let ws = Ws::two_collections(&td);
    let classed = |class: &str| {
        format!(
            "{}\n[[route]]\nsub_dataset = \"{{collection}}\"\nscale = \"M\"\nclass = \"{class}\"\n",
            common::recipe("A", "A")
        )
    };
    ws.write("recipes/a.toml", &classed("tumour"));
    ws.build(&[]);
    let path = format!(
        "M/A/{}",
        common::IMAGES_A[0].split('.').next().unwrap().to_string() + ".jpg"
    );
    let v = json_of(&ws.cpia(&["why", &path, "--json"]));
    assert_eq!(v["class"], "tumour", "{v}");
    ws.write("recipes/a.toml", &classed("normal"));
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 0, "{j}");
    let w = json_of(&ws.cpia(&["why", &path, "--json"]));
    assert_eq!(w["class"], "normal");
    assert_ne!(w["recipe"]["hash"], v["recipe"]["hash"]);
    assert_eq!(
        w["build"]["id"], v["build"]["id"],
        "made by the first build still"
    );
}

#[test]
fn library_versions_are_recorded_shown_by_why_and_counted_by_status_not_keyed() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let path = "M/A/histolab_tcga-lung-rgb.jpg";
    let why = json_of(&ws.cpia(&["why", path, "--json"]));
    let libs = &why["libraries"];
    let now = libs["now"].as_str().unwrap().to_string();
    assert_eq!(libs["recorded"], now.as_str(), "{why}");
    assert!(
        now.contains("libjpeg-turbo ") && now.contains("png "),
        "{now}"
    );
    assert_eq!(libs["differences"], serde_json::json!([]));
    let status = stdout(&ws.cpia(&["status"]));
    assert!(!status.contains("library versions"), "{status}");

    // As if A had been built by a cpia with another png, and B before
    // library versions were recorded at all.
    let db = state(&ws);
    let png = now
        .split(", ")
        .find(|p| p.starts_with("png "))
        .unwrap()
        .to_string();
    let a_prov: i64 = db
        .query_row(
            "SELECT DISTINCT o.prov FROM outputs o JOIN inputs i ON i.id = o.input
               JOIN collections c ON c.id = i.collection WHERE c.name = 'A'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "INSERT INTO libraries (versions) VALUES (?1)",
        [now.replace(&png, "png 0.0.1")],
    )
    .unwrap();
    db.execute(
        "UPDATE provenance SET libraries = last_insert_rowid() WHERE id = ?1",
        [a_prov],
    )
    .unwrap();
    db.execute(
        "UPDATE outputs SET prov = (SELECT max(id) + 1 FROM provenance)
          WHERE input IN (SELECT i.id FROM inputs i JOIN collections c ON c.id = i.collection
                           WHERE c.name = 'B')",
        [],
    )
    .unwrap();
    db.execute(
        "INSERT INTO provenance (id, recipe_hash, tool_version, libraries)
         SELECT max(id) + 1, 'old', 'cpia 0.0.9', NULL FROM provenance",
        [],
    )
    .unwrap();
    drop(db);

    let difference = format!("png 0.0.1 → {}", &png[4..]);
    let why = json_of(&ws.cpia(&["why", path, "--json"]));
    assert_eq!(
        why["libraries"]["differences"],
        serde_json::json!([difference])
    );
    let text = stdout(&ws.cpia(&["why", path]));
    assert!(text.contains(&difference), "{text}");
    let status = stdout(&ws.cpia(&["status"]));
    let a = common::IMAGES_A.len();
    let b = common::IMAGES_B.len();
    assert!(
        status.contains(&format!(
            "note: A: {a} output(s) made with other library versions ({difference})"
        )),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "note: B: {b} output(s) made with library versions not recorded"
        )),
        "{status}"
    );
    let j = json_of(&ws.cpia(&["status", "--json"]));
    let other = j["other_libraries"].as_array().unwrap();
    assert_eq!(other.len(), 2, "{j}");
    assert_eq!(other[0]["collection"], "A");
    assert_eq!(other[0]["outputs"], a as u64);
    assert_eq!(other[1]["libraries"], serde_json::Value::Null);

    // Recorded, not keyed: nothing is rebuilt. A metadata-only edit updates
    // the records' recipe hash but keeps the versions that made the pixels.
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 0, "{j}");
    let recipe = ws.path("recipes/a.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(
        &recipe,
        text.replace("kind = \"roi\"", "kind = \"roi\"\nlicence = \"CC0-1.0\""),
    )
    .unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j).0, 0, "{j}");
    let after = json_of(&ws.cpia(&["why", path, "--json"]));
    assert_ne!(after["recipe"]["hash"], why["recipe"]["hash"], "{after}");
    assert_eq!(
        after["libraries"]["differences"],
        serde_json::json!([difference]),
        "a metadata update claimed the new libraries made the old pixels"
    );
}
