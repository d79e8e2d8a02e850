"""Writing and reading SmoothFlow model files (``docs/model-format.md``, version 1)."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import uuid
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from .coupling import DIRECTIONS, TRANSFORMS
from .conditioner import ACTIVATIONS
from .flow import SUPPORT_POLICIES, SmoothFlow
from .priors import check_prior
from .transforms import params_per_dim

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFormatError",
    "export_model",
    "model_to_bytes",
    "load_model",
    "load_model_bytes",
    "read_model_bytes",
    "flow_from_config",
    "validate_config",
    "expected_tensor_shapes",
]

FORMAT = "openmm-smoothflow"
#: Highest format version this package writes and reads.
FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4")}
#: Largest K (``n_components``) of format version 1.
MAX_COMPONENTS = 64


class ModelFormatError(ValueError):
    """A model file that is not valid under ``docs/model-format.md``."""


# ---------------------------------------------------------------- writing
def model_to_bytes(flow: SmoothFlow, extra_metadata: Optional[Mapping[str, str]] = None
                   ) -> bytes:
    """Serialize ``flow`` to the bytes of a model file.

    Parameters
    ----------
    flow : SmoothFlow
    extra_metadata : mapping of str to str, optional
        Further ``__metadata__`` entries (for example ``training``); may not replace
        ``format``, ``format_version`` or ``config``.

    Returns
    -------
    bytes
    """
    import safetensors.torch

    config = flow.config()
    validate_config(config)
    tensors = {}
    for name, t in flow.state_dict().items():
        t = t.detach().to(device="cpu", dtype=torch.float64).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"tensor {name} has non-finite values")
        tensors[name] = t
    expected = expected_tensor_shapes(config)
    if set(tensors) != set(expected):
        raise ModelFormatError(f"state_dict names {sorted(tensors)} differ from the "
                               f"format's {sorted(expected)}")
    metadata = {}
    for k, v in (extra_metadata or {}).items():
        if k in ("format", "format_version", "config"):
            raise ValueError(f"extra_metadata may not set the reserved key {k!r}")
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError("metadata keys and values must be strings")
        metadata[k] = v
    metadata.update({"format": FORMAT, "format_version": str(FORMAT_VERSION),
                     "config": json.dumps(config)})
    return safetensors.torch.save(tensors, metadata=metadata)


def export_model(flow: SmoothFlow, path, extra_metadata: Optional[Mapping[str, str]] = None
                 ) -> None:
    """Write ``flow`` to a safetensors model file at ``path`` (atomically).

    Parameters
    ----------
    flow : SmoothFlow
    path : str or os.PathLike
    extra_metadata : mapping of str to str, optional
        See :func:`model_to_bytes`.
    """
    data = model_to_bytes(flow, extra_metadata)
    path = os.path.abspath(os.fspath(path))
    # a unique name beside the target; open() honours the umask (mkstemp would not)
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- config
def _fail(msg: str):
    raise ModelFormatError(msg)


def _number(cfg, key, default=None, where="config"):
    if key not in cfg:
        if default is None:
            _fail(f"{where} lacks the required field {key!r}")
        return float(default)
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(f"{where}.{key} must be a finite number, got {v!r}")
    return float(v)


def _integer(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        _fail(f"{what} must be an integer, got {v!r}")
    return int(v)


def _int_list(v, what):
    if not isinstance(v, list):
        _fail(f"{what} must be a list of integers, got {v!r}")
    return [_integer(x, what) for x in v]


def validate_config(config: Mapping) -> dict:
    """Check a ``config`` object and return it with defaults filled in.

    Raises
    ------
    ModelFormatError
        Naming the field and the problem.
    """
    if not isinstance(config, Mapping):
        _fail("config must be a JSON object")
    cfg = dict(config)
    out = {}
    n = _integer(cfg.get("n_atoms"), "config.n_atoms") if "n_atoms" in cfg else \
        _fail("config lacks the required field 'n_atoms'")
    if n < 3:
        _fail(f"config.n_atoms must be >= 3, got {n}")
    out["n_atoms"] = n
    D = 3 * n - 6
    T = _number(cfg, "temperature")
    if not T > 0:
        _fail(f"config.temperature must be > 0, got {T}")
    out["temperature"] = T
    out["energy_offset"] = _number(cfg, "energy_offset", 0.0)
    if "zmatrix" not in cfg:
        _fail("config lacks the required field 'zmatrix'")
    from .zmatrix import validate_zmatrix
    zrows = cfg["zmatrix"]
    if not isinstance(zrows, list):
        _fail("config.zmatrix must be a list of rows")
    try:
        out["zmatrix"] = validate_zmatrix(
            [_int_list(r, f"config.zmatrix[{i}]") for i, r in enumerate(zrows)], n).tolist()
    except ValueError as e:
        _fail(f"config.zmatrix: {e}")
    if cfg.get("atoms") is not None:
        atoms = cfg["atoms"]
        if not isinstance(atoms, list) or len(atoms) != n:
            _fail(f"config.atoms must be a list of n_atoms = {n} objects")
        for i, a in enumerate(atoms):
            if not isinstance(a, dict):
                _fail(f"config.atoms[{i}] must be an object")
            for k in ("name", "residue", "element"):
                if not isinstance(a.get(k), str):
                    _fail(f"config.atoms[{i}].{k} must be a string")
            ri = a.get("residue_index")
            if isinstance(ri, bool) or not isinstance(ri, int) or ri < 0:
                _fail(f"config.atoms[{i}].residue_index must be an integer >= 0")
        out["atoms"] = [{k: a[k] for k in ("name", "residue", "residue_index", "element")}
                        for a in atoms]
    try:
        out["prior"] = check_prior(cfg.get("prior", "uniform"), 2 * n - 3)
    except ValueError as e:
        _fail(f"config.{e}")

    layers = cfg.get("layers")
    if not isinstance(layers, list):
        _fail("config.layers must be a list")
    out_layers = []
    for i, L in enumerate(layers):
        w = f"config.layers[{i}]"
        if not isinstance(L, dict):
            _fail(f"{w} must be an object")
        tr = L.get("transform")
        if tr not in TRANSFORMS:
            _fail(f"{w}.transform {tr!r} is not a transform this reader knows "
                  f"(one of {TRANSFORMS})")
        if L.get("direction") not in DIRECTIONS:
            _fail(f"{w}.direction must be one of {DIRECTIONS}, got {L.get('direction')!r}")
        t = _int_list(L.get("transformed"), f"{w}.transformed")
        c = _int_list(L.get("conditioning"), f"{w}.conditioning")
        if not t:
            _fail(f"{w}.transformed must not be empty")
        for name, idx in (("transformed", t), ("conditioning", c)):
            if len(set(idx)) != len(idx):
                _fail(f"{w}.{name} has repeated dimensions")
            if any(not 0 <= d < D for d in idx):
                _fail(f"{w}.{name} has dimensions outside 0..{D - 1} (D = 3 n_atoms - 6)")
        if set(t) & set(c):
            _fail(f"{w}: transformed and conditioning overlap in {sorted(set(t) & set(c))}")
        if tr == "affine" and "n_components" not in L:
            K = 1      # ignored by affine
        else:
            K = _integer(L.get("n_components"), f"{w}.n_components")
        if not 1 <= K <= MAX_COMPONENTS:
            _fail(f"{w}.n_components must lie in 1..{MAX_COMPONENTS}, got {K}")
        hidden = _int_list(L.get("hidden"), f"{w}.hidden")
        if any(h < 1 for h in hidden):
            _fail(f"{w}.hidden widths must be >= 1")
        if L.get("activation") not in ACTIVATIONS:
            _fail(f"{w}.activation must be one of {ACTIVATIONS}, got {L.get('activation')!r}")
        out_layers.append({"transform": tr, "direction": L["direction"], "transformed": t,
                           "conditioning": c, "n_components": K, "hidden": hidden,
                           "activation": L["activation"]})
    used = {L["transform"] for L in out_layers}
    if "smooth" in used or "smooth" in cfg:
        sm = cfg.get("smooth")
        if not isinstance(sm, dict):
            _fail("config.smooth (s_min, alpha_min, c_max, beta) is required with smooth layers")
        s_min = _number(sm, "s_min", where="config.smooth")
        alpha_min = _number(sm, "alpha_min", where="config.smooth")
        c_max = _number(sm, "c_max", where="config.smooth")
        beta = _integer(sm.get("beta"), "config.smooth.beta")
        if not 0 < s_min < 1:
            _fail(f"config.smooth.s_min must lie in (0, 1), got {s_min}")
        if not alpha_min > 0:
            _fail(f"config.smooth.alpha_min must be > 0, got {alpha_min}")
        if not 0 < c_max < 1:
            _fail(f"config.smooth.c_max must lie in (0, 1), got {c_max}")
        if beta < 1:
            _fail(f"config.smooth.beta must be >= 1, got {beta}")
        out["smooth"] = {"s_min": s_min, "alpha_min": alpha_min, "c_max": c_max, "beta": beta}
    if "spline" in used or "spline" in cfg:
        sp = cfg.get("spline", {})
        if not isinstance(sp, dict):
            _fail("config.spline must be an object")
        vals = {}
        for key in ("min_bin_width", "min_bin_height", "min_derivative"):
            vals[key] = _number(sp, key, 1e-3, "config.spline")
            if not vals[key] > 0 or (key != "min_derivative" and not vals[key] < 1):
                _fail(f"config.spline.{key} must be > 0"
                      f"{'' if key == 'min_derivative' else ' and < 1'}, got {vals[key]}")
        for i, L in enumerate(out_layers):
            if L["transform"] != "spline":
                continue
            K = L["n_components"]
            for key in ("min_bin_width", "min_bin_height"):
                if not K * vals[key] < 1:
                    _fail(f"config.layers[{i}]: a spline with n_components = {K} needs "
                          f"K * spline.{key} < 1, got {key} = {vals[key]}")
        out["spline"] = vals
    if "affine" in used or "affine" in cfg:
        af = cfg.get("affine", {})
        if not isinstance(af, dict):
            _fail("config.affine must be an object")
        scale_max = _number(af, "scale_max", 3.0, "config.affine")
        if not scale_max > 0:
            _fail(f"config.affine.scale_max must be > 0, got {scale_max}")
        out["affine"] = {"scale_max": scale_max}
    sup = cfg.get("support", {})
    if not isinstance(sup, dict):
        _fail("config.support must be an object")
    policy = sup.get("policy", "error")
    if policy not in SUPPORT_POLICIES:
        _fail(f"config.support.policy must be one of {SUPPORT_POLICIES}, got {policy!r}")
    margin = _number(sup, "margin", 0.01, "config.support")
    k = _number(sup, "wall_constant", 1000.0, "config.support")
    if not 0 < margin < 0.25:
        _fail(f"config.support.margin must lie in (0, 0.25), got {margin}")
    if not k >= 0:
        _fail(f"config.support.wall_constant must be >= 0, got {k}")
    out["support"] = {"policy": policy, "margin": margin, "wall_constant": k}
    out["layers"] = out_layers
    return out


def expected_tensor_shapes(config: Mapping) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of the tensors a file with this (valid) config must hold."""
    n = config["n_atoms"]
    circular = [False] * (2 * n - 3) + [True] * (n - 3)
    shapes = {"bond_lo": (n - 1,), "bond_hi": (n - 1,)}
    for l, L in enumerate(config["layers"]):
        width = sum(2 if circular[d] else 1 for d in L["conditioning"])
        P = params_per_dim(L["transform"], L["n_components"])
        widths = [width] + list(L["hidden"]) + [len(L["transformed"]) * P]
        for m in range(len(widths) - 1):
            shapes[f"layers.{l}.net.{m}.weight"] = (widths[m + 1], widths[m])
            shapes[f"layers.{l}.net.{m}.bias"] = (widths[m + 1],)
    return shapes


