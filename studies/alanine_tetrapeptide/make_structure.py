"""Build the starting structure of capped alanine tetrapeptide, ACE-(ALA)3-NME (42 atoms): ala4.pdb.

Nothing is downloaded. The heavy atoms are placed from internal coordinates (standard peptide
geometry, Engh & Huber 1991 values rounded) with every backbone residue at phi = -80, psi = 150
(the beta / PPII basin, the alanine-dipeptide study's start) and trans peptide bonds; CB is placed
by the L-chirality improper. openmm.app.Modeller.addHydrogens adds the hydrogens (its standard
names; ACE and NME caps from OpenMM's hydrogens.xml), and a minimization with the study's force
field (amber99sbildn.xml + amber99_obc.xml, no cutoff, no constraints) relaxes the result.

The script checks what it made: 42 atoms, the bond graph of the capped peptide, L-chirality of
every CA (the sign of the N-C-CB triple product at CA, the same as in OpenMM's shipped test.pdb),
trans peptide bonds, and no atom pair closer than 0.09 nm that is not bonded. It is deterministic
(Python's random generator, which Modeller uses to place hydrogens, is seeded; the minimizers run on
the Reference platform), so rerunning reproduces ala4.pdb.

    python studies/alanine_tetrapeptide/make_structure.py [OUT.pdb]
"""
import math
import random
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

HERE = Path(__file__).resolve().parent
FORCEFIELD = ("amber99sbildn.xml", "amber99_obc.xml")   # studies/alanine_dipeptide/forcefield.py, "obc"
N_ALA = 3
PHI, PSI, OMEGA = -80.0, 150.0, 180.0

# bond lengths (nm) and angles (degrees) of a standard peptide
N_CA, CA_C, C_N, C_O, CA_CB, C_CH3 = 0.1458, 0.1525, 0.1329, 0.1231, 0.1530, 0.1520
ANG_N_CA_C, ANG_CA_C_N, ANG_C_N_CA, ANG_N_C_O = 111.0, 116.2, 121.7, 122.7
ANG_CB_CA_N = 110.5
# improper CB-CA-N-C for L-alanine (checked against test.pdb below)
TORSION_CB = -122.0


def place(a, b, c, bond, angle, torsion):
    """NeRF: the point d with |c d| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion
    (IUPAC sign), in nm and degrees."""
    theta, phi = math.radians(angle), math.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = np.array([-bond * math.cos(theta), bond * math.sin(theta) * math.cos(phi),
                  bond * math.sin(theta) * math.sin(phi)])
    return c + d[0] * bc + d[1] * m + d[2] * n


def dihedral(p0, p1, p2, p3):
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return math.degrees(math.atan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))


def heavy_atoms():
    """Topology (heavy atoms, PDB names) and positions (nm) of ACE-(ALA)3-NME."""
    # backbone chain: ACE CH3, ACE C, then N CA C per ALA, then NME N, NME C
    chain = [("ACE", "CH3"), ("ACE", "C")] + [(f"ALA{i}", n) for i in range(N_ALA) for n in ("N", "CA", "C")] \
        + [("NME", "N"), ("NME", "C")]
    x = {}
    x[chain[0]] = np.zeros(3)
    x[chain[1]] = np.array([C_CH3, 0.0, 0.0])
    x[chain[2]] = place(np.array([0.0, 1.0, 0.0]), x[chain[0]], x[chain[1]], C_N, ANG_CA_C_N, 0.0)
    # (the ACE methyl's orientation, set against an arbitrary point above, is irrelevant: its
    # hydrogens are added afterwards)
    for k in range(3, len(chain)):
        a, b, c = (x[chain[k - 3]], x[chain[k - 2]], x[chain[k - 1]])
        before = chain[k - 1][1]
        if before == "N":          # CA (or NME's methyl C) about the peptide bond C-N: omega
            bond, angle, tors = (N_CA, ANG_C_N_CA, OMEGA)
        elif before == "CA":       # C about N-CA: phi
            bond, angle, tors = (CA_C, ANG_N_CA_C, PHI)
        else:                      # the next N about CA-C: psi
            bond, angle, tors = (C_N, ANG_CA_C_N, PSI)
        x[chain[k]] = place(a, b, c, bond, angle, tors)
    # carbonyl O: in the peptide plane, cis to the next residue's CA (trans to its H)
    nexts = {("ACE", "C"): (("ALA0", "N"), ("ALA0", "CA"))}
    for i in range(N_ALA):
        nxt = f"ALA{i + 1}" if i + 1 < N_ALA else "NME"
        nexts[(f"ALA{i}", "C")] = ((nxt, "N"), (nxt, "CA") if nxt != "NME" else ("NME", "C"))
    for c, (n, ca) in nexts.items():
        x[(c[0], "O")] = place(x[ca], x[n], x[c], C_O, ANG_N_C_O, 0.0)
    for i in range(N_ALA):
        r = f"ALA{i}"
        x[(r, "CB")] = place(x[(r, "C")], x[(r, "N")], x[(r, "CA")], CA_CB, ANG_CB_CA_N, TORSION_CB)

    top = app.Topology()
    ch = top.addChain(id="A")
    order = [("ACE", ["CH3", "C", "O"])] + [(f"ALA{i}", ["N", "CA", "C", "O", "CB"]) for i in range(N_ALA)] \
        + [("NME", ["N", "C"])]
    pos = []
    for key, names in order:
        res = top.addResidue(key[:3], ch)
        for n in names:
            top.addAtom(n, app.element.get_by_symbol(n[0]), res)
            pos.append(x[(key, n)])
    top.createStandardBonds()
    return top, np.array(pos)


