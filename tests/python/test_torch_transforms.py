"""Tests of the smooth mixture transform (docs/flow-math.md sections 4 and 5)."""

import math

import numpy as np
import pytest
import torch

from smoothflow_torch import transforms as tf
from smoothflow_torch.conditioner import MLPConditioner, activation_function, encode

torch.set_num_threads(1)
DT = torch.float64
C = tf.SmoothConstants()


def raw_block(K, w=None, b=None, s=None, a=None, c=0.0, t=0.0):
    """A raw parameter vector (4K + 2) from per-group values."""
    z = np.zeros(K)
    parts = [z if v is None else np.broadcast_to(np.asarray(v, float), (K,))
             for v in (w, b, s, a)]
    return torch.tensor(np.concatenate(parts + [[c], [t]]), dtype=DT)


def random_raw(n, K, seed, steep=False):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, 4 * K + 2, generator=g, dtype=DT) * 1.5
    if steep:
        raw[:, 2 * K:3 * K] -= 4.0      # narrow windows, s -> s_min
        raw[:, 3 * K:4 * K] = 6.0 * torch.randn(n, K, generator=g, dtype=DT)  # very sharp and very flat
        raw[:, 4 * K] += 3.0            # strong non-linear part
    return raw


# ------------------------------------------------------------------ parameters
def test_parameter_mapping_and_exact_softplus():
    K = 2
    raw = torch.tensor([0.3, -1.2, 2.0, -0.5, -3.0, 0.7, 40.0, -30.0, 1.5, 0.25], dtype=DT)
    p = tf.smooth_parameters(raw, K, C)
    e = np.exp([0.3, -1.2])
    np.testing.assert_allclose(p.w.numpy(), e / e.sum(), rtol=1e-15)
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))
    np.testing.assert_allclose(p.b.numpy(), [sig(2.0), sig(-0.5)], rtol=1e-15)
    np.testing.assert_allclose(p.s.numpy(), [0.01 + 0.99 * sig(-3.0), 0.01 + 0.99 * sig(0.7)],
                               rtol=1e-15)
    # softplus(40) = 40 + log1p(e^-40) exactly; torch's F.softplus would return 40
    assert p.alpha[0].item() == 0.1 + 40.0 + math.log1p(math.exp(-40.0))
    assert abs(p.alpha[1].item() - (0.1 + math.log1p(math.exp(-30.0)))) < 1e-17
    assert p.c.item() == pytest.approx(0.99 * sig(1.5), rel=1e-15)
    assert p.t.item() == 0.25
    x = torch.tensor([25.0, 30.0, -40.0], dtype=DT)
    assert torch.equal(tf.exact_softplus(x), torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0))
    assert not torch.equal(tf.exact_softplus(x), torch.nn.functional.softplus(x))
    assert torch.equal(activation_function("softplus")(x), tf.exact_softplus(x))


