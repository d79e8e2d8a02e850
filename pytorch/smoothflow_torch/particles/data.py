"""Data sets of LJ13 / DW4 from OpenMM Langevin dynamics with replica exchange, resumable.

Each of ``--chains`` independent chains runs one replica per temperature of the ladder
(reduced kT; a ladder of one temperature is plain Langevin dynamics). Every ``--stride`` steps
the replicas attempt neighbour swaps (Metropolis, alternating even / odd pairs) and the kT = 1
replica is stored. The run advances in chunks of ``--chunk-samples`` stored samples per chain
and writes a checkpoint after each chunk; every chunk draws its random numbers from seeds
derived from (seed, chain, replica, chunk), so an interrupted run resumed from its checkpoint
gives bit-for-bit the data of an uninterrupted one.

The held-out split is by chain (the last chains are validation and test): frames of one chain
are correlated, so a random frame split would put near-copies of training frames into the test
set and make held-out likelihoods optimistic; whole independent chains do not.

Output in --out: ``<system>.npz`` (positions with the centre of mass removed, energies,
chain, time, split) and ``<system>.json`` (settings, seeds, versions, timings, swap acceptance,
autocorrelation times and effective sample sizes). docs/particle-systems.md describes them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .systems import REDUCED_TEMPERATURE_KELVIN, SYSTEMS, ParticleSystem, pair_indices, remove_com

__all__ = ["SPLITS", "langevin_integrator", "generate", "autocorrelation_time", "gelman_rubin",
           "order_parameter", "main"]

#: split codes stored in the ``split`` array
SPLITS = {"train": 0, "validation": 1, "test": 2}
_FORMAT = "smoothflow-particles-data/1"


def langevin_integrator(timestep: float, friction: float, kT: float, seed: int):
    """BAOAB Langevin integrator (reduced units) whose kicks and noise a per-dof mask gates.

    The per-dof variable ``mask`` (1 by default) multiplies the force kicks and the whole
    Ornstein-Uhlenbeck step, so a mask of (1, 1, 0) keeps v_z = 0 and z constant exactly: the
    planar DW4 in OpenMM's 3D. kT is the global variable ``kT`` (kJ/mol = reduced units).
    """
    import openmm

    c1 = math.exp(-friction * timestep)
    c2 = math.sqrt(1.0 - c1 * c1)
    integ = openmm.CustomIntegrator(timestep)
    integ.addGlobalVariable("c1", c1)
    integ.addGlobalVariable("c2", c2)
    integ.addGlobalVariable("kT", kT)
    integ.addPerDofVariable("mask", 1.0)
    integ.addUpdateContextState()
    integ.addComputePerDof("v", "v + 0.5*dt*mask*f/m")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.addComputePerDof("v", "mask*(c1*v + c2*sqrt(kT/m)*gaussian)")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.addComputePerDof("v", "v + 0.5*dt*mask*f/m")
    integ.setRandomNumberSeed(int(seed))
    return integ


def _seed(base: int, *keys: int) -> int:
    """A positive 31-bit seed derived from (base, keys): independent streams per chain/chunk."""
    return int(np.random.SeedSequence([base, *keys]).generate_state(1)[0] % (2**31 - 2)) + 1


def _mask(spec: ParticleSystem):
    import openmm
    dims = (1.0, 1.0, 1.0 if spec.spatial_dim == 3 else 0.0)
    return [openmm.Vec3(*dims)] * spec.n_particles


def _context(spec, system, platform, kT, settings, seed, positions, velocities):
    import openmm
    integ = langevin_integrator(settings["timestep"], settings["friction"], kT, seed)
    context = openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform))
    integ.setPerDofVariableByName("mask", _mask(spec))
    context.setPositions(positions)
    context.setVelocities(velocities)
    return context


def _read(context):
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    return (np.asarray(state.getPositions(asNumpy=True)._value, dtype=np.float64),
            np.asarray(state.getVelocities(asNumpy=True)._value, dtype=np.float64),
            state.getPotentialEnergy()._value)


def _initial_positions(spec: ParticleSystem, rng: np.random.Generator) -> np.ndarray:
    """Random non-overlapping positions (z = 0 for planar systems), centre of mass at 0."""
    d = spec.spatial_dim
    for _ in range(100000):
        x = np.zeros((spec.n_particles, 3))
        placed = 0
        for _ in range(20000):
            trial = rng.uniform(-spec.box / 2, spec.box / 2, size=d)
            gaps = np.linalg.norm(x[:placed, :d] - trial, axis=1)
            if placed == 0 or gaps.min() >= spec.min_distance:
                x[placed, :d] = trial
                placed += 1
                if placed == spec.n_particles:
                    return remove_com(x)
    raise RuntimeError(f"could not place {spec.n_particles} particles of {spec.name} in a box "
                       f"of side {spec.box} with spacing {spec.min_distance}")


def _initial_state(spec, system, settings, chain, platform):
    """Minimized, equilibrated positions and velocities of every replica of one chain."""
    import openmm
    rng = np.random.default_rng(_seed(settings["seed"], chain, 0, 0))
    x0 = _initial_positions(spec, rng)
    temps = settings["temperatures"]
    steps = int(round(settings["equilibration_ps"] / settings["timestep"]))
    xs, vs = [], []
    for r, kT in enumerate(temps):
        ctx = _context(spec, system, platform, kT, settings, _seed(settings["seed"], chain, r, 0),
                       x0, np.zeros_like(x0))
        if r == 0:
            openmm.LocalEnergyMinimizer.minimize(ctx, 1e-6, 2000)
            x0 = _read(ctx)[0]
            if spec.spatial_dim == 2:
                x0[:, 2] = 0.0  # the minimizer must not move z; make sure of it
            ctx.setPositions(x0)
        ctx.getIntegrator().step(steps)
        x, v, _ = _read(ctx)
        xs.append(remove_com(x))
        vs.append(v)
        del ctx
    return np.stack(xs), np.stack(vs)


def _run_chunk(spec, system, settings, chain, chunk, x, v, platform):
    """One chunk of one chain: returns new replica states, stored samples and swap counts."""
    temps = settings["temperatures"]
    k = len(temps)
    rng = np.random.default_rng(_seed(settings["seed"], chain, 10**6, chunk + 1))
    contexts = [_context(spec, system, platform, kT, settings,
                         _seed(settings["seed"], chain, r, chunk + 1), x[r], v[r])
                for r, kT in enumerate(temps)]
    n = settings["chunk_samples"]
    pos = np.empty((n, spec.n_particles, 3))
    ene = np.empty(n)
    attempts = np.zeros(max(k - 1, 0), dtype=np.int64)
    accepts = np.zeros_like(attempts)
    for s in range(n):
        states = []
        for ctx in contexts:
            ctx.getIntegrator().step(settings["stride"])
            states.append(_read(ctx))
        xs = [st[0] for st in states]
        vs = [st[1] for st in states]
        es = [st[2] for st in states]
        # neighbour swaps, even pairs on even samples and odd pairs on odd ones
        for i in range((chunk * n + s) % 2, k - 1, 2):
            j = i + 1
            attempts[i] += 1
            log_acc = (1.0 / temps[i] - 1.0 / temps[j]) * (es[i] - es[j])
            if log_acc >= 0 or rng.random() < math.exp(log_acc):
                accepts[i] += 1
                xs[i], xs[j] = xs[j], xs[i]
                es[i], es[j] = es[j], es[i]
                # velocities follow their configuration, rescaled to the new temperature
                scale = math.sqrt(temps[i] / temps[j])
                vs[i], vs[j] = vs[j] * scale, vs[i] / scale
                contexts[i].setPositions(xs[i])
                contexts[i].setVelocities(vs[i])
                contexts[j].setPositions(xs[j])
                contexts[j].setVelocities(vs[j])
        pos[s] = remove_com(xs[0])
        ene[s] = es[0]
    x_new = np.stack([remove_com(xi) for xi in xs])
    v_new = np.stack(vs)
    del contexts
    return x_new, v_new, pos, ene, attempts, accepts


# ----------------------------------------------------------------------------------------------
# diagnostics

def autocorrelation_time(a: np.ndarray, c: float = 5.0) -> float:
    """Integrated autocorrelation time (in samples) with Sokal's self-consistent window.

    tau = 1 + 2 sum_{t=1}^{W} rho(t), W the smallest lag with W >= c tau; 1 means independent.
    """
    a = np.asarray(a, dtype=np.float64)
    n = len(a)
    if n < 4 or np.var(a) == 0:
        return float("nan")
    y = a - a.mean()
    f = np.fft.rfft(y, n=2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf /= acf[0]
    taus = 2.0 * np.cumsum(acf) - 1.0
    for w in range(1, n):
        if w >= c * taus[w]:
            return float(max(taus[w], 1.0))
    return float(max(taus[-1], 1.0))


def gelman_rubin(chains: Sequence[np.ndarray]) -> float:
    """Potential scale reduction R-hat over chains (each split in halves); ~1 when mixed."""
    halves = []
    for a in chains:
        h = len(a) // 2
        if h >= 2:
            halves += [np.asarray(a[:h]), np.asarray(a[h:2 * h])]
    if len(halves) < 2:
        return float("nan")
    m = min(len(h) for h in halves)
    arr = np.stack([h[:m] for h in halves])
    w = arr.var(axis=1, ddof=1).mean()
    b = m * arr.mean(axis=1).var(ddof=1)
    var = (m - 1) / m * w + b / m
    return float(math.sqrt(var / w)) if w > 0 else float("nan")


def order_parameter(spec: ParticleSystem, positions: np.ndarray) -> np.ndarray:
    """A slow structural coordinate to check mixing with, beside the energy.

    DW4: the number of pairs in the inner well (d < d0), which only well-crossings change;
    LJ13: the radius of gyration of the cluster.
    """
    if spec.name == "dw4":
        i, j = pair_indices(spec.n_particles)
        d = np.linalg.norm(positions[:, i, :2] - positions[:, j, :2], axis=-1)
        return (d < spec.parameters["d0"]).sum(-1).astype(np.float64)
    return np.sqrt((remove_com(positions) ** 2).sum(-1).mean(-1))


def _diagnostics(spec, settings, positions, energies, chain, attempts, accepts):
    out: Dict[str, object] = {}
    stride_ps = settings["stride"] * settings["timestep"]
    q = order_parameter(spec, positions)
    for name, series in (("energy", energies), ("order_parameter", q)):
        per_chain = [series[chain == c] for c in range(settings["chains"])]
        taus = [autocorrelation_time(a) for a in per_chain]
        ess = float(np.nansum([len(a) / t for a, t in zip(per_chain, taus) if t == t]))
        out[name] = {
            "mean": float(series.mean()), "std": float(series.std()),
            "chain_means": [float(a.mean()) for a in per_chain],
            "tau_samples": taus, "tau_ps": [t * stride_ps for t in taus],
            "tau_samples_max": float(np.nanmax(taus)), "ess": ess,
            "rhat": gelman_rubin(per_chain),
        }
    out["order_parameter"]["definition"] = ("pairs with d < d0" if spec.name == "dw4"
                                            else "radius of gyration")
    acc = accepts.sum(0) / np.maximum(attempts.sum(0), 1)
    out["swap_acceptance"] = [float(a) for a in acc]
    out["swap_attempts"] = [int(a) for a in attempts.sum(0)]
    return out


# ----------------------------------------------------------------------------------------------
# the run

def _settings(spec: ParticleSystem, args) -> Dict[str, object]:
    temps = tuple(float(t) for t in (args.temperatures or spec.temperatures))
    if abs(temps[0] - 1.0) > 0 or any(b <= a for a, b in zip(temps, temps[1:])):
        raise ValueError(f"--temperatures must start at 1 and increase, got {temps}")
    if args.chains < 1:
        raise ValueError(f"--chains must be at least 1, got {args.chains}")
    if args.val_chains + args.test_chains >= args.chains:
        raise ValueError(f"--val-chains ({args.val_chains}) + --test-chains ({args.test_chains}) "
                         f"must leave training chains out of --chains ({args.chains})")
    per_chain = -(-args.samples // args.chains)
    chunk = min(args.chunk_samples, per_chain)
    n_chunks = -(-per_chain // chunk)
    return {
        "system": spec.name, "parameters": dict(spec.parameters),
        "n_particles": spec.n_particles, "spatial_dim": spec.spatial_dim,
        "temperatures": list(temps), "timestep": float(args.timestep or spec.timestep),
        "friction": float(args.friction or spec.friction),
        "stride": int(args.stride or spec.stride), "chains": int(args.chains),
        "samples_per_chain": int(chunk * n_chunks), "chunk_samples": int(chunk),
        "chunks": int(n_chunks), "equilibration_ps": float(args.equilibration),
        "seed": int(args.seed), "val_chains": int(args.val_chains),
        "test_chains": int(args.test_chains), "platform": args.platform,
    }


def _save_atomic(path: str, **arrays) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def generate(system: str, out: str, samples: int = 20000, chains: int = 10,
             temperatures: Optional[Sequence[float]] = None, timestep: Optional[float] = None,
             friction: Optional[float] = None, stride: Optional[int] = None,
             equilibration: float = 50.0, chunk_samples: int = 500, seed: int = 2026,
             val_chains: int = 1, test_chains: int = 2, platform: str = "Reference",
             max_chunks: Optional[int] = None, overwrite: bool = False,
             progress: bool = True) -> Optional[str]:
    """Generate (or resume) a data set; returns the .npz path, or None if stopped early.

    See the module docstring and ``python -m smoothflow_torch.particles.data --help``.
    """
    import openmm
    from tqdm import tqdm

    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of {sorted(SYSTEMS)}")
    spec = SYSTEMS[system]
    args = argparse.Namespace(samples=samples, chains=chains, temperatures=temperatures,
                              timestep=timestep, friction=friction, stride=stride,
                              equilibration=equilibration, chunk_samples=chunk_samples,
                              seed=seed, val_chains=val_chains, test_chains=test_chains,
                              platform=platform)
    settings = _settings(spec, args)
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, f"{system}.checkpoint.npz")
    final_path = os.path.join(out, f"{system}.npz")
    if overwrite:
        for p in (ckpt_path, final_path):
            if os.path.exists(p):
                os.remove(p)
    if os.path.exists(final_path):
        raise FileExistsError(f"{final_path} exists; pass --overwrite to regenerate it")
    ospec = spec.build()
    c, k = settings["chains"], len(settings["temperatures"])
    n_atoms = spec.n_particles

    started = time.time()
    if os.path.exists(ckpt_path):
        ck = np.load(ckpt_path)
        old = json.loads(str(ck["settings"]))
        if old != settings:
            diff = sorted(key for key in set(old) | set(settings)
                          if old.get(key) != settings.get(key))
            raise ValueError(f"{ckpt_path} was written with other settings ({', '.join(diff)}); "
                             f"use the same options to resume, or --overwrite to start again")
        chunks_done = int(ck["chunks_done"])
        xs, vs = ck["x"].copy(), ck["v"].copy()
        pos = ck["positions"].copy()
        ene = ck["energies"].copy()
        chain_ids = ck["chain"].copy()
        attempts, accepts = ck["attempts"].copy(), ck["accepts"].copy()
        elapsed = float(ck["elapsed_s"])
    else:
        chunks_done = 0
        xs = np.empty((c, k, n_atoms, 3))
        vs = np.empty_like(xs)
        for ch in tqdm(range(c), desc=f"{system} equilibration", disable=not progress,
                       file=sys.stderr):
            xs[ch], vs[ch] = _initial_state(spec, ospec, settings, ch, platform)
        pos = np.empty((0, n_atoms, 3))
        ene = np.empty(0)
        chain_ids = np.empty(0, dtype=np.int64)
        attempts = np.zeros((c, max(k - 1, 0)), dtype=np.int64)
        accepts = np.zeros_like(attempts)
        elapsed = time.time() - started
        started = time.time()
        _save_atomic(ckpt_path, settings=json.dumps(settings), chunks_done=0, x=xs, v=vs,
                     positions=pos, energies=ene, chain=chain_ids, attempts=attempts,
                     accepts=accepts, elapsed_s=elapsed)

    todo = settings["chunks"] - chunks_done
    if max_chunks is not None:
        todo = min(todo, max_chunks)
    bar = tqdm(total=todo * c, desc=f"{system} chunks {chunks_done}/{settings['chunks']}",
               unit="chain-chunk", disable=not progress, file=sys.stderr)
    for chunk in range(chunks_done, chunks_done + todo):
        new_pos, new_ene, new_chain = [], [], []
        for ch in range(c):
            xs[ch], vs[ch], p, e, att, acc = _run_chunk(spec, ospec, settings, ch, chunk,
                                                         xs[ch], vs[ch], platform)
            attempts[ch] += att
            accepts[ch] += acc
            new_pos.append(p)
            new_ene.append(e)
            new_chain.append(np.full(len(e), ch, dtype=np.int64))
            bar.update(1)
        pos = np.concatenate([pos] + new_pos)
        ene = np.concatenate([ene] + new_ene)
        chain_ids = np.concatenate([chain_ids] + new_chain)
        elapsed += time.time() - started
        started = time.time()
        _save_atomic(ckpt_path, settings=json.dumps(settings), chunks_done=chunk + 1, x=xs,
                     v=vs, positions=pos, energies=ene, chain=chain_ids, attempts=attempts,
                     accepts=accepts, elapsed_s=elapsed)
        bar.set_description(f"{system} chunks {chunk + 1}/{settings['chunks']}")
    bar.close()
    if chunks_done + todo < settings["chunks"]:
        return None

    # order by chain, then time; the time of a sample is its position in its chain
    order = np.lexsort((np.arange(len(chain_ids)), chain_ids))
    pos, ene, chain_ids = pos[order], ene[order], chain_ids[order]
    per = settings["samples_per_chain"]
    stride_ps = settings["stride"] * settings["timestep"]
    t = np.tile((np.arange(per) + 1) * stride_ps, c)
    split = np.zeros(len(ene), dtype=np.int8)
    first_test = c - settings["test_chains"]
    first_val = first_test - settings["val_chains"]
    split[(chain_ids >= first_val) & (chain_ids < first_test)] = SPLITS["validation"]
    split[chain_ids >= first_test] = SPLITS["test"]
    if spec.spatial_dim == 2:
        if np.any(pos[:, :, 2] != 0.0):
            raise RuntimeError(f"{system}: z left 0 during the run (max |z| "
                               f"{np.abs(pos[:, :, 2]).max():g}); the planar integrator is broken")
        pos = pos[:, :, :2]
    pos = np.ascontiguousarray(pos)
    _save_atomic(final_path, positions=pos, energies=ene, chain=chain_ids, time=t, split=split)
    with open(final_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()

    prov = {
        "format": _FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "units": {"length": "nm", "energy": "kJ/mol (= kT, the reduced temperature is 1)",
                  "mass": "amu", "time": "ps", "kT_kJ_per_mol": 1.0,
                  "openmm_temperature_K": REDUCED_TEMPERATURE_KELVIN},
        "integrator": "BAOAB Langevin (CustomIntegrator), kicks and noise masked to the "
                      "system's spatial dimensions",
        "versions": {"openmm": openmm.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "timing": {"wall_s": elapsed, "md_steps": int(c * k * (per * settings["stride"] + round(
            settings["equilibration_ps"] / settings["timestep"])))},
        "counts": {name: int((split == code).sum()) for name, code in SPLITS.items()},
        "chains_by_split": {name: sorted(int(x) for x in np.unique(chain_ids[split == code]))
                            for name, code in SPLITS.items()},
        "keys": {"positions": f"(M, {n_atoms}, {spec.spatial_dim}) float64, centre of mass removed",
                 "energies": "(M,) float64, reduced potential energy (kT units)",
                 "chain": "(M,) int64, independent chain id",
                 "time": "(M,) float64, ps since the end of equilibration, within the chain",
                 "split": "(M,) int8, 0 train / 1 validation / 2 test (whole chains)"},
        "sha256": sha,
        "diagnostics": _diagnostics(spec, settings, pos, ene, chain_ids, attempts, accepts),
    }
    with open(os.path.join(out, f"{system}.json"), "w") as f:
        json.dump(prov, f, indent=1)
    os.remove(ckpt_path)
    return final_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m smoothflow_torch.particles.data",
        description="Sample LJ13 or DW4 (reduced units: nm, kJ/mol, amu, ps; kT = 1) with "
                    "OpenMM Langevin dynamics and replica exchange, in resumable chunks. "
                    "Writes OUT/<system>.npz and OUT/<system>.json; see "
                    "docs/particle-systems.md.",
        epilog="Rerunning the same command after an interruption resumes from "
               "OUT/<system>.checkpoint.npz and yields identical data.")
    p.add_argument("system", choices=sorted(SYSTEMS), help="the particle system")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--samples", type=int, default=20000,
                   help="stored samples over all chains, rounded up to whole chunks "
                        "(default 20000)")
    p.add_argument("--chains", type=int, default=10, help="independent chains (default 10)")
    p.add_argument("--val-chains", type=int, default=1,
                   help="chains held out for validation (default 1)")
    p.add_argument("--test-chains", type=int, default=2,
                   help="chains held out for testing, the last ones (default 2)")
    p.add_argument("--temperatures", type=float, nargs="+",
                   help="reduced kT ladder starting at 1 (default: lj13 1; dw4 1 1.6 2.5 4)")
    p.add_argument("--timestep", type=float, help="ps (default: lj13 0.005, dw4 0.01)")
    p.add_argument("--friction", type=float, help="1/ps (default 1)")
    p.add_argument("--stride", type=int,
                   help="MD steps between stored samples and swap attempts "
                        "(default: lj13 100, dw4 50)")
    p.add_argument("--equilibration", type=float, default=50.0,
                   help="ps of discarded dynamics per replica before sampling (default 50)")
    p.add_argument("--chunk-samples", type=int, default=500,
                   help="stored samples per chain between checkpoints (default 500)")
    p.add_argument("--seed", type=int, default=2026, help="base random seed (default 2026)")
    p.add_argument("--platform", default="Reference", choices=["Reference", "CPU"],
                   help="OpenMM platform (default Reference, double precision)")
    p.add_argument("--max-chunks", type=int,
                   help="stop after this many chunks in this invocation (resume later)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an existing checkpoint or data set and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = _parser().parse_args(argv)
    path = generate(a.system, a.out, samples=a.samples, chains=a.chains,
                    temperatures=a.temperatures, timestep=a.timestep, friction=a.friction,
                    stride=a.stride, equilibration=a.equilibration,
                    chunk_samples=a.chunk_samples, seed=a.seed, val_chains=a.val_chains,
                    test_chains=a.test_chains, platform=a.platform, max_chunks=a.max_chunks,
                    overwrite=a.overwrite, progress=not a.no_progress)
    if path is None:
        print(f"stopped after --max-chunks; rerun the same command to resume", file=sys.stderr)
    else:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
