"""The NLL floor of a particle data set: the held-out NLL of the true Boltzmann density.

    python -m smoothflow_torch.particles.floor lj13 --data runs/particles/lj13/lj13.npz \\
        --out studies/lj13_free_form/results/data_floor_lj13.json

The data of ``particles.data`` are samples of the Boltzmann density of the system's potential U
at kT = 1 (reduced units, docs/particle-systems.md). As a density on the centre-of-mass-free
subspace V, in the D = (n - 1) d coordinates of an orthonormal basis of V (``fff.to_subspace``:
the coordinates in which the trainer's NLL, its Gaussian latent and its Gaussian baseline are
densities), it is

    p(x) = exp(-beta U(x)) / Z,    Z = integral over V of exp(-beta U),

so its NLL on held-out frames, the floor no model can beat in expectation, is

    floor = mean over the frames of beta U(x) + log Z

(the differential entropy of p on V, estimated on those frames; any model's held-out NLL is
the floor plus its KL divergence from p, in expectation). log Z is estimated by the Bennett
acceptance ratio (BAR) between the data (samples of p) and samples of a reference q: the
isotropic Gaussian N(0, sigma^2 I_D) on V with the variance fitted to the training frames,
exactly the baseline ``train.gaussian_fit_nll`` reports (one variance for all D dofs). q is
normalised, so with the reduced works w(x) = beta U(x) + log q(x),

    forward (samples of q):   log Z = log mean_q exp(-w)
    reverse (samples of p):   log Z = -log mean_p exp(w)
    BAR: the log Z at which sum_q fermi(M + w - (-log Z)) = sum_p fermi(-M - w + (-log Z)),

fermi(t) = 1 / (1 + e^t), M = log(n_q / n_p) (Bennett 1976; Shirts et al. 2003). The two
one-sided estimates are printed beside BAR: where they agree with it the overlap is good.
Uncertainty: BAR's asymptotic variance (Shirts et al. 2003, as pymbar's "BAR" method), with the
data's side inflated by the statistical inefficiency of its Fermi values along each chain (the
frames of a chain are correlated), and optionally a block bootstrap (``--bootstrap``). The held-
out mean of beta U gets its standard error from the same inefficiency along the held-out chains.

The frames are those the trainer evaluates (``train.load_data``, ``train.spread_frames``: the
``final_frames`` of the training configs, 5000 evenly spaced frames of each held-out split),
so the floor, the trainer's held-out NLL and its Gaussian baseline are on the same frames in
the same convention. Writes a JSON file with the settings, the results, the machine, the date
and the git commit.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logsumexp

from .. import provenance
from .data import autocorrelation_time
from .systems import SYSTEMS

__all__ = ["exp_forward", "exp_reverse", "bar", "bar_std", "isotropic_variance",
           "gaussian_nll", "sample_isotropic", "log_partition", "data_floor", "main"]

#: the frames the training configs evaluate per held-out split (``final_frames``)
DEFAULT_FRAMES = 5000
ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------- estimators
# Works are reduced (in units of kT) and defined as in Bennett / pymbar: state 0 is sampled by
# the "forward" set, state 1 by the "reverse" set, w_F = u1 - u0 on samples of 0 and
# w_R = u0 - u1 on samples of 1; every function returns Delta f = f1 - f0 = -log(Z1 / Z0).

def exp_forward(w_f: np.ndarray) -> float:
    """Delta f by exponential averaging over samples of state 0: -log mean exp(-w_F)."""
    w_f = np.asarray(w_f, dtype=np.float64)
    return float(-(logsumexp(-w_f) - math.log(len(w_f))))


def exp_reverse(w_r: np.ndarray) -> float:
    """Delta f by exponential averaging over samples of state 1: log mean exp(-w_R)."""
    w_r = np.asarray(w_r, dtype=np.float64)
    return float(logsumexp(-w_r) - math.log(len(w_r)))


def _bar_balance(w_f, w_r, m, df):
    # increasing in df; zero at the BAR estimate
    return expit(-(m + w_f - df)).sum() - expit(-(-m + w_r + df)).sum()


def bar(w_f: np.ndarray, w_r: np.ndarray, tol: float = 1e-12) -> float:
    """Delta f by the Bennett acceptance ratio of forward works w_F and reverse works w_R.

    Infinite works (a sample of one state where the other's density is 0) are allowed; NaN
    works are not.
    """
    w_f = np.asarray(w_f, dtype=np.float64)
    w_r = np.asarray(w_r, dtype=np.float64)
    if len(w_f) == 0 or len(w_r) == 0:
        raise ValueError("bar: both work arrays must be non-empty")
    if np.isnan(w_f).any() or np.isnan(w_r).any():
        raise ValueError("bar: a work is NaN")
    if not (np.isfinite(w_f).any() and np.isfinite(w_r).any()):
        raise ValueError("bar: every work of one side is infinite: the two states do not overlap")
    m = math.log(len(w_f) / len(w_r))
    guesses = [g for g in (exp_forward(w_f), exp_reverse(w_r)) if math.isfinite(g)]
    lo, hi = min(guesses) - 1.0, max(guesses) + 1.0
    for _ in range(200):                       # widen until the balance changes sign
        if _bar_balance(w_f, w_r, m, lo) < 0:
            break
        lo -= 2.0 * (hi - lo)
    for _ in range(200):
        if _bar_balance(w_f, w_r, m, hi) > 0:
            break
        hi += 2.0 * (hi - lo)
    return float(brentq(lambda df: _bar_balance(w_f, w_r, m, df), lo, hi, xtol=tol, rtol=1e-15))


def bar_std(w_f: np.ndarray, w_r: np.ndarray, df: float, g_f: float = 1.0,
            g_r: float = 1.0) -> float:
    """Asymptotic standard deviation of the BAR estimate ``df`` (Shirts et al. 2003, pymbar's
    "BAR" method): var = var(f_F) / (n_F <f_F>^2) + var(f_R) / (n_R <f_R>^2), each side's term
    times its statistical inefficiency g (1 for independent samples)."""
    w_f = np.asarray(w_f, dtype=np.float64)
    w_r = np.asarray(w_r, dtype=np.float64)
    m = math.log(len(w_f) / len(w_r))
    f_f = expit(-(m + w_f - df))
    f_r = expit(-(-m + w_r + df))
    var = (g_f * f_f.var() / (len(w_f) * f_f.mean() ** 2)
           + g_r * f_r.var() / (len(w_r) * f_r.mean() ** 2))
    return float(math.sqrt(var))


# -------------------------------------------------------------- the Gaussian on V

def _dof(x: np.ndarray) -> int:
    n, d = x.shape[-2:]
    return (n - 1) * d


def isotropic_variance(train: np.ndarray) -> float:
    """sigma^2 of the isotropic Gaussian on V fitted to mean-free frames (M, n, d): mean |x|^2 / D,
    as ``train.gaussian_fit_nll``."""
    return float((train ** 2).sum((-2, -1)).mean() / _dof(train))


def gaussian_nll(x: np.ndarray, variance: float) -> np.ndarray:
    """-log N(y; 0, sigma^2 I_D) per mean-free frame of x (M, n, d), y its coordinates in an
    orthonormal basis of V (|y| = |x|)."""
    dof = _dof(x)
    return 0.5 * (x ** 2).sum((-2, -1)) / variance + 0.5 * dof * math.log(2.0 * math.pi * variance)


def sample_isotropic(count: int, n: int, d: int, variance: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``count`` samples (count, n, d) of N(0, sigma^2 I_D) on V: the projection onto V of an
    isotropic normal in R^(n d) (the projection is orthogonal, so the result is isotropic on V)."""
    e = rng.standard_normal((count, n, d)) * math.sqrt(variance)
    return e - e.mean(-2, keepdims=True)


# ------------------------------------------------------------------------ log Z

def _inefficiency(series: np.ndarray, chains: Optional[np.ndarray]) -> float:
    """Statistical inefficiency (integrated autocorrelation time in samples, >= 1) of a series
    made of whole chains in time order: the mean over chains; 1 without chain ids."""
    if chains is None:
        return 1.0
    taus = [autocorrelation_time(series[chains == c]) for c in np.unique(chains)]
    taus = [t for t in taus if t == t]
    return float(max(1.0, np.mean(taus))) if taus else 1.0


def _energies(energy: Callable, x: np.ndarray, chunk: int = 20000, bar_desc: str = "",
              progress: bool = False) -> np.ndarray:
    from tqdm import tqdm
    out = np.empty(len(x))
    starts = range(0, len(x), chunk)
    for i in tqdm(starts, desc=bar_desc, disable=not progress or len(starts) < 2, file=sys.stderr,
                  unit="chunk"):
        out[i:i + chunk] = energy(x[i:i + chunk])
    return out


def log_partition(reduced_energy: Callable, data: np.ndarray, variance: float,
                  reference_samples: int = 1000000, seed: int = 0,
                  chains: Optional[np.ndarray] = None, bootstrap: int = 0,
                  progress: bool = False) -> Dict[str, object]:
    """log Z of exp(-reduced_energy) on V by BAR against N(0, variance I_D) on V.

    ``data``: samples of the Boltzmann density (M, n, d), mean-free; ``chains``: their chain
    ids (whole chains in time order) for the inefficiency and the block bootstrap, or None for
    independent samples. ``reduced_energy`` maps (B, n, d) to beta U (B,). Returns log Z by BAR,
    its standard deviation, the two exponential-averaging estimates, the inefficiency used and,
    with ``bootstrap`` > 0, the bootstrap standard deviation.
    """
    from tqdm import tqdm
    data = np.asarray(data, dtype=np.float64)
    n, d = data.shape[-2:]
    rng = np.random.default_rng(seed)
    u_data = _energies(reduced_energy, data, bar_desc="beta U of the data", progress=progress)
    if not np.isfinite(u_data).all():
        bad = int((~np.isfinite(u_data)).sum())
        raise ValueError(f"log_partition: {bad} data frames have a non-finite energy")
    # state 0 = q (normalised, f0 = 0), state 1 = exp(-beta U) (f1 = -log Z); the Gaussian
    # samples are drawn and evaluated in chunks, keeping only their works
    w_f = np.empty(reference_samples)
    chunk = 20000
    for i in tqdm(range(0, reference_samples, chunk), desc="beta U of the Gaussian samples",
                  disable=not progress, file=sys.stderr, unit="chunk"):
        ref = sample_isotropic(min(chunk, reference_samples - i), n, d, variance, rng)
        w_f[i:i + len(ref)] = reduced_energy(ref) - gaussian_nll(ref, variance)  # u1 - u0
    # An overflow at a near-collision (LJ's (1/r)^12 - 2 (1/r)^6 = inf - inf) means +inf.
    nonfinite_ref = int((~np.isfinite(w_f)).sum())
    w_f = np.where(np.isnan(w_f), np.inf, w_f)
    w_r = -(u_data - gaussian_nll(data, variance))        # u0 - u1
    df = bar(w_f, w_r)
    m = math.log(len(w_f) / len(w_r))
    g_r = _inefficiency(expit(-(-m + w_r + df)), chains)
    out = {
        "log_z": -df,
        "log_z_std": bar_std(w_f, w_r, df, 1.0, g_r),
        "log_z_std_independent": bar_std(w_f, w_r, df),
        "log_z_forward_exp": -exp_forward(w_f),
        "log_z_reverse_exp": -exp_reverse(w_r),
        "data_inefficiency": g_r,
        "reference_variance": variance,
        "reference_samples": int(reference_samples),
        "reference_nonfinite_energies": nonfinite_ref,
        "data_samples": int(len(data)),
    }
    if bootstrap > 0:
        # moving blocks of the data's inefficiency (rounded up) keep its correlations; the
        # Gaussian samples are independent
        block = max(1, int(math.ceil(g_r)))
        n_blocks = -(-len(w_r) // block)
        estimates = []
        for _ in tqdm(range(bootstrap), desc="bootstrap", disable=not progress, file=sys.stderr):
            starts = rng.integers(0, len(w_r) - block + 1, n_blocks)
            idx_r = (starts[:, None] + np.arange(block)).ravel()[:len(w_r)]
            idx_f = rng.integers(0, len(w_f), len(w_f))
            estimates.append(-bar(w_f[idx_f], w_r[idx_r], tol=1e-9))
        out["log_z_bootstrap_std"] = float(np.std(estimates, ddof=1)) if bootstrap > 1 else float("nan")
        out["bootstrap"] = {"replicas": int(bootstrap), "data_block": block}
    return out


# ---------------------------------------------------------------------- the floor

def _machine() -> Dict[str, object]:
    import scipy
    return provenance.machine(ROOT, {"numpy": np.__version__, "scipy": scipy.__version__})


def _check_provenance(system: str, data_path: str) -> None:
    """Refuse data sampled from another potential or temperature than ``system`` defines, where
    the data's provenance file (<data>.json of particles.data) says so."""
    meta_path = os.path.splitext(data_path)[0] + ".json"
    if not os.path.exists(meta_path):
        return
    with open(meta_path) as f:
        settings = json.load(f).get("settings", {})
    spec = SYSTEMS[system]
    if settings.get("system", system) != system:
        raise ValueError(f"{data_path}: sampled for system {settings['system']!r}, not {system!r}")
    if settings.get("parameters", spec.parameters) != spec.parameters:
        raise ValueError(f"{data_path}: sampled with parameters {settings['parameters']}, not "
                         f"{system}'s {spec.parameters}")
    temps = settings.get("temperatures", [1.0])
    if temps and temps[0] != 1.0:
        raise ValueError(f"{data_path}: the stored replica is at kT = {temps[0]}, not 1")


def data_floor(system: str, data: str, splits: Sequence[str] = ("val", "test"),
               frames: int = DEFAULT_FRAMES, reference_samples: int = 1000000,
               reference_variance: Optional[float] = None, seed: int = 0, bootstrap: int = 0,
               progress: bool = True) -> Dict[str, object]:
    """The floor of ``system``'s data set ``data`` (a particles.data .npz) on its held-out splits.

    log Z by BAR between the training frames and the Gaussian fitted to them (or of
    ``reference_variance``); per split the floor on ``frames`` evenly spaced frames (0: all),
    with the Gaussian fit's NLL on the same frames (the trainer's baseline) and their gap.
    """
    import torch
    from .train import load_data, spread_frames

    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of {sorted(SYSTEMS)}")
    if not os.path.isfile(data):
        raise FileNotFoundError(f"no data file {data!r} (a .npz of python -m "
                                f"smoothflow_torch.particles.data)")
    spec = SYSTEMS[system]
    _check_provenance(system, data)
    sets = load_data({"system": system, "data": data})
    with np.load(data) as f:
        chain_all, split_all, stored_energy = f["chain"], f["split"], f["energies"]
    train = sets["train"].numpy()
    train_chains = chain_all[split_all == 0]
    variance = isotropic_variance(train)
    ref_variance = variance if reference_variance is None else float(reference_variance)

    def reduced_energy(x):                 # kT = 1: beta U = U in the data's reduced units
        return spec.energy(x)

    result: Dict[str, object] = {
        "system": system, "data": str(data), "data_sha256": provenance.file_sha256(data),
        "dof": spec.dof, "kT": 1.0, "units": "nats per configuration, density on the "
        "centre-of-mass-free subspace in an orthonormal basis (as the trainer's NLL)",
        "gaussian_fit_variance": variance,
    }
    est = log_partition(reduced_energy, train, ref_variance, reference_samples, seed,
                        chains=train_chains, bootstrap=bootstrap, progress=progress)
    # the potential here against the energies the sampler stored (OpenMM's)
    u_train = _energies(reduced_energy, train)
    result["stored_energy_max_abs_diff"] = float(np.abs(u_train - stored_energy[split_all == 0]).max())
    result["log_z"] = est
    log_z, log_z_std = est["log_z"], est["log_z_std"]
    codes = {"train": 0, "val": 1, "test": 2}
    for split in splits:
        x_all = sets[split]
        if len(x_all) == 0:
            continue
        pick = spread_frames(torch.arange(len(x_all)), frames).numpy()
        x = x_all.numpy()[pick]
        chains = chain_all[split_all == codes[split]][pick]
        u = reduced_energy(x)
        g = _inefficiency(u, chains)
        sem = float(u.std(ddof=1) * math.sqrt(g / len(u))) if len(u) > 1 else float("nan")
        floor = float(u.mean()) + log_z
        gauss = float(gaussian_nll(x, variance).mean())
        result[split] = {
            "frames": int(len(x)), "mean_beta_u": float(u.mean()), "mean_beta_u_sem": sem,
            "beta_u_inefficiency": g,
            "floor_nll": floor, "floor_nll_std": float(math.hypot(sem, log_z_std)),
            "gaussian_fit_nll": gauss, "gaussian_fit_gap": gauss - floor,
        }
    return result


# -------------------------------------------------------------------------- the CLI

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m smoothflow_torch.particles.floor",
        description="The NLL floor of a particle data set: the held-out NLL of the true "
                    "Boltzmann density (kT = 1) on the centre-of-mass-free subspace, "
                    "mean beta U + log Z, with log Z by the Bennett acceptance ratio between "
                    "the training frames and the isotropic Gaussian fitted to them. Same frames, "
                    "units (nats per configuration) and coordinates as the trainer's held-out "
                    "NLL (python -m smoothflow_torch.particles.train), so the two compare "
                    "directly; docs/particle-systems.md section 7.",
        epilog="Example: python -m smoothflow_torch.particles.floor lj13 --data "
               "runs/particles/lj13/lj13.npz --out studies/lj13_free_form/results/"
               "data_floor_lj13.json   (2-3 minutes on one core)")
    p.add_argument("system", choices=sorted(SYSTEMS), help="the particle system the data sample")
    p.add_argument("--data", required=True,
                   help="the data set, a .npz of python -m smoothflow_torch.particles.data "
                        "(keys positions, energies, chain, split)")
    p.add_argument("--out", help="write the result as JSON here (default: print the summary only)")
    p.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test", "train"],
                   help="held-out splits to evaluate the floor on (default: val test)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help="evenly spaced frames of each split, as the trainer's final_frames "
                        f"(default {DEFAULT_FRAMES}, the training configs' value; 0: all)")
    p.add_argument("--reference-samples", type=int, default=1000000,
                   help="samples of the Gaussian reference for BAR (default 1000000)")
    p.add_argument("--reference-variance", type=float,
                   help="variance of the Gaussian reference per dof (default: the isotropic fit "
                        "to the training frames, the trainer's baseline)")
    p.add_argument("--bootstrap", type=int, default=0,
                   help="block-bootstrap replicas of log Z beside BAR's asymptotic error "
                        "(default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Gaussian samples (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = _parser().parse_args(argv)
    if a.frames < 0 or a.reference_samples < 2 or a.bootstrap < 0:
        print("error: --frames must be >= 0, --reference-samples >= 2, --bootstrap >= 0",
              file=sys.stderr)
        return 2
    if a.reference_variance is not None and not a.reference_variance > 0:
        print(f"error: --reference-variance must be > 0, got {a.reference_variance}", file=sys.stderr)
        return 2
    try:
        result = data_floor(a.system, a.data, a.splits, a.frames, a.reference_samples,
                            a.reference_variance, a.seed, a.bootstrap, progress=not a.no_progress)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result["command"] = "python -m smoothflow_torch.particles.floor " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    result["machine"] = _machine()
    est = result["log_z"]
    lines = [f"{a.system}: log Z = {est['log_z']:.4f} +- {est['log_z_std']:.4f} (BAR; forward "
             f"{est['log_z_forward_exp']:.4f}, reverse {est['log_z_reverse_exp']:.4f}"
             + (f", bootstrap std {est['log_z_bootstrap_std']:.4f}" if "log_z_bootstrap_std" in est
                else "") + ")"]
    for split in a.splits:
        if split in result:
            r = result[split]
            lines.append(f"  {split}: floor NLL {r['floor_nll']:.3f} +- {r['floor_nll_std']:.3f} nats "
                         f"on {r['frames']} frames; Gaussian fit {r['gaussian_fit_nll']:.3f} "
                         f"(gap {r['gaussian_fit_gap']:.3f})")
    print("\n".join(lines))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
