"""Every kind of bad input raises openmm.OpenMMException naming the problem.

Bad model files are made by editing a good exported file: its header JSON
directly, or its tensors through the safetensors library."""
import json
import struct

import numpy as np
import openmm
import openmm.app
import pytest


def splitHeader(data):
    n = struct.unpack('<Q', data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def joinHeader(header, body):
    text = json.dumps(header).encode()
    return struct.pack('<Q', len(text)) + text + body


def editTensors(data, edit, editConfig=None):
    """A valid safetensors file with edited tensors (and optionally config)."""
    safetensors = pytest.importorskip('safetensors.numpy')
    header, _ = splitHeader(data)
    metadata = dict(header['__metadata__'])
    if editConfig is not None:
        config = json.loads(metadata['config'])
        editConfig(config)
        metadata['config'] = json.dumps(config)
    tensors = {k: v.copy() for k, v in safetensors.load(data).items()}
    edit(tensors)
    return safetensors.save(tensors, metadata=metadata)


@pytest.fixture
def good(fixtures):
    with open(fixtures['tiny']['path'], 'rb') as f:
        return f.read()


def load(sf, data):
    return sf.SmoothFlowForce.createFromBytes(data)


def test_missing_file(sf, tmp_path):
    path = tmp_path / 'absent.safetensors'
    with pytest.raises(openmm.OpenMMException, match=r"cannot open model file '.*absent\.safetensors': No such file"):
        sf.SmoothFlowForce(str(path))


def test_truncated_file(sf, good, tmp_path):
    path = tmp_path / 'truncated.safetensors'
    path.write_bytes(good[:len(good) - 64])
    with pytest.raises(openmm.OpenMMException, match=r"cannot load model file '.*truncated\.safetensors'.*truncated"):
        sf.SmoothFlowForce(str(path))
    with pytest.raises(openmm.OpenMMException, match=r'header length \d+ exceeds the file \(100 bytes\)'):
        load(sf, good[:100])


def test_corrupt_bytes(sf):
    with pytest.raises(openmm.OpenMMException, match='not safetensors'):
        load(sf, bytes(range(256)) * 8)
    with pytest.raises(openmm.OpenMMException, match='cannot load model bytes: model file is 0 bytes: too short for a safetensors header'):
        load(sf, b'')


def test_wrong_header_json(sf, good):
    header, body = splitHeader(good)
    text = json.dumps(header).encode()
    broken = struct.pack('<Q', len(text)) + b'[' + text[1:] + body
    with pytest.raises(openmm.OpenMMException, match='header is not a JSON object'):
        load(sf, broken)
    header['__metadata__']['format'] = 'something-else'
    with pytest.raises(openmm.OpenMMException, match="metadata 'format'"):
        load(sf, joinHeader(header, body))


def test_unknown_format_version(sf, good):
    header, body = splitHeader(good)
    header['__metadata__']['format_version'] = '2'
    with pytest.raises(openmm.OpenMMException, match='format version 2.*up to 1'):
        load(sf, joinHeader(header, body))


def test_tensor_shapes_disagree_with_architecture(sf, good):
    def dropRow(tensors):
        tensors['layers.0.net.0.weight'] = tensors['layers.0.net.0.weight'][:-1].copy()
    with pytest.raises(openmm.OpenMMException, match=r"tensor 'layers\.0\.net\.0\.weight' has shape \[7, 8\], the architecture needs \[8, 8\]"):
        load(sf, editTensors(good, dropRow))

    def moreComponents(config):
        config['layers'][0]['n_components'] += 1
    with pytest.raises(openmm.OpenMMException, match=r"tensor 'layers\.0\.net\.1\.(weight|bias)' has shape"):
        load(sf, editTensors(good, lambda t: None, moreComponents))

    def extra(tensors):
        tensors['unexpected'] = np.zeros(3)
    with pytest.raises(openmm.OpenMMException, match="tensor 'unexpected' is not part of the architecture"):
        load(sf, editTensors(good, extra))


def test_nan_in_weights(sf, good):
    def poison(tensors):
        tensors['layers.1.net.1.bias'][2] = np.nan
    with pytest.raises(openmm.OpenMMException, match=r"tensor 'layers\.1\.net\.1\.bias' holds a non-finite value"):
        load(sf, editTensors(good, poison))


def test_particle_count_mismatch(sf, fixtures, makeContext):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    with pytest.raises(openmm.OpenMMException, match='exactly 6 particles.*5 were given'):
        force.setParticles([0, 1, 2, 3, 4])
    with pytest.raises(openmm.OpenMMException, match='particle 2 appears twice'):
        force.setParticles([0, 1, 2, 3, 2, 5])
    with pytest.raises(openmm.OpenMMException, match='the model has 6 atoms but the System has 7 particles'):
        makeContext(force, 7)
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    force.setParticles([0, 1, 2, 3, 4, 9])
    with pytest.raises(openmm.OpenMMException, match='particle index 9 .* out of range'):
        makeContext(force, 6)


def test_nan_positions(sf, fixtures, makeContext, evaluate):
    ref = fixtures['tiny']
    context = makeContext(sf.SmoothFlowForce(ref['path']), 6)
    x = np.array(ref['positions'][0])
    x[3, 0] = np.nan
    with pytest.raises(openmm.OpenMMException, match=r'evaluation failed.*model atom 3 is not finite.*\[System particle 3\]'):
        evaluate(context, x)


def test_outside_the_support(sf, fixtures, makeContext, evaluate):
    ref = fixtures['tiny']
    context = makeContext(sf.SmoothFlowForce(ref['path']), 6)
    with pytest.raises(openmm.OpenMMException, match=r"evaluation failed: molecule 0: bond .* outside the flow's support.*\[System particles \d+, \d+\]"):
        evaluate(context, 3.0 * np.array(ref['positions'][0]))


# ------------------------------------------------------------ virtual sites, every mapping path
def _tinySystem(numParticles, virtualSite):
    """A System of numParticles particles, particle virtualSite the midpoint of the next two."""
    system = openmm.System()
    for _ in range(numParticles):
        system.addParticle(1.0)
    a, b = (virtualSite + 1) % numParticles, (virtualSite + 2) % numParticles
    system.setParticleMass(virtualSite, 0.0)
    system.setVirtualSite(virtualSite, openmm.TwoParticleAverageSite(a, b, 0.5, 0.5))
    return system


def _contextFor(system, force):
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))


