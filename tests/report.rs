//! `cpia list`, `cpia status` and `cpia report` on a real build: a catalog
//! ROI recipe (BreakHis) on real images with one corrupt file, a WSI
//! collection on the real test slides (one of them with an MPP override),
//! and a catalog recipe whose source is not there. What they say is checked
//! against the build's own summary and the files on disk; the HTML report is
//! opened in a real headless Chromium (DevTools protocol over a pipe), from
//! a copy of the output folder elsewhere.

mod common;

#[path = "common/cdp.rs"]
mod cdp;

use std::collections::BTreeMap;
use std::path::Path;

use common::{stderr, stdout, Ws};
use serde_json::Value;

const BREAKHIS: &str = "BreaKHis_v1/histology_slides/breast";

/// The workspace: BreakHis (catalog recipe) with five real images and one
/// corrupt file, `Small` (examples/recipes/small.toml) with two real
/// slides, and GasHisSDB (catalog recipe) with no source.
fn workspace(td: &Path) -> Ws {
    let ws = Ws::empty();
    ws.write(
        "cpia.toml",
        "[sources]\nBreakHis = \"sources/BreakHis\"\nSLIDES = \"sources/slides\"\n",
    );
    for (rel, text) in cpia::catalog::templates() {
        ws.write(&format!("recipes/{rel}"), text);
    }
    for rel in ["breakhis.toml", "gashissdb.toml"] {
        ws.write(&format!("recipes/{rel}"), cpia::catalog::file(rel).unwrap());
    }
    let small = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipes/small.toml"),
    )
    .unwrap();
    ws.write("recipes/small.toml", &small);
    for (image, at) in [
        (
            "histolab_tcga-lung-rgb.png",
            "benign/SOB/adenosis/SOB_B_A-14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png",
        ),
        (
            "skimage_ihc.png",
            "benign/SOB/adenosis/SOB_B_A-14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png",
        ),
        (
            "tiatoolbox_source_image.png",
            "malignant/SOB/ductal_carcinoma/SOB_M_DC-14-2523/40X/SOB_M_DC-14-2523-40-010.png",
        ),
        (
            "histolab_medium-nuclei-score-level1.png",
            "malignant/SOB/ductal_carcinoma/SOB_M_DC-14-2523/200X/SOB_M_DC-14-2523-200-002.png",
        ),
        (
            "histolab_kidney-ihc-level0-310-500-360-530.png",
            "malignant/SOB/papillary_carcinoma/SOB_M_PC-14-9146/400X/SOB_M_PC-14-9146-400-001.png",
        ),
    ] {
        ws.copy_in(td, image, &format!("sources/BreakHis/{BREAKHIS}/{at}"));
    }
    ws.write(
        &format!("sources/BreakHis/{BREAKHIS}/malignant/SOB/lobular_carcinoma/SOB_M_LC-14-12204/100X/SOB_M_LC-14-12204-100-001.png"),
        "this is not a PNG",
    );
    for slide in ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"] {
        let bytes = std::fs::read(td.join("wsi").join(slide)).unwrap();
        ws.write_bytes(&format!("sources/slides/{slide}"), &bytes);
    }
    ws
}

/// Image files per scale folder and QC pictures, counted on disk.
fn on_disk(dataset: &Path) -> (BTreeMap<String, u64>, BTreeMap<String, u64>, u64) {
    let mut per_scale = BTreeMap::new();
    let mut per_sub = BTreeMap::new();
    let mut qc = 0;
    for e in walkdir::WalkDir::new(dataset).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(dataset)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["qc", _, _] => qc += 1,
            [scale, sub, _] => {
                *per_scale.entry(scale.to_string()).or_default() += 1;
                *per_sub.entry(format!("{scale}/{sub}")).or_default() += 1;
            }
            _ => {}
        }
    }
    (per_scale, per_sub, qc)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

