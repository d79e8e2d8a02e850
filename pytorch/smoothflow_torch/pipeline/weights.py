"""Statistics of importance weights w = p(x) / q(x) for samples x ~ q, numpy only.

Moved here from the alanine-dipeptide study (studies/alanine_dipeptide/weights.py), which is
the same code, so that every molecule's evaluation reports the same statistics; ESS/n with a
bootstrap interval is :func:`ess_interval`.

A bootstrap over one set of samples cannot show a heavy tail that the set happens not to reach:
one rare sample with hundreds of times the mean weight changes ESS/n by a third, and a set that
misses it looks fine.  So the evaluation reports, beside ESS/n:

- ESS/n pooled over several independent sets (weights self-normalized over their union) and the
  per-set values with their spread;
- the Pareto k-hat of the weights' upper tail (PSIS: Vehtari, Simpson, Gelman, Yao and Gabry,
  "Pareto smoothed importance sampling", JMLR 2024): k-hat < 0.5 the variance of the weights is
  finite and ESS means what it says, 0.5-0.7 it is infinite but estimates converge usably, >= 0.7
  the importance-sampling estimate is unreliable whatever ESS/n says;
- the largest normalized weights with their sample indices (so their structures can be shown);
- self-normalized estimates of a fraction (phi > 0) with a delta-method interval, and of the
  joint states of several such indicators (which residues have phi > 0 at once).

Every function takes log weights; non-finite log weights (a sample the target gives no mass, or a
failed energy) count as weight zero.
"""
import math

import numpy as np


def _finite_log_weights(log_w) -> np.ndarray:
    lw = np.asarray(log_w, float).ravel()
    if lw.size == 0:
        raise ValueError("no log weights: the sample set is empty")
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    if not np.isfinite(lw).any():
        raise ValueError("every log weight is non-finite: no sample has weight")
    return lw


def log_sum_exp(a: np.ndarray) -> float:
    m = np.max(a)
    return float(m + np.log(np.sum(np.exp(a - m))))


def normalized_weights(log_w) -> np.ndarray:
    """w_i / sum_j w_j, from log weights without overflow."""
    lw = _finite_log_weights(log_w)
    return np.exp(lw - log_sum_exp(lw))


def ess_fraction(log_w) -> float:
    """ESS / n = (sum w)^2 / (n sum w^2), as exp(2 lse(log w) - lse(2 log w)) / n: stable for
    log weights that span thousands of nats."""
    lw = _finite_log_weights(log_w)
    return float(np.exp(2 * log_sum_exp(lw) - log_sum_exp(2 * lw)) / lw.size)


def pooled_ess(sets) -> dict:
    """ESS/n of the union of independent sample sets (``sets``: a sequence of log-weight arrays
    from the same flow and target), with each set's own ESS/n and their spread.

    The pooled value self-normalizes over all samples together: a rare heavy weight in one set
    weighs against every sample, as it would in one set of the combined size."""
    sets = [np.asarray(s, float).ravel() for s in sets]
    if not sets:
        raise ValueError("pooled_ess needs at least one sample set")
    per_set = np.array([ess_fraction(s) for s in sets])
    return {"pooled": ess_fraction(np.concatenate(sets)), "per_set": per_set.tolist(),
            "n_total": int(sum(s.size for s in sets)), "mean": float(per_set.mean()),
            "std": float(per_set.std(ddof=1)) if len(sets) > 1 else 0.0,
            "min": float(per_set.min()), "max": float(per_set.max())}


def tail_length(n: int) -> int:
    """PSIS's number of largest weights to fit, M = ceil(min(n / 5, 3 sqrt(n))) (relative
    efficiency 1: independent samples)."""
    return int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))


