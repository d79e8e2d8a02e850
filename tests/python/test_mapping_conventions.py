"""Mapping the shipped alanine-dipeptide model onto structures as OpenMM users meet them
(issue 21, parts 1, 4 and 6): every naming convention, atoms in any order, equivalent atoms
permuted, wrong molecules and wrong mappings, and force fields that would be counted twice.

The structures are tests/data/mapping/ala2_*.pdb (make_fixtures.py there): the same positions,
in the model's atom order, under three naming conventions.
"""
import itertools
import json
import os
import warnings

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, '..', 'data', 'mapping')
MODEL = os.path.join(HERE, '..', '..', 'models', 'alanine_dipeptide', 'smooth.safetensors')
CONVENTIONS = ('amber', 'openmm', 'pdbv2')
# the model's atoms (alanine_dipeptide.molecule): the methyl groups, HB, ACE H, NME H
METHYLS = ((11, 12, 13), (0, 2, 3), (19, 20, 21))


@pytest.fixture(scope='module')
def T(sf):
    from openmmsmoothflow import topology
    return topology


def pdb(convention):
    return app.PDBFile(os.path.join(DATA, f'ala2_{convention}.pdb'))


def rawTopology(convention):
    """The Topology with the file's own names and the standard bonds, as AmberPrmtopFile or a
    Topology built by other tools would give it (PDBFile renames atoms to OpenMM's names)."""
    topology = app.Topology()
    chain = topology.addChain()
    residues, atoms = {}, []
    with open(os.path.join(DATA, f'ala2_{convention}.pdb')) as f:
        for line in f:
            if line.startswith(('ATOM', 'HETATM')):
                key = int(line[22:26])
                if key not in residues:
                    residues[key] = topology.addResidue(line[17:20].strip(), chain, str(key))
                atoms.append(topology.addAtom(line[12:16].strip(), app.element.get_by_symbol(line[76:78].strip()),
                                              residues[key]))
    for i, j in pdb('openmm').topology.bonds():
        topology.addBond(atoms[i.index], atoms[j.index])
    return topology


def positionsNm(convention='openmm'):
    return np.array(pdb(convention).positions.value_in_unit(unit.nanometer))


def flowEnergy(sf, topology, x, **kwargs):
    """The energy at x of the System that addSmoothFlowForce makes (Reference platform)."""
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        force = sf.addSmoothFlowForce(system, topology, MODEL, **kwargs)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(x)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energy, list(force.getMoleculeParticles(0))


def energyInModelOrder(T, force, x):
    return T._Evaluator(T._Model(force)).energy(x)


def test_readme_example_pdbfile_maps(sf):
    """The failure the issue reports: PDBFile standardizes ACE/NME names (HH31 -> H1, NME CH3 ->
    C), and a model may store other names (the flows shipped before December 2026 stored the
    Amber names).  The graph decides and names only break ties, so with the file in model order
    the mapping is the identity whatever the file's convention."""
    force = sf.SmoothFlowForce(MODEL)
    for convention in CONVENTIONS:
        topology = pdb(convention).topology
        assert [a.name for a in topology.atoms()][:4] == ['H1', 'CH3', 'H2', 'H3']  # PDBFile's names
        assert sf.mapModelToTopology(force, topology) == [list(range(22))], convention


@pytest.mark.parametrize('convention', CONVENTIONS)
def test_each_naming_convention_maps(sf, convention):
    """A Topology that keeps the file's names (Amber/tleap, OpenMM, old PDB), with its atoms
    reordered (hydrogens after the heavy atoms, residue by residue): the mapping follows the atoms."""
    force = sf.SmoothFlowForce(MODEL)
    topology = rawTopology(convention)
    assert sf.mapModelToTopology(force, topology) == [list(range(22))]
    # the same molecule with its atoms in another order
    order = sorted(range(22), key=lambda i: (list(topology.atoms())[i].residue.index,
                                             list(topology.atoms())[i].element.symbol == 'H', -i))
    reordered = app.Topology()
    chain = reordered.addChain()
    residues = {r.index: reordered.addResidue(r.name, chain, r.id) for r in topology.residues()}
    old = list(topology.atoms())
    new = {}
    for i in order:
        new[i] = reordered.addAtom(old[i].name, old[i].element, residues[old[i].residue.index])
    for a, b in topology.bonds():
        reordered.addBond(new[a.index], new[b.index])
    molecule = sf.mapModelToTopology(force, reordered)[0]
    assert molecule == [new[a].index for a in range(22)]


