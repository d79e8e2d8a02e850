"""The free-form kind of model file (docs/model-format.md section 9): an EGNN encoder exported
from PyTorch, loaded by the C core through its public API, and its energy

    U(x) = -kT [log N(f(x); 0, I_D) + log |det J_V(x)|] + U0

and exact forces compared with PyTorch (fff.exact_log_det, autograd in float64); the two
readers' verdicts on the corpus's valid free-form cases and on bad tensors; the functions of
the internal-coordinate kind refusing the new one; the writer and loader's round trip.
"""
import glob
import importlib.util
import json
import math
import os
import zlib

import jsonschema
import numpy as np
import pytest
import torch

from smoothflow_core import CoreError, CoreModel, ffi, load_library
from smoothflow_torch import ModelFormatError, load_model_bytes, read_model_bytes
from smoothflow_torch.export import CONFIG_SCHEMA, expected_tensor_shapes, free_form_costs, validate_config
from smoothflow_torch.particles import fff
from smoothflow_torch.particles.egnn import EGNN
from smoothflow_torch.particles.export import (export_free_form, free_form_to_bytes, load_free_form,
                                               load_free_form_bytes)
from smoothflow_torch.testing import unchecked_model_bytes

torch.set_num_threads(1)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(REPO, "tests", "data", "config_corpus", "free_form")
CASES = {}
for _path in sorted(glob.glob(os.path.join(CORPUS, "*.json"))):
    with open(_path, encoding="utf-8") as _f:
        CASES[os.path.basename(_path)[:-5]] = json.load(_f)
R = 0.00831446261815324
SF_ERR_ARG, SF_ERR_MODEL, SF_ERR_VALUE, SF_ERR_NUMERIC = 1, 6, 7, 11


def _encoder(n, d, hidden=8, layers=3, scale=1.3, gain=0.5, seed=0):
    """A random EGNN far from the identity (coord_gain 0.5), float64; h0 random too (it is
    zero at initialisation, which would leave the first messages' h-terms untested)."""
    torch.manual_seed(seed)
    enc = EGNN(n, d, hidden=hidden, layers=layers, distance_scale=scale, coord_gain=gain).double()
    with torch.no_grad():
        enc.h0.normal_(0, 0.5)
    return enc


def _positions(n, d, batch, seed, spread=1.0):
    """(batch, n, 3) positions in nm: random in the first d components, and random (to be
    ignored by a 2D model) in the others."""
    rng = np.random.default_rng(seed)
    return spread * rng.standard_normal((batch, n, 3))


