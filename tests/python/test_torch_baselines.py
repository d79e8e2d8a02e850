"""Tests of the baseline transforms, spline and affine (docs/model-format.md section 7)."""

import json
import math

import numpy as np
import pytest
import torch

from smoothflow_torch import (ModelFormatError, SmoothFlow, load_model_bytes,
                              model_to_bytes)
from smoothflow_torch import testing as T
from smoothflow_torch import transforms as tf

torch.set_num_threads(1)
DT = torch.float64
SC = tf.SplineConstants()
AC = tf.AffineConstants()


def spline_raw(n, K, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3 * K + 2, generator=g, dtype=DT) * scale


def circle_distance(a, b):
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1.0 - d)


# ------------------------------------------------------------------ spline: parameters
def test_spline_parameter_mapping():
    K = 3
    raw = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, -0.7, 40.0, -2.0, 0.1, 3.0, 0.25], dtype=DT)
    for circ in (False, True):
        p = tf.spline_parameters(raw, K, SC, circ)
        e = np.exp([0.5, -1.0, 2.0])
        W = 1e-3 + (1 - 3e-3) * e / e.sum()
        np.testing.assert_allclose(p.widths.numpy(), W, rtol=1e-15)
        e = np.exp([0.0, 0.3, -0.7])
        np.testing.assert_allclose(p.heights.numpy(), 1e-3 + (1 - 3e-3) * e / e.sum(), rtol=1e-15)
        assert p.xknots[0].item() == 0.0 and p.xknots[-1].item() == 1.0
        assert p.yknots[0].item() == 0.0 and p.yknots[-1].item() == 1.0
        np.testing.assert_allclose(p.xknots[1:3].numpy(), np.cumsum(W)[:2], rtol=1e-15)
        # exact softplus: 40 + log1p(e^-40), not F.softplus's threshold value 40
        assert p.derivatives[0].item() == 1e-3 + 40.0 + math.log1p(math.exp(-40.0))
        assert p.derivatives[1].item() == pytest.approx(1e-3 + math.log1p(math.exp(-2.0)),
                                                        rel=1e-15)
        last = p.derivatives[0] if circ else 1e-3 + math.log1p(math.exp(3.0))
        assert p.derivatives[3].item() == pytest.approx(float(last), rel=1e-15)
        assert p.t.item() == 0.25
    with pytest.raises(ValueError, match="min_bin_width"):
        tf.spline_parameters(torch.zeros(3 * 5 + 2, dtype=DT), 5,
                             tf.SplineConstants(min_bin_width=0.2))
    with pytest.raises(ValueError, match="3K|11"):
        tf.spline_parameters(torch.zeros(12, dtype=DT), 3, SC)


