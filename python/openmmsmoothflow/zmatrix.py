"""Build a Z-matrix for a molecule from its OpenMM Topology.

A SmoothFlow model's internal coordinates are defined by a Z-matrix: N rows
``[a, j, k, l]`` of model atom indices in placement order (docs/model-format.md
section 3).  buildZMatrix makes one from the molecule's bond graph, so that a
model for a new molecule needs no hand-written rows.  The chemistry choices
(main chain, impropers, rotors, rings) are in docs/zmatrix-builder.md.

Only openmm and numpy are needed: this module does not import the plugin's
compiled parts or PyTorch.

>>> pdb = openmm.app.PDBFile('dipeptide.pdb')
>>> zmatrix = buildZMatrix(pdb.topology, pdb.positions)
>>> print(describeZMatrix(zmatrix, pdb.topology))
"""
from collections import deque

import numpy as np
from openmm import unit

__all__ = ['buildZMatrix', 'backboneTorsions', 'torsionDimension', 'describeZMatrix', 'unguardedTorsions',
           'LINEAR_ANGLE_DEGREES']

#: An angle above this (degrees) in the given positions makes a Z-matrix angle or
#: torsion ill-defined (a linear group such as a nitrile or an alkyne).
LINEAR_ANGLE_DEGREES = 170.0


def _describeAtom(atom):
    return f"atom {atom.index} '{atom.name}' of residue {atom.residue.name} {atom.residue.id}"


class _Molecule:
    """The selected atoms as a graph: local indices 0..N-1 in the order of ``atoms``."""

    def __init__(self, topology, atoms):
        allAtoms = list(topology.atoms())
        if atoms is None:
            indices = list(range(len(allAtoms)))
        else:
            indices = []
            for i in atoms:
                if isinstance(i, bool) or int(i) != i:
                    raise ValueError(f"atoms must be atom indices (integers), got {i!r}")
                i = int(i)
                if not 0 <= i < len(allAtoms):
                    raise ValueError(f"atom index {i} is out of range: the Topology has {len(allAtoms)} atoms")
                indices.append(i)
            if len(set(indices)) != len(indices):
                repeated = next(i for n, i in enumerate(indices) if i in indices[:n])
                raise ValueError(f"atoms lists atom {repeated} more than once")
        self.n = len(indices)
        if self.n < 3:
            raise ValueError(f"a Z-matrix needs a molecule of at least 3 atoms; {self.n} given")
        self.atoms = [allAtoms[i] for i in indices]
        local = {g: i for i, g in enumerate(indices)}
        self.z = []
        for atom in self.atoms:
            if atom.element is None:
                raise ValueError(f"{_describeAtom(atom)} has no element (a virtual site or extra particle?): "
                                 f"only real atoms can be placed by a Z-matrix")
            self.z.append(atom.element.atomic_number)
        self.adj = [set() for _ in range(self.n)]
        for bond in topology.bonds():
            i, j = bond[0].index, bond[1].index
            if i in local and j in local:
                if i != j:
                    self.adj[local[i]].add(local[j])
                    self.adj[local[j]].add(local[i])
            elif i in local or j in local:
                inside, outside = (bond[0], bond[1]) if i in local else (bond[1], bond[0])
                raise ValueError(f"{_describeAtom(inside)} is bonded to {_describeAtom(outside)}, which is not "
                                 f"among the selected atoms: select the whole molecule")
        self._checkConnected()
        self.heavy = [z != 1 for z in self.z]
        self.rank = self._canonicalRanks()

    def _checkConnected(self):
        seen = [False] * self.n
        fragments = []
        for start in range(self.n):
            if seen[start]:
                continue
            seen[start] = True
            fragment, queue = [], [start]
            while queue:
                i = queue.pop()
                fragment.append(i)
                for n in self.adj[i]:
                    if not seen[n]:
                        seen[n] = True
                        queue.append(n)
            fragments.append(sorted(fragment))
        if len(fragments) > 1:
            described = '; '.join(f"{len(f)} atoms starting with {_describeAtom(self.atoms[f[0]])}"
                                  for f in fragments[:4])
            more = f" and {len(fragments) - 4} more" if len(fragments) > 4 else ""
            hint = (" The Topology has no bonds between these atoms: a PDB file needs CONECT records for "
                    "residues OpenMM does not know." if all(len(a) == 0 for a in self.adj) else
                    " Build one Z-matrix per molecule (pass its atoms), or check for missing bonds "
                    "(CONECT records).")
            raise ValueError(f"the atoms do not form one connected molecule: {len(fragments)} fragments "
                             f"({described}{more}).{hint}")

    def _canonicalRanks(self):
        """A total order of the atoms that depends on the bond graph first (a Weisfeiler-Lehman
        refinement of element and degree), then on residue order and atom name, and on the
        atoms' order in the Topology only where those tie."""
        def classes(invariants):
            distinct = sorted(set(invariants))
            number = {v: c for c, v in enumerate(distinct)}
            return [number[v] for v in invariants]

        # heavier elements and more heavy neighbours first: chi1 of Thr is OG1, of Ile CG1
        cls = classes([(-self.z[i], -sum(self.z[n] != 1 for n in self.adj[i]), -len(self.adj[i]))
                       for i in range(self.n)])
        while True:
            refined = classes([(cls[i], tuple(sorted(cls[n] for n in self.adj[i]))) for i in range(self.n)])
            if len(set(refined)) == len(set(cls)):
                break
            cls = refined
        residueOrder = {r: p for p, r in enumerate(sorted({a.residue.index for a in self.atoms}))}
        order = sorted(range(self.n), key=lambda i: (cls[i], residueOrder[self.atoms[i].residue.index],
                                                     self.atoms[i].name, self.atoms[i].index))
        rank = [0] * self.n
        for position, i in enumerate(order):
            rank[i] = position
        return rank

    def byRank(self, atoms):
        return sorted(atoms, key=lambda i: self.rank[i])

    def describe(self, i):
        return _describeAtom(self.atoms[i])


