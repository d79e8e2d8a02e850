"""Sampling a free-form flow exactly, and its importance weights against the true potential.

The MD potential of a free-form flow is U(x) = -kT log p_f(x) with the encoder's density

    p_f(x) = p_Z(f(x)) |det J_V(x)|                      (docs/free-form-flows.md section 7),

so the weights that say how well the potential matches the true Boltzmann density are those of
samples drawn from p_f itself. The decoder g only approximates f^-1 (its reconstruction error is
about 1e-3), so g(z) is not a draw from p_f. Here x = f^-1(z) is solved on V from the start g(z), first by
the decoder's fixed-point iteration x <- x + g(z) - g(f(x)) (two network passes a step), then by
damped Newton steps

    x <- x - J_V(x)^-1 (f(x) - z)     (in the coordinates of V, to_subspace / from_subspace),

and then log p_f(x) = log p_Z(z) + log |det J_V(x)| exactly. A sample whose Newton iteration does
not converge (residual above ``tol`` after ``max_iter`` steps), or lands where det J_V <= 0 (the
encoder folds there), is reported and given weight zero: p_f is a normalised density only where
f is one-to-one, so such samples are part of what the statistics must show.

The decoder's own samples g(z) are weighed too, with their exact density
log q_g(g(z)) = log p_Z(z) - log |det J_g,V(z)| (the sampler a user runs without the Newton step).

The decoder is shipped beside the encoder (``export_decoder`` / ``load_decoder``): a safetensors
file of its EGNN ``state_dict`` whose ``format`` is ``smoothflow-free-form-decoder``, which the
C core refuses as a model (it is no potential), and which records the SHA-256 of the encoder
file it was trained with, so that a decoder is never paired with another encoder by mistake.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..provenance import file_sha256
from .egnn import EGNN, remove_mean
from .fff import (exact_log_det, from_subspace, gaussian_log_prob, sample_subspace_normal,
                  subspace_jacobian, to_subspace)

DECODER_FORMAT = "smoothflow-free-form-decoder"
DECODER_FORMAT_VERSION = 1


def export_decoder(g: EGNN, path, encoder_file, distance_scale: float, step: int, source: str = "") -> Path:
    """Write the decoder ``g`` (atomically) as the companion of the encoder model file
    ``encoder_file`` (whose SHA-256 it records)."""
    import safetensors.torch

    network = {"n": g.n_particles, "d": g.spatial_dim, "hidden": int(g.h0.shape[0]),
               "layers": len(g.layers), "distance_scale": float(distance_scale)}
    if abs(1.0 / network["distance_scale"] ** 2 - g.inv_scale2) > 1e-12 * g.inv_scale2:
        raise ValueError(f"distance_scale {distance_scale} is not the decoder's "
                         f"(1 / s^2 = {g.inv_scale2})")
    meta = {"format": DECODER_FORMAT, "format_version": str(DECODER_FORMAT_VERSION),
            "network": json.dumps(network, sort_keys=True),
            "encoder_sha256": file_sha256(encoder_file), "fff_step": str(int(step)),
            "fff_checkpoint": str(source)}
    tensors = {k: v.detach().to(torch.float64).contiguous() for k, v in g.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)          # a shipped file, readable like the encoder beside it
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_decoder(path, encoder_file=None, dtype=torch.float64) -> EGNN:
    """The decoder of ``path``; with ``encoder_file`` it must be that encoder's companion."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != DECODER_FORMAT:
            raise ValueError(f"{path}: not a free-form decoder file (format {meta.get('format')!r})")
        if meta.get("format_version") != str(DECODER_FORMAT_VERSION):
            raise ValueError(f"{path}: decoder format version {meta.get('format_version')!r}, "
                             f"this reader knows {DECODER_FORMAT_VERSION}")
        state = {k: fh.get_tensor(k).to(dtype) for k in fh.keys()}
    if encoder_file is not None and meta.get("encoder_sha256") != file_sha256(encoder_file):
        raise ValueError(f"{path} is the decoder of another encoder (its encoder_sha256 "
                         f"{meta.get('encoder_sha256', '')[:12]}... is not {encoder_file}'s)")
    net = json.loads(meta["network"])
    g = EGNN(net["n"], net["d"], hidden=net["hidden"], layers=net["layers"],
             distance_scale=net["distance_scale"], coord_gain=1.0).to(dtype)
    g.load_state_dict(state, strict=True)
    return g


