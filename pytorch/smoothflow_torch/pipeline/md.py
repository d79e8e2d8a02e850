"""Energy conservation: the project's flows as MD potentials against its force field.

NVE velocity Verlet (openmm.VerletIntegrator, no constraints, standard masses) from the same
thermalized starts for every potential: held-out frames drawn Boltzmann-distributed from the data
(systematic resampling by their weights), or evenly spaced frames of a given file (``starts_from``:
an .npz with ``positions`` (n, N, 3) nm of Boltzmann-distributed frames, e.g. the alanine study's
``obc.reference.npz``, whose frames its main job starts from), velocities at the project's temperature with seed
``100 + start``; at each time step. The flow is the only force of its System (mapped onto the
project's topology by openmmsmoothflow.addSmoothFlowForce, which checks the start). Per run the
total-energy drift (kJ/mol/ns) and the fluctuation ratio RMS(E_tot - <E_tot>) / RMS(E_kin -
<E_kin>); per potential the log-log slope of the ratio against dt (2 for a smooth potential) and
per time step the flow's ratio over the force field's (the alanine-dipeptide study's goal: within
2x). A run fails when OpenMM raises, an energy is not finite or the kinetic energy passes 1e4 kJ/mol.

Writes ``md/report.md``, ``md/results.json``, ``fluctuation_ratio_vs_dt.png`` and
``total_energy.png`` into the project (or ``out``). Never imports torch.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import data as pdata
from .evaluate import model_labels
from .project import Project

NVE_SEED = 100
FORCE_FIELD = "force field"


def _system(project_path: str, model: Optional[str], start):
    """The force field's System, or (``model``) the flow alone on the same masses."""
    project = Project(project_path)
    if model is None:
        return project.system()
    from .hot_frames import flow_system
    return flow_system(project, model, start)


