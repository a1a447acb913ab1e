//! What a test needs from the machine, and the one rule for when it is
//! missing.
//!
//! The needs: the shared test data (`CPIA_TESTDATA`, else the nearest
//! `shared/testdata` beside or above the checkout), the published CPIA tables
//! (`CPIA_TABLES`, else `shared/cpia` found the same way), python3 with given
//! modules, Chromium, and the Slurm test cluster. Each lookup returns the thing
//! or `None`; on `None` the test returns without running its checks, and
//! [`missing`] has already decided what that means:
//!
//! - with `CPIA_TEST_STRICT=1` (set by `scripts/test.sh`, so by CI) the test
//!   **fails**, naming what is missing and how to get it;
//! - otherwise it is a **skip**, written to stderr and appended to the file
//!   `CPIA_TEST_SKIP_LOG` names (`scripts/test.sh` sets it and ends the run
//!   with the count of tests that ran their checks and of those skipped).
//!
//! A need is only ever about the machine: once the thing is there, anything
//! that goes wrong with it (a file of the test data that does not decode,
//! Pillow failing on our JPEG) fails the test.
//!
//! This file is compiled twice: into the integration tests (`tests/common`)
//! and into the library's unit tests (`src/lib.rs`, `#[path]`), so both follow
//! the same rule and find the test data the same way
//! (`fixture::testdata_dir`, which the fixture tooling uses too). `super::lib`
//! is the `cpia` library in both places.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `1`: a missing need fails the test (CI). Anything else: it is a skip.
pub const STRICT: &str = "CPIA_TEST_STRICT";
/// A file each skip appends one line to: `<test>\t<whole|part>\t<what>`.
pub const SKIP_LOG: &str = "CPIA_TEST_SKIP_LOG";

/// Whether a missing need fails the test.
pub fn strict() -> bool {
    std::env::var(STRICT).as_deref() == Ok("1")
}

/// The running test, as `<test binary>::<test name>` (libtest names each
/// test's thread after the test).
pub fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// The test cannot run its checks because `what` is missing (`remedy` says
/// how to provide it): fails the test in strict mode, else records a skip
/// (of the whole test, or of the part a [`part`] lookup is for).
pub fn missing(what: &str, remedy: &str) {
    let extent = if PART.with(Cell::get) {
        "part"
    } else {
        "whole"
    };
    report(what, remedy, extent);
}

thread_local! {
    static PART: Cell<bool> = const { Cell::new(false) };
}

/// Runs `lookup` for one part of a test that has run its other checks: if
/// the need is missing, only that part is skipped (and counted so).
pub fn part<T>(lookup: impl FnOnce() -> T) -> T {
    PART.with(|p| p.set(true));
    let found = lookup();
    PART.with(|p| p.set(false));
    found
}

fn report(what: &str, remedy: &str, extent: &str) {
    let test = current_test();
    if strict() {
        panic!("{test}: missing {what} ({remedy}); {STRICT}=1, so a missing need fails the test");
    }
    let part = if extent == "part" { " (in part)" } else { "" };
    eprintln!("SKIPPED{part}: {test}: missing {what} ({remedy})");
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        let line = format!("{test}\t{extent}\t{what}\n");
        // O_APPEND: lines of tests running in parallel do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "{test}: cannot record the skip in {}: {e}",
                Path::new(&log).display()
            );
        }
    }
}

/// The shared real test data (`roi/`, `wsi/`), or `None` after [`missing`].
pub fn testdata() -> Option<PathBuf> {
    let remedy = "set CPIA_TESTDATA to the shared test data, or put it in shared/testdata \
                  beside or above the checkout";
    let Some(dir) = super::lib::fixture::testdata_dir() else {
        missing("the shared test data", remedy);
        return None;
    };
    for sub in ["roi", "wsi"] {
        if !dir.join(sub).is_dir() {
            missing(
                &format!("the shared test data ({} has no {sub}/)", dir.display()),
                remedy,
            );
            return None;
        }
    }
    Some(dir)
}

/// The bytes of `rel` in the shared test data, or `None` after [`missing`]
/// when the test data is absent. A file missing from present test data
/// fails the test: that is not the machine's doing.
pub fn testdata_file(rel: &str) -> Option<Vec<u8>> {
    let path = testdata()?.join(rel);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => panic!(
            "{}: {e} (the shared test data is incomplete)",
            path.display()
        ),
    }
}

/// The published CPIA tables (`catalog-counts.csv`, `roi-collections.csv`,
/// `wsi-collections.csv`): `CPIA_TABLES`, else the nearest `shared/cpia`
/// beside or above the checkout; `None` after [`missing`].
pub fn tables() -> Option<PathBuf> {
    let dir = std::env::var_os("CPIA_TABLES")
        .map(PathBuf::from)
        .or_else(|| super::lib::fixture::shared_dir("cpia"));
    match dir {
        Some(d) if d.join("catalog-counts.csv").is_file() => Some(d),
        _ => {
            missing(
                "the published CPIA tables (shared/cpia/catalog-counts.csv)",
                "set CPIA_TABLES, or put them in shared/cpia beside or above the checkout",
            );
            None
        }
    }
}

/// Whether python3 imports every one of `modules` (checked once per set);
/// `false` after [`missing`].
pub fn python(modules: &[&str]) -> bool {
    static SEEN: Mutex<Option<HashMap<String, Result<(), String>>>> = Mutex::new(None);
    let key = modules.join(", ");
    let result = {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        seen.get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_insert_with(|| probe_python(modules))
            .clone()
    };
    match result {
        Ok(()) => true,
        Err(what) => {
            missing(
                &what,
                "scripts/setup.sh installs python3 and the modules the tests use",
            );
            false
        }
    }
}

fn probe_python(modules: &[&str]) -> Result<(), String> {
    let import = format!("import {}", modules.join(", "));
    match std::process::Command::new("python3")
        .args(["-c", &import])
        .output()
    {
        Err(e) => Err(format!("python3 ({e})")),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 module(s) {} (`{import}`: {})",
            modules.join(", "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        )),
    }
}

/// The Chromium binary (`CPIA_CHROMIUM`, else Debian's `chromium`), or
/// `None` after [`missing`].
pub fn chromium() -> Option<PathBuf> {
    let found = match std::env::var_os("CPIA_CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    };
    if found.is_none() {
        missing(
            "Chromium (/usr/bin/chromium, or CPIA_CHROMIUM)",
            "scripts/setup.sh installs Debian's chromium",
        );
    }
    found
}

/// Whether the Slurm test cluster is up (`scripts/test.sh` starts one with
/// `scripts/slurm-up.sh`, which exports `CPIA_TEST_SLURM=1` and
/// `SLURM_CONF`); `false` after [`missing`].
pub fn slurm() -> bool {
    let up = std::env::var("CPIA_TEST_SLURM").as_deref() == Ok("1");
    if !up {
        missing(
            "the Slurm test cluster (CPIA_TEST_SLURM=1)",
            "run ./scripts/test.sh as root, or eval \"$(scripts/slurm-up.sh)\" before cargo test",
        );
    }
    up
}
