#!/usr/bin/env python3
"""How stiff are potentials at given frames? The largest stable velocity-Verlet step
dt_max = 2 / omega_max of the mass-weighted Hessian (central differences of the forces), per
frame, for flow models and the alanine-dipeptide force field, at frames of a hot-frames file
(``smoothflow hot-frames``; docs/reliability.md section 5; not run by the tests).

    python scripts/frame_stiffness.py FRAMES.npz ff models/alanine_dipeptide/smooth.safetensors \\
        other.safetensors [--per-temperature 30] [--out DIR]

``ff`` is the study project's force field (ff99SB-ILDN with OBC, runs/alanine_dipeptide). For each
temperature in the file, the same ``--per-temperature`` frames (seeded choice) go to every
potential. Writes DIR/frame_stiffness.json and .md (min, 10th percentile and median of dt_max,
the fractions below 1 and 1.5 fs); default DIR runs/frame_stiffness.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


class ForceField:
    """The study project's force field with the C core's evaluate() interface (modes() needs it)."""

    def __init__(self, project):
        from smoothflow_torch.openmm_bridge import OpenMMEnergy
        from smoothflow_torch.pipeline.project import Project
        self.bridge = OpenMMEnergy(Project(project).system())

    def evaluate(self, x):
        energies, forces, _ = self.bridge.evaluate(x)
        return energies[0], forces


def main(argv=None):
    import torch
    from smoothflow_core import CoreModel
    from smoothflow_torch import provenance
    from smoothflow_torch.export import load_model, model_to_bytes
    from smoothflow_torch.training import element_masses
    from wall_curvature import modes

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("frames", help="a hot-frames file (positions, temperature)")
    p.add_argument("potentials", nargs="+", help="model files, or ff for the study's force field")
    p.add_argument("--per-temperature", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default=os.path.join(ROOT, "runs", "alanine_dipeptide"))
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "frame_stiffness"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    d = np.load(a.frames)
    models = [m for m in a.potentials if m != "ff"]
    if not models:
        p.error("give at least one model: its atoms give the masses")
    masses = element_masses(load_model(models[0]).atoms).numpy()
    rng = np.random.default_rng(a.seed)
    rows = []
    for T in sorted(set(d["temperature"].tolist())):
        pool = np.where(d["temperature"] == T)[0]
        idx = rng.choice(pool, min(a.per_temperature, len(pool)), replace=False)
        for m in a.potentials:
            core = ForceField(a.project) if m == "ff" else CoreModel.from_bytes(model_to_bytes(load_model(m)),
                                                                               max_batch=1)
            dt = np.array([modes(core, d["positions"][i].astype(np.float64), masses)[0] for i in idx])
            rows.append({"temperature": T, "potential": m, "frames": len(idx), "dt_max_min_fs": float(dt.min()),
                         "dt_max_p10_fs": float(np.percentile(dt, 10)), "dt_max_median_fs": float(np.median(dt)),
                         "below_1fs": float((dt < 1).mean()), "below_1_5fs": float((dt < 1.5).mean())})
            print(json.dumps(rows[-1]), file=sys.stderr)
    meta = {"frames": os.path.relpath(os.path.abspath(a.frames), ROOT), "seed": a.seed, **provenance.machine(ROOT)}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "frame_stiffness.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    lines = [f"# Stiffness at {meta['frames']}", "", f"{meta['date']}, commit {meta['commit']}; dt_max = 2 / omega_max "
             "of the mass-weighted Hessian (fs), the same frames for every potential.", "",
             "| bath | potential | frames | min | 10 % | median | < 1 fs | < 1.5 fs |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['temperature']:g} K | {r['potential']} | {r['frames']} | {r['dt_max_min_fs']:.2f} | "
                     f"{r['dt_max_p10_fs']:.2f} | {r['dt_max_median_fs']:.2f} | {r['below_1fs']:.0%} | "
                     f"{r['below_1_5fs']:.0%} |")
    with open(os.path.join(a.out, "frame_stiffness.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
