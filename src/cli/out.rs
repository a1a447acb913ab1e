//! Standard output that never panics: `println!` panics when stdout is a
//! closed pipe (`cpia build --json | true`) or a full disk (`> /dev/full`).
//!
//! Every command prints through [`out!`] and [`outln!`]. A write that fails
//! is remembered and nothing more is written; when the command returns,
//! [`finish`] decides the exit code: a reader that went away (`| head`,
//! `EPIPE`) leaves the command's own code, as a closed pipe is the reader's
//! choice; any other failure (a full disk, an I/O error) is said on stderr
//! and the command exits 2, so output that was lost never passes silently.
//! Commands that stream large outputs (`log`, `query`, `verify`, `lineage`,
//! `plan`) stop at the first failed write instead ([`stream_error`]).
//!
//! Standard error too: `eprintln!` panics when stderr is a closed pipe
//! (`cpia build 2>&1 | head -1`). This module defines `eprintln!` and
//! `eprint!` of its own, which — `#[macro_use]`, and a macro defined in the
//! crate is found before the prelude's — are the ones every file of `cli`
//! calls: they write through [`write_err`], which drops what cannot be
//! written (there is nowhere left to say it; the exit code still tells).

use std::io::{self, Write};
use std::sync::Mutex;

/// The first failed write to stdout, if any.
static FAILURE: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `args` to stdout and flushes; after a failure, writes nothing.
pub(super) fn write_fmt(args: std::fmt::Arguments<'_>) {
    let Ok(mut failure) = FAILURE.lock() else {
        return;
    };
    if failure.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        *failure = Some(e);
    }
}

/// Writes `bytes` to stdout as [`write_fmt`] does.
pub(super) fn write_bytes(bytes: &[u8]) {
    let Ok(mut failure) = FAILURE.lock() else {
        return;
    };
    if failure.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        *failure = Some(e);
    }
}

/// Writes `args` to stderr; a failed write (a closed pipe, a full disk) is
/// dropped, never a panic.
pub(super) fn write_err(args: std::fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Whether `e` means the reader of stdout went away.
fn is_closed_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// The exit code of a command that returned `code`, given what happened to
/// its standard output (see the module doc).
pub(super) fn finish(code: i32) -> i32 {
    let failure = FAILURE.lock().ok().and_then(|mut f| f.take());
    match failure {
        Some(e) if !is_closed_pipe(&e) => {
            eprintln!("error: writing to standard output: {e}");
            code.max(super::EXIT_ERROR)
        }
        _ => code,
    }
}

/// What a streaming command returns when a write to stdout failed: done
/// (exit 0) when the reader went away, else an error saying where.
pub(super) fn stream_error(e: io::Error) -> super::CmdResult {
    if is_closed_pipe(&e) {
        Ok(0)
    } else {
        Err(format!("writing to standard output: {e}").into())
    }
}

/// `print!` that never panics ([`write_fmt`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` that never panics ([`write_fmt`]).
macro_rules! outln {
    () => {
        $crate::cli::out::write_bytes(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics ([`write_err`]); shadows the standard one in `cli`.
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::cli::out::write_err(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics ([`write_err`]); shadows the standard one in `cli`.
macro_rules! eprintln {
    () => {
        $crate::cli::out::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}
