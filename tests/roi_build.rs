//! The incremental engine on ROI collections, driven through the real binary
//! on the real images of shared/testdata.

mod common;

use common::{counts, stderr, Ws};

const N: u64 = (common::IMAGES_A.len() + common::IMAGES_B.len()) as u64;

#[test]
fn first_build_writes_everything_and_second_build_nothing() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (N, 0, 0, 0));
    let first = ws.snapshot();
    assert_eq!(first.len() as u64, N, "{:?}", first.keys());
    assert!(first.contains_key("M/A/histolab_tcga-lung-rgb.jpg"));
    assert!(first.contains_key("M/B/skimage_ihc.jpg"));
    for (path, (bytes, _)) in &first {
        let img = image::load_from_memory(bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((img.width(), img.height()), (384, 384), "{path}");
    }
    let (j, out) = ws.build(&[]);
    assert!(out.status.success());
    assert_eq!(counts(&j), (0, N, 0, 0));
    assert_eq!(ws.snapshot(), first, "a no-op build changed files");
}

#[test]
fn touching_rebuilds_nothing_and_changing_bytes_rebuilds_that_source() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let before = ws.snapshot();

    // Same bytes, new mtime: early cutoff.
    let a = ws.path("sources/A/histolab_tcga-lung-rgb.png");
    let bytes = std::fs::read(&a).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&a, &bytes).unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (0, N, 0, 0));
    assert_eq!(ws.snapshot(), before);

    // Different bytes: exactly that source's output is rebuilt.
    ws.copy_in(
        &td,
        "histolab_tissue-level0-4302-10273-4814-10785.png",
        "sources/A/histolab_tcga-lung-rgb.png",
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (1, N - 1, 0, 0));
    let after = ws.snapshot();
    for (path, v) in &before {
        if path == "M/A/histolab_tcga-lung-rgb.jpg" {
            assert_ne!(&after[path].0, &v.0, "changed source, same output bytes");
        } else {
            assert_eq!(&after[path], v, "{path} was rewritten");
        }
    }
}

#[test]
fn a_parameter_change_rebuilds_only_that_collection_and_is_explained() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let before = ws.snapshot();
    let mut text = common::recipe("B", "B");
    text.push_str("\n[[steps]]\nid = \"encode\"\nquality = 90\n");
    ws.write("recipes/b.toml", &text);

    let out = ws.cpia(&["plan", "--explain"]);
    let plan = common::stdout(&out);
    assert!(
        plan.contains("parameter `quality` of step `encode` changed (75 -> 90)"),
        "{plan}"
    );
    let out = ws.cpia(&["plan", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = j["actions"].as_array().unwrap();
    assert_eq!(actions.len(), common::IMAGES_B.len());
    assert!(actions
        .iter()
        .all(|a| a["action"] == "build" && a["output"].as_str().unwrap().starts_with("M/B/")));

    let (j, _) = ws.build(&[]);
    assert_eq!(
        counts(&j),
        (
            common::IMAGES_B.len() as u64,
            common::IMAGES_A.len() as u64,
            0,
            0
        )
    );
    let after = ws.snapshot();
    for (path, v) in &before {
        if path.starts_with("M/B/") {
            assert_ne!(after[path].0, v.0, "{path} not rebuilt");
        } else {
            assert_eq!(&after[path], v, "{path} was rewritten");
        }
    }
}

#[test]
fn deleted_sources_and_damaged_outputs_are_handled() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    std::fs::remove_file(ws.path("sources/A/nct-crc-he-100k_kather1.tif")).unwrap();
    let plan = common::stdout(&ws.cpia(&["plan", "--explain"]));
    assert!(
        plan.contains("source nct-crc-he-100k_kather1.tif was deleted"),
        "{plan}"
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (0, N - 1, 1, 0));
    assert!(!ws.path("dataset/M/A/nct-crc-he-100k_kather1.jpg").exists());

    // Deleted output: rebuilt. Altered output: rebuilt.
    let gone = ws.path("dataset/M/B/skimage_ihc.jpg");
    let good = std::fs::read(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let altered = ws.path("dataset/M/A/histolab_tcga-lung-rgb.jpg");
    let original = std::fs::read(&altered).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&altered, &bad).unwrap();
    // The default check notices the deletion (its folder changed) but not a
    // file rewritten in place (docs/state.md "What a no-op notices");
    // --check-outputs stats every output and notices both.
    let plan = common::stdout(&ws.cpia(&["plan", "--explain"]));
    assert!(plan.contains("output missing on disk"), "{plan}");
    assert!(!plan.contains("output modified on disk"), "{plan}");
    let plan = common::stdout(&ws.cpia(&["plan", "--explain", "--check-outputs"]));
    assert!(plan.contains("output missing on disk"), "{plan}");
    assert!(plan.contains("output modified on disk"), "{plan}");
    let (j, _) = ws.build(&["--check-outputs"]);
    assert_eq!(counts(&j), (2, N - 3, 0, 0));
    assert_eq!(std::fs::read(&gone).unwrap(), good);
    assert_eq!(std::fs::read(&altered).unwrap(), original);
}

