"""Training a SmoothFlow: losses, a JSON run configuration, and a resumable Trainer.

Losses (``docs/flow-math.md`` section 8; ``studies/alanine_dipeptide/training.md``):

- :func:`nll`: maximum likelihood, ``mean(-log q(r))`` over data, nats per molecule, where
  ``log q(r) = log p_U(u(r)) - sum log scale - log J(r)`` is the flow's density over positions
  modulo rigid motion (``SmoothFlow.log_prob``).
- :func:`force_matching`: the mean over configurations, atoms and x/y/z of the squared
  difference between the flow's forces ``-dU/dr`` (autograd, ``create_graph=True``) and the
  reference forces. ``units="reduced"`` (default) divides both by kT first, so the loss is in
  (1/nm)^2 (forces in kT/nm), the scale on which it adds to the NLL; ``units="kJ/mol/nm"``
  gives (kJ/mol/nm)^2. The force RMSE in kJ/mol/nm is ``sqrt(loss) * kT`` (reduced) or
  ``sqrt(loss)``. With ``force_matching_noise`` = sigma > 0 (nm) the force-matching term is
  taken instead at the batch's frames displaced by Gaussian noise of standard deviation
  sigma per coordinate, against the target's forces there (``target.evaluate``; displaced
  frames whose target evaluation fails are left out). The NLL stays on the clean frames. Why:
  MD explores a thermal shell around the data, and matching forces only at the data leaves
  the flow free to be rough in between, which velocity Verlet turns into heating. With
  ``force_matching_extra_batch`` = b > 0 the term also covers b of the Trainer's
  ``force_matching_frames`` per step (displaced likewise), against the target's forces there, the
  mean taken over data and extra frames together: a flow's potential is -kT log q of the data's
  density, but its forces should be the target's wherever MD goes, hot runs included. Those
  frames should be the target's own (e.g. its 1000-2000 K frames): at a flow's failed frames the
  force field meets clashes with forces of 1e6 kJ/mol/nm, which a squared loss cannot weigh.
- :func:`reverse_kl`: ``mean over x ~ q of u_target(x) + log q(x)`` (the KL divergence
  KL(q || p_target) up to the target's log partition function), with ``x, log q`` from
  ``flow.sample(n, return_log_prob=True)`` (reparameterized, differentiable in the weights) and
  ``u_target`` a differentiable reduced energy (an :class:`~smoothflow_torch.openmm_bridge.
  OpenMMEnergy`). Both densities are over positions modulo rigid motion, so the Jacobian
  terms (log |det du/dz|, the normalization scales and log J of the Z-matrix) are all inside
  log q, consistently with the energy. Samples with a non-finite target energy (u = +inf) or
  log q are left out of the mean and counted.
- :func:`alpha_divergence`: an importance-weighted likelihood on the flow's own samples whose
  gradient is that of the alpha-divergence ``log E_q[w^alpha] / (alpha - 1)`` between the
  flow q and the target p, with ``w = p / q`` the importance weights (up to the target's
  normalization). For alpha = 2 that is the log of the weights' second moment, which is
  ``n / ESS`` in the limit: the loss that targets the weights' variance directly, as flow
  annealed importance sampling bootstrap (Midgley et al. 2023) does with alpha = 2. Samples
  are drawn without gradient, weighted by the self-normalized ``w^alpha``, and the flow's
  log density of them is raised: ``-sum_i (w_i^alpha / sum_j w_j^alpha) log q(x_i)``. Its
  gradient is the self-normalized estimate of the divergence's gradient, ``-E_q[w^alpha grad
  log q] / E_q[w^alpha]``, in score-function form (no reparameterization, so the target's
  forces never enter: lower variance than the reverse KL, whose per-sample gradients carry
  them). Its value is a weighted NLL, not the divergence. The samples with the largest weights,
  where the flow under-covers the target, pull hardest.
- :func:`tail_matching`: energy differences off the data. Each frame of the batch gets one
  bond or angle moved to a uniformly random point of its interval (inside the wall margin),
  and the flow's energy rise ``dU_flow = (U(x') - U(x)) / kT`` is matched to the target's
  ``du = u_target(x') - u_target(x)``: ``(dU_flow - du)^2`` where ``|du| < cap``; where the
  target rises past the cap (kT) only a rise of at least the cap, ``relu(cap - dU_flow)^2``
  (and a fall of at least the cap where it falls past it). Why: likelihood and force
  matching see only the data, so beyond it a flow's potential is a plateau a few kT high
  (``docs/design.md``, "Well depth"); bonds escape over it in MD, and flow samples land on it
  (high-energy samples that cost sampling efficiency). The cap keeps the demand within what a
  flow can represent (its potential is bounded, about kT log(1/(1 - c_max)) per layer).
- :func:`curvature`: a bound on the potential's curvature near the data. Each frame of the
  batch gets one coordinate moved by a normal step (``curvature_noise`` in units of u), and the
  flow's second derivative along it, ``E''`` (kJ/mol per u^2, the energy the flow sees), is
  penalized where it exceeds ``curvature_limit``: ``relu(|E''| / limit - 1)^2``. Why: likelihood
  sees the data's density, not its derivatives, and a smooth mixture can put curvature spikes of
  1e5 kJ/mol per u^2 just beyond the data's edge (H-X-X angles of the shipped flow), which make
  MD at 1 fs unstable in hot runs (``docs/reliability.md`` section 5). Frames given as the
  Trainer's ``curvature_frames`` (e.g. the force field's own frames at 1000-2000 K,
  smoothflow_torch.pipeline.hot_frames) add ``curvature_extra_batch`` frames per step to the
  bound and nothing else: a hot run leaves the data, and the bound must hold where it goes.
- :func:`stiffness`: a bound on the Cartesian curvature a velocity-Verlet step meets. For
  ``stiffness_batch`` frames of the data batch (and as many of the curvature frames, when
  given), the dominant eigenvalue lambda of the mass-weighted Hessian of the flow's energy (power
  iteration with Hessian-vector products, ``stiffness_iterations``) is penalized where the
  largest stable step 2 / sqrt(lambda) falls below ``stiffness_dt_fs``:
  ``relu(|lambda| / limit - 1)^2``, limit = (2 / stiffness_dt_fs)^2. Why: the curvature bound
  looks along one internal coordinate at a time; the integrator meets the Cartesian Hessian,
  with the atoms' masses (the force field's is 3.2 fs, its C-H stretches).
- ``verlet`` (:func:`smoothflow_torch.verlet_error.verlet_bound`): a bound on velocity
  Verlet's energy error. For ``verlet_batch`` frames of the data batch (and as many of the
  curvature frames, when given), thermal velocities at ``verlet_temperature`` are drawn and
  ``verlet_steps`` steps of ``verlet_dt_fs`` taken on the flow's potential; the total-energy
  change dE is penalized where it exceeds ``verlet_limit`` (kJ/mol): ``relu(|dE| / limit -
  1)^2``. Why: hot runs fail by steady heating where the flow's stiff modes change frequency
  as the molecule moves, which no single-frame bound sees; the error of the steps themselves
  does (``docs/reliability.md`` section 5).

:class:`Trainer` runs Adam on the weighted sum
``w_nll * nll + w_fm * force_matching + w_rkl * reverse_kl + w_tail * tail_matching +
w_alpha * alpha_divergence + w_curv * curvature`` with a
learning-rate schedule, gradient clipping, fixed seeds, a tqdm bar, a JSONL log of every loss
at every step, periodic held-out evaluation, checkpoints that resume bit-identically, and
export with provenance.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .export import export_model
from .verlet_error import verlet_bound

__all__ = ["FORCE_UNITS", "LR_SCHEDULES", "LOSS_NAMES", "TrainConfig", "Trainer", "nll",
           "force_matching", "reverse_kl", "tail_matching", "alpha_divergence", "curvature", "curvature_along",
           "stiffness", "mass_weighted_top_eigenvalue", "element_masses", "weighted_loss", "learning_rate", "set_seed",
           "sampling_efficiency", "git_info"]

FORCE_UNITS = ("reduced", "kJ/mol/nm")
LR_SCHEDULES = ("constant", "cosine", "step")
LOSS_NAMES = ("nll", "force_matching", "reverse_kl", "tail_matching", "alpha_divergence", "curvature",
              "stiffness", "verlet")
CHECKPOINT_FORMAT = "smoothflow-checkpoint"
CHECKPOINT_VERSION = 1


# ====================================================================== losses
def nll(flow, positions: torch.Tensor) -> torch.Tensor:
    """Mean negative log likelihood ``-log q(r)`` of configurations ``(B, N, 3)``, nats.

    Equals ``mean((U(r) - U0) / kT)``.
    """
    return -flow.log_prob(positions).mean()


def force_matching(flow, positions: torch.Tensor, forces: torch.Tensor,
                   units: str = "reduced", return_nll: bool = False):
    """Mean squared force difference between the flow and reference forces.

    Parameters
    ----------
    flow : SmoothFlow
    positions : torch.Tensor
        ``(B, N, 3)`` nm.
    forces : torch.Tensor
        ``(B, N, 3)`` reference forces, kJ/mol/nm.
    units : str
        ``reduced``: ``mean(((F_flow - F_ref) / kT)^2)`` in (1/nm)^2; ``kJ/mol/nm``:
        ``mean((F_flow - F_ref)^2)`` in (kJ/mol/nm)^2. The mean runs over B, N and x/y/z.
    return_nll : bool
        Also return the batch NLL, which the same evaluation gives for free.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        The loss (differentiable in the weights: the forces keep their graph), and the NLL.
    """
    if units not in FORCE_UNITS:
        raise ValueError(f"force units must be one of {FORCE_UNITS}, got {units!r}")
    E, F = flow.energy_and_forces(positions, create_graph=True)
    ref = torch.as_tensor(forces, dtype=F.dtype, device=F.device)
    if ref.shape != F.shape:
        raise ValueError(f"reference forces have shape {tuple(ref.shape)}, flow forces "
                         f"{tuple(F.shape)}")
    diff = F - ref
    if units == "reduced":
        diff = diff / flow.kT
    loss = (diff ** 2).mean()
    if return_nll:
        return loss, ((E - flow.energy_offset) / flow.kT).mean()
    return loss


def _mean_where(values: torch.Tensor, ok: torch.Tensor):
    """(mean of ``values`` where ``ok``, count): NaN when none is ok. where(), not indexing,
    so that the left-out entries get an exactly zero gradient."""
    n_ok = int(ok.sum())
    if not n_ok:
        return values.new_tensor(float("nan")), 0
    return torch.where(ok, values, torch.zeros_like(values)).sum() / n_ok, n_ok


def _raw_reduced_energy(target, positions: torch.Tensor) -> torch.Tensor:
    """The target's reduced energies without its linlog cut (``reduced_energy(x, cut=False)``)
    when it has one, else ``target(x)``."""
    energy = getattr(target, "reduced_energy", None)
    return energy(positions, cut=False) if energy is not None else target(positions)


def reverse_kl(flow, target: Callable[[torch.Tensor], torch.Tensor], n: int,
               generator: Optional[torch.Generator] = None, return_info: bool = False):
    """Reverse KL ``mean over x ~ q of u_target(x) + log q(x)``, nats (up to log Z_target).

    Parameters
    ----------
    flow : SmoothFlow
    target : callable
        Positions ``(n, N, 3)`` -> reduced energies ``(n,)``, differentiable in the
        positions (e.g. :class:`~smoothflow_torch.openmm_bridge.OpenMMEnergy`); ``+inf`` marks
        a configuration of zero target density.
    n : int
        Samples.
    generator : torch.Generator, optional
        For the latent draws.
    return_info : bool
        Also return ``{"n_invalid": samples left out, "n_cut": samples above the target's
        energy cut (if it reports one)}``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, dict)
        NaN when no sample is valid.
    """
    x, log_q = flow.sample(n, generator=generator, return_log_prob=True)
    u = target(x)
    total = u + log_q
    ok = torch.isfinite(total)
    loss, n_ok = _mean_where(total, ok)
    if not return_info:
        return loss
    return loss, {"n_invalid": int(n - n_ok), "n_cut": int(getattr(target, "last_n_cut", 0))}


def alpha_divergence(flow, target: Callable[[torch.Tensor], torch.Tensor], n: int,
                     alpha: float = 2.0, generator: Optional[torch.Generator] = None,
                     return_info: bool = False):
    """The alpha-divergence surrogate ``-sum_i wbar_i log q(x_i)`` (module docstring), nats.

    Parameters
    ----------
    flow : SmoothFlow
    target : callable
        Positions ``(n, N, 3)`` -> reduced energies ``(n,)``; ``reduced_energy(x, cut=False)``
        is used when the target has it (the weights need the raw energies). No gradient is
        taken through it.
    n : int
        Flow samples.
    alpha : float
        > 1; wbar_i is proportional to ``w_i ** alpha``.
    generator : torch.Generator, optional
        For the latent draws.
    return_info : bool
        Also return ``{"n_invalid": samples with a non-finite weight (left out), "ess":
        the batch's ESS / n of w, "top_weight": the largest normalized w^alpha}``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, dict)
        NaN when no sample has a finite weight.
    """
    if not (alpha > 1 and math.isfinite(alpha)):
        raise ValueError(f"alpha_divergence: alpha must be finite and > 1, got {alpha}")
    with torch.no_grad():
        x, log_q0 = flow.sample(n, generator=generator, return_log_prob=True)
        log_w = -_raw_reduced_energy(target, x).to(log_q0.dtype) - log_q0
    ok = torch.isfinite(log_w)
    info = {"n_invalid": int(n - int(ok.sum())), "ess": sampling_efficiency(log_w),
            "top_weight": float("nan")}
    if not bool(ok.any()):
        loss = log_q0.new_tensor(float("nan"))
        return (loss, info) if return_info else loss
    scaled = torch.where(ok, alpha * log_w, torch.full_like(log_w, -math.inf))
    wbar = torch.softmax(scaled, 0)
    info["top_weight"] = float(wbar.max())
    log_q = flow.log_prob(x[ok])
    loss = -(wbar[ok] * log_q).sum()
    return (loss, info) if return_info else loss


def tail_matching(flow, target: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor,
                  cap: float = 20.0, generator: Optional[torch.Generator] = None,
                  return_info: bool = False, torsions: bool = False):
    """Energy-difference matching off the data (module docstring), in kT^2.

    Parameters
    ----------
    flow : SmoothFlow
    target : callable
        Positions ``(B, N, 3)`` -> reduced energies ``(B,)``; ``reduced_energy(x, cut=False)``
        is used when the target has it (the raw energies, not the linlog-cut ones).
    positions : torch.Tensor
        ``(B, N, 3)`` frames inside the support.
    cap : float
        kT; a target rise (fall) past it only asks the flow to rise (fall) at least this much.
    generator : torch.Generator, optional
        For the choice of coordinate and its new value.
    return_info : bool
        Also return ``{"n_invalid": pairs left out (non-finite target energy), "n_capped":
        pairs above the cap}``.
    torsions : bool
        Move torsions too (to a uniformly random value on the circle): the torsions that must
        stay near one value (impropers, H-N-C-O, omega) then learn that leaving it costs what
        the target says, which likelihood near the data never teaches.
    """
    if not cap > 0:
        raise ValueError(f"tail_matching cap must be > 0 kT, got {cap}")
    with torch.no_grad():
        u = flow.internal_coordinates(positions)
        B = u.shape[0]
        nI = flow.n_interval
        d = torch.randint(u.shape[1] if torsions else nI, (B,), generator=generator)
        margins = 2 * flow.wall_margins() if flow.support_policy == "wall" else torch.zeros(nI, dtype=u.dtype)
        lo = torch.cat([margins.to(u.dtype), torch.zeros(u.shape[1] - nI, dtype=u.dtype)])[d]
        moved = u.clone()
        moved[torch.arange(B), d] = lo + (1 - 2 * lo) * torch.rand(B, generator=generator, dtype=u.dtype)
        x = flow.to_cartesian(torch.cat([u, moved]))
        ut = _raw_reduced_energy(target, x)
        du = ut[B:] - ut[:B]
    e = flow.energy(x) / flow.kT
    df = e[B:] - e[:B]
    ok = torch.isfinite(du)
    du = torch.where(ok, du, torch.zeros_like(du))
    up, down = ok & (du >= cap), ok & (du <= -cap)
    capped = up | down
    err = torch.where(up, torch.relu(cap - df), torch.where(down, torch.relu(df + cap), df - du))
    loss, n_ok = _mean_where(err ** 2, ok)
    if not return_info:
        return loss
    return loss, {"n_invalid": int(B - n_ok), "n_capped": int(capped.sum())}


def curvature_along(flow, v: torch.Tensor, d: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """d^2 E / du_d^2 of each row of v ``(B, D)`` along its own coordinate ``d[b]`` (kJ/mol per
    u^2; E the flow's energy at the point it sees, :meth:`SmoothFlow.energy_of_u`)."""
    rows = torch.arange(v.shape[0])
    v = v.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(flow.energy_of_u(v).sum(), v, create_graph=True)
        (h,) = torch.autograd.grad(g[rows, d].sum(), v, create_graph=create_graph)
    return h[rows, d]


def curvature(flow, positions: torch.Tensor, limit: float = 5e4, noise: float = 0.05,
              generator: Optional[torch.Generator] = None, return_info: bool = False):
    """The curvature bound (module docstring): mean of ``relu(|E''| / limit - 1)^2`` over the
    batch, each frame's coordinate ``d`` (any dimension) moved by ``noise`` times a standard
    normal (bonds and angles kept inside [2m, 1 - 2m] under the wall policy, [1e-3, 1 - 1e-3]
    otherwise; torsions wrapped). ``return_info`` adds ``{"max": the largest |E''|,
    "n_over": frames over the limit}``."""
    if not (limit > 0 and noise >= 0):
        raise ValueError(f"curvature needs limit > 0 and noise >= 0, got {limit} and {noise}")
    with torch.no_grad():
        u = flow.internal_coordinates(positions)
        B = u.shape[0]
        d = torch.randint(u.shape[1], (B,), generator=generator)
        rows = torch.arange(B)
        v = u.clone()
        v[rows, d] = v[rows, d] + noise * torch.randn(B, generator=generator, dtype=u.dtype)
        lo = 2 * flow.wall_margins() if flow.support_policy == "wall" else torch.full_like(v[0, :flow.n_interval], 1e-3)
        nI = flow.n_interval
        v[:, :nI] = v[:, :nI].clamp(lo, 1 - lo)
        v[:, nI:] = torch.remainder(v[:, nI:], 1.0)
    h = curvature_along(flow, v, d)
    loss = (torch.relu(h.abs() / limit - 1) ** 2).mean()
    if not return_info:
        return loss
    return loss, {"max": float(h.detach().abs().max()), "n_over": int((h.detach().abs() > limit).sum())}


def element_masses(atoms) -> torch.Tensor:
    """Masses (dalton) of a model's atoms (``[{"element": "C", ...}, ...]``) from OpenMM's table."""
    from openmm import unit
    from openmm.app import element
    if not atoms:
        raise ValueError("the stiffness bound needs the model's atoms (their elements give the masses)")
    return torch.tensor([element.get_by_symbol(a["element"]).mass.value_in_unit(unit.dalton) for a in atoms],
                        dtype=torch.float64)


def mass_weighted_top_eigenvalue(flow, positions: torch.Tensor, masses: torch.Tensor, iterations: int = 8,
                                 generator: Optional[torch.Generator] = None,
                                 create_graph: bool = True) -> torch.Tensor:
    """The dominant eigenvalue (largest in magnitude) of each frame's mass-weighted Cartesian
    Hessian of the flow's energy, ``(B,)`` in ps^-2 (kJ/mol/nm^2/amu): power iteration with
    Hessian-vector products, from a random start, ``iterations`` products without graph and a
    Rayleigh quotient with it (its gradient is the eigenvalue's, Hellmann-Feynman). A velocity
    Verlet step is stable below 2 / sqrt(lambda) there. Fewer iterations give a value at most
    the true one in magnitude: the bound it feeds then errs on the lenient side."""
    x = positions.detach().requires_grad_(True)
    w = (1.0 / torch.sqrt(masses.to(x.dtype)))[None, :, None]

    def hvp(v, graph):
        with torch.enable_grad():
            (g,) = torch.autograd.grad(flow.energy(x).sum(), x, create_graph=True)
            (hv,) = torch.autograd.grad((g * (w * v)).sum(), x, create_graph=graph)
        return w * hv

    v = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    unit = lambda a: a / a.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None]
    v = unit(v)
    for _ in range(iterations):
        v = unit(hvp(v, False).detach())
    return (v * hvp(v, create_graph)).flatten(1).sum(dim=1)


def stiffness(flow, positions: torch.Tensor, masses: torch.Tensor, limit: float, iterations: int = 8,
              generator: Optional[torch.Generator] = None, return_info: bool = False):
    """The stiffness bound (module docstring): mean of ``relu(|lambda| / limit - 1)^2`` with
    lambda the dominant mass-weighted Hessian eigenvalue of each frame (ps^-2;
    :func:`mass_weighted_top_eigenvalue`). ``return_info`` adds ``{"max": the largest
    |lambda|, "n_over": frames over the limit, "dt_min_fs": 2 / sqrt(max) in fs}``."""
    if not (limit > 0 and math.isfinite(limit)):
        raise ValueError(f"stiffness needs a finite limit > 0 ps^-2, got {limit}")
    lam = mass_weighted_top_eigenvalue(flow, positions, masses, iterations, generator).abs()
    loss = (torch.relu(lam / limit - 1) ** 2).mean()
    if not return_info:
        return loss
    top = float(lam.detach().max())
    return loss, {"max": top, "n_over": int((lam.detach() > limit).sum()),
                  "dt_min_fs": 2000.0 / math.sqrt(top) if top > 0 else float("inf")}


def _frame_tensors(frames, name: str, dtype):
    """(positions, forces or None, weights or None) as tensors from a 2- or 3-tuple (or three
    Nones for no frames); positions and forces in ``dtype``, weights float64 >= 0."""
    if frames is None:
        return None, None, None
    if len(frames) == 2:
        (pos, frc), wts = frames, None
    elif len(frames) == 3:
        pos, frc, wts = frames
    else:
        raise ValueError(f"{name} must be (positions, forces) or (positions, forces, weights)")
    if wts is not None:
        wts = torch.as_tensor(wts, dtype=torch.float64)
        if wts.shape != (len(pos),) or not bool(torch.isfinite(wts).all()) or bool((wts < 0).any()) \
                or not float(wts.sum()) > 0:
            raise ValueError(f"{name}: weights must be {len(pos)} finite values >= 0 with a positive sum")
    return (torch.as_tensor(pos, dtype=dtype), None if frc is None else torch.as_tensor(frc, dtype=dtype),
            wts)


def _extra_positions(frames, name: str, n_atoms: int, dtype) -> Optional[torch.Tensor]:
    """Frames given beside the data (curvature_frames, force_matching_frames) as a tensor, or
    None; ValueError naming ``name`` unless they are finite positions of shape (n >= 1, N, 3)."""
    if frames is None:
        return None
    x = torch.as_tensor(frames, dtype=dtype)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1:] != (n_atoms, 3) or not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite positions of shape (n >= 1, {n_atoms}, 3), got {tuple(x.shape)}")
    return x


