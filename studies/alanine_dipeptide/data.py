"""The alanine dipeptide data set: loading, splitting, and what the trainer needs from it.

The files are written by `generate_data.py` (data/alanine_dipeptide/<setting>.npz); see its
docstring for the layout.  Arrays come back as float64 numpy arrays (the file stores float32
to stay compact); `torch_split` turns a split into tensors for the trainer.

Frames from phi-biased chains (phi_bias.py) carry importance weights exp(V_bias/kT), scaled to
mean 1 over the whole file: every average over frames (losses, histograms, free energies, the
phi > 0 population) must be weighted by them.  Unbiased files get weights of 1.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import molecule

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide"
SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Frames:
    """Configurations with their reference forces and energies (float64)."""
    positions: np.ndarray   # (n, 22, 3) nm
    forces: np.ndarray      # (n, 22, 3) kJ/mol/nm
    energies: np.ndarray    # (n,) kJ/mol
    weights: np.ndarray     # (n,) Boltzmann reweighting factors of biased frames (mean 1 over the file)

    def __len__(self) -> int:
        return len(self.positions)


def path(setting: str = "obc", data_dir=None) -> Path:
    return Path(data_dir or DATA_DIR) / f"{setting}.npz"


def load(setting: str = "obc", split: str = "train", data_dir=None) -> Frames:
    """Frames of one split ("train", "test" or "all") of a generated data set.

    Raises
    ------
    FileNotFoundError
        With the command that generates the file.
    ValueError
        When the file's arrays do not have the documented shapes.
    """
    f = path(setting, data_dir)
    if not f.exists():
        raise FileNotFoundError(f"{f} does not exist: generate it with "
                                f"`python -m alanine_dipeptide.generate_data --setting {setting}` (from studies/)")
    with np.load(f) as d:
        pos, frc, ene, spl = d["positions"], d["forces"], d["energies"], d["split"]
        bias = d["bias"].astype(np.float64) if "bias" in d.files else np.zeros(len(pos))
    n = len(pos)
    if pos.shape != (n, molecule.N_ATOMS, 3) or frc.shape != pos.shape or ene.shape != (n,) or spl.shape != (n,):
        raise ValueError(f"{f}: arrays have shapes {pos.shape}, {frc.shape}, {ene.shape}, {spl.shape}; expected "
                         f"(n, {molecule.N_ATOMS}, 3) positions and forces, (n,) energies and split")
    if split == "all":
        mask = np.ones(n, bool)
    elif split in SPLITS:
        mask = spl == SPLITS[split]
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if bias.shape != (n,) or not np.all(np.isfinite(bias)):
        raise ValueError(f"{f}: the bias array must hold {n} finite values")
    from .generate_data import frame_weights
    wts = frame_weights(bias)
    return Frames(pos[mask].astype(np.float64), frc[mask].astype(np.float64), ene[mask].astype(np.float64),
                  wts[mask])


@dataclass(frozen=True)
class Reference:
    """The compact, shipped summary of a data set: held-out frames and the backbone angles."""
    test: Frames             # held-out frames drawn with probability proportional to their weights
    phi: np.ndarray          # (n,) radians, every frame of the data set
    psi: np.ndarray
    weights: np.ndarray      # (n,) reweighting factors of those frames (histograms must use them)


def reference_path(setting: str = "obc", data_dir=None) -> Path:
    return Path(data_dir or DATA_DIR) / f"{setting}.reference.npz"


def boltzmann_indices(weights: np.ndarray, n: int) -> np.ndarray:
    """`n` indices drawn by systematic resampling with probability proportional to `weights`,
    in increasing order: a deterministic, Boltzmann-distributed subset (some may repeat)."""
    c = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(c, (np.arange(n) + 0.5) / n), len(weights) - 1)


def write_reference(setting: str = "obc", data_dir=None, n_test: int = 200) -> Path:
    """Write <setting>.reference.npz (~1 MB) from the full data set: `n_test` held-out frames
    drawn by systematic resampling (so they are Boltzmann distributed even from biased chains;
    weight 1 each), and phi/psi and the weight of every frame (float32)."""
    test = load(setting, "test", data_dir)
    idx = boltzmann_indices(test.weights, n_test)
    every = load(setting, "all", data_dir)
    phi, psi = backbone_dihedrals(every.positions)
    out = reference_path(setting, data_dir)
    np.savez(out, positions=test.positions[idx].astype(np.float32), forces=test.forces[idx].astype(np.float32),
             energies=test.energies[idx].astype(np.float32), phi=phi.astype(np.float32), psi=psi.astype(np.float32),
             weights=every.weights.astype(np.float32))
    return out


def load_reference(setting: str = "obc", data_dir=None) -> Reference:
    """The shipped reference summary (held-out frames and backbone angles)."""
    f = reference_path(setting, data_dir)
    if not f.exists():
        raise FileNotFoundError(f"{f} does not exist: it is written by generate_data.py (or data.write_reference)")
    with np.load(f) as d:
        frames = Frames(d["positions"].astype(np.float64), d["forces"].astype(np.float64),
                        d["energies"].astype(np.float64), np.ones(len(d["positions"])))
        weights = d["weights"].astype(np.float64) if "weights" in d.files else np.ones(len(d["phi"]))
        return Reference(frames, d["phi"].astype(np.float64), d["psi"].astype(np.float64), weights)


def torch_split(frames: Frames, dtype=None):
    """(positions, forces, weights) as torch tensors (float64 by default), as the Trainer takes them."""
    import torch
    dtype = dtype or torch.float64
    return (torch.as_tensor(frames.positions, dtype=dtype), torch.as_tensor(frames.forces, dtype=dtype),
            torch.as_tensor(frames.weights, dtype=torch.float64))


def backbone_dihedrals(positions: np.ndarray):
    """(phi, psi) in radians of frames (n, 22, 3), IUPAC sign."""
    from .generate_data import dihedral
    return dihedral(positions, molecule.PHI_ATOMS), dihedral(positions, molecule.PSI_ATOMS)
