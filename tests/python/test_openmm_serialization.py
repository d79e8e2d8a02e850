"""XmlSerializer round trips of SmoothFlowForce from Python."""
import numpy as np
import openmm
import pytest


def _settings(force):
    return dict(
        bytes=force.getModelBytes(), name=force.getName(), group=force.getForceGroup(),
        periodic=force.usesPeriodicBoundaryConditions(), atoms=force.getNumModelAtoms(),
        temperature=force.getTemperature(), kT=force.getKT(), policy=force.getSupportPolicy(),
        config=force.getModelConfig(),
        names=[(force.getModelAtomName(a), force.getModelAtomResidueName(a), force.getModelAtomResidueIndex(a))
               for a in range(force.getNumModelAtoms())],
        molecules=[force.getMoleculeParticles(m) for m in range(force.getNumMolecules())])


def test_force_round_trip(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    force.addMolecule([0, 1, 2, 3, 4, 5])
    force.addMolecule([11, 10, 9, 8, 7, 6])
    force.setForceGroup(7)
    force.setName('flow')
    force.setUsesPeriodicBoundaryConditions(True)
    xml = openmm.XmlSerializer.serialize(force)
    assert '<Force' in xml and 'type="SmoothFlowForce"' in xml and 'version="1"' in xml
    copy = sf.SmoothFlowForce.cast(openmm.XmlSerializer.deserialize(xml))
    assert _settings(copy) == _settings(force)
    # the settings made above, not defaults that both sides might share
    settings = _settings(copy)
    assert (settings['group'], settings['name'], settings['periodic']) == (7, 'flow', True)
    assert [list(m) for m in settings['molecules']] == [[0, 1, 2, 3, 4, 5], [11, 10, 9, 8, 7, 6]]
    with open(fixtures['tiny']['path'], 'rb') as f:
        assert settings['bytes'] == f.read()


def test_system_round_trip_gives_identical_energies(sf, fixtures, evaluate):
    ref = fixtures['wall']
    system = openmm.System()
    for _ in range(2 * ref['n_atoms']):
        system.addParticle(1.0)
    force = sf.SmoothFlowForce(ref['path'])
    force.addMolecule(list(range(8)))
    force.addMolecule(list(range(15, 7, -1)))
    system.addForce(force)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert _settings(sf.SmoothFlowForce.cast(copy.getForce(0))) == _settings(force)

    positions = np.zeros((16, 3))
    positions[:8] = ref['positions'][0]
    positions[15:7:-1] = np.array(ref['positions'][1]) + 1.0
    results = []
    for s in (system, copy):
        context = openmm.Context(s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
        results.append(evaluate(context, positions))
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])
    assert results[0][0] == pytest.approx(ref['energies'][0] + ref['energies'][1], rel=1e-10)


def test_newer_version_is_rejected(sf, fixtures):
    xml = openmm.XmlSerializer.serialize(sf.SmoothFlowForce(fixtures['tiny']['path']))
    newer = xml.replace('version="1"', 'version="2"', 1)
    with pytest.raises(openmm.OpenMMException, match='unsupported version 2'):
        openmm.XmlSerializer.deserialize(newer)
