//! How many threads a command starts, whatever `-j` or `jobs` asks: a leaf
//! every layer may use.
//!
//! `-j` sizes the build's worker pool, the lanes that admit jobs, the I/O
//! threads and the commits allowed in flight; `verify -j` sizes its pool.
//! Asked for thousands, a build spent its time creating threads and
//! per-thread buffers (`-j 1000`: 15 s for 15 images, `-j 100000` never
//! finished). Beyond a few threads per core nothing is gained: workers are
//! CPU-bound and writes have their own pool. So every pool is capped at
//! [`PER_CORE`] × the cores this process may use; `cli` says so once.

/// Threads allowed per core.
pub const PER_CORE: usize = 4;

/// The cores this process may run on (its CPU affinity and cgroup quota, as
/// the standard library sees them); at least 1.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads a pool may have: [`PER_CORE`] × [`cores`].
pub fn max() -> usize {
    PER_CORE * cores()
}

/// The threads to start for `requested` (at least 1, at most [`max`]).
pub fn cap(requested: usize) -> usize {
    requested.clamp(1, max())
}

/// [`cap`], and the note to show when the request was lowered.
pub fn resolve(requested: usize) -> (usize, Option<String>) {
    let n = cap(requested);
    let note = (n < requested).then(|| {
        format!(
            "{requested} parallel jobs is more than {PER_CORE} per core: using {n} ({} core(s))",
            cores()
        )
    });
    (n, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_capped_and_said() {
        assert_eq!(cap(0), 1);
        assert_eq!(cap(1), 1);
        assert_eq!(cap(usize::MAX), max());
        assert_eq!(resolve(1), (1, None));
        let (n, note) = resolve(max() + 1);
        assert_eq!(n, max());
        assert!(note.unwrap().contains(&format!("using {n}")));
    }
}
