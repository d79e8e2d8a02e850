"""The Z-matrix builder (python/openmmsmoothflow/zmatrix.py, docs/zmatrix-builder.md).

Molecules: alanine dipeptide (the study's topology, against its hand-written Z-matrix), capped
dipeptides of the 20 standard amino acids and the histidine variants, a capped pentapeptide
with a proline, an uncapped tripeptide with charged termini, (S)-1-phenylethanol (a ring, not
a peptide) and tiny molecules (water, methane, ethane).  Fixtures: tests/data/zmatrix (made by its make_fixtures.py).

The invariants are checked by code written here, not by the builder's: every atom placed
once, references earlier, every Z-matrix bond a chemical bond and angle/torsion references
bonded chains, a round trip positions -> internal coordinates -> positions to 1e-10 nm
(PyTorch's transforms, the ones the model uses), chirality, one proper torsion per rotor,
backbone dihedrals as single torsions, and the same Z-matrix for any atom order in the file.

The module is loaded from its source file, so these tests need no build of the plugin.
"""
import importlib.util
import io
import os
import random

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
DATA = os.path.join(REPO, 'tests', 'data', 'zmatrix')


def _loadBuilder():
    spec = importlib.util.spec_from_file_location(
        'smoothflow_zmatrix_builder', os.path.join(REPO, 'python', 'openmmsmoothflow', 'zmatrix.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zb = _loadBuilder()


# ---- molecules -----------------------------------------------------------------

class Molecule:
    """One molecule of a Topology: its atoms (Topology indices, model order) and positions (nm)."""

    def __init__(self, name, topology, positions, atoms=None):
        self.name = name
        self.topology = topology
        all_atoms = list(topology.atoms())
        self.atoms = list(range(len(all_atoms))) if atoms is None else list(atoms)
        x = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions,
                       dtype=np.float64)
        self.x = x[self.atoms] if len(x) == len(all_atoms) else x
        self.objects = [all_atoms[i] for i in self.atoms]
        local = {g: i for i, g in enumerate(self.atoms)}
        self.bonds = set()
        for a, b in topology.bonds():
            if a.index in local and b.index in local:
                self.bonds.add(frozenset((local[a.index], local[b.index])))
        self.n = len(self.atoms)

    def build(self):
        return zb.buildZMatrix(self.topology, self.x, self.atoms)

    def bonded(self, i, j):
        return frozenset((int(i), int(j))) in self.bonds

    def label(self, i):
        a = self.objects[i]
        return (a.residue.chain.index, a.residue.index, a.name)

    def index(self, residue, name):
        """The model index of atom name in the molecule's residue number residue (0-based)."""
        residues = sorted({a.residue.index for a in self.objects})
        return next(i for i, a in enumerate(self.objects)
                    if a.residue.index == residues[residue] and a.name == name)


def _pdb(name):
    return app.PDBFile(os.path.join(DATA, name))


def dipeptides():
    pdb = _pdb('dipeptides.pdb')
    result = []
    for chain in pdb.topology.chains():
        residues = list(chain.residues())
        label = residues[1].name
        if label == 'HIS':
            names = {a.name for a in residues[1].atoms()}
            label = 'HIP' if {'HD1', 'HE2'} <= names else 'HID' if 'HD1' in names else 'HIE'
        result.append(Molecule(label, pdb.topology, pdb.positions, [a.index for a in chain.atoms()]))
    return result


def alanine_study():
    molecule = pytest.importorskip('alanine_dipeptide.molecule')
    return Molecule('alanine-study', molecule.topology(), molecule.standard_positions())


def tiny(name):
    """water, methane or ethane with ideal tetrahedral geometry."""
    t = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3.0)
    topology = app.Topology()
    residue = topology.addResidue('MOL', topology.addChain())
    C, H, O = (app.element.get_by_symbol(s) for s in ('C', 'H', 'O'))
    if name == 'water':
        atoms = [('O', O, [0, 0, 0]), ('H1', H, 0.0957 * t[0]), ('H2', H, 0.0957 * t[1])]
        bonds = [(0, 1), (0, 2)]
    elif name == 'methane':
        atoms = [('C', C, [0, 0, 0])] + [('H%d' % (i + 1), H, 0.109 * t[i]) for i in range(4)]
        bonds = [(0, i) for i in range(1, 5)]
    else:
        c2 = 0.153 * t[0]
        atoms = [('C1', C, [0, 0, 0]), ('C2', C, c2)]
        atoms += [('H1%d' % i, H, 0.109 * t[i]) for i in (1, 2, 3)]
        atoms += [('H2%d' % i, H, c2 - 0.109 * t[i]) for i in (1, 2, 3)]     # staggered
        bonds = [(0, 1)] + [(0, i) for i in (2, 3, 4)] + [(1, i) for i in (5, 6, 7)]
    made = [topology.addAtom(n, e, residue) for n, e, _ in atoms]
    for a, b in bonds:
        topology.addBond(made[a], made[b])
    return Molecule(name, topology, np.array([x for _, _, x in atoms], dtype=float))


