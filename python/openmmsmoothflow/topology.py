"""Map a SmoothFlow model's atoms onto an OpenMM Topology, and check what the force will see.

How the model's atoms are found (docs/atom-mapping.md says why):

1. **By molecular graph.**  The model file stores its atoms' elements and a Z-matrix whose bond
   column is a spanning tree of the molecule's bonds.  Where the Topology has bonds among the
   selected atoms, each connected group of selected atoms is one copy of the molecule, and the
   model's bond tree is matched onto its bonds with equal elements.  Atom and residue names only
   break ties between atoms the graph cannot tell apart, so OpenMM's standard names (what
   PDBFile produces), Amber/tleap names and PDB names all map.
2. **By names**, as before, where the Topology has no bonds among the selected atoms (a Topology
   built by hand); names are compared exactly first, then through OpenMM's own table of
   alternative names (pdbNames.xml: ACE/NME HH31 = H1, NME CH3 = C, ...).

Equivalent atoms (the hydrogens of a methyl, the oxygens of a carboxylate, two methyls on one
carbon, ...) are atoms the graph cannot tell apart, but the flow can: it was trained with one
labelling, and a labelling of opposite handedness is far outside its support.  Where a group's
Topology atoms carry exactly the model's names (the model's own naming convention), the names
are the trained labelling and decide; positions then only check it (a labelling far above the
group's best is reported, naming the atoms to swap).  Otherwise, with positions, the group gets
the permutation of lowest flow energy (the flow's own density decides); without them the names
decide and a warning says how to check (checkConfiguration), which names the exact atoms to swap.

A free-form model (``force.getModelKind() == SmoothFlowForce.FreeFormFlow``: an E(n)-equivariant
encoder over N identical particles, docs/free-form-flows.md) has no Z-matrix, bonds or names to
match and a permutation-invariant energy: each N consecutive selected atoms are one copy, in
their order.  The checks that read Z-matrix facts (checkConfiguration, equivalentAtoms) refuse it
with a ValueError that says so.
"""
import itertools
import json
import math
import os
import struct
import warnings

import numpy as np
import openmm
from openmm import unit

from .smoothflow import SmoothFlowForce

__all__ = ['mapModelToTopology', 'addSmoothFlowForce', 'checkConfiguration', 'equivalentAtoms',
           'SmoothFlowConfigurationError']


class SmoothFlowConfigurationError(ValueError):
    """Positions far outside the flow's support: the message names the atoms and coordinates."""

    def __init__(self, message, problems):
        super().__init__(message)
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# Descriptions for messages

def _describeResidue(residue):
    return f"{residue.name} {residue.id} (residue index {residue.index}, chain {residue.chain.index})"


def _describeModelAtom(force, a):
    return (f"model atom {a} '{force.getModelAtomName(a)}' of model residue "
            f"{force.getModelAtomResidueIndex(a)} '{force.getModelAtomResidueName(a)}'")


def _describeTopologyAtom(atom):
    return f"atom {atom.index} '{atom.name}' of residue {atom.residue.name} {atom.residue.id}"


# ---------------------------------------------------------------------------------------------
# The model's side: elements, the bond tree of its Z-matrix, equivalent atoms

def _isFreeForm(force):
    return force.getModelKind() == SmoothFlowForce.FreeFormFlow


def _refuseFreeForm(force, what):
    """The clear error of a helper that reads Z-matrix facts (bonds, angles, bond bounds, the bond
    graph's equivalent atoms), none of which a free-form model has."""
    if _isFreeForm(force):
        raise ValueError(f"{what}: the model is a free-form flow over {force.getNumModelAtoms()} identical "
                         f"particles in {force.getSpatialDimension()} dimensions, which has no Z-matrix, bonds, "
                         f"angles or equivalent atoms to check (its energy is invariant under permutations of "
                         f"the particles); evaluate the force's energy instead (docs/free-form-flows.md)")


class _Model:
    """What the mapping and the checks need from a model file."""

    def __init__(self, force):
        _refuseFreeForm(force, "a helper that reads the model's Z-matrix")
        config = json.loads(force.getModelConfig())
        self.force = force
        self.n = force.getNumModelAtoms()
        self.zmatrix = [list(map(int, row)) for row in config['zmatrix']]
        atoms = config.get('atoms')
        self.names = [a['name'] for a in atoms] if atoms else None
        self.elements = [a['element'] for a in atoms] if atoms else None
        self.residueNames = [a['residue'] for a in atoms] if atoms else None
        self.residueIndices = [a['residue_index'] for a in atoms] if atoms else None
        support = config.get('support', {})
        self.margin = support.get('margin', 0.01)
        self.angleMargin = support.get('angle_margin', self.margin)
        self.bondLo, self.bondHi = _readBondBounds(force.getModelBytes())
        self.neighbours = [[] for _ in range(self.n)]
        for row in self.zmatrix[1:]:
            self.neighbours[row[0]].append(row[1])
            self.neighbours[row[1]].append(row[0])
        self._labels = None

    def describe(self, a):
        if self.names is None:
            return f"model atom {a}"
        return f"model atom {a} '{self.names[a]}' ({self.residueNames[a]} {self.residueIndices[a]})"

    def tree(self):
        """(children, labels, rootSpec): the bond tree rooted at its centre (see _rootedTree)."""
        if self._labels is None:
            self._labels = {}
            self._tree = _rootedTree(self.neighbours, self.elements, self._labels)
        return self._tree

    def equivalentGroups(self):
        """Groups of interchangeable subtrees: list of groups, each a list of units, each unit
        the model atoms of one subtree in canonical order (so that unit[i][p] and unit[j][p]
        correspond).  Outer groups come before the groups nested in them."""
        children, labels, roots = self.tree()
        groups = []
        order = [None]  # None: the (possibly virtual) root
        while order:
            node = order.pop(0)
            kids = roots if node is None else children[node]
            byLabel = {}
            for c in kids:
                byLabel.setdefault(labels[c], []).append(c)
            for members in byLabel.values():
                if len(members) > 1:
                    groups.append([_canonicalOrder(c, children, labels) for c in members])
            order.extend(kids)
        return groups


def _readBondBounds(data):
    """bond_lo and bond_hi from a model file's bytes (docs/model-format.md section 1)."""
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = []
    for name in ('bond_lo', 'bond_hi'):
        entry = header[name]
        begin, end = entry['data_offsets']
        dtype = '<f8' if entry['dtype'] == 'F64' else '<f4'
        out.append(np.frombuffer(data[8 + n + begin:8 + n + end], dtype=dtype).astype(float))
    return out


def _treeCentres(neighbours, nodes):
    """The one or two centres of the tree spanned by nodes (leaves stripped layer by layer)."""
    degree = {v: len(neighbours[v]) for v in nodes}
    remaining = set(nodes)
    layer = [v for v in nodes if degree[v] <= 1]
    while len(remaining) > 2:
        nextLayer = []
        for v in layer:
            remaining.discard(v)
            for w in neighbours[v]:
                if w in remaining:
                    degree[w] -= 1
                    if degree[w] == 1:
                        nextLayer.append(w)
        layer = nextLayer
    return sorted(remaining)


