"""Hot frames: where a flow potential goes when it runs hot, sampled with the force field.

A flow is trained on frames at the project's temperature, so off the data (where a Langevin run
at 1000-2000 K goes within picoseconds) nothing constrains its curvature, and velocity Verlet at
1 fs heats there (docs/reliability.md section 5). These frames are for the training's curvature
bound (``data.curvature_frames`` of a train config; smoothflow_torch.training.curvature): the
force field's own hot configurations, the closest stand-in for where a hot flow run goes that
needs no flow.

For each temperature, ``starts`` Langevin runs (LangevinMiddleIntegrator, friction 1/ps, the
force field's masses: no hydrogen mass repartitioning, so the frames are those of the dynamics
being protected) begin at Boltzmann-spread training frames, draw velocities at that temperature,
equilibrate, and save a frame every ``interval_ps``. Writes ``data/hot_frames.npz`` (positions
nm, forces kJ/mol/nm and energies kJ/mol of the force field, temperature K, start index, time
ps) and ``data/hot_frames.json`` (settings, per temperature the frames, the mean kinetic
temperature and the longest bond over the longest in the training frames, failed runs). These
frames carry no Boltzmann weight at the project's temperature: they are places to look, never
data to fit.

With ``model`` a flow runs alone in place of the force field (on the force field's masses):
the frames are where that flow itself goes when hot, each with the force field's energy and
forces. A run that fails (non-finite numbers, an evaluation error, a kinetic temperature above 5
times the bath) keeps its frames before the failure and is listed; the same screening measures
how hot a flow runs at a given time step (docs/reliability.md section 5).

With ``verlet`` the runs are velocity Verlet (NVE, ``openmm.VerletIntegrator``, the md study's
integrator) from velocities drawn at the temperature, without a bath: the frames are where an NVE
run at ``dt_fs`` goes, which at a long step is not where Langevin at 0.5 fs goes (velocity Verlet
stretches a stiff mode's amplitude by 1 / sqrt(1 - (h omega / 2)^2), 1.3x at h omega = 1.25, and
a flow whose stretches stiffen there heats by resonance). Such a run counts as failed once its
kinetic temperature passes twice the starting temperature (the frames after that are of a blow-up).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import data as pdata
from .project import MOLAR_GAS_CONSTANT, Project


def _bond_pairs(topology) -> np.ndarray:
    return np.array([(a.index, b.index) for a, b in topology.bonds()], dtype=int)


def longest_bonds(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The length (nm) of every bond of every frame, (n, n_bonds)."""
    return np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)


def flow_system(project: Project, model, start):
    """The flow ``model`` alone on the force field's masses, mapped onto the project's topology
    (equivalent atoms labelled by ``start``)."""
    import openmm
    import openmmsmoothflow
    ff = project.system()
    system = openmm.System()
    for i in range(ff.getNumParticles()):
        system.addParticle(ff.getParticleMass(i))
    openmmsmoothflow.addSmoothFlowForce(system, project.topology(), str(model), positions=np.asarray(start))
    return system


