#!/usr/bin/env python3
"""What happens in the step where a flow's velocity-Verlet run goes wrong? (docs/reliability.md
section 5; not run by the tests.)

Reproduces one run of ``smoothflow hot-md`` (the same Langevin run: same start, seed and platform,
so the same end state), then runs its velocity Verlet check one step at a time, keeping every
step's energies, positions and velocities, and measures the heating before the run passes twice
the bath: the total energy's drift over the first ps, its spread within 50-fs windows (velocity
Verlet's E_tot oscillates within a step; the window mean does not) and the **events**, the
windows whose mean rises most (above ``--jump`` kJ/mol). At the step of largest |dE_tot| in each:

* dt_max = 2 / omega_max of the mass-weighted Hessian at the configurations before and after
  the step: is the step linearly unstable there?
* the potential along the straight segment between the two configurations (64 points) against
  the cubic that the end points' energies and forces define: a large excess says the step jumped
  over a feature narrower than itself, which no harmonic stiffness measure sees;
* the same step taken as 8 steps of dt/8 from the same state: does a smaller step remove the jump?
* the wall count before and after, and the atoms that moved most.

``MODEL`` ``ff`` runs the project's force field instead (the baseline, same seed and start).

    python scripts/nve_event.py PROJECT MODEL --temperature 2000 --seed 1 \\
        --frames data/alanine_dipeptide/obc.reference.npz [--out runs/nve_event]

Writes OUT/nve_event_<T>_<seed>.json and .md, and the steps before the failure
(``steps.npz``: time, E_kin, E_pot, positions, velocities) for further study.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
KEEP_STEPS = 1500        # saved: the last 3 ps at 2 fs
WINDOW_STEPS = 25       # E_tot averaged over 50 fs at 2 fs: velocity Verlet's oscillation averages out


class ContextPotential:
    """Energy and forces of an OpenMM System at given positions, with ``evaluate(x[None])``
    (the interface of ``wall_curvature.modes``): the same mapped force the MD ran."""

    def __init__(self, system, platform):
        from smoothflow_torch.openmm_bridge import OpenMMEnergy
        self.bridge = OpenMMEnergy(system, platform=platform,
                                   platform_properties={"Threads": "1"} if platform == "CPU" else None)

    def evaluate(self, x):
        energies, forces, _ = self.bridge.evaluate(np.asarray(x).reshape(1, -1, 3))
        return energies[0], forces[0]


def segment_excess(pot, x0, x1, n=64):
    """The largest |E(segment) - Hermite cubic| (kJ/mol) along x0 -> x1, and where (0..1)."""
    e0, f0 = pot.evaluate(x0)
    e1, f1 = pot.evaluate(x1)
    d = (x1 - x0).reshape(-1)
    g0, g1 = -f0.reshape(-1) @ d, -f1.reshape(-1) @ d          # dE/ds at the ends
    worst, where, profile = 0.0, 0.0, []
    for s in np.linspace(0, 1, n + 1)[1:-1]:
        e = pot.evaluate(x0 + s * (x1 - x0))[0]
        h00, h10, h01, h11 = 2*s**3 - 3*s**2 + 1, s**3 - 2*s**2 + s, -2*s**3 + 3*s**2, s**3 - s**2
        cubic = h00 * e0 + h10 * g0 + h01 * e1 + h11 * g1
        profile.append([float(s), float(e), float(cubic)])
        if abs(e - cubic) > worst:
            worst, where = abs(e - cubic), float(s)
    return worst, where, profile


def substep_jump(system, platform, x, v, dt_fs, k=8):
    """E_tot after one step of dt and after k steps of dt/k, each minus E_tot before (kJ/mol)."""
    import openmm
    from openmm import unit
    out = []
    for steps, h in ((1, dt_fs), (k, dt_fs / k)):
        ctx = openmm.Context(system, openmm.VerletIntegrator(h * unit.femtoseconds),
                             openmm.Platform.getPlatformByName(platform),
                             {"Threads": "1"} if platform == "CPU" else {})
        ctx.setPositions(x * unit.nanometer)
        ctx.setVelocities(v * unit.nanometer / unit.picosecond)
        st = ctx.getState(getEnergy=True)
        before = (st.getKineticEnergy() + st.getPotentialEnergy()).value_in_unit(unit.kilojoule_per_mole)
        ctx.getIntegrator().step(steps)
        st = ctx.getState(getEnergy=True)
        out.append((st.getKineticEnergy() + st.getPotentialEnergy()).value_in_unit(unit.kilojoule_per_mole) - before)
    return out


def hot_start(project_path, model, temperature, seed, ps, platform, frames=None):
    """hot-md's Langevin run at ``temperature`` (the same start, seed and platform, so the same end
    state) of ``model`` (a flow file, or ``ff`` for the project's force field); returns (project,
    system, force or None, the run's summary, its Context)."""
    import openmmsmoothflow
    from smoothflow_torch.export import read_model_bytes
    from smoothflow_torch.pipeline import data as pdata
    from smoothflow_torch.pipeline.hot_frames import flow_system
    from smoothflow_torch.pipeline.hot_md import _bond_pairs, coordinated, langevin_run, longest_bonds
    from smoothflow_torch.pipeline.project import Project

    project = Project(project_path)
    held_out = pdata.load(frames or project.frames_path, project.kT, project.n_atoms, "test")
    x0 = held_out.positions[0]
    pairs = _bond_pairs(project.topology())
    ref = longest_bonds(held_out.positions, pairs)
    centres = coordinated(pairs, project.n_atoms, 3)
    if model == "ff":
        zmatrix, system, force = project.zmatrix, project.system(), None
    else:
        zmatrix = np.array(read_model_bytes(open(model, "rb").read())[0]["zmatrix"], dtype=int)
        system = flow_system(project, model, x0)
        force = openmmsmoothflow.SmoothFlowForce.cast(system.getForce(0))
    lang, context = langevin_run(system, force, x0, temperature, ps, 1.0, seed, platform, pairs,
                                 ref.max(0), ref.min(0), zmatrix, centres,
                                 tetrahedral=coordinated(pairs, project.n_atoms, 4))
    print(f"Langevin {ps} ps at {temperature:g} K, seed {seed}: T_kin {lang['t_kin_mean_k']:.0f} K", file=sys.stderr)
    return project, system, force, lang, context


def hot_start_arguments(doc, nve_ps, platform_help="of the runs"):
    """The command line of a script that starts from hot-md's Langevin run (:func:`hot_start`)
    and then runs velocity Verlet: project, model, temperature, seed, frames, Langevin ps, NVE ps
    and step, platform."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("project")
    p.add_argument("model", help="a flow model file, or ff for the project's force field (the baseline)")
    p.add_argument("--temperature", type=float, default=2000.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frames", default=None, help="held-out frames for the start (as hot-md's --frames)")
    p.add_argument("--ps", type=float, default=100.0, help="Langevin length (as hot-md's)")
    p.add_argument("--nve-ps", type=float, default=nve_ps)
    p.add_argument("--nve-dt-fs", type=float, default=2.0)
    p.add_argument("--platform", default="CPU", help=platform_help)
    return p


def main(argv=None):
    import openmm
    from openmm import unit
    from smoothflow_torch import provenance
    from smoothflow_torch.pipeline.hot_md import MOLAR_GAS_CONSTANT, RUNAWAY, _bond_pairs, angle_deficit, coordinated
    from wall_curvature import modes

    p = hot_start_arguments(__doc__, nve_ps=20.0)
    p.add_argument("--jump", type=float, default=20.0, help="an event: |dE_tot| over one step above this (kJ/mol)")
    p.add_argument("--events", type=int, default=3)
    p.add_argument("--stiffness-steps", type=int, default=400,
                   help="dt_max along the first this many steps of the NVE run (before heating); 0: none")
    p.add_argument("--stiffness-every", type=int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "nve_event"))
    a = p.parse_args(argv)

    project, system, force, lang, context = hot_start(a.project, a.model, a.temperature, a.seed, a.ps, a.platform,
                                                      a.frames)
    T = a.temperature
    pairs = _bond_pairs(project.topology())
    centres = coordinated(pairs, project.n_atoms, 3)

    st = context.getState(getPositions=True, getVelocities=True)
    integrator = openmm.VerletIntegrator(a.nve_dt_fs * unit.femtoseconds)
    nve = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(a.platform),
                         {"Threads": "1"} if a.platform == "CPU" else {})
    nve.setPositions(st.getPositions())
    nve.setVelocities(st.getVelocities())
    dof = 3 * system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    keep = []
    failure = None
    n_steps = int(round(a.nve_ps * 1000 / a.nve_dt_fs))
    for n in range(n_steps + 1):
        s = nve.getState(getEnergy=True, getPositions=True, getVelocities=True)
        k = s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        u = s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        keep.append((n * a.nve_dt_fs * 1e-3, k, u, force.getWallCount(nve) if force else 0,
                     s.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                     s.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)))
        t_kin = 2 * k / (dof * MOLAR_GAS_CONSTANT)
        if not np.isfinite(k + u) or t_kin > RUNAWAY * T:
            failure = {"time_ps": keep[-1][0], "reason": f"kinetic temperature {t_kin:.4g} K"}
            break
        if n == n_steps:
            break
        try:
            integrator.step(1)
        except openmm.OpenMMException as e:
            failure = {"time_ps": (n + 1) * a.nve_dt_fs * 1e-3, "reason": str(e).splitlines()[0][:200]}
            break
    t, ek, ep, wall, xs, vs = (np.array(c) for c in zip(*keep))
    etot = ek + ep
    result = {"meta": {**provenance.machine(ROOT), "project": a.project, "model": a.model, "temperature_k": T,
                       "seed": a.seed, "platform": a.platform, "nve_dt_fs": a.nve_dt_fs, "jump_kj_mol": a.jump},
              "langevin_t_kin_k": lang["t_kin_mean_k"], "failure": failure, "events": []}
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, f"nve_event_{T:g}_{a.seed}")
    np.savez(stem + "_steps.npz", time_ps=t, e_kin=ek, e_pot=ep, wall_count=wall,
             positions=xs[-KEEP_STEPS:], velocities=vs[-KEEP_STEPS:])
    if failure is None:
        print("no failure in the NVE run", file=sys.stderr)
    dE = np.diff(etot)
    t_kin_all = 2 * ek / (dof * MOLAR_GAS_CONSTANT)
    hot = np.nonzero(t_kin_all > 2 * T)[0]
    limit = int(hot[0]) if len(hot) else len(dE)          # steps before the run first passes 2x the bath
    W = WINDOW_STEPS
    means = np.array([etot[j:j + W].mean() for j in range(0, limit - W + 1, W)])
    spreads = np.array([etot[j:j + W].std() for j in range(0, limit - W + 1, W)])
    first = min(limit, int(round(1.0 / (a.nve_dt_fs * 1e-3))))         # the first ps, or less
    pot = ContextPotential(system, a.platform)
    result["steps"] = len(t)
    result["steps_before_heating"] = limit
    result["drift_first_ps_kj_mol_ps"] = float(np.polyfit(t[:first], etot[:first], 1)[0]) if first > 2 else None
    result["window_spread_median_kj_mol"] = float(np.median(spreads)) if len(spreads) else None
    result["window_rise_max_kj_mol"] = float(np.diff(means).max()) if len(means) > 1 else None
    # the windows whose mean E_tot rises most; in each, the step with the largest |dE_tot|
    rises = np.diff(means)
    order = [int(w) for w in np.argsort(rises)[::-1] if rises[w] > a.jump][: a.events]
    jumps = [int((w + 1) * W + np.abs(dE[(w + 1) * W:(w + 2) * W]).argmax()) for w in order]
    # dt_max along the trajectory: does the step meet brief linear instabilities (dt_max < dt)?
    n_stiff = min(a.stiffness_steps, limit)
    if n_stiff > 0:
        idx = np.arange(0, n_stiff, a.stiffness_every)
        dtm = np.array([modes(pot, xs[i], masses)[0] for i in idx])
        w_min = [float(dtm[(idx >= j) & (idx < j + W)].min()) for j in range(0, n_stiff - W + 1, W)]
        w_rise = [float(etot[j + W:j + 2 * W].mean() - etot[j:j + W].mean()) for j in range(0, n_stiff - W + 1, W)]
        result["stiffness"] = {
            "steps": int(n_stiff), "every": a.stiffness_every, "dt_max_min_fs": float(dtm.min()),
            "dt_max_p10_fs": float(np.percentile(dtm, 10)), "dt_max_median_fs": float(np.median(dtm)),
            "below_dt": float((dtm < a.nve_dt_fs).mean()), "below_1_1_dt": float((dtm < 1.1 * a.nve_dt_fs).mean()),
            "drift_kj_mol_ps": float(np.polyfit(t[:n_stiff], etot[:n_stiff], 1)[0]),
            "window_min_dt_max_vs_next_rise_correlation":
                float(np.corrcoef(w_min[:-1], w_rise[:-1])[0, 1]) if len(w_min) > 3 else None,
            "dt_max_fs": dtm.tolist()}
        print(json.dumps({k: v for k, v in result["stiffness"].items() if k != "dt_max_fs"}), file=sys.stderr)
    for i in jumps[: a.events]:
        x_a, x_b = xs[i], xs[i + 1]
        excess, where, profile = segment_excess(pot, x_a, x_b)
        one, sub = substep_jump(system, a.platform, x_a, vs[i], a.nve_dt_fs)
        moved = np.linalg.norm(x_b - x_a, axis=1)
        top = np.argsort(moved)[::-1][:3]
        atoms = list(project.topology().atoms())
        ev = {"time_ps": float(t[i]), "window_rise_kj_mol": float(rises[(i // W) - 1]), "de_kj_mol": float(dE[i]), "e_pot_before": float(ep[i]), "e_pot_after": float(ep[i + 1]),
              "dt_max_before_fs": modes(pot, x_a, masses)[0], "dt_max_after_fs": modes(pot, x_b, masses)[0],
              "segment_excess_kj_mol": excess, "segment_excess_at": where,
              "one_step_de": one, "eight_substeps_de": sub,
              "wall_evaluations_in_step": int(wall[i + 1] - wall[i]),
              "moved_most": [f"{atoms[j].residue.name}{atoms[j].residue.index + 1}:{atoms[j].name} {moved[j]*10:.3f} A" for j in top],
              "out_of_plane_deg_after": float(angle_deficit(x_b[None], centres)[0].max()) if centres else None,
              "profile": profile}
        result["events"].append(ev)
        print(json.dumps({k: v for k, v in ev.items() if k != "profile"}), file=sys.stderr)
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=1)
    lines = [f"# Velocity Verlet events: {a.model}, {T:g} K, seed {a.seed}", "",
             f"{result['meta']['date']}, commit {result['meta']['commit']}; NVE at {a.nve_dt_fs} fs after "
             f"{a.ps} ps of Langevin; failure: {failure}; before the run passes twice the bath "
             f"({limit} steps): E_tot drift over the first ps {result['drift_first_ps_kj_mol_ps']} kJ/mol/ps, "
             f"spread within {W}-step windows (median) {result['window_spread_median_kj_mol']} kJ/mol, "
             f"largest rise of a window's mean {result['window_rise_max_kj_mol']} kJ/mol. The events: the "
             f"windows rising most (above {a.jump} kJ/mol), at the step of largest |dE_tot| in each.", "",
             "| t (ps) | window rise (kJ/mol) | dE_tot of the step | dt_max before / after (fs) | segment excess over the cubic (kJ/mol, at) | "
             "same step as 8 substeps: dE | wall evaluations | moved most |", "|---|---|---|---|---|---|---|---|"]
    for e in result["events"]:
        lines.append(f"| {e['time_ps']:.3f} | {e['window_rise_kj_mol']:.1f} | {e['de_kj_mol']:.1f} | {e['dt_max_before_fs']:.2f} / {e['dt_max_after_fs']:.2f} | "
                     f"{e['segment_excess_kj_mol']:.1f} ({e['segment_excess_at']:.2f}) | {e['eight_substeps_de']:.1f} "
                     f"(one step {e['one_step_de']:.1f}) | {e['wall_evaluations_in_step']} | {'; '.join(e['moved_most'])} |")
    if "stiffness" in result:
        st = result["stiffness"]
        lines += ["", f"dt_max along the first {st['steps']} steps (every {st['every']}): min / 10 % / median "
                  f"{st['dt_max_min_fs']:.2f} / {st['dt_max_p10_fs']:.2f} / {st['dt_max_median_fs']:.2f} fs; "
                  f"below the step {st['below_dt']:.1%}, below 1.1 steps {st['below_1_1_dt']:.1%}; E_tot drift "
                  f"over these steps {st['drift_kj_mol_ps']:.1f} kJ/mol/ps; correlation of a 50-fs window's "
                  f"smallest dt_max with the next window's E_tot rise "
                  f"{st['window_min_dt_max_vs_next_rise_correlation']}."]
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