def _rootedTree(neighbours, elements, interned):
    """Root a tree at its centre and label every node by its rooted subtree (AHU canonical form
    with elements): two nodes have the same label exactly when their subtrees are isomorphic.
    With two centres the root is the bond between them: rootSpec lists both.  interned is shared
    between the model and a Topology so that their labels compare."""
    nodes = list(range(len(neighbours))) if isinstance(neighbours, list) else list(neighbours)
    centres = _treeCentres(neighbours, nodes)
    children = {}
    parent = {c: None for c in centres}
    order = []
    stack = list(centres)
    while stack:
        v = stack.pop()
        order.append(v)
        children[v] = [w for w in neighbours[v] if w != parent[v] and not (w in centres and v in centres)]
        for w in children[v]:
            parent[w] = v
            stack.append(w)
    labels = {}
    for v in reversed(order):
        key = (elements[v] if elements is not None else None, tuple(sorted(labels[c] for c in children[v])))
        labels[v] = interned.setdefault(key, len(interned))
    return children, labels, centres


def _canonicalOrder(root, children, labels):
    """The subtree's atoms, depth first, children by label: isomorphic subtrees correspond."""
    out = [root]
    for c in sorted(children[root], key=lambda c: labels[c]):
        out.extend(_canonicalOrder(c, children, labels))
    return out


def equivalentAtoms(force):
    """The groups of a model's atoms that its bond graph cannot tell apart.

    Returns a list of groups; each group lists interchangeable units, each unit the model atom
    indices of one subtree (a single atom for the hydrogens of a methyl; a methyl's carbon and
    hydrogens for the two methyls of an isopropyl), corresponding atom by atom.  The flow tells
    them apart: which permutation is right follows from the positions (checkConfiguration).
    A free-form model (identical particles, no bond graph) raises a ValueError.
    """
    _refuseFreeForm(force, "equivalentAtoms")
    model = _Model(force)
    if model.elements is None:
        return []
    return model.equivalentGroups()


# ---------------------------------------------------------------------------------------------
# Names: only to break ties

_nameTables = None


def _standardName(residueName, atomName):
    """OpenMM's standard name of an atom (pdbNames.xml, as PDBFile applies it)."""
    global _nameTables
    if _nameTables is None:
        try:
            from openmm.app import PDBFile
            PDBFile._loadNameReplacementTables()
            _nameTables = (PDBFile._residueNameReplacements, PDBFile._atomNameReplacements)
        except Exception:  # a private OpenMM table: without it, exact names only
            _nameTables = ({}, {})
    residues, atoms = _nameTables
    residueName = residues.get(residueName, residueName)
    return residueName, atoms.get(residueName, {}).get(atomName, atomName)


def _ordinal(name):
    """The number that tells equivalent atoms apart in every convention: HH32, H2, 2HH3, HB2."""
    if name[:1].isdigit():
        return name[0]
    if name[-1:].isdigit():
        return name[-1]
    return None


def _nameScore(model, a, atom):
    if model.names is None:
        return 0
    name, residue = model.names[a], model.residueNames[a]
    score = 0
    if atom.name == name:
        score += 4
    if _standardName(atom.residue.name, atom.name) == _standardName(residue, name):
        score += 3
    if _ordinal(atom.name) is not None and _ordinal(atom.name) == _ordinal(name):
        score += 1
    return score


# ---------------------------------------------------------------------------------------------
# The Topology's side

def _selectedAtoms(topology, atoms):
    allAtoms = list(topology.atoms())
    if atoms is None:
        return allAtoms
    selected = []
    for i in atoms:
        if not 0 <= i < len(allAtoms):
            raise ValueError(f"atom index {i} is out of range: the Topology has {len(allAtoms)} atoms")
        selected.append(allAtoms[i])
    return selected


def _bondGraph(topology, selected):
    """Neighbours among the selected atoms (by Topology index), whether any bond was seen, and
    the bonds from a selected atom to one not selected."""
    index = {atom.index for atom in selected}
    neighbours = {i: [] for i in index}
    anyBond, leaving = False, []
    for bond in topology.bonds():
        i, j = bond.atom1.index, bond.atom2.index
        if i in index and j in index and i != j and j not in neighbours[i]:
            neighbours[i].append(j)
            neighbours[j].append(i)
            anyBond = True
        elif (i in index) != (j in index):
            leaving.append((bond.atom1, bond.atom2) if i in index else (bond.atom2, bond.atom1))
    for i in neighbours:
        neighbours[i].sort()
    return neighbours, anyBond, leaving


def _components(selected, neighbours):
    seen, components = set(), []
    for atom in selected:
        if atom.index in seen:
            continue
        component, stack = [], [atom.index]
        seen.add(atom.index)
        while stack:
            v = stack.pop()
            component.append(v)
            for w in neighbours[v]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        components.append(sorted(component))
    return components


# ---------------------------------------------------------------------------------------------
# Matching the model's bond tree onto one connected component

def _elementOf(atom):
    return atom.element.symbol if atom.element is not None else None


def _assignByNames(model, modelNodes, topologyNodes, allAtoms):
    """Pair equally labelled model and Topology atoms, the pairing of best total name score."""
    if len(modelNodes) <= 6:
        best = max(itertools.permutations(topologyNodes),
                   key=lambda p: sum(_nameScore(model, a, allAtoms[t]) for a, t in zip(modelNodes, p)))
        return list(zip(modelNodes, best))
    free, pairs = list(topologyNodes), []
    for a in modelNodes:
        t = max(free, key=lambda t: _nameScore(model, a, allAtoms[t]))
        free.remove(t)
        pairs.append((a, t))
    return pairs


def _matchTree(model, component, neighbours, allAtoms):
    """The component is a tree: match rooted canonical labels (exact, polynomial)."""
    children, labels, roots = model.tree()
    sub = {v: neighbours[v] for v in component}
    elements = {v: _elementOf(allAtoms[v]) for v in component}
    tChildren, tLabels, tRoots = _rootedTree(sub, elements, model._labels)
    if sorted(labels[r] for r in roots) != sorted(tLabels[r] for r in tRoots):
        return None
    mapping = {}

    def match(modelKids, topologyKids):
        byLabel = {}
        for c in modelKids:
            byLabel.setdefault(labels[c], ([], []))[0].append(c)
        for c in topologyKids:
            byLabel.setdefault(tLabels[c], ([], []))[1].append(c)
        for mk, tk in byLabel.values():
            for a, t in _assignByNames(model, mk, tk, allAtoms):
                mapping[a] = t
                match(children[a], tChildren[t])

    match(roots, tRoots)
    return [mapping[a] for a in range(model.n)]


