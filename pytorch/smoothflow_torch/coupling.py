"""Coupling layers: a conditioner and an elementwise transformer on a split of the dims."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from .conditioner import ACTIVATIONS, MLPConditioner
from .transforms import SmoothConstants, SmoothTransformer

__all__ = ["DIRECTIONS", "TRANSFORMS", "SmoothCouplingLayer"]

#: ``generative``: the transform is defined z -> u (density evaluation = root finding);
#: ``density``: defined u -> z (analytic density, sampling = root finding).
DIRECTIONS = ("generative", "density")
#: Transform kinds of format version 1 this trainer implements.
TRANSFORMS = ("smooth",)


class SmoothCouplingLayer(nn.Module):
    """A coupling layer with the smooth mixture transform.

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
        K.
    hidden : sequence of int
        Hidden widths of the conditioner.
    activation : str
        ``tanh``, ``silu`` or ``softplus``.
    direction : str
        ``generative`` (the transform T is applied z -> u, so ``y = T(x)``) or ``density``
        (T is applied u -> z, so ``y = T^-1(x)``).
    constants : SmoothConstants
    zero_init : bool
        Zero-initialize the conditioner's last linear map.
    dtype : torch.dtype
    """

    transform = "smooth"

    def __init__(self, transformed: Sequence[int], conditioning: Sequence[int],
                 circular: Sequence[bool], n_components: int = 8,
                 hidden: Sequence[int] = (64, 64), activation: str = "silu",
                 direction: str = "generative",
                 constants: SmoothConstants = SmoothConstants(),
                 zero_init: bool = True, dtype: torch.dtype = torch.float64):
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
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
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
        self.transformer = SmoothTransformer(n_components, [circular[i] for i in transformed],
                                             constants)
        P = self.transformer.params_per_dim
        self.net = MLPConditioner([circular[i] for i in conditioning], self.hidden,
                                  len(transformed) * P, activation, zero_init, dtype)

    def config(self) -> dict:
        """The layer's entry of the model file's ``layers`` list."""
        return {"transform": self.transform, "direction": self.direction,
                "transformed": list(self.transformed), "conditioning": list(self.conditioning),
                "n_components": self.n_components, "hidden": list(self.hidden),
                "activation": self.activation}

    def raw_parameters(self, x: torch.Tensor) -> torch.Tensor:
        """Raw transform parameters, shape ``(B, len(transformed), 4K + 2)``."""
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
        yt, logdet = self.transformer(xt, raw, inverse=run_inverse)
        y = x.index_copy(1, self._t_idx, yt)
        return y, logdet.sum(-1)
