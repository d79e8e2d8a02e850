"""The smooth mixture transform: a C-infinity monotone map of [0, 1] or the circle.

This is section 4 of ``docs/flow-math.md``. For one dimension x in [0, 1] and K
components, the raw conditioner outputs

    [w~_1..w~_K, b~_1..b~_K, s~_1..s~_K, a~_1..a~_K, c~, t~]      (P = 4K + 2 values)

are mapped to

    w = softmax(w~),  b = sigmoid(b~),  s = s_min + (1 - s_min) sigmoid(s~),
    alpha = alpha_min + softplus(a~),  c = c_max sigmoid(c~),  t = t~

and the transform is

    F(x) = (1 - c) x + c sum_k w_k sigma_{alpha_k}(h_k(x)),   h_k = (x - b_k (1 - s_k)) / s_k
    sigma_alpha(h) = logistic(alpha ((1 - h)^-beta - h^-beta))  for 0 < h < 1

on the interval ``y = F(x)``, on the circle ``y = (F(x) + t) mod 1``.

The inverse is found by a bracketed Newton iteration with a bisection safeguard, run
without autograd to full working precision. It is re-attached to the autograd graph
by two *differentiable* Newton steps taken from the detached root ``x0``:

    x1 = x0 - (F(x0) - y) / F'(x0),    x2 = x1 - (F(x1) - y) / F'(x1)

Because the Newton map N has N(x*) = x* and dN/dx (x*) = 0 identically on the root
manifold, an estimate whose derivatives are exact up to order n becomes, after one
Newton step, exact up to order 2n + 1. The detached root is exact to order 0, so x1 has
the exact first derivatives (the inverse function theorem: dx/dy = 1/F', dx/dtheta =
-F_theta/F') and x2 the exact derivatives up to third order. This is what force
matching needs (the gradient with respect to the parameters of a force, i.e. second
derivatives of the energy), and it composes with autograd without a custom
``torch.autograd.Function``. The value of x2 equals the root to working precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch

__all__ = [
    "LOGISTIC_SATURATION",
    "SmoothConstants",
    "SmoothParameters",
    "SmoothTransformer",
    "exact_softplus",
    "smooth_parameters",
    "smooth_step",
    "smooth_mixture",
    "smooth_forward",
    "smooth_inverse",
    "solve_inverse",
]

#: |L| beyond which the logistic ramp is treated as exactly 0 or 1 (derivatives 0).
LOGISTIC_SATURATION = 700.0


def exact_softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` without the threshold linearization of ``F.softplus``.

    Parameters
    ----------
    x : torch.Tensor

    Returns
    -------
    torch.Tensor
        ``logaddexp(x, 0)``, exact in the working precision for every x.
    """
    return torch.logaddexp(x, torch.zeros_like(x))


@dataclass(frozen=True)
class SmoothConstants:
    """Constants of the smooth transform, stored in the model file (``smooth``).

    Parameters
    ----------
    s_min : float
        Smallest window width, in (0, 1).
    alpha_min : float
        Smallest ramp sharpness, > 0.
    c_max : float
        Largest weight of the non-linear part, in (0, 1); F' >= 1 - c_max.
    beta : int
        Integer ramp power, >= 1.
    """

    s_min: float = 0.01
    alpha_min: float = 0.1
    c_max: float = 0.99
    beta: int = 1

    def __post_init__(self):
        if not (0.0 < self.s_min < 1.0):
            raise ValueError(f"smooth.s_min must lie in (0, 1), got {self.s_min!r}")
        if not (self.alpha_min > 0.0 and math.isfinite(self.alpha_min)):
            raise ValueError(f"smooth.alpha_min must be > 0, got {self.alpha_min!r}")
        if not (0.0 < self.c_max < 1.0):
            raise ValueError(f"smooth.c_max must lie in (0, 1), got {self.c_max!r}")
        if isinstance(self.beta, bool) or int(self.beta) != self.beta or self.beta < 1:
            raise ValueError(f"smooth.beta must be an integer >= 1, got {self.beta!r}")
        object.__setattr__(self, "beta", int(self.beta))

    def to_dict(self) -> dict:
        return {"s_min": float(self.s_min), "alpha_min": float(self.alpha_min),
                "c_max": float(self.c_max), "beta": int(self.beta)}


