#!/usr/bin/env bash
# Runs the whole test suite the way CI does: set-up, a private Slurm cluster
# for the Slurm executor's tests, then every test in release mode (the image
# operators are too slow unoptimized, and one profile means one compilation of
# the dependencies), and a closing count of what ran.
#
# Strict by default (CPIA_TEST_STRICT=1): a test that lacks something it needs
# from the machine — the shared test data, the published tables, a Python
# module, Chromium, the Slurm cluster — fails, naming it (tests/common/need.rs).
# With CPIA_TEST_STRICT=0 such a test is skipped instead, and the closing line
# counts the skips and says what was missing; a failure is never a skip.
#
# The cluster (scripts/slurm-up.sh: munged, slurmctld, slurmd, and slurmdbd so
# that sacct works) is started before the tests and stopped after them, also
# when they fail. It needs root; without root, or with CPIA_TEST_SLURM=0, it is
# not started (and the Slurm tests fail in strict mode, or are skipped).
# CPIA_SLURM_ACCOUNTING=0 leaves out slurmdbd (the tests then check that sacct
# reports accounting as off). CPIA_TEST_TIMEOUT (seconds) bounds each child
# process a test waits for (tests/common/process.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CPIA_TEST_STRICT=${CPIA_TEST_STRICT:-1}
# A full run needs ~5 GB (build ~2 GB, generated slides ~1.6 GB, the Python
# environment ~1 GB): said first, so that a full disk is not mistaken for a bug.
echo "test: $(df -h --output=avail . | tail -1 | tr -d ' ') free on the disk of $PWD"
./scripts/setup.sh
# The tests' Python: the virtual environment setup.sh makes when the
# system's python3 is externally managed (Debian's), if there is one.
venv=${CPIA_PYTHON_VENV:-$PWD/target/python}
if [ -x "$venv/bin/python3" ]; then
  export PATH="$venv/bin:$PATH"
fi
echo "test: python3 is $(command -v python3)"

if [ "${CPIA_TEST_SLURM:-}" = 0 ]; then
  echo "test: no Slurm test cluster (CPIA_TEST_SLURM=0)"
elif [ "$(id -u)" -ne 0 ]; then
  echo "test: no Slurm test cluster: the private test cluster needs root (slurmd starts jobs as their user)"
  export CPIA_TEST_SLURM=0
else
  export CPIA_SLURM_ACCOUNTING=${CPIA_SLURM_ACCOUNTING:-1}
  trap './scripts/slurm-down.sh || true' EXIT
  env=$(./scripts/slurm-up.sh)
  eval "$env"
fi

mkdir -p target
export CPIA_TEST_SKIP_LOG="$PWD/target/test-skips.log"
: >"$CPIA_TEST_SKIP_LOG"
output="$PWD/target/test-output.log"

set +e
cargo test --release --no-fail-fast "$@" 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e

# The closing count: libtest's per-binary results added up, and the skips the
# tests recorded (one line each: test, whole|part, what was missing).
awk '/^test result: /{
       for (i = 1; i <= NF; i++) {
         if ($(i + 1) ~ /^passed/) p += $i
         if ($(i + 1) ~ /^failed/) f += $i
         if ($(i + 1) ~ /^ignored/) g += $i
       }
     }
     END { printf "%d %d %d\n", p, f, g }' "$output" | {
  read -r passed failed ignored
  whole=$(awk -F'\t' '$2 == "whole" { print $1 }' "$CPIA_TEST_SKIP_LOG" | sort -u | wc -l)
  part=$(awk -F'\t' '$2 == "part" { print $1 }' "$CPIA_TEST_SKIP_LOG" | sort -u | wc -l)
  echo
  echo "test: $((passed - whole)) tests ran their checks, $whole skipped, $part skipped a part;" \
    "$failed failed, $ignored ignored (strict: $CPIA_TEST_STRICT)"
  if [ -s "$CPIA_TEST_SKIP_LOG" ]; then
    echo "test: missing, and the tests it skipped (whole or in part):"
    awk -F'\t' '{ print "  " $3 ": " $1 " (" $2 ")" }' "$CPIA_TEST_SKIP_LOG" | sort -u
  fi
}
exit "$status"
