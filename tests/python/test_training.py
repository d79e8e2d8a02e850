"""Training infrastructure: the OpenMM bridge, the losses, the Trainer (log, checkpoints,
bit-identical resume, export), the JSON config.

Small and fast (a 6-atom chain with a harmonic OpenMM target); one thread.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")

from smoothflow_torch import load_model, read_model_bytes, testing  # noqa: E402
from smoothflow_torch.openmm_bridge import OpenMMEnergy, linlog_cut  # noqa: E402
from smoothflow_torch.training import (TrainConfig, Trainer, force_matching, learning_rate,  # noqa: E402
                                       nll, reverse_kl, sampling_efficiency, tail_matching,
                                       alpha_divergence)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
N = 6


def chain_system(n=N):
    """Harmonic bonds and angles and a threefold torsion on a carbon chain 0-1-...-(n-1)."""
    s = openmm.System()
    for _ in range(n):
        s.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    for i in range(n - 1):
        bonds.addBond(i, i + 1, 0.155, 2.0e4)
    angles = openmm.HarmonicAngleForce()
    for i in range(n - 2):
        angles.addAngle(i, i + 1, i + 2, 1.91, 300.0)
    torsions = openmm.PeriodicTorsionForce()
    for i in range(n - 3):
        torsions.addTorsion(i, i + 1, i + 2, i + 3, 3, 0.0, 2.0)
    for f in (bonds, angles, torsions):
        s.addForce(f)
    return s


def make_flow(seed=0):
    """One architecture (a 6-atom chain, generative and density layers, so both directions
    are trained); ``seed`` picks the random weights."""
    flow = testing.chain_flow(N, seed=0, n_layers=4, n_components=3, hidden=(8,),
                              directions="mixed")
    return flow if seed == 0 else testing.randomize_weights(flow, seed=seed)


@pytest.fixture(scope="module")
def target():
    return OpenMMEnergy(chain_system(), temperature=300.0, high_energy=1.0e4)


@pytest.fixture(scope="module")
def dataset(target):
    flow = make_flow(seed=5)
    x = testing.random_positions(flow, 64, seed=3)
    _, f, ok = target.evaluate(x.numpy())
    assert ok.all()
    return x, torch.from_numpy(f)


def small_config(**kw):
    c = dict(name="chain", seed=3, iterations=6, batch_size=8, reverse_kl_batch_size=6,
             weights={"nll": 1.0, "force_matching": 1e-3, "reverse_kl": 0.5}, lr=3e-3,
             warmup=2, eval_every=3, eval_frames=10, eval_samples=8, checkpoint_every=2,
             keep_checkpoints=2, progress=False)
    c.update(kw)
    return TrainConfig(**c)


def make_trainer(tmp, target, dataset, seed=0, **kw):
    x, f = dataset
    return Trainer(make_flow(seed), small_config(**kw), tmp,
                   train_data=(x[:48], f[:48]), test_data=(x[48:], f[48:]), target=target,
                   provenance={"test": True})


# ---------------------------------------------------------------- the OpenMM bridge
def test_bridge_matches_openmm_and_gradient_is_minus_forces(target, dataset):
    x = dataset[0][:3].clone()
    ctx = openmm.Context(target.system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    E_ref, F_ref = [], []
    for xb in x.numpy():
        ctx.setPositions(xb)
        st = ctx.getState(getEnergy=True, getForces=True)
        E_ref.append(st.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
        F_ref.append(st.getForces(asNumpy=True).value_in_unit(
            openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))
    E, F, ok = target.evaluate(x.numpy())
    assert ok.all()
    np.testing.assert_array_equal(E, E_ref)
    np.testing.assert_array_equal(F, np.array(F_ref))
    xg = x.clone().requires_grad_(True)
    u = target(xg)
    np.testing.assert_allclose(u.detach().numpy(), np.array(E_ref) / target.kT, rtol=1e-14)
    (g,) = torch.autograd.grad(u.sum(), xg)
    np.testing.assert_allclose(g.numpy(), -np.array(F_ref) / target.kT, rtol=1e-14, atol=0)
    # and OpenMM's forces are the gradient of its energy (finite differences)
    assert torch.autograd.gradcheck(lambda y: target.energy(y), (x[:2].clone().requires_grad_(True),),
                                    eps=1e-6, atol=1e-4, rtol=1e-5)


def test_bridge_cut_and_invalid(dataset):
    bridge = OpenMMEnergy(chain_system(), temperature=300.0)
    x = dataset[0][:4].clone()
    E, F, _ = bridge.evaluate(x.numpy())
    u = E / bridge.kT
    bridge.high_energy = float(np.median(u))        # two above, two below the cut
    x[3, 2, 0] = float("nan")                      # a broken configuration
    xg = x.requires_grad_(True)
    uc = bridge(xg)
    assert math.isinf(uc[3].item()) and uc[3].item() > 0
    assert bridge.last_n_invalid == 1
    cut, slope = linlog_cut(u[:3], bridge.high_energy)
    np.testing.assert_allclose(uc[:3].detach().numpy(), cut, rtol=1e-14)
    loss = torch.where(torch.isfinite(uc), uc, torch.zeros_like(uc)).sum()
    (g,) = torch.autograd.grad(loss, xg)
    np.testing.assert_allclose(g[:3].numpy(), -F[:3] / bridge.kT * slope[:, None, None], rtol=1e-13)
    assert torch.all(g[3] == 0)
    # C1 at the join, logarithmic above
    c, s = linlog_cut(np.array([1.0, 1.0 + 1e-9, 1.0 + 1e10]), 1.0)
    assert c[1] - c[0] == pytest.approx(1e-9, rel=1e-6) and s[2] == pytest.approx(1e-10)
    assert c[2] == pytest.approx(1.0 + math.log1p(1e10))


# ---------------------------------------------------------------- losses
def test_losses(target, dataset):
    x, f = dataset[0][:8], dataset[1][:8]
    flow = make_flow()
    assert nll(flow, x).item() == pytest.approx(-flow.log_prob(x).mean().item(), rel=1e-14)
    fm, nl = force_matching(flow, x, f, return_nll=True)
    _, F = flow.energy_and_forces(x)
    assert fm.item() == pytest.approx((((F - f) / flow.kT) ** 2).mean().item(), rel=1e-12)
    assert nl.item() == pytest.approx(nll(flow, x).item(), rel=1e-12)
    fm_kj = force_matching(flow, x, f, units="kJ/mol/nm")
    assert fm_kj.item() == pytest.approx(fm.item() * flow.kT ** 2, rel=1e-12)
    g = torch.Generator().manual_seed(1)
    rkl, info = reverse_kl(flow, target, 6, generator=g, return_info=True)
    xs, lq = flow.sample(6, generator=torch.Generator().manual_seed(1), return_log_prob=True)
    u = target.reduced_energy(xs.detach(), cut=True)
    assert rkl.item() == pytest.approx((u + lq).mean().item(), rel=1e-10)
    assert info["n_invalid"] == 0
    for loss in (fm, rkl):
        grads = torch.autograd.grad(loss, list(flow.parameters()), allow_unused=True)
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)
        assert all(gr is None or torch.isfinite(gr).all() for gr in grads)
    assert sampling_efficiency(torch.zeros(5)) == pytest.approx(1.0)
    assert sampling_efficiency(torch.tensor([0.0, -math.inf])) == pytest.approx(0.5)


# ---------------------------------------------------------------- config
def test_config_round_trip(tmp_path):
    c = small_config(model={"hidden": [4, 4]}, data={"setting": "x"}, notes="n")
    c.save(tmp_path / "c.json")
    d = TrainConfig.load(tmp_path / "c.json")
    assert d == c and d.to_dict() == c.to_dict()
    raw = json.loads((tmp_path / "c.json").read_text())
    raw["_comment"] = "ignored"
    (tmp_path / "c.json").write_text(json.dumps(raw))
    assert TrainConfig.load(tmp_path / "c.json") == c
    with pytest.raises(ValueError, match="unknown config fields"):
        TrainConfig.from_dict({**c.to_dict(), "itertions": 3})
    with pytest.raises(ValueError, match="unknown losses"):
        TrainConfig(weights={"nll": 1.0, "kl": 1.0})
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="at least one"):
        TrainConfig(weights={"nll": 0.0})
    c = TrainConfig(iterations=10, lr=1.0, lr_min=0.0, warmup=2)
    lrs = [learning_rate(c, s) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0 and lrs[-1] < lrs[5] < 1.0


# ---------------------------------------------------------------- the Trainer
LOSS_KEYS = ("loss", "nll", "force_matching", "reverse_kl")


def _train_entries(path):
    return [e for e in Trainer.read_log(path) if e["kind"] == "train"]


def _assert_held_out(entry, flow, x, f, weights=None):
    """An eval log entry's test NLL (nats) and force RMSE (kJ/mol/nm), recomputed from the
    flow's log density and forces on the frames it should have used (weighted means)."""
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else torch.as_tensor(weights)
    E, F = flow.energy_and_forces(x)
    nll_ = -(w * flow.log_prob(x).detach()).sum() / w.sum()
    rmse = torch.sqrt((w * ((F - f) ** 2).sum((1, 2))).sum() / (w.sum() * flow.n_atoms * 3))
    assert entry["n_outside"] == 0
    assert entry["test_nll"] == pytest.approx(float(nll_), rel=1e-10)
    assert entry["test_force_rmse"] == pytest.approx(float(rmse), rel=1e-10)