def hot_frames(project, temperatures: Sequence[float] = (1000.0, 1500.0, 2000.0), ps: float = 50.0,
               starts: int = 4, interval_ps: float = 0.1, dt_fs: float = 0.5, equilibration_ps: float = 2.0,
               friction: float = 1.0, seed: int = 2000, platform: str = "Reference",
               frames: Optional[str] = None, out: Optional[str] = None, model: Optional[str] = None,
               verlet: bool = False, progress: bool = True) -> dict:
    """Run the hot force-field runs (module docstring); return the summary written beside them.
    ``frames``: the training frames to start from (default the project's ``data/frames.npz``);
    ``out``: the file to write (default ``data/hot_frames.npz``); both relative to the caller.
    ``model``: run this flow model alone as the potential instead of the force field (the frames
    keep the force field's energies and forces). ``verlet``: velocity Verlet without a bath instead of
    Langevin dynamics (module docstring)."""
    import openmm
    import openmm.unit as unit

    project = project if isinstance(project, Project) else Project(project)
    temperatures = [float(t) for t in temperatures]
    if not temperatures or not all(np.isfinite(t) and t > 0 for t in temperatures):
        raise ValueError(f"temperatures must be finite and > 0 K, got {temperatures}")
    for name, v in (("ps", ps), ("interval_ps", interval_ps), ("dt_fs", dt_fs), ("friction", friction)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    if not (np.isfinite(equilibration_ps) and equilibration_ps >= 0):
        raise ValueError(f"equilibration_ps must be finite and >= 0, got {equilibration_ps}")
    if isinstance(starts, bool) or int(starts) != starts or starts < 1:
        raise ValueError(f"starts must be an integer >= 1, got {starts}")
    steps = int(round(interval_ps * 1000 / dt_fs))
    n_per_run = int(round(ps / interval_ps))
    if steps < 1 or n_per_run < 1:
        raise ValueError(f"interval_ps {interval_ps} must hold at least one step of {dt_fs} fs and ps {ps} at "
                         f"least one interval")
    if model is not None and not Path(model).is_file():
        raise FileNotFoundError(f"model file {model} does not exist")
    out = Path(out) if out else project.data_dir / "hot_frames.npz"
    train = pdata.load(Path(frames) if frames else project.frames_path, project.kT, project.n_atoms, "train")
    first = pdata.boltzmann_indices(train.weights, int(starts))
    pairs = _bond_pairs(project.topology())
    data_longest = longest_bonds(train.positions, pairs).max(axis=0)

    system = project.system()
    n_dof = 3 * system.getNumParticles()    # no constraints, no centre-of-mass remover: the bath heats all of them
    saved = {k: [] for k in ("positions", "forces", "energies", "temperature", "start", "time_ps")}
    per_t, failures = [], []
    if model is not None:       # the flow's frames get the force field's energies and forces
        from ..openmm_bridge import OpenMMEnergy
        force_field = OpenMMEnergy(system)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(temperatures) * int(starts) * n_per_run, desc="hot frames", unit="frame", mininterval=1.0)
    too_hot = 2.0 if verlet else 5.0     # times the bath (NVE: the starting temperature)
    t0 = time.time()
    for it, T in enumerate(temperatures):
        kinetic = []
        for s, i in enumerate(first):
            run_seed = seed + 1000 * it + s
            run_system = system if model is None else flow_system(project, model, train.positions[i])
            if verlet:
                integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
            else:
                integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, friction / unit.picosecond,
                                                             dt_fs * unit.femtoseconds)
                integrator.setRandomNumberSeed(run_seed)
            context = openmm.Context(run_system, integrator, openmm.Platform.getPlatformByName(platform))
            context.setPositions(train.positions[i] * unit.nanometer)
            context.setVelocitiesToTemperature(T * unit.kelvin, run_seed)
            done, why = 0, None
            try:
                integrator.step(int(round(equilibration_ps * 1000 / dt_fs)))
                for k in range(n_per_run):
                    integrator.step(steps)
                    st = context.getState(getPositions=True, getForces=True, getEnergy=True)
                    e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                    ke = st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
                    f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                    t_kin = 2 * ke / (n_dof * MOLAR_GAS_CONSTANT)
                    if not (np.isfinite(e) and np.isfinite(ke) and np.all(np.isfinite(f))) or t_kin > too_hot * T:
                        why = f"kinetic temperature {t_kin:.4g} K, potential energy {e:.4g} kJ/mol"
                        break
                    x = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                    if model is not None:
                        energies, forces, _ = force_field.evaluate(x)
                        e, f = energies[0], forces[0]
                    saved["positions"].append(x)
                    saved["forces"].append(f)
                    saved["energies"].append(e)
                    saved["temperature"].append(T)
                    saved["start"].append(int(i))
                    saved["time_ps"].append((k + 1) * interval_ps)
                    kinetic.append(t_kin)
                    done += 1
                    if bar is not None:
                        bar.update(1)
            except openmm.OpenMMException as err:    # e.g. a flow's configuration outside its support
                why = str(err).splitlines()[0]
            if why is not None:
                # a failed run keeps the frames before the failure: they are where the run went
                failures.append({"temperature": T, "start": int(i), "after_ps": round(equilibration_ps + done * interval_ps, 3),
                                 "why": why})
                if bar is not None:
                    bar.update(n_per_run - done)
            del context, integrator
        mine = np.array(saved["temperature"]) == T
        entry = {"temperature": T, "frames": int(mine.sum())}
        if mine.any():
            bonds = longest_bonds(np.array(saved["positions"])[mine], pairs)
            entry.update(mean_kinetic_temperature=float(np.mean(kinetic)),
                         longest_bond_over_data=float((bonds / data_longest).max()))
        per_t.append(entry)
    if bar is not None:
        bar.close()
    if not saved["positions"]:
        raise RuntimeError(f"every hot run failed before its first frame: {failures[0]['why']} "
                           f"(use a smaller --dt-fs)")
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, np.float32 if k in ("positions", "forces") else None) for k, v in saved.items()}
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    summary = {"file": str(out), "frames": len(saved["positions"]), "seconds": round(time.time() - t0, 1),
               "settings": {"temperatures": temperatures, "ps": ps, "starts": int(starts), "interval_ps": interval_ps,
                            "dt_fs": dt_fs, "equilibration_ps": equilibration_ps,
                            "integrator": "velocity Verlet" if verlet else "Langevin middle",
                            "friction_per_ps": None if verlet else friction,
                            "seed": seed, "platform": platform, "frames": str(frames or project.frames_path), "forcefield": project.forcefield_files,
                            "start_frames": [int(i) for i in first]},
               "potential": str(model) if model is not None else "force field",
               "per_temperature": per_t, "failures": failures}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def load_positions(paths, n_atoms: int) -> np.ndarray:
    """The positions (float64, nm) of one or more frames files (``hot_frames`` output or any file
    with a ``positions`` array of shape (n, n_atoms, 3)), concatenated."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError("no frames files given")
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: run `smoothflow hot-frames PROJECT` first")
        with np.load(p) as d:
            if "positions" not in d.files:
                raise ValueError(f"{p} has no 'positions' array")
            pos = d["positions"].astype(np.float64)
        if pos.ndim != 3 or pos.shape[1:] != (n_atoms, 3) or len(pos) == 0:
            raise ValueError(f"{p}: positions of shape {pos.shape}; expected (n >= 1, {n_atoms}, 3)")
        if not np.all(np.isfinite(pos)):
            raise ValueError(f"{p}: positions are not all finite")
        out.append(pos)
    return np.concatenate(out)
