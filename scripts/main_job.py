"""The main job: NVE molecular dynamics with a flow potential, printing energies.

Until the alanine-dipeptide flow ships (issue: alanine dipeptide end to end), this runs the
demo model (models/demo/chain8.safetensors, an untrained 8-atom chain flow): the PDB's
atoms are mapped onto the model by residue and atom names, the SmoothFlowForce is the
System's only force, velocities are drawn at the model's temperature, and velocity
Verlet (openmm.VerletIntegrator) integrates at a fixed time step.  It prints a table of
potential, kinetic and total energy, and the total-energy drift and fluctuation ratio
RMS(dE_tot)/RMS(dE_kin).  It never imports torch.

Usage: python scripts/main_job.py [--steps 20000] [--dt-fs 0.5] [--platform Reference]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

import openmmsmoothflow

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "demo" / "chain8.safetensors"))
    ap.add_argument("--pdb", default=str(ROOT / "models" / "demo" / "chain8.pdb"))
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--dt-fs", type=float, default=0.5)
    ap.add_argument("--report", type=int, default=2000, help="steps between printed lines")
    ap.add_argument("--platform", default="Reference")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    pdb = app.PDBFile(args.pdb)
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    force = openmmsmoothflow.addSmoothFlowForce(system, pdb.topology, args.model)
    temperature = force.getTemperature()
    print(f"model {Path(args.model).name}: {force.getNumModelAtoms()} atoms, T = {temperature:g} K, "
          f"kT = {force.getKT():.4f} kJ/mol; {args.steps} steps of {args.dt_fs} fs on {args.platform}")

    integrator = openmm.VerletIntegrator(args.dt_fs * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(args.platform))
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, args.seed)

    rows = []
    print(f"{'step':>8} {'time/ps':>9} {'E_pot':>12} {'E_kin':>12} {'E_tot':>12}   (kJ/mol)")
    for step in range(0, args.steps + 1, args.report):
        if step:
            integrator.step(args.report)
        s = context.getState(getEnergy=True)
        epot = s.getPotentialEnergy().value_in_unit(unit.kilojoules_per_mole)
        ekin = s.getKineticEnergy().value_in_unit(unit.kilojoules_per_mole)
        rows.append((step, epot, ekin, epot + ekin))
        print(f"{step:8d} {step * args.dt_fs / 1000:9.3f} {epot:12.4f} {ekin:12.4f} {epot + ekin:12.4f}")
    data = np.array(rows)
    t_ns = data[:, 0] * args.dt_fs * 1e-6
    etot, ekin = data[:, 3], data[:, 2]
    drift = np.polyfit(t_ns, etot, 1)[0] if len(t_ns) > 2 else float("nan")
    dof = 3 * system.getNumParticles() - 6
    ratio = np.std(etot) / np.std(ekin)
    print(f"total-energy drift {drift:.3f} kJ/mol/ns ({drift / dof:.4f} per degree of freedom), "
          f"fluctuation ratio RMS(dE_tot)/RMS(dE_kin) = {ratio:.4f}")
    if not np.all(np.isfinite(data)):
        sys.exit("non-finite energies")


if __name__ == "__main__":
    main()