def all_molecules():
    pdb = _pdb('pentapeptide.pdb')
    penta = Molecule('pentapeptide', pdb.topology, pdb.positions)
    pdb = _pdb('tripeptide.pdb')
    tri = Molecule('tripeptide', pdb.topology, pdb.positions)
    pdb = _pdb('phenylethanol.pdb')
    ring = Molecule('phenylethanol', pdb.topology, pdb.positions)
    return dipeptides() + [penta, tri, ring] + [tiny(n) for n in ('water', 'methane', 'ethane')]


MOLECULES = all_molecules()
IDS = [m.name for m in MOLECULES]


# ---- independent checks ---------------------------------------------------------------

def check_rows(mol, Z):
    """Shape, placement order, and the bonded chains the builder promises: a-j a bond,
    j-k a bond (the angle's atoms), and l bonded to k (a proper torsion) or to j (improper)."""
    assert Z.shape == (mol.n, 4) and Z.dtype == np.int64
    assert sorted(Z[:, 0].tolist()) == list(range(mol.n)), "every atom is placed exactly once"
    placed = set()
    for r, row in enumerate(Z.tolist()):
        used = min(r, 3) + 1
        assert row[used:] == [-1] * (4 - used), f"row {r}: unused entries must be -1: {row}"
        a, refs = row[0], row[1:used]
        assert all(x in placed for x in refs), f"row {r}: a reference is not placed earlier: {row}"
        assert len(set(row[:used])) == used, f"row {r}: atoms must be distinct: {row}"
        if r >= 1:
            assert mol.bonded(a, row[1]), f"row {r}: {mol.label(a)}-{mol.label(row[1])} is not a chemical bond"
        if r >= 2:
            assert mol.bonded(row[1], row[2]), f"row {r}: the angle's atoms {row[:3]} are not a bonded chain"
        if r >= 3:
            j, k, l = row[1:]
            assert mol.bonded(k, l) or mol.bonded(j, l), f"row {r}: torsion reference {l} is bonded to neither j nor k"
        placed.add(a)


def kind(mol, row):
    return 'proper' if mol.bonded(row[2], row[3]) else 'improper'


def signed_volumes(mol, x):
    """det(n1 - c, n2 - c, n3 - c) of every atom with at least 3 neighbours (lowest indices)."""
    out = {}
    for c in range(mol.n):
        nb = sorted(i for i in range(mol.n) if mol.bonded(c, i))
        if len(nb) >= 3:
            out[c] = np.linalg.det(np.array([x[nb[0]] - x[c], x[nb[1]] - x[c], x[nb[2]] - x[c]]))
    return out


