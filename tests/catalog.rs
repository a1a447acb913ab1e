//! The CPIA catalog (`recipes/`, 103 collections) through the real binary:
//! `cpia init` writes it and it checks; every ROI recipe builds a synthetic
//! tree shaped like its collection (tests/catalog_trees.txt) and every file
//! lands in the right scale, sub-dataset, class and name, while the non-inputs
//! beside them do not; every WSI recipe builds a generated slide at all four
//! scales; and what is built is named and scaled as the published CPIA tables
//! say (shared/cpia: a need of the tests, tests/common/need.rs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::trees::{plant, trees, Images, Tree, APPLE_DOUBLE};
use common::{counts, stderr, stdout, Ws};

// ---- workspaces --------------------------------------------------------------

/// `cpia init --catalog cpia` into a fresh folder.
fn catalog_ws() -> Ws {
    let ws = Ws::empty();
    let out = ws.cpia(&["init", "--catalog", "cpia"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ws
}

/// The recipes of the catalog by kind: (collection name, source root).
fn catalog(kind: cpia::recipe::Kind) -> Vec<(String, String)> {
    cpia::catalog::recipes()
        .map(|(rel, _)| cpia::catalog::load(rel).unwrap_or_else(|d| panic!("{rel}: {d}")))
        .filter(|r| r.collection.kind == kind)
        .map(|r| (r.collection.name, r.inputs.source))
        .collect()
}

/// Every file under `root`, relative, `/`-separated.
fn files_under(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap();
            rel.iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

/// The images under an output folder: every file but the manifests a build
/// keeps beside them (tests/provenance.rs checks those).
fn images_under(root: &Path) -> BTreeSet<String> {
    files_under(root)
        .into_iter()
        .filter(|f| !f.starts_with("manifests/"))
        .collect()
}

// ---- the published tables ----------------------------------------------------

/// The rows of a CSV file with a header, as maps (quoted fields may hold commas).
fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let split = |line: &str| -> Vec<String> {
        let (mut fields, mut cur, mut quoted) = (vec![], String::new(), false);
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        fields
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split(lines.next().unwrap());
    lines
        .map(|l| header.iter().cloned().zip(split(l)).collect())
        .collect()
}

/// (published scale sheet, sub-dataset) of every row of `data_type`.
fn published(dir: &Path, data_type: &str) -> BTreeSet<(String, String)> {
    csv(&dir.join("catalog-counts.csv"))
        .into_iter()
        .filter(|r| r["data_type"] == data_type)
        .map(|r| (r["scale_sheet"].clone(), r["sub_dataset"].clone()))
        .collect()
}

/// Built and published (sheet, sub-dataset) rows are the same; the message
/// lists the rows on one side only.
fn same_rows(built: &BTreeSet<(String, String)>, published: &BTreeSet<(String, String)>) {
    let extra: Vec<_> = built.difference(published).collect();
    let missing: Vec<_> = published.difference(built).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "built but not published: {extra:?}; published but not built: {missing:?}"
    );
}

/// The published sheet of a built scale: the tables list the 3840-px WSI
/// sub-datasets on sheet L (docs/recipes.md, "The CPIA catalog").
fn sheet(scale: &str) -> String {
    if scale == "XL" { "L" } else { scale }.to_string()
}

// ---- tests -----------------------------------------------------------------

#[test]
fn init_writes_the_catalog_and_it_checks() {
    let ws = catalog_ws();
    let out = ws.cpia(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("ok: "))
            .count(),
        103
    );

    // Every source root a recipe reads is configured, under the comment that
    // says where the collection is downloaded.
    let config = std::fs::read_to_string(ws.path("cpia.toml")).unwrap();
    let parsed = cpia::workspace::Workspace::open(ws.root()).unwrap();
    for (rel, _) in cpia::catalog::recipes() {
        let r = cpia::catalog::load(rel).unwrap();
        let root = &r.inputs.source;
        assert_eq!(
            parsed.sources.get(root),
            Some(
                &std::path::absolute(ws.root())
                    .unwrap()
                    .join("sources")
                    .join(root)
            ),
            "{rel}"
        );
        let entry = config
            .split("\n\n")
            .find(|block| block.lines().any(|l| l.starts_with(&format!("{root} = "))))
            .unwrap_or_else(|| panic!("no [sources] entry for {root}"));
        assert!(entry.contains(&format!("(recipes/{rel})")), "{entry}");
        match &r.collection.url {
            Some(url) => assert!(entry.contains(&format!("# download: {url}\n")), "{entry}"),
            None => assert!(entry.contains("no page recorded"), "{entry}"),
        }
    }

    // An existing workspace is never overwritten.
    let before = std::fs::read(ws.path("cpia.toml")).unwrap();
    std::fs::write(ws.path("recipes/breakhis.toml"), "# edited\n").unwrap();
    let again = ws.cpia(&["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("cpia.toml already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(ws.path("cpia.toml")).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(ws.path("recipes/breakhis.toml")).unwrap(),
        "# edited\n"
    );
}

#[test]
fn init_refuses_a_folder_with_its_files_and_empty_writes_templates_only() {
    let ws = Ws::empty();
    ws.write("w/recipes/breakhis.toml", "# mine\n");
    let out = ws.cpia(&["init", "w"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("recipes/breakhis.toml already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        files_under(&ws.path("w")),
        BTreeSet::from(["recipes/breakhis.toml".to_string()])
    );

    let out = ws.cpia(&["init", "--empty", "e"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written = files_under(&ws.path("e"));
    let templates: BTreeSet<String> = cpia::catalog::templates()
        .map(|(rel, _)| format!("recipes/{rel}"))
        .chain(["cpia.toml".to_string()])
        .collect();
    assert_eq!(written, templates);
    let parsed = cpia::workspace::Workspace::open(&ws.path("e")).unwrap();
    assert!(parsed.sources.is_empty());
    let e = ws.path("e");
    let out = ws.cpia(&["--workspace", e.to_str().unwrap(), "new", "Mine"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.path("e/recipes/Mine.toml").is_file());

    // Outside a workspace, `new` says how to make one and writes nothing.
    let out = ws.cpia(&["new", "Stray"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cpia init"), "{}", stderr(&out));
    assert!(!ws.path("recipes").exists());
}

/// The catalog workspace with two collections downloaded: they are built,
/// the other 101 are "source not available" (not an error: exit 0), and
/// `list`/`status` say which.
#[test]
fn init_then_build_with_two_sources_builds_them_and_reports_101_unavailable() {
    let td = require_testdata!();
    let ws = catalog_ws();
    for (image, at) in [
        (
            "histolab_tcga-lung-rgb.png",
            "sources/BreakHis/BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A-14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png",
        ),
        (
            "skimage_ihc.png",
            "sources/BreakHis/BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/SOB_M_DC-14-2523/100X/SOB_M_DC-14-2523-100-012.png",
        ),
        (
            "nct-crc-he-100k_kather1.tif",
            "sources/NCT-CRC-HE-100K/NCT-CRC-HE-100K/ADI/ADI-AAAFLCLY.tif",
        ),
    ] {
        ws.copy_in(&td, image, at);
    }
    // An empty folder is "not downloaded" too (an unmounted disk looks like this).
    std::fs::create_dir_all(ws.path("sources/GasHisSDB")).unwrap();
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(counts(&j), (3, 0, 0, 0), "{j}");
    let unavailable: BTreeSet<&str> = j["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["collection"].as_str().unwrap())
        .collect();
    assert_eq!(unavailable.len(), 101, "{j}");
    assert!(!unavailable.contains("BreakHis") && !unavailable.contains("NCT-CRC-HE-100K"));
    assert!(unavailable.contains("GasHisSDB"));
    assert_eq!(
        images_under(&ws.path("dataset")),
        BTreeSet::from([
            "L/BreaKHis_40x/adenosis_SOB_B_A-14-22549AB-40-001.jpg".to_string(),
            "M/BreaKHis_100x/ductal_carcinoma_SOB_M_DC-14-2523-100-012.jpg".to_string(),
            "M/NCT-CRC-HE-100K/ADI-AAAFLCLY.jpg".to_string(),
        ])
    );
    // Without --json the summary says so; a no-op is still exit 0.
    let out = ws.cpia(&["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("101 collection(s) with no source available"),
        "{}",
        stderr(&out)
    );
    // --require-sources makes the missing ones errors.
    let out = ws.cpia(&["build", "--require-sources", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let out = ws.cpia(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cols = list["collections"].as_array().unwrap();
    assert_eq!(cols.len(), 103);
    let available: BTreeMap<&str, u64> = cols
        .iter()
        .filter(|c| c["source_available"] == true)
        .map(|c| (c["name"].as_str().unwrap(), c["outputs"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        available,
        BTreeMap::from([("BreakHis", 2), ("NCT-CRC-HE-100K", 1)])
    );
    let out = ws.cpia(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["summary"]["sources_not_available"], 101);
    assert_eq!(st["summary"]["collections_built"], 2);
    assert_eq!(st["summary"]["images"], 3);
}

#[test]
fn every_roi_recipe_lands_every_file_where_its_collection_says() {
    let td = require_testdata!();
    let trees = trees();
    let names: BTreeSet<String> = trees.iter().map(|t| t.collection.clone()).collect();
    let roi = catalog(cpia::recipe::Kind::Roi);
    assert_eq!(
        names,
        roi.iter().map(|(n, _)| n.clone()).collect(),
        "every ROI recipe needs a tree, every tree a recipe"
    );
    for t in &trees {
        let (_, root) = roi.iter().find(|(n, _)| *n == t.collection).unwrap();
        assert_eq!(
            &t.root, root,
            "{}: the recipe reads source root {root}",
            t.collection
        );
        assert!(
            t.files.iter().any(|(_, e)| e.is_some()),
            "{}: no input",
            t.collection
        );
    }

    let ws = catalog_ws();
    let all: Vec<&Tree> = trees.iter().collect();
    let expected = plant(&ws, &all, &Images::load(&td));

    let mut args: Vec<&str> = vec!["-j", "2"];
    args.extend(names.iter().map(String::as_str));
    let (j, out) = ws.build(&args);
    assert!(out.status.success(), "{j}\n{}", stderr(&out));
    assert_eq!(counts(&j).3, 0, "{j}");

    let built = images_under(&ws.path("dataset"));
    let want: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(
        built.difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "files that should not have been built"
    );
    assert_eq!(
        want.difference(&built).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "files that were not built"
    );
    assert_eq!(counts(&j), (expected.len() as u64, 0, 0, 0), "{j}");
    // The records, through the state's flat view (docs/state.md).
    let db = rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT path, collection, source_rel, class, scale, sub_dataset FROM output_records",
        )
        .unwrap();
    #[allow(clippy::type_complexity)]
    let records: BTreeMap<String, (String, String, Option<String>, String, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), expected.len());
    for (output, (collection, file, class)) in &expected {
        let r = records
            .get(output)
            .unwrap_or_else(|| panic!("no record of {output}"));
        assert_eq!((&r.0, &r.1, &r.2), (collection, file, class), "{output}");
        let (scale, rest) = output.split_once('/').unwrap();
        let sub = rest.split_once('/').unwrap().0;
        assert_eq!((r.3.as_str(), r.4.as_str()), (scale, sub), "{output}");
        let img = image::open(ws.path(&format!("dataset/{output}"))).unwrap();
        assert_eq!((img.width(), img.height()), (384, 384), "{output}");
    }

    // What was built is what the published tables list, row by row.
    let Some(dir) = common::need::part(common::need::tables) else {
        return;
    };
    let got: BTreeSet<(String, String)> = expected
        .keys()
        .map(|o| {
            let mut p = o.split('/');
            (sheet(p.next().unwrap()), p.next().unwrap().to_string())
        })
        .collect();
    let mut published = published(&dir, "ROIs");
    // pRCC is in the collection table but has no published row; it is built at M.
    published.insert(("M".into(), "pRCC".into()));
    same_rows(&got, &published);
}

#[test]
fn every_wsi_recipe_builds_a_generated_slide_at_all_four_scales() {
    let td = require_testdata!();
    // The smallest slide with one inner cell (3x3 cells at 20x), whose inner
    // cell is tissue, so every scale gets tiles; once as Aperio SVS, once as a
    // generic TIFF for CAM16.
    let tissue = cpia::fixture::load_tissue(&td.join(cpia::fixture::TISSUE_SLIDE)).unwrap();
    let spec = (0..64)
        .map(|seed| cpia::fixture::SlideSpec::aperio_20x(3, 3, seed))
        .find(|s| {
            cpia::fixture::Mosaic::new(s, &tissue)
                .unwrap()
                .cell_kind(1, 1)
                == cpia::fixture::CellKind::Tissue
        })
        .expect("a seed whose inner cell is tissue");
    let cache = cpia::fixture::fixture_cache_dir();
    let svs = cpia::fixture::cached_fixture(&spec, &cache).unwrap();
    let tif = cpia::fixture::cached_fixture(&spec.clone().generic_tiff(), &cache).unwrap();

    let ws = catalog_ws();
    std::fs::create_dir_all(ws.path("slides/svs")).unwrap();
    std::fs::create_dir_all(ws.path("slides/tif")).unwrap();
    std::os::unix::fs::symlink(&svs, ws.path("slides/svs/TCGA-XX-0001-01Z-00-DX1.svs")).unwrap();
    std::os::unix::fs::symlink(&tif, ws.path("slides/tif/tumor_001.tif")).unwrap();
    ws.write("slides/svs/MANIFEST.txt", "not a slide\n");
    ws.write_bytes("slides/svs/._TCGA-XX-0001-01Z-00-DX1.svs", APPLE_DOUBLE);
    ws.write("slides/tif/tumor_001.xml", "<annotations/>\n");
    let wsi = catalog(cpia::recipe::Kind::Wsi);
    assert_eq!(wsi.len(), 55);
    let mut config = String::from("[sources]\n");
    for (_, root) in &wsi {
        let folder = if root == "CAM16" {
            "slides/tif"
        } else {
            "slides/svs"
        };
        config.push_str(&format!("{root} = \"{folder}\"\n"));
    }
    ws.write("cpia.toml", &config);

    let mut args: Vec<&str> = vec!["-j", "2"];
    args.extend(wsi.iter().map(|(n, _)| n.as_str()));
    let (j, out) = ws.build(&args);
    assert!(out.status.success(), "{j}\n{}", stderr(&out));
    assert_eq!(counts(&j).3, 0, "{j}");

    // Every collection: tiles at XL/L/M/S in <collection>-<size>, the same
    // tiles for every recipe (one slide, one standard), and a QC picture.
    let built = files_under(&ws.path("dataset"));
    let mut reference: Option<BTreeSet<String>> = None;
    let mut folders = BTreeSet::new();
    for (name, _) in &wsi {
        let slide = if name == "CAM16" {
            "tumor_001"
        } else {
            "TCGA-XX-0001-01Z-00-DX1"
        };
        let mut tiles = BTreeSet::new();
        for (scale, size) in [("XL", 3840), ("L", 960), ("M", 384), ("S", 96)] {
            let dir = format!("{scale}/{name}-{size}/");
            let here: BTreeSet<String> = built
                .iter()
                .filter_map(|f| f.strip_prefix(&dir))
                .map(|f| {
                    let rest = f
                        .strip_prefix(&format!("{slide}-"))
                        .unwrap_or_else(|| panic!("{dir}{f}"));
                    format!("{scale}/{rest}")
                })
                .collect();
            assert!(!here.is_empty(), "{name}: nothing in {dir}");
            folders.insert((sheet(scale), format!("{name}-{size}")));
            tiles.extend(here);
        }
        assert!(
            built.contains(&format!("qc/{name}/{slide}.png")),
            "{name}: no QC picture"
        );
        match &reference {
            None => reference = Some(tiles),
            Some(r) => assert_eq!(&tiles, r, "{name}: other tiles than the others"),
        }
    }
    let db = rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT DISTINCT collection, mpp_origin FROM unit_records")
        .unwrap();
    let origins: BTreeSet<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (name, _) in &wsi {
        let want = if name == "CAM16" {
            "tiff-resolution"
        } else {
            "openslide"
        };
        assert!(
            origins.contains(&(name.clone(), want.to_string())),
            "{name}: {origins:?}"
        );
    }

    let Some(dir) = common::need::part(common::need::tables) else {
        return;
    };
    same_rows(&folders, &published(&dir, "WSIs"));
}

#[test]
fn the_catalog_is_the_published_collection_tables() {
    let Some(dir) = common::need::tables() else {
        return;
    };
    let recipes: BTreeMap<String, cpia::recipe::Recipe> = cpia::catalog::recipes()
        .map(|(rel, _)| cpia::catalog::load(rel).unwrap())
        .map(|r| (r.collection.name.clone(), r))
        .collect();
    // The reference's table gives the suffix its own preparation step wrote
    // for these (JPEG copies); the recipes read the files as distributed.
    let distributed = BTreeMap::from([
        ("BreakHis", "png"),
        ("GasHisSDB", "png"),
        ("SIPaKMeD", "bmp"),
        ("warwick_CLS", "bmp"),
    ]);
    let mut seen = BTreeSet::new();
    for row in csv(&dir.join("roi-collections.csv")) {
        let name = &row["collection"];
        let r = recipes
            .get(name)
            .unwrap_or_else(|| panic!("no recipe for ROI collection {name}"));
        assert_eq!(r.collection.kind, cpia::recipe::Kind::Roi, "{name}");
        let suffix = distributed
            .get(name.as_str())
            .copied()
            .unwrap_or(&row["suffix"]);
        assert!(
            r.inputs.suffixes.iter().any(|s| s == suffix),
            "{name}: {:?}",
            r.inputs.suffixes
        );
        // "add class": the output name starts with the class. SIPaKMeD's file
        // names repeat in every class folder, so its recipe adds the class too.
        let adds = r.name.as_str().starts_with("{class}_");
        assert_eq!(
            adds,
            row["add_class"] == "true" || name == "SIPaKMeD",
            "{name}: name {}",
            r.name.as_str()
        );
        seen.insert(name.clone());
    }
    for row in csv(&dir.join("wsi-collections.csv")) {
        let name = &row["collection"];
        let r = recipes
            .get(name)
            .unwrap_or_else(|| panic!("no recipe for WSI collection {name}"));
        assert_eq!(r.collection.kind, cpia::recipe::Kind::Wsi, "{name}");
        assert_eq!(r.inputs.suffixes, vec![row["suffix"].clone()], "{name}");
        seen.insert(name.clone());
    }
    assert_eq!(seen.len(), 103);
    assert_eq!(
        seen,
        recipes.keys().cloned().collect(),
        "recipes of no published collection"
    );
}
