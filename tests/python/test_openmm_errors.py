"""Every kind of bad input raises openmm.OpenMMException naming the problem.

Bad model files are made by editing a good exported file: its header JSON
directly, or its tensors through the safetensors library."""
import json
import struct

import numpy as np
import openmm
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
    with pytest.raises(openmm.OpenMMException, match='cannot load model bytes'):
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
