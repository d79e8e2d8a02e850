"""Exact sampling of a free-form flow and its importance weights
(smoothflow_torch.particles.sampling; studies/lj13_free_form/lj13_weights.py), on the shipped
LJ13 encoder and decoder. Oracles from outside the sampler: the C core's energy through OpenMM
(U = -kT log p_f, computed by its own log-determinant), the encoder evaluated at the solution
(f(x) = z), and a finite-difference Jacobian of the decoder."""
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothflow_torch.particles import sampling
from smoothflow_torch.particles.export import load_free_form
from smoothflow_torch.particles.fff import to_subspace
from smoothflow_torch.particles.potential import log_density
from smoothflow_torch.particles.systems import lj13_energy
from smoothflow_torch.pipeline.weights import ess_fraction

from conftest import REPO as _REPO

REPO = Path(_REPO)
MODEL = REPO / "models" / "lj13" / "free_form.safetensors"
DECODER = REPO / "models" / "lj13" / "free_form.decoder.safetensors"
STUDY = REPO / "studies" / "lj13_free_form" / "lj13_weights.py"


@pytest.fixture(scope="module")
def flow():
    torch.set_num_threads(1)
    return load_free_form(MODEL), sampling.load_decoder(DECODER, encoder_file=MODEL)


@pytest.fixture(scope="module")
def drawn(flow):
    f, g = flow
    return sampling.draw(f, g, 6, seed=3, energy=lj13_energy, chunk=3)


def test_exact_samples_solve_f_of_x_equals_z(flow, drawn):
    f, _ = flow
    assert drawn["converged"].all()
    with torch.no_grad():
        r = to_subspace(f(torch.as_tensor(drawn["x_exact"])) - torch.as_tensor(drawn["z"]))
    assert float(r.abs().max()) <= 1e-9
    # the decoder's start is close but not the solution: the inversion did something
    assert np.abs(drawn["x_exact"] - drawn["x_decoder"]).max() > 1e-6


def test_exact_log_density_is_the_openmm_potential(sf, drawn):
    """log q of an exact sample equals -U / kT of the C core's SmoothFlowForce at that sample."""
    import openmm
    system = openmm.System()
    for _ in range(13):
        system.addParticle(1.0)
    system.addForce(sf.SmoothFlowForce(str(MODEL)))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    assert (drawn["det_sign"] > 0).all()
    for x, log_q in zip(drawn["x_exact"], drawn["log_q_exact"]):
        context.setPositions(x)
        energy = context.getState(getEnergy=True).getPotentialEnergy()._value
        assert energy == pytest.approx(-log_q, abs=1e-7)


def test_decoder_log_density_against_finite_differences(flow, drawn):
    """log q_g(g(z)) = log p_Z(z) - log |det J_g,V(z)|, the Jacobian by central differences."""
    _, g = flow
    n, d = 13, 3
    from smoothflow_torch.particles.fff import from_subspace, gaussian_log_prob
    z = torch.as_tensor(drawn["z"][0])
    y = to_subspace(z)
    h = 1e-5
    cols = []
    with torch.no_grad():
        for k in range(y.numel()):
            e = torch.zeros_like(y)
            e[k] = h
            cols.append((to_subspace(g(from_subspace(y + e, n, d))) - to_subspace(g(from_subspace(y - e, n, d)))) / (2 * h))
    logdet = np.linalg.slogdet(torch.stack(cols, 1).numpy())[1]
    expected = float(gaussian_log_prob(z)) - logdet
    assert drawn["log_q_decoder"][0] == pytest.approx(expected, abs=1e-6)


def test_weights_against_the_flows_own_potential_are_equal(flow):
    """With the target u = -log p_f every exact sample weighs the same: ESS/n = 1."""
    f, g = flow
    res = sampling.draw(f, g, 4, seed=5, energy=lambda x: -log_density(f, x)[0], chunk=4,
                        decoder_density=False)
    assert "log_w_decoder" not in res and "decoder_det_sign" not in res
    assert np.ptp(res["log_w_exact"]) < 1e-8
    assert ess_fraction(res["log_w_exact"]) == pytest.approx(1.0, abs=1e-12)


def test_invert_reports_what_it_did_not_solve(flow):
    """Without steps nothing moves and only what already solves f(x) = z counts as converged;
    from a poor start (x0 = z, no decoder) damped Newton still converges."""
    f, _ = flow
    gen = torch.Generator().manual_seed(11)
    from smoothflow_torch.particles.fff import sample_subspace_normal
    z = sample_subspace_normal((3, 13, 3), torch.float64, generator=gen)
    none = sampling.invert(f, z, z, max_iter=0)
    assert torch.equal(none["x"], z - z.mean(-2, keepdim=True))
    assert not none["converged"].any() and (none["residual"] > 1e-3).all()
    solved = sampling.invert(f, z, z, max_iter=40)
    assert solved["converged"].all() and (solved["iterations"] > 0).all()


def test_decoder_file_round_trip_and_refusals(sf, flow, tmp_path):
    _, g = flow
    out = sampling.export_decoder(g, tmp_path / "dec.safetensors", MODEL, distance_scale=0.5, step=7)
    again = sampling.load_decoder(out, encoder_file=MODEL)
    x = torch.randn(2, 13, 3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(again(x), g(x))
    with pytest.raises(ValueError, match="decoder of another encoder"):
        sampling.load_decoder(out, encoder_file=REPO / "models" / "lj13" / "free_form.training.json")
    with pytest.raises(ValueError, match="not a free-form decoder"):
        sampling.load_decoder(MODEL)
    with pytest.raises(ValueError, match="not the decoder's"):
        sampling.export_decoder(g, tmp_path / "bad.safetensors", MODEL, distance_scale=0.7, step=7)
    with pytest.raises(Exception):                       # no potential: the C core refuses it
        sf.SmoothFlowForce(str(DECODER))


def test_study_script_writes_its_statistics_and_resumes(tmp_path):
    spec = importlib.util.spec_from_file_location("lj13_weights", STUDY)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    args = ["--seeds", "1", "2", "--samples", "12", "--chunk", "6", "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "out")]
    first = study.main(args)
    saved = json.loads((tmp_path / "out" / "importance_weights.json").read_text())
    assert saved["exact"]["n_total"] == 24 and len(saved["exact"]["per_set"]) == 2
    assert 0.0 < saved["exact"]["pooled_ess"] <= 1.0 and math.isfinite(saved["exact"]["k_hat"])
    assert saved["exact"]["k_hat_per_set"] == [None, None]          # 12 samples: too few for a tail fit
    assert "| p_f, exact" in (tmp_path / "out" / "importance_weights.md").read_text()
    shutil.rmtree(tmp_path / "out")
    second = study.main(args)                             # from the kept sets: the same numbers
    assert second["exact"]["pooled_ess"] == first["exact"]["pooled_ess"]
    assert second["exact"]["largest"] == first["exact"]["largest"]