def _matchGraph(model, component, neighbours, allAtoms, maxSteps=200000):
    """The component has rings: depth-first search for an embedding of the model's bond tree
    into its bonds, names first.  None where there is none."""
    children, labels, roots = model.tree()
    root = roots[0]
    order, parentOf = [], {root: None}
    stack = [root]
    while stack:
        v = stack.pop()
        order.append(v)
        kids = children[v] + ([r for r in roots if r != v] if v == root else [])
        for c in reversed(kids):
            parentOf[c] = v
            stack.append(c)
    # A model atom's tree neighbours are among its image's bonded neighbours: their elements
    # must fit into those of the image's neighbours (prunes a wrong branch at once).
    needs = [_elementTally(model.elements[b] for b in model.neighbours[a]) for a in range(model.n)]
    has = {t: _elementTally(_elementOf(allAtoms[w]) for w in neighbours[t]) for t in component}
    mapping, used, steps = {}, set(), [0]

    def candidates(a):
        pool = component if parentOf[a] is None else neighbours[mapping[parentOf[a]]]
        out = [t for t in pool if t not in used and _elementOf(allAtoms[t]) == model.elements[a]
               and all(has[t].get(e, 0) >= k for e, k in needs[a].items())]
        return sorted(out, key=lambda t: -_nameScore(model, a, allAtoms[t]))

    def search(k):
        if k == len(order):
            return True
        steps[0] += 1
        if steps[0] > maxSteps:
            raise ValueError(f"matching the model's bond graph onto Topology atoms {component[0]}.."
                             f"{component[-1]} took more than {maxSteps} steps; give the atoms explicitly")
        a = order[k]
        for t in candidates(a):
            mapping[a] = t
            used.add(t)
            if search(k + 1):
                return True
            used.discard(t)
            del mapping[a]
        return False

    if not search(0):
        return None
    return [mapping[a] for a in range(model.n)]


def _elementTally(elements):
    tally = {}
    for e in elements:
        tally[e] = tally.get(e, 0) + 1
    return tally


def _permute(molecule, group, perm):
    """The mapping with the units of one equivalence group permuted: unit i takes the Topology
    atoms of unit perm[i]."""
    out = list(molecule)
    for i, j in enumerate(perm):
        for a, b in zip(group[i], group[j]):
            out[a] = molecule[b]
    return out


def _namedPermutation(model, molecule, group, allAtoms):
    """The permutation of one group (as _permute takes it) that gives each unit the Topology atom
    carrying the model's own name and residue name for the unit's root, or None where the names
    do not decide: another naming convention, or names that are not a bijection onto the model's.
    With the model's naming the names are the labelling the flow was trained with."""
    if model.names is None:
        return None

    def key(residueName, name):
        return _standardName(residueName, '')[0], name
    wanted = [key(model.residueNames[u[0]], model.names[u[0]]) for u in group]
    atoms = [allAtoms[molecule[u[0]]] for u in group]
    have = {key(atom.residue.name, atom.name): j for j, atom in enumerate(atoms)}
    if len(set(wanted)) != len(group) or len(have) != len(group) or set(have) != set(wanted):
        return None
    return tuple(have[k] for k in wanted)


def _applyNames(model, molecule, allAtoms, neighbours=None):
    """The mapping with every group that names decide in the model's labelling (outer groups
    first, each on the result of those before), and the groups left to the positions.  With
    neighbours (the Topology's bonds), a renaming that would break a bond does not decide."""
    molecule, free = list(molecule), []
    for group in model.equivalentGroups():
        perm = _namedPermutation(model, molecule, group, allAtoms)
        named = None if perm is None else _permute(molecule, group, perm)
        if named is None or (neighbours is not None and not _isAutomorphism(molecule, named, neighbours)):
            free.append(group)
        else:
            molecule = named
    return molecule, free


def _isAutomorphism(molecule, permuted, neighbours):
    """Whether exchanging the Topology atoms as permuted does keep every bond a bond."""
    move = {t: u for t, u in zip(molecule, permuted) if t != u}
    for t in move:
        for w in neighbours[t]:
            if move.get(w, w) not in neighbours[move[t]]:
                return False
    return True


def _describeComponent(component, allAtoms):
    residues = []
    for i in component:
        r = allAtoms[i].residue
        if r not in residues:
            residues.append(r)
    return (f"the {len(component)} bonded atoms {component[0]}..{component[-1]} "
            f"(residues {', '.join(f'{r.name} {r.id}' for r in residues)})")


def _elementCounts(elements):
    counts = _elementTally(elements)
    return ' '.join(f"{e}{counts[e]}" for e in sorted(counts, key=str))


def _mapByGraph(model, topology, selected, neighbours):
    allAtoms = list(topology.atoms())
    components = _components(selected, neighbours)
    molecules = []
    for component in components:
        if len(component) != model.n:
            sizes = sorted({len(c) for c in components})
            raise ValueError(
                f"{_describeComponent(component, allAtoms)} are one molecule of the Topology's bonds, but the "
                f"model's molecule has {model.n} atoms (the selected atoms form {len(components)} bonded "
                f"groups of sizes {sizes}).  Select whole copies of the model's molecule (atoms=...); if the "
                f"Topology lacks bonds (PDBFile adds bonds only for standard residues and CONECT records), "
                f"add them (Topology.addBond); if it lacks hydrogens, add them (Modeller.addHydrogens)")
        numBonds = sum(len(neighbours[v]) for v in component) // 2
        if numBonds == model.n - 1:
            molecule = _matchTree(model, component, neighbours, allAtoms)
        else:
            molecule = _matchGraph(model, component, neighbours, allAtoms)
        if molecule is None:
            topologyElements = [_elementOf(allAtoms[v]) for v in component]
            raise ValueError(
                f"{_describeComponent(component, allAtoms)} are not the model's molecule: the model's bonds "
                f"(its Z-matrix) and elements ({_elementCounts(model.elements)}) do not match the Topology's "
                f"bonds and elements ({_elementCounts(topologyElements)}, {numBonds} bonds)")
        molecules.append(molecule)
    return molecules


# ---------------------------------------------------------------------------------------------
# Matching by names (a Topology without bonds)

