"""Shared checks of the C core against the PyTorch reference (imported by the test files)."""
import numpy as np
import torch


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
