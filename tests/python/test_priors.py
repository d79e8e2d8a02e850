"""The latent priors (smoothflow_torch.priors): truncated normals of bonds and angles and von Mises
torsions. Each density is normalized, its samples follow it, the C core agrees with PyTorch and
with mpmath's Bessel function, and bad prior configs are refused by both."""
import math

import numpy as np
import pytest
import torch

from flow_comparison import assert_log_density_matches
from smoothflow_core import CoreError, CoreModel
from smoothflow_torch import SmoothFlow, load_model_bytes, model_to_bytes, priors
from smoothflow_torch.testing import chain_zmatrix, random_flow, random_positions, unchecked_model_bytes

torch.set_num_threads(1)


def test_truncated_normal_is_normalized_and_sampled_by_its_cdf():
    mean = torch.tensor([0.5, 0.2, 0.9], dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3, 0.05], dtype=torch.float64)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for d in range(3):   # each factor integrates to 1 over [0, 1] (trapezoid rule)
        lp = priors.truncated_normal_log_prob(grid[:, None], mean[d:d + 1], sigma[d:d + 1])
        assert torch.trapezoid(lp.exp(), grid).item() == pytest.approx(1.0, abs=1e-7)
    z = priors.truncated_normal_sample(200_000, mean, sigma, torch.Generator().manual_seed(0))
    assert bool(((z >= 0) & (z <= 1)).all())
    for d in range(3):   # sample mean against the density's mean by quadrature, 5 standard errors
        p = priors.truncated_normal_log_prob(grid[:, None], mean[d:d + 1], sigma[d:d + 1]).exp()
        mu = torch.trapezoid(grid * p, grid).item()
        sd = math.sqrt(torch.trapezoid((grid - mu) ** 2 * p, grid).item())
        assert abs(z[:, d].mean().item() - mu) < 5 * sd / math.sqrt(len(z))


@pytest.mark.parametrize("prior", ["truncated_normal", "von_mises"])
def test_flow_samples_carry_their_log_density(prior):
    """log q returned by sample() equals log_prob() of the samples (the prior enters both)."""
    flow = random_flow(n_atoms=6, n_layers=3, directions="mixed", seed=4, prior=prior)
    x, lq = flow.sample(64, generator=torch.Generator().manual_seed(2), return_log_prob=True)
    np.testing.assert_allclose(lq.detach().numpy(), flow.log_prob(x).detach().numpy(), rtol=1e-9, atol=1e-9)


