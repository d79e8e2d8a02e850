"""Training data by Langevin MD with the project's force field, resumable, optionally biased.

Each chain starts from the project's structure, minimized, gets velocities at the temperature
(seed ``seed + chain``), equilibrates ``equilibration_ps``, then saves a frame every
``interval_ps``: positions, the force field's forces and energy (force group 0) and the bias
energy (group 31). LangevinMiddleIntegrator, friction 1/ps, 2 fs, no constraints, hydrogen mass
3 amu taken from the bonded heavy atom (masses change the dynamics, not the distribution of
configurations, which is all the data is for).

**Resuming.** Every chain keeps its frames (``data/chain<c>.npz``) and the integrator's state
after its last frame (``data/chain<c>.state.xml``), rewritten every ``checkpoint_ps``. A rerun
continues each chain from its state and appends; a rerun with a larger ``ns`` or more ``chains``
extends the data set. Settings that change the chains' dynamics (time step, interval, seed,
masses, bias, temperature, force field) must match the first run's (``data/settings.json``);
``restart`` starts over.

**The bias** (optional; the alanine-dipeptide study's method, for any torsions): a torsion's rare
states (phi > 0 of a dipeptide, about once per 100 ns) cannot be counted from plain MD. For
each biased torsion, a short well-tempered metadynamics run along it alone
(openmm.app.Metadynamics: bias factor 4, Gaussians 1 kJ/mol high and 0.35 rad wide, one per ps)
builds V_i ~ -(3/4) F_i(torsion i); each V_i is frozen as a 181-point periodic table
(``data/bias.npz``) and the chains run under their sum V = sum_i V_i (one force per table, all
in force group 31). A frame stores V; its Boltzmann weight is exp(V / kT), exact because V is
fixed: no assumption that metadynamics converged, or that the torsions are independent, enters;
a poor V only costs efficiency (the weights' Kish ESS, in the summary; a sum of k tables costs
roughly the product of their ESS fractions).

``data/bias.npz``: ``grid`` (181,) rad, ``bias`` and ``info``. One torsion: ``bias`` (181,)
kJ/mol and ``info`` one JSON object (its ``torsion``, the metadynamics settings), the layout of
the first version that the alanine study installs its shipped table in; several: ``bias``
(k, 181) and ``info`` a JSON list of k such objects, in the order the torsions were given.
``data/settings.json`` records the bias the same way: one ``{"name", "atoms",
"metadynamics_ns"}`` object for one torsion, a list of them for several.

When every chain has its frames, they are assembled into ``data/frames.npz`` (data.py) with
``data/summary.json`` (settings, cost, and the weighted fraction above 0 per chain of every
biased torsion and every phi of the molecule).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from . import data
from .project import Project, dihedral

BIAS_GROUP = 31
BIAS_FACTOR = 4.0
BIAS_HEIGHT = 1.0       # kJ/mol
BIAS_WIDTH = 0.35       # rad
BIAS_PACE_PS = 1.0
BIAS_GRID = 181         # points over [-pi, pi], periodic (2 degrees)

#: a torsion's name: phi, psi, omega (the first one) or of a residue (phi:ALA3)
_NAME = re.compile(r"(phi|psi|omega)(:\S+)?")

#: settings whose change makes a chain a different chain (a rerun must match them)
CHAIN_KEYS = ("dt_fs", "interval_ps", "equilibration_ps", "friction_per_ps", "hydrogen_mass", "seed",
              "temperature", "forcefield", "bias")


def prepared_system(project: Project, hydrogen_mass: float):
    """The force field's System with hydrogen masses raised to ``hydrogen_mass`` amu (0: unchanged)."""
    return raise_hydrogen_masses(project.system(), project.topology(), hydrogen_mass)


