"""The energy-conservation study (the main job): flows as MD potentials against ff99SB-ILDN.

NVE velocity Verlet (openmm.VerletIntegrator) from the same thermalized starts (held-out
frames of the reference MD, velocities drawn at 300 K with fixed seeds) with (a) the smooth
flow, (b) the spline flow, (c) Amber ff99SB-ILDN (OBC), at time steps 0.25, 0.5, 1 and 2 fs.
Per run: the total-energy drift (kJ/mol/ns, and per degree of freedom) and the fluctuation
ratio RMS(E_tot - <E_tot>) / RMS(E_kin - <E_kin>).  The dt^2 law is checked by a log-log fit
of the ratio against dt.  A Langevin run with the smooth flow gives a Ramachandran plot beside
the reference MD's.  Output: report.md and PNG plots in one folder.  The NVE runs and their
statistics are the pipeline's (smoothflow_torch.pipeline.md: nve_series, summarize,
dt2_slopes; importing it loads torch, but no torch code runs).

Usage (from studies/): python -m alanine_dipeptide.energy_conservation [--long] [--out DIR]
"""
import argparse
import datetime
import json
import multiprocessing
import os
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit

# (pipeline.md is also the name of the pipeline's md step, so its functions are imported by name;
# dt2_slopes is one of the study's names)
from smoothflow_torch.pipeline.md import dt2_slopes, nve_series, summary_table  # noqa: F401
from smoothflow_torch.pipeline.md import summarize as summarize_runs

from . import data, forcefield, molecule, repo_paths

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models" / "alanine_dipeptide"
DOF = 3 * molecule.N_ATOMS  # no constraints, no centre-of-mass remover: every Cartesian dof


def flow_system(model: Path) -> openmm.System:
    """The molecule's masses with the flow as the only force (atoms mapped by name)."""
    import openmmsmoothflow
    ff = forcefield.system("obc")
    system = openmm.System()
    for i in range(ff.getNumParticles()):
        system.addParticle(ff.getParticleMass(i))
    with warnings.catch_warnings():
        # the study's own topology carries the Amber names of the training structure, which the
        # shipped models store as OpenMM names it; OpenMM's table of alternative names pairs them
        # one to one (HH31 = H1, ...), so names assign the methyl hydrogens exactly as in
        # training (the warning is for outside structures)
        warnings.filterwarnings("ignore", message="the model's equivalent atoms")
        openmmsmoothflow.addSmoothFlowForce(system, molecule.topology(), str(model))
    return system


def make_system(potential: str, models: dict) -> openmm.System:
    if potential == "ff99SB-ILDN":
        return forcefield.system("obc")
    return flow_system(models[potential])


#: NVE run from start k draws its velocities with seed NVE_SEED + k
NVE_SEED = 100


