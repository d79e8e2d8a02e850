"""Free-form flows on particle systems: EGNN symmetries, exact log-det, Hutchinson gradient, training.

smoothflow_torch.particles.{egnn, fff, train}; conventions in docs/free-form-flows.md.
Everything in float64.
"""
import json
import math

import numpy as np
import pytest
import torch

from smoothflow_torch.particles import egnn as pegnn
from smoothflow_torch.particles import fff
from smoothflow_torch.particles import train as ptrain


def _net(n, d, seed=0, hidden=16, layers=3, coord_gain=0.5, distance_scale=2.0):
    """A random EGNN far from the identity (coord_gain 0.5), in float64."""
    torch.manual_seed(seed)
    return pegnn.EGNN(n, d, hidden=hidden, layers=layers, distance_scale=distance_scale,
                      coord_gain=coord_gain).double()


def _random_orthogonal(d, det_sign, gen):
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    q = q * torch.sign(torch.diagonal(r))
    if torch.sign(torch.det(q)) != det_sign:
        q[:, 0] = -q[:, 0]
    return q


def _close(a, b, tol):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


# ----------------------------------------------------------------------------- (1) symmetries
@pytest.mark.parametrize("n,d", [(4, 2), (5, 3)])
def test_egnn_equivariance(n, d):
    """f(xR) = f(x)R (rotations and reflections), f(x + t) = f(x), f(Px) = P f(x), to 1e-10."""
    f = _net(n, d)
    gen = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(3, n, d, dtype=torch.float64, generator=gen) + 0.7
    with torch.no_grad():
        fx = f(x)
        # The network is not near the identity: the symmetries are not satisfied trivially.
        assert float((fx - pegnn.remove_mean(x)).abs().max()) > 0.1
        assert float(fx.sum(-2).abs().max()) < 1e-12                  # mean-free output
        for sign in (1.0, -1.0):
            r = _random_orthogonal(d, sign, gen)
            assert _close(f(x @ r), fx @ r, 1e-10), f"rotation/reflection (det {sign:+})"
        t = 3.0 * torch.randn(3, 1, d, dtype=torch.float64, generator=gen)
        assert _close(f(x + t), fx, 1e-10), "translation"
        perm = torch.randperm(n, generator=gen)
        assert _close(f(x[:, perm]), fx[:, perm], 1e-10), "permutation"


# ----------------------------------------------------------------------------- (2) exact log-det
@pytest.mark.parametrize("n,d", [(4, 2), (3, 3)])
def test_exact_log_det_matches_finite_differences(n, d):
    """slogdet of the forward-mode J_V equals the log-det of a central-difference Jacobian taken
    in an independent (random) orthonormal basis of V; det J_V is basis independent."""
    f = _net(n, d, seed=2)
    gen = torch.Generator().manual_seed(3)
    x = pegnn.remove_mean(1.5 * torch.randn(2, n, d, dtype=torch.float64, generator=gen))
    sign, logdet = fff.exact_log_det(f, x)
    dim = (n - 1) * d
    m = pegnn.remove_mean(torch.randn(dim, n, d, dtype=torch.float64, generator=gen))
    basis, _ = torch.linalg.qr(m.reshape(dim, n * d).T)          # (n d, D), orthonormal, in V
    h = 1e-5
    for b in range(x.shape[0]):
        cols = []
        with torch.no_grad():
            for k in range(dim):
                e = basis[:, k].reshape(n, d)
                cols.append(((f(x[b] + h * e) - f(x[b] - h * e)) / (2 * h)).reshape(-1))
        j_fd = basis.T @ torch.stack(cols, dim=1)
        s_fd, l_fd = torch.linalg.slogdet(j_fd)
        assert float(sign[b].detach()) == float(s_fd)
        assert abs(float(logdet[b].detach()) - float(l_fd)) < 1e-7, (float(logdet[b].detach()), float(l_fd))
    # the network is not volume preserving, so the comparison is not 0 = 0
    assert float(logdet.detach().abs().max()) > 0.05