def raise_hydrogen_masses(system, topology, hydrogen_mass: float):
    """``system`` with every hydrogen's mass raised to ``hydrogen_mass`` amu, the difference taken
    from its bonded heavy atom (0: unchanged); the alanine study's data generator uses it too."""
    import openmm.unit as unit
    if hydrogen_mass:
        for a, b in topology.bonds():
            if (a.element.symbol == "H") == (b.element.symbol == "H"):
                continue
            h, heavy = (a, b) if a.element.symbol == "H" else (b, a)
            shift = hydrogen_mass - system.getParticleMass(h.index).value_in_unit(unit.dalton)
            system.setParticleMass(h.index, hydrogen_mass)
            heavy_mass = system.getParticleMass(heavy.index).value_in_unit(unit.dalton) - shift
            if heavy_mass <= 0:
                raise ValueError(f"hydrogen mass {hydrogen_mass} amu leaves atom {heavy.index} without mass")
            system.setParticleMass(heavy.index, heavy_mass)
    return system


def positive_fraction(values: np.ndarray, weights: np.ndarray, chain: np.ndarray) -> dict:
    """The fraction of frames with a torsion ``values`` > 0: reweighted, as sampled, per chain
    (reweighted) and the standard error of the chains' fractions (None for one chain)."""
    per_chain = [float(np.average(values[chain == c] > 0, weights=weights[chain == c])) for c in np.unique(chain)]
    return {"reweighted": float(np.average(values > 0, weights=weights)), "as_sampled": float(np.mean(values > 0)),
            "per_chain": per_chain,
            "stderr": float(np.std(per_chain, ddof=1) / np.sqrt(len(per_chain))) if len(per_chain) > 1 else None}


def torsion_force(atoms):
    """The torsion of four atoms as a collective variable (IUPAC sign, radians in [-pi, pi])."""
    import openmm
    cv = openmm.CustomTorsionForce("theta")
    cv.addTorsion(*[int(a) for a in atoms], [])
    return cv


def add_static_bias(system, atoms, table) -> None:
    """V(torsion) tabulated on BIAS_GRID points over [-pi, pi] (periodic), in force group BIAS_GROUP."""
    import openmm
    table = np.asarray(table, float)
    if table.shape != (BIAS_GRID,) or not np.all(np.isfinite(table)) or abs(table[0] - table[-1]) > 1e-9:
        raise ValueError(f"a bias table holds {BIAS_GRID} finite values with table[0] == table[-1]")
    force = openmm.CustomCVForce("bias(t)")
    force.addCollectiveVariable("t", torsion_force(atoms))
    force.addTabulatedFunction("bias", openmm.Continuous1DFunction(table.tolist(), -np.pi, np.pi, True))
    force.setForceGroup(BIAS_GROUP)
    system.addForce(force)


def _platform(name: str):
    import openmm
    return openmm.Platform.getPlatformByName(name)


