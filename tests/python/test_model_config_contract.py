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
            # optional keys stay optional: absent edge forces mean 0, an absent angle_margin is margin
            kept = {"edge_force_lower", "edge_force_upper", "angle_margin"} & set(
                json.loads(_text(case)).get("support", {}))
            assert set(out["support"]) == {"policy", "margin", "wall_constant"} | kept, name


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


ALL_SHIPPED = sorted(glob.glob(os.path.join(REPO, "models", "**", "*.safetensors"), recursive=True)
                     + glob.glob(os.path.join(REPO, "tests", "data", "**", "*.safetensors"), recursive=True))
# a free-form decoder (sampling only) is a file of its own format, which the force refuses;
# test_free_form_sampling.py checks it against its encoder
DECODERS = [p for p in ALL_SHIPPED if p.endswith(".decoder.safetensors")]
SHIPPED = [p for p in ALL_SHIPPED if p not in DECODERS]


@pytest.mark.parametrize("path", DECODERS, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_decoders_are_decoders_of_a_shipped_encoder(path):
    """The name alone must not exempt a model from the contract: the file has to be a decoder
    whose recorded encoder sits beside it."""
    from smoothflow_torch.particles import sampling
    encoder = path[: -len(".decoder.safetensors")] + ".safetensors"
    sampling.load_decoder(path, encoder_file=encoder)
    with pytest.raises(ModelFormatError, match="smoothflow-free-form-decoder"):
        with open(path, "rb") as f:
            read_model_bytes(f.read())


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


# ------------------------------------------------------------ the container, strictly
def _split(data):
    """(header text without its padding, data buffer) of a model file."""
    n = int.from_bytes(data[:8], "little")
    return data[8:8 + n].decode("utf-8").rstrip(" "), data[8 + n:]


def _join(header, buffer):
    header = header.encode("utf-8") if isinstance(header, str) else header
    return len(header).to_bytes(8, "little") + header + buffer


def _both_refuse(data, py_needle, c_needle):
    flow, py_message = _python(data)
    core, c_message = _core(data)
    assert flow is None and py_needle in py_message, py_message or "PyTorch reader accepted"
    assert core is None and c_needle in c_message, c_message or "C core accepted"


def _both_accept(data):
    flow, py_message = _python(data)
    core, c_message = _core(data)
    assert flow is not None, py_message
    assert core is not None, c_message
    core.close()


def _edited_header(edit):
    """The first valid case's file with its header object edited by edit(header dict) and
    re-serialized as JSON (the data buffer unchanged)."""
    text, buffer = _split(_valid_model_file())
    header = json.loads(text)
    edit(header)
    return _join(json.dumps(header), buffer)


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


def test_space_padding_is_the_only_text_allowed_after_the_header():
    text, buffer = _split(_valid_model_file())
    _both_accept(_join(text + " " * 13, buffer))
    for tail, what in (("\n", "a newline"), ("\t ", "a tab"), (" x", "a letter"), ("{}", "a second object"),
                       ("\x00", "a NUL byte")):
        _both_refuse(_join(text + tail, buffer), "after its JSON object", "after its JSON object")
    _both_refuse(_join(" " + text, buffer), "first byte must be '{'", "first byte must be '{'")
    _both_refuse(_join("\ufeff" + text, buffer), "first byte must be '{'", "first byte must be '{'")


@pytest.mark.parametrize("literal", ["8.0", "8e0", "-0", "08", "true", "null", "NaN"])
def test_offsets_are_non_negative_integers_in_plain_digits(literal):
    text, buffer = _split(_valid_model_file())
    header = json.loads(text)
    name = _first_tensor(header)
    b, e = header[name]["data_offsets"]
    if b != 0:
        pytest.skip("the first tensor does not start at 0")
    marker = f'"data_offsets": [{b}, {e}]'
    text = json.dumps(header)
    assert marker in text
    edited = text.replace(marker, f'"data_offsets": [{literal}, {e}]')
    flow, py_message = _python(_join(edited, buffer))
    core, c_message = _core(_join(edited, buffer))
    assert flow is None and py_message.startswith(("header", "tensor")), py_message
    assert core is None and "header" in c_message, c_message


def test_a_fractional_shape_is_refused():
    text, buffer = _split(_valid_model_file())
    header = json.loads(text)
    name = _first_tensor(header)
    shape = header[name]["shape"]
    marker = f'"shape": {json.dumps(shape)}'
    edited = json.dumps(header).replace(marker, f'"shape": [{shape[0]}.0' + "".join(f", {s}" for s in shape[1:]) + "]")
    _both_refuse(_join(edited, buffer), "not a non-negative integer", "non-negative integers")


def test_a_tensor_entry_holds_exactly_three_keys():
    def extra(header):
        header[_first_tensor(header)]["alignment"] = 8
    _both_refuse(_edited_header(extra), "not exactly dtype, shape and data_offsets", "exactly dtype, shape and data_offsets")


def test_the_tensors_tile_the_data_buffer():
    text, buffer = _split(_valid_model_file())
    _both_refuse(_join(text, buffer + b"\x00" * 8), "after the last tensor", "after the last tensor")
    header = json.loads(text)
    # a gap: every tensor moved 8 bytes on, 8 bytes of zeros in front
    for k, v in header.items():
        if k != "__metadata__":
            v["data_offsets"] = [v["data_offsets"][0] + 8, v["data_offsets"][1] + 8]
    _both_refuse(_join(json.dumps(header), b"\x00" * 8 + buffer), "gap of 8 bytes", "gap of 8 bytes")
    header = json.loads(text)
    a, b = [k for k in header if k != "__metadata__"][:2]
    header[b]["data_offsets"] = header[a]["data_offsets"]
    _both_refuse(_join(json.dumps(header), buffer), "overlap", "overlap")


@pytest.mark.parametrize("where", ["__metadata__", "a metadata key", "a tensor entry's dtype"])
def test_a_repeated_header_key_is_refused(where):
    text, buffer = _split(_valid_model_file())
    header = json.loads(text)
    name = _first_tensor(header)
    if where == "__metadata__":
        # the second copy is what cJSON's search would not find: it leaked before
        edited = text[:-1] + ', "__metadata__": ' + json.dumps(header["__metadata__"]) + "}"
    elif where == "a metadata key":
        edited = text.replace('"__metadata__":{', '"__metadata__":{"format":"openmm-smoothflow",', 1)
    else:
        edited = text.replace(f'"{name}":{{', f'"{name}":{{"dtype":"F32",', 1)
    assert edited != text
    _both_refuse(_join(edited, buffer), "twice", "twice")


def test_every_metadata_value_is_a_string():
    def numeric(header):
        header["__metadata__"]["epochs"] = 3
    _both_refuse(_edited_header(numeric), "__metadata__ object of strings", "not a string")


def test_the_header_is_utf8_without_lone_surrogates():
    text, buffer = _split(_valid_model_file())
    raw = text.encode("utf-8")
    at = raw.index(b'"bond_lo"')
    for bad in (b'"bond_lo\xff"', b'"bond_lo\xed\xa0\x80"', b'"bond_lo\xc0\xaf"'):
        edited = raw[:at] + bad + raw[at + len(b'"bond_lo"'):]
        _both_refuse(_join(edited, buffer), "UTF-8", "UTF-8")
    edited = raw.replace(b'"bond_lo"', b'"bond_lo\\ud800"', 1)
    flow, py_message = _python(_join(edited, buffer))
    core, c_message = _core(_join(edited, buffer))
    assert flow is None and "surrogate" in py_message, py_message
    assert core is None and "header" in c_message, c_message


def test_the_header_limits_are_the_same_in_both_readers():
    # 100 MB exactly is the limit of the header length; above it both refuse before reading
    data = (100_000_001).to_bytes(8, "little") + b"{}"
    _both_refuse(data, "100 MB", "100 MB")


# ------------------------------------------------------------ limits
def _chain_config(n_layers, wide):
    """The model of the issue: one affine layer with a hidden layer of `wide` units that reads
    nothing (its first weight has no columns, so no bytes), then n_layers - 1 layers with no
    hidden layer: a small file whose workspace is n_layers times the wide layer's."""
    wide_layer = {"transform": "affine", "direction": "generative", "transformed": [0], "conditioning": [],
                  "hidden": [wide], "activation": "tanh"}
    thin = {"transform": "affine", "direction": "generative", "transformed": [1], "conditioning": [],
            "hidden": [], "activation": "tanh"}
    return {"n_atoms": 22, "temperature": 300.0,
            "zmatrix": [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1]] + [[a, a - 1, a - 2, a - 3] for a in range(3, 22)],
            "layers": [wide_layer] + [thin] * (n_layers - 1)}


