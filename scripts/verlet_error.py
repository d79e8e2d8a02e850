#!/usr/bin/env python3
"""How much energy does velocity Verlet gain or lose on a potential, from given frames? The
total-energy change of a few velocity Verlet steps (OpenMM, a CustomIntegrator; standard masses)
from frames of a hot-frames file with Maxwell-Boltzmann velocities at each frame's temperature,
the same frames and velocities for every potential: the force field's numbers set the velocity
Verlet bound's ``verlet_limit`` (studies/alanine_dipeptide/training.md), a flow's show how far it
is from them (docs/reliability.md section 5; not run by the tests).

    python scripts/verlet_error.py PROJECT FRAMES.npz ff models/alanine_dipeptide/smooth.safetensors \\
        [--per-temperature 100] [--dt-fs 2] [--steps 4] [--out DIR]

``ff`` is the project's force field. Writes DIR/verlet_error.json and .md (per temperature and
potential: median, 90th and 99th percentile and largest |dE|, the mean dE); default DIR
PROJECT/verlet_error.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    import torch
    from smoothflow_torch import provenance
    from smoothflow_torch.pipeline.hot_frames import flow_system
    from smoothflow_torch.pipeline.project import Project
    from smoothflow_torch.verlet_error import openmm_verlet_energy_change, thermal_velocities

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project", help="a pipeline project (its force field and topology)")
    p.add_argument("frames", help="a hot-frames file (positions, temperature)")
    p.add_argument("potentials", nargs="+", help="model files, or ff for the project's force field")
    p.add_argument("--per-temperature", type=int, default=100)
    p.add_argument("--dt-fs", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--platform", default="Reference")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    project = Project(a.project)
    d = np.load(a.frames)
    ff = project.system()
    masses = torch.tensor([ff.getParticleMass(i)._value for i in range(ff.getNumParticles())], dtype=torch.float64)
    rng = np.random.default_rng(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    rows = []
    for T in sorted(set(d["temperature"].tolist())):
        pool = np.where(d["temperature"] == T)[0]
        idx = rng.choice(pool, min(a.per_temperature, len(pool)), replace=False)
        x = d["positions"][idx].astype(np.float64)
        v = thermal_velocities(masses, float(T), len(idx), gen).numpy()
        for m in a.potentials:
            system = ff if m == "ff" else flow_system(project, m, x[0])
            de = openmm_verlet_energy_change(system, x, v, a.dt_fs, a.steps, a.platform)
            ok = np.isfinite(de)
            mag = np.abs(de[ok])
            rows.append({"temperature": float(T), "potential": m, "frames": int(len(idx)), "non_finite": int((~ok).sum()),
                         "median_abs_kj": float(np.median(mag)), "p90_abs_kj": float(np.percentile(mag, 90)),
                         "p99_abs_kj": float(np.percentile(mag, 99)), "max_abs_kj": float(mag.max()),
                         "mean_kj": float(de[ok].mean())})
            print(json.dumps(rows[-1]), file=sys.stderr)
    meta = {"project": a.project, "frames": a.frames, "seed": a.seed, "dt_fs": a.dt_fs, "steps": a.steps,
            "platform": a.platform, **provenance.machine(ROOT)}
    out = a.out or os.path.join(a.project, "verlet_error")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "verlet_error.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    lines = [f"# Velocity Verlet energy error at {meta['frames']}", "",
             f"{meta['date']}, commit {meta['commit']}; {a.steps} steps of {a.dt_fs:g} fs from each frame, "
             "Maxwell-Boltzmann velocities at the frame's temperature, the same frames and velocities for "
             "every potential; |dE| in kJ/mol.", "",
             "| bath | potential | frames | median | 90 % | 99 % | max | mean dE | non-finite |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['temperature']:g} K | {r['potential']} | {r['frames']} | {r['median_abs_kj']:.3g} | "
                     f"{r['p90_abs_kj']:.3g} | {r['p99_abs_kj']:.3g} | {r['max_abs_kj']:.3g} | {r['mean_kj']:.3g} | "
                     f"{r['non_finite']} |")
    with open(os.path.join(out, "verlet_error.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