# ----------------------------------------------------------------------------- (3) Hutchinson
def _fixed_point_inverse(f, iterations=20):
    """g = f^-1 on V for an f close to the identity: x <- x - (f(x) - z) converges (linearly,
    at the rate |J_f - I|, tiny here: 10 iterations reach 1e-15; the test checks g(f(x)) = x)."""
    def g(z):
        x = z
        for _ in range(iterations):
            x = x - (f(x) - z)
        return x
    return g


def _grad(scalar, params):
    return torch.cat([p.reshape(-1) for p in torch.autograd.grad(scalar, params)])


def _invertible_pair(seed=4):
    """A nonlinear f with an exactly known inverse, and a non-symmetric Jacobian.

    f(x) = EGNN(x) A^T with a fixed non-symmetric A acting on every particle (an EGNN alone has
    a nearly symmetric Jacobian, which would hide a transposed product); g(z) = the converged
    fixed-point inverse of the EGNN applied to z A^-T.
    """
    n, d = 4, 2
    net = _net(n, d, seed=seed, coord_gain=1.0, distance_scale=2.0)
    a = torch.tensor([[1.3, 0.6], [-0.4, 0.9]], dtype=torch.float64)
    a_inv = torch.linalg.inv(a)
    inv = _fixed_point_inverse(net, iterations=40)
    return net, (lambda x: net(x) @ a.T), (lambda z: inv(z @ a_inv.T)), n, d


def test_hutchinson_gradient_matches_exact_log_det_gradient():
    """With g = f^-1 exactly (a converged fixed-point inverse of a nonlinear EGNN), the
    surrogate's parameter gradient over the D basis vectors of V equals grad log |det J_V|
    (exactly, the trace being a sum over a basis), and its mean over Gaussian probes on V
    approaches it: relative error < 8 % with 4 000 probes, where the Monte-Carlo noise is
    1-3 % (measured over seeds); dropping the stop-gradient gives 100 %."""
    net, f, g, n, d = _invertible_pair()
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(5)
    x = pegnn.remove_mean(2.0 * torch.randn(1, n, d, dtype=torch.float64, generator=gen))
    with torch.no_grad():
        assert float((g(f(x)) - x).abs().max()) < 1e-12            # g really is the inverse
    _, logdet = fff.exact_log_det(f, x)
    g_exact = _grad(logdet.sum(), params)
    assert float(g_exact.norm()) > 0.1                             # not a trivial 0 = 0

    dim = (n - 1) * d
    tangents = fff.subspace_tangents(n, d)                          # orthonormal basis of V
    _, s_basis = fff.hutchinson_surrogate(f, g, x.expand(dim, n, d).clone(), tangents)
    g_basis = _grad(s_basis.sum(), params)
    assert float((g_basis - g_exact).norm() / g_exact.norm()) < 1e-8

    k = 4000
    v = fff.sample_subspace_normal((k, n, d), torch.float64, generator=gen)
    _, s_mc = fff.hutchinson_surrogate(f, g, x.expand(k, n, d).clone(), v)
    g_mc = _grad(s_mc.mean(), params)
    rel = float((g_mc - g_exact).norm() / g_exact.norm())
    assert rel < 0.08, rel


def test_fff_loss_gradient_is_the_exact_nll_gradient_for_an_exact_inverse():
    """For g = f^-1 and probes v_k = sqrt(D) q_k (q_k the basis of V, so mean_k v v^T = P), the
    encoder gradient of the FFF loss averaged over the D probes equals that of the exact NLL
    -log p_Z(f(x)) - log |det J_V| (the reconstruction term vanishes): sign and scale of every
    term of the loss are checked."""
    net, f, g, n, d = _invertible_pair(seed=9)
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(10)
    x = pegnn.remove_mean(2.0 * torch.randn(1, n, d, dtype=torch.float64, generator=gen))
    g_nll = _grad(fff.exact_nll(f, x)["nll"].sum(), params)
    dim = (n - 1) * d
    v = math.sqrt(dim) * fff.subspace_tangents(n, d)
    loss = fff.fff_loss(f, g, x.expand(dim, n, d).clone(), beta=10.0, v=v)["loss"]
    g_loss = _grad(loss, params)
    assert float((g_loss - g_nll).norm() / g_nll.norm()) < 1e-8