def test_energy_is_that_of_the_model_order_in_every_convention(sf, T):
    """With positions, a methyl whose hydrogens carry the model's own names keeps them (the
    labelling the flow was trained with); the other methyls get the permutation the flow
    prefers, the lowest over their permutations.  So the energy is the lowest over the methyls
    the names do not decide: all three for old PDB names, ACE's and NME's for Amber names
    (ALA's HB1-3 are the model's), none for the model's (OpenMM's, as PDBFile names them) names."""
    force = sf.SmoothFlowForce(MODEL)
    x = positionsNm()
    evaluator = T._Evaluator(T._Model(force))

    def lowest(groups):
        return min(evaluator.energy(x[list(p)]) for p in allMethylPermutations(groups))

    # the methyls the names leave to the positions
    free = {'amber': (METHYLS[1], METHYLS[2]), 'openmm': (), 'pdbv2': METHYLS}
    for convention in CONVENTIONS:
        energy, _ = flowEnergy(sf, rawTopology(convention), x, positions=x)
        assert energy == pytest.approx(lowest(free[convention]), rel=1e-12, abs=1e-9), convention
        # PDBFile gives every file OpenMM's names
        energy, _ = flowEnergy(sf, pdb(convention).topology, x, positions=pdb(convention).positions)
        assert energy == pytest.approx(lowest(free['openmm']), rel=1e-12, abs=1e-9), convention


def allMethylPermutations(free=METHYLS):
    """Every labelling that permutes the hydrogens of the given methyls (the others kept)."""
    for perms in itertools.product(*(itertools.permutations(m) for m in free)):
        order = list(range(22))
        for group, perm in zip(free, perms):
            for a, b in zip(group, perm):
                order[a] = b
        yield order


def test_permuted_equivalent_atoms_give_the_same_energy(sf, T):
    """Equivalent atoms permuted in a structure whose names are not the model's (old PDB names:
    2HB <-> 3HB, the ACE methyl's hydrogens rotated, two NME hydrogens exchanged): with positions
    the mapping undoes it and the energy equals the unpermuted one.  With the model's own names
    permuted the same way, the names are followed and the start check reports the two swaps of
    the wrong handedness (test_mapping_names.py)."""
    x = positionsNm()
    reference, referenceMolecule = flowEnergy(sf, rawTopology('pdbv2'), x, positions=x)
    swaps = {('ALA', '2HB'): '3HB', ('ALA', '3HB'): '2HB', ('ACE', '1HH3'): '2HH3', ('ACE', '2HH3'): '3HH3',
             ('ACE', '3HH3'): '1HH3', ('NME', '1HH3'): '2HH3', ('NME', '2HH3'): '1HH3'}
    topology = rawTopology('pdbv2')
    for atom in topology.atoms():
        atom.name = swaps.get((atom.residue.name, atom.name), atom.name)
    energy, molecule = flowEnergy(sf, topology, x, positions=x)
    assert energy == pytest.approx(reference, rel=1e-12, abs=1e-9)
    assert molecule == referenceMolecule
    # without positions, names decide (2HB is now atom 13): far from the reference, by the swap
    force = sf.SmoothFlowForce(MODEL)
    byNames = sf.mapModelToTopology(force, topology)[0]
    assert byNames[12] == 13 and byNames[13] == 12
    energy, _ = flowEnergy(sf, topology, x)
    assert energy - reference > 20 * force.getKT()


