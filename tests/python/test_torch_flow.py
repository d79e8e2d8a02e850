"""Tests of the SmoothFlow model: densities, energies, forces, support policies, sampling."""

import math

import numpy as np
import pytest
import torch

from smoothflow_torch import SmoothFlow, wall_clamp
from smoothflow_torch import testing as T
from smoothflow_torch import zmatrix as zm
from smoothflow_torch.flow import MOLAR_GAS_CONSTANT

torch.set_num_threads(1)
DT = torch.float64


# ------------------------------------------------------------------ the flow
@pytest.mark.parametrize("directions", ["generative", "density", "mixed"])
@pytest.mark.parametrize("n_layers,K", [(1, 1), (2, 3), (3, 8), (5, 2)])
def test_forward_inverse_consistency(directions, n_layers, K):
    flow = T.random_flow(n_atoms=5, n_layers=n_layers, n_components=K, hidden=(8,),
                         directions=directions, seed=n_layers + K)
    z = torch.rand(16, flow.n_dims, dtype=DT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        u, ld_fwd = flow(z)
        z2, ld_inv = flow(u, inverse=True)
    circ = torch.tensor(flow.circular)
    d = (z2 - z).abs()
    d = torch.where(circ, torch.minimum(d, 1 - d), d)
    assert d.max() < 1e-11
    np.testing.assert_allclose(ld_inv.numpy(), -ld_fwd.numpy(), atol=1e-10)
    assert ((u >= 0) & (u <= 1)).all()
    np.testing.assert_allclose(flow.log_prob_u(u).detach().numpy(), -ld_fwd.numpy(), atol=1e-10)


@pytest.mark.parametrize("directions", ["generative", "density"])
def test_log_det_is_the_jacobian_determinant(directions):
    flow = T.random_flow(n_atoms=5, n_layers=3, n_components=3, hidden=(8,),
                         directions=directions, seed=4)
    z = torch.rand(3, flow.n_dims, dtype=DT, generator=torch.Generator().manual_seed(1))
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        _, ld = flow(z[i:i + 1])
        assert torch.linalg.slogdet(J)[1].item() == pytest.approx(ld.item(), abs=1e-10)


def test_density_integrates_to_one():
    """Gauss-Legendre quadrature of p_U over the unit cube of a 3-D (3-atom) flow."""
    flow = T.random_flow(n_atoms=3, n_layers=3, n_components=3, hidden=(8,), seed=5,
                         steep=False, directions="mixed",
                         smooth={"alpha_min": 2.0, "s_min": 0.3})
    n = 32
    xg, wg = np.polynomial.legendre.leggauss(n)
    xg, wg = (xg + 1) / 2, wg / 2
    grid = torch.tensor(np.stack(np.meshgrid(xg, xg, xg, indexing="ij"), -1).reshape(-1, 3))
    w = torch.tensor(np.einsum("i,j,k->ijk", wg, wg, wg).reshape(-1))
    with torch.no_grad():
        lp = flow.log_prob_u(grid)
    assert lp.max() - lp.min() > 1.0          # far from uniform
    assert abs(float((w * lp.exp()).sum()) - 1.0) < 1e-3


def test_log_prob_u_gradient_vs_finite_differences():
    flow = T.random_flow(n_atoms=5, n_layers=4, n_components=4, directions="mixed", seed=2)
    u = T.random_u(flow, 4, seed=3).requires_grad_(True)
    (g,) = torch.autograd.grad(flow.log_prob_u(u).sum(), u)
    h = 1e-6
    with torch.no_grad():
        for d in range(flow.n_dims):
            e = torch.zeros_like(u)
            e[:, d] = h
            fd = (flow.log_prob_u(u + e) - flow.log_prob_u(u - e)) / (2 * h)
            np.testing.assert_allclose(g[:, d].numpy(), fd.numpy(), rtol=1e-6, atol=1e-6)


def test_new_flow_is_independent_of_conditioning():
    flow = SmoothFlow(T.chain_zmatrix(5), [0.1] * 4, [0.2] * 4,
                      [{"transformed": [0, 1, 2], "n_components": 2, "hidden": [4]}])
    u = T.random_u(flow, 6, seed=0)
    u2 = u.clone()
    u2[:, 3:] = T.random_u(flow, 6, seed=1)[:, 3:]
    np.testing.assert_allclose(flow(u)[0][:, :3].detach().numpy(),
                               flow(u2)[0][:, :3].detach().numpy(), rtol=0, atol=0)
    assert set(flow.state_dict()) == {"bond_lo", "bond_hi", "layers.0.net.0.weight",
                                      "layers.0.net.0.bias", "layers.0.net.1.weight",
                                      "layers.0.net.1.bias"}


def test_layer_validation():
    Z = T.chain_zmatrix(4)
    with pytest.raises(ValueError, match="overlap"):
        SmoothFlow(Z, [0.1] * 3, [0.2] * 3, [{"transformed": [0, 1], "conditioning": [1, 2]}])
    with pytest.raises(ValueError, match="outside"):
        SmoothFlow(Z, [0.1] * 3, [0.2] * 3, [{"transformed": [6]}])
    with pytest.raises(ValueError, match="activation"):
        SmoothFlow(Z, [0.1] * 3, [0.2] * 3, [{"transformed": [0], "activation": "relu"}])
    with pytest.raises(ValueError, match="bond_hi"):
        SmoothFlow(Z, [0.1] * 3, [0.2, 0.1, 0.2], [])


# ------------------------------------------------------------------ energy and forces
def _fd_forces(flow, x, box=None, h=1e-6, atoms=None, coords=(0, 1, 2)):
    """-dE/dx by the fourth-order central difference (the energy is steep on 1e-3 nm)."""
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in (range(flow.n_atoms) if atoms is None else atoms):
            for c in coords:
                e = torch.zeros_like(x)
                e[:, i, c] = h
                E = lambda k: flow.energy(x + k * e, box)
                fd[:, i, c] = -(E(-2) - 8 * E(-1) + 8 * E(1) - E(2)) / (12 * h)
    return fd


def _reference_energy(flow, x):
    """The energy of docs/model-format.md section 5, assembled independently."""
    b, a, t = zm.internal_coordinates(x, flow.zmatrix)
    u = torch.cat([(b - flow.bond_lo) / (flow.bond_hi - flow.bond_lo), a / math.pi,
                   (t + math.pi) / (2 * math.pi)], -1)
    z, logdet = u, torch.zeros(x.shape[0], dtype=DT)
    for layer in reversed(flow.layers):
        z, ld = layer(z, inverse=True)
        logdet = logdet + ld
    scale = (torch.log(flow.bond_hi - flow.bond_lo).sum() + (flow.n_atoms - 2) * math.log(math.pi)
             + (flow.n_atoms - 3) * math.log(2 * math.pi))
    logJ = 2 * torch.log(b).sum(-1) + torch.log(torch.sin(a)).sum(-1)
    kT = 0.00831446261815324 * flow.temperature
    return -kT * (logdet - scale - logJ) + flow.energy_offset


def test_energy_formula():
    flow = T.random_flow(n_atoms=6, seed=8, temperature=310.0, energy_offset=-12.5,
                         directions="mixed")
    assert flow.kT == MOLAR_GAS_CONSTANT * 310.0
    x = T.random_positions(flow, 5, seed=1)
    E = flow.energy(x)
    np.testing.assert_allclose(E.detach().numpy(), _reference_energy(flow, x).detach().numpy(),
                               rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(flow.log_prob(x).detach().numpy(),
                               (-(E - flow.energy_offset) / flow.kT).detach().numpy(), rtol=1e-14)
    # a single configuration (N, 3) is a batch of one; lists are read in double precision
    assert flow.energy(x[0]).shape == (1,)
    assert torch.equal(flow.energy(x.tolist()).detach(), E.detach())


@pytest.mark.parametrize("directions,activation", [("generative", "tanh"), ("density", "silu"),
                                                    ("mixed", "softplus")])
def test_forces_vs_finite_differences(directions, activation):
    flow = T.random_flow(n_atoms=6, n_layers=3, n_components=5, activation=activation,
                         directions=directions, seed=3)
    x = T.random_positions(flow, 3, seed=4)
    E, F = flow.energy_and_forces(x)
    fd = _fd_forces(flow, x)
    scale = F.abs().max().item()
    np.testing.assert_allclose(F.numpy(), fd.numpy(), rtol=1e-7, atol=1e-8 * scale)
    # translation and rotation invariance: zero net force and net torque
    np.testing.assert_allclose(F.sum(1).numpy(), 0.0, atol=1e-10 * scale)
    torque = torch.linalg.cross(x, F, dim=-1).sum(1)
    np.testing.assert_allclose(torque.numpy(), 0.0, atol=1e-10 * scale)


def test_energy_rigid_and_periodic_invariance():
    flow = T.random_flow(n_atoms=7, seed=9)
    x = T.random_positions(flow, 4, seed=5)
    E = flow.energy(x).detach()
    R = T.random_rotation(4, torch.Generator().manual_seed(3))
    xr = x @ R.transpose(-1, -2) + torch.tensor([0.3, -2.0, 5.0], dtype=DT)
    atol = 1e-11 * E.abs().max().item()
    np.testing.assert_allclose(flow.energy(xr).detach().numpy(), E.numpy(), atol=atol)
    box = torch.tensor([[1.5, 0, 0], [0.4, 1.6, 0], [0.3, -0.5, 1.7]], dtype=DT)
    shifts = torch.randint(-1, 2, (4, 7, 3), generator=torch.Generator().manual_seed(0)).to(DT)
    xw = x + shifts @ box
    Ew, Fw = flow.energy_and_forces(xw, box)
    _, F = flow.energy_and_forces(x)
    np.testing.assert_allclose(Ew.numpy(), E.numpy(), atol=atol)
    np.testing.assert_allclose(Fw.numpy(), F.numpy(), atol=1e-9 * F.abs().max().item())


def test_force_matching_second_derivatives():
    """d/dw of a force loss (needs second derivatives through the inverse) vs finite differences."""
    flow = T.random_flow(n_atoms=5, n_layers=2, n_components=3, hidden=(6,),
                         directions="mixed", seed=6)
    x = T.random_positions(flow, 2, seed=2)
    target = torch.randn(x.shape, dtype=DT, generator=torch.Generator().manual_seed(0))
    params = [p for p in flow.parameters()]

    def loss():
        _, F = flow.energy_and_forces(x, create_graph=True)
        return ((F - target) ** 2).mean()

    grads = torch.autograd.grad(loss(), params)
    h = 1e-6
    g = torch.Generator().manual_seed(1)
    for p, gp in zip(params, grads):
        for _ in range(2):
            idx = tuple(torch.randint(0, s, (1,), generator=g).item() for s in p.shape)
            with torch.no_grad():
                old = p[idx].item()
                p[idx] = old + h
                lp = loss().item()
                p[idx] = old - h
                lm = loss().item()
                p[idx] = old
            fd = (lp - lm) / (2 * h)
            assert gp[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------ support policies
def _move_bond(flow, u0, d, value):
    u = u0.clone()
    u[:, d] = value
    return flow.to_cartesian(u)


def test_error_policy_names_the_coordinate():
    flow = T.random_flow(n_atoms=5, seed=1)
    u = T.random_u(flow, 3, seed=0)
    x = _move_bond(flow, u, 2, 1.2)
    a, j = flow.zmatrix[3, :2]
    with pytest.raises(ValueError, match=rf"bond {a}-{j} .*outside the flow's support"):
        flow.energy(x)
    x = _move_bond(flow, u, 0, -0.1)
    with pytest.raises(ValueError, match=r"bond .*row 1, dimension 0"):
        flow.energy_and_forces(x)
    xb = x.clone()
    xb[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        flow.energy(xb)
    x = flow.to_cartesian(u)
    Z = flow.zmatrix
    x[1, Z[2, 0]] = x[1, Z[2, 1]]      # zero-length bond
    with pytest.raises(ValueError, match="degenerate"):
        flow.energy(x)
    # collinear j, k, l of a torsion whose triangle is no Z-matrix angle
    star = [[0, -1, -1, -1], [1, 0, -1, -1], [2, 0, 1, -1], [3, 0, 1, 2], [4, 0, 1, 2],
            [5, 4, 0, 3]]
    flow = T.random_flow(zmatrix=star, seed=2, support={"policy": "wall"})
    x = flow.to_cartesian(T.random_u(flow, 2, seed=0))
    assert (x[:, 0] == 0).all()
    x[:, 4] = torch.tensor([0.0, 0.0, 0.15], dtype=DT)   # 3, 0, 4 exactly on the z axis
    x[:, 3] = torch.tensor([0.0, 0.0, -0.12], dtype=DT)
    with pytest.raises(ValueError, match=r"degenerate geometry, torsion 5-4-0-3"):
        flow.energy(x)


def test_wall_policy_matches_flow_inside_and_is_smooth_across_joins():
    m, k = 0.02, 500.0
    flow = T.random_flow(n_atoms=5, seed=4, directions="mixed",
                         support={"policy": "wall", "margin": m, "wall_constant": k})
    ref = T.random_flow(n_atoms=5, seed=4, directions="mixed")
    u0 = T.random_u(flow, 2, seed=1, margin=0.1)
    x = flow.to_cartesian(u0)
    np.testing.assert_allclose(flow.energy(x).detach().numpy(),
                               ref.energy(x).detach().numpy(), rtol=1e-14)
    assert flow.config()["support"] == {"policy": "wall", "margin": m, "wall_constant": k}
    # in the zone and beyond: the flow energy (Jacobian term included) at the clamped u,
    # plus (k/2) sum (u - c(u))^2
    u = u0.clone()
    u[0, 0], u[0, 5], u[1, 2], u[1, 4] = 1.3, 0.5 * m, -0.2, 1 - 1.5 * m
    x = flow.to_cartesian(u)
    ni = flow.n_interval
    c = torch.cat([wall_clamp(u[:, :ni], m), u[:, ni:]], -1)
    b, a, _ = zm.denormalize(c, flow.bond_lo, flow.bond_hi)
    expected = (-flow.kT * (ref.log_prob_u(c) - flow.log_scale() - zm.log_jacobian(b, a))
                + 0.5 * k * ((u - c) ** 2).sum(-1))
    np.testing.assert_allclose(flow.energy(x).detach().numpy(), expected.detach().numpy(),
                               rtol=1e-12)
    assert flow.wall_dims(x).tolist() == [2, 2]
    for d in (1, flow.n_atoms - 1 + 1):          # a bond and an angle
        for join in (2 * m, 1 - 2 * m):
            # value, first and second difference quotients continuous at the join
            def E(v):
                return flow.energy(_move_bond(flow, u0, d, v)).detach()
            for delta in (1e-5, 1e-4):
                lo, hi = E(join - delta), E(join + delta)
                c = E(join)
                assert (hi - lo).abs().max() < 50 * delta * (1 + c.abs().max())
                second = (hi - 2 * c + lo) / delta ** 2
                assert second.abs().max() < 1e6
        # forces = -grad inside the zone and beyond the support
        if d < flow.n_atoms - 1:
            for v in (-0.3, 0.5 * m, 3 * m, 1 - 0.5 * m, 1.4):
                x = _move_bond(flow, u0, d, v)
                _, F = flow.energy_and_forces(x)
                fd = _fd_forces(flow, x, coords=(0,))
                np.testing.assert_allclose(F[..., 0].numpy(), fd[..., 0].numpy(),
                                           rtol=1e-7, atol=1e-8 * F.abs().max().item())
    # beyond the support the wall grows quadratically
    E1 = flow.energy(_move_bond(flow, u0, 0, 1.3)).detach()
    E2 = flow.energy(_move_bond(flow, u0, 0, 1.6)).detach()
    assert (E2 > E1).all()
    assert flow.wall_dims(_move_bond(flow, u0, 0, 1.6)).tolist() == [1, 1]


def test_wall_clamp_definition():
    m = 0.01
    u = torch.tensor([-1.0, 0.0, 0.015, 0.02, 0.5, 0.98, 0.99, 1.5], dtype=DT, requires_grad=True)
    c = wall_clamp(u, m)
    np.testing.assert_allclose(c[[3, 4, 5]].detach().numpy(), [0.02, 0.5, 0.98])
    assert c[0].item() == pytest.approx(m + m * (1 + math.tanh(-1.02 / m)), abs=1e-17)
    assert c[2].item() == pytest.approx(m + m * (1 + math.tanh(-0.005 / m)), rel=1e-15)
    assert c[6].item() == pytest.approx(1 - (m + m * (1 + math.tanh(-0.01 / m))), rel=1e-15)
    assert ((c >= m) & (c <= 1 - m)).all() and m < c[1] < c[2] < c[3]
    (g,) = torch.autograd.grad(c.sum(), u, create_graph=True)
    assert g[3].item() == pytest.approx(1.0) and g[5].item() == pytest.approx(1.0)
    uu = torch.tensor([2 * m - 1e-9, 2 * m + 1e-9, 1 - 2 * m - 1e-9, 1 - 2 * m + 1e-9], dtype=DT,
                      requires_grad=True)
    (g1,) = torch.autograd.grad(wall_clamp(uu, m).sum(), uu, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), uu)
    np.testing.assert_allclose(g1.detach().numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(g2.numpy(), 0.0, atol=1e-3)     # c'' ~ 2 (1e-9/m) / m


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("directions", ["generative", "density"])
def test_sampling_log_prob_matches_energy(directions):
    flow = T.random_flow(n_atoms=6, seed=11, directions=directions, energy_offset=3.0)
    x, logq = flow.sample(32, generator=torch.Generator().manual_seed(0), return_log_prob=True)
    assert x.shape == (32, 6, 3)
    u = flow.internal_coordinates(x)
    interval = u[:, :flow.n_interval]
    assert ((interval >= -1e-12) & (interval <= 1 + 1e-12)).all()
    keep = ((interval > 1e-9) & (interval < 1 - 1e-9)).all(-1)
    E = flow.energy(x[keep]).detach()
    np.testing.assert_allclose(E.numpy(), (-flow.kT * logq[keep] + 3.0).detach().numpy(),
                               rtol=1e-9, atol=1e-8)


def test_chain_preset():
    """chain_flow's documented facts: a linear chain Z-matrix, bonds in [0.13, 0.18] nm, atoms
    C1..Cn of residue MOL, the requested architecture, weights fixed by the seed; and the energy
    it gives is the documented one of that chain (bond i = |x_{i+1} - x_i|, computed here)."""
    flow = T.chain_flow(6)
    config = flow.config()
    assert config["zmatrix"] == [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1],
                                 [3, 2, 1, 0], [4, 3, 2, 1], [5, 4, 3, 2]]
    assert flow.bond_lo.tolist() == [0.13] * 5 and flow.bond_hi.tolist() == [0.18] * 5
    assert flow.atoms == [{"name": f"C{i}", "residue": "MOL", "residue_index": 0, "element": "C"}
                          for i in range(1, 7)]
    assert [(L["n_components"], L["hidden"], L["activation"]) for L in config["layers"]] == \
        [(4, [16, 16], "silu")] * 4
    # the seed fixes the weights: equal for equal seeds, different otherwise
    same, other = T.chain_flow(6, seed=0).state_dict(), T.chain_flow(6, seed=1).state_dict()
    weights = [k for k in same if k.startswith("layers.")]
    assert all(torch.equal(flow.state_dict()[k], same[k]) for k in weights)
    assert not any(torch.equal(same[k], other[k]) for k in weights)
    # the chain's bond lengths, by numpy, are what the flow normalizes with [0.13, 0.18]
    x = T.random_positions(flow, 2, seed=0)
    xn = x.numpy()
    bonds = np.linalg.norm(xn[:, 1:] - xn[:, :-1], axis=-1)
    np.testing.assert_allclose(flow.internal_coordinates(x)[:, :5].numpy(),
                               (bonds - 0.13) / 0.05, rtol=1e-12)
    np.testing.assert_allclose(flow.energy(x).detach().numpy(),
                               _reference_energy(flow, x).detach().numpy(), rtol=1e-13)


def test_float32_flow():
    flow = T.random_flow(n_atoms=5, seed=12, directions="mixed")
    x = T.random_positions(flow, 3, seed=0)
    E64 = flow.energy(x).detach()
    f32 = flow.to(torch.float32)
    E32, F32 = f32.energy_and_forces(x.float())
    assert E32.dtype == torch.float32 and F32.dtype == torch.float32
    np.testing.assert_allclose(E32.numpy(), E64.numpy(), rtol=1e-4, atol=1e-3)
    z = torch.rand(8, flow.n_dims, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        u, ld = f32(z)
        z2, ld2 = f32(u, inverse=True)
    d = (z2 - z).abs()
    d = torch.where(torch.tensor(flow.circular), torch.minimum(d, 1 - d), d)
    assert d.max() < 1e-4