def _oracle(encoder, x, kT, offset):
    """-kT (log N(f(x)) + log |det J_V(x)|) + U0, its forces by autograd, the sign of det J_V."""
    x = torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(True)
    sign, logdet = fff.exact_log_det(encoder, x)
    logp = fff.gaussian_log_prob(encoder(x)) + logdet
    energy = -kT * logp + offset
    (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach().numpy(), -grad.numpy(), sign.detach().numpy()


@pytest.mark.parametrize("n, d, hidden, layers", [(4, 2, 8, 3), (13, 3, 6, 2), (2, 3, 3, 1), (5, 2, 5, 4)])
def test_energy_and_forces_match_pytorch(n, d, hidden, layers):
    temperature, offset = 120.27, -3.25
    enc = _encoder(n, d, hidden, layers, seed=n * 10 + d)
    core = CoreModel.from_bytes(free_form_to_bytes(enc, temperature, energy_offset=offset), max_batch=6)
    assert (core.flow_kind, core.spatial_dim, core.n_atoms, core.n_dims) == ("free_form", d, n, (n - 1) * d)
    assert core.kT == pytest.approx(R * temperature, rel=1e-15)
    pos = _positions(n, d, 6, seed=n)
    e_core, f_core = core.evaluate(pos)
    e_ref, f_ref, sign = _oracle(enc, pos[..., :d], core.kT, offset)
    np.testing.assert_allclose(e_core, e_ref, rtol=1e-10, atol=0)
    assert np.abs(f_core[..., :d] - f_ref).max() <= 1e-10 * np.abs(f_ref).max()
    assert np.abs(f_ref).max() > 1e-3                      # a force worth comparing
    if d == 2:
        assert np.all(f_core[..., 2] == 0.0)                 # the third component gets no force
        moved = pos.copy()
        moved[..., 2] += 7.5                                  # ... and is not read
        e_moved, f_moved = core.evaluate(moved)
        np.testing.assert_array_equal(e_moved, e_core)
        np.testing.assert_array_equal(f_moved, f_core)
    # energy only: the same energies
    e_only, f_none = core.evaluate(pos, forces=False)
    assert f_none is None
    np.testing.assert_array_equal(e_only, e_core)
    core.close()


def test_forces_are_the_energy_gradient():
    """Against central differences of the core's own energy (no PyTorch in the loop)."""
    enc = _encoder(5, 3, 6, 2, seed=3)
    core = CoreModel.from_bytes(free_form_to_bytes(enc, 300.0))
    x = _positions(5, 3, 1, seed=8)[0]
    _, f = core.evaluate(x)
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (4, 2), (3, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[i, k] += h
        xm[i, k] -= h
        fd = -(core.evaluate(xp)[0] - core.evaluate(xm)[0]) / (2 * h)
        assert abs(fd - f[i, k]) <= 1e-6 * max(1.0, abs(f[i, k]))
    core.close()


def test_a_folding_configuration_has_the_energy_of_the_absolute_determinant():
    """Where det J_V < 0 (the encoder folds) the energy is that of |det J_V|, with exact forces."""
    enc = _encoder(4, 2, 8, 2, gain=2.0, seed=3)            # folds on 17 of these 64
    core = CoreModel.from_bytes(free_form_to_bytes(enc, 120.27), max_batch=64)
    pos = _positions(4, 2, 64, seed=5, spread=0.7)
    e_core, f_core = core.evaluate(pos)
    e_ref, f_ref, sign = _oracle(enc, pos[..., :2], core.kT, 0.0)
    assert 0 < (sign < 0).sum() < 64, "the network should fold on some of the configurations"
    np.testing.assert_allclose(e_core, e_ref, rtol=1e-10)
    assert np.abs(f_core[..., :2] - f_ref).max() <= 1e-9 * np.abs(f_ref).max()
    core.close()


def test_a_singular_jacobian_is_a_numeric_error():
    """A network whose coordinate update maps every configuration to its centre of mass:
    f = 0, det J_V = 0, log |det J_V| = -inf: refused, naming the configuration."""
    enc = _encoder(4, 2, 4, 1, seed=2)
    with torch.no_grad():
        for p in enc.layers[0].coord.parameters():
            p.zero_()
        enc.layers[0].coord[2].bias.fill_(-(4 - 1) / 4)       # x_i + (1/3) sum_j (x_i - x_j) c = mean
    x = _positions(4, 2, 3, seed=1)
    sign, _ = fff.exact_log_det(enc, torch.as_tensor(x[..., :2]))
    assert np.all(sign.detach().numpy() == 0)
    core = CoreModel.from_bytes(free_form_to_bytes(enc, 120.27), max_batch=3)
    with pytest.raises(CoreError) as e:
        core.evaluate(x)
    assert e.value.code == SF_ERR_NUMERIC and e.value.molecule == 0, str(e.value)
    core.close()


def test_a_box_is_refused():
    enc = _encoder(4, 2, seed=1)
    core = CoreModel.from_bytes(free_form_to_bytes(enc, 120.27))
    with pytest.raises(CoreError, match="not periodic") as e:
        core.evaluate(_positions(4, 2, 1, seed=0)[0], box=np.diag([5.0, 5.0, 5.0]))
    assert e.value.code == SF_ERR_ARG
    core.close()


def test_non_finite_positions_are_refused():
    enc = _encoder(4, 2, seed=1)
    core = CoreModel.from_bytes(free_form_to_bytes(enc, 120.27), max_batch=2)
    pos = _positions(4, 2, 2, seed=0)
    pos[1, 3, 2] = np.nan                      # even the component a 2D model does not read
    with pytest.raises(CoreError, match="molecule 1: position of model atom 3 is not finite"):
        core.evaluate(pos)
    core.close()


def test_functions_of_the_internal_kind_refuse_a_free_form_model():
    lib = load_library()
    enc = _encoder(4, 3, seed=4)
    core = CoreModel.from_bytes(free_form_to_bytes(enc, 120.27))
    with pytest.raises(CoreError, match="no internal coordinates") as e:
        core.internal_coordinates(np.zeros((4, 3)))
    assert e.value.code == SF_ERR_ARG
    with pytest.raises(CoreError, match="free-form model") as e:
        core.log_density(np.full(core.n_dims, 0.5))
    assert e.value.code == SF_ERR_ARG
    with pytest.raises(CoreError, match="float64 only") as e:
        core.weight_precision = "float32"
    assert core.weight_precision == "float64"
    core.weight_precision = "float64"                     # a no-op, allowed
    h = core._handle
    assert lib.sf_model_num_layers(h) == 0
    description = ffi.new("sf_model_description *")
    layer = ffi.new("sf_layer_description *")
    assert lib.sf_model_describe(h, description) == SF_ERR_ARG
    assert lib.sf_model_describe_layer(h, 0, layer) == SF_ERR_ARG
    lo, hi = ffi.new("double *"), ffi.new("double *")
    assert lib.sf_model_bond_bounds(h, 0, lo, hi) == SF_ERR_ARG
    assert lib.sf_model_prior(h, 0, lo, hi) == SF_ERR_ARG
    row = ffi.new("int[4]")
    lib.sf_model_zmatrix_row(h, 0, row)
    assert list(row) == [-1, -1, -1, -1]
    assert lib.sf_model_weight_precision(h) == 0
    core.close()


def test_round_trip_export_then_load(tmp_path):
    enc = _encoder(13, 3, hidden=7, layers=3, scale=1.1, seed=6)
    atoms = [{"name": f"Ar{i}", "residue": "LJ", "residue_index": 0, "element": "Ar"} for i in range(13)]
    path = tmp_path / "lj13.safetensors"
    export_free_form(enc, path, temperature=120.27, atoms=atoms, energy_offset=1.5,
                     extra_metadata={"training": "test"})
    back = load_free_form(path)
    a, b = enc.state_dict(), back.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert back.inv_scale2 == enc.inv_scale2                # the stored s gives 1 / s^2 to the bit
    assert (back.n_particles, back.spatial_dim, len(back.layers)) == (13, 3, 3)
    x = torch.as_tensor(_positions(13, 3, 2, seed=2))
    assert torch.equal(back(x), enc(x))
    config, meta, _ = read_model_bytes(path.read_bytes())
    assert config["atoms"] == atoms and config["energy_offset"] == 1.5 and meta["training"] == "test"
    # kind first: the first unknown key a reader that predates the kind meets (docs 9.1)
    assert meta["config"].startswith('{"kind": "free_form", ')
    core = CoreModel.from_file(path)
    assert sorted(json.loads(core.config_json)) == sorted(config)
    for i in (0, 12):
        assert ffi.string(load_library().sf_model_atom_name(core._handle, i)).decode() == f"Ar{i}"
    core.close()


def test_the_two_kinds_do_not_load_as_each_other():
    from smoothflow_torch.testing import random_flow
    from smoothflow_torch import model_to_bytes
    enc = _encoder(4, 2, seed=1)
    with pytest.raises(ModelFormatError, match="load_free_form"):
        load_model_bytes(free_form_to_bytes(enc, 120.27))
    flow = random_flow(5, n_layers=1, seed=0)
    with pytest.raises(ModelFormatError, match="internal coordinates"):
        load_free_form_bytes(model_to_bytes(flow))


# ------------------------------------------------------------- both readers on the corpus
def _corpus_file(name, seed=None):
    case = CASES[name]
    text = case["config_text"] if "config_text" in case else json.dumps(case["config"])
    config = validate_config(json.loads(text))
    rng = np.random.default_rng(zlib.crc32(name.encode()) if seed is None else seed)
    tensors = {k: 0.3 * rng.standard_normal(s) for k, s in expected_tensor_shapes(config).items()}
    return text, config, unchecked_model_bytes({}, tensors, {"config": text}), tensors


def _core_load(data):
    """sf_model_load_bytes without a workspace (the largest corpus case needs 512 MiB of one):
    (model handle or None, message)."""
    lib = load_library()
    err, h = ffi.new("sf_error *"), ffi.new("sf_model **")
    rc = lib.sf_model_load_bytes(ffi.from_buffer(data), len(data), h, err)
    return (h[0] if rc == 0 else None), ffi.string(err.message).decode()


@pytest.mark.parametrize("name", list(CASES))
def test_both_readers_accept_the_valid_free_form_cases(name):
    lib = load_library()
    text, config, data, _ = _corpus_file(name)
    assert jsonschema.Draft202012Validator(CONFIG_SCHEMA).is_valid(json.loads(text))
    encoder = load_free_form_bytes(data)
    handle, message = _core_load(data)
    assert handle is not None, message
    try:
        assert ffi.string(lib.sf_model_config_json(handle)).decode() == text
        assert lib.sf_model_flow_kind(handle) == lib.SF_FLOW_FREE_FORM
        n, d = config["n_atoms"], config["network"]["spatial_dim"]
        assert (lib.sf_model_num_atoms(handle), lib.sf_model_spatial_dim(handle)) == (n, d)
        assert lib.sf_model_energy_offset(handle) == config["energy_offset"]
        # the workspace measure bounds the core's workspace for one configuration
        workspace, _ = free_form_costs(config)
        assert lib.sf_workspace_size(handle, 1) <= 8 * (workspace + 2 * n * d) + 1024
        assert lib.sf_workspace_size(handle, 7) == lib.sf_workspace_size(handle, 1)
    finally:
        lib.sf_model_free(handle)
    if config["n_atoms"] <= 13:        # evaluate the small ones against PyTorch
        core = CoreModel.from_bytes(data, max_batch=2)
        pos = _positions(n, d, 2, seed=4, spread=max(1.0, config["network"]["distance_scale"] ** 0.5))
        e_core, f_core = core.evaluate(pos)
        e_ref, f_ref, _ = _oracle(encoder, pos[..., :d], core.kT, config["energy_offset"])
        np.testing.assert_allclose(e_core, e_ref, rtol=1e-10)
        assert np.abs(f_core[..., :d] - f_ref).max() <= 1e-9 * max(np.abs(f_ref).max(), 1e-300)
        core.close()


def test_the_free_form_corpus_is_what_its_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "make_config_corpus", os.path.join(REPO, "tests", "data", "make_config_corpus.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert sorted(c["name"] for c in generator.free_form_valid) == sorted(CASES)
    for c in generator.free_form_valid:
        with open(os.path.join(CORPUS, c["name"] + ".json"), encoding="utf-8") as f:
            assert f.read() == generator.render(c), c["name"]


def test_the_workspace_measure_bounds_the_core_for_many_shapes():
    lib = load_library()
    for n, d, hidden, layers in [(2, 2, 1, 1), (2, 3, 9, 5), (4, 2, 32, 3), (13, 3, 32, 3), (22, 2, 3, 7)]:
        enc = _encoder(n, d, hidden, layers, seed=n + hidden)
        data = free_form_to_bytes(enc, 300.0)
        config, _, _ = read_model_bytes(data)
        handle, message = _core_load(data)
        assert handle is not None, message
        workspace, _ = free_form_costs(config)
        assert lib.sf_workspace_size(handle, 1) <= 8 * (workspace + 2 * n * d) + 1024, (n, d, hidden, layers)
        lib.sf_model_free(handle)


# ------------------------------------------------------------- both readers on bad tensors
def _both_refuse(data, py_needle, c_needle):
    with pytest.raises(ModelFormatError) as e:
        read_model_bytes(data)
    assert py_needle in str(e.value), str(e.value)
    handle, message = _core_load(data)
    assert handle is None, "C core accepted"
    assert c_needle in message, message


def _both_accept(data):
    read_model_bytes(data)
    handle, message = _core_load(data)
    assert handle is not None, message
    load_library().sf_model_free(handle)


def test_both_readers_refuse_bad_tensors():
    text, config, _, tensors = _corpus_file("valid-free-form-dw4", seed=1)
    meta = {"config": text}

    def file(t):
        return unchecked_model_bytes({}, t, meta)

    _both_accept(file(tensors))
    t = dict(tensors)
    del t["layers.0.node.2.bias"]
    _both_refuse(file(t), "missing tensors ['layers.0.node.2.bias']", "tensor 'layers.0.node.2.bias' is missing")
    t = dict(tensors, **{"layers.1.node.0.weight": np.zeros((4, 8)), "layers.1.node.0.bias": np.zeros(4)})
    _both_refuse(file(t), "unknown tensors", "is not part of the free-form encoder")     # the last layer has none
    t = dict(tensors, bond_lo=np.zeros(3))
    _both_refuse(file(t), "unknown tensors ['bond_lo']", "tensor 'bond_lo' is not part of the free-form encoder")
    t = dict(tensors, h0=np.zeros((4, 1)))
    _both_refuse(file(t), "tensor h0 has shape [4, 1], the config implies [4]", "tensor 'h0' has shape [4, 1]")
    t = dict(tensors, **{"layers.0.edge.0.weight": np.zeros((4, 8))})       # 2H, not 2H + 1
    _both_refuse(file(t), "layers.0.edge.0.weight has shape [4, 8]", "the architecture needs [4, 9]")
    for bad in (np.nan, np.inf):
        w = tensors["layers.1.coord.2.weight"].copy()
        w[0, 2] = bad
        _both_refuse(file(dict(tensors, **{"layers.1.coord.2.weight": w})), "non-finite", "non-finite")
    # each tensor's sum of |entries| at most 1e8, in storage order
    for value, accepted in ((0.99e8, True), (1.01e8, False)):
        w = tensors["layers.0.coord.0.weight"].copy()
        w[1, 1] = 0.0
        w[1, 1] = value - np.add.accumulate(np.abs(w.ravel()))[-1]
        data = file(dict(tensors, **{"layers.0.coord.0.weight": w}))
        if accepted:
            _both_accept(data)
        else:
            _both_refuse(data, "layers.0.coord.0.weight can overflow", "'layers.0.coord.0.weight' can overflow")
    _both_refuse(file(dict(tensors, h0=np.full(4, 3e7))), "h0 can overflow", "'h0' can overflow")


def test_the_messages_name_the_kind_and_the_limits():
    """Refusals that name the free-form kind's rules and numbers, in both readers."""
    base = json.loads(_corpus_file("valid-free-form-dw4")[0])
    tensors = _corpus_file("valid-free-form-dw4", seed=2)[3]
    for edit, py_needle, c_needle in (
            ({"kind": "flow"}, "config.kind 'flow' is unknown", "'kind' 'flow' is unknown to this reader"),
            ({"zmatrix": [[0, -1, -1, -1]]}, "a free-form model has no key 'zmatrix'",
             "the top level of a free-form model has the unknown key 'zmatrix'"),
            ({"network": dict(base["network"], kind="gcn")}, "network.kind", "network kind 'gcn' is unknown"),
            ({"latent": "normal"}, "config.latent", "'latent' 'normal' is unknown"),
            ({"n_atoms": 2000, "atoms": None, "network": dict(base["network"], hidden=1, layers=1)},
             "more than the limit of 67108864 doubles", "more than the limit of 67108864 doubles"),
            ({"n_atoms": 13, "atoms": None, "network": dict(base["network"], spatial_dim=3, hidden=4096)},
             "more than the limit of 1e+12", "more than the limit of 1e+12")):
        cfg = {k: v for k, v in dict(base, **edit).items() if v is not None}
        data = unchecked_model_bytes({}, tensors, {"config": json.dumps(cfg)})
        _both_refuse(data, py_needle, c_needle)
