"""The flow of a config's ``model`` section, for any molecule: coupling layers, bond bounds and the
data-fitted prior (the alanine-dipeptide study's construction, with the molecule as an argument).

- **Bond bounds** from the training frames: per bond the data's range [min, max] widened by
  ``bond_padding`` (default 1) times its width on each side, so the data fill the middle third of
  the unit interval and held-out frames, MD and flow samples have room before the support's edge;
  ``bond_lo`` >= ``min_bond_lo`` (0.05 nm).
- **Coupling layers** (``scheme``), dimensions in the model format's order (bonds 0..N-2, angles
  N-1..2N-4, torsions 2N-3..3N-7; docs/model-format.md section 3):

  ``ic_coupled`` (default; the shipped alanine flows): the torsions split into two interleaved
  halves (even and odd Z-matrix rows, so the builder's consecutive backbone torsions, phi and psi,
  fall in different halves) that transform each other for ``n_torsion_blocks`` blocks (2 layers
  each); then ``n_angle_blocks`` blocks of the two angle halves conditioned on each other and on
  the torsions; then the two bond halves conditioned on each other, the angles and the torsions.

  ``ic_hierarchy``: the torsion blocks, then ``n_angle_blocks`` blocks of bonds | angles and angles
  | bonds, then the angles given the torsions, then the bonds given angles and torsions.

  ``random_halves``: ``n_layers`` layers over alternating random halves of all dimensions (seeded
  by ``split_seed``).

  Every layer has the same ``transform`` (smooth, spline, affine), ``direction`` (``density``:
  an analytic energy, the shipped flows'; or ``generative``), ``n_components``, ``hidden``,
  ``activation``.
- **Prior** ``"uniform"`` or ``{"kind": "truncated_normal", "width": w, "torsions": t}``: a normal
  per bond and angle with the training data's mean and w times its standard deviation of the
  normalized coordinate (every bond and angle well harmonic to the support's edges; the study's
  v2 fix for bonds escaping shallow wells in MD). ``torsions``: ``"uniform"`` (default) or
  ``"von_mises"``, a von Mises density per torsion with the training data's circular mean and
  the concentration whose mean resultant length I1(kappa) / I0(kappa) is the data's (weighted
  by the frames' Boltzmann weights: a biased torsion's own distribution), divided by w^2 (w
  widens a torsion as it widens a bond); a torsion with several wells (phi, a methyl rotor) gets
  a small kappa, an improper or a peptide bond a large one, which keeps amides planar far
  beyond the data (docs/reliability.md section 5). ``stiff_torsion_width`` (von Mises only;
  default w): the width for the torsions the data hold near one value (fitted kappa at least
  STIFF_TORSION_KAPPA = 10: impropers, peptide bonds, amide hydrogens), their kappa divided by
  its square instead; below 1 it deepens their wells a quarter turn out without touching the
  soft torsions (phi, psi, rotors), whose breadth the sampling depends on. Either division is
  capped at the format's limit on kappa (priors.MAX_TORSION_KAPPA).
- **Support** ``{"policy": "wall", "margin": 0.01, "angle_margin": 0.1, "wall_constant": 1000}``:
  the wall of docs/model-format.md 5.2, its angle zone from 36 degrees off collinear, where the
  Z-matrix's torsions are not yet singular (docs/reliability.md section 5); a training angle
  inside that zone is an error naming it (give a smaller ``angle_margin``).
- ``init_from``: a model file whose weights, bond bounds and prior replace the fresh ones (a
  later stage, or a trained model fine-tuned on other data); its layers must equal this
  config's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import zmatrix as zm
from ..flow import SmoothFlow
from ..priors import MAX_TORSION_KAPPA
from ..training import set_seed

SCHEMES = ("ic_coupled", "ic_hierarchy", "random_halves")
MODEL_DEFAULTS = {
    "transform": "smooth", "direction": "density", "scheme": "ic_coupled",
    "n_torsion_blocks": 4, "n_angle_blocks": 2, "n_layers": 8, "split_seed": 0,
    "n_components": 8, "hidden": [64, 64], "activation": "silu",
    "bond_padding": 1.0, "min_bond_lo": 0.05, "energy_offset": 0.0,
    "support": {"policy": "wall", "margin": 0.01, "angle_margin": 0.1, "wall_constant": 1000.0},
    "prior": {"kind": "truncated_normal", "width": 1.0}, "init_from": None,
}
#: transform constants passed through to SmoothFlow when present
CONSTANT_KEYS = ("smooth", "spline", "affine")


def model_section(model: dict) -> dict:
    """A model section with its defaults; unknown keys are an error naming them."""
    unknown = sorted(set(model) - set(MODEL_DEFAULTS) - set(CONSTANT_KEYS))
    if unknown:
        raise ValueError(f"model: unknown keys {unknown}; known: {sorted(set(MODEL_DEFAULTS) | set(CONSTANT_KEYS))}")
    return {**MODEL_DEFAULTS, **model}


def dims(n_atoms: int):
    """(bond dims, angle dims, torsion dims) of an N-atom flow."""
    N = n_atoms
    return list(range(0, N - 1)), list(range(N - 1, 2 * N - 3)), list(range(2 * N - 3, 3 * N - 6))


def coupling_layers(n_atoms: int, model: dict) -> list:
    """SmoothFlow's ``layers`` for a model section (module docstring)."""
    m = model_section(model)
    if n_atoms < 4:
        raise ValueError(f"a coupling flow needs at least 4 atoms (a torsion to split), got {n_atoms}")
    common = {"transform": m["transform"], "direction": m["direction"], "n_components": int(m["n_components"]),
              "hidden": list(m["hidden"]), "activation": m["activation"]}
    bonds, angles, torsions = dims(n_atoms)
    pairs = []
    if m["scheme"] in ("ic_hierarchy", "ic_coupled"):
        t_even, t_odd = torsions[0::2], torsions[1::2]
        for _ in range(int(m["n_torsion_blocks"])):
            pairs += [(t_even, t_odd), (t_odd, t_even)]
    if m["scheme"] == "ic_hierarchy":
        for _ in range(int(m["n_angle_blocks"])):
            pairs += [(bonds, angles), (angles, bonds)]
        pairs += [(angles, torsions), (bonds, angles + torsions)]
    elif m["scheme"] == "ic_coupled":
        a_even, a_odd = angles[0::2], angles[1::2]
        b_even, b_odd = bonds[0::2], bonds[1::2]
        for _ in range(int(m["n_angle_blocks"])):
            pairs += [(a_even, a_odd + torsions), (a_odd, a_even + torsions)]
        pairs += [(b_even, b_odd + angles + torsions), (b_odd, b_even + angles + torsions)]
    elif m["scheme"] == "random_halves":
        rng = np.random.default_rng(int(m["split_seed"]))
        D = 3 * n_atoms - 6
        for i in range(int(m["n_layers"])):
            if i % 2 == 0:
                perm = rng.permutation(D)
                a, b = sorted(perm[:D // 2].tolist()), sorted(perm[D // 2:].tolist())
                pairs.append((a, b))
            else:
                pairs.append((b, a))
    else:
        raise ValueError(f"model.scheme must be one of {SCHEMES}, got {m['scheme']!r}")
    return [{**common, "transformed": list(t), "conditioning": list(c)} for t, c in pairs]


def bond_bounds(zmatrix, positions: np.ndarray, padding: float = 1.0, min_lo: float = 0.05):
    """Per-bond (lo, hi) in nm, Z-matrix row order (module docstring)."""
    zmatrix = np.asarray(zmatrix)
    x = np.asarray(positions, dtype=np.float64)
    b = np.linalg.norm(x[:, zmatrix[1:, 0]] - x[:, zmatrix[1:, 1]], axis=-1)
    lo, hi = b.min(0), b.max(0)
    width = np.maximum(hi - lo, 1e-4)     # a bond that never moved (one frame) still gets an interval
    return np.maximum(lo - padding * width, min_lo), hi + padding * width


def spread_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """The indices of at most max_frames of n_frames frames, evenly spread over them."""
    return np.linspace(0, n_frames - 1, min(n_frames, max_frames)).round().astype(int)


def spread_frames(train_positions: np.ndarray, max_frames: int) -> torch.Tensor:
    """At most max_frames of the training frames, evenly spread over them, as float64."""
    x = np.asarray(train_positions, dtype=np.float64)
    return torch.from_numpy(x[spread_indices(len(x), max_frames)])


def von_mises_kappa(r: np.ndarray) -> np.ndarray:
    """The kappa whose mean resultant length I1(kappa) / I0(kappa) is ``r`` (in [0, 1)), by
    bisection on the increasing ratio (0 at kappa 0), up to the format's limit."""
    r = np.asarray(r, dtype=np.float64)
    lo, hi = np.zeros_like(r), np.full_like(r, MAX_TORSION_KAPPA)
    ratio = lambda k: (torch.special.i1e(torch.from_numpy(k)) / torch.special.i0e(torch.from_numpy(k))).numpy()
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = ratio(mid) < r
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


STIFF_TORSION_KAPPA = 10.0   # a torsion the data hold this tightly is a planar group's (impropers 90-150,
                             # omega 33, amide H 38 in alanine dipeptide; phi 3.4, psi 0.5, rotors 0)


def data_prior(prior, zmatrix, train_positions: np.ndarray, lo, hi, max_frames: int = 20000,
               weights: Optional[np.ndarray] = None):
    """The latent prior of a model section's ``prior`` (module docstring); the bonds' and angles'
    moments are unweighted (a torsion bias barely moves their marginals), the torsions' weighted
    by ``weights`` (the frames' Boltzmann weights; default equal)."""
    if prior == "uniform":
        return "uniform"
    if not isinstance(prior, dict) or prior.get("kind") != "truncated_normal" or \
            set(prior) - {"kind", "width", "torsions", "stiff_torsion_width"} or \
            prior.get("torsions", "uniform") not in ("uniform", "von_mises"):
        raise ValueError(f"model.prior must be 'uniform' or {{'kind': 'truncated_normal', 'width': w, 'torsions': "
                         f"'uniform' or 'von_mises', 'stiff_torsion_width': w2}}, got {prior!r}")
    width = float(prior.get("width", 1.0))
    if not width > 0:
        raise ValueError(f"model.prior.width must be > 0, got {width}")
    stiff_width = float(prior.get("stiff_torsion_width", width))
    if "stiff_torsion_width" in prior and prior.get("torsions") != "von_mises":
        raise ValueError("model.prior.stiff_torsion_width needs 'torsions': 'von_mises'")
    if not stiff_width > 0:
        raise ValueError(f"model.prior.stiff_torsion_width must be > 0, got {stiff_width}")
    zmatrix = np.asarray(zmatrix)
    n = len(zmatrix)
    pick = spread_indices(len(train_positions), max_frames)
    internal = zm.internal_coordinates(spread_frames(train_positions, max_frames), zmatrix)
    u = zm.normalize(*internal, torch.as_tensor(lo), torch.as_tensor(hi)).numpy()
    sigma = np.maximum(width * u[:, :2 * n - 3].std(0), 1e-3)   # a coordinate without spread in few frames
    out = {"kind": "truncated_normal", "mean": u[:, :2 * n - 3].mean(0).tolist(), "sigma": sigma.tolist()}
    if prior.get("torsions", "uniform") == "von_mises":
        w = np.ones(len(pick)) if weights is None else np.asarray(weights, dtype=np.float64)[pick]
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError("the frames' weights must be finite, >= 0 and not all 0")
        angle = 2 * np.pi * u[:, 2 * n - 3:]
        c, s = (w @ np.cos(angle)) / w.sum(), (w @ np.sin(angle)) / w.sum()
        r = np.minimum(np.hypot(c, s), 1 - 1e-12)
        # the second "% 1.0": a tiny negative angle wraps to 1 - 1e-17, which rounds to 1.0,
        # outside the format's [0, 1)
        out["torsion_mean"] = (np.arctan2(s, c) / (2 * np.pi) % 1.0 % 1.0).tolist()
        kappa = von_mises_kappa(r)
        out["torsion_kappa"] = np.minimum(kappa / np.where(kappa >= STIFF_TORSION_KAPPA, stiff_width, width) ** 2,
                                          MAX_TORSION_KAPPA).tolist()
    return out


def check_angles_outside_wall(flow: SmoothFlow, train_positions: np.ndarray, max_frames: int = 20000) -> None:
    """Under the wall policy the flow sees an angle in the zone only clamped: a training angle
    there (a near-linear angle, with a large ``angle_margin``) would be learnt wrongly. Bonds
    cannot be there (their bounds come from the data)."""
    if flow.support_policy != "wall":
        return
    theta = zm.internal_coordinates(spread_frames(train_positions, max_frames), flow.zmatrix)[1] / np.pi      # angles in units of pi
    m = flow.angle_margin
    inside = (theta < 2 * m) | (theta > 1 - 2 * m)
    if bool(inside.any()):
        k = int(inside.any(0).nonzero()[0, 0])
        d = flow.n_atoms - 1 + k
        lo, hi = float(theta[:, k].min()) * 180, float(theta[:, k].max()) * 180
        raise ValueError(f"{flow.describe_dimension(d)} reaches {lo:.1f}-{hi:.1f} degrees in the training frames, "
                         f"inside the wall zone of support.angle_margin = {m} (below {360 * m:.1f} or above "
                         f"{180 - 360 * m:.1f} degrees); give a smaller angle_margin (at most "
                         f"{min(lo, 180 - hi) / 360:.3g}) or a Z-matrix without this near-linear angle")


def build_flow(model: dict, zmatrix, atoms: list, temperature: float, train_positions: np.ndarray, seed: int,
               base: Optional[Path] = None, train_weights: Optional[np.ndarray] = None) -> SmoothFlow:
    """The SmoothFlow of a model section for one molecule (weights seeded by ``seed``);
    ``init_from`` is relative to ``base``; ``train_weights`` (the frames' Boltzmann weights)
    weight the torsions' fit of a von Mises prior."""
    m = model_section(model)
    zmatrix = np.asarray(zmatrix, dtype=np.int64)
    start = None
    if m["init_from"]:
        from ..export import load_model
        path = Path(m["init_from"])
        path = path if path.is_absolute() or base is None else Path(base) / path
        if not path.exists():
            raise FileNotFoundError(f"model.init_from: {path} does not exist (train the earlier stage first)")
        start = load_model(path)
    lo, hi = bond_bounds(zmatrix, train_positions, float(m["bond_padding"]), float(m["min_bond_lo"]))
    prior = data_prior(m["prior"], zmatrix, train_positions, lo, hi, weights=train_weights)
    if start is not None:
        # The prior is part of the flow (not a state_dict tensor): a start fitted to other data
        # (a shipped model fine-tuned on new data) keeps its own, or it would be another flow.
        kind = lambda p: ("uniform" if p == "uniform" else
                          "truncated-normal with von Mises torsions" if "torsion_mean" in p else "truncated-normal")
        if kind(start.prior) != kind(prior):
            raise ValueError(f"model.init_from: {path} has a {kind(start.prior)} prior, this config a {kind(prior)} one")
        prior = start.prior
    set_seed(seed)
    kwargs = {k: m[k] for k in CONSTANT_KEYS if k in m}
    flow = SmoothFlow(zmatrix, lo, hi, coupling_layers(len(zmatrix), m), temperature=float(temperature),
                      energy_offset=float(m["energy_offset"]), atoms=atoms, support=m["support"],
                      prior=prior, **kwargs)
    check_angles_outside_wall(flow, train_positions)
    if start is not None:
        if start.config()["layers"] != flow.config()["layers"]:
            raise ValueError(f"model.init_from: {path} has other layers than this config")
        flow.load_state_dict(start.state_dict(), strict=True)
    return flow
