//! Pauses for tests: `CPIA_DEBUG_PAUSE=<point>:<file>` makes a build stop at
//! `<point>`, create `<file>`, and wait until `<file>` is removed (or ten
//! minutes pass, so a forgotten pause never hangs a machine). The tests of
//! what a build notices about changes made *while it runs* use it to make
//! those changes at a known moment, without depending on timing.
//!
//! Points: `planned` (a local build, after planning and before any work),
//! `executed` (after its work, before its end records folder identities),
//! `merged` (a Slurm build, after its tasks' journals are merged, before its
//! end).

use std::time::{Duration, Instant};

/// The variable naming the pause.
pub const PAUSE_VAR: &str = "CPIA_DEBUG_PAUSE";

/// Pauses at `point` if [`PAUSE_VAR`] names it.
pub fn pause(point: &str) {
    let Some(spec) = std::env::var_os(PAUSE_VAR) else {
        return;
    };
    let spec = spec.to_string_lossy();
    let Some(file) = spec
        .split_once(':')
        .and_then(|(p, f)| (p == point && !f.is_empty()).then_some(f))
    else {
        return;
    };
    let file = std::path::Path::new(file);
    if std::fs::write(file, point).is_err() {
        return;
    }
    let start = Instant::now();
    while file.exists() && start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(10));
    }
}
