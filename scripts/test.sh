#!/usr/bin/env bash
# Runs the whole test suite the way CI does: set-up, a private Slurm cluster
# for the Slurm executor's tests, then every test in release mode (the image
# operators are too slow unoptimized, and one profile means one compilation of
# the dependencies).
#
# The cluster (scripts/slurm-up.sh: munged, slurmctld, slurmd, and slurmdbd so
# that sacct works) is started before the tests and stopped after them, also
# when they fail. It needs root; without root, or with CPIA_TEST_SLURM=0, the
# Slurm tests are skipped and say so. CPIA_SLURM_ACCOUNTING=0 leaves out
# slurmdbd (the tests then check that sacct reports accounting as off).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

if [ "${CPIA_TEST_SLURM:-}" = 0 ]; then
  echo "test: Slurm tests skipped (CPIA_TEST_SLURM=0)"
elif [ "$(id -u)" -ne 0 ]; then
  echo "test: Slurm tests skipped: the private test cluster needs root (slurmd starts jobs as their user)"
  export CPIA_TEST_SLURM=0
else
  export CPIA_SLURM_ACCOUNTING=${CPIA_SLURM_ACCOUNTING:-1}
  trap './scripts/slurm-down.sh || true' EXIT
  env=$(./scripts/slurm-up.sh)
  eval "$env"
fi

cargo test --release "$@"