def test_constants_validation():
    with pytest.raises(ValueError, match="s_min"):
        tf.SmoothConstants(s_min=1.0)
    with pytest.raises(ValueError, match="c_max"):
        tf.SmoothConstants(c_max=0.0)
    with pytest.raises(ValueError, match="beta"):
        tf.SmoothConstants(beta=1.5)
    with pytest.raises(ValueError, match="alpha_min"):
        tf.SmoothConstants(alpha_min=0.0)


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("beta", [1, 2, 3])
def test_step_formula_and_saturation(beta):
    alpha = torch.tensor(0.7, dtype=DT)
    h = torch.tensor([-0.5, 0.0, 1e-300, 1e-3, 0.2, 0.5, 0.8, 1 - 1e-3, 1.0, 1.7], dtype=DT)
    s0, s1, s2 = tf.smooth_step(h, alpha, beta, order=2)
    rho = lambda v: math.exp(-0.7 / v ** beta) if v ** beta > 0 else 0.0
    for i, v in enumerate(h.tolist()):
        ref = rho(v) / (rho(v) + rho(1 - v)) if 0 < v < 1 else float(v >= 1)
        assert s0[i].item() == pytest.approx(ref, rel=1e-13, abs=1e-300)
    assert s0[0] == 0 and s0[1] == 0 and s0[2] == 0 and s0[8] == 1 and s0[9] == 1
    assert (s1[[0, 1, 2, 8, 9]] == 0).all() and (s2[[0, 1, 2, 8, 9]] == 0).all()
    assert s0[5].item() == pytest.approx(0.5, abs=1e-16)
    # derivatives against autograd of the value
    hh = h[3:8].clone().requires_grad_(True)
    v0 = tf.smooth_step(hh, alpha, beta, order=0)[0]
    (g1,) = torch.autograd.grad(v0.sum(), hh, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), hh)
    np.testing.assert_allclose(g1.detach().numpy(), s1[3:8].numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(g2.numpy(), s2[3:8].numpy(), rtol=1e-11, atol=1e-300)


def test_gradients_where_saturated_are_the_closed_form():
    """Sharp, saturated components (alpha up to 1e4, |L| > 700) give the documented derivatives,
    not NaN from inf * 0: the windows lie in (0.04, 0.06), (0.49, 0.51), (0.94, 0.96), so at
    x = 0, 1e-300, 1e-12, 0.3, 1 - 1e-16, 1 every step is exactly 0 or 1 and
    F = (1 - c) x + c sum_{k above x} w_k, F' = 1 - c; at x = 0.5, the centre of window 0,
    sigma = 1/2, sigma' = 2 alpha (L' = 8 alpha at beta = 1), sigma'' = 0."""
    K = 3
    raw = raw_block(K, w=[0.0, 1.0, -1.0], b=[0.0, 3.0, -3.0], s=[-6.0, -6.0, -6.0],
                    a=[700.0, 5.0, 1e4], c=4.0).repeat(7, 1).requires_grad_(True)
    xs = [0.0, 1e-300, 1e-12, 0.5, 1 - 1e-16, 1.0, 0.3]
    x = torch.tensor(xs, dtype=DT).requires_grad_(True)
    p = tf.smooth_parameters(raw, K, C)
    y, dF = tf.smooth_forward(x, p, torch.tensor(False), 1)
    (gx, gr) = torch.autograd.grad((y + torch.log(dF)).sum(), (x, raw), create_graph=True)
    (hx,) = torch.autograd.grad(gx.sum() + gr.sum(), x)
    w, b, sw = (v[0].detach().numpy() for v in (p.w, p.b, p.s))
    alpha, c = p.alpha[0, 0].item(), p.c[0].item()
    assert np.all(np.abs(b * (1 - sw) + sw / 2 - [0.5, 0.95, 0.05]) < 0.01) and sw.max() < 0.013
    dc = 0.99 * (c / 0.99) * (1 - c / 0.99)            # dc / dc~
    flat = [i for i in range(7) if i != 3]
    gx_want = np.full(7, 1 - c)
    gx_want[3] = 1 - c + c * w[0] * 2 * alpha / sw[0]  # F'' = 0 at the centre
    np.testing.assert_allclose(dF.detach().numpy(), gx_want, rtol=1e-10)   # h = 1/2 to rounding
    np.testing.assert_allclose(gx.detach().numpy(), gx_want, rtol=1e-10)
    # d(y + log F')/d raw where every step is flat: through c and, above window k, w_k
    for i in flat:
        above = np.array([xs[i] > 0.5, xs[i] > 0.95, xs[i] > 0.05], dtype=float)
        want = np.zeros(4 * K + 2)
        want[:K] = c * w * (above - (w * above).sum())          # softmax
        want[4 * K] = dc * (-xs[i] + (w * above).sum() - 1 / (1 - c))
        np.testing.assert_allclose(gr[i].detach().numpy(), want, rtol=1e-12, atol=1e-15)
    # the second derivative d/dx of that sum: -dc/dc~ from the -x term
    np.testing.assert_allclose(hx[flat].numpy(), -dc, rtol=1e-12)
    assert torch.isfinite(gr[3]).all() and torch.isfinite(hx[3])


@pytest.mark.parametrize("K", [1, 2, 3, 5, 8])
def test_endpoints_and_derivatives(K):
    raw = random_raw(64, K, seed=K, steep=True)
    p = tf.smooth_parameters(raw, K, C)
    for x0, y0 in ((0.0, 0.0), (1.0, 1.0)):
        x = torch.full((64,), x0, dtype=DT)
        F, dF, d2F = tf.smooth_mixture(x, p, 1, order=2)
        np.testing.assert_allclose(F.numpy(), y0, atol=2e-16)
        np.testing.assert_allclose(dF.numpy(), (1 - p.c).numpy(), rtol=1e-15)
        assert (d2F == 0).all()
    # F', F'' against autograd; F' >= 1 - c
    x = torch.rand(64, dtype=DT, generator=torch.Generator().manual_seed(K)).requires_grad_(True)
    F, dF, d2F = tf.smooth_mixture(x, p, 1, order=2)
    (g1,) = torch.autograd.grad(F.sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), x)
    np.testing.assert_allclose(g1.detach().numpy(), dF.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g2.numpy(), d2F.detach().numpy(), rtol=1e-10,
                               atol=1e-10 * dF.abs().max().item())
    assert (dF >= (1 - p.c) * (1 - 1e-15)).all()