def metadynamics(system, topology, positions, atoms, temperature: float, dt_fs: float, pace_steps: int,
                 gaussians: int, friction_per_ps: float, seed: int, platform: str, bias_factor: float = BIAS_FACTOR,
                 height: float = BIAS_HEIGHT, width: float = BIAS_WIDTH, progress: bool = True,
                 desc: str = "metadynamics", position: int = 0):
    """Well-tempered metadynamics (openmm.app.Metadynamics) along the torsion of ``atoms``: from
    the minimized ``positions``, ``gaussians`` Gaussians, one every ``pace_steps`` steps of Langevin
    dynamics. Returns the final deposited bias on BIAS_GRID points over [-pi, pi] (maximum 0), the
    torsion after each Gaussian and the seconds the run took (the alanine study builds its phi
    bias with this too)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    variable = app.BiasVariable(torsion_force(atoms), -np.pi, np.pi, width, periodic=True, gridWidth=BIAS_GRID)
    meta = app.Metadynamics(system, [variable], temperature * unit.kelvin, bias_factor,
                            height * unit.kilojoule_per_mole, pace_steps)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction_per_ps / unit.picosecond,
                                                 dt_fs * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, _platform(platform))
    sim.context.setPositions(positions * unit.nanometer)
    sim.minimizeEnergy()
    sim.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    bar = None
    if progress:     # tqdm only when shown: its multiprocessing lock leaks in spawned workers otherwise
        from tqdm.auto import tqdm
        bar = tqdm(total=gaussians, desc=desc, unit="Gaussian", position=position, mininterval=1.0)
    t0, values = time.time(), []
    for _ in range(gaussians):
        meta.step(sim, pace_steps)
        values.append(float(meta.getCollectiveVariables(sim)[0]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    free_energy = np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole), float).ravel()
    table = -free_energy * (bias_factor - 1) / bias_factor     # the deposited bias
    table -= table.max()                                        # V <= 0; only differences matter
    return table, np.array(values), time.time() - t0


# ---------------------------------------------------------------------- the biased torsions
def bias_torsions(project: Project, bias) -> list:
    """The torsions ``bias`` names, in order: None or [] (no bias), one torsion (a name such as
    ``phi`` or ``phi:ALA3``, four atoms, or a torsion dict), or a list of them. A string of
    comma-separated torsion names (``"phi:ALA2,phi:ALA3"``) is a list; four atoms separated by
    commas stay one torsion. The same torsion twice is refused."""
    if bias is None:
        return []
    specs = []
    for spec in ([bias] if isinstance(bias, (str, dict)) else list(bias)):
        specs += _split_names(project, spec)
    out, seen = [], {}
    for spec in specs:
        if isinstance(spec, str) and _NAME.fullmatch(spec.strip()):
            known = [t["name"] for t in project.torsions]
            if not any(spec.strip() == n or n.startswith(spec.strip() + ":") for n in known):
                raise ValueError(f"no torsion of interest is named {spec.strip()!r}; the project's are "
                                 f"{', '.join(known) or 'none'} (or give four atoms)")
            spec = spec.strip()
        t = project.torsion(spec)
        key = tuple(int(a) for a in t["atoms"])
        if key in seen or key[::-1] in seen:
            first, name = seen.get(key, seen.get(key[::-1]))
            raise ValueError(f"the bias names one torsion twice: {first!r} ({name}) and {spec!r} ({t['name']})")
        seen[key] = (spec, t["name"])
        out.append(t)
    return out


def _split_names(project: Project, spec) -> list:
    """``spec`` split at commas when every part is a torsion name, else [spec]."""
    if not isinstance(spec, str) or "," not in spec:
        return [spec]
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    names = {t["name"] for t in project.torsions}
    return parts if all(p in names or _NAME.fullmatch(p) for p in parts) else [spec]


def bias_entries(recorded) -> list:
    """A recorded bias (``settings["bias"]``: None, one ``{"name", "atoms", "metadynamics_ns"}``
    object, or a list of them) as a list of objects."""
    if recorded is None:
        return []
    return [recorded] if isinstance(recorded, dict) else list(recorded)


def describe_bias(recorded) -> str:
    """``phi:ALA2 + phi:ALA3 (10 ns of metadynamics each)``, or ``none``."""
    entries = bias_entries(recorded)
    if not entries:
        return "none"
    ns = sorted({e["metadynamics_ns"] for e in entries})
    each = " each" if len(entries) > 1 else ""
    return (" + ".join(f"{e['name']} {e['atoms']}" for e in entries)
            + f" ({' / '.join(f'{v:g}' for v in ns)} ns of metadynamics{each})")


def bias_difference(before, now) -> str:
    """What differs between two recorded biases, by torsion: added, dropped, reordered, other ns."""
    a, b = bias_entries(before), bias_entries(now)
    key = lambda e: tuple(e["atoms"])
    ka, kb = [key(e) for e in a], [key(e) for e in b]
    parts = []
    added = [e["name"] for e in b if key(e) not in ka]
    dropped = [e["name"] for e in a if key(e) not in kb]
    if added:
        parts.append("added " + ", ".join(added))
    if dropped:
        parts.append("dropped " + ", ".join(dropped))
    if not added and not dropped and ka != kb:
        parts.append("the same torsions in another order")
    ns_a = {key(e): e["metadynamics_ns"] for e in a}
    for e in b:
        if key(e) in ns_a and ns_a[key(e)] != e["metadynamics_ns"]:
            parts.append(f"{e['name']}: {ns_a[key(e)]:g} ns of metadynamics before, {e['metadynamics_ns']:g} now")
    return "; ".join(parts) or "the same torsions"


def add_static_biases(system, tables) -> None:
    """V = sum of ``tables`` [(atoms, table), ...], one force per torsion, all in BIAS_GROUP."""
    for atoms, table in tables:
        add_static_bias(system, atoms, table)


def _metadynamics_table(project_path, torsion: dict, ns: float, settings: dict, seed: int, progress: bool,
                        position: int):
    """One torsion's well-tempered metadynamics for ``ns``: (table, info)."""
    project = Project(project_path)
    dt = settings["dt_fs"]
    table, values, seconds = metadynamics(
        prepared_system(project, settings["hydrogen_mass"]), project.topology(), project.positions(),
        torsion["atoms"], project.temperature, dt, max(1, int(round(BIAS_PACE_PS * 1000 / dt))),
        max(1, int(round(ns * 1000 / BIAS_PACE_PS))), settings["friction_per_ps"], seed, settings["platform"],
        progress=progress, desc=f"metadynamics {torsion['name']}", position=position)
    info = {"torsion": torsion, "method": "well-tempered metadynamics (openmm.app.Metadynamics)", "ns": ns,
            "bias_factor": BIAS_FACTOR, "height_kj_mol": BIAS_HEIGHT, "width_rad": BIAS_WIDTH,
            "pace_ps": BIAS_PACE_PS, "grid": BIAS_GRID, "seed": seed, "wall_seconds": round(seconds, 1),
            "positive_fraction_during_run": float(np.mean(values > 0)),
            "crossings_of_0_during_run": int(np.sum(np.diff(np.sign(values)) != 0))}
    return table, info