def invert(f: Callable, z: torch.Tensor, x0: torch.Tensor, g: Optional[Callable] = None,
           tol: float = 1e-9, max_iter: int = 30, decoder_iter: int = 100) -> Dict[str, torch.Tensor]:
    """Solve f(x) = z for x on V from ``x0``; per configuration the solution, the Newton steps
    taken, the final residual max |f(x) - z| and whether it is below ``tol``.

    With the decoder ``g`` (g(z) = ``x0`` as a rule) first the cheap iteration
    x <- x + g(z) - g(f(x)) (Newton's step with J_g(f(x)) in place of J_f(x)^-1: two network
    passes instead of a Jacobian), while it shrinks the residual; then damped Newton steps
    (the full step, halved until the residual falls, at most 20 times) on what is left. A
    configuration stops moving once converged; one that no step improves keeps its last iterate
    and is reported as not converged."""
    n, d = z.shape[-2:]
    x = remove_mean(x0.detach().clone())
    z = remove_mean(z.detach())
    with torch.no_grad():
        r = to_subspace(f(x) - z)
        res = r.abs().amax(-1)
        if g is not None:
            gz = g(z)
            for _ in range(decoder_iter):
                idx = (res > tol).nonzero().squeeze(-1)
                if idx.numel() == 0:
                    break
                x_new = remove_mean(x[idx] + gz[idx] - g(f(x[idx])))
                r_new = to_subspace(f(x_new) - z[idx])
                res_new = r_new.abs().amax(-1)
                better = res_new < 0.9 * res[idx]          # hands over to Newton once it contracts slowly
                if not bool(better.any()):
                    break
                keep = idx[better]
                x[keep], r[keep], res[keep] = x_new[better], r_new[better], res_new[better]
    iters = torch.zeros(len(z), dtype=torch.long)
    stuck = torch.zeros(len(z), dtype=torch.bool)
    for _ in range(max_iter):
        idx = ((res > tol) & ~stuck).nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        with torch.no_grad():
            jac = subspace_jacobian(f, x[idx])
            step, info = torch.linalg.solve_ex(jac, r[idx].unsqueeze(-1))
            step = from_subspace(step.squeeze(-1), n, d)
            scale = torch.where(info == 0, 1.0, 0.0).to(x.dtype)
            x_try, r_try, res_try = x[idx].clone(), r[idx].clone(), res[idx].clone()
            pending = info == 0
            for _ in range(20):
                if not bool(pending.any()):
                    break
                p = pending.nonzero().squeeze(-1)
                xc = x[idx[p]] - scale[p, None, None] * step[p]
                rc = to_subspace(f(xc) - z[idx[p]])
                resc = rc.abs().amax(-1)
                ok = resc < res[idx[p]]
                q = p[ok]
                x_try[q], r_try[q], res_try[q] = xc[ok], rc[ok], resc[ok]
                pending[q] = False
                scale[p[~ok]] *= 0.5
        moved = res_try < res[idx]
        stuck[idx[~moved]] = True
        x[idx], r[idx], res[idx] = x_try, r_try, res_try
        iters[idx] += 1
    return {"x": x, "iterations": iters, "residual": res, "converged": res <= tol}


def draw(f: EGNN, g: EGNN, n: int, seed: int, energy: Callable, chunk: int = 500,
         tol: float = 1e-9, max_iter: int = 30, decoder_density: bool = True, progress=None) -> Dict[str, np.ndarray]:
    """``n`` latent draws (float64, generator seeded with ``seed``) and, per draw, the exact
    sample of p_f (Newton from g(z)) and the decoder's sample g(z), each with its exact log
    density, its reduced energy u = ``energy(x)`` (kT units) and log weight -u - log q
    (``invert`` with the decoder; ``decoder_density`` False skips the decoder's Jacobian, half
    the cost, and leaves out ``log_q_decoder``, ``log_w_decoder`` and ``decoder_det_sign``).

    Keys: ``z``, ``x_exact``, ``log_q_exact``, ``u_exact``, ``log_w_exact`` (-inf where Newton failed
    or det J_V <= 0), ``converged``, ``det_sign``, ``iterations``, ``residual``; ``x_decoder``,
    ``log_q_decoder``, ``u_decoder``, ``log_w_decoder`` (-inf where det J_g,V <= 0),
    ``decoder_det_sign``."""
    gen = torch.Generator().manual_seed(int(seed))
    out = {k: [] for k in ("z", "x_exact", "log_q_exact", "u_exact", "converged", "det_sign",
                           "iterations", "residual", "x_decoder", "log_q_decoder", "u_decoder",
                           "decoder_det_sign")}
    shape = (g.n_particles, g.spatial_dim)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        z = sample_subspace_normal((b,) + shape, torch.float64, generator=gen)
        log_pz = gaussian_log_prob(z)
        with torch.no_grad():
            xg = remove_mean(g(z))
            g_sign, g_logdet = exact_log_det(g, z) if decoder_density else (z[:, 0, 0], z[:, 0, 0])
        inv = invert(f, z, xg, g=g, tol=tol, max_iter=max_iter)
        with torch.no_grad():
            sign, logdet = exact_log_det(f, inv["x"])
        out["z"].append(z)
        out["x_exact"].append(inv["x"])
        out["log_q_exact"].append(log_pz + logdet)
        out["u_exact"].append(torch.as_tensor(energy(inv["x"]), dtype=torch.float64))
        out["converged"].append(inv["converged"])
        out["det_sign"].append(sign)
        out["iterations"].append(inv["iterations"])
        out["residual"].append(inv["residual"])
        out["x_decoder"].append(xg)
        out["log_q_decoder"].append(log_pz - g_logdet)
        out["u_decoder"].append(torch.as_tensor(energy(xg), dtype=torch.float64))
        out["decoder_det_sign"].append(g_sign)
        if progress is not None:
            progress(b)
    res = {k: torch.cat(v).numpy() for k, v in out.items()}
    ok = res["converged"] & (res["det_sign"] > 0)
    res["log_w_exact"] = np.where(ok, -res["u_exact"] - res["log_q_exact"], -np.inf)
    if decoder_density:
        res["log_w_decoder"] = np.where(res["decoder_det_sign"] > 0,
                                        -res["u_decoder"] - res["log_q_decoder"], -np.inf)
    else:
        del res["log_q_decoder"], res["decoder_det_sign"]
    return res