class SmoothParameters(NamedTuple):
    """Constrained parameters of the transform of each dimension.

    ``w, b, s, alpha`` have shape ``(..., K)``; ``c`` and ``t`` shape ``(...)``.
    """

    w: torch.Tensor
    b: torch.Tensor
    s: torch.Tensor
    alpha: torch.Tensor
    c: torch.Tensor
    t: torch.Tensor

    def detach(self) -> "SmoothParameters":
        return SmoothParameters(*(p.detach() for p in self))


def smooth_parameters(raw: torch.Tensor, n_components: int,
                      constants: SmoothConstants) -> SmoothParameters:
    """Map raw conditioner outputs to the transform's parameters.

    Parameters
    ----------
    raw : torch.Tensor
        Shape ``(..., 4K + 2)``, layout ``[w~(K), b~(K), s~(K), a~(K), c~, t~]``.
    n_components : int
        K.
    constants : SmoothConstants

    Returns
    -------
    SmoothParameters
    """
    K = n_components
    if raw.shape[-1] != 4 * K + 2:
        raise ValueError(f"expected {4 * K + 2} raw values per dimension for K = {K}, "
                         f"got {raw.shape[-1]}")
    w = torch.softmax(raw[..., 0:K], dim=-1)
    b = torch.sigmoid(raw[..., K:2 * K])
    s = constants.s_min + (1.0 - constants.s_min) * torch.sigmoid(raw[..., 2 * K:3 * K])
    alpha = constants.alpha_min + exact_softplus(raw[..., 3 * K:4 * K])
    c = constants.c_max * torch.sigmoid(raw[..., 4 * K])
    t = raw[..., 4 * K + 1]
    return SmoothParameters(w, b, s, alpha, c, t)