def test_training_log_checkpoint_export(tmp_path, target, dataset):
    tr = make_trainer(tmp_path / "run", target, dataset)
    summary = tr.train()
    assert summary["completed"] and summary["steps"] == 6
    log = Trainer.read_log(tmp_path / "run" / "log.jsonl")
    train = [e for e in log if e["kind"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 7))
    for e in train:
        for k in LOSS_KEYS + ("lr", "grad_norm", "force_rmse", "rkl_invalid", "time"):
            assert k in e and math.isfinite(e[k]), (k, e)
        assert not e["skipped"]
        w = tr.config.weights
        assert e["loss"] == pytest.approx(w["nll"] * e["nll"] + w["force_matching"] *
                                          e["force_matching"] + w["reverse_kl"] * e["reverse_kl"])
    evals = [e for e in log if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [0, 3, 6]
    for e in evals:
        assert {"test_nll", "test_force_rmse", "sampling_efficiency", "n_outside"} <= set(e)
    # the held-out numbers of the first and last evaluation, recomputed: eval_frames = 10
    # evenly spaced frames of the 16 held-out ones, by the initial and by the exported flow
    x_test, f_test = dataset[0][48:], dataset[1][48:]
    idx = np.linspace(0, 15, 10).round().astype(int)
    for e, ref in ((evals[0], make_flow()), (evals[-1], load_model(tmp_path / "run" / "model.safetensors"))):
        _assert_held_out(e, ref, x_test[idx], f_test[idx])
    assert train[0]["lr"] < train[1]["lr"]           # warmup
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == tr.config.to_dict()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step_00000004.pt", "step_00000006.pt"]
    # export: a valid model file with the weights and the provenance
    flow = load_model(tmp_path / "run" / "model.safetensors")
    for k, v in tr.flow.state_dict().items():
        assert torch.equal(flow.state_dict()[k], v)
    _, meta, _ = read_model_bytes((tmp_path / "run" / "model.safetensors").read_bytes())
    prov = json.loads(meta["training"])
    assert prov["config"] == tr.config.to_dict() and prov["steps"] == 6 and prov["test"] is True
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 6
    # the training changed the weights and the losses are deterministic
    assert not all(torch.equal(a, b) for a, b in zip(flow.parameters(), make_flow().parameters()))


def test_resume_is_bit_identical(tmp_path, target, dataset):
    """Checkpoint + resume repeats the uninterrupted run exactly (same weights, same losses),
    also after a crash that lost the newest checkpoint (the log is cut back and redone) and
    under a new run name (a pilot continued as the real run)."""
    full = make_trainer(tmp_path / "full", target, dataset)
    full.train()
    ref = _train_entries(tmp_path / "full" / "log.jsonl")

    part = make_trainer(tmp_path / "part", target, dataset)
    s = part.train(stop_at=3)
    assert not s["completed"] and not (tmp_path / "part" / "model.safetensors").exists()
    # a new process: fresh objects, a differently initialized flow
    more = make_trainer(tmp_path / "part", target, dataset, seed=9)
    more.train(stop_at=5)
    (tmp_path / "part" / "checkpoints" / "step_00000005.pt").unlink()   # lost in a crash
    last = make_trainer(tmp_path / "part", target, dataset, seed=11, name="renamed")
    last.train()
    assert last.step == 6
    for a, b in zip(full.flow.state_dict().values(), last.flow.state_dict().values()):
        assert torch.equal(a, b)
    got = _train_entries(tmp_path / "part" / "log.jsonl")
    assert [e["step"] for e in got] == list(range(1, 7))
    for e, r in zip(got, ref):
        for k in LOSS_KEYS + ("lr", "grad_norm"):
            assert e[k] == r[k], (k, e["step"])
    # a changed training setting refuses to resume
    changed = Trainer(make_flow(), small_config(lr=1e-2), tmp_path / "part",
                      train_data=(dataset[0], dataset[1]), target=target)
    with pytest.raises(ValueError, match="lr"):
        changed.train()


def test_resume_accepts_a_refitted_prior_only_to_the_last_bits(tmp_path, target, dataset):
    """A data-fitted prior refitted on another CPU differs in the last bits (BLAS sums): a resume
    takes the checkpoint's prior then (the flow's density is the checkpoint's exactly); a prior
    that differs more, or any other part of the flow, is refused by name."""
    x, f = dataset

    def trainer(prior, directory):
        flow = testing.chain_flow(N, seed=0, n_layers=4, n_components=3, hidden=(8,), directions="mixed",
                                  prior=prior)
        return Trainer(flow, small_config(), directory, train_data=(x[:48], f[:48]),
                       test_data=(x[48:], f[48:]), target=target)

    base = testing.chain_flow(N, seed=0, n_layers=4, n_components=3, hidden=(8,), directions="mixed",
                              prior="von_mises").prior
    first = trainer(base, tmp_path / "run")
    first.train(stop_at=2)

    def shifted(rel):
        p = json.loads(json.dumps(base))
        p["torsion_kappa"] = [k * (1 + rel) for k in p["torsion_kappa"]]
        p["mean"] = [m * (1 - rel) for m in p["mean"]]
        return p

    near = trainer(shifted(3e-14), tmp_path / "run")
    assert near.flow.prior != base
    near.load_checkpoint(first.checkpoints()[-1])
    assert near.flow.prior == base
    assert torch.equal(near.flow.torsion_kappa, first.flow.torsion_kappa)
    assert torch.equal(near.flow.prior_mean, first.flow.prior_mean)
    assert torch.equal(near.flow.log_prob(x[:8]), first.flow.log_prob(x[:8]))
    far = trainer(shifted(1e-6), tmp_path / "run")
    with pytest.raises(ValueError, match="differs from this run's in prior"):
        far.load_checkpoint(first.checkpoints()[-1])
    other = Trainer(testing.chain_flow(N, seed=0, n_layers=4, n_components=3, hidden=(8,), directions="mixed",
                                       prior=base, temperature=310.0),
                    small_config(), tmp_path / "run", train_data=(x[:48], f[:48]), target=target)
    with pytest.raises(ValueError, match="differs from this run's in temperature"):
        other.load_checkpoint(first.checkpoints()[-1])


def test_trainer_skips_non_finite_steps(tmp_path, dataset):
    """A target that is +inf everywhere gives a NaN reverse KL: the step is skipped, logged."""
    x, f = dataset
    inf_target = lambda y: torch.full((y.shape[0],), float("inf"), dtype=y.dtype) + 0 * y.sum()
    tr = Trainer(make_flow(), small_config(iterations=2, eval_every=0, eval_samples=0,
                                           weights={"nll": 1.0, "reverse_kl": 1.0}),
                 tmp_path, train_data=(x, f), target=inf_target)
    before = [p.detach().clone() for p in tr.flow.parameters()]
    tr.train(export=False)
    e = _train_entries(tmp_path / "log.jsonl")
    assert all(r["skipped"] and r["rkl_invalid"] == 6 for r in e) and tr.n_skipped == 2
    assert all(torch.equal(a, b) for a, b in zip(before, tr.flow.parameters()))


def _poison_translated_frames(flow, seen):
    """Make the flow's density exactly zero (energy +inf, forces finite) at frames translated
    by +50 nm in x, and record every batch it is asked about. Translation does not change
    internal coordinates, so the other frames are untouched."""
    original = flow.reduced_terms

    def poisoned(positions, box=None):
        seen.append(torch.as_tensor(positions).detach().clone())
        t = dict(original(positions, box))
        far = torch.as_tensor(positions)[:, 0, 0].detach() > 25.0
        t["log_prob_u"] = t["log_prob_u"] + torch.where(far, float("-inf"), 0.0)
        return t
    flow.reduced_terms = poisoned


@pytest.mark.parametrize("all_bad", [False, True])
def test_trainer_leaves_non_finite_frames_out_of_the_step(tmp_path, dataset, all_bad):
    """A frame with infinite energy costs the step that frame, not the whole batch: the logged
    likelihood is the untouched flow's mean over the batch's other frames; a batch with none
    left is skipped with the weights unchanged."""
    x, f = dataset
    x = x[:48].clone()
    bad = torch.ones(48, dtype=torch.bool) if all_bad else torch.arange(48) % 2 == 0
    x[bad, :, 0] += 50.0
    flow, seen = make_flow(), []
    _poison_translated_frames(flow, seen)
    tr = Trainer(flow, small_config(iterations=1, eval_every=0, eval_samples=0,
                                    weights={"nll": 1.0, "force_matching": 1e-3}),
                 tmp_path, train_data=(x, f[:48]))
    before = [p.detach().clone() for p in make_flow().parameters()]
    tr.train(export=False)
    (e,) = _train_entries(tmp_path / "log.jsonl")
    batch = seen[0]
    n_bad = int((batch[:, 0, 0] > 25.0).sum())
    assert e["data_invalid"] == n_bad and n_bad >= 1
    if all_bad:
        assert e["skipped"] and tr.n_skipped == 1
        assert all(torch.equal(a, b) for a, b in zip(before, tr.flow.parameters()))
        return
    assert not e["skipped"] and n_bad < len(batch)
    good = batch[batch[:, 0, 0] <= 25.0]
    with torch.no_grad():
        expected = -make_flow().log_prob(good).mean()
    assert e["nll"] == pytest.approx(float(expected), rel=1e-12)
    assert math.isfinite(e["force_matching"]) and math.isfinite(e["grad_norm"])
    assert not all(torch.equal(a, b) for a, b in zip(before, tr.flow.parameters()))


@pytest.mark.parametrize("kind", ["spline", "affine", ["smooth", "spline", "affine", "smooth"]])
def test_trainer_any_transform_kind(tmp_path, target, dataset, kind):
    """The Trainer trains the baselines (and mixed stacks) with all three losses: each step's
    loss is the weighted sum of its terms, the weights move, and the exported model is the
    trained flow, whose held-out numbers the last evaluation reports."""
    flow = testing.chain_flow(N, seed=0, n_layers=4, n_components=3, hidden=(8,),
                              directions="mixed", transform=kind)
    assert [L.transform for L in flow.layers] == (kind if isinstance(kind, list) else [kind] * 4)
    x, f = dataset
    tr = Trainer(flow, small_config(iterations=2, eval_every=2, checkpoint_every=0),
                 tmp_path, train_data=(x[:48], f[:48]), test_data=(x[48:], f[48:]),
                 target=target)
    before = [p.detach().clone() for p in flow.parameters()]
    tr.train()
    e = _train_entries(tmp_path / "log.jsonl")
    assert [r["step"] for r in e] == [1, 2] and not any(r["skipped"] for r in e)
    w = tr.config.weights
    for r in e:
        assert r["loss"] == pytest.approx(sum(w[k] * r[k] for k in LOSS_KEYS[1:]), rel=1e-12)
    assert not all(torch.equal(a, b) for a, b in zip(before, flow.parameters()))
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.config() == flow.config()
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in loaded.state_dict().items())
    last = [r for r in Trainer.read_log(tmp_path / "log.jsonl") if r["kind"] == "eval"][-1]
    idx = np.linspace(0, 15, 10).round().astype(int)
    assert last["step"] == 2
    _assert_held_out(last, loaded, x[48:][idx], f[48:][idx])


