"""One contract for the model file's configuration.

pytorch/smoothflow_torch/model_config.schema.json (with the rules its description lists) says
what a valid ``config`` is.  Every case of tests/data/config_corpus/ (written by
tests/data/make_config_corpus.py) is made into a complete model file and loaded by the PyTorch
reader, by the C core, and checked by jsonschema alone; all must give the verdict the case
records.  Where both readers accept, they must also read the same model: the same energies and
forces, the same support policy, the config handed back unchanged.
"""
import glob
import importlib.util
import json
import math
import os
import re
import zlib

import jsonschema
import numpy as np
import pytest
import torch

from smoothflow_core import CoreError, CoreModel
from smoothflow_torch import ModelFormatError, SmoothConstants, load_model_bytes, model_to_bytes, read_model_bytes
from smoothflow_torch.export import CONFIG_SCHEMA, FORMAT_VERSION, expected_tensor_shapes, validate_config
from smoothflow_torch.testing import random_flow, random_positions, unchecked_model_bytes

torch.set_num_threads(1)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(REPO, "tests", "data", "config_corpus")
CASES = {}
for _path in sorted(glob.glob(os.path.join(CORPUS, "*.json"))):
    with open(_path, encoding="utf-8") as _f:
        CASES[os.path.basename(_path)[:-5]] = json.load(_f)
VALIDATOR = jsonschema.Draft202012Validator(CONFIG_SCHEMA)
R = 0.00831446261815324


def _text(case) -> str:
    return case["config_text"] if "config_text" in case else json.dumps(case["config"])


def _tensors(config, seed):
    """Random weights of the shapes a valid config implies; bond bounds 0.1 nm wide."""
    rng = np.random.default_rng(seed)
    tensors = {k: 0.3 * rng.standard_normal(s) for k, s in expected_tensor_shapes(config).items()}
    n = config["n_atoms"]
    tensors["bond_lo"] = 0.1 + 0.01 * np.arange(n - 1)
    tensors["bond_hi"] = tensors["bond_lo"] + 0.1
    return tensors


def _model_file(name) -> bytes:
    """The case's config with tensors: its own where valid, otherwise those of the valid case it
    names (both readers judge the config before the tensors)."""
    case = CASES[name]
    shapes_from = case if case["valid"] else CASES[case["tensors_from"]]
    config = validate_config(json.loads(_text(shapes_from)))
    return unchecked_model_bytes({}, _tensors(config, zlib.crc32(name.encode())), {"config": _text(case)})


def _python(data):
    try:
        return load_model_bytes(data), ""
    except ModelFormatError as e:
        return None, str(e)


def _core(data):
    try:
        return CoreModel.from_bytes(data, max_batch=2), ""
    except CoreError as e:
        return None, str(e)


def _schema(case):
    """The schema's verdict on the parsed object; None where Python's json cannot parse the text."""
    try:
        obj = json.loads(_text(case))
    except ValueError:
        return None
    return VALIDATOR.is_valid(obj)


def _stretched(flow, x):
    """x with the bond of Z-matrix row 1 four times as long: outside the support."""
    x = x.clone()
    a, j = int(flow.zmatrix[1][0]), int(flow.zmatrix[1][1])
    x[:, a] = x[:, j] + 4.0 * (x[:, a] - x[:, j])
    return x


