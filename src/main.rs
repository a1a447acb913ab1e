//! The `cpia` command.

fn main() {
    cpia::engine::budget::set_release(release_freed_memory);
    std::process::exit(cpia::cli::main());
}

extern "C" {
    /// mimalloc's own API (in the library the allocator links).
    fn mi_collect(force: bool);
}

/// Makes mimalloc give memory freed by this thread (and its arenas' freed
/// blocks) back to the system now instead of after its purge delay: after a
/// large job, so the next one's memory does not come on top of it.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; `force` also purges arenas.
    unsafe { mi_collect(true) }
}

// Planning a no-op build over 100,000 outputs is dominated by small
// allocations (a string per recorded field); mimalloc roughly halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
