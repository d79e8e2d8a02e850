"""The curvature bound of the trainer (smoothflow_torch.training.curvature).

Oracles: central differences of the flow's energy along one coordinate (through positions and
the Z-matrix, not through energy_of_u) for the second derivative; the loss's definition on a
known set of curvatures; and a short training run whose largest curvature falls."""
import numpy as np
import pytest
import torch

from smoothflow_torch import testing
from smoothflow_torch.training import TrainConfig, Trainer, curvature, curvature_along

torch.set_num_threads(1)


def _flow(seed=3):
    return testing.random_flow(n_atoms=6, n_layers=3, n_components=3, hidden=(12,), seed=seed,
                               support={"policy": "wall", "margin": 0.02, "wall_constant": 500.0})


def test_curvature_along_is_the_second_derivative_of_the_energy():
    flow = _flow()
    u = testing.random_u(flow, 6, seed=2)
    d = torch.tensor([0, 3, 5, 7, 9, 11])     # bonds, angles and torsions
    h_auto = curvature_along(flow, u, d, create_graph=False).detach().numpy()
    step = 1e-4
    fd = []
    for b in range(len(u)):
        e = []
        for s in (-1, 0, 1):
            v = u[b:b + 1].clone()
            v[0, d[b]] += s * step
            e.append(float(flow.energy(flow.to_cartesian(v)).detach()))
        fd.append((e[0] - 2 * e[1] + e[2]) / step ** 2)
    np.testing.assert_allclose(h_auto, fd, rtol=2e-4, atol=1e-3 * np.abs(fd).max())


def test_curvature_loss_is_the_excess_over_the_limit():
    flow = _flow(seed=4)
    x = flow.to_cartesian(testing.random_u(flow, 16, seed=5)).detach()
    g = torch.Generator().manual_seed(1)
    loss, info = curvature(flow, x, limit=1.0, noise=0.0, generator=g, return_info=True)
    # the same frames and coordinates again, by hand
    g = torch.Generator().manual_seed(1)
    u = flow.internal_coordinates(x)
    d = torch.randint(u.shape[1], (len(x),), generator=g)
    h = curvature_along(flow, u, d, create_graph=False).abs()
    assert float(loss.detach()) == pytest.approx(float(((h - 1).clamp(min=0) ** 2).mean()), rel=1e-10)
    assert info["max"] == pytest.approx(float(h.max()), rel=1e-12)
    assert info["n_over"] == int((h > 1).sum()) > 0
    assert float(curvature(flow, x, limit=10 * info["max"], noise=0.0)) == 0.0
    with pytest.raises(ValueError, match="limit > 0"):
        curvature(flow, x, limit=0.0)


def test_training_with_the_curvature_bound_lowers_the_curvature(tmp_path):
    flow = _flow(seed=6)
    x = flow.to_cartesian(testing.random_u(flow, 64, seed=7)).detach()
    g = torch.Generator().manual_seed(3)
    _, before = curvature(flow, x, limit=1.0, noise=0.0, generator=g, return_info=True)
    limit = 0.2 * before["max"]
    cfg = TrainConfig(name="curv", seed=1, iterations=40, batch_size=32, lr=3e-3, eval_every=0, eval_frames=0,
                      checkpoint_every=0, progress=False, weights={"curvature": 1.0},
                      curvature_limit=limit, curvature_noise=0.0)
    Trainer(flow, cfg, tmp_path, train_data=(x, None)).train()
    g = torch.Generator().manual_seed(3)
    after, info = curvature(flow, x, limit=limit, noise=0.0, generator=g, return_info=True)
    g = torch.Generator().manual_seed(3)
    first = curvature(_flow(seed=6), x, limit=limit, noise=0.0, generator=g)
    assert float(after) < 0.5 * float(first), (float(after), float(first))


def _first_step_entry(tmp_path, flow, x, extra, limit, b):
    cfg = TrainConfig(name="curv", seed=2, iterations=1, batch_size=16, lr=1e-3, eval_every=0, eval_frames=0,
                      checkpoint_every=0, progress=False, weights={"curvature": 1.0},
                      curvature_limit=limit, curvature_noise=0.05, curvature_extra_batch=b)
    t = Trainer(flow, cfg, tmp_path, train_data=(x, None), curvature_frames=extra)
    t.train()
    return next(e for e in Trainer.read_log(t.log_path) if e.get("kind") == "train")


