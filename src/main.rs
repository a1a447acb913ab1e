//! The `cpia` command.

use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set};

/// `MI_OPTION_PURGE_DELAY` and `MI_OPTION_ARENA_PURGE_MULT`: the numbers of
/// those options in the `mimalloc.h` that libmimalloc-sys compiles, read by
/// build.rs (libmimalloc-sys does not name them).
mod mimalloc_options {
    include!(concat!(env!("OUT_DIR"), "/mimalloc_options.rs"));
}
use mimalloc_options::{MI_OPTION_ARENA_PURGE_MULT, MI_OPTION_PURGE_DELAY};

fn main() {
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
