"""The repository's paths: where a study script finds the checkout it runs from, and how
provenance records name a file.

The study package is installed editable (scripts/setup.sh), so ``REPO`` is the checkout that
holds this file.
"""
from pathlib import Path

from smoothflow_torch.provenance import file_sha256 as sha256_of  # noqa: F401 (the studies' name)

REPO = Path(__file__).resolve().parents[2]


def repo_relative(path, base: Path = REPO) -> str:
    """``path`` relative to ``base`` (the repository by default) when it lies inside it, else
    as given."""
    path = Path(path)
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
