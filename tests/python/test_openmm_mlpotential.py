"""The 'smoothflow' potential of openmm-ml."""
import importlib.metadata

import numpy as np
import openmm
import openmm.app as app
import pytest

openmmml = pytest.importorskip('openmmml')


@pytest.fixture
def MLPotential(sf):
    from openmmml import MLPotential
    if 'smoothflow' not in MLPotential._implFactories:
        # Running from a build tree, where no entry point is installed.
        from openmmsmoothflow.mlpotential import SmoothFlowPotentialImplFactory
        MLPotential.registerImplFactory('smoothflow', SmoothFlowPotentialImplFactory())
    return MLPotential


def tinyTopology(copies=1):
    topology = app.Topology()
    chain = topology.addChain()
    names = [('C1', 'ACE', 0), ('O1', 'ACE', 0), ('CH3', 'ACE', 0), ('N', 'NME', 1), ('H', 'NME', 1), ('C', 'NME', 1)]
    for _ in range(copies):
        residues = [topology.addResidue('ACE', chain), topology.addResidue('NME', chain)]
        for name, _, r in names:
            topology.addAtom(name, app.element.Element.getBySymbol(name[0]), residues[r])
    return topology


def test_entry_point_is_installed(sf):
    try:
        importlib.metadata.distribution('openmmsmoothflow')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('openmmsmoothflow is used from a build tree, not installed (no entry points)')
    names = {e.name: e.value for e in importlib.metadata.entry_points(group='openmmml.potentials')}
    assert names.get('smoothflow') == 'openmmsmoothflow.mlpotential:SmoothFlowPotentialImplFactory'


def test_create_system(sf, fixtures, MLPotential, evaluate):
    ref = fixtures['tiny']
    potential = MLPotential('smoothflow', modelPath=ref['path'])
    topology = tinyTopology(2)
    system = potential.createSystem(topology)
    assert system.getNumParticles() == 12
    forces = [system.getForce(i) for i in range(system.getNumForces())]
    flows = [sf.SmoothFlowForce.cast(f) for f in forces if sf.SmoothFlowForce.isinstance(f)]
    assert len(flows) == 1 and flows[0].getNumMolecules() == 2
    assert any(isinstance(f, openmm.CMMotionRemover) for f in forces)

    positions = np.concatenate([ref['positions'][0], np.array(ref['positions'][3]) + 2.0])
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    energy, _ = evaluate(context, positions)
    assert energy == pytest.approx(ref['energies'][0] + ref['energies'][3], rel=1e-10)


def test_model_bytes_and_errors(sf, fixtures, MLPotential, evaluate):
    ref = fixtures['tiny']
    data = open(ref['path'], 'rb').read()
    system = MLPotential('smoothflow', modelBytes=data).createSystem(tinyTopology(), removeCMMotion=False)
    assert system.getNumForces() == 1
    # the force is the model of those bytes: PyTorch's energy and forces of the fixture
    assert sf.SmoothFlowForce.cast(system.getForce(0)).getModelBytes() == data
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    energy, forces = evaluate(context, ref['positions'][1])
    assert energy == pytest.approx(ref['energies'][1], rel=1e-10)
    np.testing.assert_allclose(forces, ref['forces'][1], rtol=0, atol=1e-8 * np.abs(ref['forces'][1]).max())
    with pytest.raises(ValueError, match='modelPath'):
        MLPotential('smoothflow')
    with pytest.raises(openmm.OpenMMException, match='cannot open model file'):
        MLPotential('smoothflow', modelPath='/no/such/model.safetensors')
    with pytest.raises(ValueError, match="model atom 0 'C1'"):
        topology = tinyTopology()
        next(topology.atoms()).name = 'CX'
        MLPotential('smoothflow', modelPath=fixtures['tiny']['path']).createSystem(topology)


def test_create_mixed_system(sf, fixtures, MLPotential, evaluate):
    """The molecule by the flow, a water by a conventional force field (mechanical embedding)."""
    ref = fixtures['tiny']
    topology = tinyTopology(1)
    water = topology.addResidue('HOH', topology.addChain())
    for name, symbol in (('O', 'O'), ('H1', 'H'), ('H2', 'H')):
        topology.addAtom(name, app.element.Element.getBySymbol(symbol), water)
    mmSystem = openmm.System()
    nonbonded = openmm.NonbondedForce()
    for atom in topology.atoms():
        mmSystem.addParticle(atom.element.mass)
        nonbonded.addParticle(0.0, 0.3, 0.5)
    mmSystem.addForce(nonbonded)
    potential = MLPotential('smoothflow', modelPath=ref['path'])
    system = potential.createMixedSystem(topology, mmSystem, list(range(6)), forceGroup=5)
    flows = [sf.SmoothFlowForce.cast(system.getForce(i)) for i in range(system.getNumForces())
             if sf.SmoothFlowForce.isinstance(system.getForce(i))]
    assert len(flows) == 1 and flows[0].getForceGroup() == 5
    assert flows[0].getMoleculeParticles(0) == (0, 1, 2, 3, 4, 5)
    positions = np.vstack([ref['positions'][0], [[3, 3, 3], [3.1, 3, 3], [3, 3.1, 3]]])
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    energy, _ = evaluate(context, positions, groups={5})
    assert energy == pytest.approx(ref['energies'][0], rel=1e-10)


def test_pdbfile_structure_maps_by_graph(sf, MLPotential):
    """The README's example: a PDBFile (OpenMM's names: ACE H1, NME C) and the shipped model
    (Amber names).  With positions the equivalent atoms follow the flow and the start is checked;
    in createMixedSystem the force field's terms among the molecule are removed first, so nothing
    is counted twice and the force field's share of the energy inside the molecule is 0."""
    import os
    import warnings
    here = os.path.dirname(os.path.abspath(__file__))
    model = os.path.join(here, '..', '..', 'models', 'alanine_dipeptide', 'smooth.safetensors')
    pdb = app.PDBFile(os.path.join(here, '..', 'data', 'mapping', 'ala2_openmm.pdb'))
    potential = MLPotential('smoothflow', modelPath=model)
    with pytest.warns(UserWarning, match='assigned by their names alone'):
        potential.createSystem(pdb.topology)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        system = potential.createSystem(pdb.topology, positions=pdb.positions, removeCMMotion=False)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(pdb.positions)
    flow = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)

    mm = app.ForceField('amber99sbildn.xml').createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    mixed = potential.createMixedSystem(pdb.topology, mm, list(range(22)), forceGroup=1, positions=pdb.positions)
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(pdb.positions)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert energy == pytest.approx(flow, rel=1e-12, abs=1e-8)

    # two heavy atoms' positions exchanged: refused, naming the atoms
    x = np.array(pdb.positions.value_in_unit(openmm.unit.nanometer))
    x[[10, 14]] = x[[14, 10]]
    with pytest.raises(ValueError, match=r"outside the model's support.*particle 10 \(CB ALA 2\)"):
        potential.createSystem(pdb.topology, positions=x)
