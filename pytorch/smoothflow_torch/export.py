"""Writing and reading SmoothFlow model files (``docs/model-format.md``, version 1).

Both kinds of model are read here (:func:`read_model_bytes` validates either); a flow over
internal coordinates is written and loaded by :func:`export_model` and :func:`load_model`,
a free-form flow's encoder by :mod:`smoothflow_torch.particles.export`.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
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
    "read_model_file",
    "flow_from_config",
    "validate_config",
    "parse_config",
    "expected_tensor_shapes",
    "free_form_costs",
    "FREE_FORM",
    "CONFIG_SCHEMA",
    "SCHEMA_PATH",
]

FORMAT = "openmm-smoothflow"
#: Highest format version this package writes and reads.
FORMAT_VERSION = 1
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4")}
# The limits of docs/model-format.md section 1 ("Limits"), as in core/include/smoothflow.h
# and core/src/sf_model.c; the configuration's value ranges are in the schema.
_MAX_FILE = 1 << 30                    # bytes of a model file (1 GiB)
_MAX_HEADER = 100_000_000              # bytes of its JSON header (100 MB)
_MAX_WORKSPACE_DOUBLES = 1 << 23       # per molecule (64 MiB)
_MAX_PARAMETERS = 100_000_000          # conditioner weights and biases
_MAX_NET_BOUND = 1e8                   # a linear map's output bound and weight sum
_MAX_BOND = 1000.0                     # nm, bond_hi
_MIN_BOND_WIDTH = 1e-6                 # nm, bond_hi - bond_lo
_MAX_DIMS = 4                          # a tensor's dimensions
_MAX_SHAPE = 10 ** 12                  # each of its extents
# The free-form kind (docs/model-format.md section 9.4), as in core/include/smoothflow.h.
_MAX_FREE_FORM_WORKSPACE = 1 << 26     # doubles per configuration (512 MiB)
_MAX_FREE_FORM_WORK = 1e12             # multiply-adds of one energy and forces
#: The value of ``kind`` that marks a free-form flow's encoder; absent: internal coordinates.
FREE_FORM = "free_form"
_FREE_FORM_KEYS = ("kind", "n_atoms", "temperature", "energy_offset", "atoms", "network", "latent")


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


def _pairs_without_repeats(message):
    """An object_pairs_hook refusing an object that holds a key twice ([duplicate-keys]:
    parsers disagree on which of two equal keys wins), with ``message`` formatted by the key."""
    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                _fail(message.format(key=repr(k)))
            out[k] = v
        return out
    return pairs


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
        repeats = _pairs_without_repeats("config: an object holds the key {key} twice")
        config = json.loads(text, object_pairs_hook=repeats,
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


def _checked_atoms(atoms, n: int) -> list:
    """The configuration's ``atoms`` entries (either kind), one per atom: [atoms-count]."""
    if len(atoms) != n:
        _fail(f"config.atoms must list n_atoms = {n} entries, got {len(atoms)}")
    return [{"name": a["name"], "residue": a["residue"], "residue_index": int(a["residue_index"]),
             "element": a["element"]} for a in atoms]


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
    # The kind first, for messages that name it (the schema's verdict is the same).
    if "kind" in cfg:
        if cfg["kind"] != FREE_FORM:
            _fail(f"config.kind {cfg['kind']!r} is unknown to this reader (it knows {FREE_FORM!r}; without "
                  f"'kind' the file holds an internal-coordinate flow)")
        extra = sorted(set(cfg) - set(_FREE_FORM_KEYS))
        if extra:
            _fail(f"config: a free-form model has no key {extra[0]!r} (its keys: {', '.join(_FREE_FORM_KEYS)})")
    else:
        for key in ("network", "latent"):
            if key in cfg:
                _fail(f"config: {key!r} belongs to a free-form model ('kind': {FREE_FORM!r}), not to a flow over "
                      f"internal coordinates")
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(cfg))
    if error is not None:
        _fail(f"{_where(error.absolute_path)}: {error.message}")
    bad = _non_finite(cfg)
    if bad is not None:       # [finite-numbers]; the schema cannot see infinities
        _fail(f"config: {bad!r} holds a number that is not a finite double")
    if "kind" in cfg:
        return _validate_free_form(cfg)

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
        out["atoms"] = _checked_atoms(cfg["atoms"], n)
    try:      # [prior-length]
        out["prior"] = check_prior(cfg.get("prior", "uniform"), 2 * n - 3, n - 3)
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
    _check_cost_limits(out_layers, n)
    used = {L["transform"] for L in out_layers}
    if "spline" in used or "spline" in cfg:
        out["spline"] = spline
    if "affine" in used or "affine" in cfg:
        out["affine"] = {k: float(cfg.get("affine", {}).get(k, d))
                         for k, d in _AFFINE_DEFAULTS.items()}
    sup = cfg.get("support", {})
    out["support"] = {k: sup.get(k, d) if k == "policy" else float(sup.get(k, d))
                      for k, d in _SUPPORT_DEFAULTS.items()}
    if "angle_margin" in sup:  # absent: the angles take margin
        out["support"]["angle_margin"] = float(sup["angle_margin"])
    out["support"].update(_edge_forces(sup, n))
    out["layers"] = out_layers
    return out


