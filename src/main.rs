//! The `cpia` command.

fn main() {
    std::process::exit(cpia::cli::main());
}

// Planning a no-op build over 100,000 outputs is dominated by small
// allocations (a string per recorded field); mimalloc roughly halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
