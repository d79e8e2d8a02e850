"""The C core and the PyTorch reference decide the edge cases alike: nearly collinear angles
and torsions (both refuse at sin^2 <= 1e-24 relative), the wall's count of clamped
coordinates (both count c(u) != u), and periodic boxes that are not finite and positive."""
import numpy as np
import pytest
import torch

from smoothflow_core import CoreError, CoreModel
from smoothflow_torch import export_model
from smoothflow_torch import testing as T

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A 5-atom chain flow (wall policy) and its exported model, both readers."""
    flow = T.random_flow(zmatrix=[[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 0], [4, 3, 2, 1]],
                         n_layers=2, seed=8, support={"policy": "wall", "margin": 0.05, "wall_constant": 300.0},
                         bond_lo=[0.1] * 4, bond_hi=[0.2] * 4)
    path = tmp_path_factory.mktemp("edges") / "chain.safetensors"
    export_model(flow, path)
    return flow, CoreModel.from_file(path, max_batch=8)


def _bent_chain(sin_angle):
    """Atoms 0-1-2 at an angle of nearly 180 degrees whose sine is sin_angle (so sin^2, the
    quantity both readers test, is sin_angle^2); every bond 0.15 nm or so, the rest bent."""
    x = np.zeros((5, 3))
    x[1] = [0.3, 0.3, 0.3]
    x[0] = x[1] + 0.15 * np.array([-np.sqrt(1 - sin_angle ** 2), sin_angle, 0.0])
    x[2] = x[1] + [0.15, 0.0, 0.0]
    x[3] = x[2] + [0.05, 0.14, 0.0]
    x[4] = x[3] + [0.1, 0.02, 0.11]
    return x


def _verdicts(flow, core, x):
    try:
        flow.energy(torch.from_numpy(x[None]))
        torch_ok = True
    except ValueError:
        torch_ok = False
    try:
        core.evaluate(x[None])
        core_ok = True
    except CoreError:
        core_ok = False
    return torch_ok, core_ok


@pytest.mark.parametrize("sin_angle, accepted", [(0.0, False), (1e-14, False), (1e-11, True), (1e-3, True)])
def test_a_nearly_straight_angle_is_refused_by_both_or_by_neither(chain, sin_angle, accepted):
    flow, core = chain
    x = _bent_chain(sin_angle)
    assert _verdicts(flow, core, x) == (accepted, accepted)


def test_the_wall_counts_agree(chain):
    """Configurations with bonds placed around the zone's edges (u = 2m and 1 - 2m, m = 0.05),
    some an ulp inside: the core's count of clamped coordinates equals PyTorch's."""
    flow, core = chain
    rng = np.random.default_rng(3)
    x = T.random_positions(flow, 8, seed=5, rigid=False).numpy()
    u0 = flow.internal_coordinates(torch.from_numpy(x)).numpy()
    for b in range(8):
        u = u0[b].copy()
        for d in range(4):  # bonds
            edge = rng.choice([0.1, 0.9])
            u[d] = edge + rng.choice([-1e-3, -1e-12, 0.0, 1e-12, 1e-3])
        x[b] = flow.to_cartesian(torch.from_numpy(u[None])).numpy()[0]
    expected = flow.wall_dims(torch.from_numpy(x)).numpy()
    counts = []
    for b in range(8):
        core.evaluate(x[b:b + 1])
        counts.append(core.last_info["wall_dims"])
    assert counts == expected.tolist()
    assert 0 < sum(counts) < 32  # some coordinates inside the zone, some outside


@pytest.mark.parametrize("box", [np.diag([2.0, 2.0, 0.0]), np.diag([2.0, -2.0, 2.0]), np.diag([np.nan, 2.0, 2.0])])
def test_a_box_that_is_not_finite_and_positive_is_refused_by_both(chain, box):
    flow, core = chain
    x = T.random_positions(flow, 1, seed=2).numpy()
    with pytest.raises(ValueError, match="periodic box vectors are not finite and positive"):
        flow.energy(torch.from_numpy(x), box=torch.from_numpy(box))
    with pytest.raises(CoreError, match="periodic box vectors are not finite and positive"):
        core.evaluate(x, box=box)
