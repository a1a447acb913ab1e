//! Ctrl-C while a coordinator waits: the first one cancels the job array
//! (and the coordinator merges what the tasks finished), a second one stops
//! waiting at once (the next invocation merges).

use std::sync::atomic::{AtomicUsize, Ordering};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// SIGINT and SIGTERM are counted while this lives; the previous handlers
/// come back when it is dropped.
pub struct Catch {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

/// Starts counting SIGINT and SIGTERM instead of dying of them.
pub fn catch() -> Catch {
    SIGNALS.store(0, Ordering::SeqCst);
    let mut old = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid value; the handler only
        // touches an atomic; `prev` is written by the kernel.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &act, &mut prev) == 0 {
                old.push((sig, prev));
            }
        }
    }
    Catch { old }
}

impl Catch {
    /// How many signals arrived since [`catch`].
    pub fn count(&self) -> usize {
        SIGNALS.load(Ordering::SeqCst)
    }
}

impl Drop for Catch {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores the action saved by `catch`.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
    }
}