@pytest.mark.parametrize("name", list(CASES))
def test_both_readers_and_the_schema_give_the_recorded_verdict(name):
    case = CASES[name]
    data = _model_file(name)
    flow, py_message = _python(data)
    core, c_message = _core(data)
    assert (flow is not None) == case["valid"], f"PyTorch reader: {py_message or 'accepted'}"
    assert (core is not None) == case["valid"], f"C core: {c_message or 'accepted'}"
    assert _schema(case) == case["schema_valid"]
    if not case["valid"]:
        # refused for the config, not for tensors a missing rule would leave unmatched
        assert py_message.startswith(("config", "metadata config")), py_message
        assert c_message.startswith(("model config:", "model file: metadata 'config'")), c_message
        return
    # Both accepted: the same model, read the same way.
    assert core.config_json == _text(case)
    assert (core.n_atoms, core.n_dims) == (flow.n_atoms, 3 * flow.n_atoms - 6)
    assert core.temperature == flow.temperature
    assert core.kT == pytest.approx(R * flow.temperature, rel=1e-15)
    x = random_positions(flow, 2, seed=1)
    e_torch, f_torch = flow.energy_and_forces(x)
    e_core, f_core = core.evaluate(x.numpy())
    e_torch, f_torch = e_torch.detach().numpy(), f_torch.detach().numpy()
    np.testing.assert_allclose(e_core, e_torch, rtol=1e-10, atol=1e-300)
    assert np.abs(f_core - f_torch).max() <= 1e-8 * np.abs(f_torch).max()
    # The support policy as the readers understood it: an error in both, or the same wall.
    far = _stretched(flow, x)
    if flow.support_policy == "error":
        with pytest.raises(CoreError, match="support"):
            core.evaluate(far.numpy())
        with pytest.raises(ValueError):
            flow.energy(far)
    else:
        e_wall = core.evaluate(far.numpy())[0]
        assert np.isfinite(e_wall).all()
        np.testing.assert_allclose(e_wall, flow.energy(far).detach().numpy(), rtol=1e-10)
    core.close()


def test_validated_configs_are_canonical():
    """validate_config fills in defaults: its output satisfies the schema and validates to itself."""
    for name, case in CASES.items():
        if case["valid"]:
            out = validate_config(json.loads(_text(case)))
            assert VALIDATOR.is_valid(out), name
            assert validate_config(out) == out, name
            assert set(out["support"]) == {"policy", "margin", "wall_constant"}


def test_the_schema_is_a_draft_2020_12_schema_of_this_format_version():
    jsonschema.Draft202012Validator.check_schema(CONFIG_SCHEMA)
    assert CONFIG_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert CONFIG_SCHEMA["$id"].endswith(f"format-version-{FORMAT_VERSION}")
    assert f"format version {FORMAT_VERSION}" in CONFIG_SCHEMA["title"]


def _schema_paths():
    """Every property the schema names, as the corpus spells rules: 'smooth.beta',
    'layers[].hidden', 'atoms[].additionalProperties'."""
    paths = set()

    def walk(node, prefix):
        if "$ref" in node:
            node = CONFIG_SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
        for branch in node.get("oneOf", []):
            walk(branch, prefix)
        if isinstance(node.get("items"), dict):
            walk(node["items"], prefix + "[]")
        if node.get("additionalProperties") is False:
            paths.add(f"{prefix}.additionalProperties" if prefix else "additionalProperties")
        for key, sub in node.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            walk(sub, path)

    walk(CONFIG_SCHEMA, "")
    return paths


def test_the_corpus_covers_every_rule():
    """Each property of the schema and each rule of its description is broken by some case."""
    broken = {c["rule"] for c in CASES.values() if not c["valid"]}
    listed = set(re.findall(r"\[[a-z-]+\]", CONFIG_SCHEMA["description"]))
    assert len(listed) >= 10
    assert listed - broken == set()
    assert _schema_paths() - broken == set()
    for case in CASES.values():        # cases that break only a listed rule satisfy the schema
        if not case["valid"] and case["rule"] in listed and "config" in case:
            assert case["schema_valid"] is True, case["name"]