def _mapByNames(force, topology, selected):
    numAtoms = force.getNumModelAtoms()
    modelResidues = {}
    for a in range(numAtoms):
        modelResidues.setdefault(force.getModelAtomResidueIndex(a), force.getModelAtomResidueName(a))
    numModelResidues = max(modelResidues) + 1
    if sorted(modelResidues) != list(range(numModelResidues)):
        raise ValueError(f"the model's residue indices {sorted(modelResidues)} are not 0, 1, 2, ...")

    residues = []
    atomsOfResidue = {}
    for atom in selected:
        if atom.residue.index not in atomsOfResidue:
            residues.append(atom.residue)
            atomsOfResidue[atom.residue.index] = []
        atomsOfResidue[atom.residue.index].append(atom)
    if len(residues) == 0 or len(residues) % numModelResidues != 0:
        expected = ', '.join(modelResidues[r] for r in range(numModelResidues))
        raise ValueError(f"the selected atoms lie in {len(residues)} residues, which is not a whole number of copies "
                         f"of the model's {numModelResidues} residues ({expected})")

    molecules = []
    for first in range(0, len(residues), numModelResidues):
        copy = residues[first:first + numModelResidues]
        for r, residue in enumerate(copy):
            if _standardName(residue.name, '')[0] != _standardName(modelResidues[r], '')[0]:
                raise ValueError(f"residue {_describeResidue(residue)} does not match model residue {r} "
                                 f"'{modelResidues[r]}'")
        byName, byStandardName = [], []
        for residue in copy:
            names, standard = {}, {}
            for atom in atomsOfResidue[residue.index]:
                if atom.name in names:
                    raise ValueError(f"residue {_describeResidue(residue)} has two atoms named '{atom.name}' "
                                     f"(atoms {names[atom.name].index} and {atom.index})")
                names[atom.name] = atom
                standard.setdefault(_standardName(residue.name, atom.name)[1], []).append(atom)
            byName.append(names)
            byStandardName.append(standard)
        molecule = []
        used = set()
        for a in range(numAtoms):
            r = force.getModelAtomResidueIndex(a)
            name = force.getModelAtomName(a)
            atom = byName[r].get(name)
            if atom is None:
                # another naming convention: OpenMM's table of alternative names, where unambiguous
                candidates = byStandardName[r].get(_standardName(modelResidues[r], name)[1], [])
                if len(candidates) == 1 and candidates[0].name not in {force.getModelAtomName(b)
                                                                       for b in range(numAtoms)
                                                                       if force.getModelAtomResidueIndex(b) == r}:
                    atom = candidates[0]
            if atom is None:
                raise ValueError(f"{_describeModelAtom(force, a)} has no atom of that name in residue "
                                 f"{_describeResidue(copy[r])}; its atoms are "
                                 f"{', '.join(sorted(byName[r]))}")
            if atom.index in used:
                raise ValueError(f"{_describeModelAtom(force, a)} and another model atom both match "
                                 f"{_describeTopologyAtom(atom)}")
            molecule.append(atom.index)
            used.add(atom.index)
        for residue in copy:
            for atom in atomsOfResidue[residue.index]:
                if atom.index not in used:
                    raise ValueError(f"atom '{atom.name}' (index {atom.index}) of residue {_describeResidue(residue)} "
                                     f"is not in the model")
        molecules.append(molecule)
    return molecules


# ---------------------------------------------------------------------------------------------
# Positions and the flow's energy

def _positionsInNm(positions, numAtoms=None):
    if hasattr(positions, 'value_in_unit'):
        positions = positions.value_in_unit(unit.nanometer)
    x = np.array([[float(c) for c in p] for p in positions], dtype=float) if not isinstance(positions, np.ndarray) \
        else np.asarray(positions, dtype=float)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must be a list of 3-vectors, not an array of shape {x.shape}")
    if numAtoms is not None and x.shape[0] < numAtoms:
        raise ValueError(f"{x.shape[0]} positions were given, but the mapped atoms go up to index {numAtoms - 1}")
    return x


def _wholeMolecule(model, x, box):
    """Positions with each bond of the model's tree taken at its minimum image (a molecule split
    across a periodic box made whole); as they are without a box."""
    if box is None:
        return x
    a, b, c = (np.asarray(v, dtype=float) for v in box)
    children, _, roots = model.tree()
    out = x.copy()
    stack = list(roots)
    for r in roots[1:]:
        out[r] = out[roots[0]] + _minimumImage(x[r] - x[roots[0]], a, b, c)
    while stack:
        v = stack.pop()
        for w in children[v]:
            out[w] = out[v] + _minimumImage(x[w] - x[v], a, b, c)
            stack.append(w)
    return out


def _minimumImage(d, a, b, c):
    d = d - c * math.floor(d[2] / c[2] + 0.5)
    d = d - b * math.floor(d[1] / b[1] + 0.5)
    return d - a * math.floor(d[0] / a[0] + 0.5)


class _Evaluator:
    """The flow's energy of one molecule in model atom order, on the Reference platform."""

    def __init__(self, model):
        self.model = model
        self.system = openmm.System()
        for _ in range(model.n):
            self.system.addParticle(1.0)
        force = SmoothFlowForce.createFromBytes(model.force.getModelBytes())
        force.setParticles(list(range(model.n)))
        self.system.addForce(force)
        self.context = openmm.Context(self.system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName('Reference'))

    def energy(self, x):
        """kJ/mol; +inf where the core refuses the configuration (outside the support under the
        'error' policy, or degenerate geometry)."""
        self.context.setPositions(np.asarray(x, dtype=float))
        try:
            state = self.context.getState(getEnergy=True)
        except openmm.OpenMMException:
            return math.inf
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return energy if math.isfinite(energy) else math.inf


def _groupPermutations(group):
    if len(group) > 5:  # 120 candidates; no real group is that large
        return [tuple(range(len(group)))]
    return list(itertools.permutations(range(len(group))))


def _resolveEquivalent(model, molecule, x, evaluator, neighbours=None, maxCandidates=5000, groups=None):
    """The labelling of the equivalent atoms with the lowest flow energy.  Every combination of
    the groups' permutations is tried where there are at most maxCandidates (216 for alanine
    dipeptide's three methyls): the result is then the same however the structure labelled them.
    Beyond that, group by group, outer groups first, until nothing changes.  With neighbours (a
    Topology with rings), only permutations that keep every bond a bond are used.  groups: the
    groups to permute (all by default)."""
    groups = model.equivalentGroups() if groups is None else groups
    perms = [_groupPermutations(g) for g in groups]
    if math.prod(len(p) for p in perms) <= maxCandidates:
        best, bestEnergy = list(molecule), evaluator.energy(x[molecule])
        for choice in itertools.product(*perms):
            candidate = list(molecule)
            for group, perm in zip(groups, choice):
                candidate = _permute(candidate, group, perm)
            if candidate == best or (neighbours is not None and not _isAutomorphism(molecule, candidate, neighbours)):
                continue
            e = evaluator.energy(x[candidate])
            if e < bestEnergy:
                best, bestEnergy = candidate, e
        return best
    current = list(molecule)
    energy = evaluator.energy(x[current])
    changed = True
    while changed:
        changed = False
        for group, groupPerms in zip(groups, perms):
            for perm in groupPerms[1:]:
                candidate = _permute(current, group, perm)
                if neighbours is not None and not _isAutomorphism(current, candidate, neighbours):
                    continue
                e = evaluator.energy(x[candidate])
                if e < energy - 1e-9 * max(1.0, abs(energy)):
                    current, energy, changed = candidate, e, True
    return current


# ---------------------------------------------------------------------------------------------
# The check of a starting configuration

