#!/usr/bin/env bash
# Installs what cpia and its tests need on Debian 12 if it is missing, as
# root (or with sudo), and fails — exit 1, naming the package — when it cannot:
# a test run on a machine that lacks something the tests need must not start
# (scripts/test.sh runs this first; tests/common/need.rs is the other half).
#
#   scripts/setup.sh           everything: building, and the tests
#   scripts/setup.sh --build   only what building cpia needs (the demo)
#
# Safe to run again: it installs nothing that is already there. (The Slurm
# packages for the Slurm tests are installed by scripts/slurm-up.sh, which
# scripts/test.sh runs.)
#
# Python: the packages go where `python3` on the PATH can import them. Debian's
# own python3 refuses `pip install` (PEP 668, "externally managed"); then they
# go into a virtual environment, $CPIA_PYTHON_VENV (default target/python in
# this checkout; it sees Debian's python3-* packages too), and its bin/ must
# come first on the PATH: scripts/test.sh does that, and so can you
# (`export PATH="$PWD/target/python/bin:$PATH"`) before `cargo test`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${CPIA_PYTHON_VENV:-$root/target/python}

build_only=0
case "${1:-}" in
  --build) build_only=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--build]" >&2; exit 2 ;;
esac

fail() {
  echo "setup: error: $*" >&2
  exit 1
}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0

# Installs the Debian packages given that are not installed yet; fails naming
# them if apt cannot. $1: what they are for.
apt_install() {
  local why=$1
  shift
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]} ($why)"
  if [ $apt_updated -eq 0 ]; then
    $SUDO apt-get update -qq || fail "apt-get update failed; cannot install ${missing[*]} ($why)"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "cannot install ${missing[*]} ($why)"
}

command -v cargo >/dev/null 2>&1 \
  || fail "cargo not found: install a Rust toolchain (rustup) first"

apt_install "the system libraries of cpia's Rust crates" \
  pkg-config libclang-dev cmake nasm libopenslide-dev

[ $build_only -eq 1 ] && exit 0

# ---- what the tests need ------------------------------------------------------

# Chromium: tests/report.rs opens `cpia report`'s page in a real headless browser.
apt_install "the report's browser test, tests/report.rs" chromium

# Python packages, one per line: pip name, module, what needs it. The module
# must import; `find:NAME` only needs to be installed (wids imports torch,
# which the tests replace with a stand-in: tests/export.rs).
# (Add a line for a new one; nothing else here needs to change.)
python_packages=(
  "pillow           PIL        the Pillow parity tests (src/ops) and the WSI reference"
  "openslide-python openslide  the WSI reference, tests/reference/cpia_wsi_reference.py"
  "pyarrow          pyarrow    the Parquet manifests' reader, tests/provenance.rs"
  "prov             prov       the PROV-JSON export's reader, tests/provenance.rs"
  "webdataset       webdataset the WebDataset exports' reader, tests/export.rs"
  "wids             find:wids  the exports' wids index reader, tests/export.rs"
  "mlcroissant      mlcroissant the Croissant metadata reader, tests/export.rs"
  "datasets         datasets   Hugging Face's reader of the Parquet image shards, tests/parquet_file.rs"
  "polars           polars     polars' reader of the Parquet image shards, tests/parquet_file.rs"
  "tiffslide        tiffslide  the WSI benchmark's peer, benches/tiffslide_wsi.py"
)

# Whether python3 has module $1 (`find:NAME`: installed; else: imports);
# prints the error if not.
has_module() {
  case "$1" in
    find:*) python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('${1#find:}') is None)" 2>&1 ;;
    *) python3 -c "import $1" 2>&1 >/dev/null ;;
  esac
}

# Whether pip may install into python3: not a Python that is "externally
# managed" (PEP 668: Debian's own), unless it is a virtual environment or
# PIP_BREAK_SYSTEM_PACKAGES says to install anyway.
pip_may_install() {
  [ -n "${PIP_BREAK_SYSTEM_PACKAGES:-}" ] && return 0
  python3 - <<'PY'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(1 if managed and sys.prefix == sys.base_prefix else 0)
PY
}

if ! command -v python3 >/dev/null 2>&1; then
  apt_install "the tests' Python reference and readers" python3
fi
# A virtual environment made by an earlier run comes first.
[ -x "$venv/bin/python3" ] && export PATH="$venv/bin:$PATH"
missing=()
for line in "${python_packages[@]}"; do
  read -r pip_name module _ <<<"$line"
  has_module "$module" >/dev/null || missing+=("$pip_name")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! pip_may_install; then
    apt_install "a virtual environment for the tests' Python packages" python3-venv
    echo "setup: $(command -v python3) is externally managed (PEP 668): making the virtual environment $venv"
    python3 -m venv --system-site-packages "$venv" \
      || fail "cannot make the virtual environment $venv (python3 -m venv)"
    export PATH="$venv/bin:$PATH"
  elif ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install "pip, to install the tests' Python packages" python3-pip
  fi
  echo "setup: installing Python packages ${missing[*]} with $(command -v python3)"
  python3 -m pip install --quiet "${missing[@]}" \
    || fail "pip cannot install ${missing[*]} into $(command -v python3)"
fi
for line in "${python_packages[@]}"; do
  read -r pip_name module why <<<"$line"
  err=$(has_module "$module") \
    || fail "$(command -v python3) lacks $module (pip package $pip_name, for $why): ${err##*$'\n'}"
done
