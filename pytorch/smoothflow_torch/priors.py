"""Latent priors p_Z of a SmoothFlow (``docs/model-format.md``, ``prior``).

- ``"uniform"``: log p_Z = 0 on the unit cube/torus (format version 1's default).
- ``{"kind": "truncated_normal", "mean": [...], "sigma": [...]}``: one normal density per
  interval dimension (the 2N - 3 bonds and angles), truncated to [0, 1]; torsions stay
  uniform on the circle.  Why: a flow's density never vanishes (F' >= 1 - c_max per layer),
  so under a uniform prior its potential along a bond is a well of bounded depth with a
  plateau beyond (``docs/design.md``, "Well depth").  A normal prior puts a harmonic well
  under every bond and angle out to the support's edges, as deep as (distance to the edge /
  sigma)^2 / 2 kT; the layers then only correct it.
- The same with ``"torsion_mean": [...]`` and ``"torsion_kappa": [...]`` (N - 3 each): a von
  Mises density per torsion on the circle [0, 1), log p = kappa (cos 2 pi (z - mean) - 1) -
  log I0e(kappa).  Why: the same well-depth argument for torsions.  Under a uniform torsion
  prior a flow's well along an improper (a planar amide's, a chiral centre's) levels off a few
  tens of kT out, so a hot run folds amides (``docs/reliability.md`` section 5); a von Mises
  prior stands 2 kappa kT high half a turn away.  kappa = 0 is a uniform torsion.
"""
from __future__ import annotations

import math
from typing import Union

import torch

PriorConfig = Union[str, dict]


MAX_TORSION_KAPPA = 1e4     # the C core's SF_MAX_TORSION_KAPPA: a spread of 0.6 degrees


def check_prior(prior: PriorConfig, n_interval: int, n_torsion: int = 0) -> PriorConfig:
    """The prior config in canonical form; ValueError naming what is wrong. ``n_torsion``
    (N - 3) is the length the torsions' von Mises arrays need."""
    if prior is None or prior == "uniform":
        return "uniform"
    if not isinstance(prior, dict) or prior.get("kind") != "truncated_normal":
        raise ValueError(f"prior must be 'uniform' or {{'kind': 'truncated_normal', 'mean': [...], "
                         f"'sigma': [...]}}, got {prior!r}")
    unknown = sorted(set(prior) - {"kind", "mean", "sigma", "torsion_mean", "torsion_kappa"})
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
    if ("torsion_mean" in prior) != ("torsion_kappa" in prior):
        raise ValueError("prior.torsion_mean and prior.torsion_kappa go together: give both or neither")
    if "torsion_mean" in prior:
        for key in ("torsion_mean", "torsion_kappa"):
            v = prior[key]
            if not isinstance(v, (list, tuple)) or len(v) != n_torsion or \
                    not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise ValueError(f"prior.{key} must be {n_torsion} finite numbers (one per torsion)")
            out[key] = [float(x) for x in v]
        for t, (mu, k) in enumerate(zip(out["torsion_mean"], out["torsion_kappa"])):
            if not (0 <= mu < 1) or not (0 <= k <= MAX_TORSION_KAPPA):
                raise ValueError(f"prior torsion {t} (dimension {n_interval + t}) has torsion_mean {mu} (need "
                                 f"0 <= mean < 1) and torsion_kappa {k} (need 0 <= kappa <= {MAX_TORSION_KAPPA:g})")
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


def von_mises_log_prob(z: torch.Tensor, mean: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """log density ``(B,)`` of torsion dims ``z (B, n)`` (the circle [0, 1)) under von Mises
    densities: sum kappa (cos 2 pi (z - mean) - 1) - log I0e(kappa)."""
    c = torch.cos(2 * math.pi * (z - mean))
    return (kappa * (c - 1)).sum(-1) - torch.log(torch.special.i0e(kappa)).sum()


def von_mises_sample(n: int, mean: torch.Tensor, kappa: torch.Tensor, generator=None) -> torch.Tensor:
    """``(n, len(mean))`` exact draws on [0, 1) by Best and Fisher's (1979) rejection from a
    wrapped Cauchy envelope, with the rate written without cancellation for small kappa;
    kappa = 0 is uniform."""
    dtype, device = mean.dtype, mean.device
    k = kappa.expand(n, -1)
    tau = 1 + torch.sqrt(1 + 4 * k * k)
    rho = 2 * k * tau / ((torch.sqrt(1 + 4 * k * k) + 1) * (tau + torch.sqrt(2 * tau)))
    r = (1 + rho * rho) / (2 * rho).clamp_min(1e-300)
    theta = torch.zeros(n, mean.numel(), dtype=dtype, device=device)
    todo = k > 0            # kappa = 0 is drawn uniformly below (the envelope degenerates there)
    while todo.any():
        u1, u2, u3 = (torch.rand(n, mean.numel(), generator=generator, dtype=dtype, device=device) for _ in range(3))
        zc = torch.cos(math.pi * u1)
        f = ((1 + r * zc) / (r + zc)).clamp(-1.0, 1.0)
        c = k * (r - f)
        accept = ((c * (2 - c) - u2 > 0) | (torch.log(c / u2) + 1 - c >= 0)) & todo
        draw = torch.sign(u3 - 0.5) * torch.acos(f)
        theta = torch.where(accept, draw, theta)
        todo = todo & ~accept
    uniform = k == 0
    if uniform.any():
        theta = torch.where(uniform, 2 * math.pi * torch.rand(n, mean.numel(), generator=generator, dtype=dtype,
                                                              device=device), theta)
    return torch.remainder(mean + theta / (2 * math.pi), 1.0)
