"""Generate alanine dipeptide training and test data with OpenMM: positions and reference forces.

Langevin dynamics (LangevinMiddleIntegrator, 300 K, friction 1/ps) with Amber ff99SB-ILDN, OBC
implicit solvent (the main setting) or vacuum, no constraints, on the Reference platform
(fastest for 22 atoms).  Hydrogen masses are raised to 3 amu (taken from the bonded heavy
atom) so that 2 fs steps are stable without constraints: masses change the dynamics but not
the Boltzmann distribution of configurations, which is all the data is for.

The chains run with a static bias V(phi) (phi_bias.py: built first by a short well-tempered
metadynamics run, then frozen), because unbiased MD visits the rare phi > 0 basin about once
per 100 ns.  Each frame stores the force field's forces and energy alone (force group 0) and
the bias energy V; its Boltzmann weight is exp(V/kT) (data.Frames.weights), exact because the
bias is fixed.  --bias-ns 0 gives unbiased chains (weights 1).

Several independent chains (one process per core) start from the minimized standard-geometry
structure with different seeds, equilibrate 100 ps, then save a frame every --interval-ps.
Each chain checkpoints (integrator state + frames so far) every --checkpoint-ps and resumes
from its checkpoint when rerun, so a long run can span sessions.  When every chain is done,
the frames are assembled into <out>/<setting>.npz:

    positions (n, 22, 3) float32 nm, forces (n, 22, 3) float32 kJ/mol/nm,
    energies (n,) float32 kJ/mol, chain (n,) int16, time_ps (n,) float32,
    split (n,) uint8: 0 train, 1 test (the last 20 % of every chain: a fixed held-out split
    in time, so test frames are not near-copies of training frames),
    bias (n,) float32 kJ/mol: the bias energy V(phi) of the frame (0 when unbiased)

a JSON summary with provenance, cost and the weighted phi-basin populations (overall, per
chain, standard error across chains), and <setting>.reference.npz (~1 MB, shipped: 200
Boltzmann-resampled held-out frames, phi/psi and weight of every frame) for the main job and
tests.  <setting>.bias.npz (the bias table, shipped) is reused when present.

Usage: python -m alanine_dipeptide.generate_data --setting obc [--ns 20 --chains 6 --bias-ns 10]
       (the study package is installed by scripts/setup.sh)
"""
import argparse
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
from smoothflow_torch.pipeline import data as pipeline_data
from smoothflow_torch.pipeline.project import dihedral
from smoothflow_torch.pipeline.simulate import positive_fraction, raise_hydrogen_masses

from . import forcefield, molecule, phi_bias

HYDROGEN_MASS = 3.0  # amu


def prepared_system(setting: str) -> openmm.System:
    """The force field's System with hydrogen masses raised to HYDROGEN_MASS (the pipeline's)."""
    return raise_hydrogen_masses(forcefield.system(setting), molecule.topology(), HYDROGEN_MASS)


def _context(setting: str, seed: int, dt_fs: float, bias_table=None):
    system = prepared_system(setting)
    if bias_table is not None:
        phi_bias.add_static_bias(system, bias_table)
    integrator = openmm.LangevinMiddleIntegrator(forcefield.TEMPERATURE * unit.kelvin, 1 / unit.picosecond,
                                                 dt_fs * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    return context, integrator


def run_chain(setting: str, chain: int, ns: float, interval_ps: float, checkpoint_ps: float, dt_fs: float,
              workdir: Path, progress: bool, bias_table=None) -> Path:
    """Run (or resume) one chain; returns the path of its finished frames file."""
    from tqdm import tqdm

    done = workdir / f"chain{chain}.npz"
    if done.exists():
        return done
    seed = 1000 + chain
    context, integrator = _context(setting, seed, dt_fs, bias_table)
    n_frames = int(round(ns * 1000 / interval_ps))
    steps_per_frame = int(round(interval_ps * 1000 / dt_fs))
    state_file, partial = workdir / f"chain{chain}.state.xml", workdir / f"chain{chain}.partial.npz"
    if state_file.exists() and partial.exists():
        context.setState(openmm.XmlSerializer.deserialize(state_file.read_text()))
        saved = np.load(partial)
        pos, frc, ene, bias = (list(saved[k]) for k in ("positions", "forces", "energies", "bias"))
    else:
        context.setPositions(molecule.standard_positions() * unit.nanometer)
        openmm.LocalEnergyMinimizer.minimize(context)
        context.setVelocitiesToTemperature(forcefield.TEMPERATURE * unit.kelvin, seed)
        integrator.step(int(round(100_000 / dt_fs)))  # 100 ps of equilibration
        pos, frc, ene, bias = [], [], [], []
    frames_per_checkpoint = max(1, int(round(checkpoint_ps / interval_ps)))
    bar = tqdm(total=n_frames, initial=len(pos), desc=f"{setting} chain {chain}", unit="frame",
               position=chain, disable=not progress, mininterval=2.0)
    while len(pos) < n_frames:
        integrator.step(steps_per_frame)
        # Forces and energy of the force field alone (group 0); the bias (if any) is stored apart.
        s = context.getState(getPositions=True, getForces=True, getEnergy=True, groups={0})
        v = context.getState(getEnergy=True, groups={phi_bias.BIAS_GROUP}).getPotentialEnergy()
        bias.append(np.float32(v.value_in_unit(unit.kilojoule_per_mole)) if bias_table is not None else np.float32(0))
        pos.append(s.getPositions(asNumpy=True).value_in_unit(unit.nanometer).astype(np.float32))
        frc.append(s.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                   .astype(np.float32))
        ene.append(np.float32(s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)))
        bar.update(1)
        if len(pos) % frames_per_checkpoint == 0 or len(pos) == n_frames:
            np.savez(partial.with_suffix(".tmp.npz"), positions=np.array(pos), forces=np.array(frc),
                     energies=np.array(ene), bias=np.array(bias))
            os.replace(partial.with_suffix(".tmp.npz"), partial)
            state_file.write_text(openmm.XmlSerializer.serialize(context.getState(getPositions=True,
                                                                                  getVelocities=True)))
    bar.close()
    os.replace(partial, done)
    state_file.unlink(missing_ok=True)
    return done