def test_the_corpus_is_what_its_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "make_config_corpus", os.path.join(REPO, "tests", "data", "make_config_corpus.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert sorted(c["name"] for c in generator.cases) == sorted(CASES)
    for c in generator.cases:
        with open(os.path.join(CORPUS, c["name"] + ".json"), encoding="utf-8") as f:
            assert f.read() == generator.render(c), c["name"]


SHIPPED = sorted(glob.glob(os.path.join(REPO, "models", "**", "*.safetensors"), recursive=True)
                 + glob.glob(os.path.join(REPO, "tests", "data", "**", "*.safetensors"), recursive=True))


def test_there_are_shipped_models():
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_every_shipped_model_satisfies_the_contract(path):
    with open(path, "rb") as f:
        data = f.read()
    config, meta, _ = read_model_bytes(data)
    assert VALIDATOR.is_valid(json.loads(meta["config"]))
    core = CoreModel.from_bytes(data)
    assert core.n_atoms == config["n_atoms"]
    assert json.loads(core.config_json) == json.loads(meta["config"])
    core.close()


def test_the_exporter_writes_only_what_the_schema_allows():
    """beta is 1..8 in the format; the model class refuses 9 when it is built, and the
    exporter refuses a flow whose constants were changed to 9 after that."""
    with pytest.raises(ValueError, match="beta must be an integer in 1..8"):
        SmoothConstants(0.01, 0.1, 0.99, 9)
    flow = random_flow(n_atoms=5, n_layers=2, seed=3)
    flow.smooth = SmoothConstants(0.01, 0.1, 0.99, 8)
    object.__setattr__(flow.smooth, "beta", 9)
    with pytest.raises(ModelFormatError, match="config.smooth.beta"):
        model_to_bytes(flow)
    flow.smooth = SmoothConstants(0.01, 0.1, 0.99, 8)
    data = model_to_bytes(flow)
    assert json.loads(CoreModel.from_bytes(data).config_json)["smooth"]["beta"] == 8
    assert math.isclose(CoreModel.from_bytes(data).kT, R * flow.temperature, rel_tol=1e-15)


def _valid_model_file(config_text=None, rename=None):
    """The first valid corpus case as a model file, with its config text replaced or a
    tensor renamed."""
    name = next(n for n, c in CASES.items() if c["valid"])
    config = validate_config(json.loads(_text(CASES[name])))
    tensors = _tensors(config, 0)
    if rename:
        tensors[rename[1]] = tensors.pop(rename[0])
    return unchecked_model_bytes({}, tensors, {"config": config_text or json.dumps(config)})


@pytest.mark.parametrize("where", ["after the config object", "inside an atom name", "in a tensor name"])
def test_a_nul_in_any_header_string_is_refused_by_both(where):
    """C strings end at NUL (\\u0000), so text after one would be read by one reader and not by
    the other: the format refuses NUL anywhere in the header."""
    text = json.dumps(validate_config(json.loads(_text(next(c for c in CASES.values() if c["valid"])))))
    if where == "after the config object":
        data = _valid_model_file(config_text=text + "\x00 and more")
    elif where == "inside an atom name":
        config = json.loads(text)
        config["atoms"] = [{"name": f"A{i}\x00B", "residue": "MOL", "residue_index": 0, "element": "C"}
                           for i in range(config["n_atoms"])]
        data = _valid_model_file(config_text=json.dumps(config))
    else:
        data = _valid_model_file(rename=("bond_lo", "bond_lo\x00x"))
    assert b"\\u0000" in data[:8 + int.from_bytes(data[:8], "little")]
    flow, py_message = _python(data)
    core, c_message = _core(data)
    assert flow is None and "NUL" in py_message
    assert core is None and "NUL" in c_message


def test_both_readers_refuse_a_negative_bond_bound():
    name = next(n for n, c in CASES.items() if c["valid"])
    config = validate_config(json.loads(_text(CASES[name])))
    tensors = _tensors(config, 0)
    tensors["bond_lo"][0] = -0.01
    data = unchecked_model_bytes({}, tensors, {"config": json.dumps(config)})
    flow, py_message = _python(data)
    core, c_message = _core(data)
    assert flow is None and "bond_lo[0]" in py_message
    assert core is None and "bond 0" in c_message