def _angle(x, a, j, k):
    v1, v2 = x[a] - x[j], x[k] - x[j]
    return math.atan2(np.linalg.norm(np.cross(v1, v2)), float(np.dot(v1, v2)))


def _supportProblems(model, x):
    """Bonds outside [bond_lo, bond_hi] and angles within the margin of 0 or 180 degrees: where the
    flow has no data (x in model atom order, nm).  Each problem names the atoms."""
    problems = []
    for r, row in enumerate(model.zmatrix[1:], start=1):
        a, j = row[0], row[1]
        b = float(np.linalg.norm(x[a] - x[j]))
        lo, hi = model.bondLo[r - 1], model.bondHi[r - 1]
        if not lo <= b <= hi:
            problems.append({'kind': 'bond', 'atoms': (a, j), 'value': b, 'bounds': (lo, hi),
                             'text': f"bond {model.describe(a)} - {model.describe(j)} is {b:.4f} nm, outside the "
                                     f"model's support [{lo:.4f}, {hi:.4f}] nm"})
        if r >= 2:
            k = row[2]
            theta = _angle(x, a, j, k)
            u = theta / math.pi
            if u < model.angleMargin or u > 1 - model.angleMargin:
                problems.append({'kind': 'angle', 'atoms': (a, j, k), 'value': math.degrees(theta),
                                 'text': f"angle {model.describe(a)} - {model.describe(j)} - {model.describe(k)} is "
                                         f"{math.degrees(theta):.2f} degrees, within {180 * model.angleMargin:.2f} degrees "
                                         f"of 0 or 180 where the flow has no support"})
    return problems


def _swapProblems(model, molecule, x, evaluator, threshold, groups=None):
    """Equivalent atoms whose permutation lowers the flow's energy by more than threshold kJ/mol:
    the Topology's labelling has the handedness opposite to the model's (groups: all by default)."""
    problems = []
    energy = evaluator.energy(x[molecule])
    for group in (model.equivalentGroups() if groups is None else groups):
        # the fix that moves fewest atoms (a swap of two, where one does), then the lowest energy
        best, bestKey = None, None
        for perm in _groupPermutations(group)[1:]:
            candidate = _permute(molecule, group, perm)
            e = evaluator.energy(x[candidate])
            key = (sum(c != m for c, m in zip(candidate, molecule)), e)
            if energy - e > threshold and (bestKey is None or key < bestKey):
                best, bestKey = candidate, key
        if best is not None:
            moves = [(a, molecule[a], best[a]) for a in range(model.n) if best[a] != molecule[a]]
            problems.append({'kind': 'equivalent atoms', 'atoms': tuple(a for a, _, _ in moves),
                             'value': energy - bestKey[1], 'fix': best, 'moves': moves})
    return problems


def _mirrorProblem(model, evaluator, x, threshold, kT):
    """The mirror image (every torsion's sign reversed, bonds and angles kept) far more likely
    under the flow than the configuration: the molecule has the handedness opposite to the
    model's (a D- for an L-amino acid, an inverted stereocentre).  Both are compared at their
    best labelling of the equivalent atoms, which a mirror image reverses too."""
    local = list(range(model.n))
    energy = evaluator.energy(x[_resolveEquivalent(model, local, x, evaluator)])
    mirrored = evaluator.energy(-x[_resolveEquivalent(model, local, -x, evaluator)])
    if energy - mirrored > threshold:
        return {'kind': 'mirror image', 'atoms': (), 'value': energy - mirrored,
                'text': f"the mirror image of the configuration has a flow energy {(energy - mirrored) / kT:.1f} kT "
                        f"lower: the structure has the handedness opposite to the model's (a stereocentre "
                        f"inverted, such as a D- for an L-amino acid), or the mapping mirrors it"}
    return None


def _particleText(allAtoms, p):
    if allAtoms is not None and p < len(allAtoms):
        return f"particle {p} ({allAtoms[p].name} {allAtoms[p].residue.name} {allAtoms[p].residue.id})"
    return f"particle {p}"


def _equivalentText(model, m, p, particles, particleText, kT):
    """The message of one 'equivalent atoms' problem (of _swapProblems, in local atom order) of
    molecule m whose model atoms are the given particles: which atoms to swap."""
    moves = [(a, particles[t], particles[u]) for a, t, u in p['moves']]
    roles = ', '.join(f"{model.describe(a)} -> {particleText(u)}" for a, t, u in moves)
    if len(moves) == 2:
        what = f"swap {particleText(moves[0][1])} and {particleText(moves[1][1])} ({roles})"
    else:
        what = f"relabel {', '.join(particleText(t) for _, t, _ in moves)} ({roles})"
    return (f"molecule {m}: equivalent atoms are labelled with the handedness opposite to the "
            f"model's (relabelling them lowers the flow's energy by {p['value'] / kT:.1f} kT): "
            f"{what}.  Exchange these atoms' names in the structure, pass positions when mapping, "
            f"or call checkConfiguration(..., fix=True)")