def test_density_is_prior_at_z_times_jacobian():
    """log p_U(u) = log p_Z(z(u)) + log |dz/du|, the prior's factors over bonds and angles."""
    Z = chain_zmatrix(5)
    layers = [{"transform": "smooth", "direction": "density", "transformed": [0, 2, 4, 6],
               "conditioning": [1, 3, 5, 7, 8], "n_components": 2, "hidden": [4], "activation": "silu"}]
    prior = {"kind": "truncated_normal", "mean": [0.4, 0.5, 0.6, 0.5, 0.45, 0.55, 0.5],
             "sigma": [0.1, 0.2, 0.05, 0.1, 0.3, 0.1, 0.08]}
    flow = SmoothFlow(Z, [0.1] * 4, [0.2] * 4, layers, prior=prior)
    u = torch.rand(5, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m, s = torch.tensor(prior["mean"], dtype=torch.float64), torch.tensor(prior["sigma"], dtype=torch.float64)
    z, ldj = flow.forward(u, inverse=True)
    expect = priors.truncated_normal_log_prob(z[:, :7], m, s) + ldj
    np.testing.assert_allclose(flow.log_prob_u(u).detach().numpy(), expect.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("directions", ["density", "mixed"])
def test_core_matches_torch_with_the_normal_prior(directions):
    flow = random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=(12,), directions=directions,
                       seed=11, prior="truncated_normal")
    _core_matches_torch(flow)


def _core_matches_torch(flow):
    """Energies, forces and log densities of the C core against PyTorch at six positions, and the
    prior's file round trip; returns the positions and the core's energies."""
    data = model_to_bytes(flow)
    core = CoreModel.from_bytes(data, max_batch=6)
    x = random_positions(flow, 6, seed=5)
    e, f = flow.energy_and_forces(x)
    e_core, f_core = core.evaluate(x.numpy())
    np.testing.assert_allclose(e_core, e.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert np.abs(f_core - f.detach().numpy()).max() < 1e-8 * np.abs(f.detach().numpy()).max()
    assert_log_density_matches(flow, core)
    assert load_model_bytes(data).config()["prior"] == flow.config()["prior"]   # the prior survives the file
    return x, e_core


def _with_prior(flow, prior) -> bytes:
    """The model file of ``flow`` with its config's prior replaced (bypassing the exporter)."""
    return unchecked_model_bytes({**flow.config(), "prior": prior}, flow.state_dict())


@pytest.mark.parametrize("prior, message, torch_message", [
    ("gaussian", "prior", r"prior must be 'uniform' or .*got 'gaussian'"),
    ({"kind": "truncated_normal", "mean": [0.5] * 3, "sigma": [0.1] * 9}, "9 numbers",
     r"prior\.mean must be 9 finite numbers"),
    ({"kind": "truncated_normal", "mean": [0.5] * 9, "sigma": [0.0] * 9}, "sigma",
     r"prior dimension 0 .*sigma 0\.0 \(need 1e-4 <= sigma <= 10\)"),
    ({"kind": "truncated_normal", "mean": [1.5] + [0.5] * 8, "sigma": [0.1] * 9}, "mean",
     r"prior dimension 0 has mean 1\.5 \(need 0 < mean < 1\)"),
], ids=["unknown_kind", "wrong_length", "zero_sigma", "mean_outside"])
def test_bad_priors_are_refused_by_both(prior, message, torch_message):
    flow = random_flow(n_atoms=6, n_layers=2, seed=1)
    with pytest.raises(ValueError, match=torch_message):
        SmoothFlow(flow.zmatrix, flow.bond_lo, flow.bond_hi, [l.config() for l in flow.layers], prior=prior)
    with pytest.raises(CoreError, match=message):
        CoreModel.from_bytes(_with_prior(flow, prior))


def test_von_mises_is_normalized_and_sampled_exactly():
    """Each torsion factor integrates to 1 over the circle [0, 1) (kappa 0, small, moderate and
    at the format's limit 1e4); Best-Fisher draws match the density's circular moments (the
    oracle: mpmath's Bessel functions, E cos 2 pi (z - mu) = I1(kappa) / I0(kappa))."""
    mpmath = pytest.importorskip("mpmath")
    mean = torch.tensor([0.0, 0.25, 0.9, 0.5, 0.7], dtype=torch.float64)
    kappa = torch.tensor([0.0, 1e-3, 2.0, 40.0, 1e4], dtype=torch.float64)
    grid = torch.linspace(0, 1, 400001, dtype=torch.float64)
    for d in range(5):
        lp = priors.von_mises_log_prob(grid[:, None], mean[d:d + 1], kappa[d:d + 1])
        assert torch.trapezoid(lp.exp(), grid).item() == pytest.approx(1.0, abs=1e-7), kappa[d]
    z = priors.von_mises_sample(100_000, mean, kappa, torch.Generator().manual_seed(3))
    assert bool(((z >= 0) & (z < 1)).all())
    for d in range(5):
        k = float(kappa[d])
        r = float(mpmath.besseli(1, k) / mpmath.besseli(0, k)) if k > 0 else 0.0
        c = torch.cos(2 * math.pi * (z[:, d] - mean[d]))
        s = torch.sin(2 * math.pi * (z[:, d] - mean[d]))
        # the standard error of a mean of cos (sd <= 1) over 1e5 draws: 5 of them
        assert abs(c.mean().item() - r) < 5 * max(c.std().item(), 1e-6) / math.sqrt(len(z)), k
        assert abs(s.mean().item()) < 5 * max(s.std().item(), 1e-6) / math.sqrt(len(z)), k


def test_core_matches_torch_and_mpmath_with_von_mises_torsions():
    """The C core against PyTorch (energies, forces, log densities), and against the formula of
    docs/model-format.md 5.4 evaluated with mpmath's Bessel function: the energy difference to the
    same flow with uniform torsions is -kT sum [kappa (cos 2 pi (z - mean) - 1) - log I0e(kappa)]."""
    mpmath = pytest.importorskip("mpmath")
    flow = random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=(12,), directions="mixed",
                       seed=12, prior="von_mises")
    flow.prior["torsion_kappa"][0] = 1e4          # the limit: exp(-1e4) underflows, its log must not
    flow.torsion_kappa[0] = 1e4
    x, e_core = _core_matches_torch(flow)
    uniform = {k: v for k, v in flow.prior.items() if not k.startswith("torsion_")}
    plain = CoreModel.from_bytes(_with_prior(flow, uniform), max_batch=6)
    e_plain = plain.evaluate(x.numpy())[0]
    with torch.no_grad():
        z, _ = flow.forward(flow.reduced_terms(x)["u_flow"], inverse=True)
    zt = z[:, 2 * 7 - 3:].numpy()
    for b in range(6):
        logp = sum(float(k) * (math.cos(2 * math.pi * (zt[b, t] - float(m))) - 1)
                   - float(mpmath.log(mpmath.besseli(0, k) * mpmath.exp(-k)))
                   for t, (m, k) in enumerate(zip(flow.prior["torsion_mean"], flow.prior["torsion_kappa"])))
        assert e_core[b] - e_plain[b] == pytest.approx(-flow.kT * logp, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("change, message, torch_message", [
    ({"torsion_mean": [0.5] * 4}, "'torsion_mean' without 'torsion_kappa'",
     "torsion_mean and prior.torsion_kappa go together"),
    ({"torsion_mean": [0.5] * 3, "torsion_kappa": [1.0] * 3}, "arrays of n_atoms - 3 = 4 numbers",
     r"prior\.torsion_mean must be 4 finite numbers"),
    ({"torsion_mean": [1.0, 0.5, 0.5, 0.5], "torsion_kappa": [1.0] * 4}, r"torsion 0 \(dimension 11\)",
     r"torsion 0 \(dimension 11\) has torsion_mean 1\.0"),
    ({"torsion_mean": [0.5] * 4, "torsion_kappa": [1.0, 1.0, -2.0, 1.0]}, "torsion_kappa -2",
     r"torsion 2 \(dimension 13\) .*torsion_kappa -2\.0"),
    ({"torsion_mean": [0.5] * 4, "torsion_kappa": [1.0, 1.0, 1.0, 2e4]}, "need 0 <= kappa <= 10000",
     r"need 0 <= kappa <= 10000"),
], ids=["mean_alone", "wrong_length", "mean_1", "kappa_negative", "kappa_too_large"])
def test_bad_torsion_priors_are_refused_by_both(change, message, torch_message):
    flow = random_flow(n_atoms=7, n_layers=2, seed=1, prior="truncated_normal")
    prior = {**flow.prior, **change}
    with pytest.raises(ValueError, match=torch_message):
        SmoothFlow(flow.zmatrix, flow.bond_lo, flow.bond_hi, [l.config() for l in flow.layers], prior=prior)
    with pytest.raises(CoreError, match=message):
        CoreModel.from_bytes(_with_prior(flow, prior))