# ---- the main chain ----------------------------------------------------------

def _isCarbonylCarbon(mol, c):
    return mol.z[c] == 6 and any(mol.z[o] == 8 and len(mol.adj[o]) == 1 for o in mol.adj[c])


def _peptideChain(mol):
    """The longest peptide backbone, N to C, with its caps: [CH3, C(ACE)], N, CA, C, ...,
    [N, CH3(NME)]; None when the molecule has no residue N-CA-C(=O).  Found by elements and
    bonds alone, so any naming convention works."""
    triplets = {}   # CA -> (N, CA, C)
    for ca in mol.byRank(range(mol.n)):
        if mol.z[ca] != 6:
            continue
        ns = mol.byRank(n for n in mol.adj[ca] if mol.z[n] == 7)
        cs = mol.byRank(c for c in mol.adj[ca] if _isCarbonylCarbon(mol, c))
        if ns and cs:
            triplets[ca] = (ns[0], ca, cs[0])
    if not triplets:
        return None
    byN = {t[0]: t for t in triplets.values()}
    successor = {}
    for t in triplets.values():
        following = mol.byRank(n for n in mol.adj[t[2]] if n in byN and byN[n] is not t)
        if following:
            successor[t] = byN[following[0]]
    hasPredecessor = set(successor.values())
    starts = [t for t in triplets.values() if t not in hasPredecessor] or list(triplets.values())  # a cycle
    best = None
    for start in sorted(starts, key=lambda t: mol.rank[t[1]]):
        chain, seen, t = [], set(), start
        while t is not None and t not in seen:
            seen.add(t)
            chain.append(t)
            t = successor.get(t)
        if best is None or len(chain) > len(best):
            best = chain
    atoms = [a for t in best for a in t]
    first, last = best[0], best[-1]
    # N-terminal cap: a carbonyl carbon on the first N (ACE C), then its other heavy neighbour (CH3)
    prefix = []
    caps = mol.byRank(c for c in mol.adj[first[0]] if c != first[1] and _isCarbonylCarbon(mol, c)
                      and c not in atoms)
    if caps:
        cap = caps[0]
        methyl = mol.byRank(x for x in mol.adj[cap] if mol.heavy[x] and x != first[0] and len(mol.adj[x]) > 1)
        prefix = ([methyl[0]] if methyl else []) + [cap]
    # C-terminal cap: a nitrogen on the last C (NME N, NHE N), then its other heavy neighbour (CH3)
    suffix = []
    caps = mol.byRank(n for n in mol.adj[last[2]] if mol.z[n] == 7 and n not in atoms)
    if caps:
        cap = caps[0]
        methyl = mol.byRank(x for x in mol.adj[cap] if mol.heavy[x] and x != last[2] and x not in prefix)
        suffix = [cap] + ([methyl[0]] if methyl else [])
    return prefix + atoms + suffix


