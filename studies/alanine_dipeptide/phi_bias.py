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
data chains are reproducible without rerunning metadynamics: generate_data.py installs it as the
study's pipeline project's ``data/bias.npz``. Where no table is shipped, the pipeline's simulate
builds one with the same settings (smoothflow_torch.pipeline.simulate.metadynamics: bias factor
4, Gaussians 1 kJ/mol high and 0.35 rad wide, one per ps, seed 999 for the chains' seed 1000).
"""
import json
from pathlib import Path

import numpy as np
import openmm
# (pipeline.simulate is also the name of the pipeline's simulate step: import by name)
from smoothflow_torch.pipeline.simulate import BIAS_FACTOR, BIAS_GRID, torsion_force  # noqa: F401
from smoothflow_torch.pipeline.simulate import BIAS_GROUP as PIPELINE_BIAS_GROUP
from smoothflow_torch.pipeline.simulate import add_static_bias as add_torsion_bias

from . import molecule

# the static bias force is the pipeline's: its force group (31; the force field uses group 0) and
# its table of BIAS_GRID = 181 points over [-pi, pi] (2 degrees)
BIAS_GROUP = PIPELINE_BIAS_GROUP
GRID = BIAS_GRID
# the metadynamics' bias factor gamma = BIAS_FACTOR = 4 (the pipeline's): a barrier of 30 kJ/mol
# is seen as 7.5, and the alpha_L basin holds ~ 25 % of the biased frames


def bias_path(setting: str, data_dir: Path) -> Path:
    return Path(data_dir) / f"{setting}.bias.npz"


def phi_force() -> openmm.CustomTorsionForce:
    """phi as a collective variable (IUPAC sign, radians in [-pi, pi])."""
    return torsion_force(molecule.PHI_ATOMS)


def add_static_bias(system: openmm.System, table: np.ndarray) -> None:
    """Add V(phi), tabulated on GRID points over [-pi, pi] (periodic), in force group BIAS_GROUP
    (the pipeline's static bias along phi)."""
    add_torsion_bias(system, molecule.PHI_ATOMS, table)


def load(setting: str, data_dir: Path):
    """(table, settings) of a written bias, or None when there is none."""
    f = bias_path(setting, data_dir)
    if not f.exists():
        return None
    with np.load(f) as d:
        return d["bias"].astype(float), json.loads(str(d["settings"]))
