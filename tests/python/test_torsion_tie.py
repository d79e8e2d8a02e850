"""A torsion of exactly +-180 degrees: the C core and PyTorch take the same point of the circle.

atan2 returns +pi or -pi for a planar trans torsion depending on the sign of a zero, and the
two implementations form that zero differently. (phi + pi) / (2 pi) is then 1 or 0: the same
point of the circle, but a spline flow is only C1 there, so its one-sided forces differ.
docs/model-format.md section 3 fixes the tie: a torsion's u lies in [0, 1), and u = 1 is u = 0.
The configurations below are built so that the torsion is exactly planar in every floating-point
operation, in orientations where the documented formula gives +pi and ones where it gives -pi.
"""
import math

import numpy as np
import pytest
import torch

from smoothflow_core import CoreModel
from smoothflow_torch import model_to_bytes
from smoothflow_torch.testing import chain_flow

torch.set_num_threads(1)

N_ATOMS = 6
ROW = 3                      # chain Z-matrix row [3, 2, 1, 0]: the planar torsion
DIM = 2 * N_ATOMS - 3        # its dimension (docs/model-format.md section 3)


def _sub(p, q):
    return [p[0] - q[0], p[1] - q[1], p[2] - q[2]]


def _cross(p, q):
    return [p[1] * q[2] - p[2] * q[1], p[2] * q[0] - p[0] * q[2], p[0] * q[1] - p[1] * q[0]]


def _dot(p, q):
    return p[0] * q[0] + p[1] * q[1] + p[2] * q[2]


def iupac_torsion(x, row):
    """phi of docs/model-format.md section 3 in IEEE double arithmetic, sums left to right (the
    operations of the C core): atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3))."""
    a, j, k, l = (list(map(float, x[i])) for i in row)
    b1, b2, b3 = _sub(j, a), _sub(k, j), _sub(l, k)
    n = _cross(b2, b3)
    return math.atan2(math.sqrt(_dot(b2, b2)) * _dot(b1, n), _dot(_cross(b1, b2), n))


def planar_configurations(flow):
    """Configurations whose torsion DIM is exactly +-pi, in 96 orientations.

    The canonical frame of to_cartesian puts atoms 0, 1, 2 in the plane z = 0; the torsion is
    set to -pi (trans) and atom 3's z, off by the rounding of sin(-pi), is set to 0. Turning the
    molecule about z and mirroring it (x -> -x) keep the four atoms in that plane exactly, and
    change which signed zeros the torsion's dot products form: some orientations give +pi,
    others -pi.
    """
    g = torch.Generator().manual_seed(11)
    u = torch.rand(1, flow.n_dims, generator=g, dtype=torch.float64)
    u[0, :N_ATOMS - 1] = 0.3 + 0.4 * u[0, :N_ATOMS - 1]              # bonds inside the support
    u[0, N_ATOMS - 1:DIM] = 0.55 + 0.2 * u[0, N_ATOMS - 1:DIM]       # angles of 99-135 degrees
    u[0, DIM] = 0.0
    x = flow.to_cartesian(u)[0].numpy()
    out = []
    for k in range(48):
        a = 0.1 + 2 * math.pi * k / 48
        turn = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0],
                         [0.0, 0.0, 1.0]])
        y = x @ turn.T
        y[:4, 2] = 0.0
        out.append(y)
        out.append(y * np.array([-1.0, 1.0, 1.0]))
    return out


def test_configurations_hit_both_ends():
    """The geometry really is the tie, from both sides: the documented formula gives exactly +pi
    for some orientations and exactly -pi for others, and PyTorch gives +-pi for every one."""
    flow = chain_flow(N_ATOMS, seed=1, transform="spline")
    row = [int(v) for v in flow.zmatrix[ROW]]
    phis = {iupac_torsion(x, row) for x in planar_configurations(flow)}
    assert phis == {math.pi, -math.pi}
    for x in planar_configurations(flow):
        _, _, t = flow.internal(torch.from_numpy(x))
        assert abs(t[0, ROW - 3].item()) == math.pi


def _models():
    return [
        ("spline-density", chain_flow(N_ATOMS, seed=2, n_components=5, transform="spline",
                                      directions="density")),
        ("spline-mixed", chain_flow(N_ATOMS, seed=3, n_components=6, transform="spline",
                                    directions="mixed")),
        ("smooth-density", chain_flow(N_ATOMS, seed=4, transform="smooth", directions="density")),
        ("smooth-generative", chain_flow(N_ATOMS, seed=5, transform="smooth")),
    ]


@pytest.mark.parametrize("name,flow", _models(), ids=[n for n, _ in _models()])
def test_core_matches_torch_at_the_tie(name, flow):
    """Energy and forces agree to 1e-10 relative at +pi and at -pi; both sides map the torsion to
    u = 0 exactly."""
    x = np.stack(planar_configurations(flow))
    core = CoreModel.from_bytes(model_to_bytes(flow), max_batch=len(x))
    for one in x:
        assert core.internal_coordinates(one)[DIM] == 0.0
    assert torch.all(flow.internal_coordinates(torch.from_numpy(x))[:, DIM] == 0.0)
    e_torch, f_torch = flow.energy_and_forces(torch.from_numpy(x))
    e_core, f_core = core.evaluate(x)
    e_torch, f_torch = e_torch.numpy(), f_torch.numpy()
    row = [int(v) for v in flow.zmatrix[ROW]]
    for b in range(len(x)):
        where = (name, b, iupac_torsion(x[b], row))
        assert abs(e_core[b] - e_torch[b]) <= 1e-10 * max(1.0, abs(e_torch[b])), where
        scale = max(1.0, np.abs(f_torch[b]).max())
        assert np.abs(f_core[b] - f_torch[b]).max() <= 1e-10 * scale, where
