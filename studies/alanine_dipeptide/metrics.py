"""Metrics of a Boltzmann generator (flow-math section 9), on numpy arrays; the free-energy
profile and the histogram KL are the pipeline's (smoothflow_torch.pipeline.evaluate).

- sampling efficiency ESS/n of importance weights,
- free energy profiles along a coordinate from samples (with weights),
- KL divergence of histograms (phi/psi), with a pseudocount so empty bins stay finite.
"""
import numpy as np
# (pipeline.evaluate is also the name of the pipeline's evaluate step: import by name)
from smoothflow_torch.pipeline.evaluate import free_energy
from smoothflow_torch.pipeline.evaluate import histogram_kl  # noqa: F401 (the study's name)

from . import weights


def log_weights(target_reduced_energy: np.ndarray, flow_log_density: np.ndarray) -> np.ndarray:
    """log w = -u_target(x) - log q(x) for samples x ~ q (both over the same coordinates)."""
    return -np.asarray(target_reduced_energy, float) - np.asarray(flow_log_density, float)


def effective_sample_size(log_w: np.ndarray) -> float:
    """ESS = (sum w)^2 / sum w^2 from log weights (weights.ess_fraction times n); n for equal
    weights, 0 when no weight is finite."""
    lw = np.asarray(log_w, float).ravel()
    if not np.isfinite(lw).any():
        return 0.0
    return weights.ess_fraction(lw) * lw.size


def sampling_efficiency(log_w: np.ndarray) -> float:
    """ESS / n, in [1/n, 1]; non-finite weights count as zero weight."""
    lw = np.asarray(log_w, float)
    return effective_sample_size(lw) / lw.size if lw.size else 0.0


def sampling_efficiency_interval(log_w: np.ndarray, n_boot: int = 200, seed: int = 0,
                                 level: float = 0.95):
    """Bootstrap interval of ESS / n: the samples resampled with replacement ``n_boot`` times;
    returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles."""
    lw = np.asarray(log_w, float)
    rng = np.random.default_rng(seed)
    values = [sampling_efficiency(lw[rng.integers(0, lw.size, lw.size)]) for _ in range(n_boot)]
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def free_energy_profile(values: np.ndarray, bins: np.ndarray, weights=None, kT: float = 1.0):
    """F(bin) = -kT log p(bin) over the bin edges ``bins``, shifted to min 0; empty bins are +inf
    (the pipeline's)."""
    return free_energy(values, weights, bins, kT)


def ramachandran_histogram(phi: np.ndarray, psi: np.ndarray, n_bins: int = 60, weights=None) -> np.ndarray:
    edges = np.linspace(-np.pi, np.pi, n_bins + 1)
    h, _, _ = np.histogram2d(phi, psi, bins=[edges, edges], weights=weights)
    return h


def well_depth(profile: np.ndarray) -> float:
    """How far an energy profile rises from its minimum before it can escape on either side:
    min(highest point left of the minimum, highest point right of it) - minimum.  A profile
    along one bond of a flow potential is a well with a plateau on each side (docs/design.md,
    "Well depth"); this is the energy a bond needs to leave the well.  Infinite profiles count
    as infinitely high (the support wall)."""
    p = np.asarray(profile, float)
    i = int(np.argmin(p))
    return float(min(p[:i + 1].max(), p[i:].max()) - p[i])
