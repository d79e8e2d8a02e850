"""The elementwise transforms of a coupling layer.

Three kinds, selected by a layer's ``transform`` (``docs/model-format.md``):

``smooth``  the C-infinity smooth mixture transform (``docs/flow-math.md`` sections 4-5),
            P = 4K + 2 raw values per dimension, inverse by root finding;
``spline``  the rational-quadratic spline of Durkan et al. (2019), with a circular variant,
            P = 3K + 2, analytic inverse (``docs/model-format.md`` 7.1);
``affine``  RealNVP in logit space, P = 2, analytic inverse (``docs/model-format.md`` 7.2).

The smooth mixture transform
----------------------------
A C-infinity monotone map of [0, 1] or the circle: section 4 of ``docs/flow-math.md``.
For one dimension x in [0, 1] and K components, the raw conditioner outputs

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

The baselines
-------------
The spline and the affine transform have analytic inverses, so their derivatives of
every order are plain autograd through closed forms (no inverse function theorem, no
iteration). See the section "Baseline transforms" below.
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
    "TRANSFORMS",
    "params_per_dim",
    "SplineConstants",
    "SplineParameters",
    "SplineTransformer",
    "spline_parameters",
    "rq_spline",
    "rq_spline_inverse",
    "spline_forward",
    "spline_inverse",
    "AffineConstants",
    "AffineTransformer",
    "affine_parameters",
    "affine_forward",
    "affine_inverse",
    "make_transformer",
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
        # 1..8: the model format's range (model_config.schema.json), so a flow that trains
        # also exports
        if isinstance(self.beta, bool) or int(self.beta) != self.beta or not 1 <= self.beta <= 8:
            raise ValueError(f"smooth.beta must be an integer in 1..8, got {self.beta!r}")
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


class _MixtureTransformer(torch.nn.Module):
    """What the smooth and spline transformers share: K, the circular flags, the constants,
    and P from :func:`params_per_dim`."""

    kind = ""

    def __init__(self, n_components: int, circular, constants):
        super().__init__()
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = int(n_components)
        self.constants = constants
        self.register_buffer("circular", torch.as_tensor(list(circular), dtype=torch.bool),
                             persistent=False)

    @property
    def params_per_dim(self) -> int:
        """P of this kind (see :func:`params_per_dim`)."""
        return params_per_dim(self.kind, self.n_components)

    def initial_raw(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Raw parameters ``(P,)`` of a new transform (the bias of a zero-initialized
        conditioner's last map): zeros."""
        return torch.zeros(self.params_per_dim, dtype=dtype)