def test_a_small_file_with_a_huge_workspace_is_refused_by_both():
    """The issue's file: 1.6 MB that passed every check and made each Context allocate 0.95 GB."""
    config = _chain_config(1000, 60000)
    rng = np.random.default_rng(4)
    tensors = {k: 0.01 * rng.standard_normal(s) for k, s in _shapes_unchecked(config).items()}
    tensors["bond_lo"] = np.full(21, 0.1)
    tensors["bond_hi"] = np.full(21, 0.2)
    data = unchecked_model_bytes(config, tensors)
    assert 1.4e6 < len(data) < 2e6
    # 1000 layers x 2 x 60000 activations (and the states): ~0.96 GB per molecule
    _both_refuse(data, "more than the limit of 8388608 doubles", "more than the limit of 8388608 doubles")
    flow, py_message = _python(data)
    core, c_message = _core(data)
    for message in (py_message, c_message):
        assert re.search(r"workspace of 12\d{7} doubles \(9\d\d MiB\)", message), message
    # the same chain with 20 layers fits (20 MB per molecule) and loads in both
    small = _chain_config(20, 60000)
    tensors = {k: 0.01 * rng.standard_normal(s) for k, s in _shapes_unchecked(small).items()}
    tensors["bond_lo"], tensors["bond_hi"] = np.full(21, 0.1), np.full(21, 0.2)
    _both_accept(unchecked_model_bytes(small, tensors))