def test_probe_vectors_have_unit_covariance_on_the_subspace():
    """v ~ N(0, P): mean-free, and its D subspace coordinates have identity covariance."""
    gen = torch.Generator().manual_seed(6)
    v = fff.sample_subspace_normal((200000, 4, 2), torch.float64, generator=gen)
    assert float(v.sum(-2).abs().max()) < 1e-12
    y = fff.to_subspace(v)
    cov = y.T @ y / len(y)
    assert float((cov - torch.eye(6, dtype=torch.float64)).abs().max()) < 0.02


# ----------------------------------------------------------------------------- (5) NLL
def test_nll_of_identity_and_scaling_is_the_subspace_gaussian():
    """f = identity: NLL = |x|^2/2 + (D/2) log 2 pi with D = (n-1) d; f = a x adds a^2 and
    -D log a. Also an EGNN with zero coordinate gain is exactly the identity."""
    n, d = 4, 2
    dim = 6
    gen = torch.Generator().manual_seed(7)
    x = pegnn.remove_mean(2.0 * torch.randn(5, n, d, dtype=torch.float64, generator=gen))
    y = fff.to_subspace(x)                                    # coordinates in an orthonormal basis
    gauss = 0.5 * (y * y).sum(-1) + 0.5 * dim * math.log(2 * math.pi)
    out = fff.exact_nll(lambda u: pegnn.remove_mean(u), x)
    assert _close(out["nll"], gauss, 1e-12)
    a = 1.7
    out = fff.exact_nll(lambda u: a * pegnn.remove_mean(u), x)
    assert _close(out["nll"], 0.5 * a * a * (y * y).sum(-1) + 0.5 * dim * math.log(2 * math.pi)
                  - dim * math.log(a), 1e-12)
    ident = _net(n, d, coord_gain=0.0)
    out = fff.exact_nll(ident, x + 5.0)                        # the input's centre is discarded
    assert _close(out["nll"], gauss, 1e-12)
    assert bool((out["sign"] == 1).all())


# ----------------------------------------------------------------------------- (4) training
def _dw4_like_data(path, frames=300, seed=8):
    """A DW4-shaped data set: noisy rotated squares of side 4, random split 0/1/2."""
    rng = np.random.default_rng(seed)
    square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], dtype=np.float64)
    pos = np.empty((frames, 4, 2))
    for i in range(frames):
        th = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        p = (square + 0.3 * rng.standard_normal((4, 2))) @ rot.T
        pos[i] = p - p.mean(0)
    split = rng.choice([0, 0, 0, 1, 2], size=frames).astype(np.int8)
    np.savez(path, positions=pos, split=split)
    return str(path)


def _config(data, **kw):
    cfg = dict(system="dw4", data=data, hidden=8, layers=2, beta=10.0, lr=3e-3, steps=40,
               batch=32, seed=3, dtype="float64", checkpoint_every=10, final_frames=20,
               eval_chunk=20, coord_gain=0.05)
    cfg.update(kw)
    return cfg


def _objective(trainer, x, beta):
    """beta * reconstruction + exact NLL (the quantity the FFF loss is a relaxation of)."""
    out = fff.exact_nll(trainer.f, x)
    with torch.no_grad():
        rec = ((trainer.g(out["z"]) - x) ** 2).sum((-2, -1))
    return float((beta * rec + out["nll"]).mean())


