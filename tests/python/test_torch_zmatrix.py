"""Tests of the Z-matrix internal coordinates (docs/model-format.md section 3)."""

import math

import mdtraj as md
import numpy as np
import pytest
import torch

from smoothflow_torch import testing as T
from smoothflow_torch import zmatrix as zm

torch.set_num_threads(1)
DT = torch.float64


def _trajectory(x):
    top = md.Topology()
    res = top.add_residue("MOL", top.add_chain())
    for i in range(x.shape[1]):
        top.add_atom(f"C{i}", md.element.carbon, res)
    return md.Trajectory(np.asarray(x, dtype=np.float32), top)


def test_torsion_sign_matches_mdtraj():
    # a hand-made non-planar configuration: looking from a's end down j -> k (along -z),
    # the far bond k-l is turned 60 degrees clockwise from the near bond j-a: the IUPAC
    # dihedral a-j-k-l is +60 degrees
    c, s = math.cos(math.radians(60)), math.sin(math.radians(60))
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0],
                       [c, s, 1.0]]], dtype=DT) * 0.15
    Z = [[1, -1, -1, -1], [2, 1, -1, -1], [0, 1, 2, -1], [3, 2, 1, 0]]
    _, _, t = zm.internal_coordinates(x, Z)
    ref = md.compute_dihedrals(_trajectory(x), [[3, 2, 1, 0]])[0, 0]
    assert abs(ref - math.radians(60)) < 1e-6
    assert abs(t.item() - ref) < 1e-6
    # the torsion a-j-k-l of every row on random non-planar molecules
    for seed in range(3):
        flow = T.random_flow(n_atoms=9, seed=seed, n_layers=1)
        x = T.random_positions(flow, 6, seed=seed)
        b, a, t = zm.internal_coordinates(x, flow.zmatrix)
        traj = _trajectory(x)
        Z = flow.zmatrix
        np.testing.assert_allclose(t.numpy(), md.compute_dihedrals(traj, Z[3:]), atol=1e-5)
        np.testing.assert_allclose(a.numpy(), md.compute_angles(traj, Z[2:, :3]), atol=1e-5)
        np.testing.assert_allclose(b.numpy(), md.compute_distances(traj, Z[1:, :2]), atol=1e-6)
        assert (t.abs() > 0.05).any()


@pytest.mark.parametrize("n_atoms", [3, 4, 7, 12])
def test_cartesian_round_trip(n_atoms):
    flow = T.random_flow(n_atoms=n_atoms, seed=n_atoms, n_layers=1)
    u = T.random_u(flow, 10, seed=1, margin=0.0, angle_range=(0.01, 0.99))
    x = flow.to_cartesian(u)
    np.testing.assert_allclose(flow.internal_coordinates(x).numpy(), u.numpy(), atol=1e-13)
    # canonical frame: row 0 at the origin, row 1 on +x, row 2 in the xy plane (y > 0)
    Z = flow.zmatrix
    assert (x[:, Z[0, 0]] == 0).all()
    assert (x[:, Z[1, 0], 1:] == 0).all() and (x[:, Z[1, 0], 0] > 0).all()
    assert (x[:, Z[2, 0], 2] == 0).all() and (x[:, Z[2, 0], 1] > 0).all()
    # internal -> Cartesian -> internal also from rotated, translated positions
    x2 = T.random_positions(flow, 10, seed=1, margin=0.0)
    np.testing.assert_allclose(flow.internal_coordinates(x2).numpy(),
                               T.random_u(flow, 10, seed=1, margin=0.0).numpy(), atol=1e-13)


def test_normalization_and_log_jacobian_terms():
    lo = torch.tensor([0.1, 0.12, 0.09], dtype=DT)
    hi = torch.tensor([0.2, 0.15, 0.3], dtype=DT)
    b = torch.tensor([[0.15, 0.13, 0.3]], dtype=DT)
    a = torch.tensor([[math.pi / 2, math.pi / 3]], dtype=DT)
    t = torch.tensor([[-math.pi / 2]], dtype=DT)
    u = zm.normalize(b, a, t, lo, hi)
    np.testing.assert_allclose(u.numpy(), [[0.5, 1 / 3, 1.0, 0.5, 1 / 3, 0.25]], rtol=1e-14)
    back = zm.denormalize(u, lo, hi)
    for p, q in zip(back, (b, a, t)):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-14)
    assert zm.log_scale(lo, hi).item() == pytest.approx(
        math.log(0.1) + math.log(0.03) + math.log(0.21) + 2 * math.log(math.pi)
        + math.log(2 * math.pi), rel=1e-15)
    assert zm.log_jacobian(b, a).item() == pytest.approx(
        2 * math.log(0.15 * 0.13 * 0.3) + math.log(math.sin(math.pi / 3)), rel=1e-14)


