#!/usr/bin/env bash
# The peers' Python environment for benchmarks/bench_cpu.py: openmm-torch 1.5 (TorchForce)
# and OpenMM's PythonForce need torch 2.9, not the project's torch, so they live in a
# virtual environment of their own, kept under ~/.cache and keyed by a hash of
# benchmarks/peers/requirements.txt and the Python version (a second run reuses it in
# seconds). smoothflow_torch is installed editable from this clone on every run, so the
# peers' TorchScript module is made by the project's own model code.
# Prints nothing but progress on stderr; the last line is the environment's path.
# Usage: benchmarks/peers/setup_peers.sh [--quiet]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
quiet=${1:-}
log() { [ "$quiet" = "--quiet" ] || echo "[setup_peers] $*" >&2; }

python=${SMOOTHFLOW_PYTHON:-python3}
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
hash=$( (cat "$here/requirements.txt"; echo "$pyver") | sha256sum | cut -c1-12)
venv=${SMOOTHFLOW_PEERS_VENV:-$HOME/.cache/openmm-smoothflow/peers-$hash}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    log "creating $venv (first run: several minutes, torch and its CUDA libraries are GBs)"
    start=$(date +%s)
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
    # openmmtorch's libraries find libtorch by soname once torch is imported first
    "$venv/bin/python" -c "import torch, openmm, openmmtorch; openmmtorch.TorchForce"
    echo "seconds=$(( $(date +%s) - start ))" > "$venv/.complete"
    log "created in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)"
else
    log "reusing $venv"
fi
pipLog=$(mktemp)
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root/pytorch" >"$pipLog" 2>&1 \
    || { cat "$pipLog" >&2; rm -f "$pipLog"; echo "[setup_peers] installing smoothflow_torch failed" >&2; exit 1; }
rm -f "$pipLog"
flock -u 9
echo "$venv"
