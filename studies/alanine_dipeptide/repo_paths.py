"""Make the repository's PyTorch package importable when a study script runs from a checkout.

`smoothflow_torch` lives in <repo>/pytorch and is not installed into the environment; the
scripts that need it (training, evaluation) import this module first.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

for _p in (REPO / "pytorch", REPO / "studies"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))
