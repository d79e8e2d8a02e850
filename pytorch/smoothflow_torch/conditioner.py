"""Conditioner networks: plain MLPs over encoded conditioning dimensions."""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence

import torch
from torch import nn

from .transforms import exact_softplus

__all__ = ["ACTIVATIONS", "activation_function", "encode", "encoded_width", "MLPConditioner"]

#: Smooth activations allowed in a model file (never ReLU: the energy must be C-infinity).
ACTIVATIONS = ("tanh", "silu", "softplus")


def activation_function(name: str):
    """The activation called ``name`` (``tanh``, ``silu`` or exact ``softplus``)."""
    if name == "tanh":
        return torch.tanh
    if name == "silu":
        return lambda x: x * torch.sigmoid(x)
    if name == "softplus":
        return exact_softplus
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def encoded_width(circular: Sequence[bool]) -> int:
    """Number of features of the encoding: 1 per interval, 2 per circular dimension."""
    return sum(2 if c else 1 for c in circular)


def _encoding_index(circular: Sequence[bool]) -> List[int]:
    """Column order that takes [2u-1 (n), cos (n), sin (n)] to the documented encoding."""
    n = len(circular)
    idx = []
    for i, circ in enumerate(circular):
        idx.extend([n + i, 2 * n + i] if circ else [i])
    return idx


def encode(u: torch.Tensor, circular: Sequence[bool], index: Optional[torch.Tensor] = None
           ) -> torch.Tensor:
    """Encode conditioning dimensions as network inputs.

    Interval dimensions enter as ``2u - 1``, circular ones as ``(cos 2 pi u, sin 2 pi u)``,
    in the order of the columns of ``u``.

    Parameters
    ----------
    u : torch.Tensor
        Shape ``(B, n)``.
    circular : sequence of bool
        Length n.
    index : torch.Tensor, optional
        Precomputed column order (see :class:`MLPConditioner`).

    Returns
    -------
    torch.Tensor
        Shape ``(B, encoded_width(circular))``.
    """
    if index is None:
        index = torch.tensor(_encoding_index(circular), dtype=torch.long, device=u.device)
    a = (2.0 * math.pi) * u
    features = torch.cat([2.0 * u - 1.0, torch.cos(a), torch.sin(a)], dim=-1)
    return features.index_select(-1, index)


class MLPConditioner(nn.ModuleList):
    """A multilayer perceptron over encoded conditioning dimensions.

    The module is the list of its linear maps (so a coupling layer's ``net.{m}.weight``
    is the m-th map, as in the model file); the activation follows every linear map but
    the last.

    Parameters
    ----------
    circular : sequence of bool
        For each conditioning dimension, whether it is circular (encoding, see
        :func:`encode`).
    hidden : sequence of int
        Hidden widths (may be empty: one linear map).
    n_out : int
        Output width.
    activation : str
        ``tanh``, ``silu`` or ``softplus``.
    zero_init : bool
        Zero the last linear map (weights and bias), so that a new flow's transforms
        do not depend on the conditioning input.
    dtype : torch.dtype
    """

    def __init__(self, circular: Sequence[bool], hidden: Sequence[int], n_out: int,
                 activation: str = "silu", zero_init: bool = True,
                 dtype: torch.dtype = torch.float64):
        self.circular = [bool(c) for c in circular]
        self.hidden = [int(h) for h in hidden]
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
        self.activation = activation
        widths = [encoded_width(self.circular)] + self.hidden + [int(n_out)]
        linears = []
        for i in range(len(widths) - 1):
            if widths[i] == 0:
                # no conditioning input: only the bias acts
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    lin = nn.Linear(0, widths[i + 1], dtype=dtype)
                with torch.no_grad():
                    lin.bias.uniform_(-1.0, 1.0)
            else:
                lin = nn.Linear(widths[i], widths[i + 1], dtype=dtype)
            linears.append(lin)
        super().__init__(linears)
        self._act = activation_function(activation)
        self.register_buffer("_encoding_index",
                             torch.tensor(_encoding_index(self.circular), dtype=torch.long),
                             persistent=False)
        if zero_init:
            with torch.no_grad():
                self[-1].weight.zero_()
                self[-1].bias.zero_()

    @property
    def in_features(self) -> int:
        return self[0].in_features

    @property
    def out_features(self) -> int:
        return self[-1].out_features

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Raw outputs for conditioning values ``u`` of shape ``(B, n)``."""
        h = encode(u, self.circular, self._encoding_index)
        last = len(self) - 1
        for m, lin in enumerate(self):
            h = lin(h)
            if m < last:
                h = self._act(h)
        return h
