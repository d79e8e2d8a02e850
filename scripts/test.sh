#!/usr/bin/env bash
# Set up, build, and run every test: ctest (C core, valgrind, C++ plugin) and
# pytest (PyTorch reference, C core vs PyTorch, OpenMM plugin, Python API).
# Exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$here/scripts/setup.sh" | tail -n 1) || exit 1
"$here/scripts/build.sh" "$venv" >/dev/null || exit 1
build=${SMOOTHFLOW_BUILD_DIR:-$here/build}
export PATH="$venv/bin:$PATH"
status=0
echo "=== ctest ==="
(cd "$build" && ctest --output-on-failure -j "${SMOOTHFLOW_JOBS:-$(nproc)}") || status=1
echo "=== pytest ==="
# The core's Python binding finds <clone>/build/lib by itself; name the library
# for a build folder elsewhere.
# The platform tests ran in ctest (device.python, against this build's OpenCL and CUDA
# kernel libraries; OpenCL on PoCL): not twice.
(cd "$here" && SMOOTHFLOW_CORE_LIB="$build/lib/libsmoothflow.so" "$venv/bin/python" -m pytest -q tests/python \
    --ignore=tests/python/test_device_platforms.py --ignore=tests/python/test_device_paths.py) || status=1
exit $status
