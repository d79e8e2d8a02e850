#!/usr/bin/env python3
"""How stiff is the wall? The largest Cartesian curvature a velocity-Verlet step meets in the
wall zone of a model, with and without the wall's edge forces (docs/reliability.md section 5).

For every interval coordinate (bond, angle) and both faces, configurations of the flow's own
samples are moved so that this one coordinate lies in the wall zone at several depths (the join
u = 2m, then m/2, m and 2m past it; angles stop short of collinear), and at each the mass-weighted
Hessian of the plugin's energy (the C core's forces, central differences) gives omega_max and the
largest stable velocity-Verlet step dt_max = 2 / omega_max. The same frames with the coordinate
left where it was give the flow's own dt_max: the wall is blamed only for what it adds. Each
probe also reports how high the wall stands there ("rise": the energy above the same sample with
the coordinate at the zone's edge), which says how far in an atom can get. Bonds use the margin,
angles the angle margin (docs/model-format.md 5.2).

    python scripts/wall_curvature.py [MODEL] [--samples 4] [--out DIR] [--kind all|bond|angle]
                                     [--angle-margin M]

(--angle-margin: measure with that angle margin instead of the model's, the angle edge forces
measured anew at the moved edges; how docs/reliability.md compares 0.01, 0.075 and 0.1.)

writes DIR/wall_curvature.json and DIR/wall_curvature.md (default DIR: runs/wall_curvature; the
numbers are copied into docs/reliability.md). The model defaults to the shipped smooth flow.
"""
import argparse
import copy
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hessian(core, x, h=1e-6):
    """The energy's Hessian at x (N, 3) by central differences of the core's forces (kJ/mol/nm^2)."""
    n = x.size
    H = np.empty((n, n))
    flat = x.reshape(-1)
    for i in range(n):
        xp, xm = flat.copy(), flat.copy()
        xp[i] += h
        xm[i] -= h
        _, fp = core.evaluate(xp.reshape(1, *x.shape))
        _, fm = core.evaluate(xm.reshape(1, *x.shape))
        H[i] = -(fp - fm).reshape(-1) / (2 * h)
    return 0.5 * (H + H.T)


def modes(core, x, masses):
    """(dt_max in fs, lambda_min in ps^-2) of the mass-weighted Hessian at x: 2 / omega_max, the
    largest stable velocity-Verlet step (inf where no mode is stiff), and the most negative
    eigenvalue (a direction the potential pushes the atoms along, away from the point)."""
    w = 1.0 / np.sqrt(np.repeat(masses, 3))
    lam = np.linalg.eigvalsh(hessian(core, x) * w[:, None] * w[None, :])   # ps^-2
    return (float(2.0 / np.sqrt(lam[-1]) * 1000.0) if lam[-1] > 0 else float("inf")), float(min(lam[0], 0.0))


def depths(margin, kind):
    """u of the probes on the lower side: the join, then m/2, m, 2m past it (angles: not below m/4)."""
    us = [2 * margin, 1.5 * margin, margin, 0.0]
    return [u for u in us if kind == "bond" or u >= 0.25 * margin]


