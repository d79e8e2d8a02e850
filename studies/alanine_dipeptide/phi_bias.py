"""A static bias along phi, so that the rare phi > 0 basin is sampled often enough to count.

Unbiased Langevin MD crosses into the alpha_L basin (phi > 0) about once per 100 ns in OBC at
300 K (our first 2 x 50 ns: one crossing with a 1.6 ns dwell, so the basin held 3.2 % of one
chain and 0.01 % of the other).  Brute force cannot document the proportion on 2 cores.  So the
data chains run with a fixed bias V(phi) and every frame carries the exact reweighting factor
w = exp(+V(phi) / kT): weighted averages over biased frames are unbiased Boltzmann averages of
the force field at 300 K, and the stored forces are the force field's alone (the bias sits in
its own force group and is not stored).

V(phi) is the final bias of one short well-tempered metadynamics run (openmm.app.Metadynamics,
bias factor gamma): V ~ -(1 - 1/gamma) F(phi), so the biased chains see phi distributed as
exp(-F / (gamma kT)) and cross the barriers many times per nanosecond.  Because the bias is
frozen afterwards, the reweighting is exact and needs no assumption that metadynamics converged;
a poor V only costs statistical efficiency (reported as the weights' effective sample size).

The table (`<setting>.bias.npz`: phi grid, V in kJ/mol, settings) is small and shipped, so the
data chains are reproducible without rerunning metadynamics.
"""
import json
from pathlib import Path

import numpy as np
import openmm
# (pipeline.simulate is also the name of the pipeline's simulate step: import by name)
from smoothflow_torch.pipeline.simulate import BIAS_GRID, torsion_force
from smoothflow_torch.pipeline.simulate import BIAS_GROUP as PIPELINE_BIAS_GROUP
from smoothflow_torch.pipeline.simulate import add_static_bias as add_torsion_bias
from smoothflow_torch.pipeline.simulate import metadynamics

from . import forcefield, molecule

# the static bias force is the pipeline's: its force group (31; the force field uses group 0) and
# its table of BIAS_GRID = 181 points over [-pi, pi] (2 degrees)
BIAS_GROUP = PIPELINE_BIAS_GROUP
GRID = BIAS_GRID
BIAS_FACTOR = 4.0        # gamma: barrier of 30 kJ/mol seen as 7.5, alpha_L basin ~ 25 % of biased frames
HEIGHT = 1.0             # kJ/mol, initial Gaussian height
WIDTH = 0.35             # rad, Gaussian width
PACE_STEPS = 500         # a Gaussian every 1 ps at 2 fs


def bias_path(setting: str, data_dir: Path) -> Path:
    return Path(data_dir) / f"{setting}.bias.npz"


def phi_force() -> openmm.CustomTorsionForce:
    """phi as a collective variable (IUPAC sign, radians in [-pi, pi])."""
    return torsion_force(molecule.PHI_ATOMS)


def add_static_bias(system: openmm.System, table: np.ndarray) -> None:
    """Add V(phi), tabulated on GRID points over [-pi, pi] (periodic), in force group BIAS_GROUP
    (the pipeline's static bias along phi)."""
    add_torsion_bias(system, molecule.PHI_ATOMS, table)


def build(setting: str, ns: float, data_dir: Path, system_factory, seed: int = 999, progress: bool = True) -> dict:
    """Run well-tempered metadynamics along phi for `ns` and write the final bias table.

    `system_factory(setting)` returns the System the data chains use (same masses), so the
    bias is built under the same dynamics (the pipeline's metadynamics, with the study's settings)."""
    dt_fs = 2.0
    table, phis, seconds = metadynamics(
        system_factory(setting), molecule.topology(), molecule.standard_positions(), molecule.PHI_ATOMS,
        forcefield.TEMPERATURE, dt_fs, PACE_STEPS, int(round(ns * 1000)), 1.0, seed, "Reference",
        bias_factor=BIAS_FACTOR, height=HEIGHT, width=WIDTH, progress=progress, desc=f"{setting} metadynamics")
    settings = {"method": "well-tempered metadynamics (openmm.app.Metadynamics) along phi", "ns": ns,
                "bias_factor": BIAS_FACTOR, "height_kj_mol": HEIGHT, "width_rad": WIDTH,
                "pace_ps": PACE_STEPS * dt_fs / 1000, "grid": GRID, "seed": seed,
                "wall_seconds": round(seconds, 1),
                "phi_positive_fraction_during_run": float(np.mean(phis > 0)),
                "crossings_of_phi_0_during_run": int(np.sum(np.diff(np.sign(phis)) != 0))}
    np.savez(bias_path(setting, data_dir), phi=np.linspace(-np.pi, np.pi, GRID), bias=table,
             settings=json.dumps(settings))
    return settings


def load(setting: str, data_dir: Path):
    """(table, settings) of a written bias, or None when there is none."""
    f = bias_path(setting, data_dir)
    if not f.exists():
        return None
    with np.load(f) as d:
        return d["bias"].astype(float), json.loads(str(d["settings"]))
