"""TorchScript export of the energy (smoothflow_torch.torchscript): the traced module's
energy and autograd forces equal the eager flow's energy_and_forces to 1e-12, at other
configurations and batch sizes than the trace saw, after a save/load round trip."""

import os

import pytest
import torch

from smoothflow_torch import load_model, load_model_bytes, model_to_bytes
from smoothflow_torch import testing as T
from smoothflow_torch.transforms import SmoothParameters, solve_inverse
from smoothflow_torch.torchscript import RootSolver, trace_energy

torch.set_num_threads(1)
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHIPPED = os.path.join(REPO, "models", "alanine_dipeptide", "smooth.safetensors")
TOL = 1e-12


def _round_trip(flow):
    """The flow as a model file gives it back (load_model's path)."""
    return load_model_bytes(model_to_bytes(flow))


def _traced_energy_and_forces(module, positions):
    p = positions.reshape(-1, 3).clone().requires_grad_(True)
    E = module(p)
    (g,) = torch.autograd.grad(E, p)
    return E.detach(), -g.reshape(positions.shape)


def _check(flow, module, n, seed):
    x = T.random_positions(flow, n, seed=seed)
    e, f = flow.energy_and_forces(x)
    E, F = _traced_energy_and_forces(module, x)
    assert abs(float(E) - float(e.sum())) <= TOL * float(e.abs().sum())
    scale = float(f.abs().max())
    assert float((F - f).abs().max()) <= TOL * scale, f"forces differ, n = {n}"


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED)


@pytest.fixture(scope="module")
def generative():
    """Generative smooth layers (the energy inverts them by root finding), steep random
    weights so that the iteration count varies between configurations."""
    return _round_trip(T.random_flow(n_atoms=8, n_layers=4, n_components=5, hidden=(12, 12),
                                     directions="generative", seed=3, steep=True,
                                     smooth={"s_min": 0.02, "alpha_min": 0.2, "c_max": 0.95,
                                             "beta": 2}))


@pytest.fixture(scope="module")
def mixed_kinds():
    """Every transform kind and both directions, the wall policy and a truncated-normal prior."""
    return _round_trip(T.random_flow(n_atoms=7, n_layers=6, n_components=4,
                                     hidden=(10,), activation="tanh", directions="mixed",
                                     seed=11, transform=["smooth", "spline", "affine"] * 2,
                                     support={"policy": "wall", "margin": 0.02,
                                              "wall_constant": 300.0},
                                     prior="truncated_normal"))


@pytest.mark.parametrize("n", [1, 5])
def test_shipped_smooth_model(shipped, n):
    module = trace_energy(shipped, n_example=2, seed=0)
    for seed in (21, 22):
        _check(shipped, module, n, seed)


@pytest.mark.parametrize("n", [1, 6])
def test_generative_root_finding(generative, n):
    module = trace_energy(generative, n_example=2, seed=0)
    for seed in (31, 32, 33):
        _check(generative, module, n, seed)


@pytest.mark.parametrize("n", [1, 4])
def test_every_transform_kind(mixed_kinds, n):
    module = trace_energy(mixed_kinds, n_example=3, seed=1)
    _check(mixed_kinds, module, n, 41)


def test_saved_module_loads_and_agrees(generative, tmp_path):
    path = tmp_path / "energy.pt"
    trace_energy(generative).save(str(path))
    module = torch.jit.load(str(path))
    _check(generative, module, 3, 51)
    # float32 positions (as some TorchScript hosts pass them) are evaluated in float64
    x = T.random_positions(generative, 2, seed=52)
    e = generative.energy(x.to(torch.float32).to(torch.float64)).sum()
    assert float(module(x.to(torch.float32).reshape(-1, 3))) == pytest.approx(float(e), rel=TOL)


def test_root_solver_matches_solve_inverse():
    """The scripted loop is the eager one: same roots, for targets needing few and many
    iterations (steep, narrow components)."""
    g = torch.Generator().manual_seed(5)
    B, n, K, beta = 64, 7, 6, 2
    w = torch.softmax(3.0 * torch.randn(B, n, K, generator=g, dtype=torch.float64), dim=-1)
    b = torch.rand(B, n, K, generator=g, dtype=torch.float64)
    s = 0.02 + 0.98 * torch.rand(B, n, K, generator=g, dtype=torch.float64)
    alpha = 0.2 + 20.0 * torch.rand(B, n, K, generator=g, dtype=torch.float64)
    c = 0.95 * torch.rand(B, n, generator=g, dtype=torch.float64)
    y = torch.rand(B, n, generator=g, dtype=torch.float64)
    params = SmoothParameters(w, b, s, alpha, c, torch.zeros_like(c))
    x_eager, iterations = solve_inverse(y, params, beta)
    assert iterations > 5
    solver = RootSolver.create(beta, K)
    x_script = solver(y, w, b, s, alpha, c)
    assert torch.equal(x_script, x_eager)
