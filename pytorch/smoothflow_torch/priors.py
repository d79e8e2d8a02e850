"""Latent priors p_Z of a SmoothFlow (``docs/model-format.md``, ``prior``).

- ``"uniform"``: log p_Z = 0 on the unit cube/torus (format version 1's default).
- ``{"kind": "truncated_normal", "mean": [...], "sigma": [...]}``: one normal density per
  interval dimension (the 2N - 3 bonds and angles), truncated to [0, 1]; torsions stay
  uniform on the circle.  Why: a flow's density never vanishes (F' >= 1 - c_max per layer),
  so under a uniform prior its potential along a bond is a well of bounded depth with a
  plateau beyond (``docs/design.md``, "Well depth").  A normal prior puts a harmonic well
  under every bond and angle out to the support's edges, as deep as (distance to the edge /
  sigma)^2 / 2 kT; the layers then only correct it.
"""
from __future__ import annotations

import math
from typing import Union

import torch

PriorConfig = Union[str, dict]


def check_prior(prior: PriorConfig, n_interval: int) -> PriorConfig:
    """The prior config in canonical form; ValueError naming what is wrong."""
    if prior is None or prior == "uniform":
        return "uniform"
    if not isinstance(prior, dict) or prior.get("kind") != "truncated_normal":
        raise ValueError(f"prior must be 'uniform' or {{'kind': 'truncated_normal', 'mean': [...], "
                         f"'sigma': [...]}}, got {prior!r}")
    unknown = sorted(set(prior) - {"kind", "mean", "sigma"})
    if unknown:
        raise ValueError(f"prior: unknown fields {unknown}")
    out = {"kind": "truncated_normal"}
    for key in ("mean", "sigma"):
        v = prior.get(key)
        if not isinstance(v, (list, tuple)) or len(v) != n_interval or \
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            raise ValueError(f"prior.{key} must be {n_interval} finite numbers (one per bond and angle)")
        out[key] = [float(x) for x in v]
    for d, (mu, sd) in enumerate(zip(out["mean"], out["sigma"])):
        if not (0 < mu < 1) or not (1e-4 <= sd <= 10):
            raise ValueError(f"prior dimension {d} has mean {mu} (need 0 < mean < 1) and sigma {sd} "
                             f"(need 1e-4 <= sigma <= 10)")
    return out


def log_normalizer(mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sum_d log(sigma_d sqrt(2 pi) P(0 <= N(mean_d, sigma_d^2) <= 1))."""
    mass = torch.special.ndtr((1 - mean) / sigma) - torch.special.ndtr(-mean / sigma)
    return torch.log(sigma * math.sqrt(2 * math.pi) * mass).sum()


def truncated_normal_log_prob(z: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log density ``(B,)`` of the interval dims ``z (B, n)`` under the truncated normals."""
    t = (z - mean) / sigma
    return -0.5 * (t * t).sum(-1) - log_normalizer(mean, sigma)


def truncated_normal_sample(n: int, mean: torch.Tensor, sigma: torch.Tensor,
                            generator=None) -> torch.Tensor:
    """``(n, len(mean))`` draws by the inverse CDF, clamped into [0, 1]."""
    lo = torch.special.ndtr(-mean / sigma)
    hi = torch.special.ndtr((1 - mean) / sigma)
    p = torch.rand(n, mean.numel(), generator=generator, dtype=mean.dtype, device=mean.device)
    z = mean + sigma * torch.special.ndtri(lo + p * (hi - lo))
    return z.clamp(0.0, 1.0)
