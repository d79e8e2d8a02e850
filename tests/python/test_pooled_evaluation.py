"""The pooled importance-weight evaluation (evaluate.py --weights-only --seeds) end to end on the
shipped smooth flow at a tiny budget (2 sets of 200 samples, a few seconds), checked against an
independent recomputation from the saved sets."""
import json
from pathlib import Path

import numpy as np
import pytest

from alanine_dipeptide import data, evaluate, forcefield, results_report
from alanine_dipeptide import weights as W

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "alanine_dipeptide" / "smooth.safetensors"
N, SEEDS = 200, (1, 2)   # seeds whose pooled ESS/n and mean per-set ESS/n differ in the report (47.5, 47.6 %)


def run(tmp_path, *extra):
    return evaluate.main([str(MODEL), "--weights-only", "--seeds", str(len(SEEDS)), "--seed", str(SEEDS[0]),
                          "--samples", str(N), "--batch", "100", "--sets", str(tmp_path / "sets"),
                          "--out", str(tmp_path / "out"), "--report", str(tmp_path / "weights.md"), *extra])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pooled")
    return tmp, run(tmp)[0]


def test_pooled_statistics_match_a_recomputation_from_the_saved_sets(evaluated):
    tmp, result = evaluated
    files = [evaluate.sample_set_path(tmp / "sets", MODEL, "obc", N, s) for s in SEEDS]
    assert all(f.exists() for f in files)
    sets = [dict(np.load(f)) for f in files]
    # log w = -E_ff / kT - log q, by hand; ESS/n = (sum w)^2 / (n sum w^2) over the union
    lw = [-s["energy"] / forcefield.KT - s["log_q"] for s in sets]
    pooled = np.concatenate(lw)
    w = np.exp(pooled - pooled.max())
    p = result["pooled"]
    assert p["ess"]["pooled"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum() / (2 * N), rel=1e-10)
    for got, l in zip(p["ess"]["per_set"], lw):
        v = np.exp(l - l.max())
        assert got == pytest.approx(v.sum() ** 2 / (v ** 2).sum() / N, rel=1e-10)
    assert p["k_hat"] == pytest.approx(W.pareto_k_hat(pooled), abs=1e-12)
    # the heaviest samples: order, their set and index, angles in degrees and energies
    order = np.argsort(w)[::-1][:10]
    assert [(t["set"] * N + t["index"]) for t in p["largest"]] == order.tolist()
    for t in p["largest"]:
        s = sets[t["set"]]
        assert t["seed"] == SEEDS[t["set"]]
        assert t["phi_deg"] == pytest.approx(np.degrees(s["phi"][t["index"]]))
        assert t["psi_deg"] == pytest.approx(np.degrees(s["psi"][t["index"]]))
        assert t["energy_kj_mol"] == pytest.approx(s["energy"][t["index"]])
        assert t["relative_to_mean"] == pytest.approx(w[t["set"] * N + t["index"]] / w.mean(), rel=1e-10)
    phi_pos = np.concatenate([s["phi"] > 0 for s in sets])
    assert p["fraction"]["estimate"] == pytest.approx(np.sum(w * phi_pos) / w.sum(), rel=1e-10)
    ref = data.load_reference("obc")
    assert p["reference_phi_positive"] == pytest.approx(np.average(ref.phi > 0, weights=ref.weights))


def test_the_heaviest_sample_is_the_flow_sample_of_its_seed_and_index(evaluated):
    """Regenerate the heaviest sample from its seed: the stored energy and angles are its own."""
    from smoothflow_torch import load_model
    tmp, result = evaluated
    top = result["pooled"]["largest"][0]
    x, log_q = evaluate.sample_flow(load_model(MODEL), N, top["seed"], batch=100)
    i = top["index"]
    energy = evaluate.ForceFieldEnergy("obc")(x[i:i + 1])[0]
    phi, psi = data.backbone_dihedrals(x[i:i + 1])
    assert energy == pytest.approx(top["energy_kj_mol"], abs=1e-6)
    assert np.degrees(phi[0]) == pytest.approx(top["phi_deg"], abs=1e-9)
    assert np.degrees(psi[0]) == pytest.approx(top["psi_deg"], abs=1e-9)


