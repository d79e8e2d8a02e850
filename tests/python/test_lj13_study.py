"""The LJ13 free-form study (issue 23 part 6): a trained run's model file, the study script on a
tiny budget, and the fluctuation ratio it reports against an exact answer.

studies/lj13_free_form/lj13_study.py, smoothflow_torch.particles.train (export), and the
pipeline's NVE statistics (smoothflow_torch.pipeline.md) that the study reuses.
"""
import copy
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from smoothflow_torch.particles import train as ptrain
from smoothflow_torch.particles.export import load_free_form
from smoothflow_torch.particles.potential import log_density, log_density_and_gradient
from smoothflow_torch.particles.systems import REDUCED_TEMPERATURE_KELVIN
from smoothflow_torch.pipeline.md import nve_series

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STUDY = os.path.join(REPO, "studies", "lj13_free_form", "lj13_study.py")


def _study():
    spec = importlib.util.spec_from_file_location("lj13_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lj13_data(tmp_path_factory):
    """A small LJ13 data set made by the project's own sampler: 4 chains of 15 frames (chain 3 is
    the test split), 0.05 tau apart."""
    from smoothflow_torch.particles.data import generate
    out = tmp_path_factory.mktemp("lj13data")
    return generate("lj13", str(out), samples=60, chains=4, val_chains=1, test_chains=1,
                    equilibration=0.5, chunk_samples=15, stride=10, progress=False)


@pytest.fixture(scope="module")
def tiny_run(lj13_data, tmp_path_factory):
    """A 4-step float32 training of a small EGNN on the LJ13 data, checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("run")
    cfg = {"system": "lj13", "data": lj13_data, "hidden": 6, "layers": 2, "steps": 4, "batch": 8,
           "checkpoint_every": 2, "keep_checkpoints": 2, "final_frames": 4, "eval_chunk": 4,
           "coord_gain": 0.3, "lr": 1e-2, "seed": 5}
    path = out / "config.in.json"
    path.write_text(json.dumps(cfg))
    trainer = ptrain.Trainer(ptrain.load_config(cfg), out, progress=False)
    info = trainer.run()
    return {"dir": out, "config": str(path), "trainer": trainer, "info": info}


def _openmm_equals_pytorch(sf, model, f, x, platform="Reference"):
    """OpenMM's energy and forces of the free-form model file equal -log p and its gradient by
    PyTorch (encoder f, float64) at each configuration of x, to 1e-10 (kT = 1, det J_V > 0
    there); returns the model's config (read while the System that owns the force lives)."""
    import openmm
    system = openmm.System()
    for _ in range(13):
        system.addParticle(1.0)
    force = sf.SmoothFlowForce(str(model))
    system.addForce(force)
    assert force.getKT() == pytest.approx(1.0, abs=1e-14)
    props = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform), props)
    log_p, sign, grad = log_density_and_gradient(f, torch.as_tensor(x))
    assert bool((sign > 0).all())
    for k in range(len(x)):
        context.setPositions(x[k])
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy()._value
        forces = np.asarray(state.getForces(asNumpy=True)._value)
        assert abs(energy - (-float(log_p[k]))) <= 1e-10 * max(1.0, abs(energy))
        assert np.abs(forces - grad[k].numpy()).max() <= 1e-10 * max(1.0, np.abs(forces).max())
    return json.loads(force.getModelConfig())


def test_trained_run_exports_the_potential_of_its_encoder(sf, tiny_run, lj13_data):
    """The model file a run writes at the end is the trained (float32) encoder's potential:
    OpenMM's energy and forces equal -kT log p and its gradient by PyTorch to 1e-10, with kT = 1."""
    model = tiny_run["dir"] / ptrain.MODEL_FILE
    assert tiny_run["info"]["model"] == str(model) and model.is_file()
    f = copy.deepcopy(tiny_run["trainer"].f).double()            # the trained weights, as float64
    assert next(tiny_run["trainer"].f.parameters()).dtype == torch.float32
    loaded = load_free_form(model)
    assert all(torch.equal(a, b) for a, b in zip(f.state_dict().values(), loaded.state_dict().values()))
    with np.load(lj13_data) as d:
        x = d["positions"][d["split"] == 2][:3]
    config = _openmm_equals_pytorch(sf, model, f, x)
    assert config["temperature"] == REDUCED_TEMPERATURE_KELVIN
    assert [a["name"] for a in config["atoms"]] == [f"LJ{i}" for i in range(1, 14)]


SHIPPED = os.path.join(REPO, "models", "lj13", "free_form.safetensors")


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_the_shipped_lj13_flow_is_its_encoders_potential(sf, platform):
    """models/lj13/free_form.safetensors (the study's model): at configurations its own flow MD
    visited (the study's flow_md_frames.npz), OpenMM's energies and forces equal -log p and its
    gradient by PyTorch autograd of the exact log-determinant, from the encoder read out of the
    same file (1e-10), with det J_V > 0 there."""
    f = load_free_form(SHIPPED)
    with np.load(os.path.join(REPO, "studies", "lj13_free_form", "results", "flow_md_frames.npz")) as d:
        x = d["positions"][:: max(1, len(d["positions"]) // 4)][:4].astype(np.float64)
    _openmm_equals_pytorch(sf, SHIPPED, f, x, platform)


def test_export_only_writes_an_earlier_checkpoint_and_nothing_else(tiny_run, tmp_path):
    from safetensors import safe_open
    run = tiny_run["dir"]
    log_before = (run / "log.jsonl").read_bytes()
    target = tmp_path / "m2.safetensors"
    ptrain.main([tiny_run["config"], "--out", str(run), "--export-only", "--checkpoint",
                 "step_00000002.pt", "--model", str(target)])
    state = torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=False)
    loaded = load_free_form(target)
    assert all(torch.equal(state["f"][k].double(), v) for k, v in loaded.state_dict().items())
    with safe_open(str(target), "np") as f:
        meta = f.metadata()
    assert meta["fff_step"] == "2" and meta["fff_steps"] == "4"
    assert meta["fff_checkpoint"].endswith("step_00000002.pt")
    assert (run / "log.jsonl").read_bytes() == log_before           # the run is not touched
    # the newest by default, and a step-2 model differs from it
    newest = ptrain.export_checkpoint(tiny_run["config"], run, model_path=tmp_path / "m4.safetensors")
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(2, 13, 3)))
    assert not torch.allclose(log_density(load_free_form(newest), x)[0], log_density(loaded, x)[0])


