"""A long NVE run with the shipped smooth flow as the only potential (issue 22, part 8; not run
by the tests): velocity Verlet at 300 K starting velocities, reporting the energy drift per
nanosecond, the wall count (internal coordinates the support's wall touched) and failures.

    python -m alanine_dipeptide.long_run --platform CPU        # 1 ns at 1 fs, about 30 minutes on one core
    python -m alanine_dipeptide.long_run --ns 2 --dt-fs 0.5 --out runs/long_run

Writes <out>/long_run.json and <out>/long_run.md (the energy every picosecond, the drift fitted
over the whole run and over each tenth of it, the kinetic temperature, the wall count, and
whether and when the run failed: a non-finite energy, an evaluation error, or a kinetic
energy above 100 times its start).
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import unit
from tqdm import tqdm

from . import data
from .energy_conservation import MODELS, ROOT, flow_system, thermalized_context
from .forcefield import TEMPERATURE

KJ = unit.kilojoule_per_mole
BOLTZMANN = 0.00831446261815324  # kJ/mol/K


def run(model: Path, ns: float, dt_fs: float, seed: int, platform: str, report_ps: float = 1.0) -> dict:
    system = flow_system(model)
    import openmmsmoothflow
    force = openmmsmoothflow.SmoothFlowForce.cast(system.getForce(0))  # the flow is the only force
    dof = 3 * system.getNumParticles() - 3
    positions = data.load_reference("obc").test.positions[0]
    context = thermalized_context(system, openmm.VerletIntegrator(dt_fs * 1e-3), positions, seed, platform)
    integrator = context.getIntegrator()
    steps_per_report = max(1, int(round(report_ps / (dt_fs * 1e-3))))
    n_reports = int(round(ns * 1000 / report_ps))
    rows, failure = [], None
    start = time.time()
    e_kin0 = None
    for r in tqdm(range(n_reports + 1), desc="long run", unit="ps"):
        if r > 0:
            try:
                integrator.step(steps_per_report)
            except openmm.OpenMMException as e:
                failure = {"time_ps": r * report_ps, "reason": str(e)}
                break
        state = context.getState(getEnergy=True)
        e_pot = state.getPotentialEnergy().value_in_unit(KJ)
        e_kin = state.getKineticEnergy().value_in_unit(KJ)
        e_kin0 = e_kin if e_kin0 is None else e_kin0
        rows.append({"time_ps": r * report_ps, "e_pot": e_pot, "e_kin": e_kin, "e_tot": e_pot + e_kin,
                     "temperature_k": 2 * e_kin / (dof * BOLTZMANN), "wall_count": force.getWallCount(context)})
        if not np.isfinite(e_pot + e_kin) or e_kin > 100 * e_kin0:
            failure = {"time_ps": r * report_ps, "reason": "non-finite energy" if not np.isfinite(e_pot + e_kin)
                       else f"kinetic energy {e_kin:.4g} kJ/mol, over 100x its start"}
            break
    t = np.array([row["time_ps"] for row in rows]) * 1e-3  # ns
    e = np.array([row["e_tot"] for row in rows])
    drift = float(np.polyfit(t, e, 1)[0]) if len(rows) > 2 else float("nan")
    tenths = []
    for part in np.array_split(np.arange(len(rows)), 10):
        if len(part) > 2:
            tenths.append(float(np.polyfit(t[part], e[part], 1)[0]))
    temps = np.array([row["temperature_k"] for row in rows])
    return {"rows": rows, "failure": failure, "drift_kj_mol_ns": drift, "drift_per_dof_ns": drift / dof,
            "drift_tenths_kj_mol_ns": tenths, "e_tot_range_kj_mol": float(e.max() - e.min()),
            "e_tot_std_kj_mol": float(e.std()), "temperature_mean_k": float(temps.mean()),
            "temperature_std_k": float(temps.std()), "wall_count": rows[-1]["wall_count"],
            "seconds": time.time() - start, "steps": (len(rows) - 1) * steps_per_report, "dof": dof}


def report(result: dict, meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_run.json").write_text(json.dumps({"meta": meta, **result}, indent=1))
    f = result["failure"]
    failure = "none" if f is None else f"at {f['time_ps']:.0f} ps: {f['reason']}"
    lines = ["# Long NVE run with the shipped smooth flow", "",
             f"{meta['date']}, commit {meta['commit']}, platform {meta['platform']}; model "
             f"`{meta['model']}`; {meta['ns']} ns requested at {meta['dt_fs']} fs (velocity Verlet, no constraints, "
             f"standard masses), velocities drawn at {TEMPERATURE} K (seed {meta['seed']}); {result['steps']} steps in "
             f"{result['seconds']:.0f} s.", "",
             "| quantity | value |", "|---|---|",
             f"| failure | {failure} |",
             f"| drift of E_tot (linear fit, whole run) | {result['drift_kj_mol_ns']:.3f} kJ/mol/ns ({result['drift_per_dof_ns']:.4f} per degree of freedom) |",
             f"| drift in each tenth of the run | {', '.join(f'{d:.2f}' for d in result['drift_tenths_kj_mol_ns'])} kJ/mol/ns |",
             f"| E_tot range, standard deviation | {result['e_tot_range_kj_mol']:.3f}, {result['e_tot_std_kj_mol']:.3f} kJ/mol |",
             f"| kinetic temperature, mean and sd | {result['temperature_mean_k']:.1f} K, {result['temperature_std_k']:.1f} K |",
             f"| wall count (coordinates in the wall zone, summed over evaluations) | {result['wall_count']} |", ""]
    (out / "long_run.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(MODELS / "smooth.safetensors"))
    ap.add_argument("--ns", type=float, default=1.0)
    ap.add_argument("--dt-fs", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--platform", default="Reference")
    ap.add_argument("--out", default=str(ROOT / "out" / "long_run"))
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    result = run(Path(args.model), args.ns, args.dt_fs, args.seed, args.platform)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "commit": commit,
            "platform": args.platform, "model": str(Path(args.model).resolve().relative_to(ROOT))
            if Path(args.model).resolve().is_relative_to(ROOT) else args.model,
            "ns": args.ns, "dt_fs": args.dt_fs, "seed": args.seed}
    report(result, meta, Path(args.out))
    print((Path(args.out) / "long_run.md").read_text())


if __name__ == "__main__":
    main()