/// A built workspace and the build's JSON summary.
fn built(td: &Path) -> (Ws, Value) {
    let ws = workspace(td);
    let (summary, out) = ws.build(&["-j", "2"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one corrupt file: {}",
        stderr(&out)
    );
    (ws, summary)
}

#[test]
fn list_and_status_say_what_the_build_built() {
    let td = require_testdata!();
    // Before any build: no state is created by looking.
    let ws = workspace(&td);
    let out = ws.cpia(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !ws.path("cache/state.sqlite").exists(),
        "list created a state"
    );
    let before = json(&out);
    assert!(before["collections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["outputs"] == 0));
    drop(ws);

    let (ws, summary) = built(&td);
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{summary}");
    assert_eq!(
        summary["unavailable"].as_array().unwrap().len(),
        1,
        "{summary}"
    );
    let (per_scale, per_sub, qc) = on_disk(&ws.path("dataset"));
    let images: u64 = per_scale.values().sum();
    assert!(images > 100, "the slides gave tiles: {per_scale:?}");
    assert_eq!(images + qc, summary["built"].as_u64().unwrap());

    // list --json: exactly the shape, sub-datasets from the recipes,
    // outputs from the state equal to the files on disk.
    let out = ws.cpia(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = json(&out);
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&list), vec!["collections"]);
    let cols = list["collections"].as_array().unwrap();
    let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["BreakHis", "GasHisSDB", "Small"]);
    for c in cols {
        assert_eq!(
            keys(c),
            vec![
                "kind",
                "name",
                "organs",
                "outputs",
                "source_available",
                "sub_datasets"
            ]
        );
        let name = c["name"].as_str().unwrap();
        let mut files = 0;
        for sd in c["sub_datasets"].as_array().unwrap() {
            assert_eq!(keys(sd), vec!["name", "scale"]);
            files += per_sub
                .get(&format!(
                    "{}/{}",
                    sd["scale"].as_str().unwrap(),
                    sd["name"].as_str().unwrap()
                ))
                .copied()
                .unwrap_or(0);
        }
        assert_eq!(c["outputs"].as_u64(), Some(files), "{name}");
    }
    let breakhis = &cols[0];
    assert_eq!(breakhis["kind"], "roi");
    assert_eq!(breakhis["source_available"], true);
    assert_eq!(breakhis["organs"], serde_json::json!(["breast"]));
    assert_eq!(
        breakhis["sub_datasets"],
        serde_json::json!([
            {"name": "BreaKHis_40x", "scale": "L"},
            {"name": "BreaKHis_100x", "scale": "M"},
            {"name": "BreaKHis_200x", "scale": "M"},
            {"name": "BreaKHis_400x", "scale": "M"}
        ])
    );
    assert_eq!(
        breakhis["outputs"], 5,
        "five real images; the corrupt file failed"
    );
    let gashis = &cols[1];
    assert_eq!(
        (
            gashis["source_available"].as_bool(),
            gashis["outputs"].as_u64()
        ),
        (Some(false), Some(0))
    );
    let small = &cols[2];
    assert_eq!(small["kind"], "wsi");
    assert_eq!(
        small["sub_datasets"],
        serde_json::json!([
            {"name": "Small-384", "scale": "XL"},
            {"name": "Small-96", "scale": "L"},
            {"name": "Small-48", "scale": "M"},
            {"name": "Small-12", "scale": "S"}
        ])
    );
    let text = stdout(&ws.cpia(&["list"]));
    assert!(
        text.contains("L: BreaKHis_40x  \u{b7}  M: BreaKHis_100x, BreaKHis_200x, BreaKHis_400x"),
        "{text}"
    );

    // status --json: totals per published sheet are the files on disk.
    let out = ws.cpia(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    let s = &st["summary"];
    assert_eq!(s["images"].as_u64(), Some(images));
    assert_eq!(s["qc_pictures"].as_u64(), Some(qc));
    assert_eq!(s["sources_available"], 2);
    assert_eq!(s["sources_not_available"], 1);
    assert_eq!(s["failed_inputs"], 1);
    assert_eq!(s["slides"], 2);
    assert_eq!(
        s["mpp_fallback_slides"], 1,
        "the TCGA crop's MPP is an override"
    );
    let scale = |k: &str| per_scale.get(k).copied().unwrap_or(0);
    for sheet in st["sheets"].as_array().unwrap() {
        let want = match sheet["sheet"].as_str().unwrap() {
            "L" => scale("XL") + scale("L"),
            other => scale(other),
        };
        assert_eq!(sheet["built"].as_u64(), Some(want), "{sheet}");
    }
    let by_name = |n: &str| {
        st["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("BreakHis")["status"], "failures");
    assert_eq!(by_name("BreakHis")["published"], 7909);
    assert_eq!(by_name("GasHisSDB")["status"], "not available");
    assert_eq!(by_name("Small")["status"], "complete");
    assert_eq!(by_name("Small")["inputs"], 2);
    assert_eq!(by_name("Small")["complete"], 2);
    let text = stdout(&ws.cpia(&["status"]));
    assert!(
        text.contains("failures   1 input(s) in 1 collection(s)"),
        "{text}"
    );
    assert!(
        text.contains("sources    2 available, 1 not available"),
        "{text}"
    );

    // A recipe edit makes the collection's inputs incomplete (nothing rebuilt yet).
    let recipe = ws.path("recipes/small.toml");
    let edited = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("pick = 10", "pick = 11");
    std::fs::write(&recipe, edited).unwrap();
    let st = json(&ws.cpia(&["status", "--json"]));
    let small = st["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Small")
        .unwrap()
        .clone();
    assert_eq!(
        (small["status"].as_str(), small["complete"].as_u64()),
        (Some("incomplete"), Some(0))
    );
}

#[test]
fn the_report_opens_in_chromium_and_shows_the_builds_counts() {
    let td = require_testdata!();
    let (ws, summary) = built(&td);
    let (per_scale, _, qc) = on_disk(&ws.path("dataset"));
    let images: u64 = per_scale.values().sum();
    assert_eq!(images + qc, summary["built"].as_u64().unwrap());

    let out = ws.cpia(&["report"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = ws.path("dataset/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Nothing to fetch: no script, stylesheet link, import, CSS url() or
    // remote picture (external links are plain <a href>).
    for needle in [
        "<script",
        "<link",
        "@import",
        "url(",
        "src=\"http",
        "<iframe",
    ] {
        assert!(!html.contains(needle), "the page contains `{needle}`");
    }

    // The other formats, from the same data.
    let out = ws.cpia(&["report", "--format", "json", "-o", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["summary"]["images"].as_u64(), Some(images));
    assert_eq!(j["sheets"].as_array().unwrap().len(), 3);
    // `-o` creates no folder (issue 19, D1): the user's folder exists.
    std::fs::create_dir_all(ws.path("elsewhere")).unwrap();
    let out = ws.cpia(&["report", "-o", "elsewhere/r.md"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(ws.path("elsewhere/r.md")).unwrap();
    assert!(
        md.contains(&format!(
            "| images built (all scales) | {} |",
            group(images)
        )),
        "{md}"
    );
    assert!(
        md.contains("](../dataset/"),
        "links relative to the report: {md}"
    );

    // The rendering in a real browser: a part of this test that needs Chromium.
    let Some(chromium) = common::need::part(common::need::chromium) else {
        return;
    };
    // The output folder copied elsewhere: the page must not need the workspace.
    let copy = tempfile::tempdir().unwrap();
    let moved = copy.path().join("cpia-dataset");
    copy_tree(&ws.path("dataset"), &moved);
    drop(ws);

    let mut b = cdp::Browser::start(&chromium, 1280, 900);
    b.open(&format!("file://{}", moved.join("report.html").display()));
    let errors = b.errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");

    let num = |b: &mut cdp::Browser, js: &str| -> u64 {
        b.eval(js)
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{js}"))
    };
    assert_eq!(
        num(
            &mut b,
            "document.querySelector('#summary-images').dataset.value"
        ),
        images
    );
    assert_eq!(
        num(
            &mut b,
            "document.querySelector('#summary-qc').dataset.value"
        ),
        qc
    );
    assert_eq!(
        num(
            &mut b,
            "document.querySelector('#sheet-total').dataset.built"
        ),
        images
    );
    let scale = |k: &str| per_scale.get(k).copied().unwrap_or(0);
    for (sheet, want) in [
        ("L", scale("XL") + scale("L")),
        ("M", scale("M")),
        ("S", scale("S")),
    ] {
        assert_eq!(
            num(
                &mut b,
                &format!("document.querySelector('#sheet-{sheet}').dataset.built")
            ),
            want,
            "sheet {sheet}"
        );
    }
    for s in ["XL", "L", "M", "S"] {
        assert_eq!(
            num(
                &mut b,
                &format!("document.querySelector('#scale-{s}').dataset.images")
            ),
            scale(s),
            "scale {s}"
        );
    }
    // The rendered text says the same as the attributes.
    let text = b
        .eval("document.querySelector('#sheet-total').innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&group(images)), "{text}");
    // Published beside built, per sub-dataset.
    let row = b.eval(
        "(() => { const r = document.querySelector('tr[data-sub-dataset=\"BreaKHis_40x\"]'); \
         return [r.dataset.built, r.dataset.published, r.cells[6].innerText]; })()",
    );
    assert_eq!(row, serde_json::json!(["2", "1995", "\u{2212}1,993"]));
    // Failures with their reason; the MPP override.
    let failures = b
        .eval("document.querySelector('#status').innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        failures.contains("SOB_M_LC-14-12204-100-001.png"),
        "{failures}"
    );
    assert!(failures.contains("override"), "{failures}");
    // Every picture is embedded and decodes; QC pictures and sample tiles are there.
    let pictures = b.eval(
        "Array.from(document.images).map(i => [i.className, i.src.slice(0, 23), i.naturalWidth > 0])",
    );
    let pictures = pictures.as_array().unwrap();
    assert!(
        pictures
            .iter()
            .all(|p| p[1] == "data:image/jpeg;base64," && p[2] == true),
        "{pictures:?}"
    );
    let kinds = |k: &str| pictures.iter().filter(|p| p[0] == k).count();
    assert_eq!(kinds("qc"), 2, "one QC picture per slide");
    assert!(
        kinds("tile") >= 4 + 4,
        "samples of 4 BreakHis and 4 WSI sub-datasets: {pictures:?}"
    );
    // Links to files are relative and resolve in the copy.
    let links = b.eval(
        "Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))\
         .filter(h => !h.startsWith('#') && !h.startsWith('http'))",
    );
    let links = links.as_array().unwrap();
    assert!(links.len() > 10, "{links:?}");
    for l in links {
        let l = l.as_str().unwrap();
        assert!(!l.starts_with('/') && !l.contains("://"), "{l}");
        let path = moved.join(percent_decode(l));
        assert!(
            path.exists(),
            "{l} does not resolve next to the copied report"
        );
    }

    let png = b.screenshot(1280);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    eprintln!("screenshot of the report: {}", shot.display());
    assert!(b.errors().is_empty(), "{:#?}", b.errors());
}

fn group(n: u64) -> String {
    let d = n.to_string();
    let mut s = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).into_iter().flatten() {
        let rel = e.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The browser check can fail: a page with a missing picture, a
/// `console.error` and an uncaught exception gives three errors.
#[test]
fn the_browser_check_sees_page_errors() {
    let Some(chromium) = common::need::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"missing.png\">\
         <script>console.error('visible'); throw new Error('uncaught');</script></body></html>",
    )
    .unwrap();
    let mut b = cdp::Browser::start(&chromium, 800, 600);
    b.open(&format!("file://{}", page.display()));
    let errors = b.errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.starts_with("exception:") && e.contains("uncaught")));
    assert!(errors
        .iter()
        .any(|e| e.starts_with("console.") && e.contains("visible")));
    assert!(errors
        .iter()
        .any(|e| e.starts_with("log:") && e.contains("missing.png")));
}
