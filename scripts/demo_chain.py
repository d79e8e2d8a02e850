"""The demo molecule: a united-atom n-octane chain (residue MOL, atoms C1..C8).

Its classical force field (harmonic bonds and angles, a threefold torsion) is what the demo
flow is trained on (scripts/make_demo_model.py) and what the main job compares the flow
with (scripts/main_job.py).  OpenMM only; no torch.
"""
import math
import warnings

import openmm
import openmm.app as app
import openmm.unit as unit

N_ATOMS = 8
MASS = 14.027           # CH2 united atom, amu
BOND_LENGTH = 0.153     # nm
BOND_K = 2.0e5          # kJ/mol/nm^2
ANGLE = math.radians(112.0)
ANGLE_K = 500.0         # kJ/mol/rad^2
TORSIONS = [(1, 3.0, 0.0), (3, 6.0, 0.0)]   # (periodicity, k kJ/mol, phase): trans favoured


def topology() -> app.Topology:
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    atoms = [top.addAtom(f"C{i + 1}", app.element.carbon, res) for i in range(N_ATOMS)]
    for a, b in zip(atoms, atoms[1:]):
        top.addBond(a, b)
    return top


def classical_system() -> openmm.System:
    """The chain's classical potential: bonds, angles, torsions along the chain."""
    system = openmm.System()
    for _ in range(N_ATOMS):
        system.addParticle(MASS)
    bonds, angles, torsions = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce(), openmm.PeriodicTorsionForce()
    for i in range(N_ATOMS - 1):
        bonds.addBond(i, i + 1, BOND_LENGTH, BOND_K)
    for i in range(N_ATOMS - 2):
        angles.addAngle(i, i + 1, i + 2, ANGLE, ANGLE_K)
    for i in range(N_ATOMS - 3):
        for n, k, phase in TORSIONS:
            torsions.addTorsion(i, i + 1, i + 2, i + 3, n, phase, k)
    for f in (bonds, angles, torsions):
        system.addForce(f)
    return system


def flow_system(model_path) -> openmm.System:
    """The same particles with the flow as the only force (atoms mapped by name)."""
    import openmmsmoothflow
    system = openmm.System()
    for _ in range(N_ATOMS):
        system.addParticle(MASS)
    with warnings.catch_warnings():
        # the demo's own topology: its names are the ones the flow was trained with
        warnings.filterwarnings("ignore", message="the model's equivalent atoms")
        openmmsmoothflow.addSmoothFlowForce(system, topology(), str(model_path))
    return system


def extended_positions():
    """An all-trans start at the force field's minimum geometry, nm."""
    pos = []
    half = ANGLE / 2
    for i in range(N_ATOMS):
        pos.append(openmm.Vec3(i * BOND_LENGTH * math.sin(half), (i % 2) * BOND_LENGTH * math.cos(half), 0.0))
    return pos * unit.nanometer
