#!/usr/bin/env bash
# Set up, build, and run the main job: the alanine dipeptide energy-conservation
# study (studies/alanine_dipeptide/energy_conservation.py) with the shipped flows
# against Amber ff99SB-ILDN. Extra arguments go to it, e.g. --long or --out DIR.
# The report and plots land in out/energy_conservation/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$here/scripts/setup.sh" | tail -n 1)
"$here/scripts/build.sh" "$venv" >/dev/null
exec "$venv/bin/python" -m alanine_dipeptide.energy_conservation "$@"
