"""The sharp-region diagnostic (studies/alanine_dipeptide/sharp_regions.py): its pieces on
cases with known answers, and the per-layer split adding up to the flow's energy."""
import numpy as np
import pytest
import torch

from alanine_dipeptide import sharp_regions
from smoothflow_torch import testing


def test_largest_jumps_name_the_step_after_the_jump():
    e = np.array([0.0, 0.1, 0.2, 5.2, 5.1, 2.1])
    assert sharp_regions.largest_jumps(e, 2) == [(3, pytest.approx(5.0)), (5, pytest.approx(-3.0))]


def test_coordinate_curvatures_of_a_quadratic_are_exact():
    a = np.array([1.0, 50.0, 3.0e4])
    energy = lambda u: float(np.sum(a * (u - 0.3) ** 2) + u[0] * u[1])
    c = sharp_regions.coordinate_curvatures(energy, np.array([0.2, 0.5, 0.7]), h=1e-3)
    assert c == pytest.approx(2 * a, rel=1e-6)


def test_layer_scan_adds_up_to_the_flow_energy_and_sharpest_finds_a_coordinate():
    flow = testing.chain_flow(6, seed=2, n_layers=4, n_components=3, hidden=(8,))
    x = testing.random_positions(flow, 2, seed=1).numpy()
    u = flow.internal_coordinates(torch.as_tensor(x[:1]))[0].detach().numpy()
    dim = flow.n_interval    # the first torsion
    scan = sharp_regions.layer_scan(flow, u, dim, 0.1, 0.9, n=9)
    assert scan["layers"].shape == (len(flow.layers), 9)
    energy = sharp_regions.flow_energy_u(flow)
    for v, total in zip(scan["values"], scan["total"]):
        w = u.copy()
        w[dim] = v
        assert total == pytest.approx(energy(w), abs=1e-9)
    d, curv, t, at = sharp_regions.sharpest_along_step(flow, x[0], x[1], points=3)
    assert 0 <= d < len(u) and curv > 0 and t in (0.0, 0.5, 1.0)
    c = np.abs(sharp_regions.coordinate_curvatures(energy, at))
    assert c[d] == pytest.approx(c.max())
