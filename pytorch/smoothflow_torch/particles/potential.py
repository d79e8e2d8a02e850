"""The free-form flow's exact log density and its gradient in x: the PyTorch oracle of the C core.

For an encoder f (e.g. ``egnn.EGNN``) on n particles in d dimensions, the density on the
centre-of-mass-free subspace V (docs/free-form-flows.md, section 3) is

    log p(x) = log N(f(x); 0, I_D) + log |det J_V(x)|,    D = (n - 1) d,

and the MD potential of issue 23 part 4 is U(x) = -kT log p(x), with the force kT grad log p(x).
Here everything is autograd in float64: J_V by forward-mode products (``fff.subspace_jacobian``),
log |det J_V| by LU (``fff.exact_log_det``), and the gradient by one reverse pass through that
whole computation (second derivatives of f; never a stochastic estimate).  The C core
(core/src/sf_egnn.c) computes the same numbers by hand-written tangent propagation; the test
data of tests/data/egnn are made by this module.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from . import fff
from .egnn import remove_mean


def log_density(f: Callable, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log p(x), sign of det J_V) for each configuration of x (B, n, d); no gradient."""
    x = remove_mean(x.detach())
    with torch.no_grad():
        sign, logdet = fff.exact_log_det(f, x)
        return fff.gaussian_log_prob(f(x)) + logdet, sign


def log_density_and_gradient(f: Callable, x: torch.Tensor, create_graph: bool = False):
    """(log p(x), sign of det J_V, d log p / dx) for each configuration of x (B, n, d).

    The gradient has the shape of x and is mean-free over particles when f is translation
    invariant (as egnn.EGNN is).  ``create_graph`` keeps the graph of the gradient (for a
    further derivative, e.g. in the parameters); by default it is freed.
    """
    x = x.detach().clone().requires_grad_(True)
    sign, logdet = fff.exact_log_det(f, x)
    log_p = fff.gaussian_log_prob(f(x)) + logdet
    (grad,) = torch.autograd.grad(log_p.sum(), x, create_graph=create_graph)
    if not create_graph:
        log_p = log_p.detach()
    return log_p, sign.detach(), grad
