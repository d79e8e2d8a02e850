"""benchmarks/bench_free_form.py in its --quick mode without the peers (about 15-30 s): the JSON
it writes has the documented structure, the evaluators it cross-checked agree with the C core
(PyTorch autograd always; SmoothFlowForce where it runs free-form models), and the operation
counts are core/src/sf_egnn.c's. Timings are only checked to be present, never compared.
"""
import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("openmm")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(REPO, "benchmarks", "bench_free_form.py")
MODELS = ("dw4-h32-l3", "lj13-h32-l3")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_free_form") / "free_form"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--no-peers", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.with_suffix(".md").read_text().startswith("# The free-form flow potential")
    return json.loads(out.with_suffix(".json").read_text())


def test_structure(result):
    for key in ("machine", "load_average_at_start", "limits", "flops", "settings", "cross_check",
                "results", "ratios"):
        assert key in result, key
    assert result["settings"]["quick"] and result["settings"]["batches"] == [1]
    assert len(result["load_average_at_start"]) == 3 and len(result["machine"]["load_average"]) == 3
    assert result["machine"]["commit"] != "unknown"
    rounds = result["settings"]["rounds"]
    evaluators = {(r["model"], r["evaluator"]) for r in result["results"]}
    for m in MODELS:
        assert (m, "C core (sf_evaluate)") in evaluators and (m, "PyTorch autograd") in evaluators
    for system in ("dw4", "lj13"):
        for plat in ("Reference", "CPU"):
            assert (f"{system}-true potential", f"true potential {plat}") in evaluators
    for r in result["results"]:
        if "skipped" in r:
            assert r["evaluator"].startswith("SmoothFlowForce"), r   # only the force may be missing
            assert not r["skipped"].startswith("disagrees"), r
            continue
        assert len(r["seconds_samples"]) == rounds and r["seconds_min"] <= r["seconds"] <= r["seconds_max"]
        assert r["seconds"] > 0
        if r["model"] in MODELS:
            assert r["gflops"] > 0 and 0 < r["fraction_of_peak"] and r["ratio_to_c_core"] > 0
    assert {(row["model"], row["configurations"]) for row in result["ratios"]} == {(m, 1) for m in MODELS}


def test_cross_check_agrees_with_the_c_core(result):
    for m in MODELS:
        check = result["cross_check"][f"{m}|B=1"]
        e_core = check["C core (sf_evaluate)"]["energy"]
        assert math.isfinite(e_core)
        torch_row = check["PyTorch autograd"]
        assert abs(torch_row["energy"] - e_core) <= 1e-8 * abs(e_core)
        assert torch_row["energy_rel"] <= 1e-8 and torch_row["forces_rel_to_max"] <= 1e-8
        for ev, row in check.items():   # SmoothFlowForce, when it ran, agrees too
            if ev.startswith("SmoothFlowForce") and "error" not in row:
                assert abs(row["energy"] - e_core) <= 1e-8 * abs(e_core), (ev, row)
                assert row["forces_rel_to_max"] <= 1e-8, (ev, row)


def test_operation_counts_are_sf_egnn_c(result):
    f = result["flops"]
    # sf_egnn.c's header: LJ13, H = 32, 3 layers: forward 83 + reverse 164 Mflop, LU 0.12 Mflop
    assert f["lj13-h32-l3"]["flops"] == pytest.approx(246.4e6, rel=1e-3)
    assert f["lj13-h32-l3"]["flops_lu"] == pytest.approx(0.124416e6)
    # L (12 E S H^2 + 12 n S H^2) + (L - 1) 16 n S H^2 + (8/3) T^3 for DW4: n 4, T 6, S 7, E 12
    H = 32
    assert f["dw4-h32-l3"]["flops"] == pytest.approx(
        3 * (12 * 12 * 7 * H * H + 12 * 4 * 7 * H * H) + 2 * 16 * 4 * 7 * H * H + 8 * 6 ** 3 / 3)
    # the workspace of docs/model-format.md section 9.4: 3.4 MB for LJ13, 0.19 MB for DW4
    assert f["lj13-h32-l3"]["workspace_bytes"] == pytest.approx(3.37e6, rel=1e-2)
    assert f["dw4-h32-l3"]["workspace_bytes"] == pytest.approx(0.193e6, rel=1e-2)