def aligned(x, y):
    """y moved onto x by the best proper rotation and translation (Kabsch): a mirror image
    cannot be aligned."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    u, _, vt = np.linalg.svd(yc.T @ xc)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return yc @ rotation.T + x.mean(0)


# ---- the invariants on every molecule ------------------------------------------------------

@pytest.mark.parametrize('mol', MOLECULES, ids=IDS)
def test_rows_are_bonded_chains(mol):
    check_rows(mol, mol.build())


def ring_atoms(mol):
    """Atoms with a bond whose removal leaves its two ends connected (members of a ring)."""
    adj = {i: set() for i in range(mol.n)}
    for b in mol.bonds:
        u, v = tuple(b)
        adj[u].add(v)
        adj[v].add(u)
    out = set()
    for b in mol.bonds:
        u, v = tuple(b)
        seen, todo = {u}, [u]
        while todo:
            w = todo.pop()
            for n in adj[w]:
                if n not in seen and {w, n} != {u, v}:
                    seen.add(n)
                    todo.append(n)
        if v in seen:
            out |= {u, v}
    return out


@pytest.mark.parametrize('mol', MOLECULES, ids=IDS)
def test_torsions_rest_on_zmatrix_angles_except_at_ring_closures(mol):
    """A torsion whose reference triple j-k-l is no Z-matrix angle (unguardedTorsions) turns
    singular if that implied angle collapses (docs/reliability.md section 5). The builder makes
    them only inside rings, where the implied angle is a ring angle closed by a bond the
    Z-matrix does not hold (HIS, PHE, TYR, TRP, PRO, phenylethanol): never for an amide H, a
    carbonyl or a chain. Checked directly on the triples, then against unguardedTorsions."""
    Z = mol.build()
    angles = {tuple(r[:3]) for r in Z.tolist() if r[2] >= 0}
    angles |= {(c, b, a) for a, b, c in angles}
    rings = ring_atoms(mol)
    mine = [r for r, (a, j, k, l) in enumerate(Z.tolist())
            if l >= 0 and (j, k, l) not in angles and (k, j, l) not in angles]
    assert zb.unguardedTorsions(Z) == mine
    for r in mine:
        assert set(Z[r, 1:].tolist()) <= rings, (r, [mol.label(i) for i in Z[r]])


def test_unguarded_torsions_of_the_hand_written_alanine_zmatrix():
    """The study's hand-written Z-matrix places both amide hydrogens by H-N-C-O, whose N-C-O
    angle no row models: exactly those two rows are reported, and their fix (H-N-C-CH3,
    H-N-C-CA) is not; a row guarded only at j (an improper about j) is accepted."""
    zmatrix = pytest.importorskip('alanine_dipeptide.zmatrix')
    H = np.array(zmatrix.ZMATRIX)
    rows = zb.unguardedTorsions(H)
    assert rows == [11, 12] and H[11].tolist() == [7, 6, 4, 5] and H[12].tolist() == [17, 16, 14, 15]
    fixed = H.copy()
    fixed[11, 3], fixed[12, 3] = 1, 8
    assert zb.unguardedTorsions(fixed) == []
    # the study's file of the fixed rows is exactly that
    assert zmatrix.read(zmatrix.AMIDE_H_ON_HEAVY_ATOMS_FILE).tolist() == fixed.tolist()
    # [a, j, k, l] with (k, j, l) an angle only: an improper about j, guarded at j
    assert zb.unguardedTorsions([[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 1, 0, 2]]) == []
    assert zb.unguardedTorsions([[0, -1, -1, -1], [1, 0, -1, -1], [2, 0, 1, -1], [3, 2, 1, 0]]) == [3]


@pytest.mark.parametrize('mol', MOLECULES, ids=IDS)
def test_skeleton_first(mol):
    """The heavy atoms are placed before the hydrogens (where the heavy atoms are connected
    without them): the skeleton's torsions come first, in one block."""
    heavy = [mol.objects[a].element.symbol != 'H' for a in mol.build()[:, 0]]
    n_heavy = sum(heavy)
    if n_heavy >= 3:
        assert heavy == [True] * n_heavy + [False] * (mol.n - n_heavy)


@pytest.mark.parametrize('mol', MOLECULES, ids=IDS)
def test_round_trip_and_chirality(mol):
    torch = pytest.importorskip('torch')
    from smoothflow_torch import zmatrix as tz
    Z = mol.build()
    x = torch.tensor(mol.x[None])
    bonds, angles, torsions = tz.internal_coordinates(x, Z)
    y = tz.cartesian(bonds, angles, torsions, Z)[0].numpy()
    assert np.abs(aligned(mol.x, y) - mol.x).max() < 1e-10
    before, after = signed_volumes(mol, mol.x), signed_volumes(mol, y)
    assert before.keys() == after.keys()
    chiral = [c for c in before if abs(before[c]) > 1e-5]    # not the planar sp2 centres
    assert len(chiral) >= sum(1 for c in range(mol.n) if len([i for i in range(mol.n) if mol.bonded(c, i)]) == 4)
    for c in chiral:
        assert np.sign(before[c]) == np.sign(after[c]), f"chirality of {mol.label(c)} changed"