def test_frame_weights_steer_batches_and_weight_the_evaluation(tmp_path, target, dataset):
    """Batches are drawn in proportion to frame weights (a zero-weight frame is never drawn),
    and the held-out NLL and force RMSE are weighted means."""
    x, f = dataset
    w = torch.zeros(48, dtype=torch.float64)
    w[5] = 1.0                                       # every batch is frame 5 only
    tw = torch.tensor([3.0] + [1.0] * 15, dtype=torch.float64)
    tr = Trainer(make_flow(), small_config(iterations=1, eval_every=0, eval_samples=0, lr=1e-12,
                                           weights={"nll": 1.0}, eval_frames=0),
                 tmp_path, train_data=(x[:48], f[:48], w), test_data=(x[48:], f[48:], tw))
    entry = tr.train_step()
    expected = float(-tr.flow.log_prob(x[5:6]).mean().detach())
    assert entry["nll"] == pytest.approx(expected, rel=1e-9)
    ev = tr.evaluate()
    with torch.no_grad():
        per_frame = -tr.flow.log_prob(x[48:])
    assert ev["test_nll"] == pytest.approx(float((tw * per_frame).sum() / tw.sum()), rel=1e-9)
    with pytest.raises(ValueError, match="weights"):
        Trainer(make_flow(), small_config(), tmp_path / "bad", train_data=(x, f, -torch.ones(64)),
                target=target)