def _part_path(project: Project, i: int) -> Path:
    return project.data_dir / f"bias.part{i}.npz"


def build_biases(project: Project, torsions: list, ns: float, settings: dict, progress: bool = True,
                 jobs: int = 1) -> list:
    """One well-tempered metadynamics run of ``ns`` along each torsion alone (torsion i with seed
    ``seed - 1 - i``; ``jobs`` > 1 runs them in parallel processes); writes ``data/bias.npz``
    and returns the infos. With several torsions, each finished table waits in
    ``data/bias.part<i>.npz`` until all are done, so an interrupted build reruns only the rest."""
    project.data_dir.mkdir(parents=True, exist_ok=True)
    results, todo = [None] * len(torsions), []
    for i, torsion in enumerate(torsions):
        part = _part_path(project, i)
        if len(torsions) > 1 and part.exists():
            with np.load(part) as d:
                info = json.loads(str(d["info"]))
                if info["torsion"]["atoms"] == list(torsion["atoms"]) and info["ns"] == ns \
                        and info["seed"] == settings["seed"] - 1 - i:
                    results[i] = (d["bias"].astype(float), info)
                    continue
        todo.append((str(project.path), torsion, ns, settings, settings["seed"] - 1 - i, progress, len(todo)))
    index = [i for i in range(len(torsions)) if results[i] is None]

    def keep(i, result):
        results[i] = result
        if len(torsions) > 1:
            np.savez(_part_path(project, i), bias=result[0], info=json.dumps(result[1]))

    if jobs > 1 and len(todo) > 1:
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
            for i, result in zip(index, pool.starmap(_metadynamics_table, todo)):
                keep(i, result)
    else:
        for i, job in zip(index, todo):
            keep(i, _metadynamics_table(*job))
    grid = np.linspace(-np.pi, np.pi, BIAS_GRID)
    if len(torsions) == 1:           # the first version's layout (the alanine study installs its table in it)
        np.savez(project.data_dir / "bias.npz", grid=grid, bias=results[0][0], info=json.dumps(results[0][1]))
    else:
        np.savez(project.data_dir / "bias.npz", grid=grid, bias=np.stack([r[0] for r in results]),
                 info=json.dumps([r[1] for r in results]))
        for i in range(len(torsions)):
            _part_path(project, i).unlink(missing_ok=True)
    return [r[1] for r in results]


def load_biases(project: Project):
    """[(table, info), ...] of ``data/bias.npz``, one per biased torsion in order, or None."""
    f = project.data_dir / "bias.npz"
    if not f.exists():
        return None
    with np.load(f) as d:
        tables, info = d["bias"].astype(float), json.loads(str(d["info"]))
    if tables.ndim == 1:
        return [(tables, info)]
    if not isinstance(info, list) or len(info) != len(tables):
        raise ValueError(f"{f}: {len(tables)} tables but {len(info) if isinstance(info, list) else 1} infos")
    return list(zip(tables, info))


