"""The stiffness bound of the trainer (smoothflow_torch.training.stiffness): the dominant
eigenvalue of the mass-weighted Cartesian Hessian by power iteration.

Oracles: the Hessian of the flow's energy by central differences of its autograd forces,
mass-weighted and diagonalized by numpy; the loss's definition on those eigenvalues; and a short
training run whose stiffest frame softens."""
import math

import numpy as np
import pytest
import torch

from smoothflow_torch import testing
from smoothflow_torch.training import (TrainConfig, Trainer, element_masses, mass_weighted_top_eigenvalue,
                                       stiffness)

torch.set_num_threads(1)
ELEMENTS = ["C", "H", "N", "O", "H", "C"]
_flow = testing.mixed_element_flow


def _eigenvalues(flow, x, masses, h=1e-6):
    """Mass-weighted Hessian eigenvalues of one frame, by central differences of the forces."""
    flat = x.reshape(-1).clone()
    H = np.empty((flat.numel(), flat.numel()))
    for i in range(flat.numel()):
        rows = []
        for s in (1, -1):
            y = flat.clone()
            y[i] += s * h
            _, f = flow.energy_and_forces(y.reshape(1, *x.shape))
            rows.append(-f.detach().reshape(-1).numpy())
        H[i] = (rows[0] - rows[1]) / (2 * h)
    w = 1 / np.sqrt(np.repeat(masses.numpy(), 3))
    return np.linalg.eigvalsh(0.5 * (H + H.T) * w[:, None] * w[None, :])


def test_masses_come_from_the_elements():
    flow = _flow()
    m = element_masses(flow.atoms).numpy()
    assert m[0] == pytest.approx(12.01, abs=0.01) and m[1] == pytest.approx(1.008, abs=0.001)
    assert m[2] == pytest.approx(14.007, abs=0.001) and m[3] == pytest.approx(15.999, abs=0.001)
    with pytest.raises(ValueError, match="needs the model's atoms"):
        element_masses(None)


def test_power_iteration_finds_the_dominant_eigenvalue():
    flow = _flow()
    masses = element_masses(flow.atoms)
    x = flow.to_cartesian(testing.random_u(flow, 2, seed=4)).detach()
    lam = mass_weighted_top_eigenvalue(flow, x, masses, iterations=120, generator=torch.Generator().manual_seed(0),
                                       create_graph=False).detach().numpy()
    for b in range(2):
        ev = _eigenvalues(flow, x[b], masses)
        dominant = ev[np.argmax(np.abs(ev))]
        assert lam[b] == pytest.approx(dominant, rel=2e-3), (b, lam[b], ev[[0, -1]])
    # a few iterations: a Rayleigh quotient, never above the dominant magnitude
    few = mass_weighted_top_eigenvalue(flow, x, masses, iterations=2, generator=torch.Generator().manual_seed(0),
                                       create_graph=False).detach().numpy()
    assert np.all(np.abs(few) <= np.abs(lam) * (1 + 1e-9))


def test_stiffness_loss_is_the_excess_over_the_limit():
    flow = _flow(seed=5)
    masses = element_masses(flow.atoms)
    x = flow.to_cartesian(testing.random_u(flow, 8, seed=6)).detach()
    lam = mass_weighted_top_eigenvalue(flow, x, masses, 8, torch.Generator().manual_seed(2), create_graph=False).abs()
    limit = float(lam.median())
    loss, info = stiffness(flow, x, masses, limit, 8, generator=torch.Generator().manual_seed(2), return_info=True)
    assert float(loss.detach()) == pytest.approx(float(((lam / limit - 1).clamp(min=0) ** 2).mean()), rel=1e-10)
    assert info["max"] == pytest.approx(float(lam.max()), rel=1e-12)
    assert info["n_over"] == int((lam > limit).sum()) > 0
    assert info["dt_min_fs"] == pytest.approx(2000 / math.sqrt(float(lam.max())), rel=1e-12)
    with pytest.raises(ValueError, match="finite limit > 0"):
        stiffness(flow, x, masses, 0.0)


def test_training_with_the_stiffness_bound_softens_the_stiffest_frames(tmp_path):
    flow = _flow(seed=6)
    masses = element_masses(flow.atoms)
    x = flow.to_cartesian(testing.random_u(flow, 16, seed=7)).detach()

    def top(f):
        return mass_weighted_top_eigenvalue(f, x, masses, 30, torch.Generator().manual_seed(9),
                                            create_graph=False).detach().abs()
    before = top(flow)
    limit = float(before.median())            # half the frames over it
    dt_fs = 2000 / math.sqrt(limit)
    cfg = TrainConfig(name="stiff", seed=1, iterations=25, batch_size=16, lr=2e-3, eval_every=0, eval_frames=0,
                      checkpoint_every=0, progress=False, weights={"stiffness": 1.0}, stiffness_dt_fs=dt_fs,
                      stiffness_batch=16, stiffness_iterations=8)
    t = Trainer(flow, cfg, tmp_path, train_data=(x, None))
    t.train()
    excess = lambda lam: float(((lam / limit - 1).clamp(min=0) ** 2).mean())
    assert excess(top(flow)) < 0.3 * excess(before), (excess(top(flow)), excess(before))
    steps = [e for e in Trainer.read_log(t.log_path) if e.get("kind") == "train"]
    assert all("stiffness_dt_min_fs" in e and "stiffness_over" in e for e in steps)


def test_config_and_trainer_refuse_what_the_bound_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="stiffness_dt_fs"):
        TrainConfig(weights={"stiffness": 1.0}, stiffness_dt_fs=0.0)
    with pytest.raises(ValueError, match="stiffness_iterations"):
        TrainConfig(weights={"stiffness": 1.0}, stiffness_iterations=0)
    bare = testing.random_flow(n_atoms=6, n_layers=2, hidden=(8,), seed=1)     # no atoms: no masses
    x = bare.to_cartesian(testing.random_u(bare, 2, seed=1)).detach()
    with pytest.raises(ValueError, match="needs the model's atoms"):
        Trainer(bare, TrainConfig(name="s", iterations=1, progress=False, weights={"stiffness": 1.0}), tmp_path,
                train_data=(x, None))
