#!/usr/bin/env bash
# Runs the whole test suite the way CI does: set-up, then every test in release
# mode (the image operators are too slow unoptimized, and one profile means one
# compilation of the dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --release "$@"
