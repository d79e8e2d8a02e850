"""LJ13: the free-form flow as an MD potential, against the true LJ13 potential (issue 23, part 6).

From the same thermalized starts (held-out frames of the LJ13 data, velocities at kT = 1 with
seed 100 + start):

1. **Energy conservation.** NVE velocity Verlet (``openmm.VerletIntegrator``, no constraints, no
   centre-of-mass remover, mass 1) with (a) the flow, U = -kT log p(x), as the OpenMM
   ``SmoothFlowForce`` of the exported encoder, and (b) the true LJ13 potential
   (``particles.systems.lj13_system``), at each time step. Per run the fluctuation ratio
   RMS(E_tot - <E_tot>) / RMS(E_kin - <E_kin>) and the drift; per potential the log-log slope
   of the ratio against dt; per time step the flow's ratio over the true potential's. The runs
   and their statistics are the pipeline's (``smoothflow_torch.pipeline.md``: nve_series,
   summarize, dt2_slopes, relative_ratios, summary_table), as in the alanine-dipeptide study.
2. **Structure.** BAOAB Langevin at kT = 1 (the data's integrator, ``particles.data``) with
   each potential from the first start; the pair-distance histogram of the flow MD against the
   held-out reference data and against the true-potential MD of the same length, with the L1
   distance between histograms and the Wasserstein-1 distance between the distance samples.
3. **The sign of det J_V** on every saved configuration of the flow MD (the Langevin frames and
   the last frame of each NVE run), in PyTorch (``fff.exact_log_det``): the OpenMM force
   evaluates log |det J_V| and does not report the sign, and a flow is a density only where the
   sign does not change.
4. **Timing** of one energy + force evaluation: the C core through OpenMM (Reference, CPU)
   against PyTorch autograd of the same exact computation (``particles.potential``), one
   thread, on one held-out configuration (the full benchmark: benchmarks/bench_free_form.py).

Reduced units (docs/particle-systems.md section 2): length nm, energy kJ/mol = kT, mass 1 amu,
time 1 ps = 1 tau. Time steps are given in tau; dt in fs of the pipeline's tables is 1e-3 tau.

Usage (from the repository root, with the plugin importable):

    python studies/lj13_free_form/lj13_study.py --model MODEL.safetensors [--out DIR] [--long]

Writes report.md, results.json and PNG plots into --out (default
studies/lj13_free_form/results).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from smoothflow_torch.pipeline.md import (FORCE_FIELD, dt2_slopes, nve_series, plot_energy_conservation,
                                          relative_ratios, summarize, summary_table)
from smoothflow_torch import provenance
from smoothflow_torch.timing import median_seconds

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / "runs" / "particles" / "lj13" / "lj13.npz"
DEFAULT_MODEL = ROOT / "models" / "lj13" / "free_form.safetensors"     # the shipped LJ13 flow
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
N_PARTICLES, SPATIAL_DIM = 13, 3
#: velocity Verlet moves every Cartesian degree of freedom (no constraints, no COM remover)
DOF = N_PARTICLES * 3
FLOW, TRUE = "flow", "true LJ13"
#: NVE run from start k draws its velocities with seed NVE_SEED + k (as the alanine study)
NVE_SEED = 100
#: time steps in tau. The true LJ13 conserves energy with ratio ~ dt^2 up to 0.01 tau (the pair
#: vibration at r_m has period 0.52 tau); at 0.02 tau the ratio leaves the dt^2 law and the
#: drift grows tenfold; at 0.05 tau runs blow up within a few tau (README.md).
DEFAULT_DT = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
LANGEVIN_DT, LANGEVIN_FRICTION = 0.005, 1.0          # the data's BAOAB settings
HIST_BINS = np.linspace(0.0, 5.5, 111)               # pair distances, r_m units; 0.05 wide


# ------------------------------------------------------------------------------ inputs
def load_data(path) -> dict:
    """Held-out (test, split 2) and training (split 0) positions of a particles.data file."""
    with np.load(path) as d:
        pos, split = np.asarray(d["positions"], float), np.asarray(d["split"])
    if pos.shape[1:] != (N_PARTICLES, SPATIAL_DIM):
        raise ValueError(f"{path}: positions of shape {pos.shape}; LJ13 needs (M, 13, 3)")
    out = {"test": pos[split == 2], "train": pos[split == 0]}
    if len(out["test"]) == 0:
        raise ValueError(f"{path}: no held-out frames (split == 2)")
    return out


def start_frames(test: np.ndarray, n: int) -> list:
    """The starts: held-out frames evenly spaced through the test split (its chains in turn)."""
    if n < 1 or n > len(test):
        raise ValueError(f"starts must be in 1..{len(test)}, got {n}")
    return [int(i * (len(test) // n)) for i in range(n)]


def model_info(model) -> dict:
    """The model file's identity and training provenance (train.export_model's metadata)."""
    import hashlib
    from safetensors import safe_open
    path = Path(model)
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    info = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    for key in ("fff_step", "fff_steps"):
        if key in meta:
            info[key[4:]] = int(meta[key])
    if "fff_checkpoint" in meta:
        info["checkpoint"] = meta["fff_checkpoint"]
    return info


# ------------------------------------------------------------------------------ systems
def make_system(potential: str, model: Optional[str]):
    """The flow alone on 13 particles of mass 1, or the true LJ13 System."""
    import openmm
    from smoothflow_torch.particles.systems import lj13_system
    if potential == TRUE:
        return lj13_system()
    import openmmsmoothflow
    system = openmm.System()
    for _ in range(N_PARTICLES):
        system.addParticle(1.0)
    force = openmmsmoothflow.SmoothFlowForce(str(model))
    force.setParticles(list(range(N_PARTICLES)))
    system.addForce(force)
    return system


def thermalized_context(system, integrator, positions, seed: int, platform: str):
    import openmm
    from smoothflow_torch.particles.systems import REDUCED_TEMPERATURE_KELVIN
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(np.asarray(positions))
    context.setVelocitiesToTemperature(REDUCED_TEMPERATURE_KELVIN, seed)
    return context


def nve_run(job) -> dict:
    """One NVE run (the pipeline's nve_series); adds the last positions (for the sign check)."""
    import openmm
    potential, model, dt, tau, start, positions, seed, samples, platform = job
    integrator = openmm.VerletIntegrator(dt)
    context = thermalized_context(make_system(potential, model), integrator, positions, seed, platform)
    run = nve_series(context, integrator, dt * 1000.0, tau, samples)
    try:
        last = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    except openmm.OpenMMException:
        last = None
    return {"potential": potential, "dt_fs": dt * 1000.0, "dt_tau": dt, "start": start,
            "last_positions": None if last is None else np.asarray(last).tolist(), **run}


def langevin_run(potential: str, model, positions, tau: float, frame_every: float, seed: int,
                 platform: str, progress: bool = True) -> dict:
    """BAOAB Langevin at kT = 1 (the data's integrator); frames (F, 13, 3) every frame_every tau."""
    import openmm
    from tqdm import tqdm
    from smoothflow_torch.particles.data import langevin_integrator
    integrator = langevin_integrator(LANGEVIN_DT, LANGEVIN_FRICTION, 1.0, seed)
    context = thermalized_context(make_system(potential, model), integrator, positions, seed, platform)
    every = max(1, int(round(frame_every / LANGEVIN_DT)))
    n_frames = max(1, int(round(tau / (every * LANGEVIN_DT))))
    frames, error, t0 = [], None, time.time()
    for _ in tqdm(range(n_frames), desc=f"Langevin {potential}", unit="frame", disable=not progress,
                  file=sys.stderr):
        try:
            integrator.step(every)
            x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
        except openmm.OpenMMException as e:     # e.g. det J_V = 0 reached
            error = str(e).splitlines()[0]
            break
        frames.append(np.asarray(x))
    x = np.array(frames).reshape(-1, N_PARTICLES, 3)
    return {"potential": potential, "tau": len(frames) * every * LANGEVIN_DT, "frames": x,
            "error": error, "seconds": time.time() - t0}


# ------------------------------------------------------------------------------ analysis
def pair_distances(x: np.ndarray) -> np.ndarray:
    """All pair distances d_ij (i < j) of frames x (F, n, 3), flattened."""
    i, j = np.triu_indices(x.shape[1], 1)
    return np.linalg.norm(x[:, i] - x[:, j], axis=-1).ravel()


def histogram(d: np.ndarray) -> np.ndarray:
    """Probability mass per bin of HIST_BINS (distances outside the range count in the end bins)."""
    counts, _ = np.histogram(np.clip(d, HIST_BINS[0], HIST_BINS[-1] - 1e-12), bins=HIST_BINS)
    return counts / max(counts.sum(), 1)


def histogram_distances(a: np.ndarray, b: np.ndarray) -> dict:
    """L1 = sum_b |p_b - q_b| of the binned distributions (0 equal, 2 disjoint) and the
    Wasserstein-1 distance of the two samples of pair distances (r_m units)."""
    from scipy.stats import wasserstein_distance
    if len(a) == 0 or len(b) == 0:
        return {"l1": float("nan"), "w1": float("nan")}
    return {"l1": float(np.abs(histogram(a) - histogram(b)).sum()),
            "w1": float(wasserstein_distance(a, b))}


def local_slopes(rows) -> dict:
    """{potential: [(dt_a, dt_b, slope)]}: the log-log slope of the ratio between successive time
    steps (tau); where it leaves 2, velocity Verlet has left its asymptotic regime."""
    out = {}
    for p in sorted({r["potential"] for r in rows}):
        pts = sorted((r["dt_fs"] / 1000.0, r["ratio"]) for r in rows
                     if r["potential"] == p and r.get("ratio", 0) > 0 and not r["failed"])
        out[p] = [(a, b, float(np.log(y / x) / np.log(b / a))) for (a, x), (b, y) in zip(pts, pts[1:])]
    return out


def det_signs(model, frames: np.ndarray, chunk: int = 200) -> dict:
    """The sign and log |det J_V| of the flow at each frame (PyTorch, float64)."""
    import torch
    from smoothflow_torch.particles import fff
    from smoothflow_torch.particles.export import load_free_form
    if len(frames) == 0:
        return {"frames": 0, "nonpositive": 0, "negative": 0, "zero": 0, "min_log_abs_det": None}
    f = load_free_form(model)
    with torch.no_grad():
        sign, logdet = fff.exact_log_det(f, torch.as_tensor(frames, dtype=torch.float64) -
                                         torch.as_tensor(frames).mean(1, keepdim=True), chunk)
    sign, logdet = sign.numpy(), logdet.numpy()
    return {"frames": int(len(sign)), "nonpositive": int((sign <= 0).sum()),
            "negative": int((sign < 0).sum()), "zero": int((sign == 0).sum()),
            "min_log_abs_det": float(logdet.min()), "mean_log_abs_det": float(logdet.mean())}


def held_out_nll(model, test: np.ndarray, frames: int, chunk: int = 200) -> dict:
    """The exact NLL (nats per configuration, float64) on ``frames`` evenly spaced test frames."""
    import torch
    from smoothflow_torch.particles import fff
    from smoothflow_torch.particles.export import load_free_form
    idx = np.linspace(0, len(test) - 1, min(frames, len(test))).astype(int)
    f = load_free_form(model)
    with torch.no_grad():
        out = fff.exact_nll(f, torch.as_tensor(test[idx], dtype=torch.float64), chunk)
    nll = out["nll"].numpy()
    ok = np.isfinite(nll)
    return {"frames": int(len(idx)), "nll": float(nll[ok].mean()),
            "nll_sem": float(nll[ok].std() / np.sqrt(max(ok.sum(), 1))),
            "negative_sign": int((out["sign"].numpy() < 0).sum())}


def timing(model, x: np.ndarray, repeats: int) -> dict:
    """Median seconds of one energy + force evaluation of one configuration: the C core through
    an OpenMM Context (Reference, CPU) and PyTorch autograd of the exact computation (1 thread).
    Also the largest energy / force difference between them (kJ/mol, kJ/mol/nm)."""
    import openmm
    import torch
    from smoothflow_torch.particles.export import load_free_form
    from smoothflow_torch.particles.potential import log_density_and_gradient
    out = {"repeats": repeats}
    energies = {}
    for plat in ("Reference", "CPU"):
        context = openmm.Context(make_system(FLOW, model), openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName(plat))
        context.setPositions(x)

        def evaluate():
            context.setPositions(x)       # invalidates OpenMM's cached state: a full evaluation
            return context.getState(getEnergy=True, getForces=True)
        out[f"openmm_{plat.lower()}_s"] = median_seconds(evaluate, repeats)
        s = evaluate()
        energies[plat] = (s.getPotentialEnergy()._value, np.asarray(s.getForces(asNumpy=True)._value))
        del context
    f = load_free_form(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.as_tensor(x[None], dtype=torch.float64)
        out["pytorch_autograd_s"] = median_seconds(lambda: log_density_and_gradient(f, xt), repeats)
        log_p, _, grad = log_density_and_gradient(f, xt)
    finally:
        torch.set_num_threads(threads)
    e_torch, f_torch = -float(log_p[0]), grad[0].numpy()     # kT = 1
    out["max_energy_difference"] = max(abs(e - e_torch) for e, _ in energies.values())
    out["max_force_difference"] = max(float(np.abs(fr - f_torch).max()) for _, fr in energies.values())
    return out


def machine() -> dict:
    """Where and when the numbers were measured."""
    import openmm
    import torch
    return provenance.machine(ROOT, {"openmm": openmm.__version__, "torch": torch.__version__})


# ------------------------------------------------------------------------------ output
def _tau_rows(rows) -> list:
    """summarize()'s rows with dt in tau (the pipeline keys them by dt in fs = 1e-3 tau)."""
    return [dict(r, dt_fs=r["dt_fs"] / 1000.0) for r in rows]


def plot(rows, runs, hist: dict, out: Path) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # the pipeline's energy-conservation plots, in reduced units (the rows' dt_fs is 1e-3 tau)
    names = plot_energy_conservation(rows, runs, out, reference=TRUE, dt_unit="tau", dt_scale=1e-3,
                                     time_unit="tau", energy_unit="kT", dt2_guide=True, dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4))
    centres = 0.5 * (HIST_BINS[1:] + HIST_BINS[:-1])
    width = HIST_BINS[1] - HIST_BINS[0]
    styles = {"reference": ("gray", "-", 2.5), TRUE: ("k", "--", 1.2), FLOW: ("C0", "-", 1.2)}
    for label, d in hist.items():
        if len(d):
            c, ls, lw = styles[label]
            ax.plot(centres, histogram(d) / width, color=c, ls=ls, lw=lw,
                    label=f"{label} ({'held-out data' if label == 'reference' else 'Langevin MD'})")
    ax.set_xlabel("pair distance (r_m)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pair_distances.png", dpi=110)
    plt.close(fig)
    return names + ["pair_distances.png"]


def report(result: dict, plots: Sequence[str]) -> str:
    m, meta = result["model"], result["meta"]
    lines = ["# LJ13: the free-form flow as an MD potential, against the true LJ13 potential", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['cores']} cores ({meta['cpu']}), load "
             f"average {meta['load_average'][0]:g}, OpenMM {meta['versions']['openmm']}, platform {meta['platform']}; "
             f"{meta['starts']} thermalized starts (held-out frames {meta['start_frames']} of the test "
             f"split, velocities at kT = 1, seeds {NVE_SEED} + start) per potential and time step, "
             f"{meta['tau']:g} tau each (NVE velocity Verlet, no constraints, mass 1); "
             f"{meta['seconds']:.0f} s in all. Reduced units: energies in kT, time in tau (1 ps).", ""]
    step = m.get("step")
    label = (f"trained {step} of {m['steps']} steps" if step is not None and "steps" in m
             else "training step unknown (no provenance in the file)")
    early = step is not None and "steps" in m and step < m["steps"]
    nll = result.get("nll")
    lines += [f"Model: `{m['path']}` (sha256 {m['sha256']}), {label}"
              + (f", from `{m['checkpoint']}`" if m.get("checkpoint") else "") + "."
              + (f" Held-out NLL (exact log-det, {nll['frames']} test frames): "
                 f"{nll['nll']:.3f} ± {nll['nll_sem']:.3f} nats." if nll else ""), ""]
    if early:
        lines += [f"**Early checkpoint (step {step} of {m['steps']}): these numbers show the "
                  "machinery, not the final science.** Rerun on the final model (README.md).", ""]
    lines += ["## Energy conservation (NVE velocity Verlet)", ""]
    table = summary_table(_tau_rows(result["summary"]), ratio=".3g", drift=".3g", per_dof=".3g")
    table[0] = table[0].replace("dt (fs)", "dt (tau)").replace("drift (kJ/mol/ns)", "drift (kT per 1000 tau)")
    lines += table
    rel = result["relative"]
    if rel.get(FLOW):
        lines += ["", "Flow over true potential (a failed flow run counts as infinitely worse):", "",
                  "| dt (tau) | flow ratio / true ratio | within 2x |", "|---|---|---|"]
        for dt, v in sorted((float(k), v) for k, v in rel[FLOW].items()):
            lines.append(f"| {dt / 1000:g} | {v:.3g} | {'yes' if v <= 2 else 'no'} |")
    if result["slopes"]:
        lines += ["", "Log-log slope of the fluctuation ratio against dt (2 for a smooth potential under "
                  "velocity Verlet): " + ", ".join(f"{p} {s:.2f}" for p, s in result["slopes"].items()) + "."]
    local = result.get("local_slopes", {})
    if any(local.values()):
        lines += ["", "Local slopes between successive steps (where each potential leaves dt^2): " + "; ".join(
            f"{p} " + ", ".join(f"{a:g}-{b:g}: {v:.2f}" for a, b, v in pts) for p, pts in local.items() if pts) + "."]
    errors = [f"{r['potential']} at {r['dt_tau']:g} tau, start {r['start']}: {r['error']}"
              for r in result["runs"] if r["error"]]
    lines += ["", "Failures (OpenMM's units: ps = tau, kJ/mol = kT):", ""] + (
        [f"- {e}" for e in errors] if errors else ["- none"])
    h = result["histograms"]
    lines += ["", "## Pair distances (Langevin MD at kT = 1 against the held-out data)", "",
              f"BAOAB Langevin, dt {LANGEVIN_DT} tau, friction {LANGEVIN_FRICTION}/tau, from start 0; "
              f"flow {h['flow_tau']:g} tau ({h['flow_frames']} frames), true LJ13 {h['true_tau']:g} tau "
              f"({h['true_frames']} frames); reference: {h['reference_frames']} held-out frames. "
              "L1 = sum over 0.05-wide bins of |p - q| (0 equal, 2 disjoint); W1 the Wasserstein-1 "
              "distance of the pair-distance samples (r_m).", "",
              "| compared | L1 | W1 (r_m) |", "|---|---|---|"]
    for key, text in (("flow_vs_reference", "flow MD vs held-out data"),
                      ("true_vs_reference", "true-LJ13 MD vs held-out data (same length: the noise floor)"),
                      ("flow_vs_true", "flow MD vs true-LJ13 MD"),
                      ("train_vs_test", "training vs held-out data (all frames)")):
        lines.append(f"| {text} | {h[key]['l1']:.4f} | {h[key]['w1']:.4f} |")
    lines.append(f"\nPairs closer than the closest pair of the held-out data ({h['closest_reference']:.3f} r_m): "
                 f"flow MD {100 * h['flow_closer_fraction']:.2f} %, true-LJ13 MD "
                 f"{100 * h['true_closer_fraction']:.2f} % (how well the model learned the repulsive wall).")
    for key in ("flow_error", "true_error"):
        if h.get(key):
            lines.append(f"\nLangevin run with the {'flow' if key == 'flow_error' else 'true potential'} "
                         f"stopped: {h[key]}")
    s = result["det_sign"]
    lines += ["", "## The sign of det J_V along the flow MD", "",
              f"{s['frames']} configurations of the flow MD (the Langevin frames and the last frame of "
              f"every NVE run), det J_V by PyTorch (`fff.exact_log_det`, float64): "
              f"**{s['nonpositive']} with det J_V <= 0** ({s['negative']} negative, {s['zero']} zero)"
              + (f"; smallest log |det J_V| {s['min_log_abs_det']:.3f}, mean {s['mean_log_abs_det']:.3f}."
                 if s["frames"] else ".")]
    t = result["timing"]
    lines += ["", "## Timing of one energy + force evaluation", "",
              f"One held-out configuration, median of {t['repeats']} after a warm-up, one thread; "
              f"measured on the machine above (load average {meta['load_average'][0]:g}: a shared, "
              "loaded machine, so relative numbers count more than absolute ones). The full benchmark, "
              "with batches and openmm-torch, is `benchmarks/bench_free_form.py`.", "",
              "| evaluator | ms |", "|---|---|",
              f"| C core, OpenMM Reference | {1e3 * t['openmm_reference_s']:.2f} |",
              f"| C core, OpenMM CPU | {1e3 * t['openmm_cpu_s']:.2f} |",
              f"| PyTorch autograd (`particles.potential`, float64) | {1e3 * t['pytorch_autograd_s']:.2f} |", "",
              f"The two agree to {t['max_energy_difference']:.1e} kT in the energy and "
              f"{t['max_force_difference']:.1e} kT/r_m in the forces."]
    lines += [""] + [f"![{p[:-4].replace('_', ' ')}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the study
def run_study(model, data=DEFAULT_DATA, out=DEFAULT_OUT, dt_tau: Sequence[float] = DEFAULT_DT,
              tau: float = 1.0, starts: int = 3, samples: int = 100, langevin_tau: float = 10.0,
              frame_every: float = 0.1, platform: str = "Reference", nll_frames: int = 1000,
              timing_repeats: int = 10, progress: bool = True) -> dict:
    """Run the study (module docstring); writes report.md, results.json and the plots into
    ``out`` and returns the results."""
    from tqdm import tqdm
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no model file (export one with python -m "
                                "smoothflow_torch.particles.train CONFIG --out RUN --export-only)")
    if tau <= 0 or langevin_tau <= 0 or not dt_tau:
        raise ValueError("tau and langevin_tau must be > 0 and at least one time step given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = load_data(data)
    test = frames["test"]
    idx = start_frames(test, starts)
    t0 = time.time()
    meta = machine()
    meta.update(platform=platform, starts=starts, tau=tau, dt_tau=list(dt_tau), start_frames=idx,
                data=str(data))
    info = model_info(model)
    jobs = [(p, str(model), float(dt), float(tau), s, test[i], NVE_SEED + s, samples, platform)
            for p in (TRUE, FLOW) for dt in dt_tau for s, i in enumerate(idx)]
    runs = [nve_run(j) for j in tqdm(jobs, desc="NVE runs", unit="run", disable=not progress,
                                     file=sys.stderr)]
    rows = summarize(runs, DOF)
    # the pipeline's relative_ratios compares with its force field's label: the true LJ13 here
    relative = relative_ratios([dict(r, potential=FORCE_FIELD if r["potential"] == TRUE else r["potential"])
                                for r in rows])
    lang = {p: langevin_run(p, str(model), test[idx[0]], langevin_tau, frame_every, 7, platform, progress)
            for p in (FLOW, TRUE)}
    d_ref, d_train = pair_distances(test), pair_distances(frames["train"])
    d_flow, d_true = pair_distances(lang[FLOW]["frames"]), pair_distances(lang[TRUE]["frames"])
    hist = {"flow_vs_reference": histogram_distances(d_flow, d_ref),
            "true_vs_reference": histogram_distances(d_true, d_ref),
            "flow_vs_true": histogram_distances(d_flow, d_true),
            "train_vs_test": histogram_distances(d_train, d_ref),
            "flow_tau": lang[FLOW]["tau"], "true_tau": lang[TRUE]["tau"],
            "flow_frames": len(lang[FLOW]["frames"]), "true_frames": len(lang[TRUE]["frames"]),
            "reference_frames": len(test), "closest_reference": float(d_ref.min()),
            "flow_closer_fraction": float((d_flow < d_ref.min()).mean()) if len(d_flow) else float("nan"),
            "true_closer_fraction": float((d_true < d_ref.min()).mean()) if len(d_true) else float("nan"),
            "flow_error": lang[FLOW]["error"],
            "true_error": lang[TRUE]["error"], "bins": HIST_BINS.tolist(),
            "flow_histogram": histogram(d_flow).tolist(), "true_histogram": histogram(d_true).tolist(),
            "reference_histogram": histogram(d_ref).tolist()}
    flow_frames = [lang[FLOW]["frames"]] + [np.asarray(r["last_positions"])[None] for r in runs
                                            if r["potential"] == FLOW and r["last_positions"] is not None]
    flow_frames = np.concatenate(flow_frames)
    np.savez_compressed(out / "flow_md_frames.npz", positions=flow_frames)
    sign = det_signs(model, flow_frames)
    nll = held_out_nll(model, test, nll_frames) if nll_frames > 0 else None
    timed = timing(model, test[idx[0]], timing_repeats)
    meta["seconds"] = time.time() - t0
    result = {"meta": meta, "model": info, "nll": nll, "summary": rows, "slopes": dt2_slopes(rows),
              "local_slopes": local_slopes(rows),
              "relative": {p: {str(k): v for k, v in d.items()} for p, d in relative.items()},
              "histograms": hist, "det_sign": sign, "timing": timed,
              "runs": [dict({k: v for k, v in r.items() if k not in ("series", "last_positions")},
                            epot_start=r["series"][0][1] if r["series"] else None)
                       for r in sorted(runs, key=lambda r: (r["potential"], r["dt_fs"], r["start"]))]}
    plots = plot(rows, runs, {"reference": d_ref, TRUE: d_true, FLOW: d_flow}, out)
    text = report(result, plots)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See studies/lj13_free_form/README.md.")
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="the free-form model file (default: the shipped LJ13 flow, %(default)s; any run's "
                         "model.safetensors or train.py --export-only output)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the LJ13 data (particles.data .npz)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    ap.add_argument("--dt", type=float, nargs="+", default=list(DEFAULT_DT), help="time steps (tau)")
    ap.add_argument("--tau", type=float, default=1.0, help="length of each NVE run (tau)")
    ap.add_argument("--starts", type=int, default=3, help="held-out starts per potential and dt")
    ap.add_argument("--samples", type=int, default=100, help="energy readings per NVE run")
    ap.add_argument("--langevin-tau", type=float, default=10.0, help="length of each Langevin run (tau)")
    ap.add_argument("--nll-frames", type=int, default=1000, help="test frames for the held-out NLL (0: none)")
    ap.add_argument("--timing-repeats", type=int, default=10)
    ap.add_argument("--platform", default="Reference", choices=["Reference", "CPU"])
    ap.add_argument("--long", action="store_true",
                    help="5 tau NVE runs from 6 starts and 100 tau of Langevin (for the final model)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.long:
        a.tau, a.starts, a.langevin_tau = 5.0, 6, 100.0
    result = run_study(a.model, a.data, a.out, a.dt, a.tau, a.starts, a.samples, a.langevin_tau,
                       platform=a.platform, nll_frames=a.nll_frames, timing_repeats=a.timing_repeats,
                       progress=not a.no_progress)
    print((Path(a.out) / "report.md").read_text())
    del result


if __name__ == "__main__":
    main()