def gpd_fit_zhang_stephens(x: np.ndarray, prior_weight: float = 10.0, prior_shape: float = 0.5):
    """(shape k, scale sigma) of a generalized Pareto distribution fitted to exceedances
    ``x >= 0`` by Zhang and Stephens (2009, Technometrics 51:316), with PSIS's weakly
    informative prior on k.

    Parameterize by theta = -k / sigma.  For fixed theta the maximum-likelihood shape is
    k(theta) = mean(log(1 - theta x)), and the log likelihood profiled over k is
    n (log(-theta / k(theta)) - k(theta) - 1).  Zhang and Stephens average theta over a grid
    of m = 30 + floor(sqrt(n)) values, theta_j = 1/x_max + (1 - sqrt(m / (j - 1/2))) / (3 x_q1)
    (x_q1: the first quartile), each weighted by its profile likelihood (a posterior mean under
    a data-dependent prior); the estimate is k(theta_hat).  PSIS then shrinks k towards 0.5 as
    if ``prior_weight`` observations had shape ``prior_shape``: k = (n k + 10 * 0.5) / (n + 10).
    """
    x = np.sort(np.asarray(x, float))
    n = x.size
    if n < 5:
        raise ValueError(f"a generalized Pareto fit needs at least 5 exceedances, got {n}")
    if x[0] < 0:
        raise ValueError("exceedances must be non-negative")
    m = 30 + int(math.sqrt(n))
    quartile = x[int(math.floor(n / 4 + 0.5)) - 1]
    if not x[-1] > 0 or not quartile > 0:
        raise ValueError("the exceedances have no spread (a quarter or more of them are zero)")
    j = np.arange(1, m + 1)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile)
    k = np.mean(np.log1p(-np.outer(theta, x)), axis=1)           # every theta < 1 / x_max
    profile = n * (np.log(-theta / k) - k - 1.0)
    post = np.exp(profile - profile.max())
    post /= post.sum()
    theta_hat = float(np.sum(post * theta))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    sigma = -k_hat / theta_hat
    k_hat = (n * k_hat + prior_weight * prior_shape) / (n + prior_weight)
    return k_hat, sigma


def pareto_k_hat(log_w) -> float:
    """PSIS's Pareto k-hat of the weights' upper tail: the generalized Pareto shape of the
    largest M = tail_length(n) weights' excess over the next-largest weight.

    -inf when the tail has no spread (all of its weights equal: nothing heavy to fit)."""
    lw = np.sort(_finite_log_weights(log_w))
    lw = lw[np.isfinite(lw)]
    n = lw.size
    m = tail_length(n)
    if m < 5 or n <= m:
        raise ValueError(f"{n} finite weights are too few for a Pareto tail fit (M = {m})")
    w = np.exp(lw - lw[-1])                  # the shape does not depend on the weights' scale
    tail, threshold = w[-m:], w[-m - 1]
    excess = tail - threshold
    if excess[-1] <= 0 or excess[int(math.floor(m / 4 + 0.5)) - 1] <= 0:
        return -math.inf
    return gpd_fit_zhang_stephens(excess)[0]


def largest_weights(log_w, count: int = 10):
    """(indices, normalized weights) of the ``count`` largest weights, largest first; n times a
    normalized weight is that sample's weight relative to the mean."""
    w = normalized_weights(log_w)
    idx = np.argsort(w)[::-1][:count]
    return idx, w[idx]


def reweighted_fraction(log_w, indicator, level: float = 0.95) -> dict:
    """Self-normalized importance-sampling estimate of P(indicator) under the target, with the
    delta-method interval: Var ~= sum_i wbar_i^2 (f_i - mu)^2 (wbar: normalized weights), which
    is the binomial variance with n replaced by the ESS when the weights and f are unrelated.
    The interval is only as good as the weights' tail: with k-hat >= 0.7 it is not to be trusted."""
    w = normalized_weights(log_w)
    f = np.asarray(indicator, float).ravel()
    if f.shape != w.shape:
        raise ValueError(f"indicator has {f.size} values for {w.size} weights")
    mu = float(np.sum(w * f))
    se = float(np.sqrt(np.sum(w ** 2 * (f - mu) ** 2)))
    z = _normal_quantile(0.5 + level / 2)
    return {"estimate": mu, "stderr": se, "interval": [max(0.0, mu - z * se), min(1.0, mu + z * se)],
            "level": level}