@pytest.mark.parametrize('mol', MOLECULES, ids=IDS)
def test_one_proper_torsion_per_rotor(mol):
    """A rotation about a bond is one dimension: at most one proper torsion about each bond.
    Every other substituent of the bond's atoms is placed by an improper, so a methyl's three
    hydrogens have one proper torsion and two impropers relative to the first."""
    Z = mol.build()
    per_bond = {}
    for row in Z[3:].tolist():
        if kind(mol, row) == 'proper':
            per_bond.setdefault(frozenset(row[1:3]), []).append(row)
    for axis, rows in per_bond.items():
        assert len(rows) == 1, f"{[mol.label(i) for i in axis]} carries {len(rows)} proper torsions: {rows}"
    for row in Z[3:].tolist():
        # the rotation about a bond is carried by a heavy atom where there is one (chi1 is
        # N-CA-CB-CG, not N-CA-CB-HB2)
        a, j, k, _ = row
        if kind(mol, row) == 'proper' and mol.objects[a].element.symbol == 'H':
            assert not [i for i in range(mol.n) if mol.bonded(j, i) and i != k
                        and mol.objects[i].element.symbol != 'H'], f"{mol.label(a)} carries a heavy atom's rotor"
    for c in range(mol.n):
        hydrogens = [i for i in range(mol.n) if mol.bonded(c, i) and mol.objects[i].element.symbol == 'H']
        heavy = [i for i in range(mol.n) if mol.bonded(c, i) and mol.objects[i].element.symbol != 'H']
        rows = [row for row in Z[3:].tolist() if row[0] in hydrogens]
        if len(hydrogens) == 3 and len(heavy) == 1 and len(rows) == 3:     # a methyl or NH3+
            kinds = sorted(kind(mol, row) for row in rows)
            assert kinds == ['improper', 'improper', 'proper'], f"methyl {mol.label(c)}: {rows}"
            first = next(row[0] for row in rows if kind(mol, row) == 'proper')
            assert all(row[3] == first for row in rows if row[0] != first)


@pytest.mark.parametrize('mol', MOLECULES, ids=IDS)
def test_stereocentres_are_carried_by_one_improper(mol):
    """At every stereocentre (four neighbours of four different kinds) one of the
    substituents is placed by an improper about the centre, whose value is far from 0 and
    180 degrees: its sign is the chirality, and the flow never needs to cross a face of
    the torus to keep it."""
    torch = pytest.importorskip('torch')
    from smoothflow_torch import zmatrix as tz
    Z = mol.build()
    _, _, torsions = tz.internal_coordinates(torch.tensor(mol.x[None]), Z)
    torsions = np.degrees(torsions[0].numpy())

    def environment(i, depth):
        # the element and, recursively, the neighbours' environments: a stereocentre's
        # four substituents differ within a few bonds
        if depth == 0:
            return mol.objects[i].element.symbol
        return (mol.objects[i].element.symbol,
                tuple(sorted(environment(n, depth - 1) for n in range(mol.n) if mol.bonded(i, n))))

    centres = 0
    for c in range(mol.n):
        nb = [i for i in range(mol.n) if mol.bonded(c, i)]
        if len(nb) != 4 or len({environment(i, 4) for i in nb}) != 4:
            continue
        centres += 1
        impropers = [r for r in range(3, mol.n) if Z[r, 1] == c and kind(mol, Z[r].tolist()) == 'improper']
        assert impropers, f"stereocentre {mol.label(c)} has no improper"
        assert any(60.0 < abs(torsions[r - 3]) < 150.0 for r in impropers), \
            f"stereocentre {mol.label(c)}: impropers {[torsions[r - 3] for r in impropers]}"
    expected = {'GLY': 0, 'ILE': 2, 'THR': 2, 'phenylethanol': 1, 'water': 0, 'methane': 0, 'ethane': 0,
                'pentapeptide': 5, 'tripeptide': 3}
    assert centres == expected.get(mol.name, 1)


# ---- peptides --------------------------------------------------------------------------

PEPTIDES = [m for m in MOLECULES if m.name not in ('phenylethanol', 'water', 'methane', 'ethane')]
assert len(PEPTIDES) == 24


