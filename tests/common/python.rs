//! python3 as the tests' reference implementation: Pillow for the parity of
//! the image operators, openslide-python for the WSI reference, pyarrow and
//! `prov` as the readers of what cpia writes. One way to run a script, with
//! one rule: python3 or a module that is absent is a missing need
//! ([`super::need::python`]); a script that fails once they are present
//! fails the test.
//!
//! Compiled into the integration tests and the library's unit tests alike
//! (see need.rs), as is process.rs, whose watchdog it waits under.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `python3 -c script args…` with `stdin` on its standard input; its
/// standard output, or `None` when python3 or one of `modules` is missing
/// (after [`super::need::missing`]). Panics, with the script's stderr, when
/// the script fails.
pub fn run(modules: &[&str], script: &str, args: &[&OsStr], stdin: &[u8]) -> Option<Vec<u8>> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    run_command(modules, cmd, stdin)
}

/// Runs the Python file `path` with `args`; as [`run`].
pub fn run_file(modules: &[&str], path: &std::path::Path, args: &[&OsStr]) -> Option<Vec<u8>> {
    let mut cmd = Command::new("python3");
    cmd.arg(path).args(args);
    run_command(modules, cmd, &[])
}

/// A Pillow script (`from PIL import Image` and friends); as [`run`].
pub fn pillow(script: &str, args: &[&OsStr], stdin: &[u8]) -> Option<Vec<u8>> {
    run(&["PIL"], script, args, stdin)
}

fn run_command(modules: &[&str], mut cmd: Command, stdin: &[u8]) -> Option<Vec<u8>> {
    if !super::need::python(modules) {
        return None;
    }
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 was found a moment ago, but: {e}"));
    // Fed on a thread: a script may write more than a pipe holds before it
    // has read all of its input.
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || pipe.write_all(&input));
    // Under the watchdog every wait of the tests has: a hung script fails
    // the test instead of hanging CI.
    let out = super::process::wait(child, &what);
    if let Ok(Err(e)) = feeder.join() {
        // A script that exits without reading its input closes the pipe;
        // that is its business unless it also failed (reported below).
        if out.status.success() {
            eprintln!("python3 did not read all of its input: {e}");
        }
    }
    assert!(
        out.status.success(),
        "the Python script failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}
