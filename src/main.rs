//! The `cpia` command.

fn main() {
    std::process::exit(cpia::cli::main());
}
