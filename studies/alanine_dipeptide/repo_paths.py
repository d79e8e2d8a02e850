"""The repository's paths: make its PyTorch package importable when a study script runs from a
checkout, and name a file the way provenance records do.

`smoothflow_torch` lives in <repo>/pytorch and is not installed into the environment; the
scripts that need it (training, evaluation) import this module first.
"""
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

for _p in (REPO / "pytorch", REPO / "studies"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))


def repo_relative(path, base: Path = REPO) -> str:
    """``path`` relative to ``base`` (the repository by default) when it lies inside it, else
    as given."""
    path = Path(path)
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def sha256_of(path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (data files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
