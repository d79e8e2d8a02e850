"""The alanine dipeptide data set: loading, splitting, and what the trainer needs from it.

The files are written by `generate_data.py` (data/alanine_dipeptide/<setting>.npz); see its
docstring for the layout.  Arrays come back as float64 numpy arrays (the file stores float32
to stay compact); `torch_split` turns a split into tensors for the trainer.
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
    return Frames(pos[mask].astype(np.float64), frc[mask].astype(np.float64), ene[mask].astype(np.float64))


@dataclass(frozen=True)
class Reference:
    """The compact, shipped summary of a data set: held-out frames and the backbone angles."""
    test: Frames             # a subset of the held-out frames
    phi: np.ndarray          # (n,) radians, every frame of the data set
    psi: np.ndarray


def reference_path(setting: str = "obc", data_dir=None) -> Path:
    return Path(data_dir or DATA_DIR) / f"{setting}.reference.npz"


def write_reference(setting: str = "obc", data_dir=None, n_test: int = 200) -> Path:
    """Write <setting>.reference.npz (~0.5 MB) from the full data set: `n_test` held-out frames
    evenly spaced over the test split, and phi/psi of every frame (float32)."""
    test = load(setting, "test", data_dir)
    idx = np.linspace(0, len(test) - 1, n_test).round().astype(int)
    phi, psi = backbone_dihedrals(load(setting, "all", data_dir).positions)
    out = reference_path(setting, data_dir)
    np.savez(out, positions=test.positions[idx].astype(np.float32), forces=test.forces[idx].astype(np.float32),
             energies=test.energies[idx].astype(np.float32), phi=phi.astype(np.float32), psi=psi.astype(np.float32))
    return out


def load_reference(setting: str = "obc", data_dir=None) -> Reference:
    """The shipped reference summary (held-out frames and backbone angles)."""
    f = reference_path(setting, data_dir)
    if not f.exists():
        raise FileNotFoundError(f"{f} does not exist: it is written by generate_data.py (or data.write_reference)")
    with np.load(f) as d:
        frames = Frames(d["positions"].astype(np.float64), d["forces"].astype(np.float64),
                        d["energies"].astype(np.float64))
        return Reference(frames, d["phi"].astype(np.float64), d["psi"].astype(np.float64))


def torch_split(frames: Frames, dtype=None):
    """(positions, forces) as torch tensors (float64 by default)."""
    import torch
    dtype = dtype or torch.float64
    return torch.as_tensor(frames.positions, dtype=dtype), torch.as_tensor(frames.forces, dtype=dtype)


def backbone_dihedrals(positions: np.ndarray):
    """(phi, psi) in radians of frames (n, 22, 3), IUPAC sign."""
    from .generate_data import dihedral
    return dihedral(positions, molecule.PHI_ATOMS), dihedral(positions, molecule.PSI_ATOMS)
