"""The main job: NVE molecular dynamics with a flow potential, beside the classical one.

Until the alanine-dipeptide flow ships (issue: alanine dipeptide end to end), this runs the
demo: a smooth flow trained by maximum likelihood on a united-atom octane chain
(models/demo/chain8.safetensors, made by scripts/make_demo_model.py) and the chain's own
classical force field (scripts/demo_chain.py).  From the same thermalized start (a frame of
the training data, velocities drawn at 300 K with a fixed seed), velocity Verlet
(openmm.VerletIntegrator) runs with each potential at each time step; the job prints the
energies and, per run, the total-energy drift (kJ/mol/ns and per degree of freedom) and the
fluctuation ratio RMS(E_tot - mean)/RMS(E_kin - mean).  The flow's atoms are mapped onto the
PDB's by residue and atom names.  It never imports torch.

The demo flow is a first, small training (likelihood plus force matching, 800 steps): near
the data its curvature matches the force field's, but away from it the flow has sharp
features, so it needs time steps about ten times smaller than the force field's for the same
energy conservation.  The default time steps (0.025-0.25 fs) show that, and the dt^2 law
where the steps are small enough.

Usage: python scripts/main_job.py [--steps 40000] [--dt-fs 0.025 0.05 0.1 0.25] [--platform Reference]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import openmmsmoothflow

# demo_chain lies beside this script: Python looks for imports in a script's own folder first.
import demo_chain

ROOT = Path(__file__).resolve().parents[1]


def run_nve(system, positions, dt_fs, steps, report, platform, seed, temperature):
    """Energies (step, E_pot, E_kin) every `report` steps of velocity Verlet."""
    integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    rows = []
    for step in range(0, steps + 1, report):
        if step:
            integrator.step(report)
        s = context.getState(getEnergy=True)
        rows.append((step, s.getPotentialEnergy().value_in_unit(unit.kilojoules_per_mole),
                     s.getKineticEnergy().value_in_unit(unit.kilojoules_per_mole)))
    return np.array(rows)


def summarize(rows, dt_fs, dof):
    t_ns = rows[:, 0] * dt_fs * 1e-6
    etot = rows[:, 1] + rows[:, 2]
    drift = np.polyfit(t_ns, etot, 1)[0]
    ratio = np.std(etot) / np.std(rows[:, 2])
    return drift, drift / dof, ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "demo" / "chain8.safetensors"))
    ap.add_argument("--pdb", default=str(ROOT / "models" / "demo" / "chain8.pdb"))
    ap.add_argument("--steps", type=int, default=40000, help="steps per run at the smallest time step")
    ap.add_argument("--dt-fs", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.25])
    ap.add_argument("--samples", type=int, default=200, help="energy samples per run")
    ap.add_argument("--platform", default="Reference")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    pdb = app.PDBFile(args.pdb)
    flow_system = demo_chain.flow_system(args.model)
    force = openmmsmoothflow.SmoothFlowForce.cast(flow_system.getForce(0))
    temperature = 300.0
    dof = 3 * flow_system.getNumParticles() - 6
    print(f"flow {Path(args.model).name}: {demo_chain.N_ATOMS} atoms, model T = {force.getTemperature():g} K; "
          f"classical reference: the chain's harmonic/torsion force field; NVE velocity Verlet on {args.platform}, "
          f"{temperature:g} K start")
    simulated_ps = args.steps * min(args.dt_fs) / 1000
    print(f"each run covers {simulated_ps:g} ps\n")
    header = f"{'potential':<12} {'dt/fs':>6} {'<E_pot>':>10} {'<E_kin>':>10} {'drift kJ/mol/ns':>16} " \
             f"{'per dof':>9} {'RMS dE_tot/RMS dE_kin':>22}"
    print(header)
    print("-" * len(header))
    results = []
    for dt in args.dt_fs:
        steps = int(round(simulated_ps * 1000 / dt))
        report = max(1, steps // args.samples)
        for name, system in (("smooth flow", flow_system), ("classical", demo_chain.classical_system())):
            rows = run_nve(system, pdb.positions, dt, steps, report, args.platform, args.seed, temperature)
            if not np.all(np.isfinite(rows)):
                sys.exit(f"{name} at {dt} fs: non-finite energies")
            drift, per_dof, ratio = summarize(rows, dt, dof)
            results.append((name, dt, ratio))
            print(f"{name:<12} {dt:6.3f} {rows[:, 1].mean():10.3f} {rows[:, 2].mean():10.3f} {drift:16.3f} "
                  f"{per_dof:9.4f} {ratio:22.5f}")
    print("\nThe fluctuation ratio of a smooth potential grows as dt^2 under velocity Verlet:")
    for name in ("smooth flow", "classical"):
        r = [(dt, ratio) for n, dt, ratio in results if n == name]
        if len(r) > 1:
            slope = np.polyfit(np.log([d for d, _ in r]), np.log([x for _, x in r]), 1)[0]
            print(f"  {name:<12} log-log slope of the ratio vs dt: {slope:.2f} (2 expected)")


if __name__ == "__main__":
    main()
