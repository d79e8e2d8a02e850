"""Tests of the model file (docs/model-format.md): export, load, validation."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as np_save_file

from smoothflow_torch import (ModelFormatError, SmoothFlow, export_model, load_model,
                              load_model_bytes, model_to_bytes, read_model_bytes)
from smoothflow_torch import testing as T

torch.set_num_threads(1)
DT = torch.float64


@pytest.fixture(scope="module")
def flow():
    atoms = [{"name": f"A{i}", "residue": "ALA" if i < 4 else "NME", "residue_index": int(i >= 4),
              "element": "C"} for i in range(6)]
    return T.random_flow(n_atoms=6, n_layers=3, n_components=[2, 3, 1], hidden=(7, 5),
                         activation="tanh", directions="mixed", seed=21, atoms=atoms,
                         temperature=298.15, energy_offset=1.25,
                         support={"policy": "wall", "margin": 0.02, "wall_constant": 250.0},
                         smooth={"s_min": 0.02, "alpha_min": 0.2, "c_max": 0.95, "beta": 2})


def test_export_layout_read_by_safetensors(flow, tmp_path):
    path = tmp_path / "model.safetensors"
    export_model(flow, path, extra_metadata={"training": "unit test"})
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        names = set(f.keys())
        tensors = {k: f.get_tensor(k) for k in names}
    assert meta["format"] == "openmm-smoothflow"
    assert meta["format_version"] == "1"
    assert meta["training"] == "unit test"
    config = json.loads(meta["config"])
    assert config == flow.config()
    assert config["n_atoms"] == 6 and config["temperature"] == 298.15
    assert config["smooth"] == {"s_min": 0.02, "alpha_min": 0.2, "c_max": 0.95, "beta": 2}
    assert config["support"] == {"policy": "wall", "margin": 0.02, "wall_constant": 250.0}
    assert config["atoms"][5] == {"name": "A5", "residue": "NME", "residue_index": 1,
                                  "element": "C"}
    expected = {"bond_lo", "bond_hi"}
    for l, L in enumerate(config["layers"]):
        for m in range(len(L["hidden"]) + 1):
            expected |= {f"layers.{l}.net.{m}.weight", f"layers.{l}.net.{m}.bias"}
    assert names == expected
    assert all(t.dtype == np.float64 for t in tensors.values())
    assert tensors["bond_lo"].shape == (5,)
    circular = [False] * 9 + [True] * 3
    for l, L in enumerate(config["layers"]):
        width = sum(2 if circular[d] else 1 for d in L["conditioning"])
        assert tensors[f"layers.{l}.net.0.weight"].shape == (7, width)
        assert tensors[f"layers.{l}.net.2.weight"].shape == (
            len(L["transformed"]) * (4 * L["n_components"] + 2), 5)
    sd = flow.state_dict()
    for k, v in tensors.items():
        assert np.array_equal(v, sd[k].numpy())
    # the safetensors layout read by hand: a little-endian u64 header length, a JSON header
    # naming every tensor (F64, its shape, its byte range), then the data, tiled exactly
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header.pop("__metadata__") == meta and set(header) == names
    ranges = []
    for k, h in header.items():
        assert h["dtype"] == "F64" and h["shape"] == list(tensors[k].shape)
        begin, end = h["data_offsets"]
        assert end - begin == 8 * tensors[k].size
        np.testing.assert_array_equal(np.frombuffer(raw[8 + n + begin:8 + n + end], "<f8"),
                                      tensors[k].ravel())
        ranges.append((begin, end))
    ranges.sort()
    assert ranges[0][0] == 0 and ranges[-1][1] == len(raw) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_round_trip_identical_energies(flow, tmp_path):
    path = tmp_path / "m.safetensors"
    export_model(flow, path)
    loaded = load_model(path)
    assert loaded.config() == flow.config()
    x = T.random_positions(flow, 4, seed=3)
    E0, F0 = flow.energy_and_forces(x)
    E1, F1 = loaded.energy_and_forces(x)
    assert torch.equal(E0, E1) and torch.equal(F0, F1)
    loaded2 = load_model_bytes(path.read_bytes())
    assert torch.equal(loaded2.energy(x).detach(), E0)


def test_handwritten_file_loads(tmp_path):
    """A file written with safetensors.numpy in the documented layout, F32 tensor included."""
    rng = np.random.default_rng(0)
    n = 4
    config = {
        "n_atoms": n, "temperature": 300, "zmatrix": [[1, -1, -1, -1], [0, 1, -1, -1],
                                                      [2, 1, 0, -1], [3, 2, 1, 0]],
        "prior": "uniform", "smooth": {"s_min": 0.01, "alpha_min": 0.1, "c_max": 0.99, "beta": 1},
        "layers": [
            {"transform": "smooth", "direction": "generative", "transformed": [0, 3, 5],
             "conditioning": [1, 2, 4], "n_components": 2, "hidden": [3], "activation": "silu"},
            {"transform": "smooth", "direction": "density", "transformed": [1, 2, 4],
             "conditioning": [], "n_components": 1, "hidden": [], "activation": "softplus"},
        ],
    }
    # D = 6: bonds 0-2, angles 3-4, torsion 5. Layer 0 conditions on [1, 2, 4] (3 features).
    tensors = {
        "bond_lo": np.array([0.1, 0.11, 0.12]),
        "bond_hi": np.array([0.2, 0.21, 0.22]),
        "layers.0.net.0.weight": rng.normal(size=(3, 3)),
        "layers.0.net.0.bias": rng.normal(size=3),
        "layers.0.net.1.weight": rng.normal(size=(3 * 10, 3)).astype(np.float32),
        "layers.0.net.1.bias": rng.normal(size=30),
        "layers.1.net.0.weight": np.zeros((3 * 6, 0)),
        "layers.1.net.0.bias": rng.normal(size=18),
    }
    path = tmp_path / "hand.safetensors"
    np_save_file(tensors, str(path), metadata={"format": "openmm-smoothflow",
                                               "format_version": "1",
                                               "config": json.dumps(config)})
    flow = load_model(path)
    assert flow.support_policy == "error" and flow.energy_offset == 0.0 and flow.atoms is None
    # the same model built directly
    ref = SmoothFlow(config["zmatrix"], tensors["bond_lo"], tensors["bond_hi"],
                     config["layers"], temperature=300.0)
    with torch.no_grad():
        for k, v in tensors.items():
            ref.state_dict()[k].copy_(torch.as_tensor(v.astype(np.float64)))
    x = T.random_positions(ref, 3, seed=0)
    assert torch.equal(flow.energy(x).detach(), ref.energy(x).detach())
    # the raw layer-1 transform parameters are the bias (no conditioning input)
    raw = flow.layers[1].raw_parameters(torch.zeros(2, 6, dtype=DT))
    np.testing.assert_array_equal(raw[0].reshape(-1).detach().numpy(), tensors["layers.1.net.0.bias"])


_file = T.unchecked_model_bytes


def _valid(flow):
    config = flow.config()
    tensors = {k: v.detach().numpy().copy() for k, v in flow.state_dict().items()}
    return config, tensors


def test_invalid_files_are_rejected(flow):
    config, tensors = _valid(flow)
    load_model_bytes(_file(config, tensors))

    def rejects(data, pattern):
        with pytest.raises(ModelFormatError, match=pattern):
            load_model_bytes(data)

    rejects(_file(config, tensors, {"format_version": "2"}), r"version 2 .*version 1")
    rejects(_file(config, tensors, {"format": "other"}), "format")
    rejects(_file(config, tensors, {"config": "{not json"}), "not valid JSON")
    t = dict(tensors, extra=np.zeros(2))
    rejects(_file(config, t), "unknown tensors")
    t = dict(tensors)
    del t["layers.1.net.0.bias"]
    rejects(_file(config, t), "missing tensors")
    t = dict(tensors, bond_lo=np.zeros(4))
    rejects(_file(config, t), "shape")
    t = dict(tensors, bond_hi=tensors["bond_lo"].copy())
    rejects(_file(config, t), "does not exceed")
    w = tensors["layers.0.net.0.weight"].copy()
    w[0, 0] = np.nan
    rejects(_file(config, dict(tensors, **{"layers.0.net.0.weight": w})), "non-finite")
    rejects(_file(config, dict(tensors, bond_lo=tensors["bond_lo"].astype(np.float16))),
            "dtype")
    for key, value, pattern in [
        ("n_atoms", 2, "n_atoms"),
        ("temperature", -1.0, "temperature"),
        ("prior", "gaussian", "prior"),
        ("zmatrix", [[0, -1, -1, -1]] * 6, "zmatrix"),
        ("support", {"policy": "soft"}, "policy"),
        ("support", {"policy": "wall", "margin": 0.3}, "margin"),
        ("smooth", {"s_min": 0.01, "alpha_min": 0.1, "c_max": 1.0, "beta": 1}, "c_max"),
    ]:
        rejects(_file(dict(config, **{key: value}), tensors), pattern)
    for change, pattern in [
        ({"transform": "cubic"}, "'cubic'"),         # an unknown kind, named
        ({"transform": "spline"}, "shape"),           # a spline block is 3K + 2 wide
        ({"direction": "sideways"}, "direction"),
        ({"activation": "relu"}, "activation"),
        ({"n_components": 0}, "n_components"),
        ({"transformed": []}, "empty"),
        ({"conditioning": config["layers"][0]["transformed"][:1]}, "overlap"),
    ]:
        layers = [dict(config["layers"][0], **change)] + config["layers"][1:]
        rejects(_file(dict(config, layers=layers), tensors), pattern)
    # container-level problems
    good = _file(config, tensors)
    rejects(good[:5], "shorter")
    rejects(struct.pack("<Q", len(good)) + good[8:], "exceeds the file size")
    header = b'[1, 2]'
    rejects(struct.pack("<Q", len(header)) + header, "not a JSON object")
    (n,) = struct.unpack("<Q", good[:8])
    hdr = json.loads(good[8:8 + n])
    hdr["bond_hi"]["data_offsets"] = hdr["bond_lo"]["data_offsets"]
    h = json.dumps(hdr).encode()
    rejects(struct.pack("<Q", len(h)) + h + good[8 + n:], "overlap")


def test_export_rejects_reserved_metadata(flow):
    for key in ("format", "format_version", "config"):
        with pytest.raises(ValueError, match=f"may not set the reserved key '{key}'"):
            model_to_bytes(flow, {key: "x"})
    with pytest.raises(ValueError, match="keys and values must be strings"):
        model_to_bytes(flow, {"training": 3})
    _, meta, _ = read_model_bytes(model_to_bytes(flow, {"training": "notes"}))
    assert meta["training"] == "notes" and meta["format"] == "openmm-smoothflow"
