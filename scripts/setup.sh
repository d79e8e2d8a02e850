#!/usr/bin/env bash
# Make this Debian 12 machine ready for openmm-smoothflow, as root:
#   1. Debian packages for the system side (compilers, CMake, SWIG, cJSON,
#      OpenCL on the CPU through PoCL, valgrind);
#   2. a Python virtual environment from PyPI with the pins of requirements.txt,
#      kept outside the clone under ~/.cache and keyed by a hash of those pins,
#      so a second run (or a fresh clone) reuses it in seconds;
#   3. the project's own Python packages, installed editable into it on every
#      run (smoothflow_torch from pytorch/, alanine_dipeptide from studies/,
#      smoothflow_core from wrappers/python/): the environment is shared between
#      clones, so it points at the clone whose setup ran last.
# Prints nothing but progress; the last line is the environment's path.
# Usage: scripts/setup.sh [--quiet]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quiet=${1:-}
log() { [ "$quiet" = "--quiet" ] || echo "[setup] $*" >&2; }

debs=(build-essential cmake swig libcjson-dev libopenblas-pthread-dev pkgconf ocl-icd-opencl-dev opencl-headers
      ocl-icd-libopencl1 pocl-opencl-icd clinfo valgrind gfortran libclblast-dev)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${SMOOTHFLOW_PYTHON:-python3}
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
hash=$( (cat "$here/requirements.txt"; echo "$pyver") | sha256sum | cut -c1-12)
venv=${SMOOTHFLOW_VENV:-$HOME/.cache/openmm-smoothflow/venv-$hash}
mkdir -p "$(dirname "$venv")"
# Runs of this script in parallel (several clones, several shells) share the
# environment: one builds or updates it at a time.
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    log "creating Python environment $venv (first run: several minutes, torch is large)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
    "$venv/bin/python" -c "import openmm, torch, safetensors, mdtraj, openmmml, cffi, jsonschema"
    touch "$venv/.complete"
else
    log "reusing Python environment $venv"
fi
# Editable: the packages' code stays in this clone, so edits need no reinstall.
pipLog=$(mktemp)
"$venv/bin/pip" install -q --no-deps --no-build-isolation \
    -e "$here/pytorch" -e "$here/studies" -e "$here/wrappers/python" >"$pipLog" 2>&1 \
    || { cat "$pipLog" >&2; rm -f "$pipLog"; echo "[setup] installing the project's Python packages failed" >&2; exit 1; }
rm -f "$pipLog"
flock -u 9
echo "$venv"