@pytest.mark.parametrize("n_atoms", [4, 5])
def test_log_jacobian_is_the_volume_element(n_atoms):
    """|det d r / d(q, translation, rotation)| at the identity rotation equals J(q)."""
    flow = T.random_flow(n_atoms=n_atoms, seed=3, n_layers=1)
    u = T.random_u(flow, 1, seed=2)
    q0 = torch.cat(zm.denormalize(u, flow.bond_lo, flow.bond_hi), dim=-1)[0]
    nb, na = n_atoms - 1, n_atoms - 2

    def rmap(v):
        q, tr, om = v[:-6], v[-6:-3], v[-3:]
        x = zm.cartesian(q[None, :nb], q[None, nb:nb + na], q[None, nb + na:], flow.zmatrix)[0]
        K = torch.zeros(3, 3, dtype=DT)
        K = K + torch.tensor([[0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=DT) * om[0] \
              + torch.tensor([[0, 0, 1], [0, 0, 0], [-1, 0, 0]], dtype=DT) * om[1] \
              + torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 0]], dtype=DT) * om[2]
        return (x @ torch.linalg.matrix_exp(K).T + tr).reshape(-1)

    v0 = torch.cat([q0, torch.zeros(6, dtype=DT)])
    J = torch.autograd.functional.jacobian(rmap, v0)
    logdet = torch.linalg.slogdet(J)[1].item()
    b, a = q0[None, :nb], q0[None, nb:nb + na]
    assert logdet == pytest.approx(zm.log_jacobian(b, a).item(), abs=1e-10)


def test_minimum_image_triclinic():
    flow = T.random_flow(n_atoms=7, seed=5, n_layers=1)
    x = T.random_positions(flow, 4, seed=3)
    box = torch.tensor([[2.0, 0.0, 0.0], [0.6, 1.9, 0.0], [-0.5, 0.7, 2.2]], dtype=DT)
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(-2, 3, (4, 7, 3), generator=g).to(DT)
    xw = x + shifts @ box          # every atom moved by its own lattice vector
    ref = zm.internal_coordinates(x, flow.zmatrix)
    got = zm.internal_coordinates(xw, flow.zmatrix, box)
    for p, q in zip(ref, got):
        np.testing.assert_allclose(q.numpy(), p.numpy(), atol=1e-12)
    # without the box the wrapped molecule is different
    assert not torch.allclose(zm.internal_coordinates(xw, flow.zmatrix)[0], ref[0])
    # the reduction order c, b, a with floor(x + 1/2)
    d = torch.tensor([[[1.3, 1.2, 1.5]]], dtype=DT)
    e = d.clone()
    e = e - box[2] * math.floor(1.5 / 2.2 + 0.5)
    e = e - box[1] * math.floor(e[0, 0, 1].item() / 1.9 + 0.5)
    e = e - box[0] * math.floor(e[0, 0, 0].item() / 2.0 + 0.5)
    np.testing.assert_allclose(zm.minimum_image(d, box).numpy(), e.numpy(), atol=1e-15)


def test_zmatrix_validation():
    good = [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 0]]
    np.testing.assert_array_equal(zm.validate_zmatrix(good), good)
    np.testing.assert_array_equal(zm.validate_zmatrix([[2.0, -1, -1, -1], [0, 2, -1, -1],
                                                        [1, 0, 2, -1]]), [[2, -1, -1, -1],
                                                                          [0, 2, -1, -1],
                                                                          [1, 0, 2, -1]])
    # each rule, with the row and the reason the message names
    bad = [
        ([[0, -1, -1, -1], [1, 0, -1, -1]], r"at least 3 atoms, got 2"),
        ([[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 3]],
         r"row 3 = \[3, 2, 1, 3\]: reference atom 3 is not placed in an earlier row"),
        ([[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 4]],
         r"row 3 = \[3, 2, 1, 4\]: reference atom 4 is not placed"),
        ([[0, -1, -1, -1], [1, 0, -1, -1], [1, 0, 2, -1]],
         r"row 2 = \[1, 0, 2, -1\]: atom 1 is placed twice"),
        ([[0, -1, -1, -1], [1, 0, 2, -1], [2, 1, 0, -1]],
         r"row 1 = \[1, 0, 2, -1\]: entries after the first 2 must be -1"),
        ([[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 1, -1]],
         r"row 2 = \[2, 1, 1, -1\]: atoms must be distinct"),
        ([[0, -1, -1, -1], [1, 0, -1, -1], [5, 1, 0, -1]],
         r"row 2 = \[5, 1, 0, -1\]: atom 5 outside 0\.\.2"),
        ([[0, -1, -1, -1], [1, 0, -1], [2, 1, 0, -1]], r"row 1 has 3 entries, expected 4"),
        ([[0, -1, -1, -1], [1, 0.5, -1, -1], [2, 1, 0, -1]], r"row 1 has a non-integer entry"),
    ]
    for Z, msg in bad:
        with pytest.raises(ValueError, match=msg):
            zm.validate_zmatrix(Z)
    with pytest.raises(ValueError, match=r"zmatrix has 4 rows, expected n_atoms = 5"):
        zm.validate_zmatrix(good, n_atoms=5)


@pytest.mark.parametrize("seed", range(6))
def test_random_zmatrix_is_valid_and_tree_like(seed):
    n = 5 + seed
    Z = T.random_zmatrix(n, seed)
    zm.validate_zmatrix(Z)
    # every bond partner j is the atom that k's row bonded to, or k bonded to j: a tree
    bonded = {frozenset(map(int, Z[r, :2])) for r in range(1, n)}
    for r in range(2, n):
        a, j, k = map(int, Z[r, :3])
        assert frozenset((j, k)) in bonded
    assert sorted(Z[:, 0].tolist()) == list(range(n))
