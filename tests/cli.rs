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
    let out = common::process::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_cpia"))
            .args(["demo"])
            .arg(&demo)
            .current_dir(dir.path()),
    );
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
    let out = common::process::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_cpia"))
            .args(["build", "--json"])
            .current_dir(&demo),
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["built"], 0, "{j}");
    assert_eq!(j["failed"], 0, "{j}");
}

/// `cpia check FOLDER` checks the recipes in the folder — the `.toml` files
/// directly in it, not the templates beneath — from anywhere, as `cpia
/// check` does in the workspace; an empty folder, a broken recipe and two
/// recipes of one collection are errors.
#[test]
fn check_on_a_folder_checks_the_recipes_in_it() {
    let ws = Ws::empty();
    let out = ws.cpia(&["init", "w"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let oks =
        |o: &std::process::Output| stdout(o).lines().filter(|l| l.starts_with("ok: ")).count();
    // In the workspace, as the README says, and from outside it.
    let inside =
        common::process::output(ws.command(&["check", "recipes/"]).current_dir(ws.path("w")));
    assert!(inside.status.success(), "{}", stderr(&inside));
    assert_eq!(oks(&inside), 103, "{}", stdout(&inside));
    assert!(
        !stdout(&inside).contains("templates/"),
        "{}",
        stdout(&inside)
    );
    let outside = ws.cpia(&["check", "w/recipes"]);
    assert!(outside.status.success(), "{}", stderr(&outside));
    assert_eq!(oks(&outside), 103);
    assert!(stdout(&outside).contains("ok: w/recipes/breakhis.toml (BreakHis)"));
    // The same recipes `cpia check` reads in the workspace.
    let plain = common::process::output(ws.command(&["check"]).current_dir(ws.path("w")));
    assert_eq!(oks(&plain), 103, "{}", stderr(&plain));

    // A folder with no recipe: an error naming it.
    std::fs::create_dir_all(ws.path("empty")).unwrap();
    let out = ws.cpia(&["check", "empty"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("empty: no recipe in this folder"),
        "{}",
        stderr(&out)
    );

    // A broken recipe and a second recipe of one collection, beside good ones.
    ws.write("mine/a.toml", &common::recipe("A", "A"));
    ws.write(
        "mine/b.toml",
        "[collection]\nname = \"B\"\nkind = \"roi\"\n[[steps]]\nid = \"d\"\nop = \"decoed\"\n",
    );
    ws.write("mine/c.toml", &common::recipe("A", "A"));
    ws.write("mine/templates/centre.toml", common::TEMPLATE);
    let out = ws.cpia(&["check", "mine"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("mine/b.toml:6:"), "{err}");
    assert!(err.contains("decoed"), "{err}");
    assert!(
        err.contains("mine/a.toml and mine/c.toml both name collection `A`"),
        "{err}"
    );
    assert_eq!(oks(&out), 2, "{}", stdout(&out));
}