def load_bias(project: Project):
    """(table, info) of a one-torsion ``data/bias.npz``, or None (several: :func:`load_biases`)."""
    biases = load_biases(project)
    if biases is None:
        return None
    if len(biases) != 1:
        raise ValueError(f"{project.data_dir / 'bias.npz'} holds {len(biases)} tables "
                         f"({', '.join(i['torsion']['name'] for _, i in biases)}): read it with load_biases")
    return biases[0]


def run_chain(project_path, chain: int, n_frames: int, settings: dict, bias_tables=None, progress: bool = True,
              position: int = 0) -> Path:
    """Run chain ``chain`` until it holds ``n_frames`` frames, resuming from its state file;
    ``bias_tables``: one table per torsion of ``settings["bias"]`` (None: unbiased)."""
    import openmm
    import openmm.unit as unit

    project = Project(project_path)
    frames_file = project.data_dir / f"chain{chain}.npz"
    state_file = project.data_dir / f"chain{chain}.state.xml"
    keys = ("positions", "forces", "energies", "bias")
    saved = {k: [] for k in keys}
    if frames_file.exists():
        with np.load(frames_file) as d:
            saved = {k: list(d[k]) for k in keys}
    if len(saved["positions"]) >= n_frames:
        return frames_file
    dt = settings["dt_fs"]
    system = prepared_system(project, settings["hydrogen_mass"])
    if bias_tables is not None:
        entries = bias_entries(settings["bias"])
        if len(entries) != len(bias_tables):
            raise ValueError(f"{len(bias_tables)} bias tables for {len(entries)} biased torsions")
        add_static_biases(system, [(e["atoms"], t) for e, t in zip(entries, bias_tables)])
    integrator = openmm.LangevinMiddleIntegrator(project.temperature * unit.kelvin,
                                                 settings["friction_per_ps"] / unit.picosecond, dt * unit.femtoseconds)
    seed = settings["seed"] + chain
    # a continued chain draws a new random stream (the state file does not hold the generator's)
    integrator.setRandomNumberSeed(seed + 100003 * len(saved["positions"]))
    context = openmm.Context(system, integrator, _platform(settings["platform"]))
    if saved["positions"]:
        if not state_file.exists():
            raise FileNotFoundError(f"{frames_file} has frames but {state_file} is missing: cannot continue the "
                                    f"chain; rerun with restart")
        context.setState(openmm.XmlSerializer.deserialize(state_file.read_text()))
    else:
        context.setPositions(project.positions() * unit.nanometer)
        openmm.LocalEnergyMinimizer.minimize(context)
        context.setVelocitiesToTemperature(project.temperature * unit.kelvin, seed)
        integrator.step(int(round(settings["equilibration_ps"] * 1000 / dt)))
    steps = max(1, int(round(settings["interval_ps"] * 1000 / dt)))
    every = max(1, int(round(settings["checkpoint_ps"] / settings["interval_ps"])))
    bar = None
    if progress:     # tqdm only when shown: its multiprocessing lock leaks in spawned workers otherwise
        from tqdm.auto import tqdm
        bar = tqdm(total=n_frames, initial=len(saved["positions"]), desc=f"chain {chain}", unit="frame",
                   position=position, mininterval=1.0)

    def checkpoint():
        tmp = frames_file.with_name(frames_file.name + ".tmp.npz")
        np.savez(tmp, **{k: np.array(v, np.float32) for k, v in saved.items()})
        state = openmm.XmlSerializer.serialize(context.getState(getPositions=True, getVelocities=True))
        # the state first, then the frames: a crash between leaves a state ahead of the saved
        # frames, and the chain continues from that later (equally valid) point
        state_file.with_suffix(".tmp").write_text(state)
        os.replace(state_file.with_suffix(".tmp"), state_file)
        os.replace(tmp, frames_file)

    while len(saved["positions"]) < n_frames:
        integrator.step(steps)
        s = context.getState(getPositions=True, getForces=True, getEnergy=True, groups={0})
        v = context.getState(getEnergy=True, groups={BIAS_GROUP}).getPotentialEnergy() if bias_tables is not None \
            else 0 * unit.kilojoule_per_mole
        saved["positions"].append(s.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        saved["forces"].append(s.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        saved["energies"].append(s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        saved["bias"].append(v.value_in_unit(unit.kilojoule_per_mole))
        if bar is not None:
            bar.update(1)
        if len(saved["positions"]) % every == 0 or len(saved["positions"]) == n_frames:
            checkpoint()
    if bar is not None:
        bar.close()
    return frames_file


def _chain_settings(project: Project, dt_fs, interval_ps, equilibration_ps, friction, hydrogen_mass, seed, bias,
                    bias_ns, platform, checkpoint_ps) -> dict:
    torsions = bias_torsions(project, bias)
    ns_of = [float(bias_ns)] * len(torsions)
    if torsions and not bias_ns > 0:
        existing = load_biases(project)
        if existing is None:
            raise ValueError("a bias needs bias_ns > 0 (the metadynamics runs that build it) or an existing "
                             "data/bias.npz")
        # continuing chains under the bias built before (a torsion it lacks is named by simulate's check)
        built = {tuple(info["torsion"]["atoms"]): info["ns"] for _, info in existing}
        ns_of = [float(built.get(tuple(t["atoms"]), existing[0][1]["ns"])) for t in torsions]
    entries = [{"name": t["name"], "atoms": list(t["atoms"]), "metadynamics_ns": v} for t, v in zip(torsions, ns_of)]
    return {"dt_fs": float(dt_fs), "interval_ps": float(interval_ps), "equilibration_ps": float(equilibration_ps),
            "friction_per_ps": float(friction), "hydrogen_mass": float(hydrogen_mass), "seed": int(seed),
            "temperature": project.temperature, "forcefield": project.forcefield_files,
            # one torsion: the object of the first version (existing projects' settings.json); several: a list
            "bias": None if not entries else entries[0] if len(entries) == 1 else entries,
            "platform": platform, "checkpoint_ps": float(checkpoint_ps)}


def _check_tables(built: list, entries: list) -> None:
    """The tables of data/bias.npz must be those of the biased torsions, in order."""
    if [info["torsion"]["atoms"] for _, info in built] != [e["atoms"] for e in entries]:
        was = [dict(info["torsion"], metadynamics_ns=info["ns"]) for _, info in built]
        raise ValueError(f"data/bias.npz was built for {' + '.join(e['name'] for e in was)}, not "
                         f"{' + '.join(e['name'] for e in entries)} ({bias_difference(was, entries)}): "
                         f"restart to build a new one")


def simulate(project, ns: float = 1.0, chains: int = 1, interval_ps: float = 1.0, dt_fs: float = 2.0,
             equilibration_ps: float = 100.0, friction: float = 1.0, hydrogen_mass: float = 3.0, seed: int = 1000,
             bias: Union[None, str, Sequence[str]] = None, bias_ns: float = 0.0, checkpoint_ps: float = 100.0,
             platform: str = "Reference", jobs: int = 1, restart: bool = False, progress: bool = True) -> dict:
    """Run (or continue) the data chains and assemble ``data/frames.npz`` (module docstring).

    ``ns``: production per chain; ``bias``: the biased torsions (:func:`bias_torsions`: a torsion
    of interest's name such as ``phi`` or ``phi:SER2``, four atoms, or a list of them), with
    ``bias_ns`` of metadynamics along each to build its table (``jobs`` > 1 runs those in
    parallel too). Returns the summary."""
    project = project if isinstance(project, Project) else Project(project)
    if not (ns > 0 and chains >= 1 and interval_ps > 0 and dt_fs > 0 and equilibration_ps >= 0):
        raise ValueError("ns, interval_ps and dt_fs must be > 0, chains >= 1, equilibration_ps >= 0")
    n_frames = int(round(ns * 1000 / interval_ps))
    if n_frames < 1:
        raise ValueError(f"{ns} ns at one frame per {interval_ps} ps is no frame")
    d = project.data_dir
    d.mkdir(parents=True, exist_ok=True)
    settings = _chain_settings(project, dt_fs, interval_ps, equilibration_ps, friction, hydrogen_mass, seed, bias,
                               bias_ns, platform, checkpoint_ps)
    settings_file = d / "settings.json"
    if restart:
        if settings["bias"] is not None and not bias_ns > 0:
            raise ValueError("restart deletes data/bias.npz: give bias_ns > 0 to build the bias again")
        for f in list(d.glob("chain*")) + list(d.glob("bias.part*.npz")) + [
                d / "bias.npz", d / "frames.npz", d / "summary.json", settings_file]:
            f.unlink(missing_ok=True)
    if settings_file.exists():
        before = json.loads(settings_file.read_text())
        diff = [k for k in CHAIN_KEYS if before.get(k) != settings.get(k)]
        if diff:
            said = [f"{k}: {before.get(k)} before, {settings.get(k)} now" if k != "bias" else
                    f"bias: {describe_bias(before.get(k))} before, {describe_bias(settings[k])} now: "
                    f"{bias_difference(before.get(k), settings[k])}" for k in diff]
            raise ValueError(f"{d} holds chains run with other {diff} ({'; '.join(said)}): continue them with the "
                             f"same settings, or start over with restart")
    entries = bias_entries(settings["bias"])
    built = load_biases(project) if entries else None
    if built is not None:
        _check_tables(built, entries)
    settings_file.write_text(json.dumps(settings, indent=1) + "\n")
    t0 = time.time()
    if entries and built is None:
        build_biases(project, bias_torsions(project, bias), bias_ns, settings, progress, jobs)
        built = load_biases(project)
    tables = None if built is None else [t for t, _ in built]
    jobs_list = [(str(project.path), c, n_frames, settings, tables, progress, c) for c in range(chains)]
    if jobs > 1 and chains > 1:
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(min(jobs, chains)) as pool:
            files = pool.starmap(run_chain, jobs_list)
    else:
        files = [run_chain(*j) for j in jobs_list]
    summary = assemble(project, files, settings, n_frames)
    summary["wall_seconds_this_run"] = round(time.time() - t0, 1)
    (d / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def assemble(project: Project, files, settings: dict, n_frames: int) -> dict:
    """Write ``data/frames.npz`` from the chains' first ``n_frames`` frames; return the summary."""
    keys = ("positions", "forces", "energies", "bias")
    parts = {k: [] for k in keys + ("chain", "time_ps", "split")}
    for c, f in enumerate(files):
        with np.load(f) as d:
            for k in keys:
                parts[k].append(d[k][:n_frames].astype(np.float32))
        parts["chain"].append(np.full(n_frames, c, np.int16))
        parts["time_ps"].append(((np.arange(n_frames) + 1) * settings["interval_ps"]).astype(np.float32))
        parts["split"].append(data.split_of(n_frames))
    frames = {k: np.concatenate(v) for k, v in parts.items()}
    tmp = project.frames_path.with_name("frames.tmp.npz")
    np.savez(tmp, **frames)
    os.replace(tmp, project.frames_path)
    weights = data.frame_weights(frames["bias"].astype(float), project.kT)
    summary = {"frames": int(len(weights)), "chains": len(files), "frames_per_chain": n_frames,
               "settings": settings, "weights_kish_ess_fraction": float(weights.sum() ** 2 / (weights ** 2).sum()
                                                                         / len(weights)),
               "sha256": hashlib.sha256(project.frames_path.read_bytes()).hexdigest()}
    fractions = positive_fractions(project, bias_entries(settings["bias"]), frames["positions"], weights,
                                   frames["chain"])
    if fractions:
        summary["positive_fraction"] = fractions[0]       # the first biased torsion, else the first phi
        summary["positive_fractions"] = fractions
    return summary


def positive_fractions(project: Project, biased: list, positions: np.ndarray, weights: np.ndarray,
                       chain: np.ndarray) -> list:
    """:func:`positive_fraction` of every biased torsion, then of every other phi of the molecule
    (else of the first torsion of interest), each with its ``torsion`` name and ``biased``."""
    phis = [t for t in project.torsions if t["name"].startswith("phi:")]
    others = phis or project.torsions[:1]
    seen = {tuple(t["atoms"]) for t in biased}
    out = []
    for t, is_biased in [(t, True) for t in biased] + [(t, False) for t in others if tuple(t["atoms"]) not in seen]:
        values = dihedral(positions, t["atoms"])
        out.append({"torsion": t["name"], "biased": is_biased, **positive_fraction(values, weights, chain)})
    return out