def _distances(mol, allowed):
    """Graph distances from every allowed atom, over bonds between allowed atoms."""
    dist = {}
    for s in allowed:
        d = {s: 0}
        queue = deque([s])
        while queue:
            i = queue.popleft()
            for n in mol.adj[i]:
                if n in allowed and n not in d:
                    d[n] = d[i] + 1
                    queue.append(n)
        dist[s] = d
    return dist


def _diameterPath(mol, allowed):
    """The longest shortest path between two allowed atoms; ties go to the lowest ranks."""
    dist = _distances(mol, allowed)
    best = None
    for u in allowed:
        for v, d in dist[u].items():
            key = (-d, mol.rank[u], mol.rank[v])
            if best is None or key < best[0]:
                best = (key, u, v)
    _, u, v = best
    path = [u]
    while path[-1] != v:
        x = path[-1]
        path.append(min((y for y in mol.adj[x] if y in allowed and dist[u].get(y) == dist[u][x] + 1
                         and dist[v].get(y) == dist[v][x] - 1), key=lambda y: mol.rank[y]))
    return path


def _mainChain(mol):
    chain = _peptideChain(mol)
    if chain is not None:
        return chain
    heavy = {i for i in range(mol.n) if mol.heavy[i]}
    if heavy:
        chain = _diameterPath(mol, heavy)
        if len(chain) >= 3:
            return chain
    return _diameterPath(mol, set(range(mol.n)))


# ---- placement -----------------------------------------------------------------

def _build(mol):
    rows = []
    row = {}        # atom -> its row
    parent = {}     # atom -> the atom it is bonded to in its row

    def placedNeighbours(j):
        return [n for n in mol.adj[j] if n in row]

    def best(candidates):
        # heavy atoms first, then the earliest placed
        return min(candidates, key=lambda x: (not mol.heavy[x], row[x]))

    def place(a, j):
        placed = placedNeighbours(j)
        p = parent.get(j)
        heavyPlaced = [x for x in placed if mol.heavy[x]]
        if p is not None and (mol.heavy[p] or not heavyPlaced):
            k = p
        else:
            k = best(heavyPlaced or placed)
        siblings = [x for x in placed if x != k]
        if siblings:
            # improper a-j-k-s: a's position relative to another substituent of j, so that a rotor
            # has one torsion, a branch does not move with it, and the sign keeps the chirality
            l = best(siblings)
        else:
            # proper a-j-k-l: the first substituent of j carries the rotation about j-k
            candidates = [x for x in placedNeighbours(k) if x != j]
            if not candidates:    # cannot happen: a placed k has a placed neighbour besides j
                raise RuntimeError(f"Z-matrix builder: no torsion reference for {mol.describe(a)}")
            l = best(candidates)
        row[a] = len(rows)
        parent[a] = j
        rows.append([a, j, k, l])

    chain = _mainChain(mol)
    for i, a in enumerate(chain):
        row[a] = i
        if i > 0:
            parent[a] = chain[i - 1]
        # [a, previous, the one before, ...]: bonds, angles and (proper) torsions along the chain
        references = chain[max(i - 3, 0):i][::-1]
        rows.append([a] + references + [-1] * (3 - len(references)))
    # heavy atoms first (breadth first from the main chain), then the hydrogens of each
    for heavyOnly in (True, False):
        queue = deque(rows[r][0] for r in range(len(rows)))
        while queue:
            j = queue.popleft()
            for a in mol.byRank(n for n in mol.adj[j] if n not in row and (mol.heavy[n] or not heavyOnly)):
                place(a, j)
                queue.append(a)
    assert len(rows) == mol.n
    return np.array(rows, dtype=np.int64)


def _positionsNm(positions, topology, mol):
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    try:
        if len(positions) and hasattr(positions[0], 'x'):     # a list of Vec3
            positions = [(p.x, p.y, p.z) for p in positions]
        x = np.array(positions, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"positions must be one (x, y, z) per atom in nm: {e}") from None
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must be one (x, y, z) per atom in nm, got shape {x.shape}")
    if x.shape[0] == topology.getNumAtoms():
        x = x[[a.index for a in mol.atoms]]
    elif x.shape[0] != mol.n:
        raise ValueError(f"positions has {x.shape[0]} atoms; expected {topology.getNumAtoms()} (the Topology) "
                         f"or {mol.n} (the selected atoms)")
    if not np.all(np.isfinite(x)):
        raise ValueError("positions contain a NaN or infinite coordinate")
    return x


