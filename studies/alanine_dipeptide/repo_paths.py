"""The repository's paths: where a study script finds the checkout it runs from, and how
provenance records name a file.

The study package is installed editable (scripts/setup.sh), so ``REPO`` is the checkout that
holds this file.
"""
import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