def test_noisy_force_matching_uses_the_targets_forces_at_displaced_frames(tmp_path, target, dataset):
    """With force_matching_noise the FM term compares against the target's forces at the
    displaced frames: the logged RMSE equals one recomputed from the same noise draw."""
    x, f = dataset
    cfg = small_config(iterations=1, eval_every=0, eval_samples=0, lr=1e-12, batch_size=4,
                       weights={"nll": 1.0, "force_matching": 1.0}, force_matching_noise=0.003)
    tr = Trainer(make_flow(), cfg, tmp_path, train_data=(x[:48], f[:48]), target=target)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = torch.randint(48, (4,), generator=g)
    xn = x[idx] + 0.003 * torch.randn(x[idx].shape, generator=g, dtype=x.dtype)
    _, fn, ok = target.evaluate(xn.numpy())
    _, F = tr.flow.energy_and_forces(xn)
    rmse = float(((F.detach().numpy() - fn) ** 2).mean() ** 0.5)
    entry = tr.train_step()
    assert ok.all() and entry["fm_invalid"] == 0
    assert entry["force_rmse"] == pytest.approx(rmse, rel=1e-6)
    with pytest.raises(ValueError, match="force_matching_noise"):
        Trainer(make_flow(), cfg, tmp_path / "no_target", train_data=(x, f))