#[test]
fn bad_inputs_fail_alone_and_are_retried_alone() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let png = std::fs::read(td.join("roi/skimage_ihc.png")).unwrap();
    ws.write_bytes("sources/A/truncated.png", &png[..png.len() / 3]);
    ws.write_bytes("sources/A/empty.png", b"");
    ws.write_bytes("sources/A/notes.png", b"this is not an image, just text\n");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(counts(&j), (N, 0, 0, 3));
    let failures = j["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{j}");
    for name in ["truncated.png", "empty.png", "notes.png"] {
        let f = failures
            .iter()
            .find(|f| f["input"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no failure for {name}: {j}"));
        assert!(!f["error"].as_str().unwrap().is_empty());
    }
    let human = stderr(&ws.cpia(&["build"]));
    assert!(human.contains("empty.png"), "{human}");

    // The next build retries only the three.
    let out = ws.cpia(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["actions"].as_array().unwrap().len(), 3, "{plan}");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(counts(&j), (0, N, 0, 3));

    // Fixed: built, and the failure is forgotten.
    ws.write_bytes("sources/A/truncated.png", &png);
    std::fs::remove_file(ws.path("sources/A/empty.png")).unwrap();
    std::fs::remove_file(ws.path("sources/A/notes.png")).unwrap();
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (1, N, 0, 0));
}

#[test]
fn outputs_are_identical_for_one_and_two_jobs() {
    let td = require_testdata!();
    let a = Ws::two_collections(&td);
    let b = Ws::two_collections(&td);
    a.build(&["-j", "1"]);
    b.build(&["-j", "2"]);
    let bytes = |ws: &Ws| {
        ws.snapshot()
            .into_iter()
            .map(|(k, (b, _))| (k, b))
            .collect::<Vec<_>>()
    };
    assert_eq!(bytes(&a), bytes(&b));
}

#[test]
fn a_missing_source_root_keeps_every_output() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let before = ws.snapshot();
    std::fs::rename(ws.path("sources/A"), ws.path("sources/A-unmounted")).unwrap();
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let (built, _, removed, _) = counts(&j);
    assert_eq!((built, removed), (0, 0));
    let err = j["failures"][0]["error"].as_str().unwrap();
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        ws.snapshot(),
        before,
        "outputs of the unmounted collection changed"
    );

    // An empty mount point is the same.
    std::fs::create_dir_all(ws.path("sources/A")).unwrap();
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(j["failures"][0]["error"]
        .as_str()
        .unwrap()
        .contains("empty"));
    assert_eq!(ws.snapshot(), before);
}

#[test]
fn mass_removal_needs_consent() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    // Every file of A excluded by a recipe edit: 4 of 4 would be removed.
    let mut text = common::recipe("A", "A");
    text = text.replace(
        "suffixes = [\"png\", \"tif\", \"jpg\"]",
        "suffixes = [\"bmp\"]",
    );
    ws.write("recipes/a.toml", &text);
    let out = ws.cpia(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-mass-removal"));
    assert_eq!(
        ws.snapshot().len() as u64,
        N,
        "nothing may be removed without consent"
    );
    let (j, out) = ws.build(&["--allow-mass-removal"]);
    assert!(out.status.success());
    assert_eq!(counts(&j).2, common::IMAGES_A.len() as u64);
}

#[test]
fn recipes_cannot_write_outside_the_dataset() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let mut text = common::recipe("A", "A");
    text.push_str("\n[[route]]\nsub_dataset = \"../escape\"\nscale = \"M\"\n");
    ws.write("recipes/a.toml", &text);
    let out = ws.cpia(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("recipes/a.toml:"), "{err}");
    let (_, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!ws.path("escape").exists());
    assert!(!ws.path("dataset/escape").exists());
    for e in walkdir::WalkDir::new(ws.root()).into_iter().flatten() {
        if e.path().extension().is_some_and(|x| x == "jpg") {
            assert!(
                e.path().starts_with(ws.path("dataset")),
                "{}",
                e.path().display()
            );
        }
    }
}

#[test]
fn colliding_output_names_are_an_error_naming_both() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.copy_in(
        &td,
        "skimage_ihc.png",
        "sources/A/sub/histolab_tcga-lung-rgb.png",
    );
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = j["failures"].to_string();
    assert!(text.contains("sub/histolab_tcga-lung-rgb.png"), "{text}");
    assert!(text.contains("A/histolab_tcga-lung-rgb.png"), "{text}");
    assert!(!ws.path("dataset/M/A/histolab_tcga-lung-rgb.jpg").exists());
}

#[test]
fn the_stat_index_forgets_deleted_files_and_shared_roots_are_not_rehashed() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    // A third recipe on root A selecting other files than recipe a does.
    ws.write(
        "recipes/a-tif.toml",
        &common::recipe("ATif", "A").replace(
            "suffixes = [\"png\", \"tif\", \"jpg\"]",
            "suffixes = [\"tif\"]\n[output]\nname = \"tif_{stem}\"",
        ),
    );
    let rows = |ws: &Ws| -> i64 {
        rusqlite::Connection::open(ws.path("cache/state.sqlite"))
            .unwrap()
            .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
            .unwrap()
    };
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&ws), N as i64);
    let again = common::process::output(ws.command(&["build"]).env("CPIA_DEBUG_COUNTERS", "1"));
    assert!(
        stderr(&again).contains("debug: hashed_sources=0"),
        "{}",
        stderr(&again)
    );
    std::fs::remove_file(ws.path("sources/B/skimage_ihc.png")).unwrap();
    ws.build(&[]);
    assert_eq!(rows(&ws), N as i64 - 1);
}