def backbone_by_names(mol):
    """phi, psi, omega from the standard atom names (independent of the builder's graph search):
    residue by residue, its N, CA and carbonyl C (ACE: CH3 and C; NME: N and its methyl C or CH3)."""
    residues = sorted({a.residue.index for a in mol.objects})
    backbone = []
    for r in residues:
        names = {a.name: i for i, a in enumerate(mol.objects) if a.residue.index == r}
        resname = next(a.residue.name for a in mol.objects if a.residue.index == r)
        if resname == 'ACE':
            backbone.append((None, names['CH3'], names['C']))
        elif resname == 'NME':
            backbone.append((names['N'], names.get('CH3', names.get('C')), None))
        else:
            backbone.append((names['N'], names['CA'], names['C']))
    out = []
    for r in range(len(backbone) - 1):
        (n0, ca0, c0), (n1, ca1, c1) = backbone[r], backbone[r + 1]
        out.append(('omega', r + 1, (ca0, c0, n1, ca1)))
        if c1 is not None:
            out.append(('phi', r + 1, (c0, n1, ca1, c1)))
        if n0 is not None:
            out.append(('psi', r, (n0, ca0, c0, n1)))
    return sorted(out, key=lambda t: (t[1], {'omega': 0, 'phi': 1, 'psi': 2}[t[0]]))


@pytest.mark.parametrize('mol', PEPTIDES, ids=[m.name for m in PEPTIDES])
def test_backbone_dihedrals_are_single_torsions(mol):
    Z = mol.build()
    expected = backbone_by_names(mol)
    found = zb.backboneTorsions(mol.topology, mol.atoms)
    assert found == expected
    dims = [zb.torsionDimension(Z, quad) for _, _, quad in expected]
    assert len(set(dims)) == len(dims)
    for d, (_, _, quad) in zip(dims, expected):
        row = Z[d - (2 * mol.n - 3) + 3].tolist()
        assert row in (list(quad), list(quad[::-1]))


@pytest.mark.parametrize('mol', PEPTIDES, ids=[m.name for m in PEPTIDES])
def test_backbone_branches_are_impropers(mol):
    """Carbonyl O, amide H, CB and HA are placed off their heavy atom by impropers: they do
    not move when phi, psi or omega turn."""
    Z = mol.build()
    rows = {row[0]: row for row in Z.tolist()}
    def neighbours(i):
        return [n for n in range(mol.n) if mol.bonded(i, n)]

    def element(i):
        return mol.objects[i].element.symbol

    # the O of a peptide bond's carbonyl (not a free C terminus, whose first O is the rotor about
    # C-CA), the H of an amide N (not NH3+, a rotor), CB and HA
    branches = [i for i, a in enumerate(mol.objects)
                if a.name in ('CB', 'HA', 'HA2', 'HA3')
                or (a.name == 'O' and any(element(n) == 'N' for n in neighbours(neighbours(i)[0])))
                or (a.name == 'H' and sum(element(n) == 'H' for n in neighbours(neighbours(i)[0])) == 1)]
    assert branches
    for i in branches:
        assert kind(mol, rows[i]) == 'improper', f"{mol.label(i)}: {rows[i]}"


def test_every_standard_residue_is_covered():
    names = {m.name for m in dipeptides()}
    standard = {'ALA', 'ARG', 'ASN', 'ASP', 'CYS', 'GLN', 'GLU', 'GLY', 'HID', 'HIE', 'HIP', 'ILE', 'LEU', 'LYS',
                'MET', 'PHE', 'PRO', 'SER', 'THR', 'TRP', 'TYR', 'VAL'}
    assert names == standard


def test_alanine_dipeptide_matches_the_hand_written_structure():
    """Not the same rows, but the same structure as the study's hand-written Z-matrix:
    the same tree of bonds and angles from ACE's CH3, phi and psi as single torsions, the
    same atoms placed by impropers about their heavy atom, and each methyl one rotor."""
    zmatrix = pytest.importorskip('alanine_dipeptide.zmatrix')
    molecule = pytest.importorskip('alanine_dipeptide.molecule')
    mol = alanine_study()
    Z, H = mol.build(), zmatrix.ZMATRIX
    check_rows(mol, H)       # the oracle accepts the hand-written one
    check_rows(mol, Z)
    assert Z[0, 0] == H[0, 0] == 1
    parent = lambda M: {row[0]: row[1] for row in M[1:].tolist()}
    angle = lambda M: {row[0]: tuple(row[1:3]) for row in M[2:].tolist()}
    assert parent(Z) == parent(H)
    assert {a: v for a, v in angle(Z).items() if a != 5} == {a: v for a, v in angle(H).items() if a != 5}
    for quad in (molecule.PHI_ATOMS, molecule.PSI_ATOMS):
        zb.torsionDimension(Z, quad)
        zb.torsionDimension(H, quad)
    kinds = lambda M: {row[0]: kind(mol, row) for row in M[3:].tolist()}
    kz, kh = kinds(Z), kinds(H)
    for atom in (5, 15, 9, 10, 2, 3, 12, 13, 20, 21):   # O (ACE), O, HA, CB, the second and third H of each methyl
        assert kz[atom] == kh.get(atom, 'improper') == 'improper'
    for atom in (0, 11, 19, 8, 14, 16, 18):              # first methyl H, CA, C, N (NME), C (NME)
        assert kz[atom] == kh[atom] == 'proper'