class SmoothTransformer(_MixtureTransformer):
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

    kind = "smooth"

    def initial_raw(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Raw parameters ``(P,)`` of a new transform: zeros, except the window positions
        b_k = (k + 1/2) / K.

        With all raw values equal the K components are exchangeable: each gets the same
        gradient, so training never tells them apart and the mixture stays one component
        (seen in trained alanine dipeptide flows: most layers' components identical to the
        last bit). Distinct positions break that symmetry.
        """
        K = self.n_components
        raw = torch.zeros(self.params_per_dim, dtype=dtype)
        b = (torch.arange(K, dtype=dtype) + 0.5) / K
        raw[K:2 * K] = torch.log(b) - torch.log1p(-b)
        return raw

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


# =====================================================================================
# Baseline transforms (docs/model-format.md section 7)
# =====================================================================================

#: Transform kinds of format version 1, each with its raw block size P(K).
TRANSFORMS = ("smooth", "spline", "affine")


def params_per_dim(transform: str, n_components: int) -> int:
    """Raw parameters per transformed dimension, P: 4K + 2 (smooth), 3K + 2 (spline), 2 (affine).

    Parameters
    ----------
    transform : str
        ``smooth``, ``spline`` or ``affine``.
    n_components : int
        K (ignored by ``affine``).

    Returns
    -------
    int
    """
    K = int(n_components)
    if transform == "smooth":
        return 4 * K + 2
    if transform == "spline":
        return 3 * K + 2
    if transform == "affine":
        return 2
    raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")


def _clamp01(v: torch.Tensor) -> torch.Tensor:
    """``v`` moved into [0, 1] by value only (rounding may leave it an ulp outside);
    derivatives untouched."""
    return v - (v - v.detach().clamp(0.0, 1.0)).detach()


def _positive_finite(v, what: str, below_one: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {v!r}")
    if below_one and not v < 1:
        raise ValueError(f"{what} must be < 1, got {v!r}")
    return float(v)


# ------------------------------------------------------------------ spline
@dataclass(frozen=True)
class SplineConstants:
    """Constants of the rational-quadratic spline, stored in the model file (``spline``).

    Parameters
    ----------
    min_bin_width : float
        m_w > 0; every bin width is >= m_w, and K m_w < 1 is required for K bins.
    min_bin_height : float
        m_h > 0, likewise for the heights (K m_h < 1).
    min_derivative : float
        m_d > 0; every knot derivative is >= m_d.
    """

    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "min_bin_width",
                           _positive_finite(self.min_bin_width, "spline.min_bin_width", True))
        object.__setattr__(self, "min_bin_height",
                           _positive_finite(self.min_bin_height, "spline.min_bin_height", True))
        object.__setattr__(self, "min_derivative",
                           _positive_finite(self.min_derivative, "spline.min_derivative"))

    def check(self, n_bins: int) -> None:
        """Raise ValueError unless K m_w < 1 and K m_h < 1 for K = ``n_bins``."""
        K = int(n_bins)
        if not K * self.min_bin_width < 1.0:
            raise ValueError(f"spline with K = {K} bins needs K * min_bin_width < 1, "
                             f"got min_bin_width = {self.min_bin_width}")
        if not K * self.min_bin_height < 1.0:
            raise ValueError(f"spline with K = {K} bins needs K * min_bin_height < 1, "
                             f"got min_bin_height = {self.min_bin_height}")

    def to_dict(self) -> dict:
        return {"min_bin_width": float(self.min_bin_width),
                "min_bin_height": float(self.min_bin_height),
                "min_derivative": float(self.min_derivative)}


class SplineParameters(NamedTuple):
    """Constrained parameters of the spline of each dimension.

    ``widths, heights`` have shape ``(..., K)``; ``xknots, yknots, derivatives`` shape
    ``(..., K + 1)`` (``derivatives[..., K]`` already equals ``derivatives[..., 0]`` for
    circular dimensions); ``t`` shape ``(...)``.
    """

    widths: torch.Tensor
    heights: torch.Tensor
    xknots: torch.Tensor
    yknots: torch.Tensor
    derivatives: torch.Tensor
    t: torch.Tensor


def _knots(sizes: torch.Tensor) -> torch.Tensor:
    """``[0, s_0, s_0 + s_1, ..., 1]``: cumulative sums with the last knot exactly 1."""
    K = sizes.shape[-1]
    shape = sizes.shape[:-1] + (1,)
    zero = sizes.new_zeros(shape)
    one = sizes.new_ones(shape)
    if K == 1:
        return torch.cat([zero, one], dim=-1)
    return torch.cat([zero, torch.cumsum(sizes[..., :K - 1], dim=-1), one], dim=-1)


def spline_parameters(raw: torch.Tensor, n_bins: int, constants: SplineConstants,
                      circular=False) -> SplineParameters:
    """Map raw conditioner outputs to the spline's bins, knots and derivatives.

    ``W = m_w + (1 - K m_w) softmax(w~)``, ``H`` likewise, knots by cumulative sums (the
    last set to exactly 1), ``delta = m_d + softplus(d~)`` (exact softplus); on circular
    dimensions ``delta_K := delta_0``.

    Parameters
    ----------
    raw : torch.Tensor
        Shape ``(..., 3K + 2)``, layout ``[w~(K), h~(K), d~(K + 1), t~]``.
    n_bins : int
        K.
    constants : SplineConstants
    circular : bool or torch.Tensor
        Broadcastable to ``raw[..., 0]``.

    Returns
    -------
    SplineParameters
    """
    K = int(n_bins)
    if raw.shape[-1] != 3 * K + 2:
        raise ValueError(f"expected {3 * K + 2} raw values per dimension for a spline with "
                         f"K = {K}, got {raw.shape[-1]}")
    constants.check(K)
    mw, mh, md = constants.min_bin_width, constants.min_bin_height, constants.min_derivative
    W = mw + (1.0 - K * mw) * torch.softmax(raw[..., 0:K], dim=-1)
    H = mh + (1.0 - K * mh) * torch.softmax(raw[..., K:2 * K], dim=-1)
    delta = md + exact_softplus(raw[..., 2 * K:3 * K + 1])
    circ = torch.as_tensor(circular, dtype=torch.bool, device=raw.device)
    if bool(circ.any()):
        periodic = torch.cat([delta[..., :K], delta[..., :1]], dim=-1)
        delta = torch.where(circ.unsqueeze(-1), periodic, delta)
    return SplineParameters(W, H, _knots(W), _knots(H), delta, raw[..., 3 * K + 1])


def _bin_index(knots: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bin k with ``knots[k] <= v < knots[k + 1]``, v = 1 (and beyond) in bin K - 1,
    v < 0 in bin 0; shape ``v.shape + (1,)``."""
    K = knots.shape[-1] - 1
    if K == 1:
        return torch.zeros(v.shape + (1,), dtype=torch.long, device=v.device)
    inner = knots.detach()[..., 1:K].expand(v.shape + (K - 1,)).contiguous()
    return torch.searchsorted(inner, v.detach().unsqueeze(-1).contiguous(), right=True)


def _take(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return t.expand(k.shape[:-1] + t.shape[-1:]).gather(-1, k).squeeze(-1)


def _bin_parameters(params: "SplineParameters", k: torch.Tensor):
    """(x_k, W_k, y_k, H_k, delta_k, delta_k+1) of bin k, the values both directions use."""
    return (_take(params.xknots, k), _take(params.widths, k), _take(params.yknots, k),
            _take(params.heights, k), _take(params.derivatives, k), _take(params.derivatives, k + 1))


def _spline_log_derivative(xi, s, H, d0, d1):
    """log S' in bin k at the bin coordinate xi (the same form forwards and backwards)."""
    om = xi * (1.0 - xi)
    den = s + (d0 + d1 - 2.0 * s) * om
    num = s * s * (d1 * xi * xi + 2.0 * s * om + d0 * (1.0 - xi) * (1.0 - xi))
    return torch.log(num) - 2.0 * torch.log(den)


def rq_spline(x: torch.Tensor, params: SplineParameters
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """S(x) on [0, 1] (no circular shift) and log S'(x).

    For x in bin k, xi = (x - x_k) / W_k, s_k = H_k / W_k,
    den = s_k + (delta_k + delta_{k+1} - 2 s_k) xi (1 - xi):

        S  = y_k + H_k (s_k xi^2 + delta_k xi (1 - xi)) / den
        S' = s_k^2 (delta_{k+1} xi^2 + 2 s_k xi (1 - xi) + delta_k (1 - xi)^2) / den^2

    log S' is formed as ``log(s_k^2 (...)) - 2 log(den)``.

    Parameters
    ----------
    x : torch.Tensor
        Shape ``(...)``, in [0, 1].
    params : SplineParameters
        Leading shape broadcastable to ``x``.

    Returns
    -------
    S, log_dS : torch.Tensor
    """
    k = _bin_index(params.xknots, x)
    xk, W, yk, H, d0, d1 = _bin_parameters(params, k)
    s = H / W
    xi = (x - xk) / W
    om = xi * (1.0 - xi)
    den = s + (d0 + d1 - 2.0 * s) * om
    S = yk + H * (s * xi * xi + d0 * om) / den
    return S, _spline_log_derivative(xi, s, H, d0, d1)


def rq_spline_inverse(y: torch.Tensor, params: SplineParameters
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """x = S^-1(y) on [0, 1] (no circular shift) and log |dx/dy| = -log S'(x), analytic.

    For y in bin k of the y knots (y = 1 in bin K - 1), dy = y - y_k,
    c2 = delta_k + delta_{k+1} - 2 s_k, a = H_k (s_k - delta_k) + dy c2,
    b = H_k delta_k - dy c2, c = -s_k dy, and
    xi = 2c / (-b - sqrt(max(b^2 - 4ac, 0))), x = x_k + xi W_k. log S' is evaluated at
    this xi in bin k (the formula of :func:`rq_spline`).

    Parameters
    ----------
    y : torch.Tensor
        In [0, 1].
    params : SplineParameters

    Returns
    -------
    x, log_dx : torch.Tensor
    """
    k = _bin_index(params.yknots, y)
    xk, W, yk, H, d0, d1 = _bin_parameters(params, k)
    s = H / W
    dy = y - yk
    c2 = d0 + d1 - 2.0 * s
    a = H * (s - d0) + dy * c2
    b = H * d0 - dy * c2
    c = -s * dy
    disc = b * b - 4.0 * a * c
    pos = disc > 0
    # sqrt(max(disc, 0)) whose gradient stays finite where the clamp acts
    root = torch.where(pos, torch.sqrt(torch.where(pos, disc, torch.ones_like(disc))),
                       torch.zeros_like(disc))
    xi = 2.0 * c / (-b - root)
    x = xk + xi * W
    return x, -_spline_log_derivative(xi, s, H, d0, d1)


def spline_forward(x: torch.Tensor, params: SplineParameters, circular
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """y = T(x): ``S(x)`` on the interval, ``(S(x) + t) mod 1`` on the circle; log T'(x).

    The value of S is moved into [0, 1] where rounding leaves it an ulp outside.
    """
    S, logd = rq_spline(x, params)
    S = _clamp01(S)
    y = torch.where(torch.as_tensor(circular, device=x.device), _wrap(S + params.t), S)
    return y, logd


def spline_inverse(y: torch.Tensor, params: SplineParameters, circular
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """x = T^-1(y) (circle: ``S^-1((y - t) mod 1)``) and log |dx/dy| = -log S'(x)."""
    target = torch.where(torch.as_tensor(circular, device=y.device), _wrap(y - params.t), y)
    x, logd = rq_spline_inverse(target, params)
    return _clamp01(x), logd


class SplineTransformer(_MixtureTransformer):
    """Elementwise rational-quadratic spline driven by raw conditioner outputs.

    ``forward(x, raw, inverse=False)`` returns ``(y, dlogp)`` as
    :class:`SmoothTransformer` does.

    Parameters
    ----------
    n_components : int
        K >= 1 bins.
    circular : sequence of bool
        One flag per transformed dimension.
    constants : SplineConstants
    """

    kind = "spline"

    def __init__(self, n_components: int, circular, constants: SplineConstants):
        constants.check(int(n_components))
        super().__init__(n_components, circular, constants)

    def parameters_from_raw(self, raw: torch.Tensor) -> SplineParameters:
        """Constrained parameters from raw outputs of shape ``(B, n, P)``."""
        return spline_parameters(raw, self.n_components, self.constants, self.circular)

    def forward(self, x: torch.Tensor, raw: torch.Tensor, inverse: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        params = self.parameters_from_raw(raw)
        if not inverse:
            return spline_forward(x, params, self.circular)
        return spline_inverse(x, params, self.circular)


# ------------------------------------------------------------------ affine
@dataclass(frozen=True)
class AffineConstants:
    """Constants of the affine (RealNVP in logit space) transform (``affine``).

    Parameters
    ----------
    scale_max : float
        > 0; the log-scale is ``scale_max tanh(s~ / scale_max)``.
    """

    scale_max: float = 3.0

    def __post_init__(self):
        object.__setattr__(self, "scale_max",
                           _positive_finite(self.scale_max, "affine.scale_max"))

    def to_dict(self) -> dict:
        return {"scale_max": float(self.scale_max)}


def affine_parameters(raw: torch.Tensor, constants: AffineConstants
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` from raw ``(..., 2)`` = ``[s~, t~]``: s = scale_max tanh(s~ / scale_max)."""
    if raw.shape[-1] != 2:
        raise ValueError(f"expected 2 raw values per dimension for the affine transform, "
                         f"got {raw.shape[-1]}")
    m = constants.scale_max
    return m * torch.tanh(raw[..., 0] / m), raw[..., 1]


def _log_parts(x: torch.Tensor):
    """``inside = 0 < x < 1``, log x and log1p(-x) (evaluated at 1/2 outside)."""
    inside = (x > 0) & (x < 1)
    xs = torch.where(inside, x, torch.full_like(x, 0.5))
    return inside, torch.log(xs), torch.log1p(-xs)


def _sigmoid_and_log_density(v: torch.Tensor):
    """``sigmoid(v)`` (stable, exact autograd) and ``log(sigmoid(v) (1 - sigmoid(v)))``
    = ``-softplus(v) - softplus(-v)`` (exact softplus, no cancellation)."""
    y, _ = _logistic_pair(v)
    return y, -exact_softplus(v) - exact_softplus(-v)


def affine_forward(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                   face_logdet: float = -math.inf) -> Tuple[torch.Tensor, torch.Tensor]:
    """y = T(x) = sigmoid(e^s logit(x) + t) and log T'(x).

    ``log T' = s + log(T (1 - T)) - log(x (1 - x))`` with ``log(x (1 - x)) = log x +
    log1p(-x)`` and ``log(T (1 - T)) = -softplus(v) - softplus(-v)``, v = e^s logit(x) + t.

    Points with x <= 0 or x >= 1 are outside the support: y is x clamped to [0, 1] and
    the log-derivative is ``face_logdet`` (a coupling layer passes -inf in the density
    pass and +inf in the sampling pass, so that the density there is zero).
    """
    inside, lx, l1x = _log_parts(x)
    v = torch.exp(s) * (lx - l1x) + t
    y, log_yy = _sigmoid_and_log_density(v)
    logd = s + log_yy - (lx + l1x)
    y = torch.where(inside, y, x.detach().clamp(0.0, 1.0))
    logd = torch.where(inside, logd, torch.full_like(logd, face_logdet))
    return y, logd


def affine_inverse(y: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                   face_logdet: float = -math.inf) -> Tuple[torch.Tensor, torch.Tensor]:
    """x = T^-1(y) = sigmoid((logit(y) - t) e^-s) and log |dx/dy| = -log T'(x).

    ``log dx/dy = -s + log(x (1 - x)) - log(y (1 - y))``, formed as in
    :func:`affine_forward`; y <= 0 or y >= 1 is outside the support (``face_logdet``).
    """
    inside, ly, l1y = _log_parts(y)
    w = torch.exp(-s) * (ly - l1y - t)
    x, log_xx = _sigmoid_and_log_density(w)
    logd = -s + log_xx - (ly + l1y)
    x = torch.where(inside, x, y.detach().clamp(0.0, 1.0))
    logd = torch.where(inside, logd, torch.full_like(logd, face_logdet))
    return x, logd


class AffineTransformer(torch.nn.Module):
    """Elementwise affine transform in logit space (RealNVP) driven by raw outputs.

    Circular dimensions are treated as intervals (cut at u = 0 = 1).

    Parameters
    ----------
    n_components : int
        Ignored (kept for the common interface).
    circular : sequence of bool
        Ignored.
    constants : AffineConstants
    """

    kind = "affine"
    params_per_dim = 2

    def __init__(self, n_components: int, circular, constants: AffineConstants):
        super().__init__()
        self.n_components = int(n_components)
        self.constants = constants

    def initial_raw(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Raw parameters ``(2,)`` of a new transform: zeros (the identity)."""
        return torch.zeros(self.params_per_dim, dtype=dtype)

    def parameters_from_raw(self, raw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)`` from raw outputs of shape ``(B, n, 2)``."""
        return affine_parameters(raw, self.constants)

    def forward(self, x: torch.Tensor, raw: torch.Tensor, inverse: bool = False,
                face_logdet: float = -math.inf) -> Tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`SmoothTransformer.forward`; ``face_logdet`` is the log-derivative
        returned for inputs at (or beyond) 0 or 1."""
        s, t = self.parameters_from_raw(raw)
        if not inverse:
            return affine_forward(x, s, t, face_logdet)
        return affine_inverse(x, s, t, face_logdet)


_CONSTANTS = {"smooth": SmoothConstants, "spline": SplineConstants, "affine": AffineConstants}


def make_transformer(transform: str, n_components: int, circular, constants=None
                     ) -> torch.nn.Module:
    """The transformer of kind ``transform`` (constants default to the kind's defaults).

    Parameters
    ----------
    transform : str
        ``smooth``, ``spline`` or ``affine``.
    n_components : int
    circular : sequence of bool
    constants : SmoothConstants, SplineConstants, AffineConstants, dict or None

    Returns
    -------
    SmoothTransformer, SplineTransformer or AffineTransformer
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")
    cls = _CONSTANTS[transform]
    if constants is None:
        constants = cls()
    elif isinstance(constants, dict):
        constants = cls(**constants)
    elif not isinstance(constants, cls):
        raise ValueError(f"a {transform} transform needs {cls.__name__}, got "
                         f"{type(constants).__name__}")
    if transform == "smooth":
        return SmoothTransformer(n_components, circular, constants)
    if transform == "spline":
        return SplineTransformer(n_components, circular, constants)
    return AffineTransformer(n_components, circular, constants)