def test_missing_positions_warn_and_check_names_the_swap(sf, T):
    """Without positions, addSmoothFlowForce warns that the equivalent atoms were assigned by
    names; checkConfiguration then says exactly which atoms to swap, and fix=True swaps them."""
    x = positionsNm()
    reference, _ = flowEnergy(sf, rawTopology('amber'), x, positions=x)
    topology = rawTopology('amber')
    for atom in topology.atoms():  # HB2 <-> HB3: the handedness of the ALA methyl's labels reversed
        atom.name = {'HB2': 'HB3', 'HB3': 'HB2'}.get(atom.name, atom.name)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    with pytest.warns(UserWarning, match=r"equivalent atoms .*\{HB1, HB2, HB3\} of ALA 1.* assigned by their names alone"):
        force = sf.addSmoothFlowForce(system, topology, MODEL)
    with pytest.raises(T.SmoothFlowConfigurationError,
                       match=r"handedness opposite.*: swap particle 1[123] \(HB[123] ALA 2\) and particle 1[123] "
                             r"\(HB[123] ALA 2\) \(model atom 1[123] 'HB[123]' \(ALA 1\) -> particle 1[123]") as info:
        T.checkConfiguration(force, x, topology)
    [problem] = info.value.problems
    assert problem['kind'] == 'equivalent atoms' and set(problem['particles']) <= {11, 12, 13}
    with pytest.warns(UserWarning, match='handedness opposite'):
        T.checkConfiguration(force, x, topology, onProblem='warn', fix=True)
    assert T.checkConfiguration(force, x, topology) == []
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(x)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    # the fixed labelling has the model's handedness: within a few kT of the best (a methyl's three
    # rotations, all of the right handedness, differ by about 1 kT in the flow)
    assert abs(energy - reference) < 3 * force.getKT()


def test_equivalent_atoms_of_the_model(sf, T):
    """The groups follow from the model's bond tree and elements: the three methyls."""
    groups = T.equivalentAtoms(sf.SmoothFlowForce(MODEL))
    assert sorted(tuple(sorted(u[0] for u in g)) for g in groups) == sorted(METHYLS)
    # a linear chain of 8 carbons reads the same from either end: one group of its two halves
    chain = T.equivalentAtoms(sf.SmoothFlowForce(os.path.join(HERE, '..', '..', 'models', 'demo',
                                                              'chain8.safetensors')))
    assert [sorted(sorted(u) for u in g) for g in chain] == [[[0, 1, 2, 3], [4, 5, 6, 7]]]


def test_wrong_molecule_is_refused(sf, fixtures):
    force = sf.SmoothFlowForce(MODEL)
    topology = pdb('openmm').topology
    # the first 22 atoms of a larger molecule (here: alanine dipeptide with a methyl on CB)
    bigger = app.Topology()
    chain = bigger.addChain()
    residues = {r.index: bigger.addResidue(r.name, chain, r.id) for r in topology.residues()}
    atoms = [bigger.addAtom(a.name, a.element, residues[a.residue.index]) for a in topology.atoms()]
    for a, b in topology.bonds():
        bigger.addBond(atoms[a.index], atoms[b.index])
    cg = bigger.addAtom('CG', app.element.carbon, bigger.addResidue('MET', chain))
    bigger.addBond(atoms[10], cg)
    with pytest.raises(ValueError, match=r"selected atom 10 'CB' of residue ALA 2 is bonded to atom 22 'CG' of residue MET.*whole"):
        sf.mapModelToTopology(force, bigger, atoms=range(22))
    with pytest.raises(ValueError, match=r"23 bonded atoms 0..22.*model's molecule has 22 atoms"):
        sf.mapModelToTopology(force, bigger)
    # same size, another graph: an O where the model has a C
    other = rawTopology('openmm')
    list(other.atoms())[10].element = app.element.oxygen
    with pytest.raises(ValueError, match=r"are not the model's molecule.*C6 H12 N2 O2.*C5 H12 N2 O3"):
        sf.mapModelToTopology(force, other)
    # a small model on alanine dipeptide
    with pytest.raises(ValueError, match=r"model's molecule has 6 atoms"):
        sf.mapModelToTopology(sf.SmoothFlowForce(fixtures['tiny']['path']), topology)