def test_tiny_dw4_training_decreases_the_loss(tmp_path):
    data = _dw4_like_data(tmp_path / "dw4.npz")
    cfg = ptrain.load_config(_config(data))
    trainer = ptrain.Trainer(cfg, tmp_path / "run", progress=False)
    x = trainer.data["train"][:64]
    before = _objective(trainer, x, cfg["beta"])
    trainer.run()
    after = _objective(trainer, x, cfg["beta"])
    assert after < before - 1.0, (before, after)
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 41))
    first = np.mean([e["loss"] for e in log[:5]])
    last = np.mean([e["loss"] for e in log[-5:]])
    assert last < first, (first, last)
    result = trainer.final_evaluation()
    assert math.isfinite(result["test"]["nll"])
    assert result["test"]["sign_positive_fraction"] + result["test"]["sign_negative_fraction"] == pytest.approx(1.0)
    assert (tmp_path / "run" / "result.json").exists()


def test_checkpoint_resumes_to_the_same_state(tmp_path):
    data = _dw4_like_data(tmp_path / "dw4.npz")
    straight = ptrain.Trainer(ptrain.load_config(_config(data, steps=20)), tmp_path / "a", progress=False)
    straight.run()
    first = ptrain.Trainer(ptrain.load_config(_config(data, steps=10)), tmp_path / "b", progress=False)
    first.run()
    assert [p.name for p in first.checkpoints()] == ["step_00000010.pt"]
    resumed = ptrain.Trainer(ptrain.load_config(_config(data, steps=20)), tmp_path / "b", progress=False)
    resumed.run()                                           # loads step 10, trains 10 more
    for name in ("f", "g"):
        sa = getattr(straight, name).state_dict()
        sb = getattr(resumed, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert (tmp_path / "a" / "log.jsonl").read_text() == (tmp_path / "b" / "log.jsonl").read_text()
    # a checkpoint restores the state it was written from
    fresh = ptrain.Trainer(ptrain.load_config(_config(data, steps=20)), tmp_path / "c", progress=False)
    fresh.load_checkpoint(straight.checkpoints()[-1])
    assert fresh.step == 20
    assert all(torch.equal(a, b) for a, b in zip(fresh.f.parameters(), straight.f.parameters()))
    # a different architecture is refused, naming the key
    other = ptrain.Trainer(ptrain.load_config(_config(data, steps=30, beta=1.0)), tmp_path / "c",
                           progress=False)
    with pytest.raises(ValueError, match="beta"):
        other.load_checkpoint(straight.checkpoints()[-1])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        ptrain.load_config({"system": "dw4", "data": "x.npz", "widht": 3})
    with pytest.raises(ValueError, match="'data' is required"):
        ptrain.load_config({"system": "dw4"})
    with pytest.raises(ValueError, match="system must be one of"):
        ptrain.load_config({"system": "lj55", "data": "x.npz"})


def test_learning_rate_schedules_and_cosine_resume(tmp_path):
    """Warmup is linear; the cosine goes from lr at the end of warmup to lr_min at `steps`; the
    optimizer uses it (logged); with a cosine, a resume with other `steps` is refused (it would be
    another trajectory), with a constant schedule it is allowed."""
    cfg = ptrain.load_config({"system": "dw4", "data": "x.npz", "lr": 1e-3, "lr_min": 1e-5,
                              "warmup": 10, "steps": 110, "lr_schedule": "cosine"})
    lr = [ptrain.learning_rate(cfg, s) for s in range(111)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3)
    assert lr[10] == pytest.approx(1e-3) and lr[60] == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert lr[110] == pytest.approx(1e-5) and all(a >= b for a, b in zip(lr[10:], lr[11:]))
    const = dict(cfg, lr_schedule="constant")
    assert ptrain.learning_rate(const, 0) == pytest.approx(1e-4) and ptrain.learning_rate(const, 50) == 1e-3
    for bad in ({"lr_schedule": "linear"}, {"lr_min": 2e-3}, {"warmup": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ptrain.load_config({"system": "dw4", "data": "x.npz", **bad})
    data = _dw4_like_data(tmp_path / "dw4.npz")
    run = ptrain.Trainer(ptrain.load_config(_config(data, steps=6, lr_schedule="cosine", warmup=2)),
                         tmp_path / "cos", progress=False)
    run.run()
    log = [json.loads(l) for l in (tmp_path / "cos" / "log.jsonl").read_text().splitlines()]
    assert [e["lr"] for e in log] == pytest.approx([ptrain.learning_rate(run.cfg, s) for s in range(6)])
    longer = ptrain.Trainer(ptrain.load_config(_config(data, steps=12, lr_schedule="cosine", warmup=2)),
                            tmp_path / "cos", progress=False)
    with pytest.raises(ValueError, match="steps"):
        longer.load_checkpoint(run.checkpoints()[-1])


def test_run_writes_its_model_and_export_only_refuses_other_configs(tmp_path):
    """The end of a run writes OUT/model.safetensors (the encoder in reduced units, kT = 1,
    particles DW1..DW4); --export-only refuses a config that is not the run's, naming the key,
    and a checkpoint that does not exist, and it does not write into the run unless told to."""
    from smoothflow_torch.particles.export import load_free_form
    data = _dw4_like_data(tmp_path / "dw4.npz")
    run = ptrain.Trainer(ptrain.load_config(_config(data, steps=10, checkpoint_every=5)), tmp_path / "r",
                         progress=False)
    info = run.run()
    model = tmp_path / "r" / ptrain.MODEL_FILE
    assert info["model"] == str(model)
    f = load_free_form(model)
    assert all(torch.equal(a, b) for a, b in zip(f.state_dict().values(), run.f.state_dict().values()))
    from smoothflow_torch import read_model_bytes
    config, _, _ = read_model_bytes(model.read_bytes())
    assert [a["name"] for a in config["atoms"]] == ["DW1", "DW2", "DW3", "DW4"]
    assert config["temperature"] * 0.00831446261815324 == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="beta"):
        ptrain.export_checkpoint(_config(data, steps=10, checkpoint_every=5, beta=1.0), tmp_path / "r",
                                 model_path=tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="step_00000007.pt"):
        ptrain.export_checkpoint(_config(data, steps=10, checkpoint_every=5), tmp_path / "r",
                                 "step_00000007.pt", tmp_path / "x.safetensors")
    model.unlink()
    path = ptrain.export_checkpoint(_config(data, steps=10, checkpoint_every=5), tmp_path / "r",
                                    "step_00000005.pt")
    assert path == model                                      # the default place: OUT/model.safetensors
    assert not all(torch.equal(a, b) for a, b in zip(load_free_form(model).state_dict().values(),
                                                     run.f.state_dict().values()))   # step 5, not 10
    with pytest.raises(SystemExit):
        ptrain.main([str(tmp_path / "c.json"), "--out", str(tmp_path / "r"), "--checkpoint", "x.pt"])


def test_evaluation_frames_are_spread_and_the_gaussian_baseline_is_a_scaled_identity():
    """Held-out frames are in chain and time order, so the periodic and final evaluations take
    evenly spaced frames (first and last included), not the first k. The Gaussian baseline
    reported beside the flow's NLL is the exact NLL of the flow f = x / sigma, sigma^2 the
    training frames' variance per degree of freedom of the subspace."""
    x = torch.arange(10, dtype=torch.float64).reshape(10, 1, 1).expand(10, 2, 1)
    picked = ptrain.spread_frames(x, 4)[:, 0, 0].tolist()
    assert picked == [0.0, 3.0, 6.0, 9.0]
    assert ptrain.spread_frames(x, 0) is x and ptrain.spread_frames(x, 10) is x
    n, d = 4, 2
    gen = torch.Generator().manual_seed(11)
    train = pegnn.remove_mean(1.3 * torch.randn(200, n, d, dtype=torch.float64, generator=gen))
    held = pegnn.remove_mean(1.3 * torch.randn(30, n, d, dtype=torch.float64, generator=gen))
    sigma = math.sqrt(float((train ** 2).sum((-2, -1)).mean()) / ((n - 1) * d))
    exact = fff.exact_nll(lambda u: pegnn.remove_mean(u) / sigma, held)["nll"].mean()
    assert ptrain.gaussian_fit_nll(train, held) == pytest.approx(float(exact), rel=1e-12)
