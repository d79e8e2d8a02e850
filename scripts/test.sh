#!/usr/bin/env bash
# Set up, build, and run every test: ctest (C core, valgrind, C++ plugin) and
# pytest (PyTorch reference, C core vs PyTorch, OpenMM plugin, Python API).
# Exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$here/scripts/setup.sh" | tail -n 1) || exit 1
"$here/scripts/build.sh" "$venv" >/dev/null || exit 1
export PATH="$venv/bin:$PATH"
status=0
echo "=== ctest ==="
(cd "$here/build" && ctest --output-on-failure -j "${SMOOTHFLOW_JOBS:-$(nproc)}") || status=1
echo "=== pytest ==="
(cd "$here" && "$venv/bin/python" -m pytest -q tests/python) || status=1
exit $status
