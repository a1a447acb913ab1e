//! The `cpia` command.

fn main() {
    // Freed arena memory (where mimalloc places every large buffer: decoded
    // images, slide regions) goes back to the system at once instead of
    // after purge_delay × arena_purge_mult (100 ms): a buffer freed by a
    // pool thread after its job gave back its grant must not still be
    // resident when the next job's buffers arrive, or RSS exceeds the
    // memory budget. Small-object pages keep their delay.
    // SAFETY: mi_option_set only stores an option value.
    unsafe { mi_option_set(MI_OPTION_ARENA_PURGE_MULT, 0) };
    cpia::engine::budget::set_release(release_freed_memory);
    std::process::exit(cpia::cli::main());
}

extern "C" {
    /// mimalloc's own API (in the library the allocator links).
    fn mi_collect(force: bool);
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}

/// `mi_option_arena_purge_mult` in mimalloc v2's `mi_option_e` (the v2
/// sources that libmimalloc-sys 0.1.49 builds by default).
const MI_OPTION_ARENA_PURGE_MULT: i32 = 24;

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