def checkConfiguration(force, positions, topology=None, molecules=None, onProblem='error',
                       swapThreshold=10.0, fix=False):
    """Check that each molecule of a SmoothFlowForce starts inside the flow's support.

    Finds (1) bonds outside the model's bounds and angles within the support margin of 0 or 180
    degrees (a wrong molecule, a wrong mapping, swapped atoms, broken geometry), (2) a molecule
    whose mirror image the flow finds more likely by more than swapThreshold kT (an inverted
    stereocentre), and (3) groups of equivalent atoms (methyl hydrogens, ...) mapped with the
    handedness opposite to the model's: where exchanging them lowers the flow's energy by more
    than swapThreshold kT, the message says exactly which atoms to swap.

    Parameters
    ----------
    force : SmoothFlowForce
        the force, with its molecules set (addSmoothFlowForce, setParticles, addMolecule)
    positions : list of Vec3, Quantity or array (numParticles, 3)
        the System's positions (nm when without units)
    topology : openmm.app.Topology, optional
        to name the Topology's atoms in the messages, and to make molecules whole in a periodic box
    molecules : list of int, optional
        the molecules to check; all by default
    onProblem : 'error', 'warn' or 'return'
        raise SmoothFlowConfigurationError (a ValueError), warn (UserWarning), or only return the
        problems
    swapThreshold : float
        in kT: how much lower the energy must be after exchanging equivalent atoms to report them
    fix : bool
        exchange the equivalent atoms found in the force's molecules (setMoleculeParticles;
        reinitialize a Context made before)

    Returns
    -------
    list of dict
        the problems, each with 'molecule', 'kind' ('bond', 'angle', 'mirror image',
        'equivalent atoms'),
        'atoms' (model atoms), 'particles' and 'text'

    Raises
    ------
    ValueError
        for a free-form model, which has no bonds, angles or equivalent atoms to check
    """
    if onProblem not in ('error', 'warn', 'return'):
        raise ValueError(f"onProblem must be 'error', 'warn' or 'return', not {onProblem!r}")
    _refuseFreeForm(force, "checkConfiguration")
    model = _Model(force)
    numMolecules = max(force.getNumMolecules(), 1)
    particlesOf = [list(force.getMoleculeParticles(m)) if force.getNumMolecules() else list(range(model.n))
                   for m in range(numMolecules)]
    x = _positionsInNm(positions, max(max(p) for p in particlesOf) + 1)
    box = topology.getPeriodicBoxVectors() if topology is not None else None
    if box is not None:
        box = [[float(c) for c in v.value_in_unit(unit.nanometer)] for v in box]
    allAtoms = list(topology.atoms()) if topology is not None else None
    evaluator = _Evaluator(model) if model.elements is not None else None
    kT = force.getKT()

    def particleText(p):
        return _particleText(allAtoms, p)

    problems = []
    for m in (range(numMolecules) if molecules is None else molecules):
        particles = particlesOf[m]
        xm = _wholeMolecule(model, x[particles], box)
        for p in _supportProblems(model, xm):
            p['molecule'] = m
            p['particles'] = tuple(particles[a] for a in p['atoms'])
            where = '; '.join(f"{particleText(particles[a])} at ({', '.join(f'{c:.4f}' for c in xm[a])}) nm"
                              for a in p['atoms'])
            p['text'] = f"molecule {m}: {p['text']} ({where})"
            problems.append(p)
        if evaluator is None or problems and problems[-1]['molecule'] == m:
            continue  # the energy tests need a geometry inside the bounds
        mirror = _mirrorProblem(model, evaluator, xm, swapThreshold * kT, kT)
        if mirror is not None:
            mirror['molecule'] = m
            mirror['particles'] = tuple(particles)
            mirror['text'] = f"molecule {m}: {mirror['text']}"
            problems.append(mirror)
            continue  # labels' handedness is the model's only on a molecule of the model's handedness
        # the equivalent-atom test permutes the molecule's own particles
        local = list(range(model.n))
        for p in _swapProblems(model, local, xm, evaluator, swapThreshold * kT):
            p['text'] = _equivalentText(model, m, p, particles, particleText, kT)
            p['molecule'] = m
            p['particles'] = tuple(particles[a] for a in p['atoms'])
            p['fix'] = [particles[i] for i in p['fix']]
            del p['moves']
            problems.append(p)
            if fix:
                force.setMoleculeParticles(m, p['fix']) if force.getNumMolecules() else force.setParticles(p['fix'])
                particles = p['fix']
    if problems and onProblem != 'return':
        message = (f"the starting configuration is far outside the SmoothFlow model's support in "
                   f"{len(problems)} place(s):\n  " + '\n  '.join(p['text'] for p in problems))
        if onProblem == 'error':
            raise SmoothFlowConfigurationError(message, problems)
        warnings.warn(message + "\nA simulation from here is unreliable: check the structure and the mapping.",
                      stacklevel=2)
    return problems


# ---------------------------------------------------------------------------------------------
# Public mapping

def mapModelToTopology(force, topology, atoms=None, positions=None):
    """Find the copies of a model's molecule in a Topology.

    Parameters
    ----------
    force : SmoothFlowForce
        the force whose model is mapped (only its model is used)
    topology : openmm.app.Topology
        the Topology to search
    atoms : iterable of int, optional
        the indices of the atoms the model applies to; all atoms by default.  With bonds in the
        Topology each bonded group of them must be one copy of the model's molecule; without
        bonds their residues, in order, must be whole copies of the model's residues.
    positions : list of Vec3, Quantity or array, optional
        the Topology's positions (nm without units).  Equivalent atoms whose Topology names
        are exactly the model's are assigned by those names, and the positions check them (a
        UserWarning names the atoms to swap where their labelling is more than 10 kT above the
        best); the other groups are assigned the permutation the flow gives the lowest energy.
        Without positions, names decide every group.  A free-form model's copies are each N
        consecutive atoms of the selection, in order (identical particles), without positions.

    Returns
    -------
    list of list of int
        one list per copy: the Topology atom index of each model atom, in
        model atom order (what SmoothFlowForce.addMolecule expects)

    Raises
    ------
    ValueError
        naming the atoms, residue or bonded group that does not match the model
    """
    molecules, _ = _map(force, topology, atoms, positions, checkNames=True)
    return molecules


def _map(force, topology, atoms, positions, checkNames=False, threshold=10.0):
    """(molecules, byGraph).  With checkNames, a group labelled by names whose permutation
    lowers the flow's energy by more than threshold kT is warned about (addSmoothFlowForce
    leaves that to checkConfiguration, which can raise)."""
    numAtoms = force.getNumModelAtoms()
    selected = _selectedAtoms(topology, atoms)
    if _isFreeForm(force):
        return _mapFreeForm(force, selected), False
    if not force.hasModelAtomInfo():
        # Without names, only the order can be used.
        if len(selected) == 0 or len(selected) % numAtoms != 0:
            raise ValueError(f"the model file names no atoms, so the {len(selected)} selected atoms must be whole "
                             f"copies of its {numAtoms} atoms in model order")
        indices = [atom.index for atom in selected]
        return [indices[i:i + numAtoms] for i in range(0, len(indices), numAtoms)], False
    neighbours, anyBond, leaving = _bondGraph(topology, selected)
    model = _Model(force)
    if leaving:
        # A model is a whole molecule: a cut bond means a wrong selection or a different molecule.
        inside, outside = leaving[0]
        raise ValueError(f"the selected {_describeTopologyAtom(inside)} is bonded to {_describeTopologyAtom(outside)}, "
                         f"which is not selected ({len(leaving)} such bonds): a SmoothFlow model describes a whole "
                         f"molecule, so select every atom of each copy (and no part of another molecule)")
    if anyBond:
        molecules = _mapByGraph(model, topology, selected, neighbours)
    else:
        molecules, neighbours = _mapByNames(force, topology, selected), None
    if positions is not None and model.equivalentGroups():
        x = _positionsInNm(positions, topology.getNumAtoms())
        box = topology.getPeriodicBoxVectors()
        if box is not None:
            box = [[float(c) for c in v.value_in_unit(unit.nanometer)] for v in box]
        evaluator = _Evaluator(model)
        allAtoms = list(topology.atoms())
        resolved = []
        for m, molecule in enumerate(molecules):
            xm = np.zeros((topology.getNumAtoms(), 3))
            xm[molecule] = _wholeMolecule(model, x[molecule], box)
            # names in the model's convention decide; the positions decide the other groups
            molecule, free = _applyNames(model, molecule, allAtoms, neighbours)
            if free:
                molecule = _resolveEquivalent(model, molecule, xm, evaluator, neighbours, groups=free)
            if checkNames and len(free) < len(model.equivalentGroups()):
                _warnNamedLabelling(model, m, molecule, xm[molecule], evaluator, allAtoms,
                                    [g for g in model.equivalentGroups() if g not in free], threshold * force.getKT())
            resolved.append(molecule)
        molecules = resolved
    return molecules, anyBond


