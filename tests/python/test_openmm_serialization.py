"""XmlSerializer round trips of SmoothFlowForce from Python, and the SHA-256 that guards the
embedded model (docs/reliability.md, integrity)."""
import base64
import hashlib
import random
import re

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
    assert '<Force' in xml and 'type="SmoothFlowForce"' in xml and 'version="3"' in xml
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
    newer = xml.replace('version="3"', 'version="4"', 1)
    with pytest.raises(openmm.OpenMMException, match='unsupported version 4'):
        openmm.XmlSerializer.deserialize(newer)


def _system_xml(sf, ref):
    system = openmm.System()
    for _ in range(ref['n_atoms']):
        system.addParticle(1.0)
    force = sf.SmoothFlowForce(ref['path'])
    force.setName('flow potential')
    system.addForce(force)
    return openmm.XmlSerializer.serialize(system)


def _energy(system, positions, evaluate):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    energy, forces = evaluate(context, positions)
    del context
    return energy, forces


def test_the_checksum_is_the_sha256_of_the_model(sf, fixtures):
    xml = _system_xml(sf, fixtures['wall'])
    model = base64.b64decode(re.search(r' model="([^"]*)"', xml).group(1), validate=True)
    with open(fixtures['wall']['path'], 'rb') as f:
        assert model == f.read()
    assert re.search(r' modelSha256="([0-9a-f]{64})"', xml).group(1) == hashlib.sha256(model).hexdigest()


def test_300_one_character_changes_never_give_another_energy(sf, fixtures, evaluate):
    """Each of 300 random one-character changes to the base64 model of a serialized System (to
    another base64 character, '=' or a space) fails to load with an error naming the force,
    or decodes to the identical model and gives the identical energy and forces."""
    ref = fixtures['wall']
    xml = _system_xml(sf, ref)
    match = re.search(r' model="([^"]*)"', xml)
    begin, end = match.span(1)
    positions = np.asarray(ref['positions'][0])
    e0, f0 = _energy(openmm.XmlSerializer.deserialize(xml), positions, evaluate)
    alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= '
    rng = random.Random(22)
    refused = same = 0
    for _ in range(300):
        at = rng.randrange(begin, end)
        c = rng.choice(alphabet.replace(xml[at], ''))
        changed = xml[:at] + c + xml[at + 1:]
        try:
            system = openmm.XmlSerializer.deserialize(changed)
        except openmm.OpenMMException as e:
            assert 'SmoothFlowForce' in str(e), str(e)
            refused += 1
            continue
        e1, f1 = _energy(system, positions, evaluate)
        assert e1 == e0 and np.array_equal(f1, f0), f"position {at - begin} -> {c!r} loads a different model"
        same += 1
    # a change of one character of canonical base64 always changes the decoded bytes or breaks
    # the text, so every change is refused; most for the checksum
    assert refused == 300 and same == 0


def test_a_changed_model_is_refused_for_its_checksum(sf, fixtures):
    """Two data blocks of the base64 swapped: valid base64 of a different, loadable-looking file."""
    xml = _system_xml(sf, fixtures['wall'])
    begin, end = re.search(r' model="([^"]*)"', xml).span(1)
    middle = begin + (end - begin) // 2 // 4 * 4
    changed = xml[:middle] + xml[middle + 4:middle + 8] + xml[middle:middle + 4] + xml[middle + 8:]
    assert changed != xml
    with pytest.raises(openmm.OpenMMException,
                       match=r"SmoothFlowForce 'flow potential': the embedded model's SHA-256 [0-9a-f]{64} "
                             r"does not match"):
        openmm.XmlSerializer.deserialize(changed)


def test_version_1_without_a_checksum_still_loads(sf, fixtures, evaluate):
    ref = fixtures['wall']
    xml = _system_xml(sf, ref)
    without = re.sub(r' modelSha256="[0-9a-f]{64}"', '', xml)
    assert without != xml
    with pytest.raises(openmm.OpenMMException, match='lacks modelSha256'):
        openmm.XmlSerializer.deserialize(without)
    version1 = re.sub(r'(<Force [^>]*)version="3"', r'\1version="1"', without, count=1)
    assert version1 != without
    positions = np.asarray(ref['positions'][0])
    e1, f1 = _energy(openmm.XmlSerializer.deserialize(version1), positions, evaluate)
    e0, f0 = _energy(openmm.XmlSerializer.deserialize(xml), positions, evaluate)
    assert e1 == e0 and np.array_equal(f1, f0)
