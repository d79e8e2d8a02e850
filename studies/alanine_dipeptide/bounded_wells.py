"""How deep must a bond well be for NVE velocity Verlet at 1 and 2 fs? (docs/design.md, "Well depth")

A flow's potential along a bond is a well of finite depth: its density never vanishes, so
-kT log p is bounded.  This study isolates that one property.  It takes Amber ff99SB-ILDN (OBC)
and replaces every harmonic bond k/2 (r - r0)^2 by a bounded well with the same r0 and the
same curvature k at the minimum, but depth D:

    tanh2:  D tanh^2(a (r - r0)),          a = sqrt(k / (2 D))   (symmetric: a plateau on both sides,
                                                                  the shape of a flow's bond well)
    morse:  D (1 - exp(-a (r - r0)))^2,    a = sqrt(k / (2 D))   (dissociates on one side only)

then runs the energy-conservation protocol of the main job (NVE from the same held-out starts,
velocities at 300 K) and counts how often a bond leaves its well (stretched more than 0.1 nm)
or the run blows up, with the fluctuation ratio RMS(dE_tot)/RMS(dE_kin) of the runs that stay
intact.  Output: report.md and bounded_wells.png in one folder (default results/bounded_wells beside this module).

Usage (from studies/): python -m alanine_dipeptide.bounded_wells [--ps 10] [--starts 4] [--out DIR]
"""
import argparse
import datetime
import json
import multiprocessing
import subprocess
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
from tqdm import tqdm

from . import data, energy_conservation, forcefield

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"tanh2": "D*tanh(a*(r-r0))^2; a=sqrt(k/(2*D))",
          "morse": "D*(1-exp(-a*(r-r0)))^2; a=sqrt(k/(2*D))"}
DEPTHS = (25.0, 40.0, 60.0, 100.0, 200.0, 400.0)   # kJ/mol
LEFT_WELL = 0.1   # nm beyond r0: the bond has left its well


def bonds_of(system: openmm.System):
    force = next(f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    out = []
    for b in range(force.getNumBonds()):
        i, j, r0, k = force.getBondParameters(b)
        out.append((i, j, r0.value_in_unit(unit.nanometer), k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer ** 2)))
    return out


def bounded_system(shape: str, depth: float) -> openmm.System:
    """ff99SB-ILDN (OBC) with every harmonic bond replaced by a bounded well (module docstring);
    shape "harmonic" leaves the force field as it is."""
    system = forcefield.system("obc")
    if shape == "harmonic":
        return system
    index = next(i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.HarmonicBondForce))
    bonds = bonds_of(system)
    well = openmm.CustomBondForce(SHAPES[shape])
    well.addGlobalParameter("D", depth)
    well.addPerBondParameter("r0")
    well.addPerBondParameter("k")
    for i, j, r0, k in bonds:
        well.addBond(i, j, [r0, k])
    system.removeForce(index)
    system.addForce(well)
    return system


def nve(job) -> dict:
    """One NVE run; returns whether a bond left its well or the run blew up, and the ratio."""
    shape, depth, dt_fs, ps, start, positions, seed = job
    system = bounded_system(shape, depth)
    bonds = bonds_of(forcefield.system("obc"))
    integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
    context = energy_conservation.thermalized_context(system, integrator, positions, seed, "Reference")
    every = max(1, int(round(25 / dt_fs)))     # a sample every 25 fs
    etot, ekin, failed = [], [], False
    for _ in range(int(round(ps * 1000 / (every * dt_fs)))):
        integrator.step(every)
        s = context.getState(getEnergy=True, getPositions=True)
        ep = s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        ek = s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        x = s.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        stretch = max(np.linalg.norm(x[i] - x[j]) - r0 for i, j, r0, _ in bonds)
        if not np.isfinite(ep + ek) or ek > 1e4 or stretch > LEFT_WELL:
            failed = True
            break
        etot.append(ep + ek)
        ekin.append(ek)
    ratio = None if failed else float(np.std(etot) / np.std(ekin))
    return {"shape": shape, "depth": depth, "dt_fs": dt_fs, "start": start, "failed": failed, "ratio": ratio}