def _edge_forces(sup, n_atoms) -> dict:
    """The wall's edge forces of a support section ([edge-force-length], [edge-force-policy])."""
    keys = ("edge_force_lower", "edge_force_upper")
    given = [k for k in keys if k in sup]
    if not given:
        return {}
    if len(given) == 1:
        _fail(f"config.support has '{given[0]}' without '{(set(keys) - set(given)).pop()}' (give both or neither)")
    if sup.get("policy", "error") != "wall":
        _fail('config.support: edge forces are given but the policy is "error" (they act only under "wall")')
    n = 2 * n_atoms - 3
    for k in keys:
        if len(sup[k]) != n:
            _fail(f"config.support.{k} must hold 2 n_atoms - 3 = {n} numbers, got {len(sup[k])}")
    return {k: [float(v) for v in sup[k]] for k in keys}


def _validate_free_form(cfg) -> dict:
    """The rest of validate_config for a free-form model (schema already satisfied):
    [atoms-count], [free-form-cost]; defaults filled in."""
    n = int(cfg["n_atoms"])
    net = cfg["network"]
    out = {"kind": FREE_FORM, "n_atoms": n, "temperature": float(cfg["temperature"]),
           "energy_offset": float(cfg.get("energy_offset", 0.0))}
    if "atoms" in cfg:
        out["atoms"] = _checked_atoms(cfg["atoms"], n)
    out["network"] = {"kind": "egnn", "spatial_dim": int(net["spatial_dim"]), "hidden": int(net["hidden"]),
                      "layers": int(net["layers"]), "distance_scale": float(net["distance_scale"])}
    out["latent"] = cfg["latent"]
    _check_free_form_costs(out)
    return out


def free_form_costs(config: Mapping) -> Tuple[float, float]:
    """(workspace, work) of a free-form config: (D + 1) n (L + 10) (2H + d) + 2 D^2 doubles and
    L n^2 (6 H^2 + 3 H) (D + 1) + 2 D^3 multiply-adds, D = (n - 1) d (docs/model-format.md
    section 9.4), formed in double as in the C core."""
    net = config["network"]
    n, d = float(config["n_atoms"]), float(net["spatial_dim"])
    H, L = float(net["hidden"]), float(net["layers"])
    D = (n - 1) * d
    workspace = (D + 1) * n * (L + 10) * (2 * H + d) + 2 * D * D
    work = L * n * n * (6 * H * H + 3 * H) * (D + 1) + 2 * D * D * D
    return workspace, work


def _check_free_form_costs(config):
    """[free-form-cost]."""
    workspace, work = free_form_costs(config)
    net = config["network"]
    n, d, H, L = config["n_atoms"], net["spatial_dim"], net["hidden"], net["layers"]
    if workspace > _MAX_FREE_FORM_WORKSPACE:
        _fail(f"config: evaluating one configuration of this free-form model needs a workspace of "
              f"{workspace:.0f} doubles ({round(workspace * 8 / 2 ** 20)} MiB), more than the limit of "
              f"{_MAX_FREE_FORM_WORKSPACE} doubles (512 MiB): {n} particles, hidden {H}, {L} layers")
    if work > _MAX_FREE_FORM_WORK:
        _fail(f"config: one energy and force of this free-form model takes about {work:.4g} multiply-adds, more "
              f"than the limit of {_MAX_FREE_FORM_WORK:g}: {n} particles in {d} dimensions "
              f"(D = {(n - 1) * d}), hidden {H}, {L} layers")


