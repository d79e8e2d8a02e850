"""Coupling layers: a conditioner and an elementwise transformer on a split of the dims."""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn

from .conditioner import ACTIVATIONS, MLPConditioner
from .transforms import TRANSFORMS, make_transformer

__all__ = ["DIRECTIONS", "TRANSFORMS", "CouplingLayer", "SmoothCouplingLayer"]

#: ``generative``: the transform is defined z -> u (density evaluation inverts it: root
#: finding for smooth, closed forms for spline and affine); ``density``: defined u -> z.
DIRECTIONS = ("generative", "density")


class CouplingLayer(nn.Module):
    """A coupling layer with a smooth, spline or affine elementwise transform.

    The layer maps the latent side x to the data side y (the generative direction, as
    every layer of a :class:`~smoothflow_torch.flow.SmoothFlow` is stored): the
    dimensions in ``transformed`` change, the ``conditioning`` ones are copied and feed
    the conditioner. In the manner of bgflow's ``CouplingFlow``,
    ``forward(x, inverse=False)`` returns ``(y, dlogp)`` with ``dlogp = log |det dy/dx|``.

    Parameters
    ----------
    transformed : sequence of int
        Transformed dimensions (non-empty, no repeats).
    conditioning : sequence of int
        Conditioning dimensions (no repeats, disjoint from ``transformed``, may be empty).
    circular : sequence of bool
        For every dimension of the flow, whether it is circular.
    n_components : int
        K: mixture components (smooth) or bins (spline); ignored by affine.
    hidden : sequence of int
        Hidden widths of the conditioner.
    activation : str
        ``tanh``, ``silu`` or ``softplus``.
    direction : str
        ``generative`` (the transform T is applied z -> u, so ``y = T(x)``) or ``density``
        (T is applied u -> z, so ``y = T^-1(x)``).
    constants : SmoothConstants, SplineConstants, AffineConstants, dict or None
        The constants of the layer's kind (default: that kind's defaults).
    zero_init : bool
        Zero-initialize the conditioner's last linear map.
    dtype : torch.dtype
    transform : str
        ``smooth`` (default), ``spline`` or ``affine``.
    """

    def __init__(self, transformed: Sequence[int], conditioning: Sequence[int],
                 circular: Sequence[bool], n_components: int = 8,
                 hidden: Sequence[int] = (64, 64), activation: str = "silu",
                 direction: str = "generative", constants=None,
                 zero_init: bool = True, dtype: torch.dtype = torch.float64,
                 transform: str = "smooth"):
        super().__init__()
        circular = [bool(c) for c in circular]
        D = len(circular)
        transformed = [int(i) for i in transformed]
        conditioning = [int(i) for i in conditioning]
        if not transformed:
            raise ValueError("a coupling layer needs at least one transformed dimension")
        for name, idx in (("transformed", transformed), ("conditioning", conditioning)):
            if len(set(idx)) != len(idx):
                raise ValueError(f"{name} dimensions repeat: {idx}")
            bad = [i for i in idx if not 0 <= i < D]
            if bad:
                raise ValueError(f"{name} dimensions {bad} outside 0..{D - 1}")
        overlap = sorted(set(transformed) & set(conditioning))
        if overlap:
            raise ValueError(f"transformed and conditioning dimensions overlap: {overlap}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.transform = transform
        self.transformed = transformed
        self.conditioning = conditioning
        self.direction = direction
        self.n_components = int(n_components)
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        self.register_buffer("_t_idx", torch.tensor(transformed, dtype=torch.long),
                             persistent=False)
        self.register_buffer("_c_idx", torch.tensor(conditioning, dtype=torch.long),
                             persistent=False)
        self.transformer = make_transformer(transform, n_components,
                                            [circular[i] for i in transformed], constants)
        P = self.transformer.params_per_dim
        self.net = MLPConditioner([circular[i] for i in conditioning], self.hidden,
                                  len(transformed) * P, activation, zero_init, dtype)
        if zero_init:
            # The zeroed last map's bias sets every new transform; the smooth kind needs
            # distinct components there (SmoothTransformer.initial_raw).
            with torch.no_grad():
                self.net[-1].bias.copy_(self.transformer.initial_raw(dtype).repeat(len(transformed)))

    def config(self) -> dict:
        """The layer's entry of the model file's ``layers`` list."""
        return {"transform": self.transform, "direction": self.direction,
                "transformed": list(self.transformed), "conditioning": list(self.conditioning),
                "n_components": self.n_components, "hidden": list(self.hidden),
                "activation": self.activation}

    def raw_parameters(self, x: torch.Tensor) -> torch.Tensor:
        """Raw transform parameters, shape ``(B, len(transformed), P)``."""
        out = self.net(x.index_select(1, self._c_idx))
        return out.reshape(x.shape[0], len(self.transformed), self.transformer.params_per_dim)

    def forward(self, x: torch.Tensor, inverse: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(B, D)``: latent side (``inverse=False``) or data side (``inverse=True``).
        inverse : bool
            False: generative pass z -> u. True: density pass u -> z.

        Returns
        -------
        y : torch.Tensor
            Shape ``(B, D)``.
        dlogp : torch.Tensor
            ``log |det dy/dx|``, shape ``(B,)``.
        """
        raw = self.raw_parameters(x)
        xt = x.index_select(1, self._t_idx)
        # the transform T runs forward in the direction the layer is defined in
        run_inverse = inverse if self.direction == "generative" else not inverse
        if self.transform == "affine":
            # faces of the cube are outside the affine support: density zero there
            face = -math.inf if inverse else math.inf
            yt, logdet = self.transformer(xt, raw, inverse=run_inverse, face_logdet=face)
        else:
            yt, logdet = self.transformer(xt, raw, inverse=run_inverse)
        y = x.index_copy(1, self._t_idx, yt)
        return y, logdet.sum(-1)


#: The former name, kept for compatibility: every kind is a :class:`CouplingLayer`.
SmoothCouplingLayer = CouplingLayer
