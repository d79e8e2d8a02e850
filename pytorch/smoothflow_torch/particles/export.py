"""A free-form flow's encoder as a SmoothFlow model file (``docs/model-format.md`` section 9).

The file holds the encoder f only (an :class:`~smoothflow_torch.particles.egnn.EGNN`): the
decoder g is a training device and plays no part in the potential

    U(x) = -kT [log N(f(x); 0, I_D) + log |det J_V(x)|] + U0,

which the C core evaluates, with its exact forces, from the same file. The tensors are the
encoder's ``state_dict`` as it is (h0, layers.{k}.edge.0.weight, ...); the configuration
carries what the module's constructor needs and the potential's constants:

>>> export_free_form(encoder, "lj13.safetensors", temperature=120.27)
>>> encoder = load_free_form("lj13.safetensors")
"""
from __future__ import annotations

import json
import math
import os
import uuid
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..export import (FORMAT, FORMAT_VERSION, FREE_FORM, ModelFormatError, expected_tensor_shapes,
                      read_model_bytes, read_model_file, validate_config)
from .egnn import EGNN

__all__ = ["free_form_config", "free_form_to_bytes", "export_free_form", "encoder_from_config",
           "load_free_form_bytes", "load_free_form"]


def _distance_scale(inv_scale2: float) -> float:
    """The s whose 1 / (s * s) (the C core's form, and EGNN's 1 / s ** 2) is ``inv_scale2`` to
    the bit, where one of the doubles next to 1 / sqrt(inv_scale2) has it: EGNN keeps only
    1 / s^2, the file stores s."""
    s = 1.0 / math.sqrt(inv_scale2)
    for candidate in (s, math.nextafter(s, math.inf), math.nextafter(s, 0.0),
                      math.nextafter(math.nextafter(s, math.inf), math.inf),
                      math.nextafter(math.nextafter(s, 0.0), 0.0)):
        if 1.0 / (candidate * candidate) == inv_scale2:
            return candidate
    return s


def free_form_config(encoder: EGNN, temperature: float, atoms: Optional[Sequence[Mapping]] = None,
                     energy_offset: float = 0.0) -> dict:
    """The ``config`` of a free-form model file for ``encoder`` (validated, defaults filled in).

    Parameters
    ----------
    encoder : EGNN
        The free-form flow's encoder f.
    temperature : float
        T in kelvin; kT = R T (R = 0.00831446261815324 kJ/mol/K). Reduced units with kT = 1
        are T = 1 / R = 120.272 K (``docs/particle-systems.md`` section 2).
    atoms : sequence of mappings, optional
        One entry per particle with ``name``, ``residue``, ``residue_index`` and ``element``
        (used only to map the model onto an OpenMM Topology).
    energy_offset : float
        U0 in kJ/mol.

    Raises
    ------
    ModelFormatError
        The encoder or the constants are outside the format (the message says which).
    """
    if not isinstance(encoder, EGNN):
        raise TypeError(f"free_form_config: expected a particles.egnn.EGNN, got {type(encoder).__name__}")
    config = {"kind": FREE_FORM, "n_atoms": int(encoder.n_particles), "temperature": float(temperature),
              "energy_offset": float(energy_offset)}
    if atoms is not None:
        config["atoms"] = [dict(a) for a in atoms]
    config["network"] = {"kind": "egnn", "spatial_dim": int(encoder.spatial_dim),
                         "hidden": int(encoder.h0.shape[0]), "layers": len(encoder.layers),
                         "distance_scale": _distance_scale(float(encoder.inv_scale2))}
    config["latent"] = "standard_normal_com_free"
    return validate_config(config)


def free_form_to_bytes(encoder: EGNN, temperature: float, atoms: Optional[Sequence[Mapping]] = None,
                       energy_offset: float = 0.0, extra_metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The bytes of a free-form model file (see :func:`free_form_config`); ``extra_metadata``
    adds ``__metadata__`` entries (not ``format``, ``format_version`` or ``config``)."""
    import safetensors.torch

    config = free_form_config(encoder, temperature, atoms, energy_offset)
    tensors = {}
    for name, t in encoder.state_dict().items():
        t = t.detach().to(device="cpu", dtype=torch.float64).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"tensor {name} has non-finite values")
        tensors[name] = t
    expected = expected_tensor_shapes(config)
    if set(tensors) != set(expected) or any(tuple(tensors[k].shape) != v for k, v in expected.items()):
        raise ModelFormatError(f"the encoder's state_dict {sorted(tensors)} differs from the format's "
                               f"{sorted(expected)}")
    metadata = {}
    for k, v in (extra_metadata or {}).items():
        if k in ("format", "format_version", "config"):
            raise ValueError(f"extra_metadata may not set the reserved key {k!r}")
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError("metadata keys and values must be strings")
        metadata[k] = v
    metadata.update({"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(config)})
    data = safetensors.torch.save(tensors, metadata=metadata)
    read_model_bytes(data)          # the tensor bounds: refuse to write what no reader accepts
    return data


def export_free_form(encoder: EGNN, path, temperature: float, atoms: Optional[Sequence[Mapping]] = None,
                     energy_offset: float = 0.0, extra_metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``encoder`` as a free-form model file at ``path`` (atomically).

    Parameters as :func:`free_form_config` and :func:`free_form_to_bytes`.
    """
    data = free_form_to_bytes(encoder, temperature, atoms, energy_offset, extra_metadata)
    path = os.path.abspath(os.fspath(path))
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def encoder_from_config(config: Mapping, tensors: Mapping[str, np.ndarray],
                        dtype: torch.dtype = torch.float64) -> EGNN:
    """An :class:`EGNN` from a validated free-form config and its tensors."""
    if config.get("kind") != FREE_FORM:
        raise ModelFormatError("the model file holds a flow over internal coordinates, not a free-form "
                               "encoder: load it with smoothflow_torch.load_model")
    net = config["network"]
    encoder = EGNN(config["n_atoms"], net["spatial_dim"], hidden=net["hidden"], layers=net["layers"],
                   distance_scale=net["distance_scale"], coord_gain=1.0).to(dtype)
    state = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=dtype) for k, v in tensors.items()}
    encoder.load_state_dict(state, strict=True)
    return encoder


def load_free_form_bytes(data: bytes, dtype: torch.dtype = torch.float64) -> EGNN:
    """The encoder of a free-form model file's bytes (validated as the C core validates them)."""
    config, _, tensors = read_model_bytes(data)
    return encoder_from_config(config, tensors, dtype)


def load_free_form(path, dtype: torch.dtype = torch.float64) -> EGNN:
    """The encoder of a free-form model file.

    Raises
    ------
    ModelFormatError
        Not a valid model file, or one over internal coordinates; the message says why.
    """
    return load_free_form_bytes(read_model_file(path), dtype)