# ---------------------------------------------------------------- reading
def read_model_bytes(data: bytes) -> Tuple[dict, Dict[str, str], Dict[str, np.ndarray]]:
    """Parse and validate a model file's bytes.

    Returns
    -------
    config : dict
        Validated, defaults filled in.
    metadata : dict
        The whole ``__metadata__`` object.
    tensors : dict of str to numpy.ndarray
        float64 arrays.

    Raises
    ------
    ModelFormatError
    """
    data = bytes(data)
    if len(data) < 8:
        _fail("not a model file: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        _fail(f"header length {n} exceeds the 100 MB limit")
    if 8 + n > len(data):
        _fail(f"header length {n} exceeds the file size {len(data)}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(f"header is not valid UTF-8 JSON: {e}")
    if not isinstance(header, dict):
        _fail("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _fail("header lacks a __metadata__ object of strings")
    if meta.get("format") != FORMAT:
        _fail(f"metadata format is {meta.get('format')!r}, expected {FORMAT!r}")
    ver = meta.get("format_version")
    if ver is None or re.fullmatch(r"[0-9]+", ver) is None:
        _fail(f"metadata format_version must be a decimal integer string, got {ver!r}")
    if int(ver) > FORMAT_VERSION:
        _fail(f"model format version {int(ver)} is newer than this reader's version "
              f"{FORMAT_VERSION}")
    if int(ver) < 1:
        _fail(f"model format version {int(ver)} does not exist")
    if "config" not in meta:
        _fail("metadata lacks 'config'")
    try:
        raw_config = json.loads(meta["config"])
    except json.JSONDecodeError as e:
        _fail(f"metadata config is not valid JSON: {e}")
    config = validate_config(raw_config)

    buf = memoryview(data)[8 + n:]
    tensors = {}
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict):
            _fail(f"tensor {name}: header entry is not an object")
        dt = info.get("dtype")
        if dt not in _DTYPES:
            _fail(f"tensor {name}: dtype {dt!r} not accepted (F64 or F32)")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if (not isinstance(shape, list) or any(isinstance(s, bool) or not isinstance(s, int)
                                               or s < 0 for s in shape)):
            _fail(f"tensor {name}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offs)):
            _fail(f"tensor {name}: bad data_offsets {offs!r}")
        b, e = offs
        size = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dt].itemsize
        if not (0 <= b <= e <= len(buf)):
            _fail(f"tensor {name}: data_offsets {offs} outside the data buffer "
                  f"({len(buf)} bytes)")
        if e - b != size:
            _fail(f"tensor {name}: data_offsets span {e - b} bytes, shape {shape} {dt} "
                  f"needs {size}")
        if e > b:          # empty tensors occupy no bytes and overlap nothing
            ranges.append((b, e, name))
        arr = np.frombuffer(buf[b:e], dtype=_DTYPES[dt]).reshape(shape).astype(np.float64)
        if not np.isfinite(arr).all():
            _fail(f"tensor {name} has non-finite values")
        tensors[name] = arr
    ranges.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            _fail(f"tensors {n0} and {n1} overlap in the data buffer")

    expected = expected_tensor_shapes(config)
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        _fail(f"unknown tensors {unknown}")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        _fail(f"missing tensors {missing}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            _fail(f"tensor {name} has shape {list(tensors[name].shape)}, the config "
                  f"implies {list(shape)}")
    if not (tensors["bond_hi"] > tensors["bond_lo"]).all():
        d = int(np.nonzero(~(tensors["bond_hi"] > tensors["bond_lo"]))[0][0])
        _fail(f"bond_hi[{d}] = {tensors['bond_hi'][d]} does not exceed "
              f"bond_lo[{d}] = {tensors['bond_lo'][d]}")
    return config, meta, tensors


def flow_from_config(config: Mapping, tensors: Mapping[str, np.ndarray],
                     dtype: torch.dtype = torch.float64) -> SmoothFlow:
    """Build a :class:`SmoothFlow` from a validated config and its tensors."""
    flow = SmoothFlow(config["zmatrix"], tensors["bond_lo"], tensors["bond_hi"],
                      config["layers"], temperature=config["temperature"],
                      energy_offset=config["energy_offset"], atoms=config.get("atoms"),
                      smooth=config.get("smooth"), support=config["support"],
                      prior=config["prior"], zero_init=True, dtype=dtype,
                      spline=config.get("spline"), affine=config.get("affine"))
    state = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=dtype) for k, v in tensors.items()}
    flow.load_state_dict(state, strict=True)
    return flow


def load_model_bytes(data: bytes, dtype: torch.dtype = torch.float64) -> SmoothFlow:
    """A :class:`SmoothFlow` from the bytes of a model file (validated)."""
    config, _, tensors = read_model_bytes(data)
    return flow_from_config(config, tensors, dtype)


def load_model(path, dtype: torch.dtype = torch.float64) -> SmoothFlow:
    """A :class:`SmoothFlow` from a model file (validated).

    Parameters
    ----------
    path : str or os.PathLike
    dtype : torch.dtype

    Raises
    ------
    ModelFormatError
        The file is not a valid model file; the message says why.
    """
    with open(path, "rb") as f:
        data = f.read()
    return load_model_bytes(data, dtype)
