#!/usr/bin/env bash
# Make this Debian 12 machine ready for openmm-smoothflow, as root:
#   1. Debian packages for the system side (compilers, CMake, SWIG, cJSON,
#      OpenCL on the CPU through PoCL, valgrind);
#   2. a Python virtual environment from PyPI with the pins of requirements.txt,
#      kept outside the clone under ~/.cache and keyed by a hash of those pins,
#      so a second run (or a fresh clone) reuses it in seconds.
# Prints nothing but progress; the last line is the environment's path.
# Usage: scripts/setup.sh [--quiet]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quiet=${1:-}
log() { [ "$quiet" = "--quiet" ] || echo "[setup] $*" >&2; }

debs=(build-essential cmake swig libcjson-dev ocl-icd-opencl-dev opencl-headers
      ocl-icd-libopencl1 pocl-opencl-icd clinfo valgrind)
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
if [ ! -f "$venv/.complete" ]; then
    log "creating Python environment $venv (first run: several minutes, torch is large)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
    "$venv/bin/python" -c "import openmm, torch, safetensors, mdtraj, openmmml" 
    touch "$venv/.complete"
else
    log "reusing Python environment $venv"
fi
echo "$venv"