def scan(flow, core, masses, u_frames, limit_dims=None, progress=True):
    """dt_max (fs) per interval dim, side and depth, minimum over frames; and the frames' own."""
    nI = flow.n_interval
    own = [modes(core, flow.to_cartesian(u[None]).detach().numpy()[0], masses)[0] for u in u_frames]
    rows = []
    dims = range(nI) if limit_dims is None else limit_dims
    total = len(list(dims)) * 2
    done = 0
    for d in dims:
        kind = "bond" if d < flow.n_atoms - 1 else "angle"
        m = flow.margin if kind == "bond" else flow.angle_margin
        for side in ("lower", "upper"):
            for depth_u in depths(m, kind):
                u_probe = depth_u if side == "lower" else 1.0 - depth_u
                worst, dip, rise = float("inf"), 0.0, float("inf")
                join = 2 * m if side == "lower" else 1.0 - 2 * m
                for u in u_frames:
                    v = u.clone()
                    v[d] = u_probe
                    x = flow.to_cartesian(v[None]).detach().numpy()[0]
                    dt, lam_min = modes(core, x, masses)
                    worst, dip = min(worst, dt), min(dip, lam_min)
                    # how high the wall stands there: the energy above the same frame at the join
                    v[d] = join
                    at_join = core.evaluate(flow.to_cartesian(v[None]).detach().numpy(), forces=False)[0][0]
                    rise = min(rise, float(core.evaluate(x[None], forces=False)[0][0] - at_join))
                rows.append({"dim": d, "name": flow.describe_dimension(d), "kind": kind, "side": side,
                             "u": u_probe, "past_join_in_m": round(abs(u_probe - join) / m, 3),
                             "dt_max_fs": worst, "lambda_min_per_ps2": dip, "rise_above_join_kj_mol": rise})
            done += 1
            if progress:
                print(f"\r{done}/{total} coordinate sides", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return rows, own


def main(argv=None):
    from smoothflow_core import CoreModel
    from smoothflow_torch import provenance
    from smoothflow_torch.edge_force import edge_forces
    from smoothflow_torch.export import load_model, model_to_bytes
    from smoothflow_torch.training import element_masses

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=os.path.join(ROOT, "models", "alanine_dipeptide", "smooth.safetensors"))
    p.add_argument("--samples", type=int, default=4, help="flow samples per probe (the minimum is reported)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "wall_curvature"))
    p.add_argument("--kind", choices=("all", "bond", "angle"), default="all", help="probe only bonds or angles")
    p.add_argument("--angle-margin", type=float, default=None,
                   help="measure the wall with this angle margin instead of the model's (its edge forces "
                        "measured anew at the moved edges)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    flow = load_model(a.model)
    if flow.support_policy != "wall":
        p.error(f"{a.model} has the 'error' policy: no wall to measure")
    if flow.atoms is None:
        p.error(f"{a.model} names no atoms: their masses are needed")
    masses = element_masses(flow.atoms).numpy()
    with torch.no_grad():
        u_frames = flow.sample_u(a.samples, generator=torch.Generator().manual_seed(a.seed))[0]
    if a.angle_margin is not None:      # the edge forces belong to the edges: drop them, measure anew
        flow.set_support("wall", flow.margin, flow.wall_constant, angle_margin=a.angle_margin)
    bare = copy.deepcopy(flow)
    bare.set_support("wall", flow.margin, flow.wall_constant, angle_margin=flow.angle_margin)
    if flow.edge_force_lower is None:   # measure the edge forces the exporter would give
        lo, hi = edge_forces(flow, flow.to_cartesian(u_frames).detach().numpy())
        flow.set_support("wall", flow.margin, flow.wall_constant, lo, hi, angle_margin=flow.angle_margin)
    nb = flow.n_atoms - 1
    dims = {"all": range(flow.n_interval), "bond": range(nb), "angle": range(nb, flow.n_interval)}[a.kind]
    results = {}
    for label, f in (("without edge forces", bare), ("with edge forces", flow)):
        core = CoreModel.from_bytes(model_to_bytes(f), max_batch=1)
        print(label, file=sys.stderr)
        rows, own = scan(f, core, masses, u_frames, limit_dims=dims)
        results[label] = {"rows": rows, "frames_dt_max_fs": own}
    meta = {"model": os.path.relpath(os.path.abspath(a.model), ROOT), "samples": a.samples, "seed": a.seed,
            "margin": flow.margin, "angle_margin": flow.angle_margin, "wall_constant": flow.wall_constant,
            **provenance.machine(ROOT)}
    commit = meta["commit"]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "wall_curvature.json"), "w") as fh:
        json.dump({"meta": meta, **results}, fh, indent=1)
    lines = [f"# Wall curvature of {meta['model']}", "",
             f"{meta['date']}, commit {commit}; {a.samples} flow samples (seed {a.seed}); margin m = {flow.margin} (bonds), "
             f"{flow.angle_margin} (angles), "
             f"k = {flow.wall_constant} kJ/mol. dt_max = 2 / omega_max of the mass-weighted Hessian (fs), the "
             "minimum over the samples and over every bond and angle placed at the depth shown; 'frames' is "
             "the samples as drawn (the flow's own stiffness). lambda_min: the most negative eigenvalue "
             "(ps^-2), a direction along which the potential pushes the atoms away: where the restoring force "
             "fades. rise: the smallest energy above the same sample with the coordinate at the join "
             "(kJ/mol; how high the wall stands at that depth).", "",
             "| coordinate in the zone | depth past the join | dt_max without edge forces | with | lambda_min without "
             "| with | rise without | with |", "|---|---|---|---|---|---|---|---|"]
    keys = ("without edge forces", "with edge forces")
    for kind in ("bond", "angle"):
        for depth in sorted({r["past_join_in_m"] for r in results[keys[1]]["rows"] if r["kind"] == kind}):
            sel = [[r for r in results[k]["rows"] if r["kind"] == kind and r["past_join_in_m"] == depth] for k in keys]
            dts = [min(r["dt_max_fs"] for r in rs) for rs in sel]
            dips = [min(r["lambda_min_per_ps2"] for r in rs) for rs in sel]
            rises = [min(r["rise_above_join_kj_mol"] for r in rs) for rs in sel]
            lines.append(f"| {kind}s | {depth:g} m | {dts[0]:.2f} fs | {dts[1]:.2f} fs | {dips[0]:.3g} | {dips[1]:.3g} "
                         f"| {rises[0]:.3g} | {rises[1]:.3g} |")
    lines.append(f"| none (the samples) | | {min(results[keys[0]]['frames_dt_max_fs']):.2f} fs | "
                 f"{min(results[keys[1]]['frames_dt_max_fs']):.2f} fs | | | | |")
    worst = sorted(results["with edge forces"]["rows"], key=lambda r: r["dt_max_fs"])[:5]
    lines += ["", "Stiffest probes with edge forces:", ""]
    lines += [f"- {r['name']}, {r['side']} face, {r['past_join_in_m']:g} m past the join: {r['dt_max_fs']:.2f} fs"
              for r in worst]
    with open(os.path.join(a.out, "wall_curvature.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
