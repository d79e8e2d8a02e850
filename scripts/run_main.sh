#!/usr/bin/env bash
# Set up, build, and run the main job (scripts/main_job.py). Extra arguments
# go to the main job, e.g. --steps 100000.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$here/scripts/setup.sh" | tail -n 1)
"$here/scripts/build.sh" "$venv" >/dev/null
exec "$venv/bin/python" "$here/scripts/main_job.py" "$@"