def nve_series(context, integrator, dt_fs: float, ps: float, samples: int) -> dict:
    """Integrate ``ps`` of NVE in a thermalized ``context`` with its velocity Verlet
    ``integrator``, reading the energies ``samples`` times: ``{"seconds", "series": [(t ps,
    E_pot, E_kin)], "error"}`` and, for a run that finished, its ``drift_kj_mol_ns`` and ``ratio``
    (module docstring). The alanine study's main job runs its NVE runs through this too."""
    import openmm
    import openmm.unit as unit
    steps = max(1, int(round(ps * 1000 / dt_fs)))
    every = max(1, steps // samples)
    rows, t0, error = [], time.time(), None
    try:
        for i in range(0, steps + 1, every):
            if i:
                integrator.step(every)
            s = context.getState(getEnergy=True)
            epot = s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            ekin = s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            rows.append((i * dt_fs / 1000, epot, ekin))
            if not np.isfinite(epot + ekin) or ekin > 1e4:
                error = f"unstable after {i * dt_fs / 1000:.3f} ps (E_kin {ekin:.3g} kJ/mol)"
                break
    except openmm.OpenMMException as e:   # e.g. a configuration outside the flow's support
        error = str(e).splitlines()[0]
    r = np.array(rows)
    out = {"seconds": time.time() - t0, "series": r.tolist(), "error": error}
    if error is None and len(r) > 3:
        etot = r[:, 1] + r[:, 2]
        out["drift_kj_mol_ns"] = float(np.polyfit(r[:, 0] / 1000, etot, 1)[0])
        out["ratio"] = float(np.std(etot) / np.std(r[:, 2]))
    elif error is None:
        out["error"] = f"too few energy samples ({len(r)}) for a ratio: run longer"
    return out


def nve_run(job) -> dict:
    """One NVE run: ``(project path, potential label, model path or None, dt fs, ps, start index,
    positions, seed, energy samples, platform)``."""
    import openmm
    import openmm.unit as unit
    project_path, potential, model, dt_fs, ps, start, positions, seed, samples, platform = job
    project = Project(project_path)
    system = _system(project_path, model, positions)
    integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(np.asarray(positions) * unit.nanometer)
    context.setVelocitiesToTemperature(project.temperature * unit.kelvin, seed)
    return {"potential": potential, "dt_fs": dt_fs, "start": start,
            **nve_series(context, integrator, dt_fs, ps, samples)}


def summarize(runs, dof: int) -> list:
    """Per potential and time step: mean ratio and drift over the runs that finished, failures."""
    table = {}
    for r in runs:
        table.setdefault((r["potential"], r["dt_fs"]), []).append(r)
    rows = []
    for (potential, dt), rs in sorted(table.items()):
        ok = [r for r in rs if r["error"] is None]
        row = {"potential": potential, "dt_fs": dt, "runs": len(rs), "failed": len(rs) - len(ok)}
        if ok:
            row["ratio"] = float(np.mean([r["ratio"] for r in ok]))
            row["drift_kj_mol_ns"] = float(np.mean([r["drift_kj_mol_ns"] for r in ok]))
            row["drift_per_dof"] = row["drift_kj_mol_ns"] / dof
        row["errors"] = [f"{potential} at {dt:g} fs, start {r['start']}: {r['error']}"
                         for r in sorted(rs, key=lambda r: r["start"]) if r["error"]]
        rows.append(row)
    return rows


def dt2_slopes(rows) -> dict:
    """Log-log slope of each potential's ratio against dt (needs two time steps)."""
    slopes = {}
    for p in sorted({r["potential"] for r in rows}):
        pts = [(r["dt_fs"], r["ratio"]) for r in rows if r["potential"] == p and r.get("ratio", 0) > 0]
        if len(pts) >= 2:
            slopes[p] = float(np.polyfit(np.log([d for d, _ in pts]), np.log([x for _, x in pts]), 1)[0])
    return slopes


def relative_ratios(rows) -> dict:
    """{flow: {dt: flow ratio / force-field ratio}}; a flow with a failed run at dt gets inf."""
    ff = {r["dt_fs"]: r.get("ratio") for r in rows if r["potential"] == FORCE_FIELD}
    out = {}
    for r in rows:
        if r["potential"] == FORCE_FIELD or not ff.get(r["dt_fs"]):
            continue
        value = r["ratio"] / ff[r["dt_fs"]] if "ratio" in r and not r["failed"] else float("inf")
        out.setdefault(r["potential"], {})[r["dt_fs"]] = value
    return out


def plot_energy_conservation(rows, runs, out: Path, reference: str = FORCE_FIELD, dt_unit: str = "fs",
                             dt_scale: float = 1.0, time_unit: str = "ps", energy_unit: str = "kJ/mol",
                             dt2_guide: bool = False, dpi: int = 100) -> list:
    """``fluctuation_ratio_vs_dt.png`` (the ratio per potential against the step, log-log) and
    ``total_energy.png`` (E_tot - E_tot(0) of start 0 per step) in ``out``; returns their names.

    ``reference`` (the force field, or a study's true potential) is drawn in black. The rows'
    and runs' ``dt_fs`` is multiplied by ``dt_scale`` for the axes, labeled ``dt_unit``; the
    series' time and energy columns are labeled ``time_unit`` and ``energy_unit`` (a study in
    reduced units passes tau and kT). ``dt2_guide`` adds the dt^2 law through the reference's
    smallest step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    potentials = sorted({r["potential"] for r in rows})
    color = {p: "k" if p == reference else f"C{i}" for i, p in enumerate(potentials)}
    steps = sorted({r["dt_fs"] * dt_scale for r in rows})
    fig, ax = plt.subplots(figsize=(5, 4))
    for p in potentials:
        pts = sorted((r["dt_fs"] * dt_scale, r["ratio"]) for r in rows if r["potential"] == p and "ratio" in r)
        if pts:
            d, x = zip(*pts)
            ax.loglog(d, x, "o-", color=color[p], label=p)
            if dt2_guide and p == reference:
                grid = np.array(steps)
                ax.loglog(grid, x[0] * (grid / d[0]) ** 2, ":", color="gray", label="dt^2")
    ax.set_xticks(steps, [f"{d:g}" for d in steps])       # the steps run, not log-axis minor labels
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(f"time step ({dt_unit})")
    ax.set_ylabel("RMS dE_tot / RMS dE_kin")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fluctuation_ratio_vs_dt.png", dpi=dpi)
    plt.close(fig)
    dts = sorted({r["dt_fs"] for r in rows})
    fig, axes = plt.subplots(1, len(dts), figsize=(4 * len(dts), 3.4), squeeze=False)
    for ax, dt in zip(axes[0], dts):
        for p in potentials:
            for r in runs:
                if r["dt_fs"] == dt and r["start"] == 0 and r["potential"] == p and r["series"]:
                    s = np.array(r["series"])
                    ax.plot(s[:, 0], s[:, 1] + s[:, 2] - (s[0, 1] + s[0, 2]), color=color[p], label=p)
        ax.set_title(f"total energy, dt = {dt * dt_scale:g} {dt_unit} (start 0)", fontsize=9)
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_ylabel(f"E_tot - E_tot(0) ({energy_unit})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "total_energy.png", dpi=dpi)
    plt.close(fig)
    return ["fluctuation_ratio_vs_dt.png", "total_energy.png"]


def summary_table(rows, ratio: str = ".5g", drift: str = ".4g", per_dof: str = ".4g") -> list:
    """The markdown table of ``summarize``'s rows, numbers in the given formats (the alanine
    study's report keeps its own)."""
    lines = ["| potential | dt (fs) | RMS dE_tot / RMS dE_kin | drift (kJ/mol/ns) | drift per dof | failed runs |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [format(r[k], f) if k in r else "-"
                 for k, f in (("ratio", ratio), ("drift_kj_mol_ns", drift), ("drift_per_dof", per_dof))]
        lines.append(f"| {r['potential']} | {r['dt_fs']:g} | {' | '.join(cells)} | {r['failed']}/{r['runs']} |")
    return lines


def report(project: Project, rows, slopes, relative, meta: dict, plots) -> str:
    lines = [f"# Energy conservation: {project.name}, flows against {project.forcefield_label}", "",
             f"{meta['date']}; {meta['starts']} thermalized starts per potential and time step, {meta['ps']:g} ps "
             f"each (NVE velocity Verlet, no constraints, standard masses, {meta['platform']} platform, "
             f"{project.temperature:g} K); {meta['seconds']:.1f} s in all. Starts: "
             + (f"frames {meta['start_frames']} of `{meta['starts_from']}`." if meta.get("starts_from") else
                f"held-out frames {meta['start_frames']} of the data."), ""]
    lines += ["Models: " + "; ".join(f"{p} `{m['path']}` (sha256 {m['sha256']})" for p, m in meta["models"].items())
              + ".", ""]
    lines += summary_table(rows)
    if relative:
        lines += ["", "Flow over force field (a failed run counts as infinitely worse; the goal is within 2x):", "",
                  "| flow | dt (fs) | ratio / force field's | within 2x |", "|---|---|---|---|"]
        for p, by_dt in relative.items():
            for dt, v in sorted(by_dt.items()):
                lines.append(f"| {p} | {dt:g} | {v:.3f} | {'yes' if v <= 2 else 'no'} |")
    if slopes:
        lines += ["", "Log-log slope of the ratio against dt (2 for a smooth potential under velocity Verlet): "
                  + ", ".join(f"{p} {s:.2f}" for p, s in slopes.items()) + "."]
    errors = [e for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Failures:", ""] + [f"- {e}" for e in errors]
    lines += [""] + [f"![{p[:-4].replace('_', ' ')}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def md(project, models: Optional[Sequence] = None, dt_fs: Sequence[float] = (0.25, 0.5, 1.0, 2.0), ps: float = 10.0,
       starts: int = 4, samples: int = 400, platform: str = "Reference", jobs: int = 1, out=None,
       progress: bool = True, starts_from=None, frames=None) -> dict:
    """Run the NVE comparison (module docstring) for ``models`` (default the project's model) and the
    force field; returns ``{"meta", "summary", "runs", "slopes", "relative"}`` as in results.json
    (``runs``: every run's numbers and starting potential energy, without its energy series).
    ``frames``: the frames file whose held-out frames start the runs, instead of the project's
    ``data/frames.npz`` (ignored with ``starts_from``)."""
    from tqdm.auto import tqdm
    project = project if isinstance(project, Project) else Project(project)
    models = [Path(m) for m in models] if models else [project.model_path]   # as given: relative to the caller
    for m in models:
        if not m.exists():
            raise FileNotFoundError(f"{m} does not exist: run `smoothflow train {project.path}` first")
    if starts < 1 or ps <= 0 or not dt_fs:
        raise ValueError("starts must be >= 1, ps > 0 and at least one time step given")
    labels = {lab if lab == "flow" else f"flow {lab}": m for lab, m in zip(model_labels(models), models)}
    out = Path(out) if out else project.path / "md"
    out.mkdir(parents=True, exist_ok=True)
    if starts_from is None:
        test = pdata.load(Path(frames) if frames else project.frames_path, project.kT, project.n_atoms, "test")
        idx = pdata.boltzmann_indices(test.weights, starts)
        begin = [test.positions[i] for i in idx]
    else:
        with np.load(starts_from) as d:
            frames = np.asarray(d["positions"], float)
        if frames.ndim != 3 or frames.shape[1:] != (project.n_atoms, 3) or len(frames) < starts:
            raise ValueError(f"{starts_from}: positions of shape {frames.shape}; need ({starts} or more, "
                             f"{project.n_atoms}, 3)")
        idx = [i * (len(frames) // starts) for i in range(starts)]    # evenly spaced, as the study's main job
        begin = [frames[i] for i in idx]
    potentials = [(label, str(m)) for label, m in labels.items()] + [(FORCE_FIELD, None)]
    jobs_list = [(str(project.path), p, m, float(dt), float(ps), s, begin[s], NVE_SEED + s, samples, platform)
                 for p, m in potentials for dt in dt_fs for s in range(starts)]
    t0 = time.time()
    if jobs > 1:
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            runs = list(tqdm(pool.imap_unordered(nve_run, jobs_list), total=len(jobs_list), desc="NVE runs",
                             unit="run", disable=not progress))
    else:
        runs = [nve_run(j) for j in tqdm(jobs_list, desc="NVE runs", unit="run", disable=not progress)]
    rows = summarize(runs, 3 * project.n_atoms)
    slopes = dt2_slopes(rows)
    relative = relative_ratios(rows)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "project": project.name,
            "cpus": os.cpu_count(), "platform": platform, "starts": starts, "ps": ps, "dt_fs": list(dt_fs),
            "start_frames": [int(i) for i in idx], "starts_from": None if starts_from is None else str(starts_from),
            "seconds": time.time() - t0,
            "models": {p: {"path": str(m), "sha256": hashlib.sha256(Path(m).read_bytes()).hexdigest()[:16]}
                       for p, m in labels.items()}}
    plots = plot_energy_conservation(rows, runs, out)
    (out / "report.md").write_text(report(project, rows, slopes, relative, meta, plots))
    each = [dict({k: v for k, v in r.items() if k != "series"}, epot_start=r["series"][0][1] if r["series"] else None)
            for r in sorted(runs, key=lambda r: (r["potential"], r["dt_fs"], r["start"]))]
    result = {"meta": meta, "summary": rows, "runs": each, "slopes": slopes,
              "relative": {p: {str(k): v for k, v in d.items()} for p, d in relative.items()}}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