def test_zero_raw_parameters():
    """What a zero-initialized conditioner gives (documented in docs/pytorch.md)."""
    x = torch.linspace(0, 1, 20001, dtype=DT)
    for K in (1, 4, 8):
        p = tf.spline_parameters(torch.zeros(3 * K + 2, dtype=DT), K, SC)
        # equal bins, slope 1 chords, knot slopes m_d + log 2 < 1: not the identity
        np.testing.assert_allclose(p.widths.numpy(), 1.0 / K, rtol=1e-15)
        np.testing.assert_allclose(p.derivatives.numpy(), 1e-3 + math.log(2.0), rtol=1e-15)
        S, logd = tf.rq_spline(x, p)
        np.testing.assert_allclose(tf.rq_spline(p.xknots, p)[0].numpy(), p.xknots.numpy(),
                                   atol=1e-15)
        dev = (S - x).abs().max().item()
        assert 0.0328 / K < dev < 0.0329 / K
        assert logd.exp().min().item() == pytest.approx(1e-3 + math.log(2.0), rel=1e-12)
    s, t = tf.affine_parameters(torch.zeros(2, dtype=DT), AC)
    y, logd = tf.affine_forward(x[1:-1], s, t)
    assert (y - x[1:-1]).abs().max().item() <= 2.3e-16      # the identity
    assert logd.abs().max().item() < 2e-15
    # zero-initialized flows: affine is the identity, spline a fixed near-identity map
    Z = T.chain_zmatrix(5)
    u = T.random_u(SmoothFlow(Z, [0.1] * 4, [0.2] * 4, []), 5, seed=1)
    for kind in ("affine", "spline"):
        flow = SmoothFlow(Z, [0.1] * 4, [0.2] * 4,
                          [{"transform": kind, "transformed": [0, 2, 5, 7, 8], "n_components": 4,
                            "hidden": [4]}])
        lp = flow.log_prob_u(u).detach()
        if kind == "affine":
            assert lp.abs().max().item() < 1e-14
            assert (flow(u)[0] - u).abs().max().item() < 1e-15
        else:
            # generative layer, u = S(z): log p_U(u) = -sum_d log S'(S^-1(u_d)) with the
            # zero-parameter spline of 4 equal bins (s = 1, knot slopes delta), by its
            # closed form (docs/model-format.md 7.1) and bisection, in numpy
            delta = 1e-3 + math.log(2.0)

            def S(v):
                k = np.minimum(np.floor(v * 4), 3)
                xi = v * 4 - k
                q = xi * (1 - xi)
                y = (k + (xi ** 2 + delta * q) / (1 + (2 * delta - 2) * q)) / 4
                dy = (delta * xi ** 2 + 2 * q + delta * (1 - xi) ** 2) / (1 + (2 * delta - 2) * q) ** 2
                return y, dy

            ud = u[:, [0, 2, 5, 7, 8]].numpy()
            lo, hi = np.zeros_like(ud), np.ones_like(ud)
            for _ in range(60):
                mid = (lo + hi) / 2
                below = S(mid)[0] < ud
                lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            want = -np.log(S((lo + hi) / 2)[1]).sum(-1)
            assert np.abs(want).min() > 1e-3
            np.testing.assert_allclose(lp.numpy(), want, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ spline: transform
def _spline_points(p, n_random, seed):
    """Uniform points, both ends, and points within a few ulps of every interior knot."""
    g = torch.Generator().manual_seed(seed)
    B = p.t.shape[0]
    xs = [torch.rand(B, n_random, generator=g, dtype=DT),
          torch.tensor([0.0, 1.0, 1e-300, 1e-17, 1 - 2 ** -53, 1e-12, 1 - 1e-12],
                       dtype=DT).expand(B, 7)]
    kn = p.xknots[:, 1:-1]
    for off in (-1e-15, -2 ** -60, 0.0, 2 ** -60, 1e-15, 1e-9):
        xs.append(kn + off)
    return torch.cat(xs, dim=1).clamp(0.0, 1.0)


@pytest.mark.parametrize("circular", [False, True])
def test_spline_round_trip(circular):
    K = 6
    raw = spline_raw(40, K, seed=1)
    raw[:, -1] *= 5.0                    # large circular shifts
    p = tf.spline_parameters(raw, K, SC, circular)
    x = _spline_points(p, 100, seed=2)
    pb = tf.SplineParameters(*(v.unsqueeze(1) for v in p))
    y, ld = tf.spline_forward(x, pb, circular)
    assert ((y >= 0) & (y <= 1)).all()
    if circular:
        assert (y < 1).any()
    x2, ld2 = tf.spline_inverse(y, pb, circular)
    err = circle_distance(x2, x) if circular else (x2 - x).abs()
    assert err.max().item() < 1e-12
    assert (ld + ld2).abs().max().item() < 1e-10
    # the other way round, near the y knots too
    yk = p.yknots[:, 1:-1]
    t = p.t[:, None] if circular else 0.0
    y0 = torch.cat([x, (yk + t) % 1.0, (yk + 1e-15 + t) % 1.0, (yk - 1e-15 + t) % 1.0], 1)
    x3, _ = tf.spline_inverse(y0, pb, circular)
    y3, _ = tf.spline_forward(x3, pb, circular)
    err = circle_distance(y3, y0) if circular else (y3 - y0).abs()
    assert err.max().item() < 1e-12


def test_spline_circle_wrap_and_end_derivatives():
    K = 5
    raw = spline_raw(20, K, seed=3)
    raw[:, 3 * K] = raw[:, 2 * K] + 1.0      # d~_K != d~_0: ignored on the circle
    pc = tf.spline_parameters(raw, K, SC, True)
    pi = tf.spline_parameters(raw, K, SC, False)
    ends = torch.tensor([0.0, 1.0], dtype=DT).expand(20, 2)
    pb = tf.SplineParameters(*(v.unsqueeze(1) for v in pc))
    y, ld = tf.spline_forward(ends, pb, True)
    assert circle_distance(y[:, 0], y[:, 1]).max().item() < 1e-15
    assert circle_distance(y[:, 0], pc.t).max().item() < 1e-15
    # delta_K = delta_0: the slopes match at the ends, so T is C1 on the circle (at x = 1,
    # xi = (1 - x_{K-1}) / W_{K-1} is 1 only to rounding: the knots are sums of the W)
    np.testing.assert_allclose(ld[:, 0].numpy(), ld[:, 1].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ld[:, 0].exp().numpy(), pc.derivatives[:, 0].numpy(), rtol=1e-14)
    assert torch.equal(pc.derivatives[:, K], pc.derivatives[:, 0])
    _, ldi = tf.spline_forward(ends, tf.SplineParameters(*(v.unsqueeze(1) for v in pi)), False)
    np.testing.assert_allclose(ldi[:, 1].exp().numpy(), pi.derivatives[:, K].numpy(), rtol=1e-12)
    assert (pi.derivatives[:, K] != pi.derivatives[:, 0]).all()
    # continuity across the cut: T(1 - h) and T(h) are 2 h S'(0) apart on the circle
    h = 1e-7
    near = torch.tensor([1 - h, h], dtype=DT).expand(20, 2)
    yn, _ = tf.spline_forward(near, pb, True)
    gap = (yn[:, 1] - yn[:, 0]) % 1.0
    np.testing.assert_allclose(gap.numpy(), 2 * h * pc.derivatives[:, 0].numpy(), rtol=1e-4)


def test_spline_derivative_and_log_det():
    K = 7
    raw = spline_raw(30, K, seed=4, scale=1.5)
    circ = torch.arange(30) % 2 == 0
    p = tf.spline_parameters(raw, K, SC, circ)
    pb = tf.SplineParameters(*(v.unsqueeze(1) for v in p))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(30, 50, generator=g, dtype=DT) * 0.998 + 0.001
    # S' vs central differences, away from the knots (S is only C1 there)
    h = 1e-6
    gap = (x[..., None] - p.xknots[:, None, :]).abs().min(-1).values
    far = gap > 1e-4
    S = lambda v: tf.rq_spline(v, pb)[0]
    fd = (S(x + h) - S(x - h)) / (2 * h)
    _, logd = tf.rq_spline(x, pb)
    np.testing.assert_allclose(fd[far].numpy(), logd.exp()[far].numpy(), rtol=1e-6)
    # log det vs autograd, forwards and backwards, with the circular shift
    xr = x.clone().requires_grad_(True)
    y, ld = tf.spline_forward(xr, pb, circ[:, None])
    (gy,) = torch.autograd.grad(y.sum(), xr)
    np.testing.assert_allclose(ld.detach().numpy(), gy.log().numpy(), rtol=0, atol=1e-12)
    yr = y.detach().clone().requires_grad_(True)
    xb, ldb = tf.spline_inverse(yr, pb, circ[:, None])
    (gx,) = torch.autograd.grad(xb.sum(), yr)
    np.testing.assert_allclose(ldb.detach().numpy(), gx.log().numpy(), rtol=0, atol=1e-12)


def test_spline_is_c1_but_not_c2_at_knots():
    K = 4
    raw = spline_raw(1, K, seed=6, scale=1.5)
    p = tf.spline_parameters(raw[0], K, SC)
    S = lambda v: tf.rq_spline(v, p)[0]
    dS = lambda v: tf.rq_spline(v, p)[1].exp()
    h = 1e-5

    def q(v):    # second difference quotient
        return (S(v + h) - 2 * S(v) + S(v - h)) / h ** 2

    jumps = []
    for k in range(1, K):
        xk = p.xknots[k]
        # C1: the slope is continuous across the knot
        left, right = dS(xk - 1e-12), dS(xk + 1e-12)
        assert abs((left - right).item()) < 1e-9
        # not C2: the second difference quotient jumps (S'' of both sides)
        ql, qr = q(xk - 2 * h), q(xk + 2 * h)
        jumps.append(abs((qr - ql).item()))
        # and it is what autograd's S'' gives on each side
        for v, qv in ((xk - 2 * h, ql), (xk + 2 * h, qr)):
            vr = v.clone().requires_grad_(True)
            (d1,) = torch.autograd.grad(S(vr), vr, create_graph=True)
            (d2,) = torch.autograd.grad(d1, vr)
            assert qv.item() == pytest.approx(d2.item(), rel=1e-3, abs=1e-3)
        # across a point inside a bin it does not jump
        mid = xk + 0.5 * p.widths[k]
        assert abs((q(mid + 2 * h) - q(mid - 2 * h)).item()) < 0.1 * jumps[-1]
    assert min(jumps) > 0.1


def test_spline_second_derivatives_gradgradcheck():
    K = 3
    raw = spline_raw(4, K, seed=8).requires_grad_(True)
    circ = torch.tensor([False, True, False, True])
    x = torch.tensor([0.13, 0.52, 0.77, 0.91], dtype=DT, requires_grad=True)

    def fwd(x, raw):
        p = tf.spline_parameters(raw, K, SC, circ)
        return tf.spline_forward(x, p, circ)

    def inv(y, raw):
        p = tf.spline_parameters(raw, K, SC, circ)
        return tf.spline_inverse(y, p, circ)

    assert torch.autograd.gradcheck(fwd, (x, raw))
    assert torch.autograd.gradgradcheck(fwd, (x, raw))
    assert torch.autograd.gradcheck(inv, (x, raw))
    assert torch.autograd.gradgradcheck(inv, (x, raw))


# ------------------------------------------------------------------ affine
def test_affine_transform():
    g = torch.Generator().manual_seed(9)
    n = 400
    raw = torch.randn(n, 2, generator=g, dtype=DT) * 2.0
    raw[:5, 0] = torch.tensor([50.0, -50.0, 0.0, 3.0, -3.0])
    s, t = tf.affine_parameters(raw, AC)
    np.testing.assert_allclose(s.numpy(), 3.0 * np.tanh(raw[:, 0].numpy() / 3.0), rtol=1e-15)
    assert s.abs().max().item() < 3.0 and torch.equal(t, raw[:, 1])
    x = torch.rand(n, generator=g, dtype=DT) * 0.98 + 0.01
    xr = x.clone().requires_grad_(True)
    y, ld = tf.affine_forward(xr, s, t)
    # the documented formula
    logit = lambda v: torch.log(v) - torch.log1p(-v)
    np.testing.assert_allclose(y.detach().numpy(),
                               torch.sigmoid(s.exp() * logit(x) + t).numpy(), rtol=1e-14)
    ref = s + torch.log(y * (1 - y)) - torch.log(x * (1 - x))
    ok = (1 - y.detach()) > 1e-6         # the naive form cancels where y rounds towards 1
    assert ok.sum() > 300
    np.testing.assert_allclose(ld.detach()[ok].numpy(), ref.detach()[ok].numpy(), rtol=0,
                               atol=1e-9)
    (gy,) = torch.autograd.grad(y.sum(), xr)
    np.testing.assert_allclose(ld.detach().numpy(), gy.log().numpy(), rtol=0, atol=1e-12)
    # round trip and the inverse's log det
    # (y near 1 holds only its absolute precision: the error in x is that over T')
    yr = y.detach().clone().requires_grad_(True)
    x2, ld2 = tf.affine_inverse(yr, s, t)
    inside = y.detach() < 1
    assert inside.sum() > 390
    err = (x2 - x).abs().detach()
    bound = 1e-15 + 2.0 ** -49 / ld.detach().exp()     # a few ulps of y, over T'
    assert (err <= bound)[inside].all()
    moderate = inside & (bound < 1e-13)
    assert moderate.sum() > 300 and err[moderate].max().item() < 1e-12
    np.testing.assert_allclose((ld + ld2).detach()[moderate].numpy(), 0.0, atol=1e-11)
    (gx,) = torch.autograd.grad(x2.sum(), yr)
    np.testing.assert_allclose(ld2.detach().numpy(), gx.log().numpy(), rtol=0, atol=1e-12)
    # log(T(1 - T)) without cancellation far in the tails
    xv, e = 1.0 - 2.0 ** -14, 2.0 ** -14         # 1 - xv exact
    y, ld = tf.affine_forward(torch.tensor([xv], dtype=DT), torch.tensor([3.0], dtype=DT),
                              torch.tensor([10.0], dtype=DT))
    v = math.exp(3.0) * (math.log(xv) - math.log(e)) + 10.0
    assert y.item() == 1.0 and v > 200
    assert ld.item() == pytest.approx(3.0 - v - math.log(xv) - math.log(e), rel=1e-14)
    # the faces are outside the support
    faces = torch.tensor([0.0, 1.0], dtype=DT)
    st = torch.tensor([0.5, -0.5], dtype=DT)
    for fn in (tf.affine_forward, tf.affine_inverse):
        y, ld = fn(faces, st, st)
        assert y.tolist() == [0.0, 1.0] and ld.tolist() == [-math.inf, -math.inf]
        assert fn(faces, st, st, face_logdet=math.inf)[1].tolist() == [math.inf, math.inf]


def test_affine_faces_give_infinite_energy_and_inside_is_finite():
    flow = T.random_flow(n_atoms=5, n_layers=2, n_components=1, hidden=(6,), seed=3,
                         transform="affine", directions="mixed")
    u = T.random_u(flow, 3, seed=1)
    assert torch.isfinite(flow.log_prob_u(u)).all()
    for d, value in ((0, 0.0), (4, 1.0), (flow.n_dims - 1, 0.0)):
        uf = u.clone()
        uf[:, d] = value
        assert (flow.log_prob_u(uf) == -math.inf).all()
        # sampling pass: a latent on a face has zero density too
        zf = u.clone()
        zf[:, d] = value
        _, ld = flow(zf)
        assert (ld == math.inf).all()
    # energy path: a bond exactly at its lower bound (u = 0) is inside the 'error'
    # policy's [0, 1] but outside the affine support: U = +inf, no exception
    x = T.random_positions(flow, 2, seed=4)
    E, F = flow.energy_and_forces(x)
    assert torch.isfinite(E).all() and torch.isfinite(F).all()
    b, _, _ = flow.internal(x)
    with torch.no_grad():
        flow.bond_lo[0] = b[0, 0]
        flow.bond_hi[0] = b[0, 0] + 0.05
    E = flow.energy(x).detach()
    assert E[0].item() == math.inf and math.isfinite(E[1].item())


# ------------------------------------------------------------------ flows
def _gauss_panels(breaks, n_sub=8, n_nodes=32):
    """Gauss-Legendre nodes and weights on [breaks[0], breaks[-1]], each panel split in n_sub."""
    xg, wg = np.polynomial.legendre.leggauss(n_nodes)
    edges = np.unique(np.concatenate([np.linspace(a, b, n_sub + 1)
                                      for a, b in zip(breaks[:-1], breaks[1:])]))
    lo, hi = edges[:-1, None], edges[1:, None]
    nodes = (lo + hi) / 2 + (hi - lo) / 2 * xg
    return torch.tensor(nodes.ravel()), torch.tensor(((hi - lo) / 2 * wg).ravel())


@pytest.mark.parametrize("kind", ["smooth", "spline", "affine"])
def test_density_of_one_layer_integrates_to_one(kind):
    """int p_U du_d = 1 over the transformed dimension d, for fixed conditioning values.

    Spline: Gauss-Legendre on panels between the knots (in u: the x knots, and the y knots
    shifted by t), where the density is smooth. Affine: in v = logit(u), over
    [-25, 25], against the exact mass of that range, z_d(u_b) - z_d(u_a) (u in [0, 1]
    cannot resolve the far tails near u = 1).
    """
    for direction in ("generative", "density"):
        for d in (1, 5):                                  # a bond and the torsion
            flow = T.randomize_weights(SmoothFlow(
                T.chain_zmatrix(4), [0.1] * 3, [0.2] * 3,
                [{"transform": kind, "direction": direction, "transformed": [d],
                  "conditioning": [i for i in range(6) if i != d], "n_components": 5,
                  "hidden": [6]}], smooth={"alpha_min": 2.0, "s_min": 0.3}), seed=d)
            layer = flow.layers[0]
            for c in T.random_u(flow, 3, seed=d):
                expected = 1.0
                if kind == "affine":
                    v, w = _gauss_panels(np.linspace(-25.0, 25.0, 11))
                    ud = torch.sigmoid(v)
                    w = w * torch.sigmoid(v) * torch.sigmoid(-v)
                    ends = c.expand(2, -1).clone()
                    ends[:, d] = torch.sigmoid(torch.tensor([-25.0, 25.0], dtype=DT))
                    zc = flow(ends, inverse=True)[0][:, d].detach()
                    expected = (zc[1] - zc[0]).item()
                    assert expected > 0.999
                elif kind == "spline":
                    p = layer.transformer.parameters_from_raw(layer.raw_parameters(c[None]))
                    t = p.t[0, 0] if d == 5 else 0.0
                    breaks = torch.cat([p.xknots[0, 0], (p.yknots[0, 0] + t) % 1.0,
                                        torch.tensor([0.0, 1.0], dtype=DT)])
                    ud, w = _gauss_panels(np.unique(breaks.detach().numpy()), 32, 64)
                else:
                    ud, w = _gauss_panels(np.linspace(0.0, 1.0, 17))
                u = c.expand(ud.shape[0], -1).clone()
                u[:, d] = ud
                with torch.no_grad():
                    p = flow.log_prob_u(u).exp()
                total = float((w * p).sum())
                assert abs(total - expected) < 1e-10, (direction, d, total, expected)
                assert (p.max() / p.min()).item() > 1.5          # far from uniform


def _fd_forces(flow, x, h=1e-5):
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(flow.n_atoms):
            for c in range(3):
                e = torch.zeros_like(x)
                e[:, i, c] = h
                E = lambda k: flow.energy(x + k * e)
                fd[:, i, c] = -(E(-2) - 8 * E(-1) + 8 * E(1) - E(2)) / (12 * h)
    return fd


@pytest.mark.parametrize("kind", ["spline", "affine"])
def test_energy_and_forces_vs_finite_differences(kind):
    flow = T.random_flow(n_atoms=6, n_layers=4, n_components=5, hidden=(8,), seed=11,
                         directions="mixed", transform=kind)
    x = T.random_positions(flow, 3, seed=5)
    E, F = flow.energy_and_forces(x)
    assert torch.isfinite(E).all()
    fd = _fd_forces(flow, x)
    scale = F.abs().max().item()
    assert scale > 10.0
    np.testing.assert_allclose(F.numpy(), fd.numpy(), rtol=0, atol=1e-6 * scale)
    # net force and torque vanish
    assert F.sum(1).abs().max().item() < 1e-9 * scale
    torque = torch.cross(x, F, dim=-1).sum(1)
    assert torque.abs().max().item() < 1e-9 * scale


@pytest.mark.parametrize("kind", ["spline", "affine"])
def test_force_matching_double_backward(kind):
    """d/dw of a force loss (second derivatives through the closed-form inverses) vs FD."""
    flow = T.random_flow(n_atoms=5, n_layers=2, n_components=3, hidden=(6,),
                         directions="mixed", seed=6, transform=kind)
    x = T.random_positions(flow, 2, seed=2)
    target = torch.randn(x.shape, dtype=DT, generator=torch.Generator().manual_seed(0))
    params = list(flow.parameters())

    def loss():
        _, F = flow.energy_and_forces(x, create_graph=True)
        return ((F - target) ** 2).mean()

    grads = torch.autograd.grad(loss(), params)
    assert all(torch.isfinite(gp).all() for gp in grads)
    # a random direction in weight space
    g = torch.Generator().manual_seed(1)
    dirs = [torch.randn(p.shape, generator=g, dtype=DT) for p in params]
    h = 1e-6
    with torch.no_grad():
        for p, v in zip(params, dirs):
            p.add_(h * v)
        lp = loss().item()
        for p, v in zip(params, dirs):
            p.sub_(2 * h * v)
        lm = loss().item()
        for p, v in zip(params, dirs):
            p.add_(h * v)
    fd = (lp - lm) / (2 * h)
    an = sum((gp * v).sum() for gp, v in zip(grads, dirs)).item()
    assert an == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("kind", ["smooth", "spline", "affine"])
def test_export_load_round_trip(kind):
    consts = {"spline": {"min_bin_width": 2e-3, "min_bin_height": 5e-4, "min_derivative": 1e-2},
              "affine": {"scale_max": 2.5}}
    flow = T.random_flow(n_atoms=6, n_layers=3, n_components=[2, 3, 4], hidden=(7,),
                         directions="mixed", seed=21, transform=kind,
                         spline=consts["spline"], affine=consts["affine"])
    data = model_to_bytes(flow)
    loaded = load_model_bytes(data)
    config = flow.config()
    assert loaded.config() == config
    # only the constants of the kinds used are written
    for k in ("smooth", "spline", "affine"):
        assert (k in config) == (k == kind)
    if kind != "smooth":
        assert config[kind] == consts[kind]
        assert getattr(loaded, kind).to_dict() == consts[kind]
    for l, L in enumerate(config["layers"]):
        assert L["transform"] == kind
        P = tf.params_per_dim(kind, L["n_components"])
        assert flow.state_dict()[f"layers.{l}.net.1.bias"].shape == (len(L["transformed"]) * P,)
    x = T.random_positions(flow, 3, seed=3)
    E0, F0 = flow.energy_and_forces(x)
    E1, F1 = loaded.energy_and_forces(x)
    assert torch.equal(E0, E1) and torch.equal(F0, F1)
    z = torch.rand(4, flow.n_dims, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flow(z)[0], loaded(z)[0])


def _file(config, tensors):
    from safetensors.numpy import save as np_save
    return np_save(tensors, metadata={"format": "openmm-smoothflow", "format_version": "1",
                                      "config": json.dumps(config)})


def test_baseline_config_validation():
    flow = T.random_flow(n_atoms=5, n_layers=2, n_components=4, hidden=(5,), seed=2,
                         transform=["spline", "affine"])
    config = flow.config()
    tensors = {k: v.detach().numpy().copy() for k, v in flow.state_dict().items()}
    assert load_model_bytes(_file(config, tensors)).config() == config
    # the constants are optional, with the documented defaults
    bare = {k: v for k, v in config.items() if k not in ("spline", "affine")}
    bare["layers"] = [dict(L) for L in config["layers"]]
    del bare["layers"][1]["n_components"]            # ignored by affine
    loaded = load_model_bytes(_file(bare, tensors))
    assert loaded.spline == tf.SplineConstants() and loaded.affine == tf.AffineConstants()

    def rejects(cfg, pattern, t=tensors):
        with pytest.raises(ModelFormatError, match=pattern):
            load_model_bytes(_file(cfg, t))

    rejects(dict(config, spline={"min_bin_width": 0.25}), "K \\* spline.min_bin_width")
    rejects(dict(config, spline={"min_derivative": 0.0}), "min_derivative")
    rejects(dict(config, affine={"scale_max": -1.0}), "scale_max")
    layers = [dict(config["layers"][0], transform="cubic")] + config["layers"][1:]
    rejects(dict(config, layers=layers), "'cubic'")
    # a spline block has 3K + 2 raw values: a smooth-sized last map is refused
    layers = [dict(config["layers"][0], transform="smooth")] + config["layers"][1:]
    rejects(dict(config, layers=layers, smooth=flow.smooth.to_dict()), "shape")


def test_flow_mixing_kinds():
    kinds = ["smooth", "spline", "affine", "spline", "smooth", "affine"]
    flow = T.random_flow(n_atoms=6, n_layers=6, n_components=[3, 4, 1, 2, 2, 1], hidden=(8,),
                         directions="mixed", seed=13, transform=kinds)
    assert [L.transform for L in flow.layers] == kinds
    assert all(L.net[-1].weight.abs().sum() > 0 for L in flow.layers)
    assert set(k for k in ("smooth", "spline", "affine") if k in flow.config()) == set(kinds)
    # generative and density passes invert each other, log dets cancel
    z = torch.rand(50, flow.n_dims, dtype=DT, generator=torch.Generator().manual_seed(2))
    z = 0.01 + 0.98 * z
    u, ld = flow(z)
    z2, ld2 = flow(u, inverse=True)
    assert (z2 - z).abs().max().item() < 1e-10
    assert (ld + ld2).abs().max().item() < 1e-8
    # log det of the whole flow is the Jacobian's
    J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[0])
    assert torch.linalg.slogdet(J)[1].item() == pytest.approx(ld[0].item(), abs=1e-9)
    # sampled configurations: log q of the sampler is -(U - U0)/kT of the energy
    x, lq = flow.sample(4, generator=torch.Generator().manual_seed(3), return_log_prob=True)
    np.testing.assert_allclose(flow.log_prob(x).detach().numpy(), lq.detach().numpy(),
                               rtol=1e-9, atol=1e-8)
    # export and load
    loaded = load_model_bytes(model_to_bytes(flow))
    assert loaded.config() == flow.config()
    xp = T.random_positions(flow, 2, seed=1)
    assert torch.equal(loaded.energy(xp), flow.energy(xp))


def test_random_flow_transform_argument():
    flow = T.random_flow(n_atoms=5, n_layers=3, seed=1, transform="spline")
    assert [L.transform for L in flow.layers] == ["spline"] * 3
    flow = T.random_flow(n_atoms=5, n_layers=2, seed=1, transform=["affine", "smooth"])
    assert [L.transform for L in flow.layers] == ["affine", "smooth"]
    assert isinstance(flow.layers[0].transformer, tf.AffineTransformer)
    assert flow.layers[0].net[-1].out_features == 2 * len(flow.layers[0].transformed)
    with pytest.raises(ValueError, match="one entry per layer"):
        T.random_flow(n_atoms=5, n_layers=3, transform=["spline", "affine"])
    with pytest.raises(ValueError, match="unknown transform"):
        T.random_flow(n_atoms=5, n_layers=1, transform="cubic")
