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
    # the split: layers[0] is the data-side layer (the last of the flow), -kT x its
    # log-determinant in the density direction along the scan
    h = torch.as_tensor(u).repeat(9, 1)
    h[:, dim] = torch.as_tensor(scan["values"])
    with torch.no_grad():
        first = -flow.kT * flow.layers[-1](h, inverse=True)[1].numpy()
    np.testing.assert_allclose(scan["layers"][0], first, rtol=1e-12, atol=1e-12)
    assert np.ptp(scan["layers"][0]) > 1e-3
    # the sharpest coordinate over the path's ends t = 0, 1: the largest |d2E/du_d2| of all
    # (from x[1] to x[0]: the sharper end is t = 1, which a scan of t = 0 alone would miss)
    d, curv, t, at = sharp_regions.sharpest_along_step(flow, x[1], x[0], points=2)
    curvatures = {}
    for tt in (0.0, 1.0):
        ut = flow.internal_coordinates(torch.as_tensor(x[1] + tt * (x[0] - x[1]))[None])[0].detach().numpy()
        curvatures[tt] = (ut, np.abs(sharp_regions.coordinate_curvatures(energy, ut)))
    best = max(curvatures, key=lambda tt: curvatures[tt][1].max())
    assert t == best == 1.0 and d == int(np.argmax(curvatures[best][1]))
    assert curv == pytest.approx(curvatures[best][1].max(), rel=1e-12)
    np.testing.assert_allclose(at, curvatures[best][0], rtol=0, atol=1e-15)
