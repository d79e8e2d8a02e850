"""The NLL floor of a particle data set (smoothflow_torch.particles.floor) against exact answers.

* BAR and the two exponential averages on pairs of densities whose free-energy difference is
  known: two Gaussians of different widths (unequal sample counts, so the log(n_F / n_R) term
  matters), and a uniform density of bounded support against a Gaussian (infinite works).
* log Z on the centre-of-mass-free subspace for a harmonic pull to the centre of mass, whose
  Boltzmann density is exactly N(0, I_D / k) on V: log Z = (D/2) log(2 pi / k), against a
  reference Gaussian of another width (so BAR has work to do).
* The whole floor (``data_floor`` and the CLI) on a data set of that harmonic system registered
  as a system: the floor is mean beta U + (D/2) log(2 pi / k), the Gaussian fit's NLL is the
  trainer's ``gaussian_fit_nll`` on the same frames, and (the data being Gaussian) the fit's
  gap to the floor is zero within the noise.
* The CLI's refusals: a missing data file, an unknown system.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from smoothflow_torch.particles import floor as F
from smoothflow_torch.particles import systems as S
from smoothflow_torch.particles.train import gaussian_fit_nll, spread_frames


def _gauss_works(rng, s, dim, n0, n1):
    """State 0 = N(0, I_dim) normalised, state 1 = exp(-|x|^2 / (2 s^2)): -Delta f = log Z1."""
    x0 = rng.standard_normal((n0, dim))
    x1 = s * rng.standard_normal((n1, dim))

    def u0(x):
        return 0.5 * (x * x).sum(-1) + 0.5 * dim * math.log(2 * math.pi)

    def u1(x):
        return 0.5 * (x * x).sum(-1) / s ** 2

    return u1(x0) - u0(x0), u0(x1) - u1(x1), 0.5 * dim * math.log(2 * math.pi * s * s)


@pytest.mark.parametrize("s,n0,n1", [(0.6, 4000, 16000), (1.8, 16000, 4000)])
def test_bar_two_gaussians(s, n0, n1):
    rng = np.random.default_rng(7)
    w_f, w_r, log_z = _gauss_works(rng, s, 3, n0, n1)
    df = F.bar(w_f, w_r)
    std = F.bar_std(w_f, w_r, df)
    assert 0 < std < 0.03
    assert abs(-df - log_z) < 4 * std + 1e-3, (-df, log_z, std)
    # the one-sided estimates converge to the same number where the overlap is good
    assert abs(-F.exp_forward(w_f) - log_z) < 0.1
    assert abs(-F.exp_reverse(w_r) - log_z) < 0.1


def test_bar_std_matches_spread():
    # the asymptotic standard deviation is the spread of the estimate over repeated experiments
    rng = np.random.default_rng(3)
    estimates, stds = [], []
    for _ in range(40):
        w_f, w_r, _ = _gauss_works(rng, 1.7, 4, 1500, 1000)
        df = F.bar(w_f, w_r)
        estimates.append(df)
        stds.append(F.bar_std(w_f, w_r, df))
    ratio = np.std(estimates, ddof=1) / np.mean(stds)
    assert 0.7 < ratio < 1.4, ratio


def test_bar_bounded_support():
    # state 1 = uniform on [-1, 1] (Z1 = 2): Gaussian samples outside have infinite work
    rng = np.random.default_rng(11)
    x0 = rng.standard_normal(20000)
    x1 = rng.uniform(-1.0, 1.0, 20000)

    def u0(x):
        return 0.5 * x * x + 0.5 * math.log(2 * math.pi)

    def u1(x):
        return np.where(np.abs(x) <= 1.0, 0.0, np.inf)

    w_f, w_r = u1(x0) - u0(x0), u0(x1) - u1(x1)
    assert np.isinf(w_f).any()
    df = F.bar(w_f, w_r)
    assert abs(-df - math.log(2.0)) < 4 * F.bar_std(w_f, w_r, df) + 1e-3
    with pytest.raises(ValueError, match="NaN"):
        F.bar(np.array([np.nan, 1.0]), w_r)


def _harmonic(k):
    return lambda x: 0.5 * k * (S.remove_com(x) ** 2).sum((-2, -1))


def test_log_partition_harmonic():
    n, d, k = 5, 2, 2.5
    dof = (n - 1) * d
    rng = np.random.default_rng(5)
    data = F.sample_isotropic(20000, n, d, 1.0 / k, rng)
    assert abs(F.isotropic_variance(data) * k - 1.0) < 0.02     # the sampler is N(0, I/k) on V
    exact = 0.5 * dof * math.log(2 * math.pi / k)
    # a reference twice as wide as the target: BAR, not an identity, gives the answer
    out = F.log_partition(_harmonic(k), data, 2.0 / k, reference_samples=20000, seed=1)
    assert abs(out["log_z"] - exact) < 4 * out["log_z_std"] + 1e-3, (out, exact)
    assert out["log_z_std"] < 0.05
    assert abs(out["log_z_forward_exp"] - exact) < 0.2
    # a reference of the target's own width gives log Z with zero work
    same = F.log_partition(_harmonic(k), data, 1.0 / k, reference_samples=2000, seed=2)
    assert same["log_z"] == pytest.approx(exact, abs=1e-9)


@pytest.fixture
def harmonic_system(monkeypatch, tmp_path):
    """A 5-particle 2D harmonic pull (k = 2.5) registered as system 'harmonic', and its data set:
    exact samples of its Boltzmann density in the layout of particles.data (4 chains, the last
    one test, the one before validation)."""
    n, d, k = 5, 2, 2.5
    energy = _harmonic(k)
    spec = S.ParticleSystem("harmonic", n, d, build=None, energy=energy, parameters={},
                            timestep=0.01, friction=1.0, temperatures=(1.0,), stride=1, box=1.0,
                            min_distance=0.0)
    monkeypatch.setitem(F.SYSTEMS, "harmonic", spec)
    rng = np.random.default_rng(9)
    per = 3000
    pos = F.sample_isotropic(4 * per, n, d, 1.0 / k, rng)
    chain = np.repeat(np.arange(4), per)
    split = np.where(chain == 3, 2, np.where(chain == 2, 1, 0)).astype(np.int8)
    path = tmp_path / "harmonic.npz"
    np.savez(path, positions=pos, energies=energy(pos), chain=chain,
             time=np.tile(np.arange(per) + 1.0, 4), split=split)
    return {"path": str(path), "n": n, "d": d, "k": k, "pos": pos, "split": split}


def test_data_floor_harmonic(harmonic_system):
    h = harmonic_system
    dof = (h["n"] - 1) * h["d"]
    exact_log_z = 0.5 * dof * math.log(2 * math.pi / h["k"])
    r = F.data_floor("harmonic", h["path"], frames=1000, reference_samples=20000, seed=4,
                     progress=False)
    assert r["stored_energy_max_abs_diff"] < 1e-12
    assert abs(r["log_z"]["log_z"] - exact_log_z) < 4 * r["log_z"]["log_z_std"] + 1e-3
    train = torch.as_tensor(h["pos"][h["split"] == 0])
    for name, code in (("val", 1), ("test", 2)):
        x = spread_frames(torch.as_tensor(h["pos"][h["split"] == code]), 1000)
        s = r[name]
        assert s["frames"] == 1000
        mean_u = float(_harmonic(h["k"])(x.numpy()).mean())
        assert s["mean_beta_u"] == pytest.approx(mean_u, rel=1e-12)
        assert s["floor_nll"] == pytest.approx(mean_u + r["log_z"]["log_z"], rel=1e-12)
        assert abs(s["floor_nll"] - (mean_u + exact_log_z)) < 4 * r["log_z"]["log_z_std"] + 1e-3
        # the entropy of N(0, I/k) on V, within the noise of 1000 frames
        entropy = 0.5 * dof * (1 + math.log(2 * math.pi / h["k"]))
        assert abs(s["floor_nll"] - entropy) < 4 * s["floor_nll_std"]
        # the trainer's Gaussian baseline on the same frames, and its gap to the floor: zero,
        # since the data are Gaussian
        assert s["gaussian_fit_nll"] == pytest.approx(gaussian_fit_nll(train, x), rel=1e-12)
        assert abs(s["gaussian_fit_gap"]) < 0.05


def test_cli_writes_json(harmonic_system, tmp_path, capsys):
    out = tmp_path / "floor.json"
    rc = F.main(["harmonic", "--data", harmonic_system["path"], "--out", str(out), "--frames", "0",
                 "--reference-samples", "5000", "--bootstrap", "3", "--no-progress"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["test"]["frames"] == 3000 and r["val"]["frames"] == 3000
    assert r["log_z"]["bootstrap"]["replicas"] == 3 and r["log_z"]["log_z_bootstrap_std"] > 0
    assert r["machine"]["commit"] and r["machine"]["date"] and r["command"].startswith(
        "python -m smoothflow_torch.particles.floor harmonic")
    assert "floor NLL" in capsys.readouterr().out


def test_cli_missing_file(tmp_path, capsys):
    rc = F.main(["dw4", "--data", str(tmp_path / "nothing.npz"), "--no-progress"])
    assert rc == 1
    assert "no data file" in capsys.readouterr().err


def test_cli_unknown_system(capsys):
    with pytest.raises(SystemExit) as e:
        F.main(["lj55", "--data", "x.npz"])
    assert e.value.code == 2
    assert "invalid choice: 'lj55'" in capsys.readouterr().err


def test_cli_wrong_shape(tmp_path, capsys, harmonic_system):
    # a DW4 request on data of another shape names both
    rc = F.main(["dw4", "--data", harmonic_system["path"], "--no-progress"])
    assert rc == 1
    assert "positions have shape" in capsys.readouterr().err
