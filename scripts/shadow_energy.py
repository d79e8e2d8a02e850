#!/usr/bin/env python3
"""Does velocity Verlet's shadow energy drift on a potential? (docs/reliability.md section 5; not
run by the tests.)

Velocity Verlet conserves, for a smooth potential and a stable step h, a modified energy
H~ = H + h^2 (v.U''.v / 12 - F.M^-1.F / 24) + O(h^4) (v the on-step velocities, F the forces;
exact for a harmonic oscillator's quadratic invariant to this order). Its oscillation within a
step is what makes E_tot = H fluctuate; a drift of H~ is heating that no step size below the
stability limit removes to this order: the potential has structure on the scale of one step.

Reproduces one run of ``smoothflow hot-md`` (``nve_event.hot_start``), then runs velocity Verlet
(an OpenMM CustomIntegrator, on-step velocities) from its end state on the Reference platform and
records H and H~ every step (v.U''.v by central differences of the forces along v). Reports the
drift of each over the first ps, their spread within 50-fs windows and the distribution of their
change over 4 steps, before the run passes twice the bath.

    python scripts/shadow_energy.py PROJECT MODEL --temperature 2000 --seed 1 \\
        --frames data/alanine_dipeptide/obc.reference.npz [--nve-ps 5] [--out runs/shadow_energy]

``MODEL`` ``ff`` runs the project's force field. Writes OUT/shadow_<T>_<seed>_<name>.json.
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
WINDOW = 25


def _stats(t, e, first, limit):
    spreads = [e[j:j + WINDOW].std() for j in range(0, limit - WINDOW + 1, WINDOW)]
    d4 = np.abs(e[4:limit] - e[:limit - 4])
    return {"drift_first_ps_kj_mol_ps": float(np.polyfit(t[:first], e[:first], 1)[0]),
            "window_spread_median_kj_mol": float(np.median(spreads)),
            "change_4_steps_median": float(np.median(d4)), "change_4_steps_p99": float(np.percentile(d4, 99))}


def main(argv=None):
    import openmm
    from openmm import unit
    from smoothflow_torch import provenance
    from smoothflow_torch.openmm_bridge import OpenMMEnergy
    from smoothflow_torch.pipeline.hot_md import MOLAR_GAS_CONSTANT
    from smoothflow_torch.verlet_error import velocity_verlet_integrator
    from nve_event import hot_start, hot_start_arguments

    p = hot_start_arguments(__doc__, nve_ps=5.0,
                            platform_help="of the Langevin run (velocity Verlet runs on Reference)")
    p.add_argument("--eps", type=float, default=1e-5, help="central-difference step along v (ps)")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "shadow_energy"))
    a = p.parse_args(argv)

    project, system, force, lang, context = hot_start(a.project, a.model, a.temperature, a.seed, a.ps, a.platform,
                                                      a.frames)
    st = context.getState(getPositions=True, getVelocities=True)
    h = a.nve_dt_fs * 1e-3
    integrator = velocity_verlet_integrator(a.nve_dt_fs)
    nve = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    nve.setPositions(st.getPositions())
    nve.setVelocities(st.getVelocities())
    probe = OpenMMEnergy(system)
    n = system.getNumParticles()
    m = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])[:, None]
    steps = int(round(a.nve_ps * 1000 / a.nve_dt_fs))
    rows = []
    for k in range(steps + 1):
        s = nve.getState(getEnergy=True, getPositions=True, getVelocities=True, getForces=True)
        x = s.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v = s.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        f = s.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        kin = s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        pot = s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        _, fpm, _ = probe.evaluate(np.stack([x + a.eps * v, x - a.eps * v]))
        vhv = -float(((fpm[0] - fpm[1]) * v).sum()) / (2 * a.eps)
        fmf = float((f * f / m).sum())
        rows.append((k * h, kin, pot, kin + pot + h * h * (vhv / 12 - fmf / 24)))
        if not np.isfinite(kin + pot) or 2 * kin / (3 * n * MOLAR_GAS_CONSTANT) > 10 * a.temperature or k == steps:
            break
        try:
            integrator.step(1)
        except openmm.OpenMMException:
            break
    t, kin, pot, shadow = (np.array(c) for c in zip(*rows))
    energy = kin + pot
    hot = np.nonzero(2 * kin / (3 * n * MOLAR_GAS_CONSTANT) > 2 * a.temperature)[0]
    limit = int(hot[0]) if len(hot) else len(t)
    first = min(limit, int(round(1.0 / h)))
    name = "ff" if a.model == "ff" else os.path.basename(os.path.dirname(os.path.abspath(a.model)))
    result = {"meta": {**provenance.machine(ROOT), "project": a.project, "model": a.model,
                       "temperature_k": a.temperature, "seed": a.seed, "nve_dt_fs": a.nve_dt_fs, "eps_ps": a.eps},
              "langevin_t_kin_k": lang["t_kin_mean_k"], "steps": len(t), "steps_before_twice_the_bath": limit,
              "energy": _stats(t, energy, first, limit), "shadow": _stats(t, shadow, first, limit)}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"shadow_{a.temperature:g}_{a.seed}_{name}.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: result[k] for k in ("steps", "steps_before_twice_the_bath", "energy", "shadow")}))


if __name__ == "__main__":
    main()
