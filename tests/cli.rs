//! The commands around the build: `new`, `check`, `demo`, workspace discovery.

mod common;

use common::{stderr, stdout, Ws};

#[test]
fn new_writes_recipes_that_check() {
    let ws = Ws::empty();
    ws.write("cpia.toml", "[sources]\nX = \"x\"\n");
    for (name, kind) in [("MyROI", "roi"), ("MyWSI", "wsi")] {
        let out = ws.cpia(&["new", name, "--kind", kind]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(ws.path(&format!("recipes/{name}.toml")).is_file());
        let again = ws.cpia(&["new", name, "--kind", kind]);
        assert_eq!(again.status.code(), Some(2), "must not overwrite");
    }
    let out = ws.cpia(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ok: recipes/MyROI.toml") && text.contains("ok: recipes/MyWSI.toml"),
        "{text}"
    );
    let out = ws.cpia(&["new", "../evil"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn commands_outside_a_workspace_say_how_to_get_one() {
    let ws = Ws::empty();
    let out = ws.cpia(&["build"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no cpia.toml found") && stderr(&out).contains("`cpia init`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_demo_builds_and_rebuilds_nothing() {
    let _td = require_testdata!();
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpia"))
        .args(["demo"])
        .arg(&demo)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("standardized dataset:"), "{text}");
    for dir in [
        "L/BreaKHis_40x",
        "M/BreaKHis_100x",
        "M/NCT-CRC-HE-100K",
        "S/P_vivax",
        "XL/WSI-demo-3840",
        "L/WSI-demo-960",
        "M/WSI-demo-384",
        "S/WSI-demo-96",
        "qc/WSI-demo",
    ] {
        let n = std::fs::read_dir(demo.join("dataset").join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(n > 0, "demo wrote nothing into {dir}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpia"))
        .args(["build", "--json"])
        .current_dir(&demo)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["built"], 0, "{j}");
    assert_eq!(j["failed"], 0, "{j}");
}