def test_naming_conventions_give_the_same_zmatrix():
    """The study's Amber names (HH31, CH3 in NME) and OpenMM's names (H1, C) of the same
    graph: the same rows up to the names of equivalent methyl hydrogens."""
    study = alanine_study()
    openmm_named = next(m for m in dipeptides() if m.name == 'ALA')
    heavy = lambda mol, Z: [tuple((mol.objects[i].residue.name, mol.objects[i].name.replace('CH3', 'C')
                                   if mol.objects[i].residue.name == 'NME' else mol.objects[i].name)
                                  if i >= 0 and mol.objects[i].element.symbol != 'H' else 'H' if i >= 0 else -1
                                  for i in row) for row in Z.tolist()]
    assert heavy(study, study.build()) == heavy(openmm_named, openmm_named.build())


# ---- determinism ---------------------------------------------------------------------------

def shuffled_pdb(path, seed):
    """The PDB file with the ATOM/HETATM lines of each residue in a random order (serial
    numbers kept, so CONECT records stay valid)."""
    rng = random.Random(seed)
    lines = open(path).read().splitlines()
    out, block = [], []

    def flush():
        rng.shuffle(block)
        out.extend(block)
        block.clear()

    key = None
    for line in lines:
        if line.startswith(('ATOM', 'HETATM')):
            k = line[17:27]
            if k != key:
                flush()
                key = k
            block.append(line)
        else:
            flush()
            key = None
            out.append(line)
    flush()
    return app.PDBFile(io.StringIO('\n'.join(out) + '\n'))


@pytest.mark.parametrize('fixture', ['dipeptides.pdb', 'pentapeptide.pdb', 'tripeptide.pdb', 'phenylethanol.pdb'])
def test_same_zmatrix_for_any_atom_order(fixture):
    def labelled(pdb):
        result = []
        for chain in pdb.topology.chains():
            mol = Molecule(fixture, pdb.topology, pdb.positions, [a.index for a in chain.atoms()])
            Z = mol.build()
            result.append([[mol.label(i)[1:] if i >= 0 else None for i in row] for row in Z.tolist()])
        return result

    original = _pdb(fixture)
    reference = labelled(original)
    assert labelled(original) == reference      # the same input gives the same output
    for seed in range(3):
        pdb = shuffled_pdb(os.path.join(DATA, fixture), seed)
        order = [a.name for a in pdb.topology.atoms()]
        assert order != [a.name for a in original.topology.atoms()]
        assert labelled(pdb) == reference


# ---- positions, selections and errors ---------------------------------------------------------

def test_positions_do_not_change_the_zmatrix():
    mol = next(m for m in MOLECULES if m.name == 'TRP')
    Z = mol.build()
    assert np.array_equal(zb.buildZMatrix(mol.topology, atoms=mol.atoms), Z)
    # a Quantity for the whole Topology, or a list of Vec3 for the selection
    pdb = _pdb('dipeptides.pdb')
    assert np.array_equal(zb.buildZMatrix(pdb.topology, pdb.positions, mol.atoms), Z)
    assert np.array_equal(zb.buildZMatrix(mol.topology, [openmm.Vec3(*p) for p in mol.x], mol.atoms), Z)