def test_curvature_frames_join_the_bound_frame_for_frame(tmp_path):
    """The logged curvature term of the first step, replayed by hand from the trainer's data
    generator (seed + 1): the data batch's draws, then the extra frames' draws, each frame once."""
    flow = _flow(seed=8)
    x = flow.to_cartesian(testing.random_u(flow, 40, seed=9)).detach()
    extra = flow.to_cartesian(testing.random_u(flow, 30, seed=10)).detach()
    start = {k: v.clone() for k, v in flow.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    _, probe = curvature(flow, torch.cat([x, extra]), limit=1.0, noise=0.0, generator=g, return_info=True)
    limit = 0.1 * probe["max"]
    entry = _first_step_entry(tmp_path, flow, x, extra, limit, b=12)
    flow.load_state_dict(start)
    g = torch.Generator().manual_seed(2 + 1)
    idx = torch.randint(len(x), (16,), generator=g)
    a = curvature(flow, x[idx], limit, 0.05, generator=g, return_info=True)
    jdx = torch.randint(len(extra), (12,), generator=g)
    c = curvature(flow, extra[jdx], limit, 0.05, generator=g, return_info=True)
    expect = (16 * float(a[0]) + 12 * float(c[0])) / 28
    assert entry["curvature"] == pytest.approx(expect, rel=1e-9)
    assert entry["curvature_extra_max"] == pytest.approx(c[1]["max"], rel=1e-9)
    assert entry["curvature_extra_over"] == c[1]["n_over"]
    assert entry["curvature_max"] == pytest.approx(a[1]["max"], rel=1e-9)
    assert float(c[0]) != pytest.approx(float(a[0]), rel=1e-3)    # the two sets differ: the test can tell


def _every_curvature(flow, positions):
    """|E''| along every coordinate of every frame (no random choice: nothing to hide behind)."""
    u = flow.internal_coordinates(positions).detach()
    D = u.shape[1]
    return curvature_along(flow, u.repeat_interleave(D, 0), torch.arange(D).repeat(len(u)),
                           create_graph=False).detach().abs()


def test_training_with_curvature_frames_lowers_the_curvature_there(tmp_path):
    """One data frame and eight other frames: the bound with the eight as curvature frames
    removes the excess over the limit there; without them it does not."""
    excess = {}
    for given in (True, False):
        flow = _flow(seed=6)
        x = flow.to_cartesian(testing.random_u(flow, 1, seed=7)).detach()
        extra = flow.to_cartesian(testing.random_u(flow, 8, seed=11)).detach()
        h0 = _every_curvature(flow, extra)
        limit = 0.3 * float(h0.max())
        cfg = TrainConfig(name="curv", seed=1, iterations=25, batch_size=1, lr=2e-3, eval_every=0, eval_frames=0,
                          checkpoint_every=0, progress=False, weights={"curvature": 1.0},
                          curvature_limit=limit, curvature_noise=0.0, curvature_extra_batch=8)
        Trainer(flow, cfg, tmp_path / str(given), train_data=(x, None),
                curvature_frames=extra if given else None).train()
        before = float((torch.relu(h0 / limit - 1) ** 2).mean())
        excess[given] = float((torch.relu(_every_curvature(flow, extra) / limit - 1) ** 2).mean()) / before
    assert excess[True] < 0.2 and excess[False] > 0.5, excess


def test_curvature_frames_need_the_loss_and_the_molecules_shape(tmp_path):
    flow = _flow()
    x = flow.to_cartesian(testing.random_u(flow, 4, seed=1)).detach()
    nll = TrainConfig(name="n", iterations=1, progress=False, weights={"nll": 1.0})
    with pytest.raises(ValueError, match="only by the curvature, stiffness and verlet losses"):
        Trainer(flow, nll, tmp_path, train_data=(x, None), curvature_frames=x)
    cfg = TrainConfig(name="c", iterations=1, progress=False, weights={"curvature": 1.0})
    with pytest.raises(ValueError, match=r"shape \(n >= 1, 6, 3\)"):
        Trainer(flow, cfg, tmp_path, train_data=(x, None), curvature_frames=x[:, :5])
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite positions"):
        Trainer(flow, cfg, tmp_path, train_data=(x, None), curvature_frames=bad)
    with pytest.raises(ValueError, match="curvature_extra_batch"):
        TrainConfig(weights={"curvature": 1.0}, curvature_extra_batch=0)


def test_config_refuses_a_bad_limit():
    with pytest.raises(ValueError, match="curvature_limit"):
        TrainConfig(weights={"curvature": 1.0}, curvature_limit=-1.0)
    with pytest.raises(ValueError, match="curvature_noise"):
        TrainConfig(weights={"curvature": 1.0}, curvature_noise=float("nan"))
