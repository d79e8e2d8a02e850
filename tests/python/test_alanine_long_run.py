"""The long-run script (studies/alanine_dipeptide/long_run.py) on a tiny budget: its report
holds what its rows say (steps, drift fitted to the energies, kinetic temperature), and a run
with the shipped smooth flow at 1 fs stays finite. The 1 ns run itself is not part of the
tests (docs/reliability.md has its result)."""
import json

import numpy as np
import pytest

pytest.importorskip("openmmsmoothflow")


def test_long_run_report_matches_its_rows(tmp_path):
    from alanine_dipeptide import long_run
    long_run.main(["--ns", "0.003", "--dt-fs", "1", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "long_run.json").read_text())
    rows = r["rows"]
    assert r["failure"] is None and r["steps"] == 3000 and len(rows) == 4
    t = np.array([row["time_ps"] for row in rows]) * 1e-3
    e = np.array([row["e_pot"] + row["e_kin"] for row in rows])
    assert r["drift_kj_mol_ns"] == pytest.approx(np.polyfit(t, e, 1)[0], rel=1e-9)
    dof = 3 * 22 - 3
    for row in rows:
        assert row["e_tot"] == pytest.approx(row["e_pot"] + row["e_kin"], rel=1e-12)
        assert row["temperature_k"] == pytest.approx(2 * row["e_kin"] / (dof * 0.00831446261815324), rel=1e-12)
    assert np.isfinite(e).all() and 100 < r["temperature_mean_k"] < 600
    assert "| failure | none |" in (tmp_path / "long_run.md").read_text()
