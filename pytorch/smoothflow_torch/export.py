"""Writing and reading SmoothFlow model files (``docs/model-format.md``, version 1)."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import uuid
from typing import Dict, Mapping, Optional, Tuple

import jsonschema
import numpy as np
import torch

from .flow import SmoothFlow
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
    "parse_config",
    "expected_tensor_shapes",
    "CONFIG_SCHEMA",
    "SCHEMA_PATH",
]

FORMAT = "openmm-smoothflow"
#: Highest format version this package writes and reads.
FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4")}


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
#: The JSON Schema of ``config`` (format version 1): with the rules listed in its
#: description, the one statement of what a valid configuration is. The C reader
#: (core/src/sf_model.c) enforces the same; tests/data/config_corpus/ runs both.
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_config.schema.json")
with open(SCHEMA_PATH, encoding="utf-8") as _f:
    CONFIG_SCHEMA = json.load(_f)
_VALIDATOR = jsonschema.Draft202012Validator(CONFIG_SCHEMA)
#: Largest K (``n_components``) of format version 1.
MAX_COMPONENTS = CONFIG_SCHEMA["$defs"]["layer"]["properties"]["n_components"]["maximum"]
_SPLINE_DEFAULTS = {"min_bin_width": 1e-3, "min_bin_height": 1e-3, "min_derivative": 1e-3}
_AFFINE_DEFAULTS = {"scale_max": 3.0}
_SUPPORT_DEFAULTS = {"policy": "error", "margin": 0.01, "wall_constant": 1000.0}


def _fail(msg: str):
    raise ModelFormatError(msg)


def _where(path) -> str:
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _pairs_without_repeats(pairs):
    # [duplicate-keys]: parsers disagree on which of two equal keys wins
    out = {}
    for k, v in pairs:
        if k in out:
            _fail(f"config: an object holds the key {k!r} twice")
        out[k] = v
    return out


def _no_constant(name):
    _fail(f"config: {name} is not a JSON number")


def _finite_float(text):
    v = float(text)
    if not math.isfinite(v):      # [finite-numbers]: 1e999 overflows
        _fail(f"config: the number {text} is not a finite double")
    return v


def _finite_int(text):
    # beyond 309 digits no integer is a finite double (and int() refuses 4300)
    if len(text.lstrip("-")) <= 309:
        v = int(text)
        try:
            float(v)
            return v
        except OverflowError:
            pass
    _fail(f"config: the number {text[:40]}... is not a finite double")


def parse_config(text: str) -> dict:
    """The ``config`` metadata string as a JSON object, parsed strictly (the schema's
    [json-syntax], [duplicate-keys] and [finite-numbers] rules).

    Raises
    ------
    ModelFormatError
    """
    try:
        config = json.loads(text, object_pairs_hook=_pairs_without_repeats,
                            parse_constant=_no_constant, parse_float=_finite_float,
                            parse_int=_finite_int)
    except json.JSONDecodeError as e:
        _fail(f"metadata config is not valid JSON: {e}")
    except RecursionError:
        _fail("metadata config is not valid JSON: nested too deeply")
    if not isinstance(config, dict):
        _fail("metadata config is not a JSON object")
    if not _free_of_nul(config):
        _fail("metadata config is not valid JSON: a NUL character (\\u0000) inside a string")
    if not _unicode(config):
        _fail("metadata config is not valid JSON: a string holds an unpaired surrogate (\\ud800-\\udfff)")
    return config


def _free_of_nul(v) -> bool:
    """Whether no string (key or value) in a JSON value holds NUL: C readers see strings as
    NUL-terminated, so the format refuses NUL anywhere in the header."""
    if isinstance(v, str):
        return "\x00" not in v
    if isinstance(v, dict):
        return all(_free_of_nul(k) and _free_of_nul(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_free_of_nul(x) for x in v)
    return True


def _unicode(v) -> bool:
    """Whether every string (key or value) in a JSON value is valid Unicode: json.loads lets an
    unpaired surrogate escape through, which no UTF-8 text can hold."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(v, dict):
        return all(_unicode(k) and _unicode(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_unicode(x) for x in v)
    return True


def validate_config(config: Mapping) -> dict:
    """Check a ``config`` object and return it with defaults filled in.

    First against the JSON Schema (:data:`SCHEMA_PATH`), then the rules the schema
    cannot express (the list in its description).

    Raises
    ------
    ModelFormatError
        Naming the field and the problem.
    """
    if not isinstance(config, Mapping):
        _fail("config must be a JSON object")
    cfg = dict(config)
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(cfg))
    if error is not None:
        _fail(f"{_where(error.absolute_path)}: {error.message}")
    bad = _non_finite(cfg)
    if bad is not None:       # [finite-numbers]; the schema cannot see infinities
        _fail(f"config: {bad!r} holds a number that is not a finite double")

    n = int(cfg["n_atoms"])
    D = 3 * n - 6
    out = {"n_atoms": n, "temperature": float(cfg["temperature"]),
           "energy_offset": float(cfg.get("energy_offset", 0.0))}
    from .zmatrix import validate_zmatrix
    try:      # [zmatrix-rows], [zmatrix-atoms], [zmatrix-order]
        out["zmatrix"] = validate_zmatrix(cfg["zmatrix"], n).tolist()
    except ValueError as e:
        _fail(f"config.zmatrix: {e}")
    if "atoms" in cfg:
        if len(cfg["atoms"]) != n:            # [atoms-count]
            _fail(f"config.atoms must list n_atoms = {n} entries, got {len(cfg['atoms'])}")
        out["atoms"] = [{"name": a["name"], "residue": a["residue"],
                         "residue_index": int(a["residue_index"]), "element": a["element"]}
                        for a in cfg["atoms"]]
    try:      # [prior-length]
        out["prior"] = check_prior(cfg.get("prior", "uniform"), 2 * n - 3)
    except ValueError as e:
        _fail(f"config.{e}")

    if "smooth" in cfg:
        sm = cfg["smooth"]
        out["smooth"] = {"s_min": float(sm["s_min"]), "alpha_min": float(sm["alpha_min"]),
                         "c_max": float(sm["c_max"]), "beta": int(sm["beta"])}
    spline = {k: float(cfg.get("spline", {}).get(k, d)) for k, d in _SPLINE_DEFAULTS.items()}
    out_layers = []
    for i, L in enumerate(cfg["layers"]):
        w = f"config.layers[{i}]"
        t, c = [int(d) for d in L["transformed"]], [int(d) for d in L["conditioning"]]
        for name, idx in (("transformed", t), ("conditioning", c)):
            if any(not 0 <= d < D for d in idx):      # [layer-dims]
                _fail(f"{w}.{name} has dimensions outside 0..{D - 1} (D = 3 n_atoms - 6)")
        if set(t) & set(c):                           # [layer-disjoint]
            _fail(f"{w}: transformed and conditioning overlap in {sorted(set(t) & set(c))}")
        K = int(L.get("n_components", 1))        # affine ignores it
        if L["transform"] == "spline":                # [spline-bins]
            for key in ("min_bin_width", "min_bin_height"):
                if not K * spline[key] < 1:
                    _fail(f"{w}: a spline with n_components = {K} needs K * spline.{key} < 1, "
                          f"got {key} = {spline[key]}")
        out_layers.append({"transform": L["transform"], "direction": L["direction"],
                           "transformed": t, "conditioning": c, "n_components": K,
                           "hidden": [int(h) for h in L["hidden"]],
                           "activation": L["activation"]})
    used = {L["transform"] for L in out_layers}
    if "spline" in used or "spline" in cfg:
        out["spline"] = spline
    if "affine" in used or "affine" in cfg:
        out["affine"] = {k: float(cfg.get("affine", {}).get(k, d))
                         for k, d in _AFFINE_DEFAULTS.items()}
    sup = cfg.get("support", {})
    out["support"] = {k: sup.get(k, d) if k == "policy" else float(sup.get(k, d))
                      for k, d in _SUPPORT_DEFAULTS.items()}
    out["layers"] = out_layers
    return out


def _non_finite(v, key="config"):
    """The key of the first number in a JSON value that is not a finite double, or None."""
    if isinstance(v, dict):
        return next((b for b in (_non_finite(x, k) for k, x in v.items()) if b is not None), None)
    if isinstance(v, list):
        return next((b for b in (_non_finite(x, key) for x in v) if b is not None), None)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return None if math.isfinite(v) else key
        except OverflowError:         # an int beyond the doubles
            return key
    return None


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
    if not _free_of_nul(header):
        _fail("header holds a NUL character (\\u0000) in a string")
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
    config = validate_config(parse_config(meta["config"]))

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
    if not (tensors["bond_lo"] >= 0).all():
        d = int(np.nonzero(~(tensors["bond_lo"] >= 0))[0][0])
        _fail(f"bond_lo[{d}] = {tensors['bond_lo'][d]} is negative (a bond length is >= 0 nm)")
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