def summarize(runs):
    rows = {}
    for r in runs:
        rows.setdefault((r["shape"], r["depth"], r["dt_fs"]), []).append(r)
    out = []
    for (shape, depth, dt), rs in sorted(rows.items()):
        ok = [r["ratio"] for r in rs if not r["failed"]]
        out.append({"shape": shape, "depth": depth, "dt_fs": dt, "runs": len(rs),
                    "failed": sum(r["failed"] for r in rs), "ratio": float(np.mean(ok)) if ok else None})
    return out


def plot(rows, out: Path):
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, dt in zip(axes, (1.0, 2.0)):
        ref = [r for r in rows if r["shape"] == "harmonic" and r["dt_fs"] == dt]
        for shape, color in (("tanh2", "C0"), ("morse", "C1")):
            rs = [r for r in rows if r["shape"] == shape and r["dt_fs"] == dt]
            ax.semilogx([r["depth"] for r in rs], [r["failed"] / r["runs"] for r in rs], "o-", color=color,
                        label=f"{shape}: runs that lost a bond")
            ok = [r for r in rs if r["ratio"] is not None]
            if ok and ref and ref[0]["ratio"]:
                ax.semilogx([r["depth"] for r in ok], [r["ratio"] / ref[0]["ratio"] for r in ok], "s--",
                            color=color, label=f"{shape}: ratio / harmonic ratio")
        ax.axhline(2.0, color="gray", ls=":", label="2x the force field")
        ax.set_title(f"dt = {dt:g} fs")
        ax.set_xticks(DEPTHS, [f"{d:g}" for d in DEPTHS])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("bond well depth D (kJ/mol)")
        ax.set_ylabel("fraction of runs, or ratio")
        ax.set_ylim(0, 3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "bounded_wells.png", dpi=120)
    plt.close(fig)


def write_report(rows, meta, out: Path):
    lines = ["# How deep must a bond well be? Bounded bonds under NVE velocity Verlet", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['cpus']} cores, platform Reference; "
             f"{meta['starts']} starts x {meta['ps']} ps per row (`python -m alanine_dipeptide.bounded_wells`).", "",
             "Amber ff99SB-ILDN (OBC) with every harmonic bond replaced by a well of depth D and the same "
             "curvature at its minimum (tanh2: symmetric, a plateau on both sides like a flow's bond well; "
             "morse: dissociative on one side). A run fails when a bond stretches 0.1 nm past r0 or the energy "
             "blows up. Ratio: RMS(dE_tot)/RMS(dE_kin) of the runs that did not fail.", "",
             "| bonds | depth (kJ/mol) | dt (fs) | failed runs | fluctuation ratio |", "|---|---|---|---|---|"]
    for r in rows:
        depth = "-" if r["shape"] == "harmonic" else f"{r['depth']:g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(f"| {r['shape']} | {depth} | {r['dt_fs']:g} | {r['failed']}/{r['runs']} | {ratio} |")
    lines += ["", "![failures and fluctuation ratio against well depth](bounded_wells.png)", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def replot(out: Path):
    """Redraw the plot and report from a finished run's bounded_wells.json."""
    saved = json.loads((out / "bounded_wells.json").read_text())
    plot(saved["rows"], out)
    write_report(saved["rows"], saved["meta"], out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ps", type=float, default=10.0)
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--dt-fs", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bounded_wells"))
    ap.add_argument("--replot", action="store_true", help="only redraw plot and report from <out>/bounded_wells.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.replot:
        return replot(out)
    out.mkdir(parents=True, exist_ok=True)
    test = data.load_reference("obc").test
    starts = energy_conservation.start_frames(test, args.starts)
    cases = [("harmonic", 0.0)] + [(s, d) for s in SHAPES for d in DEPTHS]
    jobs = [(s, d, dt, args.ps, k, starts[k], energy_conservation.NVE_SEED + k) for s, d in cases for dt in args.dt_fs
            for k in range(args.starts)]
    with multiprocessing.Pool(min(len(jobs), multiprocessing.cpu_count())) as pool:
        runs = list(tqdm(pool.imap(nve, jobs), total=len(jobs), desc="NVE runs", unit="run"))
    rows = summarize(runs)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "commit": commit,
            "cpus": multiprocessing.cpu_count(), "starts": args.starts, "ps": args.ps}
    (out / "bounded_wells.json").write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=1) + "\n")
    plot(rows, out)
    write_report(rows, meta, out)
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