def joint_states(up, log_w=None, groups=None) -> dict:
    """Populations of the joint states of the boolean columns ``up`` (n x k): for each pattern
    that occurs, (fraction of the samples, self-normalized weighted fraction, standard error over
    ``groups``). Weights are normalized within each group (independent chains or sample sets) and
    the groups' estimates averaged; the standard error is nan with fewer than two groups. Patterns
    are ordered by how many columns are True, then as tuples."""
    up = np.asarray(up, bool)
    if up.ndim != 2:
        raise ValueError(f"up must be samples x indicators, got shape {up.shape}")
    n = len(up)
    log_w = np.zeros(n) if log_w is None else np.asarray(log_w, float).ravel()
    groups = np.zeros(n, int) if groups is None else np.asarray(groups).ravel()
    if log_w.shape != (n,) or groups.shape != (n,):
        raise ValueError(f"{n} samples need {n} log weights and group labels, got {log_w.size} and {groups.size}")
    labels = np.unique(groups)
    normalized = {g: normalized_weights(log_w[groups == g]) for g in labels}
    out = {}
    for pattern in sorted({tuple(r) for r in up.tolist()}, key=lambda p: (sum(p), p)):
        hit = np.all(up == np.array(pattern, bool), axis=1)
        values = np.array([normalized[g] @ hit[groups == g] for g in labels])
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
        out[pattern] = (float(hit.mean()), float(values.mean()), se)
    return out


def _normal_quantile(p: float) -> float:
    """Standard normal quantile by bisection on erf (no scipy needed; 1e-12 accurate)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def summary(log_w_sets, indicator_sets, count: int = 10, level: float = 0.95) -> dict:
    """Everything the evaluation reports about the weights of several independent sample sets
    of one flow: pooled and per-set ESS/n, pooled and per-set k-hat, the ``count`` largest
    pooled normalized weights as (set, index within the set, weight, weight / mean), and the
    reweighted fraction of ``indicator`` pooled with its interval and per set."""
    sets = [np.asarray(s, float).ravel() for s in log_w_sets]
    flags = [np.asarray(f, float).ravel() for f in indicator_sets]
    pooled_lw, pooled_f = np.concatenate(sets), np.concatenate(flags)
    owner = np.concatenate([np.full(s.size, i) for i, s in enumerate(sets)])
    within = np.concatenate([np.arange(s.size) for s in sets])
    idx, w = largest_weights(pooled_lw, count)
    frac = reweighted_fraction(pooled_lw, pooled_f, level)
    return {"ess": pooled_ess(sets),
            "k_hat": pareto_k_hat(pooled_lw),
            "k_hat_per_set": [pareto_k_hat(s) for s in sets],
            "largest": [{"set": int(owner[i]), "index": int(within[i]), "weight": float(wi),
                         "relative_to_mean": float(wi * pooled_lw.size)} for i, wi in zip(idx, w)],
            "fraction": frac,
            "fraction_per_set": [reweighted_fraction(s, f, level)["estimate"] for s, f in zip(sets, flags)]}


def ess_interval(log_w, n_boot: int = 200, seed: int = 0, level: float = 0.95):
    """Bootstrap interval of ESS/n: the samples resampled with replacement ``n_boot`` times; the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.  It only resamples what the set holds
    (a heavy tail the set missed is invisible to it): report it with k-hat and, where it matters,
    several independent sets (:func:`pooled_ess`)."""
    lw = np.where(np.isfinite(np.asarray(log_w, float).ravel()), np.asarray(log_w, float).ravel(), -np.inf)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        b = lw[rng.integers(0, lw.size, lw.size)]
        values.append(ess_fraction(b) if np.isfinite(b).any() else 0.0)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