def test_force_matching_extra_frames_are_matched_to_the_targets_forces(tmp_path, target, dataset):
    """With force_matching_extra_batch the FM term also covers that many force_matching_frames
    (displaced like the data's) against the target's forces there: the logged RMSEs equal ones
    recomputed from the same draws, and the term is the mean over both sets of frames."""
    x, f = dataset
    hot = x[48:]                                     # frames no data batch draws
    cfg = small_config(iterations=1, eval_every=0, eval_samples=0, lr=1e-12, batch_size=4,
                       weights={"nll": 1.0, "force_matching": 1.0}, force_matching_noise=0.001,
                       force_matching_extra_batch=3)
    tr = Trainer(make_flow(), cfg, tmp_path, train_data=(x[:48], f[:48]), target=target, force_matching_frames=hot)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = torch.randint(48, (4,), generator=g)
    xn = x[idx] + 0.001 * torch.randn(x[idx].shape, generator=g, dtype=x.dtype)
    jdx = torch.randint(len(hot), (3,), generator=g)
    xe = hot[jdx] + 0.001 * torch.randn(hot[jdx].shape, generator=g, dtype=x.dtype)
    sq = []
    for frames in (xn, xe):
        _, fr, ok = target.evaluate(frames.numpy())
        assert ok.all()
        _, F = tr.flow.energy_and_forces(frames)
        sq.append(float(((F.detach().numpy() - fr) ** 2).mean()))
    entry = tr.train_step()
    assert entry["fm_invalid"] == 0 and entry["fm_extra_invalid"] == 0
    assert entry["force_rmse"] == pytest.approx(sq[0] ** 0.5, rel=1e-6)
    assert entry["force_rmse_extra"] == pytest.approx(sq[1] ** 0.5, rel=1e-6)
    kT = tr.flow.kT
    assert entry["force_matching"] == pytest.approx((4 * sq[0] + 3 * sq[1]) / 7 / kT ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="force_matching_extra_batch"):
        Trainer(make_flow(), cfg, tmp_path / "no_frames", train_data=(x, f), target=target)
    with pytest.raises(ValueError, match="force_matching_extra_batch"):
        Trainer(make_flow(), small_config(), tmp_path / "no_batch", train_data=(x, f), target=target,
                force_matching_frames=hot)
    with pytest.raises(ValueError, match="force_matching_extra_batch"):
        TrainConfig(weights={"nll": 1.0, "force_matching": 1.0}, force_matching_extra_batch=-1)


