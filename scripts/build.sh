#!/usr/bin/env bash
# Configure and build openmm-smoothflow against the environment's OpenMM, and
# install the Python package (openmmsmoothflow) into that environment.
# Usage: scripts/build.sh [VENV]   (default: the one scripts/setup.sh prints)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$("$here/scripts/setup.sh" --quiet | tail -n 1)}
build=${SMOOTHFLOW_BUILD_DIR:-$here/build}
jobs=${SMOOTHFLOW_JOBS:-$(nproc)}
mkdir -p "$build"
echo "[build] configuring in $build" >&2
cmake -S "$here" -B "$build" -DPython3_EXECUTABLE="$venv/bin/python" -DCMAKE_BUILD_TYPE=Release >"$build/configure.log" 2>&1 \
    || { cat "$build/configure.log"; exit 1; }
echo "[build] compiling ($jobs jobs)" >&2
cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1 || { tail -n 60 "$build/build.log"; exit 1; }
echo "[build] installing the Python package into $venv" >&2
cmake --build "$build" --target PythonInstall >>"$build/build.log" 2>&1 || { tail -n 60 "$build/build.log"; exit 1; }
echo "$venv"