def _checkGeometry(mol, zmatrix, x):
    """Refuse positions in which a Z-matrix angle is (near) linear: the angle's and the
    torsions' derivatives are undefined there."""
    def angle(a, j, k):
        v1, v2 = x[a] - x[j], x[k] - x[j]
        return np.degrees(np.arctan2(np.linalg.norm(np.cross(v1, v2)), np.dot(v1, v2)))

    for r, (a, j, k, l) in enumerate(zmatrix):
        triples = [(a, j, k)] if r >= 2 else []
        if r >= 3:
            triples.append((j, k, l) if l in mol.adj[k] else (k, j, l))
        for t in triples:
            theta = angle(*t)
            if not (180.0 - LINEAR_ANGLE_DEGREES) < theta < LINEAR_ANGLE_DEGREES:
                names = ', '.join(mol.describe(i) for i in t)
                raise ValueError(f"row {r} of the Z-matrix needs the angle {names} away from 0 and 180 degrees, "
                                 f"but it is {theta:.1f} degrees in the given positions: linear groups (nitriles, "
                                 f"alkynes, allenes, CO2) cannot be described by this builder's bonded Z-matrix "
                                 f"(docs/zmatrix-builder.md)")


def buildZMatrix(topology, positions=None, atoms=None):
    """Build the Z-matrix of one molecule from its bond graph.

    Rows follow docs/model-format.md section 3; the choices (the peptide backbone or the
    longest heavy-atom path first, branches and carbonyl oxygens by impropers, one torsion
    per rotor, ring-closure bonds implicit) are in docs/zmatrix-builder.md.  The result
    depends only on the bond graph, the elements, the residue order and the atom names
    (and on the atoms' order in the Topology only where atom names tie within a residue),
    never on positions.

    Parameters
    ----------
    topology : openmm.app.Topology
        the molecule, with its bonds (PDBFile adds them for standard residues; other
        residues need CONECT records)
    positions : list of Vec3, Quantity or array (N, 3) in nm, optional
        if given (for the whole Topology or for the selected atoms), they are checked:
        a Z-matrix angle within 10 degrees of linear raises ValueError
    atoms : iterable of int, optional
        Topology indices of the molecule's atoms, in model order; all atoms by default

    Returns
    -------
    numpy.ndarray of int64, shape (N, 4)
        rows [a, j, k, l] in placement order, -1 where unused; the indices are model atom
        indices, i.e. positions in ``atoms`` (the Topology's atom indices when ``atoms`` is
        None), the form SmoothFlow and the model file's ``zmatrix`` take

    Raises
    ------
    ValueError
        fewer than 3 atoms, a disconnected selection, a bond to an atom outside the
        selection, an atom without element, or positions with a linear Z-matrix angle
    """
    mol = _Molecule(topology, atoms)
    zmatrix = _build(mol)
    if positions is not None:
        _checkGeometry(mol, zmatrix, _positionsNm(positions, topology, mol))
    return zmatrix


def backboneTorsions(topology, atoms=None):
    """The peptide backbone dihedrals phi, psi and omega, found from the bond graph.

    Returns
    -------
    list of (str, int, tuple of 4 int)
        (kind, residue, atoms): kind is 'phi', 'psi' or 'omega'; residue is the index within
        the molecule (0-based, residues in Topology order) of the residue the dihedral belongs
        to (phi and psi: the residue of CA; omega: the residue of the N after the peptide
        bond); atoms are model atom indices as buildZMatrix returns them: phi C(i-1)-N-CA-C,
        psi N-CA-C-N(i+1), omega CA(i-1)-C(i-1)-N-CA (the cap's CH3 stands for CA at a cap).
        Empty for a molecule that is no peptide.
    """
    mol = _Molecule(topology, atoms)
    chain = _peptideChain(mol)
    if chain is None:
        return []
    residueOrder = {r: p for p, r in enumerate(sorted({a.residue.index for a in mol.atoms}))}
    isCA = set()
    for i in range(1, len(chain) - 1):
        if mol.z[chain[i - 1]] == 7 and _isCarbonylCarbon(mol, chain[i + 1]) and mol.z[chain[i]] == 6:
            isCA.add(i)
    result = []
    for i in range(len(chain)):
        if i in isCA:
            res = residueOrder[mol.atoms[chain[i]].residue.index]
            if i >= 2 and _isCarbonylCarbon(mol, chain[i - 2]):
                result.append(('phi', res, tuple(chain[i - 2:i + 2])))
            if i + 2 < len(chain) and mol.z[chain[i + 2]] == 7:
                result.append(('psi', res, tuple(chain[i - 1:i + 3])))
        # omega around each peptide bond C-N of the chain
        if 1 <= i < len(chain) - 2 and _isCarbonylCarbon(mol, chain[i]) and mol.z[chain[i + 1]] == 7:
            res = residueOrder[mol.atoms[chain[i + 1]].residue.index]
            result.append(('omega', res, tuple(chain[i - 1:i + 3])))
    order = {'omega': 0, 'phi': 1, 'psi': 2}
    return sorted(result, key=lambda t: (t[1], order[t[0]]))


