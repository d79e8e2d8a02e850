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
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from . import forcefield, molecule

BIAS_GROUP = 31          # the bias's force group; the force field uses group 0
BIAS_FACTOR = 4.0        # gamma: barrier of 30 kJ/mol seen as 7.5, alpha_L basin ~ 25 % of biased frames
HEIGHT = 1.0             # kJ/mol, initial Gaussian height
WIDTH = 0.35             # rad, Gaussian width
PACE_STEPS = 500         # a Gaussian every 1 ps at 2 fs
GRID = 181               # table points over [-pi, pi] (2 degrees)


def bias_path(setting: str, data_dir: Path) -> Path:
    return Path(data_dir) / f"{setting}.bias.npz"


def phi_force() -> openmm.CustomTorsionForce:
    """phi as a collective variable (IUPAC sign, radians in [-pi, pi])."""
    cv = openmm.CustomTorsionForce("theta")
    cv.addTorsion(*molecule.PHI_ATOMS, [])
    return cv


def add_static_bias(system: openmm.System, table: np.ndarray) -> None:
    """Add V(phi), tabulated on GRID points over [-pi, pi] (periodic), in force group BIAS_GROUP."""
    table = np.asarray(table, float)
    if table.shape != (GRID,) or not np.all(np.isfinite(table)) or abs(table[0] - table[-1]) > 1e-9:
        raise ValueError(f"bias table must hold {GRID} finite values with table[0] == table[-1]")
    force = openmm.CustomCVForce("phi_bias(phi)")  # as openmm.app.Metadynamics applies its bias
    force.addCollectiveVariable("phi", phi_force())
    force.addTabulatedFunction("phi_bias", openmm.Continuous1DFunction(table.tolist(), -np.pi, np.pi, True))
    force.setForceGroup(BIAS_GROUP)
    system.addForce(force)


def build(setting: str, ns: float, data_dir: Path, system_factory, seed: int = 999, progress: bool = True) -> dict:
    """Run well-tempered metadynamics along phi for `ns` and write the final bias table.

    `system_factory(setting)` returns the System the data chains use (same masses), so the
    bias is built under the same dynamics."""
    from tqdm import tqdm

    dt_fs = 2.0
    system = system_factory(setting)
    variable = app.BiasVariable(phi_force(), -np.pi, np.pi, WIDTH, periodic=True, gridWidth=GRID)
    meta = app.Metadynamics(system, [variable], forcefield.TEMPERATURE * unit.kelvin, BIAS_FACTOR,
                            HEIGHT * unit.kilojoule_per_mole, PACE_STEPS)
    integrator = openmm.LangevinMiddleIntegrator(forcefield.TEMPERATURE * unit.kelvin, 1 / unit.picosecond,
                                                 dt_fs * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(molecule.topology(), system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(molecule.standard_positions() * unit.nanometer)
    sim.minimizeEnergy()
    sim.context.setVelocitiesToTemperature(forcefield.TEMPERATURE * unit.kelvin, seed)
    t0 = time.time()
    chunks = int(round(ns * 1000))  # 1 ps each
    phis = []
    for _ in tqdm(range(chunks), desc=f"{setting} metadynamics", unit="ps", disable=not progress, mininterval=2.0):
        meta.step(sim, PACE_STEPS)
        phis.append(float(meta.getCollectiveVariables(sim)[0]))
    free_energy = np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole), float).ravel()
    table = -free_energy * (BIAS_FACTOR - 1) / BIAS_FACTOR   # = the deposited bias
    table -= table.max()                                      # V <= 0; only differences matter
    phis = np.array(phis)
    settings = {"method": "well-tempered metadynamics (openmm.app.Metadynamics) along phi", "ns": ns,
                "bias_factor": BIAS_FACTOR, "height_kj_mol": HEIGHT, "width_rad": WIDTH,
                "pace_ps": PACE_STEPS * dt_fs / 1000, "grid": GRID, "seed": seed,
                "wall_seconds": round(time.time() - t0, 1),
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
