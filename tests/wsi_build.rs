//! The WSI operator family through the real binary: parity with an
//! independent Python implementation of the CPIA standard, the MPP chain,
//! per-unit incrementality, errors, determinism and crash safety — on the
//! real slides of shared/testdata and on slides generated from their tissue.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{counts, stderr, wsi_recipe, Ws, SMALL_GEOMETRY};

/// Whether python3 has openslide-python and Pillow (a missing need: a skip,
/// or in CI a failure).
fn python_reference_available() -> bool {
    common::need::python(&["openslide", "PIL"])
}

/// Tile names per scale computed by tests/reference/cpia_wsi_reference.py
/// (only called once [`python_reference_available`] said yes).
fn reference(slide: &Path, args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/cpia_wsi_reference.py");
    let mut all: Vec<&std::ffi::OsStr> = vec![slide.as_os_str()];
    all.extend(["--names-only", "--json"].map(std::ffi::OsStr::new));
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let out = common::python::run_file(&["openslide", "PIL"], &script, &all)
        .expect("the Python reference, found a moment ago");
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    ["XL", "L", "M", "S"]
        .iter()
        .map(|s| {
            let names = j["tiles"][s]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (s.to_string(), names)
        })
        .collect()
}

/// Tile names per scale that cpia wrote for `slide` (its name up to the first dot).
fn ours(ws: &Ws, slide: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for scale in ["XL", "L", "M", "S"] {
        let mut set = BTreeSet::new();
        if let Ok(dirs) = std::fs::read_dir(ws.path(&format!("dataset/{scale}"))) {
            for d in dirs.flatten() {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix(&format!("{slide}-"));
                    // `{slide}-{size}-{x}-{y}.jpg`: exactly three fields after the slide name.
                    if rest.is_some_and(|r| r.split('-').count() == 3) {
                        set.insert(name);
                    }
                }
            }
        }
        out.insert(scale.to_string(), set);
    }
    out
}

fn state(ws: &Ws) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap()
}

/// (mpp, origin) recorded for a slide's units.
fn recorded_mpp(ws: &Ws, rel: &str) -> Option<(f64, String)> {
    state(ws)
        .query_row(
            "SELECT mpp, mpp_origin FROM unit_records WHERE source_rel = ?1 LIMIT 1",
            [rel],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
}

fn debug_counter(out: &std::process::Output, name: &str) -> u64 {
    let text = stderr(out);
    let re = regex::Regex::new(&format!(r"{name}=(\d+)")).unwrap();
    re.captures(&text)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn build_counted(ws: &Ws, args: &[&str]) -> (serde_json::Value, std::process::Output) {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let out = common::process::output(ws.command(&all).env("CPIA_DEBUG_COUNTERS", "1"));
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (j, out)
}

#[test]
fn real_slides_match_the_python_reference() {
    let td = require_testdata!();
    if !python_reference_available() {
        return;
    }
    let wsi = td.join("wsi");
    let ws = Ws::wsi(
        &[
            (
                &wsi.join("CMU-1-Small-Region.svs"),
                "CMU-1-Small-Region.svs",
            ),
            (
                &wsi.join("CMU-1-Small-Region-pyramid3.DERIVED.svs"),
                "CMU-1-Small-Region-pyramid3.DERIVED.svs",
            ),
            (
                &wsi.join("tcga-cr-7395-01a-01-ts1.svs"),
                "tcga-cr-7395-01a-01-ts1.svs",
            ),
        ],
        &wsi_recipe(
            "W",
            &format!("[mpp.overrides]\n\"tcga-*\" = 0.2520\n{SMALL_GEOMETRY}"),
        ),
    );
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).3, 0);
    let geometry = [
        "--xl",
        "384",
        "--l",
        "96",
        "--m",
        "48",
        "--s",
        "12",
        "--s-index",
        "10",
    ];
    for (file, slide, extra) in [
        ("CMU-1-Small-Region.svs", "CMU-1-Small-Region", None),
        (
            "CMU-1-Small-Region-pyramid3.DERIVED.svs",
            "CMU-1-Small-Region-pyramid3",
            None,
        ),
        (
            "tcga-cr-7395-01a-01-ts1.svs",
            "tcga-cr-7395-01a-01-ts1",
            Some("0.2520"),
        ),
    ] {
        let mut args: Vec<&str> = geometry.to_vec();
        if let Some(m) = extra {
            args.extend(["--mpp-override", m]);
        }
        let want = reference(&wsi.join(file), &args);
        let got = ours(&ws, slide);
        for scale in ["XL", "L", "M", "S"] {
            assert!(
                !want[scale].is_empty(),
                "{slide} {scale}: the reference found no tiles"
            );
            assert_eq!(got[scale], want[scale], "{slide} at scale {scale}");
        }
    }
}