def test_fluctuation_ratio_of_a_harmonic_oscillator_is_exact():
    """Velocity Verlet on U = (k/2)|x|^2 conserves K + (1 - c) U exactly, c = (omega h)^2 / 4, so
    E_tot = K + U fluctuates as c dU and K as -(1 - c) dU: the ratio is c / (1 - c) at every
    sampling. The pipeline's nve_series (which the study reports) must give it."""
    import openmm
    for h, mass, k in ((0.05, 1.0, 1.0), (0.2, 2.0, 3.0)):
        system = openmm.System()
        system.addParticle(mass)
        force = openmm.CustomExternalForce("0.5*k*(x^2+y^2+z^2)")
        force.addGlobalParameter("k", k)
        force.addParticle(0, [])
        system.addForce(force)
        integrator = openmm.VerletIntegrator(h)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions([[1.0, 0.0, -0.5]])
        context.setVelocities([[0.0, 0.7, 0.3]])
        run = nve_series(context, integrator, h * 1000.0, 20.0, 150)
        c = (k / mass) * h * h / 4
        assert run["error"] is None
        assert run["ratio"] == pytest.approx(c / (1 - c), rel=1e-8)


def test_study_on_a_tiny_budget_writes_its_report(sf, tiny_run, lj13_data, tmp_path):
    study = _study()
    model = tmp_path / "early.safetensors"
    ptrain.export_checkpoint(tiny_run["config"], tiny_run["dir"], "step_00000002.pt", model)
    out = tmp_path / "out"
    result = study.run_study(model, data=lj13_data, out=out, dt_tau=(0.002, 0.005), tau=0.05, starts=2,
                             samples=10, langevin_tau=0.1, frame_every=0.02, nll_frames=6,
                             timing_repeats=1, progress=False)
    text = (out / "report.md").read_text()
    for name in ("fluctuation_ratio_vs_dt.png", "total_energy.png", "pair_distances.png", "results.json"):
        assert (out / name).stat().st_size > 0
    assert "Early checkpoint (step 2 of 4)" in text
    assert "| dt (tau) | flow ratio / true ratio | within 2x |" in text
    assert "| potential | dt (tau) | RMS dE_tot / RMS dE_kin | drift (kT per 1000 tau) |" in text
    rows = {(r["potential"], r["dt_fs"]): r for r in result["summary"]}
    assert set(rows) == {(p, dt) for p in ("flow", "true LJ13") for dt in (2.0, 5.0)}
    assert all(r["runs"] == 2 and r["failed"] == 0 and r["ratio"] > 0 for r in rows.values())
    for dt in (2.0, 5.0):        # the flow / true column is the ratio of the two rows
        assert result["relative"]["flow"][str(dt)] == pytest.approx(rows[("flow", dt)]["ratio"] /
                                                                   rows[("true LJ13", dt)]["ratio"])
    assert set(result["slopes"]) == {"flow", "true LJ13"}
    h = result["histograms"]
    assert h["flow_frames"] == h["true_frames"] == 5
    assert sum(h["flow_histogram"]) == pytest.approx(1.0) and 0 <= h["flow_vs_reference"]["l1"] <= 2
    # every flow configuration saved was checked: 5 Langevin frames + the last of 4 NVE runs
    assert result["det_sign"]["frames"] == 9
    assert np.load(out / "flow_md_frames.npz")["positions"].shape == (9, 13, 3)
    assert result["nll"]["frames"] == 6 and math.isfinite(result["nll"]["nll"])
    t = result["timing"]
    assert t["max_energy_difference"] < 1e-9 and t["pytorch_autograd_s"] > 0
    assert result["model"]["step"] == 2 and result["model"]["steps"] == 4


def test_histogram_distances_known_answers():
    study = _study()
    a = np.array([1.0, 1.02, 2.0, 2.01])
    assert study.histogram_distances(a, a) == {"l1": 0.0, "w1": 0.0}
    far = study.histogram_distances(a, a + 3.0)
    assert far["l1"] == pytest.approx(2.0) and far["w1"] == pytest.approx(3.0)
    x = np.zeros((2, 3, 3))
    x[:, 1, 0], x[:, 2, 1] = 3.0, 4.0                                 # a 3-4-5 triangle
    assert sorted(study.pair_distances(x)[:3]) == pytest.approx([3.0, 4.0, 5.0])
    assert study.start_frames(np.zeros((10, 13, 3)), 3) == [0, 3, 6]
    rows = [{"potential": "p", "dt_fs": dt, "ratio": 0.5 * dt ** 2 * (4.0 if dt > 5 else 1.0), "failed": 0}
            for dt in (1.0, 2.0, 5.0, 10.0)]
    slopes = [v for _, _, v in study.local_slopes(rows)["p"]]
    assert slopes == pytest.approx([2.0, 2.0, 4.0])                  # leaves dt^2 between 5 and 10 fs