def l_chirality_sign(x, n, ca, c, cb):
    """sign of (N - CA) . ((C - CA) x (CB - CA)): the same for every L amino acid."""
    return float(np.sign(np.dot(x[n] - x[ca], np.cross(x[c] - x[ca], x[cb] - x[ca]))))


def reference_l_sign():
    """The chirality sign of the first ALA of OpenMM's shipped test.pdb (a protein: L residues)."""
    pdb = app.PDBFile(str(Path(app.__file__).parent / "data" / "test.pdb"))
    x = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    res = next(r for r in pdb.topology.residues() if r.name == "ALA")
    idx = {a.name: a.index for a in res.atoms()}
    return l_chirality_sign(x, idx["N"], idx["CA"], idx["C"], idx["CB"])


def check(topology, x):
    atoms = list(topology.atoms())
    names = [(a.residue.name, a.name) for a in atoms]
    if len(atoms) != 42:
        raise RuntimeError(f"expected 42 atoms, made {len(atoms)}: {names}")
    if [r.name for r in topology.residues()] != ["ACE", "ALA", "ALA", "ALA", "NME"]:
        raise RuntimeError("residues are not ACE ALA ALA ALA NME")
    if topology.getNumBonds() != 41:
        raise RuntimeError(f"a 42-atom acyclic molecule has 41 bonds, found {topology.getNumBonds()}")
    want = reference_l_sign()
    for r in topology.residues():
        if r.name != "ALA":
            continue
        idx = {a.name: a.index for a in r.atoms()}
        if l_chirality_sign(x, idx["N"], idx["CA"], idx["C"], idx["CB"]) != want:
            raise RuntimeError(f"residue {r.name}{r.id} is not L")
    # trans peptide bonds, and phi/psi near the intended start
    res = list(topology.residues())
    for a, b in zip(res[:-1], res[1:]):
        ia = {t.name: t.index for t in a.atoms()}
        ib = {t.name: t.index for t in b.atoms()}
        ca_a = ia.get("CA", ia.get("CH3"))
        ca_b = ib.get("CA", ib.get("C") if b.name == "NME" else None)
        w = dihedral(x[ca_a], x[ia["C"]], x[ib["N"]], x[ca_b])
        if abs(abs(w) - 180.0) > 30.0:
            raise RuntimeError(f"peptide bond {a.name}{a.id}-{b.name}{b.id} is not trans (omega {w:.1f})")
    bonded = {(p.index, q.index) for p, q in topology.bonds()} | {(q.index, p.index) for p, q in topology.bonds()}
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if (i, j) not in bonded and d[i, j] < 0.09:
                raise RuntimeError(f"atoms {names[i]} and {names[j]} are {d[i, j]:.3f} nm apart")


def main(out=HERE / "ala4.pdb"):
    topology, x = heavy_atoms()
    ff = app.ForceField(*FORCEFIELD)
    modeller = app.Modeller(topology, x * unit.nanometer)
    # Modeller places new hydrogens at random before relaxing them: seed Python's generator it uses
    random.seed(2026)
    # the Reference platform: the default (fastest) one may be an OpenCL without a device here
    modeller.addHydrogens(ff, pH=7.0, platform=openmm.Platform.getPlatformByName("Reference"))
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None,
                             rigidWater=False, removeCMMotion=False)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
    state = context.getState(getEnergy=True, getPositions=True, getForces=True)
    e1 = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    xmin = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    fmax = float(np.abs(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)).max())
    check(modeller.topology, np.asarray(xmin))
    with open(out, "w") as f:
        f.write("REMARK   1 ACE-(ALA)3-NME, built by studies/alanine_tetrapeptide/make_structure.py\n")
        f.write(f"REMARK   1 standard geometry phi {PHI:.0f} psi {PSI:.0f}, Modeller.addHydrogens, minimized with\n")
        f.write(f"REMARK   1 {' + '.join(FORCEFIELD)} (no cutoff, no constraints): {e1:.2f} kJ/mol\n")
        # no header: it holds the date, and the file should be reproducible byte for byte
        app.PDBFile.writeModel(modeller.topology, xmin * 10 * unit.angstrom, f, keepIds=True)
        app.PDBFile.writeFooter(modeller.topology, f)
    res = list(modeller.topology.residues())
    print(f"{out}: {modeller.topology.getNumAtoms()} atoms; energy {e0:.1f} -> {e1:.2f} kJ/mol after "
          f"minimization (max |force| {fmax:.1f} kJ/mol/nm)")
    for r in res[1:-1]:
        idx = {a.name: a.index for a in r.atoms()}
        prev = {a.name: a.index for a in res[r.index - 1].atoms()}
        nxt = {a.name: a.index for a in res[r.index + 1].atoms()}
        phi = dihedral(*(xmin[i] for i in (prev["C"], idx["N"], idx["CA"], idx["C"])))
        psi = dihedral(*(xmin[i] for i in (idx["N"], idx["CA"], idx["C"], nxt["N"])))
        print(f"  {r.name}{r.id}: phi {phi:7.1f}  psi {psi:7.1f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "ala4.pdb")