def _layer_widths(layer, n_atoms):
    """w_0 .. w_{H+1} of a validated layer: encoded input, hidden widths, n_trans * P."""
    width = sum(2 if d >= 2 * n_atoms - 3 else 1 for d in layer["conditioning"])
    P = params_per_dim(layer["transform"], layer["n_components"])
    return [width] + list(layer["hidden"]) + [len(layer["transformed"]) * P]


def _check_cost_limits(layers, n_atoms):
    """[cost-limits]: the workspace measure (L + 1) D + L (I + A + P) + 2 W doubles and the
    number of conditioner weights and biases (docs/model-format.md section 1, "Limits")."""
    widths = [_layer_widths(L, n_atoms) for L in layers]
    L, D = len(layers), 3 * n_atoms - 6
    I = max(w[0] for w in widths)
    A = max(sum(2 * h for h in w[1:-1]) for w in widths)
    P = max(w[-1] for w in widths)
    W = max(max(w) for w in widths)
    workspace = (L + 1) * D + L * (I + A + P) + 2 * W
    if workspace > _MAX_WORKSPACE_DOUBLES:
        _fail(f"config: evaluating one molecule needs a workspace of {workspace} doubles "
              f"({round(workspace * 8 / 2 ** 20)} MiB), more than the limit of {_MAX_WORKSPACE_DOUBLES} "
              f"doubles (64 MiB): {L} layers, D = {D}, widest map {W}")
    parameters = sum((w[m] + 1) * w[m + 1] for w in widths for m in range(len(w) - 1))
    if parameters > _MAX_PARAMETERS:
        _fail(f"config: the conditioners hold {parameters} weights and biases, more than the "
              f"limit of {_MAX_PARAMETERS}")


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
    if config.get("kind") == FREE_FORM:
        return _free_form_shapes(config)
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


def _free_form_shapes(config: Mapping) -> Dict[str, Tuple[int, ...]]:
    """The encoder's tensors: the state_dict of ``particles.egnn.EGNN`` (docs/model-format.md
    section 9.3). Each layer's MLPs are nn.Sequential, so their Linear maps are entries 0 and 2;
    the last layer has no node update."""
    H, L = config["network"]["hidden"], config["network"]["layers"]
    shapes = {"h0": (H,)}
    for k in range(L):
        maps = [("edge.0", 2 * H + 1, H), ("edge.2", H, H), ("coord.0", H, H), ("coord.2", H, 1)]
        if k < L - 1:
            maps += [("node.0", 2 * H, H), ("node.2", H, H)]
        for name, n_in, n_out in maps:
            shapes[f"layers.{k}.{name}.weight"] = (n_out, n_in)
            shapes[f"layers.{k}.{name}.bias"] = (n_out,)
    return shapes


