"""Shared checks of the C core against the PyTorch reference (imported by the test files)."""
import numpy as np
import torch

from smoothflow_core import CoreModel
from smoothflow_torch import model_to_bytes


def assert_core_matches_torch(flow, x, energy_rtol: float = 1e-10, force_rel: float = 1e-8) -> np.ndarray:
    """The C core's energies and forces of the flow's model file at x against PyTorch autograd:
    energies to energy_rtol, forces to force_rel of the largest; returns the core's energies."""
    core = CoreModel.from_bytes(model_to_bytes(flow), max_batch=len(x))
    try:
        e_core, f_core = core.evaluate(x.numpy())
    finally:
        core.close()
    e_torch, f_torch = flow.energy_and_forces(x)
    np.testing.assert_allclose(e_core, e_torch.detach().numpy(), rtol=energy_rtol)
    f_torch = f_torch.detach().numpy()
    assert np.abs(f_core - f_torch).max() / np.abs(f_torch).max() < force_rel
    return e_core


def assert_log_density_matches(flow, core, seed: int = 1):
    """log p_U and its gradient at a random interior point: core vs autograd, 1e-10 / 1e-8."""
    D = 3 * flow.n_atoms - 6
    u = torch.rand(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = (0.05 + 0.9 * u).requires_grad_(True)
    lp = flow.log_prob_u(u[None])[0]
    (g,) = torch.autograd.grad(lp, u)
    lp_core, g_core = core.log_density(u.detach().numpy())
    assert abs(lp_core - lp.item()) < 1e-10 * max(1.0, abs(lp.item()))
    np.testing.assert_allclose(g_core, g.numpy(), rtol=1e-8, atol=1e-8 * np.abs(g.numpy()).max())
