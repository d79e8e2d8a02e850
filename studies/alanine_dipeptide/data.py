"""The alanine dipeptide data set: loading, splitting, and what the trainer needs from it.

The files are written by `generate_data.py` (data/alanine_dipeptide/<setting>.npz); see its
docstring for the layout, which is the pipeline's ``data/frames.npz`` layout: the frames are read
by the pipeline's reader (``smoothflow_torch.pipeline.data``) with the study's molecule and
temperature.  Arrays come back as float64 numpy arrays (the file stores float32 to stay
compact); `torch_split` turns a split into tensors for the trainer.

Frames from phi-biased chains (phi_bias.py) carry importance weights exp(V_bias/kT), scaled to
mean 1 over the whole file: every average over frames (losses, histograms, free energies, the
phi > 0 population) must be weighted by them.  Unbiased files get weights of 1.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smoothflow_torch.pipeline import data as frames_file
# Frames: positions (n, 22, 3) nm, forces (n, 22, 3) kJ/mol/nm, energies (n,) kJ/mol, weights (n,)
from smoothflow_torch.pipeline.data import SPLITS, Frames, boltzmann_indices  # noqa: F401 (the study's names)
from smoothflow_torch.pipeline.project import dihedral

from . import forcefield, molecule

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide"


def path(setting: str = "obc", data_dir=None) -> Path:
    return Path(data_dir or DATA_DIR) / f"{setting}.npz"


def load(setting: str = "obc", split: str = "train", data_dir=None) -> Frames:
    """Frames of one split ("train", "test" or "all") of a generated data set.

    Raises
    ------
    FileNotFoundError
        With the command that generates the file.
    ValueError
        When the file's arrays do not have the documented shapes, its bias is not finite or
        the split has no frames.
    """
    f = path(setting, data_dir)
    if not f.exists():
        raise FileNotFoundError(f"{f} does not exist: generate it with "
                                f"`python -m alanine_dipeptide.generate_data --setting {setting}` (from studies/)")
    return frames_file.load(f, forcefield.KT, molecule.N_ATOMS, split)


@dataclass(frozen=True)
class Reference:
    """The compact, shipped summary of a data set: held-out frames and the backbone angles."""
    test: Frames             # held-out frames drawn with probability proportional to their weights
    phi: np.ndarray          # (n,) radians, every frame of the data set
    psi: np.ndarray
    weights: np.ndarray      # (n,) reweighting factors of those frames (histograms must use them)


def reference_path(setting: str = "obc", data_dir=None) -> Path:
    return Path(data_dir or DATA_DIR) / f"{setting}.reference.npz"


def write_reference(setting: str = "obc", data_dir=None, n_test: int = 200, out=None) -> Path:
    """Write <setting>.reference.npz (~1 MB) from the full data set: `n_test` held-out frames
    drawn by systematic resampling (so they are Boltzmann distributed even from biased chains;
    weight 1 each), and phi/psi and the weight of every frame (float32). ``out``: another
    path to write it to (default: beside the data)."""
    test = load(setting, "test", data_dir)
    idx = boltzmann_indices(test.weights, n_test)
    every = load(setting, "all", data_dir)
    phi, psi = backbone_dihedrals(every.positions)
    out = Path(out) if out is not None else reference_path(setting, data_dir)
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
    return dihedral(positions, molecule.PHI_ATOMS), dihedral(positions, molecule.PSI_ATOMS)