#[test]
fn the_mpp_chain_on_real_slides() {
    let td = require_testdata!();
    let wsi = td.join("wsi");
    let slides = [
        (wsi.join("CMU-1-Small-Region.svs"), "CMU-1-Small-Region.svs"),
        (
            wsi.join("openslide-python_boxes.tiff"),
            "openslide-python_boxes.tiff",
        ),
        (
            wsi.join("tcga-cr-7395-01a-01-ts1.svs"),
            "tcga-cr-7395-01a-01-ts1.svs",
        ),
        (
            wsi.join("openslide-python_small.svs"),
            "openslide-python_small.svs",
        ),
    ];
    let refs: Vec<(&Path, &str)> = slides.iter().map(|(p, n)| (p.as_path(), *n)).collect();
    let ws = Ws::wsi(&refs, &wsi_recipe("W", SMALL_GEOMETRY));
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failures = j["failures"].to_string();
    assert!(
        failures.contains("openslide-python_boxes.tiff") && failures.contains("72 dpi"),
        "{failures}"
    );
    assert!(
        failures.contains("tcga-cr-7395-01a-01-ts1.svs")
            && failures.contains("no microns-per-pixel"),
        "{failures}"
    );
    assert_eq!(j["failures"].as_array().unwrap().len(), 2, "{failures}");
    let (mpp, origin) = recorded_mpp(&ws, "CMU-1-Small-Region.svs").unwrap();
    assert_eq!((mpp, origin.as_str()), (0.499, "openslide"));
    // The 16x16 slide: zero tiles, not an error; its QC picture is recorded.
    assert!(ws.path("dataset/qc/W/openslide-python_small.png").is_file());
    assert!(ours(&ws, "openslide-python_small")
        .values()
        .all(BTreeSet::is_empty));

    // With an override, the TCGA crop is accepted (and takes the resize path).
    ws.write(
        "recipes/w.toml",
        &wsi_recipe(
            "W",
            &format!("[mpp.overrides]\n\"tcga-cr-7395-01a-01-ts1\" = 0.2520\n{SMALL_GEOMETRY}"),
        ),
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(j["failures"].as_array().unwrap().len(), 1, "{j}");
    let (mpp, origin) = recorded_mpp(&ws, "tcga-cr-7395-01a-01-ts1.svs").unwrap();
    assert_eq!((mpp, origin.as_str()), (0.252, "override"));
    assert!(!ours(&ws, "tcga-cr-7395-01a-01-ts1")["XL"].is_empty());
}

#[test]
fn per_unit_incrementality_on_real_slides() {
    let td = require_testdata!();
    let wsi = td.join("wsi");
    let ws = Ws::wsi(
        &[
            (&wsi.join("CMU-1-Small-Region.svs"), "a.svs"),
            (
                &wsi.join("CMU-1-Small-Region-pyramid3.DERIVED.svs"),
                "b.svs",
            ),
        ],
        &wsi_recipe("W", SMALL_GEOMETRY),
    );
    let (j, out) = build_counted(&ws, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let total = counts(&j).0;
    let before = ws.snapshot();
    let s_files = before.keys().filter(|k| k.starts_with("S/")).count() as u64;
    assert!(s_files > 0);

    // No-op, and a touched slide: nothing opened, read or written.
    let (j, out) = build_counted(&ws, &[]);
    assert_eq!(counts(&j), (0, total, 0, 0));
    assert_eq!(debug_counter(&out, "regions_read"), 0);
    let bytes = std::fs::read(ws.path("src/a.svs")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(ws.path("src/a.svs"), &bytes).unwrap();
    let (j, out) = build_counted(&ws, &[]);
    assert_eq!(counts(&j), (0, total, 0, 0));
    assert_eq!(debug_counter(&out, "slides_opened"), 0);
    assert_eq!(debug_counter(&out, "regions_read"), 0);
    assert_eq!(ws.snapshot(), before);

    // An S-only parameter: only S tiles are rewritten; XL, L, M files keep their bytes and mtimes.
    let text = wsi_recipe(
        "W",
        &SMALL_GEOMETRY.replace("size = 12", "size = 12\npick = 11"),
    );
    ws.write("recipes/w.toml", &text);
    let plan = common::stdout(&ws.cpia(&["plan", "--explain"]));
    assert!(
        plan.contains("parameter `pick` of step `S` changed (10 -> 11)"),
        "{plan}"
    );
    let (j, _) = build_counted(&ws, &[]);
    let after = ws.snapshot();
    for (path, v) in &before {
        if !path.starts_with("S/") {
            assert_eq!(
                after.get(path),
                Some(v),
                "{path} was rewritten by an S-only change"
            );
        }
    }
    let s_after = after.keys().filter(|k| k.starts_with("S/")).count() as u64;
    let (built, _, removed, failed) = counts(&j);
    assert_eq!((built, removed, failed), (s_after, s_files, 0));
    assert!(after
        .keys()
        .filter(|k| k.starts_with("S/"))
        .all(|k| !before.contains_key(k)));

    // One slide's bytes change: only its units are rebuilt, and only it is read.
    let before = ws.snapshot();
    std::fs::copy(wsi.join("CMU-1-Small-Region.svs"), ws.path("src/b.svs")).unwrap();
    let (j, out) = build_counted(&ws, &[]);
    assert_eq!(counts(&j).3, 0);
    // b's new bytes are a's, whose metadata is cached by content hash: no
    // probe. The engine opens b once (one handle shared by all workers) and
    // never opens a.
    assert_eq!(
        debug_counter(&out, "slides_opened"),
        1,
        "exactly one open: b, for reading"
    );
    let after = ws.snapshot();
    for (path, v) in &before {
        if path.contains("/a-") || path.ends_with("/a.png") {
            assert_eq!(
                after.get(path),
                Some(v),
                "{path} of the unchanged slide was touched"
            );
        }
    }
    // b now holds a's bytes, so its tiles are a's tiles under b's name.
    let names = |s: &str| -> BTreeSet<String> {
        ours(&ws, s)
            .into_values()
            .flatten()
            .map(|n| n.split_once('-').unwrap().1.to_string())
            .collect()
    };
    assert_eq!(names("a"), names("b"));
}

#[test]
fn bad_slides_fail_alone() {
    let td = require_testdata!();
    let wsi = td.join("wsi");
    let ws = Ws::wsi(
        &[
            (&wsi.join("CMU-1-Small-Region.svs"), "good.svs"),
            (&td.join("roi/skimage_ihc.png"), "not-a-slide.svs"),
        ],
        &wsi_recipe("W", SMALL_GEOMETRY),
    );
    let full = std::fs::read(wsi.join("CMU-1-Small-Region.svs")).unwrap();
    ws.write_bytes("src/truncated.svs", &full[..full.len() / 2]);
    ws.write_bytes("src/empty.svs", b"");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let failures = j["failures"].as_array().unwrap();
    for name in ["not-a-slide.svs", "truncated.svs", "empty.svs"] {
        assert!(
            failures
                .iter()
                .any(|f| f["input"].as_str().unwrap().contains(name)),
            "{name} not reported: {j}"
        );
    }
    assert!(
        !failures
            .iter()
            .any(|f| f["input"].as_str().unwrap().contains("good.svs")),
        "{j}"
    );
    assert!(
        !ours(&ws, "good")["XL"].is_empty(),
        "the good slide was not built"
    );
}

/// Two slides whose names agree up to the first dot would write tiles of
/// the same names: both fail, naming each other (it was an index that
/// could panic), and the other slides of the collection still build.
#[test]
fn slides_sharing_a_name_fail_naming_each_other_and_the_others_build() {
    let td = require_testdata!();
    let wsi = td.join("wsi");
    let slide = wsi.join("CMU-1-Small-Region.svs");
    let ws = Ws::wsi(
        &[
            (&slide, "good.svs"),
            (&slide, "twin.svs"),
            (&slide, "twin.copy.svs"),
        ],
        &wsi_recipe("W", SMALL_GEOMETRY),
    );
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failures = j["failures"].as_array().unwrap();
    for name in ["twin.svs", "twin.copy.svs"] {
        let f = failures
            .iter()
            .find(|f| f["input"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not reported: {j}"));
        let error = f["error"].as_str().unwrap();
        assert!(
            error.contains("twin.copy.svs and twin.svs")
                && error.contains("same name up to the first dot"),
            "{name}: {error}"
        );
    }
    assert_eq!(failures.len(), 2, "{j}");
    assert!(ours(&ws, "twin").values().all(|s| s.is_empty()), "{j}");
    assert!(!ours(&ws, "good")["XL"].is_empty(), "{j}");
}

/// A unit's recorded tiles that cannot be read (a damaged state) stop the
/// plan with an error naming what failed; they used to be taken as "no
/// tiles", so a rebuilt unit left its old tiles behind as orphans.
#[test]
fn an_unreadable_tile_record_is_an_error_not_an_empty_list() {
    let td = require_testdata!();
    let ws = Ws::wsi(
        &[(&td.join("wsi/CMU-1-Small-Region.svs"), "a.svs")],
        &wsi_recipe("W", SMALL_GEOMETRY),
    );
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let damaged = state(&ws)
        .execute(
            "UPDATE tiles SET x = 'x' || x WHERE unit IN \
             (SELECT units.id FROM units JOIN out_dirs ON out_dirs.id = units.out_dir \
              WHERE out_dirs.path LIKE 'S/%')",
            [],
        )
        .unwrap();
    assert!(damaged > 0, "no S tile recorded");
    // An S-only parameter: the S units are rebuilt, so their recorded
    // tiles are read to know what to replace.
    ws.write(
        "recipes/w.toml",
        &wsi_recipe(
            "W",
            &SMALL_GEOMETRY.replace("size = 12", "size = 12\npick = 11"),
        ),
    );
    let before = ws.snapshot();
    let out = ws.cpia(&["build"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "the damaged records were not noticed: {err}"
    );
    assert!(err.contains("reading tiles"), "{err}");
    assert_eq!(
        ws.snapshot(),
        before,
        "a build that could not plan changed outputs"
    );
}

// ---- Full CPIA geometry on generated slides -------------------------------

fn fixture(spec: &cpia::fixture::SlideSpec) -> Option<PathBuf> {
    common::testdata()?;
    Some(cpia::fixture::cached_fixture(spec, &cpia::fixture::fixture_cache_dir()).expect("fixture"))
}

fn link_ws(slide: &Path, name: &str, recipe: &str) -> Ws {
    let ws = Ws::wsi(&[], recipe);
    std::os::unix::fs::symlink(slide, ws.path(&format!("src/{name}"))).unwrap();
    ws
}

#[test]
fn generated_slides_match_the_python_reference_at_full_geometry() {
    let _td = require_testdata!();
    if !python_reference_available() {
        return;
    }
    for (spec, name) in [
        (cpia::fixture::SlideSpec::aperio_20x(5, 4, 11), "gen20.svs"),
        (cpia::fixture::SlideSpec::aperio_40x(5, 3, 12), "gen40.svs"),
    ] {
        let slide = fixture(&spec).unwrap();
        let ws = link_ws(&slide, name, &wsi_recipe("G", ""));
        let (_, out) = ws.build(&[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let want = reference(&slide, &[]);
        let got = ours(&ws, name.split('.').next().unwrap());
        assert!(
            !want["XL"].is_empty() && !want["S"].is_empty(),
            "{name}: a fixture without tiles tests nothing"
        );
        // The reference names tiles after the file it opened (the cached fixture).
        let rename = |set: &BTreeSet<String>| -> BTreeSet<String> {
            set.iter()
                .map(|n| {
                    n.split_once('-')
                        .map(|x| x.1.to_string())
                        .unwrap_or_default()
                })
                .collect()
        };
        let stem = slide.file_stem().unwrap().to_string_lossy().into_owned();
        let stem = stem.split('.').next().unwrap().to_string();
        for scale in ["XL", "L", "M", "S"] {
            let want: BTreeSet<String> = want[scale]
                .iter()
                .map(|n| n.strip_prefix(&format!("{stem}-")).unwrap().to_string())
                .collect();
            assert_eq!(rename(&got[scale]), want, "{name} at scale {scale}");
        }
    }
}

#[test]
fn generated_slide_builds_are_deterministic_and_survive_sigkill() {
    let _td = require_testdata!();
    let slide = fixture(&cpia::fixture::SlideSpec::aperio_20x(5, 4, 11)).unwrap();
    let a = link_ws(&slide, "s.svs", &wsi_recipe("G", ""));
    let b = link_ws(&slide, "s.svs", &wsi_recipe("G", ""));
    let killed = link_ws(&slide, "s.svs", &wsi_recipe("G", ""));
    let (ja, _) = a.build(&["-j", "1"]);
    let (jb, _) = b.build(&["-j", "2"]);
    assert_eq!(counts(&ja), counts(&jb));
    let bytes = |ws: &Ws| {
        ws.snapshot()
            .into_iter()
            .map(|(k, (b, _))| (k, b))
            .collect::<Vec<_>>()
    };
    let reference = bytes(&a);
    assert_eq!(bytes(&b), reference, "-j 1 and -j 2 differ");

    let mut child = killed
        .command(&["build", "-j", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Frozen once 20 tiles are in place and killed while frozen: the tiles
    // on disk at the kill are the ones counted.
    let at_kill = common::process::signal_after_outputs(
        &mut child,
        &killed.path("dataset"),
        20,
        libc::SIGKILL,
    );
    child.wait().unwrap();
    let total = reference
        .iter()
        .filter(|(k, _)| k.ends_with(".jpg"))
        .count();
    assert!(at_kill < total, "the build finished before the kill");
    let (j, out) = killed.build(&["-j", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).3, 0);
    assert_eq!(
        bytes(&killed),
        reference,
        "kill + rebuild differs from an uninterrupted build"
    );
    for e in walkdir::WalkDir::new(killed.path("dataset"))
        .into_iter()
        .flatten()
    {
        let n = e.file_name().to_string_lossy();
        assert!(
            !n.ends_with(".tmp") && n != ".cpia-tmp",
            "stray {}",
            e.path().display()
        );
    }
}

/// The XL cells (i, j) that `ws` wrote for slide `stem`.
fn kept_cells(ws: &Ws, stem: &str) -> BTreeSet<(u32, u32)> {
    ours(ws, stem)["XL"]
        .iter()
        .map(|n| {
            let f: Vec<u32> = n
                .trim_end_matches(".jpg")
                .rsplitn(3, '-')
                .take(2)
                .map(|v| v.parse().unwrap())
                .collect();
            (f[1], f[0])
        })
        .collect()
}

#[test]
fn the_otsu_detector_keeps_tissue_cells_and_drops_glass_without_reading_them() {
    let td = require_testdata!();
    let spec = cpia::fixture::SlideSpec::aperio_20x(5, 4, 11);
    let slide = fixture(&spec).unwrap();
    let tissue = cpia::fixture::load_tissue(&td.join(cpia::fixture::TISSUE_SLIDE)).unwrap();
    let mosaic = cpia::fixture::Mosaic::new(&spec, &tissue).unwrap();
    let recipe = wsi_recipe(
        "G",
        "[[steps]]\nid = \"tissue\"\ndetector = \"otsu\"\nmin_fraction = 0.5\n",
    );
    let ws = link_ws(&slide, "s.svs", &recipe);
    let (j, out) = build_counted(&ws, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).3, 0);
    let kept = kept_cells(&ws, "s");
    let mut seen = (0, 0);
    for j in 1..=2 {
        for i in 1..=3 {
            match mosaic.cell_kind(i, j) {
                cpia::fixture::CellKind::Tissue => {
                    seen.0 += 1;
                    assert!(
                        kept.contains(&(i, j)),
                        "tissue cell ({i},{j}) rejected; kept {kept:?}"
                    );
                }
                cpia::fixture::CellKind::Blank => {
                    seen.1 += 1;
                    assert!(!kept.contains(&(i, j)), "glass cell ({i},{j}) kept");
                }
                cpia::fixture::CellKind::Mixed => {}
            }
        }
    }
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "the fixture has no tissue or no glass cell: {seen:?}"
    );
    // A cell the mask rejects is not read at level 0 (the mask and the QC
    // picture come from coarser levels): exactly the kept cells were read.
    assert_eq!(
        debug_counter(&out, "level0_pixels_read"),
        kept.len() as u64 * 3840 * 3840,
        "level-0 pixels read"
    );
    // Every cell's units are still recorded, the rejected ones with no tile
    // and their decision, which the QC picture draws.
    let db = state(&ws);
    let rejected: Vec<(u32, u32, i64, String)> = db
        .prepare(
            "SELECT i, j, outputs, r.reader FROM units u JOIN reads r ON r.id = u.read
             WHERE u.sink = 'write_XL' AND u.kept = 0 ORDER BY j, i",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rejected.len() + kept.len(), 6, "{rejected:?}");
    for (i, j, outputs, reader) in &rejected {
        assert_eq!((*outputs, reader.as_str()), (0, "none"), "cell ({i},{j})");
    }
    let units: i64 = db
        .query_row("SELECT count(*) FROM units", [], |r| r.get(0))
        .unwrap();
    assert_eq!(units, 6 * 4, "every cell × writing step is recorded");
    let qc = walkdir::WalkDir::new(ws.path("dataset"))
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(qc, 1, "the QC picture is drawn");
    // Its record names the reader that read its thumbnail: the direct reader
    // reads this fixture's coarser levels exactly (`auto`).
    let qc_reader: String = db
        .query_row(
            "SELECT r.reader FROM outputs o JOIN reads r ON r.id = o.read WHERE o.sink = 'qc'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(qc_reader, "direct");
    // Unchanged: nothing is read again.
    let (j, out) = build_counted(&ws, &[]);
    assert_eq!(counts(&j).0, 0, "{j}");
    assert_eq!(debug_counter(&out, "level0_pixels_read"), 0);
}

#[test]
fn an_otsu_recipe_on_half_glass_reads_half_the_pixels_of_the_colour_rule() {
    let _td = require_testdata!();
    // 4 × 2 interior cells, 4 of them glass (the generator's exact count).
    let spec = cpia::fixture::SlideSpec {
        blank_fraction: 0.575,
        ..cpia::fixture::SlideSpec::aperio_20x(6, 4, 17)
    };
    let slide = fixture(&spec).unwrap();
    let read = |recipe: &str| {
        let ws = link_ws(&slide, "h.svs", recipe);
        let (j, out) = build_counted(&ws, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(counts(&j).3, 0, "{j}");
        debug_counter(&out, "level0_pixels_read")
    };
    let colour = read(&wsi_recipe("H", ""));
    let otsu = read(&wsi_recipe(
        "H",
        "[[steps]]\nid = \"tissue\"\ndetector = \"otsu\"\n",
    ));
    assert_eq!(colour, 8 * 3840 * 3840, "the colour rule reads every cell");
    eprintln!(
        "level-0 pixels read: otsu {otsu}, colour rule {colour} ({:.1} %)",
        100.0 * otsu as f64 / colour as f64
    );
    assert!(
        otsu * 100 <= colour * 55,
        "otsu read {otsu} level-0 pixels, more than 55 % of the colour rule's {colour}"
    );
}

// ---- L, M and S tiles as lossless crops of the XL tile's JPEG -------------

/// The bytes of every tile under `dataset/{L,M,S}`, by path.
fn child_tiles(ws: &Ws) -> BTreeMap<String, Vec<u8>> {
    ws.snapshot()
        .into_iter()
        .filter(|(k, _)| ["L/", "M/", "S/"].iter().any(|s| k.starts_with(s)) && k.ends_with(".jpg"))
        .map(|(k, (b, _))| (k, b))
        .collect()
}

/// How the units that wrote tiles were encoded: (writing step, encoding).
fn encodings(ws: &Ws) -> BTreeSet<(String, String)> {
    state(ws)
        .prepare("SELECT DISTINCT sink, encoding FROM units WHERE outputs > 0")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn child_tiles_cut_from_the_xl_jpeg_are_the_bytes_of_their_pixels() {
    let td = require_testdata!();
    let wsi = td.join("wsi");
    let real = [
        "CMU-1-Small-Region.svs",
        "CMU-1-Small-Region-pyramid3.DERIVED.svs",
        "tcga-cr-7395-01a-01-ts1.svs",
    ];
    let small = format!("[mpp.overrides]\n\"tcga-*\" = 0.2520\n{SMALL_GEOMETRY}");
    let gen20 = fixture(&cpia::fixture::SlideSpec::aperio_20x(5, 4, 11)).unwrap();
    let gen40 = fixture(&cpia::fixture::SlideSpec::aperio_40x(5, 3, 12)).unwrap();
    // (workspace maker, recipe extras, how the tiles of each step are made
    // when the XL tile is written with the children's settings). At the
    // small geometry S is 12 px, off the 16-px grid of 4:2:0: pixels.
    let full = vec![
        ("write_XL", "pixels"),
        ("write_L", "crop"),
        ("write_M", "crop"),
        ("write_S", "crop"),
    ];
    type Case<'a> = (
        &'a str,
        Box<dyn Fn(&str) -> Ws + 'a>,
        String,
        Vec<(&'a str, &'a str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "the real test slides",
            Box::new(|r: &str| {
                let files: Vec<(PathBuf, &str)> = real.iter().map(|f| (wsi.join(f), *f)).collect();
                let refs: Vec<(&Path, &str)> =
                    files.iter().map(|(p, f)| (p.as_path(), *f)).collect();
                Ws::wsi(&refs, r)
            }),
            small.clone(),
            vec![
                ("write_XL", "pixels"),
                ("write_L", "crop"),
                ("write_M", "crop"),
                ("write_S", "pixels"),
            ],
        ),
        (
            "a generated 20x slide",
            Box::new(|r: &str| link_ws(&gen20, "g20.svs", r)),
            String::new(),
            full.clone(),
        ),
        (
            "a generated 40x slide (resized)",
            Box::new(|r: &str| link_ws(&gen40, "g40.svs", r)),
            String::new(),
            full.clone(),
        ),
    ];
    for (what, make, extra, cropped) in &cases {
        let ws_crop = make(&wsi_recipe("C", extra));
        // The XL tile at another quality: its children cannot be cut from it.
        let ws_pix = make(&wsi_recipe(
            "C",
            &format!("{extra}[[steps]]\nid = \"write_XL\"\nquality = 90\n"),
        ));
        for ws in [&ws_crop, &ws_pix] {
            let (j, out) = ws.build(&[]);
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            assert_eq!(counts(&j).3, 0, "{what}: {j}");
        }
        assert_eq!(encodings(&ws_crop), pairs(cropped), "{what}");
        let all_pixels: Vec<(&str, &str)> = cropped.iter().map(|(s, _)| (*s, "pixels")).collect();
        assert_eq!(encodings(&ws_pix), pairs(&all_pixels), "{what}");
        let (a, b) = (child_tiles(&ws_crop), child_tiles(&ws_pix));
        for scale in ["L/", "M/", "S/"] {
            assert!(
                a.keys().any(|k| k.starts_with(scale)),
                "{what}: no {scale} tile, nothing compared"
            );
        }
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{what}: the same tiles"
        );
        for (k, bytes) in &a {
            assert!(
                bytes == &b[k],
                "{what}: {k} differs from its pixel encoding"
            );
        }
    }
    // A subsampling other than the children's takes the pixel path too, and
    // `why` says how a tile was made.
    let ws = link_ws(
        &gen20,
        "g20.svs",
        &wsi_recipe(
            "C",
            "[[steps]]\nid = \"write_XL\"\nsubsampling = \"4:4:4\"\n",
        ),
    );
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        encodings(&ws).iter().all(|(_, e)| e == "pixels"),
        "{:?}",
        encodings(&ws)
    );
    let crop = link_ws(&gen20, "g20.svs", &wsi_recipe("C", ""));
    let (_, out) = crop.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let some_l = child_tiles(&crop)
        .into_keys()
        .find(|k| k.starts_with("L/"))
        .unwrap();
    for (ws, want) in [(&crop, "crop"), (&ws, "pixels")] {
        let out = ws.cpia(&["why", &format!("dataset/{some_l}"), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["wsi"]["encoding"], want, "{v}");
    }
}

#[test]
fn level_auto_reads_a_coarser_level_and_gives_the_same_decisions() {
    let td = require_testdata!();
    let wsi = td.join("wsi");
    // Target 2.0 µm/px on the 0.499 µm/px pyramid: read size ≈ 4 × 96, so
    // `auto` reads level 1 (downsample 4.002) where `finest` reads level 0.
    let geometry = |level: &str| {
        format!("[[steps]]\nid = \"XL\"\nsize = 96\ntarget_mpp = 2.0\nlevel = \"{level}\"\n[[steps]]\nid = \"L\"\nsize = 48\n[[steps]]\nid = \"M\"\nsize = 24\n[[steps]]\nid = \"S\"\nsize = 6\n")
    };
    let slide = wsi.join("CMU-1-Small-Region-pyramid3.DERIVED.svs");
    let fine = Ws::wsi(&[(&slide, "p.svs")], &wsi_recipe("W", &geometry("finest")));
    let auto = Ws::wsi(&[(&slide, "p.svs")], &wsi_recipe("W", &geometry("auto")));
    let (jf, out) = fine.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (ja, out) = auto.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&jf).3 + counts(&ja).3, 0);
    let (f, a) = (ours(&fine, "p"), ours(&auto, "p"));
    assert!(
        !f["XL"].is_empty(),
        "no XL tile at this geometry tests nothing"
    );
    assert_eq!(
        f["XL"], a["XL"],
        "the tissue decisions differ between levels"
    );
    // The pixels differ only by resampling: compare one XL tile.
    let name = f["XL"].iter().next().unwrap();
    let load = |ws: &Ws| {
        image::open(ws.path(&format!("dataset/XL/W-96/{name}")))
            .unwrap()
            .to_rgb8()
    };
    let (x, y) = (load(&fine), load(&auto));
    let diff: f64 = x
        .as_raw()
        .iter()
        .zip(y.as_raw())
        .map(|(p, q)| f64::from(p.abs_diff(*q)))
        .sum::<f64>()
        / x.as_raw().len() as f64;
    assert!(
        diff < 12.0,
        "mean abs diff {diff} between level 0 and level 1 reads"
    );
    assert!(x.as_raw() != y.as_raw(), "auto did not read another level");
}

#[test]
fn large_cells_are_deterministic_with_recycled_buffers() {
    // 40× cells (7530² regions) are built one at a time from pooled buffers
    // that still hold the previous cell's pixels; a cell rebuilt alone, from
    // fresh buffers, must give the same bytes, and so must -j 1 and -j 2.
    let _td = require_testdata!();
    let slide = fixture(&cpia::fixture::SlideSpec::aperio_40x(5, 3, 12)).unwrap();
    let a = link_ws(&slide, "s.svs", &wsi_recipe("G", ""));
    let b = link_ws(&slide, "s.svs", &wsi_recipe("G", ""));
    let (ja, out) = a.build(&["-j", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (jb, _) = b.build(&["-j", "1"]);
    assert_eq!(counts(&ja), counts(&jb));
    let bytes = |ws: &Ws| {
        ws.snapshot()
            .into_iter()
            .filter(|(k, _)| k.ends_with(".jpg"))
            .map(|(k, (b, _))| (k, b))
            .collect::<BTreeMap<_, _>>()
    };
    let reference = bytes(&a);
    assert_eq!(bytes(&b), reference, "-j 1 and -j 2 differ");

    // The XL tile of the last kept cell in build order (rows, then columns).
    let xl = ours(&a, "s")["XL"].clone();
    let cell = |n: &str| -> (u32, u32) {
        let f: Vec<u32> = n
            .trim_end_matches(".jpg")
            .rsplit('-')
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        (f[0], f[1]) // (y, x)
    };
    let last = xl.iter().max_by_key(|n| cell(n)).unwrap().clone();
    let first_cell = (1, 1);
    assert!(
        cell(&last) != first_cell,
        "the last kept cell is the first one built: nothing was recycled"
    );
    let rel = format!("XL/G-3840/{last}");
    std::fs::remove_file(a.path(&format!("dataset/{rel}"))).unwrap();
    let (j, out) = a.build(&["-j", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).0, 1, "only the deleted tile is rebuilt");
    assert_eq!(
        bytes(&a)[&rel],
        reference[&rel],
        "a cell built from fresh buffers differs from the same cell built from recycled ones"
    );
}

#[test]
fn a_tile_that_cannot_be_written_fails_its_cell_alone() {
    // Tiles are staged, synced once per cell and then renamed into place on
    // the I/O threads: a rename that fails must name the tile, fail that
    // cell's unit, keep every other tile, and be retried alone.
    let td = require_testdata!();
    let wsi = td.join("wsi");
    let ws = Ws::wsi(
        &[(&wsi.join("CMU-1-Small-Region.svs"), "good.svs")],
        &wsi_recipe("W", SMALL_GEOMETRY),
    );
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tile_files = |ws: &Ws| {
        walkdir::WalkDir::new(ws.path("dataset"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "jpg"))
            .count()
    };
    let before = tile_files(&ws);
    let xl = ours(&ws, "good")["XL"].clone();
    let victim = xl.iter().next().unwrap().clone();
    let rel = std::fs::read_dir(ws.path("dataset/XL"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join(&victim))
        .find(|p| p.exists())
        .unwrap();
    // Delete the tile and put a directory in its place: the rebuild of its
    // unit cannot rename the new file over it.
    std::fs::remove_file(&rel).unwrap();
    std::fs::create_dir_all(rel.join("blocker")).unwrap();
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let error = j["failures"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot write") && error.contains(&victim),
        "the failure names the tile: {error}"
    );
    assert_eq!(
        tile_files(&ws),
        before - 1,
        "every other tile is still there"
    );
    // The obstacle gone, only that unit is rebuilt and the build succeeds.
    std::fs::remove_dir_all(&rel).unwrap();
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).3, 0, "{j}");
    assert!(rel.is_file());
    assert_eq!(tile_files(&ws), before);
    assert!(no_temporaries(&ws));
}

fn no_temporaries(ws: &Ws) -> bool {
    walkdir::WalkDir::new(ws.path("dataset"))
        .into_iter()
        .flatten()
        .all(|e| {
            let n = e.file_name().to_string_lossy();
            !n.ends_with(".tmp") && n != ".cpia-tmp"
        })
}