def test_disconnected_molecule():
    pdb = _pdb('dipeptides.pdb')
    with pytest.raises(ValueError, match=r'do not form one connected molecule: 22 fragments'):
        zb.buildZMatrix(pdb.topology)
    topology = app.Topology()
    residue = topology.addResidue('MOL', topology.addChain())
    for name in ('C1', 'C2', 'C3'):
        topology.addAtom(name, app.element.carbon, residue)
    with pytest.raises(ValueError, match=r'no bonds between these atoms.*CONECT'):
        zb.buildZMatrix(topology)


def test_too_few_atoms_and_bad_selections():
    pdb = _pdb('phenylethanol.pdb')
    with pytest.raises(ValueError, match=r'at least 3 atoms; 2 given'):
        zb.buildZMatrix(pdb.topology, atoms=[0, 1])
    with pytest.raises(ValueError, match=r'is bonded to atom .* not among the selected atoms'):
        zb.buildZMatrix(pdb.topology, atoms=[0, 1, 2])
    with pytest.raises(ValueError, match=r'atom index 99 is out of range'):
        zb.buildZMatrix(pdb.topology, atoms=list(range(18)) + [99])
    with pytest.raises(ValueError, match=r'atoms lists atom 0 more than once'):
        zb.buildZMatrix(pdb.topology, atoms=list(range(19)) + [0])
    with pytest.raises(ValueError, match=r'positions has 5 atoms'):
        zb.buildZMatrix(pdb.topology, np.zeros((5, 3)))


def test_atom_without_element():
    topology = app.Topology()
    residue = topology.addResidue('HOH', topology.addChain())
    atoms = [topology.addAtom(n, e, residue) for n, e in
             (('O', app.element.oxygen), ('H1', app.element.hydrogen), ('H2', app.element.hydrogen), ('M', None))]
    for h in atoms[1:]:
        topology.addBond(atoms[0], h)
    with pytest.raises(ValueError, match=r"'M' .* has no element"):
        zb.buildZMatrix(topology)


def test_linear_group_is_refused_with_positions():
    """Acetonitrile: the angle N-C-C is 180 degrees, so no bonded Z-matrix can place N."""
    topology = app.Topology()
    residue = topology.addResidue('ACN', topology.addChain())
    C, H, N = (app.element.get_by_symbol(s) for s in ('C', 'H', 'N'))
    names = [('C1', C), ('C2', C), ('N', N), ('H1', H), ('H2', H), ('H3', H)]
    atoms = [topology.addAtom(n, e, residue) for n, e in names]
    for a, b in ((0, 1), (1, 2), (0, 3), (0, 4), (0, 5)):
        topology.addBond(atoms[a], atoms[b])
    x = np.array([[0, 0, 0], [0.146, 0, 0], [0.3617, 0, 0]] +
                 [[-0.0363, 0.1028 * np.cos(t), 0.1028 * np.sin(t)] for t in (0, 2.094, 4.189)])
    Z = zb.buildZMatrix(topology)            # without positions nothing can be checked
    assert Z.shape == (6, 4)
    with pytest.raises(ValueError, match=r"angle .*'N'.* is 180.0 degrees.*linear groups"):
        zb.buildZMatrix(topology, x)
    bent = x.copy()
    bent[2] = [0.146 + 0.2157 * np.cos(0.5), 0.2157 * np.sin(0.5), 0]
    assert np.array_equal(zb.buildZMatrix(topology, bent), Z)


def test_torsion_dimension_refuses_a_dihedral_that_is_no_row():
    mol = next(m for m in MOLECULES if m.name == 'ALA')
    Z = mol.build()
    with pytest.raises(ValueError, match=r'not a single torsion'):
        # H-N-CA-HA: a dihedral, but the difference of two rows' torsions
        zb.torsionDimension(Z, (mol.index(1, 'H'), mol.index(1, 'N'), mol.index(1, 'CA'), mol.index(1, 'HA')))
    ring = next(m for m in MOLECULES if m.name == 'phenylethanol')
    assert zb.backboneTorsions(ring.topology) == []


def test_describe_names_every_row():
    mol = next(m for m in MOLECULES if m.name == 'ALA')
    text = zb.describeZMatrix(mol.build(), mol.topology, mol.atoms)
    lines = text.splitlines()
    assert len(lines) == mol.n
    assert 'ACE' in lines[0] and 'torsion' not in lines[2] and 'angle' in lines[2]
    assert sum('(proper' in line for line in lines) + sum('(improper' in line for line in lines) == mol.n - 3