def _mapFreeForm(force, selected):
    """A free-form model's copies: each N consecutive selected atoms, in order.  Its particles
    are identical and its energy permutation invariant, so no graph or name decides an order;
    only elements, where both the model and the Topology give them, must agree."""
    n = force.getNumModelAtoms()
    if len(selected) == 0 or len(selected) % n != 0:
        raise ValueError(f"the model is a free-form flow over {n} particles, so the selected atoms must be whole "
                         f"copies of {n} particles (each {n} consecutive atoms one copy), but {len(selected)} "
                         f"were selected")
    if force.hasModelAtomInfo():
        elements = [a['element'] for a in json.loads(force.getModelConfig())['atoms']]
        for i, atom in enumerate(selected):
            if atom.element is not None and elements[i % n] and atom.element.symbol != elements[i % n]:
                raise ValueError(f"{_describeTopologyAtom(atom)} is {atom.element.symbol}, but the free-form "
                                 f"model's particle {i % n} is {elements[i % n]}")
    indices = [atom.index for atom in selected]
    return [indices[i:i + n] for i in range(0, len(indices), n)]


def _warnNamedLabelling(model, m, molecule, x, evaluator, allAtoms, named, threshold):
    """The positions' check of the groups the names decided (x in model atom order): a warning
    that names the atoms to swap where a permutation lowers the energy by more than threshold.
    As in checkConfiguration, only on a geometry inside the support and of the model's
    handedness (a mirror image or broken bonds make every labelling look wrong)."""
    kT = model.force.getKT()
    if _supportProblems(model, x) or _mirrorProblem(model, evaluator, x, threshold, kT) is not None:
        return
    texts = [_equivalentText(model, m, p, molecule, lambda t: _particleText(allAtoms, t), kT)
             for p in _swapProblems(model, list(range(model.n)), x, evaluator, threshold, groups=named)]
    if texts:
        warnings.warn('; '.join(texts), stacklevel=4)


def _createForce(model):
    if isinstance(model, SmoothFlowForce):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return SmoothFlowForce.createFromBytes(model)
    return SmoothFlowForce(os.fspath(model))


def _refuseVirtualSites(system, topology, force, molecules):
    """A model atom must be a real particle: a virtual site has no mass of its own and its
    position follows other particles.  The same rule as the force's own check at Context
    creation, raised here, before the System is changed, naming the Topology atom."""
    allAtoms = list(topology.atoms())
    for m, molecule in enumerate(molecules):
        for a, p in enumerate(molecule):
            if p < system.getNumParticles() and system.isVirtualSite(p):
                atom = allAtoms[p] if p < len(allAtoms) else None
                where = (f"atom '{atom.name}' of residue {_describeResidue(atom.residue)}" if atom is not None
                         else "no Topology atom")
                model = _describeModelAtom(force, a) if force.hasModelAtomInfo() else f"model atom {a}"
                raise ValueError(f"particle {p} ({where}; {model}, molecule {m}) is a virtual site: the "
                                 f"atoms of a SmoothFlow model must be real particles")


# ---------------------------------------------------------------------------------------------
# Double counting: force-field terms inside a molecule

def _bondedTerms(force):
    """(kind, list of (term index, particles)) of a bonded force, or None for other forces."""
    if isinstance(force, openmm.HarmonicBondForce):
        return [(i, force.getBondParameters(i)[:2]) for i in range(force.getNumBonds())]
    if isinstance(force, openmm.HarmonicAngleForce):
        return [(i, force.getAngleParameters(i)[:3]) for i in range(force.getNumAngles())]
    if isinstance(force, (openmm.PeriodicTorsionForce, openmm.RBTorsionForce)):
        return [(i, force.getTorsionParameters(i)[:4]) for i in range(force.getNumTorsions())]
    if isinstance(force, openmm.CMAPTorsionForce):
        return [(i, force.getTorsionParameters(i)[1:9]) for i in range(force.getNumTorsions())]
    if isinstance(force, openmm.CustomBondForce):
        return [(i, force.getBondParameters(i)[:2]) for i in range(force.getNumBonds())]
    if isinstance(force, openmm.CustomAngleForce):
        return [(i, force.getAngleParameters(i)[:3]) for i in range(force.getNumAngles())]
    if isinstance(force, openmm.CustomTorsionForce):
        return [(i, force.getTorsionParameters(i)[:4]) for i in range(force.getNumTorsions())]
    if isinstance(force, openmm.CustomCompoundBondForce):
        return [(i, force.getBondParameters(i)[0]) for i in range(force.getNumBonds())]
    return None


def _plain(value):
    return value._value if hasattr(value, '_value') else value


def _doubleCounted(system, molecules):
    """The force-field terms that act only within one mapped molecule, which the flow's energy
    already contains: {force index: [term indices]} for bonded forces, and for nonbonded forces
    the intramolecular pairs not excluded (zero exceptions, exclusions)."""
    moleculeOf = {}
    for m, molecule in enumerate(molecules):
        for p in molecule:
            moleculeOf[p] = m
    bonded, nonbonded, solvation = {}, {}, []
    for f in range(system.getNumForces()):
        force = system.getForce(f)
        terms = _bondedTerms(force)
        if terms is not None:
            inside = [i for i, particles in terms
                      if len({moleculeOf.get(p, -1 - p) for p in particles}) == 1 and particles[0] in moleculeOf]
            if inside:
                bonded[f] = inside
        elif isinstance(force, openmm.NonbondedForce):
            excluded = set()
            for e in range(force.getNumExceptions()):
                i, j, q, sigma, epsilon = force.getExceptionParameters(e)
                if _plain(q) == 0 and _plain(epsilon) == 0:
                    excluded.add((min(i, j), max(i, j)))
            pairs = [(i, j) for molecule in molecules for i, j in itertools.combinations(sorted(molecule), 2)
                     if (i, j) not in excluded]
            if pairs:
                nonbonded[f] = pairs
        elif isinstance(force, openmm.CustomNonbondedForce):
            excluded = {tuple(sorted(force.getExclusionParticles(e))) for e in range(force.getNumExclusions())}
            pairs = [(i, j) for molecule in molecules for i, j in itertools.combinations(sorted(molecule), 2)
                     if (i, j) not in excluded]
            if pairs:
                nonbonded[f] = pairs
        elif isinstance(force, (openmm.GBSAOBCForce, openmm.CustomGBForce)) or type(force).__name__.startswith('GB'):
            solvation.append(f)
    return bonded, nonbonded, solvation