def test_swapped_heavy_atoms_are_reported(sf, T):
    """Positions of two heavy atoms exchanged (CB and C of ALA): under the shipped model's wall
    policy the energy is finite, but the start is refused, naming the bonds, atoms and coordinates."""
    topology = pdb('openmm').topology
    x = positionsNm()
    x[[10, 14]] = x[[14, 10]]
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    with pytest.raises(T.SmoothFlowConfigurationError,
                       match=r"bond model atom 1[1-3] 'HB[1-3]' \(ALA 1\) - model atom 10 'CB' \(ALA 1\) is 0\.2\d+ nm, "
                             r"outside the model's support.*particle 10 \(CB ALA 2\) at \(") as info:
        sf.addSmoothFlowForce(system, topology, MODEL, positions=x)
    assert system.getNumForces() == 0  # refused before the System changed
    kinds = {p['kind'] for p in info.value.problems}
    assert kinds == {'bond'}  # the energy tests are left out where the geometry is broken
    assert all(p['molecule'] == 0 for p in info.value.problems)
    with pytest.warns(UserWarning, match="outside the model's support"):
        sf.addSmoothFlowForce(system, topology, MODEL, positions=x, onProblem='warn')
    assert system.getNumForces() == 1
    # the right positions pass
    assert T.checkConfiguration(sf.SmoothFlowForce.cast(system.getForce(0)), positionsNm(), topology) == []


def test_force_field_is_not_counted_twice(sf):
    """A System that holds the force field already: refused, or its terms inside the molecule
    removed with replace=True, leaving the flow's energy alone."""
    topology = pdb('openmm').topology
    x = positionsNm()
    forcefield = app.ForceField('amber99sbildn.xml')
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    with pytest.raises(ValueError, match=r"already holds force-field terms.*HarmonicBondForce\): 21 terms.*"
                                         r"PeriodicTorsionForce\): 42 terms.*HarmonicAngleForce\): 36 terms.*"
                                         r"NonbondedForce\): 174 intramolecular pairs.*replace=True"):
        sf.addSmoothFlowForce(system, topology, MODEL, positions=x)
    flow, _ = flowEnergy(sf, topology, x, positions=x)
    force = sf.addSmoothFlowForce(system, topology, MODEL, positions=x, replace=True, forceGroup=3)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(x)
    total = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert total == pytest.approx(flow, rel=1e-12, abs=1e-8)
    assert force.getForceGroup() == 3
    # a System whose solvent model acts on the molecule: warned
    obc = app.ForceField('amber99sbildn.xml', 'amber99_obc.xml').createSystem(topology, nonbondedMethod=app.NoCutoff)
    with pytest.warns(UserWarning, match='implicit-solvent'):
        sf.addSmoothFlowForce(obc, topology, MODEL, positions=x, replace=True)


def test_several_copies_map_by_bonded_groups(sf):
    """Two copies in one Topology (a second structure shifted by 1.5 nm), with a water between:
    each bonded group is one molecule."""
    first = pdb('openmm')
    modeller = app.Modeller(first.topology, first.positions)
    second = app.PDBFile(os.path.join(DATA, 'ala2_amber.pdb'))
    modeller.add(second.topology, [p + openmm.Vec3(1.5, 0, 0) * unit.nanometer for p in second.positions])
    force = sf.SmoothFlowForce(MODEL)
    assert sf.mapModelToTopology(force, modeller.topology) == [list(range(22)), list(range(22, 44))]


RING_MODEL = os.path.join(DATA, 'ring.safetensors')
# methylcyclopropane (make_ring_model.py): model order, and its bonds with the ring closure C2-C3
RING_ATOMS = [('C1', 'C'), ('C2', 'C'), ('C3', 'C'), ('C4', 'C'), ('H1', 'H'), ('H21', 'H'), ('H22', 'H'),
              ('H31', 'H'), ('H32', 'H'), ('H41', 'H'), ('H42', 'H'), ('H43', 'H')]
RING_BONDS = [(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 1), (7, 2), (8, 2), (9, 3), (10, 3), (11, 3), (1, 2)]


def ringTopology(order, names):
    """The molecule with its atoms in the given order (topology atom i is model atom order[i])."""
    topology = app.Topology()
    residue = topology.addResidue('MCP', topology.addChain())
    atoms = {}
    for a in order:
        atoms[a] = topology.addAtom(names[a], app.element.get_by_symbol(RING_ATOMS[a][1]), residue)
    for a, b in RING_BONDS:
        topology.addBond(atoms[a], atoms[b])
    return topology


