"""The energy-conservation study's arithmetic (summary, dt^2 fit, goal check) on runs with
known answers, and one short NVE run of the force field that must conserve energy."""
import numpy as np
import pytest

from alanine_dipeptide import data
from alanine_dipeptide import energy_conservation as ec


def _run(potential, dt, start, ratio=None, error=None):
    r = {"potential": potential, "dt_fs": dt, "start": start, "error": error}
    if error is None:
        r.update(ratio=ratio, drift_kj_mol_ns=2.0 * ratio)
    return r


def test_summary_slope_and_goal_check_on_known_runs():
    runs = []
    for dt in (0.5, 1.0, 2.0):
        runs += [_run("ff99SB-ILDN", dt, s, 0.01 * dt ** 2) for s in range(2)]
        runs += [_run("smooth", dt, s, 0.015 * dt ** 2 * (1 + s)) for s in range(2)]   # mean 1.5 x 1.5
    runs += [_run("spline", 0.5, 0, 0.001), _run("spline", 0.5, 1, error="unstable"),
             _run("spline", 1.0, 0, 0.001), _run("spline", 1.0, 1, 0.001)]
    rows = ec.summarize(runs)
    by = {(r["potential"], r["dt_fs"]): r for r in rows}
    assert by[("smooth", 1.0)]["ratio"] == pytest.approx(0.0225)
    assert by[("spline", 0.5)]["failed"] == 1 and by[("spline", 0.5)]["ratio"] == pytest.approx(0.001)
    slopes = ec.dt2_slopes(rows)
    assert slopes["ff99SB-ILDN"] == pytest.approx(2.0) and slopes["smooth"] == pytest.approx(2.0)
    table = ec.goal_lines(rows)
    cells = {float(line.split("|")[1]): [c.strip() for c in line.split("|")[2:5]] for line in table[4:]}
    assert cells[0.5] == ["2.25", "no", "yes"]      # 2.25x ff; the spline had a failed run
    assert cells[1.0] == ["2.25", "no", "no"]       # the spline's runs all finished, lower
    assert cells[2.0] == ["2.25", "no", "-"]        # no spline runs at 2 fs


def test_report_names_its_model_files(tmp_path):
    import hashlib
    model = tmp_path / "flow.safetensors"
    model.write_bytes(b"not a real model, only bytes to hash")
    identity = ec.model_identity(model)
    assert identity == {"path": str(model.resolve()),
                        "sha256": hashlib.sha256(model.read_bytes()).hexdigest()[:16]}
    shipped = ec.model_identity(ec.MODELS / "smooth.safetensors")
    assert shipped["path"] == "models/alanine_dipeptide/smooth.safetensors"
    rows = ec.summarize([_run("ff99SB-ILDN", 1.0, 0, 0.04), _run("smooth", 1.0, 0, 0.05)])
    meta = {"date": "2026-11-25T00:00", "commit": "abc1234", "cpus": 2, "platform": "Reference",
            "starts": 1, "ps": 1.0, "seconds": 1.0, "models": {"smooth": identity}}
    text = ec.report(rows, ec.dt2_slopes(rows), [], meta, tmp_path)
    assert f"Models: smooth `{model.resolve()}` (sha256 {identity['sha256']})." in text.splitlines()
    assert (tmp_path / "report.md").read_text() == text + "\n"


def test_force_field_nve_conserves_energy_at_a_small_step():
    start = data.load_reference("obc").test.positions[0]
    r = ec.nve_run(("ff99SB-ILDN", {}, 0.25, 0.2, 0, start, 100, 40, "Reference"))
    assert r["error"] is None and len(r["series"]) == 41
    assert 0 < r["ratio"] < 0.02    # the full study measures 0.0024 at 0.25 fs over 10 ps
