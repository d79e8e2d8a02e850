"""Free-form flow (Draxler et al. 2024) loss and exact likelihood on the centre-of-mass-free subspace.

Coordinates. Positions x (..., n, d) with sum_i x_i = 0 form the subspace V of dimension
D = (n - 1) d. A fixed orthonormal basis of V is Q (x) I_d, Q the (n, n - 1) Helmert basis
(``com_free_basis``); ``to_subspace`` gives the D coordinates y = Q^T x (flattened), which are
the coordinates every density here is a density of. The Gaussian latent is N(0, I_D) in them,
so log p_Z(z) = -|z|^2 / 2 - (D / 2) log 2 pi with |z| the ordinary norm of the mean-free z.
J_V = Q^T J_f Q is the D x D Jacobian of f on V; its determinant does not depend on which
orthonormal basis of V is used (an orthogonal change of basis R gives R^T J_V R).

The loss (per configuration, averaged over a batch):

    beta |x - g(f(x))|^2 - log p_Z(f(x)) - v^T J_f(x) SG[J_g(f(x)) v],

v ~ N(0, I_D) on V (a standard normal in R^{n x d}, projected: covariance P = Q Q^T, the
identity on V). Its gradient in the encoder's parameters estimates -grad log |det J_V| when
g = f^-1 (E[v^T dJ_f J_f^-1 v] = tr(dJ_f J_f^-1)); its value is not a log-determinant
(docs/free-form-flows.md, section 2). The exact log |det J_V| (D forward-mode products and an
LU factorisation) gives the held-out NLL and the sign of det J_V.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch

from .egnn import remove_mean


def com_free_basis(n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(n, n - 1) orthonormal basis of the mean-free vectors of R^n (Helmert's contrasts).

    Column k (k = 1 .. n-1) is (1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1)) with k ones.
    """
    if n < 2:
        raise ValueError(f"com_free_basis: n must be >= 2, got {n}")
    q = torch.zeros(n, n - 1, dtype=dtype, device=device)
    for k in range(1, n):
        q[:k, k - 1] = 1.0
        q[k, k - 1] = -float(k)
        q[:, k - 1] /= math.sqrt(k * (k + 1))
    return q


def to_subspace(x: torch.Tensor) -> torch.Tensor:
    """Mean-free positions (..., n, d) -> their D = (n-1) d coordinates in the basis Q (x) I_d."""
    n, d = x.shape[-2:]
    q = com_free_basis(n, x.dtype, x.device)
    return torch.einsum("ik,...id->...kd", q, x).reshape(x.shape[:-2] + ((n - 1) * d,))


def from_subspace(y: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """Coordinates (..., (n-1) d) -> mean-free positions (..., n, d); inverse of to_subspace on V."""
    q = com_free_basis(n, y.dtype, y.device)
    return torch.einsum("ik,...kd->...id", q, y.reshape(y.shape[:-1] + (n - 1, d)))


def subspace_tangents(n: int, d: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(D, n, d): the orthonormal basis vectors of V as position arrays (columns of Q (x) I_d)."""
    eye = torch.eye((n - 1) * d, dtype=dtype, device=device)
    return from_subspace(eye, n, d)


def gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(0, I_D) of mean-free z (..., n, d) on V, D = (n - 1) d."""
    n, d = z.shape[-2:]
    dim = (n - 1) * d
    return -0.5 * (z * z).sum((-2, -1)) - 0.5 * dim * math.log(2.0 * math.pi)


def sample_subspace_normal(shape, dtype, device=None, generator=None) -> torch.Tensor:
    """Standard normal vectors on V (covariance P = Q Q^T) of shape (..., n, d)."""
    e = torch.randn(shape, dtype=dtype, device=device, generator=generator)
    return remove_mean(e)


def subspace_jacobian(f: Callable, x: torch.Tensor) -> torch.Tensor:
    """J_V = Q^T J_f(x) Q for each configuration of x (B, n, d): shape (B, D, D).

    D forward-mode (Jacobian-vector) products per configuration, one per basis vector of V,
    vectorised with torch.func. Differentiable (the exact force of part 4 is its gradient).
    """
    n, d = x.shape[-2:]
    tangents = subspace_tangents(n, d, x.dtype, x.device)

    def one(xi):
        cols = torch.func.vmap(lambda t: torch.func.jvp(f, (xi,), (t,))[1])(tangents)
        return to_subspace(cols).transpose(-1, -2)        # rows: output coordinates

    return torch.func.vmap(one)(x)


def exact_log_det(f: Callable, x: torch.Tensor, chunk: Optional[int] = None):
    """(sign, log |det J_V|) of f at each configuration of x (B, n, d), by LU (slogdet)."""
    if chunk is None or chunk >= x.shape[0]:
        return torch.linalg.slogdet(subspace_jacobian(f, x))
    signs, logs = [], []
    for i in range(0, x.shape[0], chunk):
        s, l = torch.linalg.slogdet(subspace_jacobian(f, x[i:i + chunk]))
        signs.append(s)
        logs.append(l)
    return torch.cat(signs), torch.cat(logs)


def exact_nll(f: Callable, x: torch.Tensor, chunk: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Per-configuration NLL -log p_Z(f(x)) - log |det J_V(x)| (nats) and the sign of det J_V."""
    x = remove_mean(x)
    sign, logdet = exact_log_det(f, x, chunk)
    z = torch.cat([f(x[i:i + (chunk or x.shape[0])])
                   for i in range(0, x.shape[0], chunk or x.shape[0])])
    return {"nll": -gaussian_log_prob(z) - logdet, "sign": sign, "log_det": logdet, "z": z}


def hutchinson_surrogate(f: Callable, g: Callable, x: torch.Tensor, v: torch.Tensor):
    """(z = f(x), v^T J_f(x) SG[J_g(f(x)) v]) per configuration of x (B, n, d), v on V.

    J_g v by one forward-mode product through the decoder at the detached latent (nothing
    reaches g's parameters through it), v^T J_f by one reverse-mode product through the encoder
    kept in the graph, so the surrogate's gradient in f's parameters is v^T (dJ_f) J_g v, whose
    mean over v is tr(dJ_f J_g) = d log |det J_V| when g = f^-1 on V.
    ``x`` must require grad or be a leaf that may be made to (it is used as is).
    """
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    z = f(x)
    vjf = torch.autograd.grad(z, x, v, create_graph=True)[0]           # v^T J_f(x)
    with torch.no_grad():                                               # SG: no graph into g
        jgv = torch.func.jvp(g, (z.detach(),), (v,))[1]                 # J_g(f(x)) v
    return z, (vjf * jgv).sum((-2, -1))


def fff_loss(f: Callable, g: Callable, x: torch.Tensor, beta: float,
             v: Optional[torch.Tensor] = None, generator=None) -> Dict[str, torch.Tensor]:
    """The free-form flow loss of a batch x (B, n, d); returns the mean loss and its parts.

    ``v`` (B, n, d), mean-free, may be given (tests); otherwise drawn from N(0, I_D) on V with
    ``generator``. One probe vector per configuration, as in the paper.
    """
    x = remove_mean(x).detach().requires_grad_(True)
    if v is None:
        v = sample_subspace_normal(x.shape, x.dtype, x.device, generator)
    z, surrogate = hutchinson_surrogate(f, g, x, v)
    rec = ((x - g(z)) ** 2).sum((-2, -1))
    nlp = -gaussian_log_prob(z)
    loss = beta * rec + nlp - surrogate
    return {"loss": loss.mean(), "reconstruction": rec.detach().mean(),
            "neg_log_prior": nlp.detach().mean(), "surrogate": surrogate.detach().mean()}