class _ScaledFlowEnergy:
    """A target whose reduced energy is ``scale`` x the flow's own plus ``shift``: the answers
    of tail_matching are then known (and an optional NaN for the first moved frame)."""

    def __init__(self, flow, scale=1.0, shift=0.0, nan_first=False):
        self.flow, self.scale, self.shift, self.nan_first = flow, scale, shift, nan_first

    def reduced_energy(self, x, cut=False):
        u = self.scale * self.flow.energy(x).detach() / self.flow.kT + self.shift
        if self.nan_first:
            u[len(u) // 2] = float("nan")
        return u


def test_tail_matching_known_answers(dataset):
    """The flow's own energy as target gives zero loss (with and without the cap); a target
    rising k times as fast gives (k - 1)^2 x the loss of a flat-relative one; NaN target
    energies are left out and counted; the moved frames stay inside the wall margin."""
    flow = make_flow()
    flow.set_support("wall", margin=0.01)
    x = dataset[0][:16]
    gen = lambda: torch.Generator().manual_seed(4)
    for cap in (1e6, 1e-3):
        loss, info = tail_matching(flow, _ScaledFlowEnergy(flow, shift=3.0), x, cap=cap,
                                   generator=gen(), return_info=True)
        assert loss.item() == pytest.approx(0.0, abs=1e-16)
        assert info["n_invalid"] == 0 and (info["n_capped"] > 0) == (cap < 1)
    twice = tail_matching(flow, _ScaledFlowEnergy(flow, 2.0), x, cap=1e6, generator=gen())
    thrice = tail_matching(flow, _ScaledFlowEnergy(flow, 3.0), x, cap=1e6, generator=gen())
    assert twice.item() > 0
    assert thrice.item() == pytest.approx(4 * twice.item(), rel=1e-9)
    grads = torch.autograd.grad(twice, list(flow.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    loss, info = tail_matching(flow, _ScaledFlowEnergy(flow, 2.0, nan_first=True), x, cap=1e6,
                               generator=gen(), return_info=True)
    assert info["n_invalid"] == 1 and math.isfinite(loss.item())
    # a capped pair asks only for a rise of at least the cap: a flat flow is penalized by cap^2
    flat = tail_matching(flow, _ScaledFlowEnergy(flow, 0.0, shift=0.0), x, cap=1e6, generator=gen())
    assert flat.item() == pytest.approx(twice.item(), rel=1e-9)   # both are mean(dU_flow^2)
    with pytest.raises(ValueError, match="cap"):
        tail_matching(flow, _ScaledFlowEnergy(flow), x, cap=0.0)


class _RecordingTarget(_ScaledFlowEnergy):
    """Keeps the frames it was asked about."""

    def reduced_energy(self, x, cut=False):
        self.seen = x.detach().clone()
        return super().reduced_energy(x, cut)


def test_tail_matching_moves_torsions_only_when_asked(dataset):
    """torsions=False (the default) moves one bond or angle per frame and never a torsion, and
    draws exactly as before; torsions=True moves one coordinate of any kind, torsions among
    them to anywhere on the circle, and the flow's own energy as target still gives zero loss."""
    flow = make_flow()
    flow.set_support("wall", margin=0.01)
    x = dataset[0][:64]
    nI = flow.n_interval
    for torsions in (False, True):
        t = _RecordingTarget(flow, shift=1.0)
        loss = tail_matching(flow, t, x, cap=1e6, generator=torch.Generator().manual_seed(5), torsions=torsions)
        assert loss.item() == pytest.approx(0.0, abs=1e-16)
        with torch.no_grad():
            u0 = flow.internal_coordinates(t.seen[:64])
            u1 = flow.internal_coordinates(t.seen[64:])
        delta = (u1 - u0).abs()
        delta[:, nI:] = torch.minimum(delta[:, nI:], 1 - delta[:, nI:])     # torsions are periodic
        moved = delta > 1e-9
        assert bool((moved.sum(1) <= 1).all())        # one coordinate per frame (Z-matrix rebuild: exact)
        if torsions:
            assert int(moved[:, nI:].any(1).sum()) > 10          # 19 of 60 dims are torsions
        else:
            assert not bool(moved[:, nI:].any())
    g = torch.Generator().manual_seed(5)
    d_old = torch.randint(nI, (64,), generator=g)
    t = _RecordingTarget(flow, shift=1.0)
    tail_matching(flow, t, x, cap=1e6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        changed = ((flow.internal_coordinates(t.seen[64:]) - flow.internal_coordinates(t.seen[:64])).abs()
                   [:, :nI] > 1e-9).float().argmax(1)
    assert torch.equal(changed, d_old)              # the old stream of draws, unchanged
    with pytest.raises(ValueError, match="tail_matching_torsions"):
        small_config(tail_matching_torsions=1)


def test_tail_matching_in_the_trainer_lowers_its_loss(tmp_path, target, dataset):
    """Trained on tail matching alone against the chain's force field, the flow's energy
    differences for moved bonds and angles move towards the force field's: the loss on a fixed
    set of moves of the training frames falls (the gradient is wired into the Trainer)."""
    x, f = dataset
    cfg = small_config(iterations=60, eval_every=0, eval_samples=0, lr=1e-3, warmup=0, batch_size=32,
                       weights={"nll": 0.0, "force_matching": 0.0, "tail_matching": 1.0},
                       tail_matching_cap=4.0)
    flow = make_flow()
    flow.set_support("wall", margin=0.01)
    tr = Trainer(flow, cfg, tmp_path, train_data=(x[:48], f[:48]), target=target)
    probe = lambda: float(tail_matching(flow, target, x[:48].repeat(4, 1, 1), cap=4.0,
                                        generator=torch.Generator().manual_seed(9)).detach())
    before = probe()
    entries = [tr.train_step() for _ in range(cfg.iterations)]
    assert all("tail_matching" in e and e["tail_invalid"] == 0 for e in entries)
    assert probe() < 0.9 * before
    with pytest.raises(ValueError, match="tail_matching"):
        Trainer(make_flow(), cfg, tmp_path / "no_target", train_data=(x, f))


def test_alpha_divergence_known_answers():
    """The flow's own energy as target: equal weights, ESS 1, and the loss is the samples'
    mean NLL. A target k times the flow's: the loss is the w^alpha-weighted NLL of the same
    samples. Its gradient is that of (alpha - 1)^-1 log of the importance-sampling estimate
    of E_q[w^alpha] from the fixed samples (a wrong power or sign fails). A NaN target energy
    is left out and counted."""
    flow = make_flow()
    gen = lambda: torch.Generator().manual_seed(6)
    n = 12
    with torch.no_grad():
        xs, lq0 = flow.sample(n, generator=gen(), return_log_prob=True)
    loss, info = alpha_divergence(flow, _ScaledFlowEnergy(flow, shift=2.5), n, generator=gen(),
                                  return_info=True)
    assert info["n_invalid"] == 0 and info["ess"] == pytest.approx(1.0, rel=1e-9)
    assert loss.item() == pytest.approx(-flow.log_prob(xs).mean().item(), rel=1e-10)
    for alpha in (2.0, 3.0):
        tgt = _ScaledFlowEnergy(flow, 1.3, shift=-4.0)
        loss, info = alpha_divergence(flow, tgt, n, alpha=alpha, generator=gen(), return_info=True)
        u = tgt.reduced_energy(xs)
        log_w = -u - lq0
        wbar = torch.softmax(alpha * log_w, 0)
        assert loss.item() == pytest.approx(-(wbar * flow.log_prob(xs)).sum().item(), rel=1e-10)
        assert info["ess"] == pytest.approx(sampling_efficiency(log_w), rel=1e-12)
        assert info["ess"] < 0.999
        params = [p for p in flow.parameters() if p.requires_grad]
        g_loss = torch.autograd.grad(loss, params, allow_unused=True)
        # E_q[w^alpha] ~ mean_i exp(-alpha u_i) q_theta(x_i)^(1 - alpha) / q_theta0(x_i)
        log_est = torch.logsumexp(-alpha * u + (1 - alpha) * flow.log_prob(xs) - lq0, 0) / (alpha - 1)
        g_est = torch.autograd.grad(log_est, params, allow_unused=True)
        pairs = [(a, b) for a, b in zip(g_loss, g_est) if a is not None or b is not None]
        assert any(a.abs().sum() > 0 for a, _ in pairs)
        for a, b in pairs:
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    loss, info = alpha_divergence(flow, _ScaledFlowEnergy(flow, 1.3, nan_first=True), n,
                                  generator=gen(), return_info=True)
    assert info["n_invalid"] == 1 and math.isfinite(loss.item())
    with pytest.raises(ValueError, match="alpha"):
        alpha_divergence(flow, _ScaledFlowEnergy(flow), n, alpha=1.0)


def test_alpha_divergence_in_the_trainer(tmp_path, target, dataset):
    """Wired into the Trainer: logged with the batch's ESS and largest weight, weighted into
    the loss, refused without a target, and the config's alpha validated."""
    x, f = dataset
    cfg = small_config(iterations=3, eval_every=0, eval_samples=0, alpha_batch_size=6, alpha=2.0,
                       weights={"nll": 1.0, "alpha_divergence": 0.5})
    tr = Trainer(make_flow(), cfg, tmp_path, train_data=(x[:48], f[:48]), target=target)
    for _ in range(3):
        e = tr.train_step()
        assert not e["skipped"] and e["alpha_invalid"] == 0 and 0 < e["alpha_ess"] <= 1
        assert e["loss"] == pytest.approx(e["nll"] + 0.5 * e["alpha_divergence"], rel=1e-12)
    with pytest.raises(ValueError, match="alpha_divergence"):
        Trainer(make_flow(), cfg, tmp_path / "no_target", train_data=(x, f))
    for bad in (1.0, 0.5, float("inf"), True):
        with pytest.raises(ValueError, match="alpha"):
            small_config(alpha=bad)


def test_force_matching_starts_at_force_matching_from(tmp_path, target, dataset):
    x, f = dataset
    cfg = small_config(iterations=4, eval_every=0, eval_samples=0, force_matching_from=2,
                       weights={"nll": 1.0, "force_matching": 1e-3})
    tr = Trainer(make_flow(), cfg, tmp_path, train_data=(x[:48], f[:48]), target=target)
    entries = [tr.train_step() for _ in range(4)]
    assert ["force_matching" in e for e in entries] == [False, False, True, True]
    assert entries[0]["loss"] == pytest.approx(entries[0]["nll"], rel=1e-12)
    assert entries[3]["loss"] == pytest.approx(entries[3]["nll"] + 1e-3 * entries[3]["force_matching"], rel=1e-12)
    with pytest.raises(ValueError, match="force_matching_from"):
        small_config(force_matching_from=-1)