def test_a_virtual_site_is_refused_under_the_default_mapping(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    with pytest.raises(openmm.OpenMMException,
                       match=r'particle 2 \(model atom 2 under the default mapping.*\) is a virtual site'):
        _contextFor(_tinySystem(6, 2), force)
    # the same System without the virtual site is accepted: the refusal is for the site
    system = openmm.System()
    for _ in range(6):
        system.addParticle(1.0)
    _contextFor(system, sf.SmoothFlowForce(fixtures['tiny']['path']))


def test_a_virtual_site_is_refused_under_setParticles_and_addMolecule(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    force.setParticles([5, 4, 3, 2, 1, 0])
    with pytest.raises(openmm.OpenMMException,
                       match=r'particle 4 \(model atom 1 of molecule 0\) is a virtual site'):
        _contextFor(_tinySystem(6, 4), force)
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    force.addMolecule([0, 1, 2, 3, 4, 5])
    force.addMolecule([6, 7, 8, 9, 10, 11])
    with pytest.raises(openmm.OpenMMException,
                       match=r'particle 9 \(model atom 3 of molecule 1\) is a virtual site'):
        _contextFor(_tinySystem(12, 9), force)


def _tinyTopology():
    """The Topology of the 'tiny' fixture model's atom names, and a water after it."""
    topology = openmm.app.Topology()
    chain = topology.addChain()
    residues = [topology.addResidue('ACE', chain), topology.addResidue('NME', chain)]
    for name, r in (('C1', 0), ('O1', 0), ('CH3', 0), ('N', 1), ('H', 1), ('C', 1)):
        topology.addAtom(name, openmm.app.element.Element.getBySymbol(name[0]), residues[r])
    water = topology.addResidue('HOH', topology.addChain())
    for name in ('O', 'H1', 'H2'):
        topology.addAtom(name, openmm.app.element.Element.getBySymbol(name[0]), water)
    return topology


def test_a_virtual_site_is_refused_by_addSmoothFlowForce(sf, fixtures):
    system = _tinySystem(9, 4)
    with pytest.raises(ValueError, match=r"particle 4 \(atom 'H' of residue NME .*model atom 4 'H'.*\) is a "
                                         r"virtual site"):
        sf.addSmoothFlowForce(system, _tinyTopology(), fixtures['tiny']['path'], atoms=range(6))
    assert system.getNumForces() == 0      # refused before the System was changed
    # a virtual site outside the model's atoms is none of its business
    other = _tinySystem(9, 7)      # kept alive: it owns the force
    force = sf.addSmoothFlowForce(other, _tinyTopology(), fixtures['tiny']['path'], atoms=range(6))
    assert force.getMoleculeParticles(0) == (0, 1, 2, 3, 4, 5)


def test_a_virtual_site_is_refused_by_the_openmm_ml_potential(sf, fixtures):
    openmmml = pytest.importorskip('openmmml')
    from openmmml import MLPotential
    if 'smoothflow' not in MLPotential._implFactories:
        from openmmsmoothflow.mlpotential import SmoothFlowPotentialImplFactory
        MLPotential.registerImplFactory('smoothflow', SmoothFlowPotentialImplFactory())
    potential = MLPotential('smoothflow', modelPath=fixtures['tiny']['path'])
    mmSystem = _tinySystem(9, 1)
    with pytest.raises(ValueError, match=r"particle 1 \(atom 'O1' of residue ACE.*\) is a virtual site"):
        potential.createMixedSystem(_tinyTopology(), mmSystem, list(range(6)))


@pytest.mark.parametrize('kind', ['directory', '/dev/zero', 'fifo'])
def test_only_a_regular_file_is_read(sf, kind, tmp_path):
    """/dev/zero once read until memory ran out; a FIFO without a writer blocked the open."""
    import os
    if kind == 'directory':
        path = str(tmp_path)
    elif kind == '/dev/zero':
        path = '/dev/zero'
        if not os.path.exists(path):
            pytest.skip('no /dev/zero')
    else:
        path = str(tmp_path / 'fifo')
        os.mkfifo(path)
    with pytest.raises(openmm.OpenMMException, match=f"model file '{path}' is not a regular file"):
        sf.SmoothFlowForce(path)
