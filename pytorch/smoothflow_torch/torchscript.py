"""TorchScript export of a flow's energy, for openmm-torch's ``TorchForce`` and other
TorchScript consumers.

:func:`trace_energy` records :meth:`SmoothFlow.energy <smoothflow_torch.flow.SmoothFlow.energy>`
with ``torch.jit.trace``: the module maps positions ``(n N, 3)`` in nm (n copies of the
molecule, each its N atoms in model order, as a ``TorchForce`` over n molecules sees them)
to the total energy in kJ/mol; forces are autograd of that energy, as openmm-torch takes
them.

A trace freezes Python control flow at the example's values. The flow has one loop that
depends on the data: the root finding of the smooth transform's inverse
(:func:`smoothflow_torch.transforms.solve_inverse`, needed by generative smooth layers in
the density pass that the energy runs). A traced copy of it would always run the
example's iteration count. While tracing, it is therefore replaced by a scripted loop
(:class:`RootSolver`, the same bracketed Newton iteration with bisection safeguard, the
same stopping rule) whose F and F' are a trace of
:func:`smoothflow_torch.transforms.smooth_mixture`, so the mathematics stays in
transforms.py and the exported module iterates to convergence for every input. The two
differentiable Newton steps of :func:`~smoothflow_torch.transforms.smooth_inverse` that
attach the root to autograd are traced as they are.

The input checks of the energy (non-finite or degenerate geometry, the ``error`` support
policy) only raise, on tensor values that a trace cannot branch on, so the traced module
does not make them: a configuration the eager flow refuses gives NaN or a finite number
here.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
from torch import nn

from . import transforms
from .flow import SmoothFlow
from .transforms import SmoothParameters, smooth_mixture

__all__ = ["FlowEnergy", "RootSolver", "trace_energy", "save_torchscript"]


class _MixtureValueAndSlope(nn.Module):
    """F(x) and F'(x) of the smooth mixture for one ramp power beta (traced, then called
    by the scripted :class:`RootSolver`)."""

    def __init__(self, beta: int):
        super().__init__()
        self.beta = int(beta)

    def forward(self, x, w, b, s, alpha, c) -> Tuple[torch.Tensor, torch.Tensor]:
        F, dF = smooth_mixture(x, SmoothParameters(w, b, s, alpha, c, c), self.beta, 1)
        return F, dF


class RootSolver(nn.Module):
    """Root of F(x) = y on [0, 1], in TorchScript: the loop of
    :func:`smoothflow_torch.transforms.solve_inverse` (bracketed Newton, bisection where
    Newton leaves the bracket or does not halve the step before last, stop when every
    step is below ``2 eps |x| + tiny``), with F and F' from a traced
    :func:`~smoothflow_torch.transforms.smooth_mixture`. No autograd.

    Build with :meth:`create`; the result is scripted.
    """

    def __init__(self, mixture: torch.jit.ScriptModule, beta: int, eps: float, tiny: float,
                 max_iter: int = 200):
        super().__init__()
        self.mixture = mixture
        self.beta = int(beta)
        self.eps = float(eps)
        self.tiny = float(tiny)
        self.max_iter = int(max_iter)

    @classmethod
    def create(cls, beta: int, n_components: int, dtype: torch.dtype = torch.float64,
               max_iter: int = 200) -> torch.jit.ScriptModule:
        """The scripted solver for ramp power ``beta``: F, F' traced on a small example
        (the trace is shape-generic), the loop scripted."""
        g = torch.Generator().manual_seed(0)
        K = int(n_components)
        x = torch.rand(2, 3, generator=g, dtype=dtype)
        w = torch.softmax(torch.randn(2, 3, K, generator=g, dtype=dtype), dim=-1)
        b = torch.rand(2, 3, K, generator=g, dtype=dtype)
        s = 0.1 + 0.9 * torch.rand(2, 3, K, generator=g, dtype=dtype)
        alpha = 0.5 + torch.rand(2, 3, K, generator=g, dtype=dtype)
        c = 0.9 * torch.rand(2, 3, generator=g, dtype=dtype)
        mixture = torch.jit.trace(_MixtureValueAndSlope(beta), (x, w, b, s, alpha, c))
        info = torch.finfo(dtype)
        return torch.jit.script(cls(mixture, beta, info.eps, info.tiny, max_iter))

    def forward(self, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, s: torch.Tensor,
                alpha: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = y.detach()
            w, b, s, alpha, c = w.detach(), b.detach(), s.detach(), alpha.detach(), c.detach()
            lo = torch.zeros_like(y)
            hi = torch.ones_like(y)
            x = y.clamp(0.0, 1.0)
            step_before = torch.ones_like(y)
            step = torch.ones_like(y)
            active = torch.ones_like(y, dtype=torch.bool)
            for _ in range(self.max_iter):
                F, dF = self.mixture(x, w, b, s, alpha, c)
                f = F - y
                lo = torch.where(f <= 0, x, lo)
                hi = torch.where(f >= 0, x, hi)
                newton = f / dF
                xn = x - newton
                done = newton.abs() <= 2.0 * self.eps * x.abs() + self.tiny
                bisect = ~done & ((xn < lo) | (xn > hi)
                                  | ((2.0 * f).abs() > (step_before * dF).abs()))
                xn = torch.where(bisect, 0.5 * (lo + hi), xn)
                step_before = step
                step = xn - x
                converged = done | (step.abs() <= 2.0 * self.eps * xn.abs() + self.tiny)
                x = torch.where(active, xn, x)
                active = active & ~converged
                if not bool(active.any()):
                    return x
        raise RuntimeError("inverse of the smooth transform did not converge "
                           "(non-finite targets or parameters?)")


class FlowEnergy(nn.Module):
    """Total energy (kJ/mol, a 0-d tensor) of positions ``(n N, 3)`` in nm: n copies of
    the flow's molecule, consecutive blocks of N atoms in model order.

    Parameters
    ----------
    flow : SmoothFlow
    """

    def __init__(self, flow: SmoothFlow):
        super().__init__()
        self.flow = flow
        self.n_atoms = flow.n_atoms
        needs_root = any(layer.transform == "smooth" and layer.direction == "generative"
                         for layer in flow.layers)
        # a submodule, so that the trace records calls to it (with its loop) by reference
        self.root_solver = (RootSolver.create(flow.smooth.beta, max(
            layer.n_components for layer in flow.layers), flow.dtype) if needs_root else None)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        x = positions.to(self.flow.dtype).reshape(-1, self.n_atoms, 3)
        return self.flow.energy(x).sum()


@contextlib.contextmanager
def _scripted_inverse(solver: Optional[torch.jit.ScriptModule]):
    """Route :func:`transforms.solve_inverse` to ``solver`` while a trace records it."""
    if solver is None:
        yield
        return
    eager = transforms.solve_inverse

    def solve(y, params, beta, max_iter=200):
        if int(beta) != solver.beta:
            raise ValueError(f"the scripted root solver has beta = {solver.beta}, the "
                             f"layer asks for beta = {beta}")
        return solver(y, params.w, params.b, params.s, params.alpha, params.c), 0

    transforms.solve_inverse = solve
    try:
        yield
    finally:
        transforms.solve_inverse = eager


def trace_energy(flow: SmoothFlow, example: Optional[torch.Tensor] = None,
                 n_example: int = 2, seed: int = 0) -> torch.jit.ScriptModule:
    """A TorchScript module of ``flow``'s energy (see :class:`FlowEnergy`).

    Parameters
    ----------
    flow : SmoothFlow
    example : torch.Tensor, optional
        ``(n N, 3)`` positions to trace with (inside the flow's support); by default
        ``n_example`` random configurations of the flow's molecule.
    n_example : int
    seed : int
        Seed of the default example.

    Returns
    -------
    torch.jit.ScriptModule
        ``forward(positions (n N, 3)) -> energy ()``, for any n >= 1 and float32 or
        float64 positions (evaluated in the flow's precision).
    """
    from .testing import random_positions   # the same random configurations the tests use
    flow = flow.eval()
    if example is None:
        example = random_positions(flow, n_example, seed=seed).reshape(-1, 3)
    module = FlowEnergy(flow).eval()
    with _scripted_inverse(module.root_solver), warnings.catch_warnings():
        # What remains of the tracer's warnings are branches on model constants (shape
        # checks of the raw parameters, the spline's circular flags) and the Z-matrix
        # indices recorded as constants, all fixed for a given model; the tests compare the
        # traced energy and forces with the eager flow at other configurations and sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # check_trace re-runs the trace on the example and compares: a wrong trace fails here
        traced = torch.jit.trace(module, (example.to(flow.dtype),))
    return traced


def save_torchscript(flow: Union[SmoothFlow, str, Path], path: Union[str, Path], **kwargs
                     ) -> Path:
    """Trace ``flow`` (a SmoothFlow or a model file) with :func:`trace_energy` and save
    the TorchScript module to ``path`` (what ``openmmtorch.TorchForce(path)`` loads)."""
    if not isinstance(flow, SmoothFlow):
        from .export import load_model
        flow = load_model(str(flow))
    path = Path(path)
    trace_energy(flow, **kwargs).save(str(path))
    return path
