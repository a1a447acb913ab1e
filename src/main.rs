//! The `cpia` command.

use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set};

/// `MI_OPTION_PURGE_DELAY` and `MI_OPTION_ARENA_PURGE_MULT`: the numbers of
/// those options in the `mimalloc.h` that libmimalloc-sys compiles, read by
/// build.rs (libmimalloc-sys does not name them).
mod mimalloc_options {
    include!(concat!(env!("OUT_DIR"), "/mimalloc_options.rs"));
}
use mimalloc_options::{MI_OPTION_ALLOW_THP, MI_OPTION_ARENA_PURGE_MULT, MI_OPTION_PURGE_DELAY};

fn main() {
    no_transparent_huge_pages();
    // SAFETY: mi_option_get only reads an option (initializing it from the
    // environment on first use), before any other thread exists.
    let defaults = unsafe {
        (
            mi_option_get(MI_OPTION_PURGE_DELAY),
            mi_option_get(MI_OPTION_ARENA_PURGE_MULT),
        )
    };
    let _ = DEFAULTS.set(defaults);
    cpia::engine::budget::set_allocator(cpia::engine::budget::Allocator {
        eager: purge_eagerly,
        collect: purge_now,
    });
    std::process::exit(cpia::cli::main());
}

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP`
/// asks for them (mimalloc has then applied it already).
///
/// Why: mimalloc madvises its arenas `MADV_HUGEPAGE`, and with the common
/// THP defrag setting (`madvise`) every fresh 2 MiB page of a madvised
/// region may stall in direct compaction when the host's memory is
/// fragmented — a machine that has run for a while. Measured on the 20×
/// bench slide (`cpia build -j 2`, 6 interleaved A/B sets of 6 builds each,
/// both orders): 0.76–0.92 s with 4 KiB pages against 0.85–1.14 s with huge
/// pages, system time 0.18–0.40 s against 0.29–0.77 s, user time +2 %;
/// peak RSS 135 against 160 MB (a huge page is faulted in whole). The
/// prctl covers every allocator of the process (libjpeg-turbo's and
/// OpenSlide's use glibc's); the option keeps mimalloc from madvising
/// arenas it reserves later.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: mi_option_set stores an option value, before any other thread
    // exists; prctl(PR_SET_THP_DISABLE) only sets a flag of this process.
    unsafe {
        mi_option_set(MI_OPTION_ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc's purge delays as the process started (its defaults, or the
/// `MIMALLOC_*` environment): (purge_delay, arena_purge_mult).
static DEFAULTS: std::sync::OnceLock<(std::ffi::c_long, std::ffi::c_long)> =
    std::sync::OnceLock::new();

/// Eager: memory freed on any thread is purged (given back to the system)
/// when it is freed — a pool thread that freed a large job's buffers and then
/// sits idle would otherwise keep them resident, since mimalloc purges
/// delayed pages only when that thread allocates again, and freed arena
/// memory (where every large buffer lives) would stay for purge_delay ×
/// arena_purge_mult. Not eager: mimalloc's own delays, so freed buffers are
/// reused by the next job without new page faults. The memory budget
/// switches (engine::budget) when memory is short.
fn purge_eagerly(on: bool) {
    let (delay, mult) = DEFAULTS.get().copied().unwrap_or((1000, 1));
    let (delay, mult) = if on { (0, 0) } else { (delay, mult) };
    // SAFETY: mi_option_set only stores an option value (a word other
    // threads read racily, as mimalloc intends for these options).
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, delay);
        mi_option_set(MI_OPTION_ARENA_PURGE_MULT, mult);
    }
}

/// Gives back what this thread's heap and every arena hold freed.
fn purge_now() {
    // SAFETY: no preconditions; `force` also purges the arenas.
    unsafe { mi_collect(true) }
}

// Planning a no-op build over 100,000 outputs is dominated by small
// allocations (a string per recorded field); mimalloc roughly halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