def torsionDimension(zmatrix, dihedral):
    """The flow dimension (0..3N-7) whose torsion is the given dihedral.

    Parameters
    ----------
    zmatrix : array (N, 4)
    dihedral : 4 model atom indices, in either direction (a-b-c-d is d-c-b-a)

    Raises
    ------
    ValueError
        when no row's torsion is that dihedral (it would be a sum of several torsions)
    """
    Z = np.asarray(zmatrix, dtype=np.int64)
    n = Z.shape[0]
    quad = tuple(int(i) for i in dihedral)
    for r in range(3, n):
        t = tuple(int(i) for i in Z[r])
        if t == quad or t == quad[::-1]:
            return 2 * n - 3 + r - 3
    raise ValueError(f"the dihedral {quad} is not a single torsion of this Z-matrix")


def unguardedTorsions(zmatrix):
    """The rows whose torsion a-j-k-l can turn singular without any Z-matrix angle noticing.

    A torsion is undefined when its reference atoms j, k, l are collinear, and its Cartesian
    derivatives grow as 1 / sin of the angle there.  That is guarded when j-k-l (at k) or k-j-l
    (at j) is itself an angle of the Z-matrix: the flow then models it and the wall's angle
    margin keeps it from 0 and 180 degrees.  A torsion referenced to an implied angle, e.g. an
    amide H placed by H-N-C-O where N-C-O follows from other rows, is not: a flow that lets the
    implied angle collapse (an amide folding) makes the torsion swing by tens of degrees in one
    step (docs/reliability.md section 5).  Returns the 0-based row indices.  buildZMatrix
    makes them only inside rings (an implied ring angle, closed by a bond the Z-matrix does not
    hold), never for an amide hydrogen, a carbonyl or a chain.
    """
    z = np.asarray(zmatrix, dtype=np.int64)
    angles = set()
    for a, j, k, _ in z.tolist():
        if k >= 0:
            angles.update({(a, j, k), (k, j, a)})
    return [r for r, (a, j, k, l) in enumerate(z.tolist())
            if l >= 0 and (j, k, l) not in angles and (k, j, l) not in angles]


def describeZMatrix(zmatrix, topology, atoms=None):
    """A readable table of a Z-matrix: one line per row, atoms by residue and name, and
    whether each torsion is proper (a-j-k-l bonded in a chain) or improper (l bonded to j)."""
    allAtoms = list(topology.atoms())
    selected = allAtoms if atoms is None else [allAtoms[int(i)] for i in atoms]
    bonded = {frozenset((b[0].index, b[1].index)) for b in topology.bonds()}

    def name(i):
        atom = selected[i]
        return f"{atom.residue.name}{atom.residue.id}:{atom.name}"

    lines = []
    for r, (a, j, k, l) in enumerate(np.asarray(zmatrix, dtype=np.int64)):
        text = f"{r:4d}  {name(a):<14}"
        if j >= 0:
            text += f" bond {name(j):<14}"
        if k >= 0:
            text += f" angle {name(k):<14}"
        if l >= 0:
            kind = 'proper' if frozenset((selected[k].index, selected[l].index)) in bonded else 'improper'
            text += f" torsion {name(l):<14} ({kind}, dim {2 * len(selected) - 3 + r - 3})"
        lines.append(text.rstrip())
    return '\n'.join(lines)