def _logistic_pair(L: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(logistic(L), 1 - logistic(L))`` in the stable form, with exact autograd.

    With e = exp(-|L|): logistic(L) = 1/(1+e) for L >= 0 and e/(1+e) otherwise. Unlike
    ``torch.sigmoid``, whose backward forms sigma (1 - sigma) from the rounded output,
    the derivative of this expression keeps full relative precision in the tails.
    """
    pos = L >= 0
    e = torch.exp(torch.where(pos, -L, L))
    inv = 1.0 / (1.0 + e)
    return torch.where(pos, inv, e * inv), torch.where(pos, e * inv, inv)


def smooth_step(h: torch.Tensor, alpha: torch.Tensor, beta: int, order: int = 1
                ) -> Tuple[torch.Tensor, ...]:
    """The smooth step sigma_alpha(h) and its derivatives with respect to h.

    ``sigma = logistic(L)``, ``L = alpha ((1 - h)^-beta - h^-beta)`` for 0 < h < 1, 0 for
    h <= 0 and 1 for h >= 1. Where ``|L| > LOGISTIC_SATURATION`` the component is
    saturated: sigma is 0 or 1 and its derivatives are 0. Saturated entries are
    evaluated at a safe point (h = 1/2) so that no inf or NaN enters the graph.

    Parameters
    ----------
    h : torch.Tensor
    alpha : torch.Tensor
        Broadcastable to ``h``.
    beta : int
    order : int
        Highest derivative returned (0, 1 or 2).

    Returns
    -------
    tuple of torch.Tensor
        ``(sigma,)``, ``(sigma, sigma')`` or ``(sigma, sigma', sigma'')``.
    """
    with torch.no_grad():
        hd = h.detach()
        inside = (hd > 0) & (hd < 1)
        hsafe = torch.where(inside, hd, torch.full_like(hd, 0.5))
        L0 = alpha.detach() * ((1.0 - hsafe) ** (-beta) - hsafe ** (-beta))
        upper = (hd >= 1) | (inside & (L0 > LOGISTIC_SATURATION))
        lower = (hd <= 0) | (inside & (L0 < -LOGISTIC_SATURATION))
        saturated = upper | lower
    hs = torch.where(saturated, torch.full_like(h, 0.5), h)
    p = 1.0 / (1.0 - hs)
    q = 1.0 / hs
    L = alpha * (p ** beta - q ** beta)
    sig, sigc = _logistic_pair(L)
    zero = torch.zeros_like(sig)
    s0 = torch.where(upper, torch.ones_like(sig), torch.where(lower, zero, sig))
    if order == 0:
        return (s0,)
    L1 = alpha * beta * (p ** (beta + 1) + q ** (beta + 1))
    ss = sig * sigc
    s1 = torch.where(saturated, zero, ss * L1)
    if order == 1:
        return s0, s1
    L2 = alpha * (beta * (beta + 1)) * (p ** (beta + 2) - q ** (beta + 2))
    s2 = torch.where(saturated, zero, ss * ((sigc - sig) * L1 * L1 + L2))
    return s0, s1, s2


def smooth_mixture(x: torch.Tensor, params: SmoothParameters, beta: int, order: int = 1
                   ) -> Tuple[torch.Tensor, ...]:
    """F(x) on [0, 1] (no circular shift) and its derivatives with respect to x.

    Parameters
    ----------
    x : torch.Tensor
        Shape ``(...)``.
    params : SmoothParameters
        Broadcastable to ``x`` (components in the last axis of w, b, s, alpha).
    beta : int
    order : int
        0, 1 or 2.

    Returns
    -------
    tuple of torch.Tensor
        ``(F,)``, ``(F, F')`` or ``(F, F', F'')``.
    """
    w, b, s, alpha, c, _ = params
    h = (x.unsqueeze(-1) - b * (1.0 - s)) / s
    steps = smooth_step(h, alpha, beta, order)
    F = (1.0 - c) * x + c * (w * steps[0]).sum(-1)
    if order == 0:
        return (F,)
    dF = (1.0 - c) + c * (w * steps[1] / s).sum(-1)
    if order == 1:
        return F, dF
    d2F = c * (w * steps[2] / (s * s)).sum(-1)
    return F, dF, d2F


def _wrap(v: torch.Tensor) -> torch.Tensor:
    """``v mod 1`` as ``v - floor(v)`` (derivative 1)."""
    return v - torch.floor(v.detach())


def smooth_forward(x: torch.Tensor, params: SmoothParameters, circular: torch.Tensor,
                   beta: int, order: int = 1) -> Tuple[torch.Tensor, ...]:
    """y = T(x): ``F(x)`` on the interval, ``(F(x) + t) mod 1`` on the circle.

    Parameters
    ----------
    x : torch.Tensor
    params : SmoothParameters
    circular : torch.Tensor
        Boolean, broadcastable to ``x``.
    beta : int
    order : int

    Returns
    -------
    tuple of torch.Tensor
        ``(y, T', ...)`` up to ``order``; the derivatives are those of F.
    """
    out = smooth_mixture(x, params, beta, order)
    y = torch.where(circular, _wrap(out[0] + params.t), out[0])
    return (y,) + tuple(out[1:])


@torch.no_grad()
def solve_inverse(y: torch.Tensor, params: SmoothParameters, beta: int,
                  max_iter: int = 200) -> Tuple[torch.Tensor, int]:
    """Root of F(x) = y on [0, 1] by bracketed Newton with a bisection safeguard.

    No autograd. Each iteration shrinks the bracket [lo, hi] (F(lo) <= y <= F(hi)) with
    the evaluated point and takes the Newton step, unless it leaves the bracket or is
    longer than half the step before last (then it bisects, as ``rtsafe`` in Numerical
    Recipes). Iterates until every entry's step is below ``2 eps |x|`` (or the bracket
    has collapsed to adjacent floating-point numbers).

    Parameters
    ----------
    y : torch.Tensor
        Targets in [0, 1] (already unshifted for circular dimensions).
    params : SmoothParameters
    beta : int
    max_iter : int

    Returns
    -------
    x : torch.Tensor
    iterations : int
        Iterations of the slowest entry.

    Raises
    ------
    RuntimeError
        If some entry did not converge in ``max_iter`` iterations (non-finite input).
    """
    params = params.detach()
    y = y.detach()
    eps = torch.finfo(y.dtype).eps
    tiny = torch.finfo(y.dtype).tiny
    lo = torch.zeros_like(y)
    hi = torch.ones_like(y)
    x = y.clamp(0.0, 1.0)
    step_before = torch.ones_like(y)   # the step before the last one (rtsafe's dxold)
    step = torch.ones_like(y)
    active = torch.ones_like(y, dtype=torch.bool)
    for it in range(1, max_iter + 1):
        F, dF = smooth_mixture(x, params, beta, 1)
        f = F - y
        lo = torch.where(f <= 0, x, lo)
        hi = torch.where(f >= 0, x, hi)
        newton = f / dF
        xn = x - newton
        done = newton.abs() <= 2.0 * eps * x.abs() + tiny
        # bisect where Newton leaves the bracket or does not halve the step before last
        bisect = ~done & ((xn < lo) | (xn > hi) | ((2.0 * f).abs() > (step_before * dF).abs()))
        xn = torch.where(bisect, 0.5 * (lo + hi), xn)
        step_before = step
        step = xn - x
        converged = done | (step.abs() <= 2.0 * eps * xn.abs() + tiny)
        x = torch.where(active, xn, x)
        active = active & ~converged
        if not bool(active.any()):
            return x, it
    raise RuntimeError(
        f"inverse of the smooth transform did not converge in {max_iter} iterations "
        f"for {int(active.sum())} entries (non-finite targets or parameters?)")


def smooth_inverse(y: torch.Tensor, params: SmoothParameters, circular: torch.Tensor,
                   beta: int, return_derivative: bool = True
                   ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """x = T^-1(y), differentiable to third order in y and the parameters.

    Parameters
    ----------
    y : torch.Tensor
    params : SmoothParameters
    circular : torch.Tensor
        Boolean, broadcastable to ``y``; there ``x = F^-1((y - t) mod 1)``.
    beta : int
    return_derivative : bool
        Also return F'(x).

    Returns
    -------
    x : torch.Tensor
        In [0, 1].
    dF : torch.Tensor or None
        F'(x), so that ``log |dx/dy| = -log F'(x)``.

    Notes
    -----
    The root is found by :func:`solve_inverse` without autograd and re-attached by two
    differentiable Newton steps (see the module docstring), which reproduce the
    inverse-function-theorem derivatives exactly up to third order.
    """
    target = torch.where(circular, _wrap(y - params.t), y)
    x, _ = solve_inverse(target, params, beta)
    for _ in range(2):
        F, dF = smooth_mixture(x, params, beta, 1)
        x = x - (F - target) / dF
    # rounding (F(1) = 1 - c + c sum w) may leave x an ulp outside [0, 1]: move the
    # value back without touching the derivatives
    x = x - (x - x.clamp(0.0, 1.0)).detach()
    if not return_derivative:
        return x, None
    dF = smooth_mixture(x, params, beta, 1)[1]
    return x, dF


class SmoothTransformer(torch.nn.Module):
    """Elementwise smooth mixture transform driven by raw conditioner outputs.

    In the manner of bgflow's transformers: ``forward(x, raw, inverse=False)`` returns
    ``(y, dlogp)``.

    Parameters
    ----------
    n_components : int
        K >= 1.
    circular : sequence of bool
        One flag per transformed dimension.
    constants : SmoothConstants
    """

    def __init__(self, n_components: int, circular, constants: SmoothConstants):
        super().__init__()
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = int(n_components)
        self.constants = constants
        self.register_buffer("circular", torch.as_tensor(list(circular), dtype=torch.bool),
                             persistent=False)

    @property
    def params_per_dim(self) -> int:
        """P = 4K + 2."""
        return 4 * self.n_components + 2

    def parameters_from_raw(self, raw: torch.Tensor) -> SmoothParameters:
        """Constrained parameters from raw outputs of shape ``(B, n, P)``."""
        return smooth_parameters(raw, self.n_components, self.constants)

    def forward(self, x: torch.Tensor, raw: torch.Tensor, inverse: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Transform ``x`` (shape ``(B, n)``) with raw parameters ``(B, n, P)``.

        Parameters
        ----------
        x : torch.Tensor
        raw : torch.Tensor
        inverse : bool
            False: y = T(x), log-derivative log T'(x). True: y = T^-1(x), log-derivative
            -log T'(y).

        Returns
        -------
        y : torch.Tensor
            Shape ``(B, n)``.
        logdet : torch.Tensor
            Elementwise log |dy/dx|, shape ``(B, n)``.
        """
        params = self.parameters_from_raw(raw)
        beta = self.constants.beta
        if not inverse:
            y, dF = smooth_forward(x, params, self.circular, beta, 1)
            return y, torch.log(dF)
        y, dF = smooth_inverse(x, params, self.circular, beta)
        return y, -torch.log(dF)
