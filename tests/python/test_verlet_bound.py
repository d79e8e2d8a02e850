"""The velocity Verlet bound (smoothflow_torch.verlet_error): the energy error of velocity Verlet
steps on the flow's potential, differentiable, as a training loss.

Oracles: OpenMM running the same steps (a CustomIntegrator written as velocity Verlet) on the
exported flow through SmoothFlowForce; the integrator's own order (one step's energy error falls
as dt^3); the Maxwell-Boltzmann kinetic energy; the loss's definition; and a short training run
whose energy error falls."""
import math

import numpy as np
import openmm
import pytest
import torch

from smoothflow_torch import testing
from smoothflow_torch.export import export_model
from smoothflow_torch.training import TrainConfig, Trainer, element_masses
from smoothflow_torch.verlet_error import (KB, openmm_verlet_energy_change, thermal_velocities, verlet_bound,
                                           verlet_energy_change)

torch.set_num_threads(1)
ELEMENTS = ["C", "H", "N", "O", "H", "C"]
_flow = testing.mixed_element_flow


def _frames(flow, n, seed):
    return flow.to_cartesian(testing.random_u(flow, n, seed=seed, margin=0.1)).detach()


def test_the_steps_are_openmms_velocity_verlet(sf, tmp_path):
    flow = _flow()
    masses = element_masses(flow.atoms)
    x = _frames(flow, 3, seed=4)
    v = thermal_velocities(masses, 600.0, 3, torch.Generator().manual_seed(1))
    path = tmp_path / "flow.safetensors"
    export_model(flow, path)
    system = openmm.System()
    for m in masses.tolist():
        system.addParticle(m)
    system.addForce(sf.SmoothFlowForce(str(path)))
    for steps, dt_fs in ((1, 0.5), (5, 1.0)):
        ours = verlet_energy_change(flow, x, v, masses, dt_fs, steps, create_graph=False).numpy()
        theirs = openmm_verlet_energy_change(system, x.numpy(), v.numpy(), dt_fs, steps)
        assert np.all(np.abs(theirs) > 1e-6), theirs            # a real error to compare
        np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-9)


def test_one_steps_error_falls_as_dt_cubed():
    # velocity Verlet conserves a shadow energy H + O(dt^2), so one step changes H by O(dt^3);
    # a full kick in place of a half kick, or a missing kick, would leave O(dt) or O(dt^2)
    flow = _flow(seed=5)
    masses = element_masses(flow.atoms)
    x = _frames(flow, 8, seed=6)
    v = thermal_velocities(masses, 300.0, 8, torch.Generator().manual_seed(2))
    e = [verlet_energy_change(flow, x, v, masses, dt, 1, create_graph=False).abs() for dt in (0.01, 0.005)]
    ratio = (e[0] / e[1]).numpy()
    assert np.all((ratio > 7.5) & (ratio < 8.5)), ratio


def test_thermal_velocities_have_the_temperature():
    masses = element_masses([{"element": e} for e in ELEMENTS])
    v = thermal_velocities(masses, 1000.0, 20000, torch.Generator().manual_seed(3))
    kinetic = 0.5 * (masses[None, :, None] * v * v).sum(dim=(1, 2))
    expected = 1.5 * len(ELEMENTS) * KB * 1000.0
    assert float(kinetic.mean()) == pytest.approx(expected, rel=0.01)
    assert v.shape == (20000, 6, 3)
    with pytest.raises(ValueError, match="temperature"):
        thermal_velocities(masses, 0.0, 1)


def test_the_bound_is_the_excess_over_the_limit():
    flow = _flow(seed=7)
    masses = element_masses(flow.atoms)
    x = _frames(flow, 8, seed=8)
    v = thermal_velocities(masses, 1000.0, 8, torch.Generator().manual_seed(5))
    de = verlet_energy_change(flow, x, v, masses, 2.0, 3, create_graph=False).abs()
    limit = float(de.median())
    loss, info = verlet_bound(flow, x, masses, 2.0, 1000.0, limit, 3, generator=torch.Generator().manual_seed(5),
                              return_info=True)
    assert float(loss.detach()) == pytest.approx(float(((de / limit - 1).clamp(min=0) ** 2).mean()), rel=1e-10)
    assert info["max"] == pytest.approx(float(de.max()), rel=1e-12)
    assert info["n_over"] == int((de > limit).sum()) > 0 and info["n_invalid"] == 0
    loss.backward()                                      # differentiable in the flow's parameters
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)
    for bad, match in ((dict(limit=0.0), "finite limit"), (dict(limit=math.inf), "finite limit")):
        with pytest.raises(ValueError, match=match):
            verlet_bound(flow, x, masses, 2.0, 1000.0, **bad)
    with pytest.raises(ValueError, match="steps"):
        verlet_energy_change(flow, x, v, masses, 2.0, 0)
    with pytest.raises(ValueError, match="dt_fs"):
        verlet_energy_change(flow, x, v, masses, -1.0, 1)


def test_training_with_the_verlet_bound_lowers_the_energy_error(tmp_path):
    flow = _flow(seed=6)
    masses = element_masses(flow.atoms)
    x = _frames(flow, 16, seed=7)
    v = thermal_velocities(masses, 1000.0, 16, torch.Generator().manual_seed(11))

    def error(f):
        return verlet_energy_change(f, x, v, masses, 2.0, 4, create_graph=False).abs()
    before = error(flow)
    limit = float(before.median())
    cfg = TrainConfig(name="verlet", seed=1, iterations=25, batch_size=16, lr=2e-3, eval_every=0, eval_frames=0,
                      checkpoint_every=0, progress=False, weights={"verlet": 1.0}, verlet_dt_fs=2.0,
                      verlet_temperature=1000.0, verlet_steps=4, verlet_batch=16, verlet_limit=limit)
    t = Trainer(flow, cfg, tmp_path, train_data=(x, None))
    t.train()
    excess = lambda de: float(((de / limit - 1).clamp(min=0) ** 2).mean())
    assert excess(error(flow)) < 0.5 * excess(before), (excess(error(flow)), excess(before))
    steps = [e for e in Trainer.read_log(t.log_path) if e.get("kind") == "train"]
    assert len(steps) == 25 and all("verlet_rms" in e and "verlet_over" in e for e in steps)


def test_config_and_trainer_refuse_what_the_bound_cannot_use(tmp_path):
    for field, value in (("verlet_dt_fs", 0.0), ("verlet_temperature", -1.0), ("verlet_limit", math.nan),
                         ("verlet_limit", True)):
        with pytest.raises(ValueError, match=field):
            TrainConfig(weights={"verlet": 1.0}, **{field: value})
    for field in ("verlet_steps", "verlet_batch"):
        with pytest.raises(ValueError, match=field):
            TrainConfig(weights={"verlet": 1.0}, **{field: 0})
    bare = testing.random_flow(n_atoms=6, n_layers=2, hidden=(8,), seed=1)     # no atoms: no masses
    x = bare.to_cartesian(testing.random_u(bare, 2, seed=1)).detach()
    with pytest.raises(ValueError, match="needs the model's atoms"):
        Trainer(bare, TrainConfig(name="s", iterations=1, progress=False, weights={"verlet": 1.0}), tmp_path,
                train_data=(x, None))
