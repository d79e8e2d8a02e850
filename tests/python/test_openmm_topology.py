"""Mapping a model's atoms onto an OpenMM Topology by residue and atom names."""
import numpy as np
import openmm
import openmm.app as app
import pytest

# The tiny fixture's atoms: (name, residue name, residue index within the molecule).
TINY_ATOMS = [('C1', 'ACE', 0), ('O1', 'ACE', 0), ('CH3', 'ACE', 0),
              ('N', 'NME', 1), ('H', 'NME', 1), ('C', 'NME', 1)]


def makeTopology(copies, rename=None, water=True, extra=None, residueNames=('ACE', 'NME')):
    """copies molecules of the tiny model, atoms of each residue in reversed order,
    then (optionally) a water.  rename = {(copy, atom name): new name}."""
    topology = app.Topology()
    chain = topology.addChain()
    for c in range(copies):
        for r, residueName in enumerate(residueNames):
            residue = topology.addResidue(residueName, chain)
            for name, _, index in reversed(TINY_ATOMS):
                if index == r:
                    name2 = (rename or {}).get((c, name), name)
                    topology.addAtom(name2, app.element.carbon, residue)
            if extra is not None and extra == (c, r):
                topology.addAtom('X', app.element.carbon, residue)
    if water:
        residue = topology.addResidue('HOH', topology.addChain())
        for name, element in (('O', app.element.oxygen), ('H1', app.element.hydrogen), ('H2', app.element.hydrogen)):
            topology.addAtom(name, element, residue)
    return topology


def expectedMolecules(topology, copies):
    atoms = list(topology.atoms())
    result = []
    for c in range(copies):
        molecule = []
        for name, _, index in TINY_ATOMS:
            residue = list(topology.residues())[2 * c + index]
            molecule.append(next(a.index for a in residue.atoms() if a.name == name))
        result.append(molecule)
    return result


def test_maps_every_copy_by_name(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    topology = makeTopology(2)
    atoms = [a.index for a in topology.atoms() if a.residue.name != 'HOH']
    molecules = sf.mapModelToTopology(force, topology, atoms)
    assert molecules == expectedMolecules(topology, 2)
    assert molecules[0] == [2, 1, 0, 5, 4, 3]


def test_whole_topology_must_be_copies(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    with pytest.raises(ValueError, match=r"3 residues, which is not a whole number of copies of the model's 2 residues"):
        sf.mapModelToTopology(force, makeTopology(1))  # the water is no part of the model
    assert sf.mapModelToTopology(force, makeTopology(1, water=False)) == expectedMolecules(makeTopology(1), 1)


def test_missing_atom_is_named(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    topology = makeTopology(2, rename={(1, 'H'): 'HX'}, water=False)
    with pytest.raises(ValueError, match=r"model atom 4 'H' of model residue 1 'NME'.*residue NME 4.*C, HX, N"):
        sf.mapModelToTopology(force, topology)


def test_alternative_names_map_without_bonds(sf, fixtures):
    """Without bonds, names are compared through OpenMM's table of alternative names
    (pdbNames.xml): HN is NME's H, as PDBFile would read it."""
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    topology = makeTopology(2, rename={(1, 'H'): 'HN'}, water=False)
    assert sf.mapModelToTopology(force, topology) == expectedMolecules(makeTopology(2), 2)


def test_extra_atom_is_named(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    topology = makeTopology(1, extra=(0, 1), water=False)
    with pytest.raises(ValueError, match=r"atom 'X' \(index 6\) of residue NME 2 .* is not in the model"):
        sf.mapModelToTopology(force, topology)


def test_residue_mismatch_is_named(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    topology = makeTopology(1, residueNames=('ACE', 'NHE'), water=False)
    with pytest.raises(ValueError, match=r"residue NHE 2 .* does not match model residue 1 'NME'"):
        sf.mapModelToTopology(force, topology)
    with pytest.raises(ValueError, match='not a whole number of copies'):
        sf.mapModelToTopology(force, makeTopology(1, water=False), atoms=[0, 1, 2])


def test_model_without_names_maps_in_order(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['wall']['path'])
    topology = app.Topology()
    residue = topology.addResidue('UNK', topology.addChain())
    for i in range(16):
        topology.addAtom(f'A{i}', app.element.carbon, residue)
    assert sf.mapModelToTopology(force, topology) == [list(range(8)), list(range(8, 16))]
    with pytest.raises(ValueError, match='names no atoms'):
        sf.mapModelToTopology(force, topology, atoms=range(10))


def test_add_force_to_system(sf, fixtures, evaluate):
    ref = fixtures['tiny']
    topology = makeTopology(2)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    solute = [a.index for a in topology.atoms() if a.residue.name != 'HOH']
    force = sf.addSmoothFlowForce(system, topology, ref['path'], atoms=solute, forceGroup=2)
    assert system.getNumForces() == 1
    assert force.getForceGroup() == 2 and not force.usesPeriodicBoundaryConditions()
    molecules = expectedMolecules(topology, 2)
    assert [list(force.getMoleculeParticles(m)) for m in range(2)] == molecules

    positions = np.full((topology.getNumAtoms(), 3), 3.0)
    positions[molecules[0]] = ref['positions'][0]
    positions[molecules[1]] = np.array(ref['positions'][1]) + 1.5
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    energy, forces = evaluate(context, positions)
    assert energy == pytest.approx(ref['energies'][0] + ref['energies'][1], rel=1e-10)
    assert not forces[-3:].any()

    # A periodic Topology makes a periodic force.
    topology.setPeriodicBoxVectors([openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3)])
    periodicSystem = openmm.System()  # owns the force: keep it alive while the force is used
    periodic = sf.addSmoothFlowForce(periodicSystem, topology, open(ref['path'], 'rb').read(), atoms=solute)
    assert periodic.usesPeriodicBoundaryConditions()
