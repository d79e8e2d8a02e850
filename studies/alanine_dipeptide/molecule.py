"""The alanine dipeptide molecule, built from standard geometry (no downloaded files).

Atom order (Amber names), the order of the study's reference data:

    ACE: 0 HH31  1 CH3  2 HH32  3 HH33  4 C   5 O
    ALA: 6 N     7 H    8 CA    9 HA   10 CB 11 HB1 12 HB2 13 HB3 14 C 15 O
    NME: 16 N   17 H   18 C    19 HH31 20 HH32 21 HH33

phi = dihedral(4, 6, 8, 14) = C(ACE)-N-CA-C, psi = dihedral(6, 8, 14, 16) = N-CA-C-N(NME).
"""
import math

import numpy as np
import openmm.app as app
import openmm.unit as unit

from .zmatrix import ZMATRIX

N_ATOMS = 22
PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)

#: (residue, atom name, element) in model order
ATOMS = [
    ("ACE", "HH31", "H"), ("ACE", "CH3", "C"), ("ACE", "HH32", "H"), ("ACE", "HH33", "H"),
    ("ACE", "C", "C"), ("ACE", "O", "O"),
    ("ALA", "N", "N"), ("ALA", "H", "H"), ("ALA", "CA", "C"), ("ALA", "HA", "H"), ("ALA", "CB", "C"),
    ("ALA", "HB1", "H"), ("ALA", "HB2", "H"), ("ALA", "HB3", "H"), ("ALA", "C", "C"), ("ALA", "O", "O"),
    ("NME", "N", "N"), ("NME", "H", "H"), ("NME", "C", "C"), ("NME", "HH31", "H"), ("NME", "HH32", "H"),
    ("NME", "HH33", "H"),
]
RESIDUES = ["ACE", "ALA", "NME"]
BONDS = [(0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6), (6, 7), (6, 8), (8, 9), (8, 10), (10, 11),
         (10, 12), (10, 13), (8, 14), (14, 15), (14, 16), (16, 17), (16, 18), (18, 19), (18, 20), (18, 21)]


def atoms_metadata():
    """The model file's `atoms` entry (docs/model-format.md)."""
    return [{"name": name, "residue": res, "residue_index": RESIDUES.index(res), "element": el}
            for res, name, el in ATOMS]


def topology() -> app.Topology:
    top = app.Topology()
    chain = top.addChain()
    residues = {name: top.addResidue(name, chain) for name in RESIDUES}
    atoms = [top.addAtom(name, app.element.get_by_symbol(el), residues[res]) for res, name, el in ATOMS]
    for a, b in BONDS:
        top.addBond(atoms[a], atoms[b])
    return top


# Standard geometry: bond lengths (nm) by element pair and bond type, angles (degrees).
_BOND = {("C", "H"): 0.109, ("H", "N"): 0.101, ("C", "O"): 0.1229, ("C", "C"): 0.1525}
_AMIDE_CN, _N_CA = 0.1335, 0.1458


def _bond_length(a: int, b: int) -> float:
    ea, eb = ATOMS[a][2], ATOMS[b][2]
    pair = tuple(sorted((ea, eb)))
    if pair == ("C", "N"):
        # the amide C-N is shorter than N-CA and N-CH3
        carbonyl = ATOMS[a][1] == "C" or ATOMS[b][1] == "C"
        return _AMIDE_CN if carbonyl else _N_CA
    return _BOND[pair]


def _angle(a: int, j: int, k: int) -> float:
    """Angle a-j-k in degrees: sp2 centres (carbonyl C, amide N) 120, others tetrahedral."""
    centre = ATOMS[j]
    sp2 = (centre[1] == "C" and centre[0] in ("ACE", "ALA")) or centre[2] == "N"
    return 120.0 if sp2 else 109.5


def _torsion(row, phi: float, psi: float) -> float:
    a, j, k, l = row
    if (a, j, k, l) == (14, 8, 6, 4):
        return phi
    if (a, j, k, l) == (16, 14, 8, 6):
        return psi
    names = tuple(ATOMS[i][1] for i in row)
    # improper placements of a second/third methyl H or of CB/HA: +-120 from the reference
    special = {(2, 1, 4, 0): 120.0, (3, 1, 4, 0): -120.0, (12, 10, 8, 11): 120.0, (13, 10, 8, 11): -120.0,
               (20, 18, 16, 19): 120.0, (21, 18, 16, 19): -120.0, (10, 8, 6, 14): -120.0,
               (9, 8, 6, 14): 120.0}
    if (a, j, k, l) in special:
        return special[(a, j, k, l)]
    del names
    return 180.0


def standard_positions(phi: float = -80.0, psi: float = 150.0) -> np.ndarray:
    """Positions (22, 3) in nm from standard geometry with the given backbone angles (degrees).

    A starting point only: minimize with the force field before use.
    """
    x = np.zeros((N_ATOMS, 3))
    for r, row in enumerate(ZMATRIX):
        a, j, k, l = row
        if r == 0:
            continue
        b = _bond_length(a, j)
        if r == 1:
            x[a] = x[j] + [b, 0.0, 0.0]
            continue
        theta = math.radians(_angle(a, j, k))
        if r == 2:
            u = (x[k] - x[j]) / np.linalg.norm(x[k] - x[j])
            perp = np.array([-u[1], u[0], 0.0]) if abs(u[2]) < 0.9 else np.array([0.0, -u[2], u[1]])
            perp /= np.linalg.norm(perp)
            x[a] = x[j] + b * (math.cos(theta) * u + math.sin(theta) * perp)
            continue
        x[a] = _place(x[l], x[k], x[j], b, theta, math.radians(_torsion(row, phi, psi)))
    return x


def _place(pa, pb, pc, bond, theta, phi):
    """NeRF: the atom d with |cd| = bond, angle(d, c, b) = theta, dihedral(d, c, b, a) = phi."""
    bc = (pc - pb) / np.linalg.norm(pc - pb)
    n = np.cross(pb - pa, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * math.cos(theta), bond * math.sin(theta) * math.cos(phi),
                   bond * math.sin(theta) * math.sin(phi)])
    return pc + d2[0] * bc + d2[1] * m + d2[2] * n


def positions_quantity(x: np.ndarray):
    return x * unit.nanometer