def test_circle_lift():
    K = 4
    raw = random_raw(32, K, seed=3)
    raw[:, -1] = torch.linspace(-3, 3, 32, dtype=DT)
    p = tf.smooth_parameters(raw, K, C)
    circ = torch.tensor(True)
    x = torch.rand(32, dtype=DT, generator=torch.Generator().manual_seed(0))
    y = tf.smooth_forward(x, p, circ, 1)[0]
    assert ((y >= 0) & (y < 1)).all()
    F = tf.smooth_mixture(x, p, 1)[0]
    np.testing.assert_allclose(torch.remainder(F + p.t, 1.0).numpy(), y.numpy(), atol=1e-15)
    # the ends are lines of the same slope: the lift F(x + 1) = F(x) + 1 is smooth
    e = torch.full((32,), 1e-4, dtype=DT)
    d0 = tf.smooth_mixture(e, p, 1, 2)
    d1 = tf.smooth_mixture(1 - e, p, 1, 2)
    np.testing.assert_allclose(d0[1].numpy(), d1[1].numpy(), rtol=1e-14)
    np.testing.assert_allclose(d0[0].numpy(), (d1[0] - 1 + 2 * e * (1 - p.c)).numpy(), atol=1e-15)


# ------------------------------------------------------------------ inverse
@pytest.mark.parametrize("K", [1, 2, 4, 8])
@pytest.mark.parametrize("steep", [False, True])
@pytest.mark.parametrize("circular", [False, True])
def test_inverse_round_trip(K, steep, circular):
    n = 400
    raw = random_raw(n, K, seed=10 * K + steep, steep=steep)
    p = tf.smooth_parameters(raw, K, C)
    circ = torch.tensor(circular)
    specials = torch.tensor([0.0, 5e-324, 1e-300, 1e-16, 1e-10, 0.5, 1 - 1e-10,
                             1 - 2 ** -53, 1.0 - 1e-16, 1.0], dtype=DT)
    y = torch.rand(n, dtype=DT, generator=torch.Generator().manual_seed(K))
    y[:len(specials)] = specials
    y[len(specials):2 * len(specials)] = specials
    if circular:
        y = torch.where(y >= 1, torch.zeros_like(y), y)
    x, dF = tf.smooth_inverse(y, p, circ, 1)
    assert ((x >= -1e-300) & (x <= 1)).all()
    y2 = tf.smooth_forward(x, p, circ, 1)[0]
    err = (y2 - y).abs()
    if circular:
        err = torch.minimum(err, 1 - err)
    # at full precision: one ulp of x moves y by F'(x) ulp
    assert (err <= 1e-13 + 4e-16 * dF).all(), err.max()
    if not steep:
        assert err.max() <= 1e-13
    # and the other way round: F^-1(F(x)) = x
    xs = torch.rand(n, dtype=DT, generator=torch.Generator().manual_seed(K + 100))
    xs[:len(specials)] = specials
    if circular:
        xs = torch.where(xs >= 1, torch.zeros_like(xs), xs)
    x3, _ = tf.smooth_inverse(tf.smooth_forward(xs, p, circ, 1)[0], p, circ, 1)
    d = (x3 - xs).abs()
    if circular:
        d = torch.minimum(d, 1 - d)
    assert d.max() <= 1e-13