def test_report_and_json_carry_the_pooled_numbers(evaluated):
    tmp, result = evaluated
    p = result["pooled"]
    saved = json.loads((tmp / "out" / "importance_weights.json").read_text())
    assert saved["results"][0]["pooled"]["ess"]["pooled"] == pytest.approx(p["ess"]["pooled"], rel=1e-12)
    assert saved["meta"]["seeds"] == list(SEEDS)
    text = (tmp / "weights.md").read_text()
    row = next(l for l in text.splitlines() if l.startswith("| smooth | 400 |"))
    pct = results_report._percent_number
    assert pct(p["ess"]["pooled"]) != pct(p["ess"]["mean"])   # else the row cannot tell them apart
    assert f"| {pct(p['ess']['pooled'])} % |" in row
    assert f"({pct(p['ess']['min'])}-{pct(p['ess']['max'])} %)" in row
    lo, hi = p["fraction"]["interval"]
    assert f"{100 * p['fraction']['estimate']:.2f} % ({100 * lo:.2f}-{100 * hi:.2f} %)" in row
    assert f"| {100 * p['reference_phi_positive']:.2f} % |" in row
    heavy = [l for l in text.splitlines() if l.startswith("| smooth | 1 |")]
    assert len(heavy) == 1 and f"| {p['largest'][0]['phi_deg']:.0f} | {p['largest'][0]['psi_deg']:.0f} |" in heavy[0]


def test_a_rerun_reuses_saved_sets_and_computes_only_missing_ones(evaluated, monkeypatch):
    tmp, result = evaluated
    drawn = []
    real = evaluate.sample_flow
    monkeypatch.setattr(evaluate, "sample_flow", lambda flow, n, seed, batch: drawn.append(seed) or real(
        flow, n, seed, batch))
    again = run(tmp)[0]
    assert drawn == []
    assert again["pooled"]["ess"] == result["pooled"]["ess"]
    evaluate.sample_set_path(tmp / "sets", MODEL, "obc", N, SEEDS[1]).unlink()
    third = run(tmp)[0]
    assert drawn == [SEEDS[1]]                          # only the missing set is drawn again
    assert third["pooled"]["ess"]["pooled"] == pytest.approx(result["pooled"]["ess"]["pooled"], rel=1e-12)


def test_a_set_saved_with_another_sample_count_is_refused(tmp_path):
    f = evaluate.sample_set_path(tmp_path, MODEL, "obc", 50, 1)
    f.parent.mkdir(parents=True)
    np.savez(f, log_q=np.zeros(3), energy=np.zeros(3), phi=np.zeros(3), psi=np.zeros(3))
    with pytest.raises(ValueError, match="remove it"):
        evaluate.sample_set(None, MODEL, None, "obc", 50, 1, tmp_path)


def test_full_report_gains_the_pooled_table_when_results_carry_it(tmp_path):
    pooled = {"ess": {"pooled": 0.3, "per_set": [0.2, 0.4], "n_total": 20, "mean": 0.3, "std": 0.14,
                      "min": 0.2, "max": 0.4},
              "k_hat": 0.81, "k_hat_per_set": [0.9, 0.3],
              "largest": [{"set": 1, "index": 4, "weight": 0.5, "relative_to_mean": 10.0, "seed": 8,
                           "phi_deg": 50.0, "psi_deg": -96.0, "energy_kj_mol": -80.0}],
              "fraction": {"estimate": 0.05, "stderr": 0.01, "interval": [0.03, 0.07], "level": 0.95},
              "fraction_per_set": [0.01, 0.09], "reference_phi_positive": 0.02}
    r = {"label": "smooth", "transform": "smooth", "nll_nats": -218.5, "force_rmse_kj_mol_nm": 73.6,
         "sampling_efficiency": 0.4139, "sampling_efficiency_95": [0.3911, 0.4389],
         "kl_phi_psi_flow": 0.03, "kl_phi_psi_reweighted": 0.04, "phi_positive_fraction_flow": 0.018,
         "phi_positive_fraction_reweighted": 0.022, "well_depth_bonds_kj_mol": 160.0,
         "well_depth_angles_kj_mol": 320.0, "well_depth_median_kj_mol": 229.0, "shallowest_well": "bond 12-10",
         "stiffness_ratio_bonds": 1.0, "stiffness_ratio_angles": 0.93, "pooled": pooled}
    meta = {"date": "d", "commit": "c", "machine": "m", "samples": 10, "seeds": [7, 8], "test_frames": 5,
            "setting": "obc", "reference_phi_positive": 0.02}
    results_report.write_report([r], meta, tmp_path, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "## Importance weights pooled over independent sample sets" in text
    assert ("| smooth | 20 | 30 % | 30 +- 14 % (20-40 %) | 0.81 (0.90) | 10 | 5.00 % (3.00-7.00 %) "
            "| 1.00-9.00 % | 2.00 % |") in text
    assert "| smooth | 1 | 8 | 4 | 10.0 | 0.5 | 50 | -96 | -80.0 |" in text