def start_frames(test: data.Frames, n_starts: int) -> list:
    """The thermalized starts: held-out frames evenly spaced through the test set."""
    return [test.positions[i * (len(test) // n_starts)] for i in range(n_starts)]


def thermalized_context(system: openmm.System, integrator, positions, seed: int,
                        platform: str) -> openmm.Context:
    """A context at ``positions`` (nm) with velocities drawn at the study's temperature."""
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions * unit.nanometer)
    context.setVelocitiesToTemperature(forcefield.TEMPERATURE * unit.kelvin, seed)
    return context


def nve_run(job) -> dict:
    """One NVE run; returns its energy series and summary numbers (the pipeline's NVE run,
    smoothflow_torch.pipeline.md.nve_series, on the study's systems)."""
    potential, models, dt_fs, ps, start, positions, seed, samples, platform = job
    system = make_system(potential, models)
    integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
    context = thermalized_context(system, integrator, positions, seed, platform)
    return {"potential": potential, "dt_fs": dt_fs, "start": start,
            **nve_series(context, integrator, dt_fs, ps, samples)}


def langevin_run(job) -> dict:
    """Langevin dynamics with a flow potential; returns phi, psi samples."""
    potential, models, ps, positions, seed, platform = job
    system = make_system(potential, models)
    integrator = openmm.LangevinMiddleIntegrator(forcefield.TEMPERATURE * unit.kelvin, 1 / unit.picosecond,
                                                 0.5 * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    context = thermalized_context(system, integrator, positions, seed, platform)
    frames, error = [], None
    try:
        for _ in range(int(ps * 10)):  # a frame every 0.1 ps
            integrator.step(200)
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)
                          .value_in_unit(unit.nanometer))
    except openmm.OpenMMException as e:
        error = str(e).splitlines()[0]
    x = np.array(frames) if frames else np.zeros((0, molecule.N_ATOMS, 3))
    phi, psi = data.backbone_dihedrals(x) if len(x) else (np.zeros(0), np.zeros(0))
    return {"potential": potential, "ps": len(frames) / 10, "phi": phi.tolist(), "psi": psi.tolist(), "error": error}


def summarize(runs):
    """Per potential and time step: mean ratio and drift over the runs that finished, failures
    (the pipeline's summary with the study's degrees of freedom)."""
    return summarize_runs(runs, DOF)


def plot(rows, runs, langevin, reference, out: Path):
    from . import plots
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    colors = {"smooth": "C0", "spline": "C1", "ff99SB-ILDN": "k"}
    fig, ax = plt.subplots(figsize=(5, 4))
    for p in sorted({r["potential"] for r in rows}):
        pts = [(r["dt_fs"], r["ratio"]) for r in rows if r["potential"] == p and "ratio" in r]
        if pts:
            d, x = zip(*pts)
            ax.loglog(d, x, "o-", color=colors.get(p), label=p)
    if rows:
        d = np.array(sorted({r["dt_fs"] for r in rows}))
        ref = [r["ratio"] for r in rows if r["potential"] == "ff99SB-ILDN" and "ratio" in r]
        if ref:
            ax.loglog(d, ref[0] * (d / d[0]) ** 2, ":", color="gray", label="dt^2")
    dts = sorted({r["dt_fs"] for r in rows})
    ax.set_xticks(dts, [f"{v:g}" for v in dts])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("time step (fs)")
    ax.set_ylabel("RMS dE_tot / RMS dE_kin")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fluctuation_ratio_vs_dt.png", dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, dt in zip(axes, (0.5, 2.0)):
        for r in runs:
            if r["dt_fs"] == dt and r["start"] == 0 and r["series"]:
                s = np.array(r["series"])
                ax.plot(s[:, 0], s[:, 1] + s[:, 2] - (s[0, 1] + s[0, 2]), color=colors.get(r["potential"]),
                        label=r["potential"])
        ax.set_title(f"total energy, dt = {dt} fs (start 0)")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("E_tot - E_tot(0) (kJ/mol)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "total_energy.png", dpi=120)
    plt.close(fig)
    panels = [("ff99SB-ILDN (reference MD, reweighted)", *reference)] + [
        (f"{l['potential']} flow, Langevin {l['ps']:g} ps", np.array(l["phi"]), np.array(l["psi"]), None)
        for l in langevin]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, phi, psi, w) in zip(axes[0], panels):
        plots.ramachandran_panel(ax, phi, psi, title, weights=w)
    fig.tight_layout()
    fig.savefig(out / "ramachandran.png", dpi=120)
    plt.close(fig)


def goal_lines(rows) -> list:
    """The study's goal, checked per time step: the smooth flow's fluctuation ratio within 2x of
    the force field's, and below the spline flow's (a failed run counts as infinitely worse)."""
    ratio = {(r["potential"], r["dt_fs"]): (r["ratio"] if "ratio" in r and not r["failed"] else float("inf"))
             for r in rows}
    dts = sorted({r["dt_fs"] for r in rows})
    if not any(("smooth", dt) in ratio for dt in dts):
        return []
    out = ["Goal check (smooth within 2x of ff99SB-ILDN, and better than spline; failed runs count as worse):", "",
           "| dt (fs) | smooth / ff99SB-ILDN | within 2x | smooth better than spline |", "|---|---|---|---|"]
    for dt in dts:
        sm, ff, sp = ratio.get(("smooth", dt)), ratio.get(("ff99SB-ILDN", dt)), ratio.get(("spline", dt))
        rel = sm / ff if sm is not None and ff else float("nan")
        better = "-" if sp is None else ("yes" if sm < sp or (np.isinf(sp) and not np.isinf(sm)) else "no")
        out.append(f"| {dt:g} | {rel:.2f} | {'yes' if rel <= 2 else 'no'} | {better} |")
    return out


def model_identity(path: Path) -> dict:
    """Which model file a run used: its path (relative to the repository when inside it) and
    the first 16 hex digits of its SHA-256, so a report names its models beyond doubt."""
    path = Path(path).resolve()
    return {"path": repo_paths.repo_relative(path), "sha256": repo_paths.sha256_of(path)[:16]}


def report(rows, slopes, langevin, meta, out: Path):
    lines = ["# Energy conservation: flows as MD potentials against Amber ff99SB-ILDN", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['cpus']} cores, platform {meta['platform']}; "
             f"{meta['starts']} thermalized starts per potential and time step, {meta['ps']} ps each "
             f"(NVE velocity Verlet, no constraints, standard masses); {meta['seconds']:.0f} s in all.", ""]
    if meta.get("models"):
        lines += ["Models: " + "; ".join(f"{p} `{m['path']}` (sha256 {m['sha256']})"
                                        for p, m in meta["models"].items()) + ".", ""]
    lines += summary_table(rows, ratio=".5f", drift=".2f", per_dof=".4f")
    lines += [""] + goal_lines(rows)
    lines += ["", "Log-log slope of the fluctuation ratio against dt (2 for a smooth potential under velocity Verlet): "
              + ", ".join(f"{p} {s:.2f}" for p, s in slopes.items()) + ".", ""]
    errors = [e for r in rows for e in r["errors"]]
    if errors:
        lines += ["Failures:", ""] + [f"- {e}" for e in errors] + [""]
    for l in langevin:
        if l["error"]:
            lines.append(f"Langevin run with the {l['potential']} flow stopped: {l['error']}")
    lines += ["![fluctuation ratio against time step](fluctuation_ratio_vs_dt.png)", "",
              "![total energy](total_energy.png)", "", "![Ramachandran plots](ramachandran.png)", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smooth", default=str(MODELS / "smooth.safetensors"))
    ap.add_argument("--spline", default=str(MODELS / "spline.safetensors"))
    ap.add_argument("--dt-fs", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--ps", type=float, default=10.0, help="length of each NVE run")
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--langevin-ps", type=float, default=200.0)
    ap.add_argument("--long", action="store_true", help="10x longer NVE runs, 8 starts, 2 ns of Langevin")
    ap.add_argument("--platform", default="Reference")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "out" / "energy_conservation"))
    args = ap.parse_args()
    if args.long:
        args.ps, args.starts, args.langevin_ps = 10 * args.ps, 8, 2000.0
    from tqdm import tqdm
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = {"smooth": Path(args.smooth), "spline": Path(args.spline)}
    potentials = [p for p in ("smooth", "spline") if models[p].exists()] + ["ff99SB-ILDN"]
    missing = [str(models[p]) for p in ("smooth", "spline") if not models[p].exists()]
    ref = data.load_reference("obc")
    test = ref.test
    starts = start_frames(test, args.starts)
    jobs = [(p, models, dt, args.ps, s, starts[s], NVE_SEED + s, 400, args.platform)
            for p in potentials for dt in args.dt_fs for s in range(args.starts)]
    t0 = time.time()
    with multiprocessing.Pool(args.jobs) as pool:
        lang = pool.map_async(langevin_run, [("smooth", models, args.langevin_ps, starts[0], 7, args.platform)]
                              if "smooth" in potentials else [])
        runs = list(tqdm(pool.imap_unordered(nve_run, jobs), total=len(jobs), desc="NVE runs", unit="run"))
        langevin = lang.get()
    rows = summarize(runs)
    slopes = dt2_slopes(rows)
    reference = (ref.phi, ref.psi, ref.weights)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "commit": commit,
            "cpus": os.cpu_count(), "platform": args.platform, "starts": args.starts, "ps": args.ps,
            "seconds": time.time() - t0, "missing_models": missing,
            "models": {p: model_identity(models[p]) for p in ("smooth", "spline") if p in potentials}}
    plot(rows, runs, langevin, reference, out)
    text = report(rows, slopes, langevin, meta, out)
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": rows, "slopes": slopes}, indent=2) + "\n")
    print(text)
    if missing:
        print("missing models (not run): " + ", ".join(missing))


if __name__ == "__main__":
    main()