# ---------------------------------------------------------------- reading
def _parse_header(raw: bytes) -> dict:
    """The header's JSON object, parsed as strictly as section 1 says: UTF-8, starting with
    '{', padded after the object with spaces only, no key twice in one object, numbers only
    as non-negative integers in plain digits, no NUL and no unpaired surrogate in a string."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail("header is not valid UTF-8")
    if not text.startswith("{"):
        _fail("header is not a JSON object (its first byte must be '{')")

    def not_an_integer(literal):
        _fail(f"header holds the number {literal[:40]}, not a non-negative integer in plain digits")

    def integer(literal):
        if literal.startswith("-"):
            not_an_integer(literal)
        return int(literal)

    repeats = _pairs_without_repeats("header holds the key {key} twice in one object")
    decoder = json.JSONDecoder(object_pairs_hook=repeats, parse_float=not_an_integer,
                               parse_int=integer, parse_constant=not_an_integer)
    try:
        header, end = decoder.raw_decode(text)
    except json.JSONDecodeError as e:
        _fail(f"header is not a JSON object: {e}")
    except RecursionError:
        _fail("header is not a JSON object: nested too deeply")
    if text[end:].strip(" "):
        _fail(f"header holds text after its JSON object (only spaces may pad it): {text[end:][:40]!r}")
    if not isinstance(header, dict):
        _fail("header is not a JSON object")
    if not _free_of_nul(header):
        _fail("header holds a NUL character (\\u0000) in a string")
    if not _unicode(header):
        _fail("header holds a string with an unpaired surrogate (\\ud800-\\udfff)")
    return header


def _check_net_bounds(config: Mapping, tensors: Mapping[str, np.ndarray]) -> None:
    """[value-bounds]: with encoded inputs in [-1, 1], every linear map's outputs are bounded
    by B = max_i (sum_j |W_ij| A + |b_i|) and A of the next map is min(B, 1), B or B + log 2
    (tanh, SiLU, softplus); each B and each map's sum of |W_ij| must be at most 1e8. The sums
    run left to right in storage order (np.add.accumulate is sequential), as in the C core."""
    for l, L in enumerate(config["layers"]):
        A = 1.0
        for m in range(len(L["hidden"]) + 1):
            W = np.abs(tensors[f"layers.{l}.net.{m}.weight"])
            b = np.abs(tensors[f"layers.{l}.net.{m}.bias"])
            rows = np.add.accumulate(W, axis=1)[:, -1] if W.shape[1] else np.zeros(W.shape[0])
            total = float(np.add.accumulate(W.ravel())[-1]) if W.size else 0.0
            B = float(np.max(rows * A + b))
            if not (B <= _MAX_NET_BOUND and total <= _MAX_NET_BOUND):
                _fail(f"tensor layers.{l}.net.{m} can overflow: its outputs are bounded only by {B:g} "
                      f"and the sum of its |weights| is {total:g} (each must be at most "
                      f"{_MAX_NET_BOUND:g})")
            A = {"tanh": min(B, 1.0), "silu": B}.get(L["activation"], B + math.log(2.0))


def _check_free_form_bounds(config: Mapping, tensors: Mapping[str, np.ndarray]) -> None:
    """[value-bounds] of the free-form kind: each tensor's sum of |entries|, formed in storage
    order (np.add.accumulate is sequential), as in the C core, is at most 1e8."""
    for name in _free_form_shapes(config):
        t = np.abs(tensors[name]).ravel()
        total = float(np.add.accumulate(t)[-1]) if t.size else 0.0
        if not total <= _MAX_NET_BOUND:
            _fail(f"tensor {name} can overflow: the sum of its |entries| is {total:g}, more than the limit of "
                  f"{_MAX_NET_BOUND:g}")


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
    if len(data) > _MAX_FILE:
        _fail(f"model file is {len(data)} bytes, more than the limit of {_MAX_FILE} bytes (1 GiB)")
    if len(data) < 8:
        _fail("not a model file: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        _fail(f"header length {n} exceeds the limit of {_MAX_HEADER} bytes (100 MB)")
    if 8 + n > len(data):
        _fail(f"header length {n} exceeds the file size {len(data)}")
    header = _parse_header(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _fail("header lacks a __metadata__ object of strings")
    if meta.get("format") != FORMAT:
        _fail(f"metadata format is {meta.get('format')!r}, expected {FORMAT!r}")
    ver = meta.get("format_version")
    if ver is None or re.fullmatch(r"[1-9][0-9]*", ver) is None:
        _fail(f"metadata format_version must be a positive integer in plain digits, got {ver!r}")
    if int(ver) > FORMAT_VERSION:
        _fail(f"model format version {int(ver)} is newer than this reader's version "
              f"{FORMAT_VERSION}")
    if "config" not in meta:
        _fail("metadata lacks 'config'")
    config = validate_config(parse_config(meta["config"]))

    buf = memoryview(data)[8 + n:]
    tensors = {}
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict):
            _fail(f"tensor {name}: header entry is not an object")
        if set(info) != {"dtype", "shape", "data_offsets"}:
            _fail(f"tensor {name}: its entry holds the keys {sorted(info)}, not exactly dtype, "
                  f"shape and data_offsets")
        dt = info["dtype"]
        if not isinstance(dt, str) or dt not in _DTYPES:
            _fail(f"tensor {name}: dtype {dt!r} not accepted (F64 or F32)")
        shape = info["shape"]
        offs = info["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= _MAX_SHAPE
                       for s in shape)):
            _fail(f"tensor {name}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offs)):
            _fail(f"tensor {name}: bad data_offsets {offs!r}")
        b, e = offs
        size = math.prod(shape) * _DTYPES[dt].itemsize
        if not (0 <= b <= e <= len(buf)):
            _fail(f"tensor {name}: data_offsets {offs} outside the data buffer "
                  f"({len(buf)} bytes)")
        if e - b != size:
            _fail(f"tensor {name}: data_offsets span {e - b} bytes, shape {shape} {dt} "
                  f"needs {size}")
        ranges.append((b, e, name))
        arr = np.frombuffer(buf[b:e], dtype=_DTYPES[dt]).reshape(shape).astype(np.float64)
        if not np.isfinite(arr).all():
            _fail(f"tensor {name} has non-finite values")
        tensors[name] = arr
    # The ranges tile the data buffer: no overlap, no gap, no trailing bytes.
    # Overlaps first (the worse fault, and the one to name), then gaps.
    ranges.sort()
    for (_, e0, n0), (b1, _, n1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            _fail(f"tensors {n0} and {n1} overlap in the data buffer")
    at = 0
    for b, e, name in ranges:
        if b > at:
            _fail(f"a gap of {b - at} bytes in the data buffer before tensor {name} (the tensors "
                  f"must tile the buffer)")
        at = e
    if at != len(buf):
        _fail(f"{len(buf) - at} bytes after the last tensor's data (the tensors must tile the "
              f"data buffer)")

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
    if config.get("kind") == FREE_FORM:
        _check_free_form_bounds(config, tensors)
        return config, meta, tensors
    lo, hi = tensors["bond_lo"], tensors["bond_hi"]
    if not (hi > lo).all():
        d = int(np.nonzero(~(hi > lo))[0][0])
        _fail(f"bond_hi[{d}] = {hi[d]} does not exceed bond_lo[{d}] = {lo[d]}")
    if not (lo >= 0).all():
        d = int(np.nonzero(~(lo >= 0))[0][0])
        _fail(f"bond_lo[{d}] = {lo[d]} is negative (a bond length is >= 0 nm)")
    within = (hi <= _MAX_BOND) & (hi - lo >= _MIN_BOND_WIDTH)
    if not within.all():
        d = int(np.nonzero(~within)[0][0])
        _fail(f"bond {d} has bounds [{lo[d]}, {hi[d]}] nm: need bond_hi <= {_MAX_BOND:g} nm and "
              f"bond_hi - bond_lo >= {_MIN_BOND_WIDTH:g} nm")
    _check_net_bounds(config, tensors)
    return config, meta, tensors


def flow_from_config(config: Mapping, tensors: Mapping[str, np.ndarray],
                     dtype: torch.dtype = torch.float64) -> SmoothFlow:
    """Build a :class:`SmoothFlow` from a validated config and its tensors.

    Raises
    ------
    ModelFormatError
        The config is a free-form model's (``smoothflow_torch.particles.export.load_free_form``
        loads those).
    """
    if config.get("kind") == FREE_FORM:
        _fail("the model file holds a free-form flow's encoder ('kind': 'free_form'), not a flow over internal "
              "coordinates: load it with smoothflow_torch.particles.export.load_free_form")
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
    return load_model_bytes(read_model_file(path), dtype)


def read_model_file(path) -> bytes:
    """The bytes of a model file: only a regular file (not a directory, a device such as
    /dev/zero or a FIFO), of at most 1 GiB (docs/model-format.md section 1, "Limits").

    Raises
    ------
    ModelFormatError
        The path names no regular file, or one that is too large.
    OSError
        It cannot be opened or read.
    """
    path = os.fspath(path)
    # O_NONBLOCK: a FIFO without a writer would otherwise block the open itself
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _fail(f"model file {path!r} is not a regular file (a directory, device or pipe)")
        if info.st_size > _MAX_FILE:
            _fail(f"model file {path!r} is {info.st_size} bytes, more than the limit of "
                  f"{_MAX_FILE} bytes (1 GiB)")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        _fail(f"model file {path!r} is more than the limit of {_MAX_FILE} bytes (1 GiB)")
    return data