def weighted_loss(terms: Dict[str, torch.Tensor], weights: Dict[str, float]) -> torch.Tensor:
    """``sum_k weights[k] * terms[k]`` over the terms with a non-zero weight."""
    total = None
    for k, w in weights.items():
        if w:
            t = w * terms[k]
            total = t if total is None else total + t
    if total is None:
        raise ValueError("every loss weight is zero")
    return total


def sampling_efficiency(log_w: torch.Tensor) -> float:
    """ESS / n of importance log weights; non-finite weights count as zero weight."""
    lw = torch.as_tensor(log_w, dtype=torch.float64).flatten()
    n = lw.numel()
    fin = lw[torch.isfinite(lw)]
    if n == 0 or fin.numel() == 0:
        return 0.0
    ess = torch.exp(2 * torch.logsumexp(fin, 0) - torch.logsumexp(2 * fin, 0))
    return float(ess) / n


# ====================================================================== config
# a data-fitted prior (pipeline.model.data_prior) refitted from the same frames on another CPU
# differs in the last bits (BLAS sums take other paths); a resume accepts that and keeps the
# checkpoint's values
PRIOR_REFIT_RTOL = 1e-9


def _same_numbers(a, b, rtol: float) -> bool:
    """``a`` and ``b`` (JSON values) equal in structure, their numbers within ``rtol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_numbers(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_numbers(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            abs(a - b) <= rtol * max(abs(a), abs(b))
    return a == b


@dataclasses.dataclass
class TrainConfig:
    """One training run. Saved as JSON beside the run's outputs (``studies/alanine_dipeptide/training.md``).

    ``model``, ``data`` and ``target`` are free-form sections the study script interprets
    (architecture, data set, target force field); the Trainer only stores them.
    """
    name: str = "run"
    seed: int = 0
    iterations: int = 1000
    batch_size: int = 128
    reverse_kl_batch_size: int = 128
    alpha_batch_size: int = 256
    alpha: float = 2.0
    weights: Dict[str, float] = dataclasses.field(
        default_factory=lambda: {"nll": 1.0, "force_matching": 0.0, "reverse_kl": 0.0})
    force_units: str = "reduced"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    lr_min: float = 0.0
    lr_decay: float = 0.5
    lr_decay_every: int = 1000
    warmup: int = 0
    adam_betas: List[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 100.0
    force_matching_noise: float = 0.0
    force_matching_from: int = 0
    force_matching_extra_batch: int = 0
    tail_matching_cap: float = 20.0
    tail_matching_torsions: bool = False
    curvature_limit: float = 5e4
    curvature_noise: float = 0.05
    curvature_extra_batch: int = 64
    stiffness_dt_fs: float = 2.5
    stiffness_batch: int = 16
    stiffness_iterations: int = 8
    verlet_dt_fs: float = 2.0
    verlet_temperature: float = 1000.0
    verlet_steps: int = 4
    verlet_batch: int = 16
    verlet_limit: float = 5.0
    eval_every: int = 100
    eval_frames: int = 1000
    eval_batch_size: int = 250
    eval_samples: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    threads: int = 1
    progress: bool = True
    notes: str = ""
    model: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data: Dict[str, Any] = dataclasses.field(default_factory=dict)
    target: Dict[str, Any] = dataclasses.field(default_factory=dict)

    #: fields that may change between a checkpoint and its resumption (``name`` is a label:
    #: the seeds come from ``seed``, so a pilot run may be continued under its final name)
    RESUMABLE_CHANGES = ("name", "iterations", "eval_every", "eval_frames", "eval_batch_size",
                         "eval_samples", "checkpoint_every", "keep_checkpoints", "threads",
                         "progress", "notes")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        w = dict(self.weights)
        unknown = sorted(set(w) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"weights: unknown losses {unknown}; expected {list(LOSS_NAMES)}")
        self.weights = {k: float(w.get(k, 0.0)) for k in LOSS_NAMES}
        for k, v in self.weights.items():
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"weights.{k} must be finite and >= 0, got {v}")
        if not any(self.weights.values()):
            raise ValueError("at least one loss weight must be > 0")
        for k in ("iterations", "eval_every", "eval_frames", "eval_samples", "checkpoint_every",
                  "warmup", "threads", "force_matching_from", "force_matching_extra_batch"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be an integer >= 0, got {v!r}")
        for k in ("batch_size", "reverse_kl_batch_size", "alpha_batch_size", "eval_batch_size",
                  "keep_checkpoints", "lr_decay_every", "curvature_extra_batch", "stiffness_batch",
                  "stiffness_iterations", "verlet_steps", "verlet_batch"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
        if self.force_units not in FORCE_UNITS:
            raise ValueError(f"force_units must be one of {FORCE_UNITS}, got {self.force_units!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not (self.lr > 0 and self.lr_min >= 0 and self.lr_decay > 0):
            raise ValueError("lr must be > 0, lr_min >= 0, lr_decay > 0")
        if not (self.force_matching_noise >= 0 and math.isfinite(self.force_matching_noise)):
            raise ValueError(f"force_matching_noise must be finite and >= 0 nm, got {self.force_matching_noise}")
        if not (self.tail_matching_cap > 0 and math.isfinite(self.tail_matching_cap)):
            raise ValueError(f"tail_matching_cap must be finite and > 0 kT, got {self.tail_matching_cap}")
        if not isinstance(self.tail_matching_torsions, bool):
            raise ValueError(f"tail_matching_torsions must be true or false, got {self.tail_matching_torsions!r}")
        if not (self.curvature_limit > 0 and math.isfinite(self.curvature_limit)):
            raise ValueError(f"curvature_limit must be finite and > 0 kJ/mol per u^2, got {self.curvature_limit}")
        if not (self.curvature_noise >= 0 and math.isfinite(self.curvature_noise)):
            raise ValueError(f"curvature_noise must be finite and >= 0 (units of u), got {self.curvature_noise}")
        if not (self.stiffness_dt_fs > 0 and math.isfinite(self.stiffness_dt_fs)):
            raise ValueError(f"stiffness_dt_fs must be finite and > 0 fs, got {self.stiffness_dt_fs}")
        for k, what in (("verlet_dt_fs", "fs"), ("verlet_temperature", "K"), ("verlet_limit", "kJ/mol")):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{k} must be finite and > 0 {what}, got {v!r}")
            setattr(self, k, float(v))
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not (self.alpha > 1 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha (of the alpha_divergence loss) must be finite and > 1, got {self.alpha!r}")
        self.alpha = float(self.alpha)
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if len(self.adam_betas) != 2:
            raise ValueError("adam_betas needs two numbers")
        self.adam_betas = [float(b) for b in self.adam_betas]
        for k in ("model", "data", "target"):
            if not isinstance(getattr(self, k), dict):
                raise ValueError(f"{k} must be a JSON object")

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if not k.startswith("_")})

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "TrainConfig":
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a config is a JSON object")
        d = {k: v for k, v in d.items() if not k.startswith("_")}   # "_comment" keys
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def training_differences(self, other: "TrainConfig") -> List[str]:
        """Fields that differ from ``other`` and would change the training trajectory."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if a[k] != b[k] and k not in self.RESUMABLE_CHANGES)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then the schedule.

    ``constant``: lr. ``cosine``: from lr to lr_min over the iterations after warmup.
    ``step``: lr * lr_decay ** (s // lr_decay_every), s counted after warmup.
    """
    c = config
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    s = step - c.warmup
    if c.lr_schedule == "constant":
        return c.lr
    if c.lr_schedule == "step":
        return c.lr * c.lr_decay ** (s // c.lr_decay_every)
    T = max(1, c.iterations - c.warmup)
    return c.lr_min + 0.5 * (c.lr - c.lr_min) * (1.0 + math.cos(math.pi * min(s, T) / T))


def set_seed(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (model initialization)."""
    import random
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def git_info(path=None) -> dict:
    """``{"commit": ..., "dirty": bool}`` of the git work tree holding ``path`` (or {})."""
    where = str(Path(path or __file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", where, "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


# ====================================================================== trainer
class Trainer:
    """Train a SmoothFlow by a weighted sum of NLL, force matching and reverse KL.

    Parameters
    ----------
    flow : SmoothFlow
        Any transform kinds; trained in place.
    config : TrainConfig
    out_dir : str or Path
        The run directory: ``config.json``, ``log.jsonl``, ``checkpoints/``,
        ``model.safetensors``, ``summary.json``.
    train_data : (positions, forces) or (positions, forces, weights), optional
        ``(n, N, 3)`` tensors (nm, kJ/mol/nm); needed for the NLL and force-matching terms.
        ``forces`` may be None when force matching is off. ``weights`` (``(n,)``, >= 0) are
        importance weights of frames from biased sampling: batches are then drawn with
        probability proportional to them, so every loss is an unbiased estimate of its
        Boltzmann-weighted value.
    test_data : (positions, forces) or (positions, forces, weights), optional
        Held-out frames for the periodic evaluation (NLL and force RMSE, weighted means
        when weights are given).
    target : callable, optional
        Reduced target energy for the reverse KL and the sampling-efficiency evaluation
        (:class:`~smoothflow_torch.openmm_bridge.OpenMMEnergy`). Its ``reduced_energy(x,
        cut=False)`` is used for evaluation when it exists.
    curvature_frames : positions ``(n, N, 3)`` (nm), optional
        Further frames where the curvature bound applies (``curvature_extra_batch`` of them,
        drawn uniformly, each step beside the data batch's) and the stiffness bound
        (``stiffness_batch``); no other loss sees them. Needs a curvature or stiffness weight.
    force_matching_frames : positions ``(n, N, 3)`` (nm), optional
        Frames where force matching applies too (``force_matching_extra_batch`` of them per
        step, against the target's forces there); they go with ``force_matching_extra_batch``.
    provenance : dict, optional
        Extra provenance stored in the exported model's ``training`` metadata and the summary
        (data file, its hash, ...).

    Notes
    -----
    Randomness: batches are drawn with replacement by a generator seeded ``seed + 1``, latent
    samples of the reverse KL by one seeded ``seed + 2``; evaluation uses a fresh generator per
    evaluation, so evaluating never changes the training trajectory. A checkpoint holds the
    weights, Adam's state, both generators and torch's global RNG state, so a resumed run
    repeats the uninterrupted one bit for bit (same machine, thread count and library versions).
    """

    def __init__(self, flow, config: TrainConfig, out_dir, train_data=None, test_data=None,
                 target=None, provenance: Optional[dict] = None, curvature_frames=None,
                 force_matching_frames=None):
        self.flow = flow
        self.config = config
        self.out_dir = Path(out_dir)
        self.target = target
        self.provenance = dict(provenance or {})
        w = config.weights
        dt = flow.dtype
        self.train_positions, self.train_forces, self.train_weights = _frame_tensors(
            train_data, "train_data", dt)
        if (w["nll"] or w["force_matching"] or w["curvature"] or w["stiffness"] or w["verlet"]) \
                and self.train_positions is None:
            raise ValueError("the nll, force_matching, curvature, stiffness and verlet losses need train_data")
        self.masses = element_masses(flow.atoms) if (w["stiffness"] or w["verlet"]) else None
        if w["force_matching"] and self.train_forces is None:
            raise ValueError("force matching needs reference forces in train_data")
        if w["reverse_kl"] and target is None:
            raise ValueError("the reverse_kl loss needs a target energy")
        if w["alpha_divergence"] and target is None:
            raise ValueError("the alpha_divergence loss needs a target energy")
        if w["tail_matching"] and (target is None or self.train_positions is None):
            raise ValueError("the tail_matching loss needs train_data and a target energy")
        if w["force_matching"] and config.force_matching_noise > 0 and not hasattr(target, "evaluate"):
            raise ValueError("force_matching_noise needs a target with evaluate() (forces at displaced frames)")
        if bool(config.force_matching_extra_batch) != (force_matching_frames is not None):
            raise ValueError("force_matching_extra_batch > 0 and force_matching_frames go together: give both "
                             "or neither")
        if config.force_matching_extra_batch and not (w["force_matching"] and hasattr(target, "evaluate")):
            raise ValueError("force_matching_extra_batch needs a force_matching weight > 0 and a target with "
                             "evaluate() (the target's forces at force_matching_frames)")
        self.test_positions, self.test_forces, self.test_weights = _frame_tensors(
            test_data, "test_data", dt)
        if curvature_frames is not None and not (w["curvature"] or w["stiffness"] or w["verlet"]):
            raise ValueError("curvature_frames are used only by the curvature, stiffness and verlet losses: "
                             "give one a weight > 0")
        self.curvature_positions = _extra_positions(curvature_frames, "curvature_frames", flow.n_atoms, dt)
        self.force_matching_positions = _extra_positions(force_matching_frames, "force_matching_frames",
                                                         flow.n_atoms, dt)
        self.optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr,
                                          betas=tuple(config.adam_betas),
                                          weight_decay=config.weight_decay)
        self.data_generator = torch.Generator().manual_seed(config.seed + 1)
        self.sample_generator = torch.Generator().manual_seed(config.seed + 2)
        self.step = 0
        self.elapsed = 0.0          # training seconds before this process
        self.n_skipped = 0
        self.last_eval: Optional[dict] = None
        self._in_step = False
        self._t_start = None

    # ---------------------------------------------------------------- paths
    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def model_path(self) -> Path:
        return self.out_dir / "model.safetensors"

    def checkpoints(self) -> List[Path]:
        """Checkpoint files, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(self.checkpoint_dir.glob("step_*.pt"))

    # ---------------------------------------------------------------- one step
    def train_step(self) -> dict:
        """One optimizer update; returns its log entry (without writing it)."""
        c, flow = self.config, self.flow
        w = dict(c.weights)
        if self.step < c.force_matching_from:   # likelihood first: see TrainConfig docs
            w["force_matching"] = 0.0
        t0 = time.perf_counter()
        self._in_step = True
        flow.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms: Dict[str, torch.Tensor] = {}
        entry: Dict[str, Any] = {"kind": "train", "step": self.step + 1}
        if w["nll"] or w["force_matching"] or w["tail_matching"] or w["curvature"] or w["stiffness"] or w["verlet"]:
            if self.train_weights is None:
                idx = torch.randint(len(self.train_positions), (c.batch_size,),
                                    generator=self.data_generator)
            else:
                idx = torch.multinomial(self.train_weights, c.batch_size, replacement=True,
                                        generator=self.data_generator)
            x = self.train_positions[idx]
        if w["nll"] or w["force_matching"]:
            f_ref = self.train_forces[idx] if w["force_matching"] else None
            data_terms = self._data_terms(x, f_ref, w, entry)
            if not all(math.isfinite(float(t.detach())) for t in data_terms.values()):
                # Leave the frames with a non-finite energy or force out of the step rather
                # than lose the whole batch (a run whose every batch has one such frame
                # would otherwise stop learning); the step is skipped only if none is left.
                ok = self._finite_frames(x, bool(w["force_matching"]))
                entry["data_invalid"] = int((~ok).sum())
                if bool(ok.any()) and not bool(ok.all()):
                    data_terms = self._data_terms(x[ok], None if f_ref is None else f_ref[ok],
                                                  w, entry)
            terms.update(data_terms)
        if w["tail_matching"]:
            tm, info = tail_matching(flow, self.target, x, c.tail_matching_cap,
                                     generator=self.data_generator, return_info=True,
                                     torsions=c.tail_matching_torsions)
            terms["tail_matching"] = tm
            entry["tail_invalid"] = info["n_invalid"]
            entry["tail_capped"] = info["n_capped"]
        if w["curvature"]:
            cv, info = curvature(flow, x, c.curvature_limit, c.curvature_noise,
                                 generator=self.data_generator, return_info=True)
            entry["curvature_max"] = info["max"]
            entry["curvature_over"] = info["n_over"]
            if self.curvature_positions is not None:
                # the mean over data and extra frames together: each frame counts once
                b = c.curvature_extra_batch
                jdx = torch.randint(len(self.curvature_positions), (b,), generator=self.data_generator)
                cx, xinfo = curvature(flow, self.curvature_positions[jdx], c.curvature_limit,
                                      c.curvature_noise, generator=self.data_generator, return_info=True)
                cv = (len(x) * cv + b * cx) / (len(x) + b)
                entry["curvature_extra_max"] = xinfo["max"]
                entry["curvature_extra_over"] = xinfo["n_over"]
            terms["curvature"] = cv
        if w["stiffness"]:
            limit = (2000.0 / c.stiffness_dt_fs) ** 2      # ps^-2
            b = min(c.stiffness_batch, len(x))
            st, info = stiffness(flow, x[:b], self.masses, limit, c.stiffness_iterations,
                                 generator=self.data_generator, return_info=True)
            entry["stiffness_dt_min_fs"] = info["dt_min_fs"]
            entry["stiffness_over"] = info["n_over"]
            if self.curvature_positions is not None:
                jdx = torch.randint(len(self.curvature_positions), (b,), generator=self.data_generator)
                sx, xinfo = stiffness(flow, self.curvature_positions[jdx], self.masses, limit,
                                      c.stiffness_iterations, generator=self.data_generator, return_info=True)
                st = 0.5 * (st + sx)
                entry["stiffness_extra_dt_min_fs"] = xinfo["dt_min_fs"]
                entry["stiffness_extra_over"] = xinfo["n_over"]
            terms["stiffness"] = st
        if w["verlet"]:
            terms["verlet"] = self._verlet_term(x, entry)
        if w["reverse_kl"]:
            rkl, info = reverse_kl(flow, self.target, c.reverse_kl_batch_size,
                                   generator=self.sample_generator, return_info=True)
            terms["reverse_kl"] = rkl
            entry["rkl_invalid"] = info["n_invalid"]
            entry["rkl_cut"] = info["n_cut"]
        if w["alpha_divergence"]:
            ad, info = alpha_divergence(flow, self.target, c.alpha_batch_size, c.alpha,
                                        generator=self.sample_generator, return_info=True)
            terms["alpha_divergence"] = ad
            entry["alpha_invalid"] = info["n_invalid"]
            entry["alpha_ess"] = info["ess"]
            entry["alpha_top_weight"] = info["top_weight"]
        loss = weighted_loss(terms, w)
        lr = learning_rate(c, self.step)
        entry["lr"] = lr
        entry["loss"] = float(loss.detach())
        for k in LOSS_NAMES:
            if k in terms:
                entry[k] = float(terms[k].detach())
        skipped = not math.isfinite(entry["loss"])
        if not skipped:
            loss.backward()
            clip = c.grad_clip if c.grad_clip is not None else float("inf")
            gn = torch.nn.utils.clip_grad_norm_(flow.parameters(), clip)
            entry["grad_norm"] = float(gn)
            skipped = not math.isfinite(entry["grad_norm"])
            if not skipped:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if skipped:
            self.n_skipped += 1
        entry["skipped"] = skipped
        self.step += 1
        self._in_step = False
        entry["dt"] = round(time.perf_counter() - t0, 6)
        return entry

    def _verlet_term(self, x: torch.Tensor, entry: dict) -> torch.Tensor:
        """The velocity Verlet bound on ``verlet_batch`` data frames and, when given, as many
        curvature frames (the mean of the two); its diagnostics go into ``entry``."""
        c = self.config
        b = min(c.verlet_batch, len(x))
        args = (self.masses, c.verlet_dt_fs, c.verlet_temperature, c.verlet_limit, c.verlet_steps)
        vt, info = verlet_bound(self.flow, x[:b], *args, generator=self.data_generator, return_info=True)
        entry.update({"verlet_max": info["max"], "verlet_rms": info["rms"], "verlet_over": info["n_over"],
                      "verlet_invalid": info["n_invalid"]})
        if self.curvature_positions is not None:
            jdx = torch.randint(len(self.curvature_positions), (b,), generator=self.data_generator)
            vx, xinfo = verlet_bound(self.flow, self.curvature_positions[jdx], *args, generator=self.data_generator,
                                     return_info=True)
            vt = 0.5 * (vt + vx)
            entry.update({"verlet_extra_max": xinfo["max"], "verlet_extra_rms": xinfo["rms"],
                          "verlet_extra_over": xinfo["n_over"], "verlet_extra_invalid": xinfo["n_invalid"]})
        return vt

    def _data_terms(self, x: torch.Tensor, f_ref: Optional[torch.Tensor], w: dict,
                    entry: dict) -> Dict[str, torch.Tensor]:
        """The likelihood and (with a weight) force-matching terms on the frames ``x``."""
        c, flow = self.config, self.flow
        terms: Dict[str, torch.Tensor] = {}
        n_d = len(x)
        if w["force_matching"] and c.force_matching_noise > 0:
            xn = x + c.force_matching_noise * torch.randn(x.shape, generator=self.data_generator,
                                                          dtype=x.dtype)
            _, f_noisy, ok = self.target.evaluate(xn.detach().numpy())
            ok_t = torch.from_numpy(ok)
            fm = force_matching(flow, xn[ok_t], torch.from_numpy(f_noisy[ok]), c.force_units)
            entry["fm_invalid"] = int((~ok).sum())
            n_d = int(ok.sum())
            nl = nll(flow, x)
        elif w["force_matching"]:
            fm, nl = force_matching(flow, x, f_ref, c.force_units, return_nll=True)
        else:
            nl = nll(flow, x)
        if w["force_matching"]:
            scale = flow.kT if c.force_units == "reduced" else 1.0
            entry["force_rmse"] = float(fm.detach().sqrt()) * scale
            if c.force_matching_extra_batch:
                fx, n_x = self._extra_force_matching(entry)
                if n_x:
                    # the mean over data and extra frames together: each frame counts once
                    fm = (n_d * fm + n_x * fx) / (n_d + n_x)
                    entry["force_rmse_extra"] = float(fx.detach().sqrt()) * scale
            terms["force_matching"] = fm
        terms["nll"] = nl
        return terms

    def _extra_force_matching(self, entry: dict):
        """Force matching at ``force_matching_extra_batch`` force_matching_frames (displaced by
        ``force_matching_noise`` when it is > 0) against the target's forces there; returns the
        term and the number of frames it averages (those whose target evaluation succeeded)."""
        c = self.config
        jdx = torch.randint(len(self.force_matching_positions), (c.force_matching_extra_batch,),
                            generator=self.data_generator)
        xe = self.force_matching_positions[jdx]
        if c.force_matching_noise > 0:
            xe = xe + c.force_matching_noise * torch.randn(xe.shape, generator=self.data_generator, dtype=xe.dtype)
        _, fe, ok = self.target.evaluate(xe.detach().numpy())
        entry["fm_extra_invalid"] = int((~ok).sum())
        n = int(ok.sum())
        if n == 0:
            return None, 0
        ok_t = torch.from_numpy(ok)
        xe, fe = xe[ok_t], torch.from_numpy(fe[ok])
        fx = force_matching(self.flow, xe, fe, c.force_units)
        if not math.isfinite(float(fx.detach())):
            # a hot frame where the flow's force is not finite is left out, as a data frame is
            good = self._finite_frames(xe, True)
            entry["fm_extra_invalid"] += int((~good).sum())
            n = int(good.sum())
            if n == 0:
                return None, 0
            fx = force_matching(self.flow, xe[good], fe[good], c.force_units)
        return fx, n

    def _finite_frames(self, x: torch.Tensor, with_forces: bool) -> torch.Tensor:
        """Mask of the frames whose flow energy (and, if asked, forces) are finite."""
        if with_forces:
            E, F = self.flow.energy_and_forces(x)
            return torch.isfinite(E) & torch.isfinite(F.detach()).flatten(1).all(1)
        with torch.no_grad():
            return torch.isfinite(self.flow.energy(x))

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> dict:
        """Held-out NLL (nats) and force RMSE (kJ/mol/nm), and with a target and
        ``eval_samples`` the sampling efficiency ESS/n and reverse KL of flow samples.

        Frames outside the flow's support (a bond beyond its bounds) are left out and
        counted (``n_outside``); the evaluation frames are ``eval_frames`` evenly spaced
        held-out frames (all when 0 or more than there are).
        """
        c, flow = self.config, self.flow
        flow.eval()
        out: Dict[str, Any] = {"kind": "eval", "step": self.step}
        t0 = time.perf_counter()
        if self.test_positions is not None and len(self.test_positions):
            n = len(self.test_positions)
            m = n if c.eval_frames == 0 or c.eval_frames >= n else c.eval_frames
            idx = torch.from_numpy(np.linspace(0, n - 1, m).round().astype(np.int64))
            x = self.test_positions[idx]
            f = None if self.test_forces is None else self.test_forces[idx]
            wt = (torch.ones(m, dtype=torch.float64) if self.test_weights is None
                  else self.test_weights[idx])
            with torch.no_grad():
                u = flow.internal_coordinates(x)[:, :flow.n_interval]
            inside = ((u >= 0) & (u <= 1)).all(-1)
            out["n_frames"] = int(m)
            out["n_outside"] = int((~inside).sum())
            x, wt = x[inside], wt[inside]
            f = None if f is None else f[inside]
            nll_sum, sq_sum, total = 0.0, 0.0, 0.0
            for s in range(0, len(x), c.eval_batch_size):
                xb, wb = x[s:s + c.eval_batch_size], wt[s:s + c.eval_batch_size]
                E, F = flow.energy_and_forces(xb)
                nll_sum += float((wb * (E - flow.energy_offset).double() / flow.kT).sum())
                if f is not None:
                    sq_sum += float((wb * ((F - f[s:s + c.eval_batch_size]) ** 2)
                                     .sum((1, 2)).double()).sum())
                total += float(wb.sum())
            if total > 0:
                out["test_nll"] = nll_sum / total
                if f is not None:
                    out["test_force_rmse"] = math.sqrt(sq_sum / (total * flow.n_atoms * 3))
        if self.target is not None and c.eval_samples > 0:
            g = torch.Generator().manual_seed(c.seed + 1000003 * (self.step + 3))
            with torch.no_grad():
                xs, log_q = flow.sample(c.eval_samples, generator=g, return_log_prob=True)
            log_w = -_raw_reduced_energy(self.target, xs).detach() - log_q
            ok = torch.isfinite(log_w)
            out["sampling_efficiency"] = sampling_efficiency(log_w)
            out["sample_invalid"] = int((~ok).sum())
            if bool(ok.any()):
                out["sample_reverse_kl"] = float((-log_w[ok]).mean())
        out["dt"] = round(time.perf_counter() - t0, 3)
        flow.train()
        self.last_eval = out
        return out

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "step": self.step, "elapsed": self.elapsed_seconds(),
                "n_skipped": self.n_skipped,
                "model": {k: v.detach().clone() for k, v in self.flow.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "rng": {"data": self.data_generator.get_state(),
                        "sample": self.sample_generator.get_state(),
                        "torch": torch.get_rng_state()},
                "config": self.config.to_dict(),
                "flow_config": json.dumps(self.flow.config(), sort_keys=True),
                "last_eval": json.dumps(self.last_eval)}

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXXX.pt`` atomically; keep the newest few."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step_{self.step:08d}.pt"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        for old in self.checkpoints()[:-self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path, allow_config_change: bool = False) -> None:
        """Restore weights, optimizer, generators and step from a checkpoint.

        Raises
        ------
        ValueError
            The checkpoint's flow architecture differs, or (unless ``allow_config_change``)
            a config field that shapes the training trajectory differs.
        """
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck.get("format") != CHECKPOINT_FORMAT or ck.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION}")
        if ck["flow_config"] != json.dumps(self.flow.config(), sort_keys=True):
            saved_flow, flow = json.loads(ck["flow_config"]), json.loads(json.dumps(self.flow.config()))
            keys = sorted(k for k in set(saved_flow) | set(flow) if saved_flow.get(k) != flow.get(k))
            if keys == ["prior"] and _same_numbers(saved_flow["prior"], flow["prior"], PRIOR_REFIT_RTOL):
                self.flow.set_prior(saved_flow["prior"])      # a data-fitted prior refitted on another CPU
            else:
                raise ValueError(f"{path}: the checkpoint's flow (architecture, bounds' layout, "
                                 f"constants) differs from this run's in {', '.join(keys)}")
        saved = TrainConfig.from_dict(ck["config"])
        diff = self.config.training_differences(saved)
        if diff and not allow_config_change:
            raise ValueError(f"{path}: the run's config differs from the checkpoint's in "
                             f"{diff}; start a new run (restart) or allow the change")
        self.flow.load_state_dict(ck["model"], strict=True)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.data_generator.set_state(ck["rng"]["data"])
        self.sample_generator.set_state(ck["rng"]["sample"])
        torch.set_rng_state(ck["rng"]["torch"])
        self.step = int(ck["step"])
        self.elapsed = float(ck["elapsed"])
        self.n_skipped = int(ck["n_skipped"])
        self.last_eval = json.loads(ck.get("last_eval") or "null")

    def elapsed_seconds(self) -> float:
        t = getattr(self, "_t_start", None)
        return self.elapsed + (time.perf_counter() - t if t is not None else 0.0)

    # ---------------------------------------------------------------- log
    def _write(self, entry: dict) -> None:
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()

    def _truncate_log(self, step: int) -> None:
        """Keep the log entries of steps <= ``step`` (those a checkpoint covers)."""
        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue   # a line cut by the interruption
            if e.get("step", 0) <= step:
                kept.append(line)
        self.log_path.write_text("".join(l + "\n" for l in kept))

    @staticmethod
    def read_log(path) -> List[dict]:
        """The entries of a ``log.jsonl``."""
        return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]

    # ---------------------------------------------------------------- the loop
    def train(self, resume: bool = True, stop_at: Optional[int] = None,
              max_seconds: Optional[float] = None, export: bool = True,
              allow_config_change: bool = False) -> dict:
        """Train to ``config.iterations`` (or ``stop_at``), resuming from the newest checkpoint.

        Parameters
        ----------
        resume : bool
            Continue from the newest checkpoint in ``out_dir`` if there is one; False starts
            over (old checkpoints are deleted, the log is rewritten).
        stop_at : int, optional
            Stop after this many updates (checkpoint, no export): a run split into sessions.
        max_seconds : float, optional
            Stop (with a checkpoint) once this process has trained this long.
        export : bool
            Export ``model.safetensors`` and write ``summary.json`` when the run completes.
        allow_config_change : bool
            See :meth:`load_checkpoint`.

        Returns
        -------
        dict
            The summary (also in ``summary.json`` when the run completed).
        """
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ckpts = self.checkpoints()
        if resume and ckpts:
            self.load_checkpoint(ckpts[-1], allow_config_change)
            self._truncate_log(self.step)
        else:
            for old in ckpts:
                old.unlink()
            self.log_path.write_text("")
        c.save(self.out_dir / "config.json")
        end = c.iterations if stop_at is None else min(stop_at, c.iterations)
        self._t_start = time.perf_counter()
        t_proc = self._t_start
        self._log = open(self.log_path, "a")
        bar = None
        last_ckpt = self.step
        completed = False
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=c.iterations, initial=self.step, desc=c.name, unit="it",
                       disable=not c.progress, dynamic_ncols=True, mininterval=0.5)
            if self.step == 0 and c.eval_every and self.last_eval is None:
                self._write(self.evaluate())
            while self.step < end:
                if max_seconds is not None and time.perf_counter() - t_proc > max_seconds:
                    break
                entry = self.train_step()
                entry["time"] = round(self.elapsed_seconds(), 3)
                self._write(entry)
                post = {k: f"{entry[k]:.4g}" for k in ("loss",) + LOSS_NAMES if k in entry}
                if "force_rmse" in entry:
                    post["F_rmse"] = f"{entry['force_rmse']:.0f}"
                if self.last_eval and "test_nll" in self.last_eval:
                    post["test_nll"] = f"{self.last_eval['test_nll']:.3g}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if c.eval_every and (self.step % c.eval_every == 0 or self.step == c.iterations):
                    self._write(self.evaluate())
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
                    last_ckpt = self.step
            completed = self.step >= c.iterations
        except KeyboardInterrupt:
            # inside an update the weights may be half-written: keep the last checkpoint then
            if self.step > last_ckpt and not self._in_step:
                self.save_checkpoint()
                print(f"\ninterrupted: checkpoint at step {self.step} in {self.checkpoint_dir}",
                      file=sys.stderr)
            raise
        finally:
            if bar is not None:
                bar.close()
            self._log.close()
        if self.step > last_ckpt:
            self.save_checkpoint()
        summary = self.summary(completed)
        if completed and export:
            self.export()
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.elapsed = self.elapsed_seconds()
        self._t_start = None
        return summary

    def summary(self, completed: bool = True) -> dict:
        """Provenance and results of the run (what the exported model's metadata holds)."""
        versions = {"python": platform.python_version(), "torch": torch.__version__,
                    "numpy": np.__version__}
        try:
            import openmm as _mm
            versions["openmm"] = _mm.__version__
        except ImportError:
            pass
        steps = [e for e in self.read_log(self.log_path) if e.get("kind") == "train"] \
            if self.log_path.exists() else []
        tail = steps[-min(len(steps), 50):]
        final_train = {k: float(np.mean([e[k] for e in tail if k in e]))
                       for k in ("loss",) + LOSS_NAMES + ("force_rmse",)
                       if any(k in e for e in tail)}
        return {"name": self.config.name, "completed": completed, "steps": self.step,
                "skipped_steps": self.n_skipped,
                "train_seconds": round(self.elapsed_seconds(), 1),
                "seconds_per_iteration": (round(self.elapsed_seconds() / self.step, 4)
                                          if self.step else None),
                "final_train_mean_last_50": final_train, "final_eval": self.last_eval,
                "config": self.config.to_dict(), "git": git_info(),
                "versions": versions, "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                **self.provenance}

    def export(self, path=None, completed: bool = True) -> Path:
        """Export the flow with its provenance (``training`` metadata) to ``model.safetensors``.

        ``completed=False`` marks an interim model (a run stopped before ``iterations``). Under the
        wall policy the exported flow carries the wall's edge forces, measured on the training
        frames (:mod:`smoothflow_torch.edge_force`); the training flow itself is left as it was."""
        path = Path(path or self.model_path)
        summary = self.summary(completed)
        flow = self.flow
        if flow.support_policy == "wall" and self.train_positions is not None:
            from .edge_force import set_edge_forces   # (python -m smoothflow_torch.edge_force imports this module)
            flow = copy.deepcopy(flow)
            summary["edge_forces"] = set_edge_forces(flow, self.train_positions)
        export_model(flow, path, extra_metadata={"training": json.dumps(summary, sort_keys=True)})
        return path
