"""LJ13 and DW4 as OpenMM Systems, and the same energies in NumPy / PyTorch.

Reduced units (docs/particle-systems.md): 1 length unit = 1 nm, 1 energy unit = 1 kJ/mol,
1 mass unit = 1 amu (g/mol); then the time unit sqrt(m L^2 / E) is exactly 1 ps, and the
reduced temperature kT = 1 is the OpenMM temperature 1 / R kelvin (about 120.27 K).

Definitions follow the equivariant-flow literature (Koehler, Klein, Noe 2020; bgflow's
``LennardJonesPotential(oscillator=True)`` and ``MultiDoubleWellPotential``), every pair counted
once (the papers' (1/2) sum over ordered pairs i != j):

* LJ13, 13 particles in 3D:
  E = eps * sum_{i<j} [(rm/d_ij)^12 - 2 (rm/d_ij)^6] + (k/2) sum_i |x_i - x_com|^2,
  eps = rm = k = 1, x_com the plain mean of the positions (all masses are equal).
* DW4, 4 particles in 2D:
  E = sum_{i<j} [a (d_ij - d0) + b (d_ij - d0)^2 + c (d_ij - d0)^4],  a = 0, b = -4, c = 0.9,
  d0 = 4 (bgflow's quartic/quadratic/constant coefficients 0.9, -4, 0).

The centre-of-mass pull is written exactly as a pair term, by the identity
sum_i |x_i - x_com|^2 = (1/N) sum_{i<j} |x_i - x_j|^2, so both systems are one or two
CustomBondForce / CustomCompoundBondForce over all pairs: no cutoff, no periodic box, no
collective variable, analytic forces from Lepton's symbolic derivatives.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict

import numpy as np

__all__ = ["R_KJ_PER_MOL_K", "REDUCED_TEMPERATURE_KELVIN", "LJ_GROUP", "OSCILLATOR_GROUP",
           "DW_GROUP", "ParticleSystem", "SYSTEMS", "lj13_system", "dw4_system", "lj_energy",
           "oscillator_energy", "lj13_energy", "dw4_energy", "pair_indices", "remove_com"]

#: The molar gas constant OpenMM uses for kT (kJ/mol/K; CODATA 2018, as openmm.unit).
R_KJ_PER_MOL_K = 0.00831446261815324
#: The OpenMM temperature at which kT = 1 kJ/mol, i.e. reduced temperature 1.
REDUCED_TEMPERATURE_KELVIN = 1.0 / R_KJ_PER_MOL_K

#: Force groups, so that tests and analysis can read each term alone.
LJ_GROUP = 0
OSCILLATOR_GROUP = 1
DW_GROUP = 0

LJ_DEFAULTS = dict(eps=1.0, rm=1.0, oscillator_scale=1.0)
DW_DEFAULTS = dict(a=0.0, b=-4.0, c=0.9, d0=4.0)


def pair_indices(n: int):
    """(i, j) index arrays of all unordered pairs i < j, in row-major order."""
    i, j = np.triu_indices(n, k=1)
    return i, j


def _pair_distances(x, spatial_dim: int):
    """Distances d_ij (i<j) of positions x (..., n, >=spatial_dim); NumPy array or torch tensor.

    Only the first ``spatial_dim`` coordinates count, so a DW4 configuration stored with a
    third (z) column gives the 2D distances.
    """
    n = x.shape[-2]
    i, j = pair_indices(n)
    delta = x[..., i, :spatial_dim] - x[..., j, :spatial_dim]
    return ((delta * delta).sum(-1)) ** 0.5


def remove_com(x):
    """Positions minus their mean over particles (the centre of mass: all masses are equal)."""
    n = x.shape[-2]
    return x - x.sum(-2)[..., None, :] / n


def lj_energy(x, eps: float = 1.0, rm: float = 1.0):
    """Lennard-Jones energy eps sum_{i<j} [(rm/d)^12 - 2 (rm/d)^6] of x (..., n, 3)."""
    s6 = (rm / _pair_distances(x, 3)) ** 6
    return eps * (s6 * s6 - 2.0 * s6).sum(-1)


def oscillator_energy(x, scale: float = 1.0):
    """The harmonic pull to the centre of mass, (scale/2) sum_i |x_i - x_com|^2."""
    y = remove_com(x)
    return 0.5 * scale * (y * y).sum((-2, -1))


def lj13_energy(x, eps: float = 1.0, rm: float = 1.0, oscillator_scale: float = 1.0):
    """LJ13 energy (reduced units) of x (..., 13, 3); works on NumPy arrays and torch tensors."""
    return lj_energy(x, eps, rm) + oscillator_energy(x, oscillator_scale)


def dw4_energy(x, a: float = 0.0, b: float = -4.0, c: float = 0.9, d0: float = 4.0):
    """DW4 energy sum_{i<j} [a u + b u^2 + c u^4], u = d_ij - d0, of x (..., 4, 2 or 3).

    A third column (z) is ignored: the OpenMM System holds the particles in 3D with z = 0.
    """
    u = _pair_distances(x, 2) - d0
    u2 = u * u
    return (a * u + b * u2 + c * u2 * u2).sum(-1)


def _add_particles(system, n: int, mass: float):
    for _ in range(n):
        system.addParticle(mass)


def lj13_system(n_particles: int = 13, eps: float = 1.0, rm: float = 1.0,
                oscillator_scale: float = 1.0, mass: float = 1.0):
    """The LJ cluster with the centre-of-mass pull as an openmm.System (reduced units).

    Group LJ_GROUP: the Lennard-Jones pairs; group OSCILLATOR_GROUP: the pull, written as
    (scale / (2N)) d_ij^2 over all pairs, which equals (scale/2) sum_i |x_i - x_com|^2 exactly
    for equal masses (the mean, not a mass-weighted centre, is what the literature uses).
    """
    import openmm

    if n_particles < 2:
        raise ValueError(f"lj13_system: n_particles must be at least 2, got {n_particles}")
    system = openmm.System()
    _add_particles(system, n_particles, mass)
    lj = openmm.CustomBondForce("eps*(s6*s6 - 2*s6); s6 = (rm/r)^6")
    lj.addGlobalParameter("eps", eps)
    lj.addGlobalParameter("rm", rm)
    pull = openmm.CustomBondForce("kpair*r^2")
    pull.addGlobalParameter("kpair", oscillator_scale / (2.0 * n_particles))
    for i, j in itertools.combinations(range(n_particles), 2):
        lj.addBond(i, j, [])
        pull.addBond(i, j, [])
    lj.setForceGroup(LJ_GROUP)
    pull.setForceGroup(OSCILLATOR_GROUP)
    lj.setName("LennardJones")
    pull.setName("CentreOfMassPull")
    system.addForce(lj)
    system.addForce(pull)
    return system


def dw4_system(n_particles: int = 4, a: float = 0.0, b: float = -4.0, c: float = 0.9,
               d0: float = 4.0, mass: float = 1.0):
    """The multi-double-well system as an openmm.System whose energy does not depend on z.

    OpenMM particles live in 3D; the pair energy is a CustomCompoundBondForce of the in-plane
    distance sqrt(dx^2 + dy^2), so z enters neither the energy nor the forces (F_z == 0
    exactly). Dynamics keep z = 0 with z velocities of 0 and a Langevin integrator whose noise
    and friction act in x and y only (data.langevin_integrator with a planar mask).
    """
    import openmm

    if n_particles < 2:
        raise ValueError(f"dw4_system: n_particles must be at least 2, got {n_particles}")
    system = openmm.System()
    _add_particles(system, n_particles, mass)
    pair = openmm.CustomCompoundBondForce(
        2, "a*u + b*u^2 + c*u^4; u = sqrt((x1-x2)^2 + (y1-y2)^2) - d0")
    for name, value in (("a", a), ("b", b), ("c", c), ("d0", d0)):
        pair.addGlobalParameter(name, value)
    for i, j in itertools.combinations(range(n_particles), 2):
        pair.addBond([i, j], [])
    pair.setForceGroup(DW_GROUP)
    pair.setName("DoubleWellPairs")
    system.addForce(pair)
    return system


@dataclass(frozen=True)
class ParticleSystem:
    """One benchmark system: its size, its OpenMM System, its reference energy, MD defaults."""
    name: str
    n_particles: int
    spatial_dim: int                    # 3 for LJ13, 2 for DW4 (OpenMM holds z = 0)
    build: Callable[[], object]         # -> openmm.System
    energy: Callable                    # reference energy of (..., n, spatial_dim or 3)
    parameters: Dict[str, float]
    timestep: float                     # ps (= reduced time units)
    friction: float                     # 1/ps
    temperatures: tuple                 # reduced kT ladder, first = the target (1)
    stride: int                         # MD steps between stored samples
    box: float                          # side of the region the initial guess is drawn in
    min_distance: float                 # closest pair allowed in the initial guess

    @property
    def dof(self) -> int:
        """Degrees of freedom of the centre-of-mass-free configuration space, (n-1) d."""
        return (self.n_particles - 1) * self.spatial_dim


SYSTEMS: Dict[str, ParticleSystem] = {
    # LJ13 at kT = eps is a liquid-like cluster held together by the pull: plain Langevin
    # chains mix within picoseconds (docs/particle-systems.md); the ladder is one temperature.
    "lj13": ParticleSystem("lj13", 13, 3, lj13_system, lj13_energy, dict(LJ_DEFAULTS),
                           timestep=0.005, friction=1.0, temperatures=(1.0,), stride=100,
                           box=2.4, min_distance=0.95),
    # DW4: pair barriers of 4.4 kT; replica exchange over a short ladder mixes the wells.
    "dw4": ParticleSystem("dw4", 4, 2, dw4_system, dw4_energy, dict(DW_DEFAULTS),
                          timestep=0.01, friction=1.0, temperatures=(1.0, 1.6, 2.5, 4.0),
                          stride=50, box=6.0, min_distance=2.0),
}