def test_ring_molecule_maps_by_graph(sf, T):
    """A model whose bond tree leaves out a ring bond: the tree is found inside the ring, whatever
    the names and the atom order; with positions the energy is the lowest over the molecule's
    symmetries (48 labellings: the two CH2 groups, their hydrogens, the methyl), the same for
    every labelling of the input."""
    force = sf.SmoothFlowForce(RING_MODEL)
    x = np.loadtxt(os.path.join(DATA, 'ring_positions.txt'))
    evaluator = T._Evaluator(T._Model(force))
    groups = T.equivalentAtoms(force)
    assert sorted(sorted(u[0] for u in g) for g in groups) == [[1, 2], [5, 6], [7, 8], [9, 10, 11]]
    labellings = []
    for choice in itertools.product(*(itertools.permutations(range(len(g))) for g in groups)):
        order = list(range(12))
        for group, perm in zip(groups, choice):
            order = T._permute(order, group, perm)
        labellings.append(order)
    lowest = min(evaluator.energy(x[o]) for o in labellings)
    rng = np.random.default_rng(4)
    names = [f'X{i}' for i in rng.permutation(12)]  # names that say nothing
    for trial in range(3):
        order = list(rng.permutation(12))
        topology = ringTopology(order, names)
        positions = np.array([x[a] for a in order])
        molecule = sf.mapModelToTopology(force, topology)[0]
        bonds = {frozenset((b.atom1.index, b.atom2.index)) for b in topology.bonds()}
        assert all(frozenset((molecule[a], molecule[j])) in bonds for a, j, _, _ in zmatrixOf(force)[1:])
        assert all(list(topology.atoms())[molecule[a]].element.symbol == RING_ATOMS[a][1] for a in range(12))
        resolved = sf.mapModelToTopology(force, topology, positions=positions)[0]
        assert evaluator.energy(positions[resolved]) == pytest.approx(lowest, rel=1e-12, abs=1e-9)


def zmatrixOf(force):
    return json.loads(force.getModelConfig())['zmatrix']


def test_mirror_image_is_reported(sf, T):
    """D-alanine dipeptide (the mirror image of the structure) for a model of the L form: bonds
    and angles are those of the right molecule, but the flow finds the mirror image (L) far more
    likely, and says so; the L structure passes."""
    topology = pdb('openmm').topology
    x = positionsNm()
    force = sf.SmoothFlowForce(MODEL)
    force.setParticles(sf.mapModelToTopology(force, topology, positions=x)[0])
    assert T.checkConfiguration(force, x, topology) == []
    mirrored = -x
    force.setParticles(sf.mapModelToTopology(force, topology, positions=mirrored)[0])
    problems = T.checkConfiguration(force, mirrored, topology, onProblem='return')
    assert [p['kind'] for p in problems] == ['mirror image']
    assert problems[0]['value'] > 50 * force.getKT()


def test_molecule_split_by_a_periodic_box(sf, T):
    """Atoms wrapped into a 1.2 nm box one by one: the check and the choice of equivalent atoms
    take each bond at its minimum image, so the split molecule passes and gets the same labelling."""
    topology = pdb('openmm').topology
    x = positionsNm()
    box = np.eye(3) * 1.2
    topology.setPeriodicBoxVectors([openmm.Vec3(*v) for v in box] * unit.nanometer)
    wrapped = (x + 0.9) % 1.2  # CH3 of ACE near 0.9, the rest spread across the faces
    assert np.ptp(wrapped, axis=0).max() > 1.0  # split indeed
    force = sf.SmoothFlowForce(MODEL)
    whole = sf.mapModelToTopology(force, topology, positions=x)
    assert sf.mapModelToTopology(force, topology, positions=wrapped) == whole
    force.setParticles(whole[0])
    assert T.checkConfiguration(force, wrapped, topology) == []
    unwrappedCheck = T.checkConfiguration(force, wrapped, onProblem='return')  # without the box: broken bonds
    assert unwrappedCheck and {p['kind'] for p in unwrappedCheck} == {'bond'}
