"""The frames ``simulate`` writes (``data/frames.npz``) and their Boltzmann weights, numpy only.

Layout (float32 on disk, the alanine-dipeptide study's layout, so its data file reads too):

    positions (n, N, 3) nm, forces (n, N, 3) kJ/mol/nm: the force field's alone,
    energies (n,) kJ/mol: the force field's alone, bias (n,) kJ/mol: the static bias V of the
    frame (0 without one), chain (n,), time_ps (n,), split (n,): 0 train, 1 held out (the last
    20 % of every chain, a split in time, so held-out frames are not near-copies of training ones)

A file without ``split`` holds held-out frames only and one without ``bias`` unbiased ones
(weight 1): e.g. the alanine study's shipped ``obc.reference.npz``, 200 held-out frames drawn
Boltzmann-distributed from its data, which evaluate and md can read in place of the data
(``--frames``).

A frame from a chain run under a fixed bias V has the exact Boltzmann weight exp(V / kT): every
average over frames (losses, metrics, histograms) is weighted by it (``Frames.weights``, mean 1
over the file).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = {"train": 0, "test": 1}
HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class Frames:
    """Configurations with the force field's forces and energies (float64) and weights."""
    positions: np.ndarray   # (n, N, 3) nm
    forces: np.ndarray      # (n, N, 3) kJ/mol/nm
    energies: np.ndarray    # (n,) kJ/mol
    weights: np.ndarray     # (n,) Boltzmann reweighting factors (mean 1 over the file)

    def __len__(self) -> int:
        return len(self.positions)


def frame_weights(bias: np.ndarray, kT: float) -> np.ndarray:
    """exp(V / kT) of frames run under a fixed bias V, scaled to mean 1 (ones when V = 0)."""
    bias = np.asarray(bias, float)
    w = np.exp((bias - bias.max()) / kT)
    return w / w.mean()


def split_of(n: int) -> np.ndarray:
    """The split of one chain's ``n`` frames: the last 20 % held out."""
    s = np.zeros(n, np.uint8)
    s[int((1 - HELD_OUT_FRACTION) * n):] = 1
    return s


def load(path, kT: float, n_atoms: int, split: str = "train") -> Frames:
    """The frames of one split (``train``, ``test`` or ``all``) of a frames file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `smoothflow simulate PROJECT` first")
    with np.load(path) as d:
        pos, frc, ene = d["positions"], d["forces"], d["energies"]
        spl = d["split"] if "split" in d.files else np.full(len(pos), SPLITS["test"], np.uint8)
        bias = d["bias"].astype(np.float64) if "bias" in d.files else np.zeros(len(pos))
    n = len(pos)
    if pos.shape != (n, n_atoms, 3) or frc.shape != pos.shape or ene.shape != (n,) or spl.shape != (n,):
        raise ValueError(f"{path}: arrays have shapes {pos.shape}, {frc.shape}, {ene.shape}, {spl.shape}; "
                         f"expected (n, {n_atoms}, 3) positions and forces, (n,) energies and split")
    if bias.shape != (n,) or not np.all(np.isfinite(bias)):
        raise ValueError(f"{path}: the bias array must hold {n} finite values")
    if split == "all":
        mask = np.ones(n, bool)
    elif split in SPLITS:
        mask = spl == SPLITS[split]
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if not mask.any():
        raise ValueError(f"{path} has no {split} frames ({n} in all): simulate longer")
    w = frame_weights(bias, kT)
    return Frames(pos[mask].astype(np.float64), frc[mask].astype(np.float64), ene[mask].astype(np.float64), w[mask])


def boltzmann_indices(weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices by systematic resampling with probability proportional to ``weights``, in
    increasing order: a deterministic, Boltzmann-distributed subset (some may repeat)."""
    c = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(c, (np.arange(n) + 0.5) / n), len(weights) - 1)