def _removeDoubleCounting(system, bonded, nonbonded):
    """Zero the force field's terms inside the molecules (as openmm-ml's createMixedSystem
    removes them)."""
    for f, terms in bonded.items():
        force = system.getForce(f)
        zeroMap = None
        for i in terms:
            if isinstance(force, openmm.HarmonicBondForce):
                p = force.getBondParameters(i)
                force.setBondParameters(i, p[0], p[1], p[2], 0.0)
            elif isinstance(force, openmm.HarmonicAngleForce):
                p = force.getAngleParameters(i)
                force.setAngleParameters(i, p[0], p[1], p[2], p[3], 0.0)
            elif isinstance(force, openmm.PeriodicTorsionForce):
                p = force.getTorsionParameters(i)
                force.setTorsionParameters(i, *p[:6], 0.0)
            elif isinstance(force, openmm.RBTorsionForce):
                p = force.getTorsionParameters(i)
                force.setTorsionParameters(i, *p[:4], 0, 0, 0, 0, 0, 0)
            elif isinstance(force, openmm.CMAPTorsionForce):
                if zeroMap is None:
                    zeroMap = force.addMap(2, [0.0] * 4)
                p = force.getTorsionParameters(i)
                force.setTorsionParameters(i, zeroMap, *p[1:9])
            else:
                raise ValueError(f"force {f} ({type(force).__name__}) has {len(terms)} terms among the atoms of the "
                                 f"SmoothFlow molecules, which cannot be removed automatically: remove them "
                                 f"from the System yourself")
    for f, pairs in nonbonded.items():
        force = system.getForce(f)
        if isinstance(force, openmm.NonbondedForce):
            for i, j in pairs:
                force.addException(i, j, 0.0, 1.0, 0.0, True)
        else:
            for i, j in pairs:
                force.addExclusion(i, j)


def _doubleCountingMessage(system, bonded, nonbonded):
    parts = []
    for f, terms in bonded.items():
        parts.append(f"force {f} ({type(system.getForce(f)).__name__}): {len(terms)} terms")
    for f, pairs in nonbonded.items():
        parts.append(f"force {f} ({type(system.getForce(f)).__name__}): {len(pairs)} intramolecular pairs "
                     f"not excluded")
    return ('the System already holds force-field terms among the atoms the SmoothFlow model acts on ('
            + '; '.join(parts) + '): the flow\'s energy is the whole free energy of the molecule (its bonded and '
            'intramolecular nonbonded terms, and the solvent it was trained in), so adding it would count '
            'them twice.  Pass replace=True to remove them (as openmm-ml\'s createMixedSystem does), or build '
            'the System without them')


# ---------------------------------------------------------------------------------------------
# Public: adding the force

def addSmoothFlowForce(system, topology, model, atoms=None, forceGroup=0, periodic=None, positions=None,
                       replace=False, onProblem='error'):
    """Create a SmoothFlowForce for every copy of the model's molecule in a
    Topology and add it to a System.

    For a free-form model over N identical particles, each N consecutive selected atoms are
    one copy (see mapModelToTopology); the force is not periodic.

    Parameters
    ----------
    system : openmm.System
        the System to add the force to (its particles follow the Topology's atoms)
    topology : openmm.app.Topology
        the Topology the System was made from
    model : str, os.PathLike, bytes or SmoothFlowForce
        the model file, its bytes, or a force not yet added to a System
    atoms : iterable of int, optional
        the atoms the model applies to (all by default); see mapModelToTopology
    forceGroup : int
        the force group of the new force
    periodic : bool, optional
        whether the force uses periodic boundary conditions; by default, when
        the Topology has a box or the System already uses them.  A free-form model is
        never periodic: False by default whatever the box, and True is refused
    positions : list of Vec3, Quantity or array, optional
        the starting positions: equivalent atoms not named as in the model are assigned to
        match the model's handedness (those named as in the model keep their names), and the
        configuration is checked (checkConfiguration, which reports a named labelling of the
        wrong handedness); without them a warning says how to check, where the model has
        equivalent atoms.  Not used for a free-form model (identical particles: nothing to
        label, no bonds or angles to check)
    replace : bool
        remove the System's force-field terms among each molecule's atoms (bonded terms zeroed,
        intramolecular nonbonded pairs excluded), which the flow's energy already contains;
        without it such terms are an error
    onProblem : 'error' or 'warn'
        what a starting configuration outside the flow's support does (with positions)

    Returns
    -------
    SmoothFlowForce
        the force, now owned by the System

    Raises
    ------
    ValueError
        where the Topology does not match the model, a particle the model would act on is
        a virtual site of the System (naming it), the System already holds force-field terms
        among the molecule's atoms (without replace), or the positions are far outside the
        support (SmoothFlowConfigurationError, with onProblem='error')
    """
    if onProblem not in ('error', 'warn'):
        raise ValueError(f"onProblem must be 'error' or 'warn', not {onProblem!r}")
    force = _createForce(model)
    freeForm = _isFreeForm(force)
    if freeForm and periodic:
        raise ValueError(f"the model is a free-form flow over {force.getNumModelAtoms()} particles, which is not "
                         f"periodic (its encoder sees every pair of particles at its plain distance): "
                         f"periodic=True cannot apply to it")
    molecules, _ = _map(force, topology, atoms, positions)
    _refuseVirtualSites(system, topology, force, molecules)
    bonded, nonbonded, solvation = _doubleCounted(system, molecules)
    if (bonded or nonbonded) and not replace:
        raise ValueError(_doubleCountingMessage(system, bonded, nonbonded))
    if solvation:
        warnings.warn(f"the System's implicit-solvent force(s) {solvation} act on the SmoothFlow molecules, whose "
                      f"flow energy already contains the solvent model it was trained with: their "
                      f"solvation is counted twice (docs/atom-mapping.md)", stacklevel=2)
    for i, molecule in enumerate(molecules):
        if i == 0:
            force.setParticles(molecule)  # replaces any molecules a given force had
        else:
            force.addMolecule(molecule)
    if freeForm:
        pass  # identical particles: no labelling to resolve, no bonds or angles to check
    elif positions is not None:
        checkConfiguration(force, positions, topology, onProblem=onProblem)
    elif force.hasModelAtomInfo() and equivalentAtoms(force):
        groups = ', '.join('{' + ', '.join(force.getModelAtomName(u[0]) for u in g) + '} of '
                           f"{force.getModelAtomResidueName(g[0][0])} {force.getModelAtomResidueIndex(g[0][0])}"
                           for g in equivalentAtoms(force))
        warnings.warn(f"the model's equivalent atoms {groups} were assigned by their names alone; their "
                      f"handedness must match the model's.  Pass positions=... (or call "
                      f"openmmsmoothflow.checkConfiguration(force, positions, topology)) to check, which says "
                      f"exactly which atoms to swap", stacklevel=2)
    if replace:
        _removeDoubleCounting(system, bonded, nonbonded)
    if periodic is None:
        # A free-form model never is: a box of the Topology or of other forces leaves it plain.
        periodic = not freeForm and (topology.getPeriodicBoxVectors() is not None
                                     or system.usesPeriodicBoundaryConditions())
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setForceGroup(forceGroup)
    system.addForce(force)
    return force