def _shapes_unchecked(config):
    """expected_tensor_shapes of a config that validate_config would refuse for its cost."""
    from smoothflow_torch.transforms import params_per_dim
    n = config["n_atoms"]
    shapes = {"bond_lo": (n - 1,), "bond_hi": (n - 1,)}
    for l, L in enumerate(config["layers"]):
        width = sum(2 if d >= 2 * n - 3 else 1 for d in L["conditioning"])
        widths = [width] + L["hidden"] + [len(L["transformed"]) * params_per_dim(L["transform"], L.get("n_components", 1))]
        for m in range(len(widths) - 1):
            shapes[f"layers.{l}.net.{m}.weight"] = (widths[m + 1], widths[m])
            shapes[f"layers.{l}.net.{m}.bias"] = (widths[m + 1],)
    return shapes


def _valid_tensors():
    name = next(n for n, c in CASES.items() if c["valid"])
    config = validate_config(json.loads(_text(CASES[name])))
    return config, _tensors(config, 0)


@pytest.mark.parametrize("value, accepted", [(0.99e8, True), (1.01e8, False), (1e300, False)])
def test_a_bias_beyond_the_network_bound_is_refused_by_both(value, accepted):
    config, tensors = _valid_tensors()
    # a layer with one map, whose inputs are the encoded features in [-1, 1]: the bound of its
    # output i is |b_i| plus the row sum of |W|
    l = next(l for l, L in enumerate(config["layers"]) if not L["hidden"])
    W = tensors[f"layers.{l}.net.0.weight"]
    tensors[f"layers.{l}.net.0.bias"][0] = value - np.add.accumulate(np.abs(W[0]))[-1]
    data = unchecked_model_bytes({}, tensors, {"config": json.dumps(config)})
    if accepted:
        _both_accept(data)
    else:
        _both_refuse(data, f"layers.{l}.net.0 can overflow", f"layers.{l}.net.0 can overflow")


def test_a_weight_sum_beyond_the_bound_behind_a_zero_activation_is_refused():
    """A later map's weights are bounded even where its inputs are all zero: the reverse pass
    multiplies by them."""
    config, tensors = _valid_tensors()
    last = max(int(k.split(".")[3]) for k in tensors if k.startswith("layers.0.net."))
    if last == 0:
        pytest.skip("layer 0 has a single map")
    for m in range(last):
        tensors[f"layers.0.net.{m}.weight"][:] = 0
        tensors[f"layers.0.net.{m}.bias"][:] = 0
    tensors[f"layers.0.net.{last}.weight"][0, 0] = 2e8
    data = unchecked_model_bytes({}, tensors, {"config": json.dumps(config)})
    _both_refuse(data, f"layers.0.net.{last} can overflow", f"layers.0.net.{last} can overflow")


@pytest.mark.parametrize("lo, hi, needle", [(0.1, 1000.5, "1000"), (0.1, 0.1 + 5e-7, "1e-06"), (0.0, 1e308, "1000")])
def test_bond_bounds_beyond_the_limits_are_refused_by_both(lo, hi, needle):
    config, tensors = _valid_tensors()
    tensors["bond_lo"][0], tensors["bond_hi"][0] = lo, hi
    data = unchecked_model_bytes({}, tensors, {"config": json.dumps(config)})
    flow, py_message = _python(data)
    core, c_message = _core(data)
    assert flow is None and "bond 0" in py_message and needle in py_message, py_message
    assert core is None and "bond 0" in c_message and needle in c_message, c_message


@pytest.mark.parametrize("kind", ["directory", "/dev/zero", "fifo", "too large"])
def test_only_regular_files_of_at_most_1_gib_are_read(kind, tmp_path):
    from smoothflow_torch.export import read_model_file
    if kind == "directory":
        path = str(tmp_path)
    elif kind == "/dev/zero":
        path = "/dev/zero"
        if not os.path.exists(path):
            pytest.skip("no /dev/zero")
    elif kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)        # no writer: an open without O_NONBLOCK would hang here
    else:
        path = str(tmp_path / "sparse.safetensors")
        with open(path, "wb") as f:
            f.truncate((1 << 30) + 1)      # sparse: no disk used
    needle = "more than the limit of 1073741824 bytes" if kind == "too large" else "not a regular file"
    with pytest.raises(ModelFormatError, match=needle):
        read_model_file(path)
    with pytest.raises(CoreError, match=needle):
        CoreModel.from_file(path)


@pytest.mark.parametrize("version", ["01", "+1", " 1", "1 ", "1.0", "0", "-1", ""])
def test_format_version_is_plain_digits_in_both_readers(version):
    """strtol took "+1", " 1" and "01" as version 1 in the C core; the format says [1-9][0-9]*."""
    config, tensors = _valid_tensors()
    data = unchecked_model_bytes({}, tensors, {"config": json.dumps(config), "format_version": version})
    _both_refuse(data, "format_version", "format_version")
    _both_accept(unchecked_model_bytes({}, tensors, {"config": json.dumps(config), "format_version": "1"}))
