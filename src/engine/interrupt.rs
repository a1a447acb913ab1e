//! Ctrl-C (SIGINT): the first one stops a build after the jobs in progress,
//! so what they write is in place and recorded and the summary says what was
//! done; a second one, or one while nothing is being built, stops at once.
//!
//! Stopping at once is safe too (every file is written under a temporary
//! name and renamed; every record is a transaction): files in place whose
//! record was not yet written are rebuilt by the next build. The handler only
//! touches atomics and calls `write(2)` and `_exit(2)`, which are
//! async-signal-safe.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Exit code of an interrupted command (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// How many builds are running jobs now (they stop gracefully).
static BUILDING: AtomicUsize = AtomicUsize::new(0);

const STOPPING: &[u8] = b"\ncpia: stopping after the jobs in progress; what they write is recorded (Ctrl-C again to stop at once)\n";
const AT_ONCE: &[u8] = b"\ncpia: interrupted, stopped at once: files in place stay, and those whose record was not yet written are rebuilt by the next build\n";
const IDLE: &[u8] = b"\ncpia: interrupted (nothing was being built or removed)\n";

extern "C" fn on_sigint(_: libc::c_int) {
    let n = SIGNALS.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 1 && BUILDING.load(Ordering::SeqCst) > 0 {
        REQUESTED.store(true, Ordering::SeqCst);
        say(STOPPING);
        return;
    }
    say(if n == 1 { IDLE } else { AT_ONCE });
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(EXIT_INTERRUPTED) }
}

fn say(msg: &[u8]) {
    // SAFETY: write(2) is async-signal-safe; `msg` is a valid static buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Installs the SIGINT handler (once, at start-up).
pub fn install() {
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn
    // that only does async-signal-safe things.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// Whether a Ctrl-C asked the build to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// While alive, a Ctrl-C stops the build gracefully instead of at once.
pub struct Graceful(());

impl Graceful {
    /// Marks the start of a build's jobs.
    pub fn enter() -> Graceful {
        BUILDING.fetch_add(1, Ordering::SeqCst);
        Graceful(())
    }
}

impl Drop for Graceful {
    fn drop(&mut self) {
        BUILDING.fetch_sub(1, Ordering::SeqCst);
    }
}