def frame_weights(bias: np.ndarray) -> np.ndarray:
    """Reweighting factors exp(V/kT) of biased frames, scaled to mean 1 (all ones when unbiased)."""
    return pipeline_data.frame_weights(bias, forcefield.KT)


def phi_population(phi: np.ndarray, weights: np.ndarray, chain: np.ndarray) -> dict:
    """Weighted phi > 0 fraction overall, per chain, and its standard error across chains."""
    p = positive_fraction(phi, weights, chain)
    return {"phi_positive_fraction": p["reweighted"], "phi_positive_fraction_per_chain": p["per_chain"],
            "phi_positive_fraction_stderr": p["stderr"],
            "weights_kish_ess_fraction": float(weights.sum() ** 2 / (weights ** 2).sum() / len(weights))}


def assemble(setting: str, chain_files, interval_ps: float, out: Path, meta: dict) -> dict:
    keys = ("positions", "forces", "energies", "bias")
    parts = {k: [] for k in keys + ("chain", "time_ps", "split")}
    for c, f in enumerate(chain_files):
        d = np.load(f)
        n = len(d["positions"])
        for k in keys:
            parts[k].append(d[k])
        parts["chain"].append(np.full(n, c, np.int16))
        parts["time_ps"].append((np.arange(n, dtype=np.float32) + 1) * interval_ps)
        s = np.zeros(n, np.uint8)
        s[int(0.8 * n):] = 1
        parts["split"].append(s)
    data = {k: np.concatenate(v) for k, v in parts.items()}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"{setting}.npz", **data)
    phi = dihedral(data["positions"].astype(np.float64), molecule.PHI_ATOMS)
    population = phi_population(phi, frame_weights(data["bias"].astype(np.float64)), data["chain"])
    summary = dict(meta, frames=int(len(phi)), **population,
                   phi_positive_fraction_biased=float(np.mean(phi > 0)),
                   file=f"{setting}.npz", bytes=(out / f"{setting}.npz").stat().st_size)
    (out / f"{setting}.json").write_text(json.dumps(summary, indent=2) + "\n")
    from .data import write_reference
    write_reference(setting, out)
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=forcefield.SETTINGS, default="obc")
    ap.add_argument("--ns", type=float, default=20.0, help="production length of each chain")
    ap.add_argument("--chains", type=int, default=6, help="independent chains, one process per core")
    ap.add_argument("--interval-ps", type=float, default=2.0)
    ap.add_argument("--checkpoint-ps", type=float, default=1000.0)
    ap.add_argument("--dt-fs", type=float, default=2.0)
    ap.add_argument("--bias-ns", type=float, default=10.0,
                    help="length of the metadynamics run that builds the static phi bias (0: unbiased chains)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    bias = None
    if args.bias_ns > 0:
        if phi_bias.load(args.setting, out) is None:
            print(json.dumps(phi_bias.build(args.setting, args.bias_ns, out, prepared_system), indent=2))
        bias, bias_settings = phi_bias.load(args.setting, out)
    workdir = out / f"{args.setting}.work"
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [(args.setting, c, args.ns, args.interval_ps, args.checkpoint_ps, args.dt_fs, workdir, True, bias)
            for c in range(args.chains)]
    with multiprocessing.Pool(min(args.chains, os.cpu_count() or 1)) as pool:
        files = pool.starmap(run_chain, jobs)
    meta = {"molecule": "alanine dipeptide (ACE-ALA-NME), standard geometry, minimized",
            "force_field": "amber99sbildn.xml" + (" + amber99_obc.xml" if args.setting == "obc" else " (vacuum)"),
            "integrator": f"LangevinMiddleIntegrator 300 K, 1/ps, {args.dt_fs} fs, hydrogen mass {HYDROGEN_MASS} amu, "
                          "no constraints, no cutoff, Reference platform",
            "phi_bias": bias_settings if bias is not None else None,
            "chains": args.chains, "ns_per_chain": args.ns, "equilibration_ps": 100, "interval_ps": args.interval_ps,
            "seeds": [1000 + c for c in range(args.chains)], "openmm": openmm.__version__,
            "machine": platform.processor() or platform.machine(),
            "wall_seconds_this_run": round(time.time() - t0, 1)}
    summary = assemble(args.setting, files, args.interval_ps, out, meta)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
