//! Temporary folders that live as long as the test process, for fixtures a
//! `static` shares between tests.
//!
//! A `tempfile::TempDir` in a `static` is never dropped (Rust runs no
//! destructors of statics), so each run of such a test binary left its
//! workspaces in `/tmp`: ~500 MB a run, seen filling a shared disk. These
//! folders are removed by an `atexit` handler instead, which runs when the
//! libtest harness returns from `main` or calls `process::exit` after a
//! failure (not when the process is killed by a signal).

use std::path::PathBuf;
use std::sync::{Mutex, Once};

static FOLDERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

extern "C" fn remove_all() {
    let folders = match FOLDERS.lock() {
        Ok(mut f) => std::mem::take(&mut *f),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for f in folders {
        let _ = std::fs::remove_dir_all(f);
    }
}

/// A new empty folder under the system's temporary folder, removed when the
/// process exits.
pub fn process_tempdir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary folder")
        .keep();
    REGISTER.call_once(|| {
        // SAFETY: `remove_all` is a plain function that does not unwind
        // (every error is ignored).
        let r = unsafe { libc::atexit(remove_all) };
        assert_eq!(r, 0, "atexit refused the clean-up of temporary folders");
    });
    FOLDERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.clone());
    dir
}
