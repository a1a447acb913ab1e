#!/usr/bin/env bash
# Installs what cpia needs on Debian 12 if it is missing, as root (or with sudo):
# system libraries for the Rust crates, and Pillow + openslide-python for the
# Python reference implementation the parity tests and benchmarks compare with,
# and Chromium for the report's browser test.
# Safe to run again: it installs nothing that is already there. (The Slurm
# packages for the Slurm tests are installed by scripts/slurm-up.sh, which
# scripts/test.sh runs.)
set -euo pipefail

pkgs=(pkg-config libclang-dev cmake nasm libopenslide-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v python3 >/dev/null 2>&1 && ! python3 -c "import PIL, openslide" >/dev/null 2>&1; then
  echo "setup: installing Pillow and openslide-python (the Python reference of the standard)"
  python3 -m pip install --quiet pillow openslide-python \
    || echo "setup: warning: Pillow/openslide-python not installed; the comparisons with them will be skipped"
fi

# Chromium, for the test that opens `cpia report`'s page in a real headless
# browser (tests/report.rs; without it that check prints SKIPPED).
if ! dpkg -s chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing chromium (the report's browser test)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "setup: warning: chromium not installed; the report's browser test will be skipped"
fi

# Provenance tests (tests/provenance.rs): pyarrow reads the Parquet manifests,
# the W3C `prov` package loads the PROV-JSON export.
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import pyarrow, prov" >/dev/null 2>&1; then
  echo "setup: installing pyarrow and prov (readers of the manifests and of the PROV-JSON export)"
  python3 -m pip install --quiet pyarrow prov \
    || echo "setup: warning: pyarrow/prov not installed; the checks that use them will be skipped"
fi

# Export tests (tests/export.rs): the real readers of the exports —
# webdataset and wids (shards and index), mlcroissant (Croissant metadata).
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import webdataset, mlcroissant; import importlib.util as u; assert u.find_spec('wids')" >/dev/null 2>&1; then
  echo "setup: installing webdataset, wids and mlcroissant (readers of the exports)"
  python3 -m pip install --quiet webdataset wids mlcroissant \
    || echo "setup: warning: webdataset/wids/mlcroissant not installed; the export tests fail in CI without them"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