def test_inverse_iterations_bounded():
    K = 8
    raw = random_raw(2000, K, seed=1, steep=True)
    p = tf.smooth_parameters(raw, K, C)
    y = torch.rand(2000, dtype=DT, generator=torch.Generator().manual_seed(0))
    x, its = tf.solve_inverse(y, p, 1)
    # the safeguarded Newton iteration converges in far fewer steps than bisection, which
    # needs > 50 halvings of [0, 1] to reach 2 eps |x| (20 steps are measured here)
    assert its <= 30
    F, dF = tf.smooth_mixture(x, p, 1)
    assert ((F - y).abs() <= 1e-13 + 4e-16 * dF).all()


def _fd(fn, v, h):
    return (fn(v + h) - fn(v - h)) / (2 * h)


@pytest.mark.parametrize("circular", [False, True])
def test_inverse_gradients_vs_finite_differences(circular):
    K = 3
    n = 16
    raw = random_raw(n, K, seed=7).requires_grad_(True)
    y = (0.05 + 0.9 * torch.rand(n, dtype=DT, generator=torch.Generator().manual_seed(1)))
    y.requires_grad_(True)
    circ = torch.tensor(circular)

    def inv(yv, rv):
        x, dF = tf.smooth_inverse(yv, tf.smooth_parameters(rv, K, C), circ, 1)
        return x, -torch.log(dF)

    x, ld = inv(y, raw)
    gy, gr = torch.autograd.grad(x.sum(), (y, raw), retain_graph=True)
    gly, glr = torch.autograd.grad(ld.sum(), (y, raw))
    h = 1e-6
    with torch.no_grad():
        np.testing.assert_allclose(gy.numpy(), _fd(lambda v: inv(v, raw)[0], y, h).numpy(),
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(gly.numpy(), _fd(lambda v: inv(v, raw)[1], y, h).numpy(),
                                   rtol=1e-6, atol=1e-7)
        for j in range(raw.shape[1]):
            e = torch.zeros_like(raw)
            e[:, j] = 1.0
            fx = _fd(lambda v: inv(y, raw + v * e)[0], 0.0, h)
            fl = _fd(lambda v: inv(y, raw + v * e)[1], 0.0, h)
            np.testing.assert_allclose(gr[:, j].numpy(), fx.numpy(), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(glr[:, j].numpy(), fl.numpy(), rtol=1e-5, atol=1e-7)


def _unrolled_newton(y, p, circ, n_iter=40):
    """Autograd through a plain Newton iteration from a detached nearby start."""
    target = torch.where(circ, y - p.t - torch.floor((y - p.t).detach()), y)
    x = tf.solve_inverse(target, p, 1)[0] + 1e-3
    x = x.clamp(0, 1).detach()
    for _ in range(n_iter):
        F, dF = tf.smooth_mixture(x, p, 1)
        x = x - (F - target) / dF
    dF = tf.smooth_mixture(x, p, 1)[1]
    return x, -torch.log(dF)


@pytest.mark.parametrize("circular", [False, True])
def test_inverse_derivatives_vs_unrolled_newton_to_second_order(circular):
    K = 4
    n = 8
    raw0 = random_raw(n, K, seed=11)
    y0 = 0.05 + 0.9 * torch.rand(n, dtype=DT, generator=torch.Generator().manual_seed(2))
    circ = torch.tensor(circular)
    results = []
    for method in ("ift", "unrolled"):
        raw = raw0.clone().requires_grad_(True)
        y = y0.clone().requires_grad_(True)
        p = tf.smooth_parameters(raw, K, C)
        if method == "ift":
            x, dF = tf.smooth_inverse(y, p, circ, 1)
            ld = -torch.log(dF)
        else:
            x, ld = _unrolled_newton(y, p, circ)
        out = (x * torch.arange(1, n + 1, dtype=DT)).sum() + (ld * torch.cos(y0)).sum()
        gy, gr = torch.autograd.grad(out, (y, raw), create_graph=True)
        # second derivatives: d/d(y, raw) of a scalar of the first derivatives
        s = (gy * torch.sin(3 * y0)).sum() + (gr * torch.cos(raw0)).sum()
        hy, hr = torch.autograd.grad(s, (y, raw))
        results.append([t.detach() for t in (x, ld, gy, gr, hy, hr)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-11)


def test_inverse_gradgradcheck():
    K = 2
    raw = random_raw(3, K, seed=5).requires_grad_(True)
    y = torch.tensor([0.2, 0.55, 0.9], dtype=DT, requires_grad=True)
    circ = torch.tensor([False, True, False])

    def fn(yv, rv):
        x, dF = tf.smooth_inverse(yv, tf.smooth_parameters(rv, K, C), circ, 1)
        return x, -torch.log(dF)

    assert torch.autograd.gradcheck(fn, (y, raw), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(fn, (y, raw), eps=1e-6, atol=1e-6)


def _documented_transform(x, raw, K, circular, consts=C):
    """y = T(x) and log T'(x) of one dimension by docs/flow-math.md section 4, in numpy."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    e = np.exp(raw[:K] - raw[:K].max())
    w, b = e / e.sum(), sig(raw[K:2 * K])
    s = consts.s_min + (1 - consts.s_min) * sig(raw[2 * K:3 * K])
    a = raw[3 * K:4 * K]
    alpha = consts.alpha_min + np.log1p(np.exp(-np.abs(a))) + np.maximum(a, 0)
    c, beta = consts.c_max * sig(raw[4 * K]), consts.beta
    h = (x - b * (1 - s)) / s
    inside = (h > 0) & (h < 1)
    hh = np.where(inside, h, 0.5)
    L = alpha * ((1 - hh) ** -beta - hh ** -beta)
    step = np.where(inside, sig(L), (h >= 1).astype(float))
    L1 = alpha * beta * ((1 - hh) ** -(beta + 1) + hh ** -(beta + 1))
    dstep = np.where(inside, step * (1 - step) * L1, 0.0)
    F = (1 - c) * x + c * (w * step).sum()
    dF = (1 - c) + c * (w * dstep / s).sum()
    return ((F + raw[4 * K + 1]) % 1.0 if circular else F), np.log(dF)


def test_transformer_module_is_the_documented_transform_per_dimension():
    """SmoothTransformer applies to dimension i the transform of the i-th raw block, with
    that dimension's circular flag (against the formulas of the docs); the inverse undoes it
    with the opposite log-derivative."""
    K = 3
    circular = [False, True, False, True]
    T = tf.SmoothTransformer(K, circular, C)
    raw = random_raw(20 * 4, K, seed=3).reshape(20, 4, 4 * K + 2)
    x = torch.rand(20, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
    y, ld = T(x, raw)
    want = np.array([[_documented_transform(x[n, i].item(), raw[n, i].numpy(), K, circular[i])
                      for i in range(4)] for n in range(20)])
    np.testing.assert_allclose(y.numpy(), want[..., 0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(ld.numpy(), want[..., 1], rtol=1e-12, atol=1e-14)
    x2, ld2 = T(y, raw, inverse=True)
    np.testing.assert_allclose(x2.numpy(), x.numpy(), atol=1e-13)
    np.testing.assert_allclose(ld2.numpy(), -want[..., 1], rtol=1e-11, atol=1e-12)


def test_density_of_one_transform_integrates_to_one():
    """int_0^1 exp(log |dx/dy|) dy = 1 on a fine composite Gauss-Legendre grid."""
    K = 5
    raw = random_raw(1, K, seed=2)
    p = tf.smooth_parameters(raw[0], K, C)
    xg, wg = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(0, 1, 201)
    nodes = (edges[:-1, None] + (xg[None] + 1) / 2 * np.diff(edges)[:, None]).ravel()
    wts = (wg[None] / 2 * np.diff(edges)[:, None]).ravel()
    for circular in (False, True):
        yv = torch.tensor(nodes, dtype=DT)
        _, dF = tf.smooth_inverse(yv, p, torch.tensor(circular), 1)
        total = float((torch.tensor(wts, dtype=DT) / dF).sum())
        assert abs(total - 1) < 1e-9


# ------------------------------------------------------------------ conditioner
def test_encoding_and_conditioner():
    u = torch.tensor([[0.25, 0.1, 0.75]], dtype=DT)
    e = encode(u, [False, True, False])
    np.testing.assert_allclose(e.numpy(), [[-0.5, math.cos(0.2 * math.pi),
                                             math.sin(0.2 * math.pi), 0.5]], atol=1e-16)
    net = MLPConditioner([False, True, False], [5, 3], 7, "tanh")
    assert [tuple(m.weight.shape) for m in net] == [(5, 4), (3, 5), (7, 3)]
    assert (net(u) == 0).all()          # zero-initialized last layer
    with torch.no_grad():
        for m in net:
            m.weight.normal_()
            m.bias.normal_()
    h = torch.tanh(net[0](e))
    h = torch.tanh(net[1](h))
    np.testing.assert_allclose(net(u).detach().numpy(), net[2](h).detach().numpy(), rtol=1e-15)
    # no conditioning input: the first map is its bias alone, out = W2 silu(b1) + b2 per row
    empty = MLPConditioner([], [4], 6, "silu", zero_init=False)
    out = empty(torch.zeros(3, 0, dtype=DT)).detach().numpy()
    b1, W2, b2 = (t.detach().numpy() for t in (empty[0].bias, empty[1].weight, empty[1].bias))
    want = W2 @ (b1 / (1 + np.exp(-b1))) + b2
    assert np.abs(b1).max() > 0.1
    np.testing.assert_allclose(out, np.broadcast_to(want, (3, 6)), rtol=1e-14, atol=1e-15)


def _component_grad_spread(layer, K):
    """Largest difference between the K components' gradients (b~ slots of the last bias)
    after one NLL-like backward pass on random inputs."""
    torch.manual_seed(0)
    x = torch.rand(64, 4, dtype=torch.float64)
    layer.zero_grad()
    _, logdet = layer(x, inverse=True)
    (-logdet.mean()).backward()
    g = layer.net[-1].bias.grad.reshape(2, -1)[:, K:2 * K]    # 2 transformed dims
    return float((g - g[:, :1]).abs().max())


def test_new_smooth_layers_have_distinct_components():
    """All-zero raw parameters make the K smooth components exchangeable: identical gradients,
    so training never separates them (K = 1 in effect). A new layer places the windows at
    b_k = (k + 1/2)/K instead, and its components get different gradients."""
    from smoothflow_torch import CouplingLayer
    K = 4
    layer = CouplingLayer([0, 2], [1, 3], [False, True, False, True], n_components=K,
                          hidden=(8,), direction="density")
    raw = layer.raw_parameters(torch.rand(3, 4, dtype=torch.float64))
    b = layer.transformer.parameters_from_raw(raw).b
    assert torch.allclose(b, (torch.arange(K, dtype=torch.float64) + 0.5) / K, atol=1e-15)
    assert _component_grad_spread(layer, K) > 1e-3
    with torch.no_grad():
        layer.net[-1].bias.zero_()
    assert _component_grad_spread(layer, K) == 0.0
