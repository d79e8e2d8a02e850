"""One energy + forces evaluation of a free-form flow potential, side by side, in one run.

The potential of issue 23 part 4 (docs/model-format.md section 9, docs/free-form-flows.md):

    U(x) = -kT [log N(f(x); 0, I_D) + log |det J_V(x)|] + U0,   exact forces,

f an EGNN encoder with random weights (coord_gain 1, h0 random, seeded) exported with
``smoothflow_torch.particles.export.export_free_form``, for DW4 (n = 4, d = 2) and LJ13
(n = 13, d = 3) at hidden 32 and 64 with 3 layers (32 x 3 is what is trained), on batches of
1 and 16 configurations. Evaluators, each timed on the same configurations:

  C core (sf_evaluate)          the cffi binding (wrappers/python/smoothflow_core.py), one call
  SmoothFlowForce Reference, CPU    an OpenMM Context, VerletIntegrator.step(1) (one System of B
                                copies, one force: setParticles, then addMolecule); a build or
                                cross-check failure is recorded as skipped with its reason
  PyTorch autograd              potential.log_density_and_gradient (J_V by forward mode, slogdet,
                                one reverse pass), float64
  TorchForce (openmm-torch) Reference   the same exact computation as TorchScript in the
                                peers' environment (benchmarks/peers/bench_peers_free_form.py)
  true potential Reference, CPU the LJ13 / DW4 OpenMM Systems of particles.systems (custom
                                forces), B copies, VerletIntegrator.step(1)

Every flow evaluator's energy and forces are first compared with the C core's on the case's
configurations; one that differs by more than --tolerance (relative energy, or force error over
the largest force) is not timed (a timing of a different computation means nothing).

Timing as benchmarks/bench_cpu.py: warm-up calls (three where one takes under 2 s: TorchScript
optimizes its graph over the first runs), the last sizing the case's block to about
--block-seconds; then rounds, each timing one block of every case in an order rotated by one
per round (the peers' blocks timed inside their process). A case's result is the median over
rounds of its seconds per call, with the minimum and maximum. Threads: 1 everywhere by default
(the C core is single-threaded; torch.set_num_threads, the CPU platform's Threads).

The operation count per configuration is core/src/sf_egnn.c's (benchmarks/flop_count.py,
``count_free_form``), the same work for every evaluator (what the computation needs, not what
each implementation executes); GFLOP/s and the fraction of the assumed peak use it.

Writes <out>.json and <out>.md (default benchmarks/results/free_form) with the machine, date,
commit and the load average at the start and the end.

Usage: python benchmarks/bench_free_form.py [--quick] [--no-peers] [--rounds 5] [--out PREFIX] [--keep-work]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import flop_count            # beside this script (run as a script, its folder is on the path)
from bench_cpu import (Case, Peers, fmt_t, machine, openmm_context, peers_python, probe_limits, stepper,
                       warm_up)

ROOT = Path(__file__).resolve().parents[1]
DT_PS = 1e-6              # the step's cost does not depend on dt; tiny so blocks stay where they start
TOLERANCE = 1e-8          # cross-check against the C core before timing
# system: (n, d, distance scale s in nm: about a typical pair distance)
SYSTEMS = {"dw4": (4, 2, 4.0), "lj13": (13, 3, 1.5)}
NETWORKS = [(32, 3), (64, 3)]          # (hidden, layers); 32 x 3 is the trained size
BATCHES = [1, 16]
C_CORE = "C core (sf_evaluate)"
TORCH = "PyTorch autograd"
TORCHFORCE = "TorchForce (openmm-torch) Reference"
TRUE = "true potential"


def model_name(system, hidden, layers):
    return f"{system}-h{hidden}-l{layers}"


def make_encoder(system, hidden, layers, seed):
    """A random EGNN far from the identity (coord_gain 1), float64, h0 random too."""
    from smoothflow_torch.particles.egnn import EGNN
    n, d, scale = SYSTEMS[system]
    torch.manual_seed(seed)
    enc = EGNN(n, d, hidden=hidden, layers=layers, distance_scale=scale, coord_gain=1.0).double()
    with torch.no_grad():
        enc.h0.normal_(0.0, 0.5)
    return enc.eval()


def configurations(system, batch, seed):
    """(B, n, 3) configurations in nm: the random non-overlapping starts of the data's chains
    (particles.data; z = 0 for DW4), one per configuration."""
    from smoothflow_torch.particles import data, systems
    rng = np.random.default_rng(seed)
    return np.stack([data._initial_positions(systems.SYSTEMS[system], rng) for _ in range(batch)])


# ----------------------------------------------------------------------------- cases
def core_case(model, core, x):
    def run(k):
        t0 = time.perf_counter()
        for _ in range(k):
            core.evaluate(x)
        return time.perf_counter() - t0

    def ev():
        e, f = core.evaluate(x)
        return float(np.sum(e)), f.reshape(-1, 3)
    return Case(model, C_CORE, x.shape[0], 1, "energy+forces", run, ev)


def torch_case(model, encoder, x, kT, offset, threads):
    from smoothflow_torch.particles import potential
    d = encoder.spatial_dim
    xt = torch.from_numpy(np.ascontiguousarray(x[..., :d]))

    def run(k):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for _ in range(k):
            potential.log_density_and_gradient(encoder, xt)
        return time.perf_counter() - t0

    def ev():
        torch.set_num_threads(threads)
        log_p, _, grad = potential.log_density_and_gradient(encoder, xt)
        forces = np.zeros_like(x)
        forces[..., :d] = kT * grad.numpy()
        return float((-kT * log_p + offset).sum()), forces.reshape(-1, 3)
    return Case(model, TORCH, x.shape[0], threads, "energy+forces", run, ev)


def smoothflow_cases(model, model_bytes, x, threads):
    """SmoothFlowForce on Reference and CPU, or the same cases skipped with the reason when
    the force does not take a free-form model (yet)."""
    import openmm
    B, n, _ = x.shape
    cases = []
    for plat in ("Reference", "CPU"):
        t = 1 if plat == "Reference" else threads
        try:
            from openmmsmoothflow import SmoothFlowForce
            system = openmm.System()
            for _ in range(B * n):
                system.addParticle(1.0)
            force = SmoothFlowForce.createFromBytes(model_bytes)
            force.setParticles(list(range(n)))
            for i in range(1, B):
                force.addMolecule(list(range(i * n, (i + 1) * n)))
            system.addForce(force)
            x0 = x.reshape(-1, 3)
            run, ev = stepper(*openmm_context(system, x0, plat, t), x0)
            cases.append(Case(model, f"SmoothFlowForce {plat}", B, t, "MD step", run, ev))
        except Exception as e:   # the force does not run free-form models (yet): say why
            c = Case(model, f"SmoothFlowForce {plat}", B, t, "MD step")
            c.skipped = f"SmoothFlowForce cannot run this free-form model: {type(e).__name__}: {e}"
            cases.append(c)
    return cases


def replicate(system, copies):
    """A System of ``copies`` independent copies of ``system`` (custom bond forces only)."""
    import openmm
    n = system.getNumParticles()
    out = openmm.System()
    for _ in range(copies):
        for i in range(n):
            out.addParticle(system.getParticleMass(i))
    for force in system.getForces():
        clone = openmm.XmlSerializer.clone(force)
        for c in range(1, copies):
            for b in range(force.getNumBonds()):
                if isinstance(force, openmm.CustomBondForce):
                    i, j, params = force.getBondParameters(b)
                    clone.addBond(i + c * n, j + c * n, params)
                elif isinstance(force, openmm.CustomCompoundBondForce):
                    particles, params = force.getBondParameters(b)
                    clone.addBond([p + c * n for p in particles], params)
                else:
                    raise TypeError(f"replicate: {type(force).__name__} is not a custom bond force")
        out.addForce(clone)
    return out


def true_cases(system_name, x, threads):
    from smoothflow_torch.particles import systems
    B = x.shape[0]
    system = replicate(systems.SYSTEMS[system_name].build(), B)
    x0 = x.reshape(-1, 3)
    cases = []
    for plat in ("Reference", "CPU"):
        t = 1 if plat == "Reference" else threads
        run, ev = stepper(*openmm_context(system, x0, plat, t), x0)
        cases.append(Case(f"{system_name}-{TRUE}", f"{TRUE} {plat}", B, t, "MD step", run, ev,
                          note="the System the data came from (custom forces)"))
    return cases


def peer_case(peers, model, model_path, pos_path, B, workdir):
    c = Case(model, TORCHFORCE, B, 1, "MD step")
    cid = f"{model}-B{B}"
    try:
        peers.ask(op="build", id=cid, model=str(model_path), positions=str(pos_path),
                  platform="Reference", torchscript_dir=str(workdir), dt=DT_PS)
    except RuntimeError as e:
        c.skipped = f"build failed: {e}"
        return c

    def run(k):
        return peers.ask(op="time", id=cid, threads=1, steps=k)["seconds"]

    def ev():
        out = Path(workdir) / f"{cid}-eval.npz"
        e = peers.ask(op="evaluate", id=cid, threads=1, out=str(out))["energy"]
        return e, np.load(out)["forces"]
    c.run, c.evaluate = run, ev
    return c


class FreeFormPeers(Peers):
    """The peers' server for free-form models (benchmarks/peers/bench_peers_free_form.py)."""

    def __init__(self, python, workdir):   # bench_cpu.Peers's, with this script
        self.log = open(Path(workdir) / "peers.stderr", "w")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)   # nothing of the project's environment leaks in
        self.proc = subprocess.Popen([python, str(ROOT / "benchmarks" / "peers" / "bench_peers_free_form.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)


# ----------------------------------------------------------------------------- analysis
def cross_check(group, tolerance):
    """Every flow evaluator of one (model, B) against the C core; one that fails or differs
    by more than ``tolerance`` is marked skipped (not timed)."""
    ref = next(c for c in group if c.evaluator == C_CORE)
    e0, f0 = ref.evaluate()
    fs = float(np.abs(f0).max())
    out = {C_CORE: {"energy": e0}}
    for c in group:
        if c is ref or c.skipped:
            continue
        try:
            e, f = c.evaluate()
            row = {"energy": e, "energy_rel": abs(e - e0) / max(abs(e0), 1e-300),
                   "forces_rel_to_max": float(np.abs(np.asarray(f) - f0).max()) / fs}
            if not (row["energy_rel"] <= tolerance and row["forces_rel_to_max"] <= tolerance):
                c.skipped = (f"disagrees with the C core beyond {tolerance:g}: energy {row['energy_rel']:.1e} "
                             f"relative, forces {row['forces_rel_to_max']:.1e} of the largest")
        except Exception as ex:
            row = {"error": f"{type(ex).__name__}: {ex}"}
            c.skipped = f"evaluation failed: {row['error']}"
        out[c.evaluator] = row
    return out


def summarize(c: Case, info: dict) -> dict:
    d = {"id": c.id, "model": c.model, **info, "evaluator": c.evaluator, "configurations": c.n,
         "threads": c.threads, "unit": c.unit}
    if c.note:
        d["note"] = c.note
    if c.skipped:
        d["skipped"] = c.skipped
        return d
    s = np.array(c.samples)
    med = float(np.median(s))
    d.update({"calls_per_block": c.steps, "rounds": len(s), "seconds_samples": s.tolist(),
              "seconds": med, "seconds_min": float(s.min()), "seconds_max": float(s.max()),
              "seconds_per_configuration": med / c.n})
    return d


def add_rates_and_ratios(results, flops, peak):
    for r in results:
        if "seconds" not in r:
            continue
        if r["model"] in flops:
            f = flops[r["model"]]["flops"] * r["configurations"]
            r["gflops"] = f / r["seconds"] / 1e9
            r["fraction_of_peak"] = f / r["seconds"] / (peak * r["threads"])
        same = {x["evaluator"]: x for x in results if x["configurations"] == r["configurations"]
                and "seconds" in x and (x["model"] == r["model"]
                                        or x["model"] == f"{r.get('system')}-{TRUE}")}
        if C_CORE in same and r["model"] in flops:
            r["ratio_to_c_core"] = r["seconds"] / same[C_CORE]["seconds"]
        plat = r["evaluator"].rsplit(" ", 1)[-1]
        t = same.get(f"{TRUE} {plat}")
        if t is not None and r["evaluator"].startswith("SmoothFlowForce"):
            r["ratio_to_true_potential_same_platform"] = r["seconds"] / t["seconds"]


def ratios(results, flops):
    """Per (model, B): PyTorch / C core, TorchForce / C core, and the flow's MD step over
    the true potential's (both on Reference)."""
    out = []
    for model in flops:
        for B in sorted({r["configurations"] for r in results}):
            rows = {r["evaluator"]: r for r in results if r["model"] == model and r["configurations"] == B}
            if not rows:
                continue
            row = {"model": model, "configurations": B}
            for ev, key in ((TORCH, "pytorch_over_c_core"), (TORCHFORCE, "torchforce_over_c_core"),
                            ("SmoothFlowForce Reference", "smoothflowforce_reference_over_c_core"),
                            ("SmoothFlowForce CPU", "smoothflowforce_cpu_over_c_core")):
                if ev in rows and "ratio_to_c_core" in rows[ev]:
                    row[key] = rows[ev]["ratio_to_c_core"]
            for ev, key in (("SmoothFlowForce Reference", "smoothflowforce_over_true_potential_reference"),
                            ("SmoothFlowForce CPU", "smoothflowforce_over_true_potential_cpu")):
                if ev in rows and "ratio_to_true_potential_same_platform" in rows[ev]:
                    row[key] = rows[ev]["ratio_to_true_potential_same_platform"]
            out.append(row)
    return out


# ----------------------------------------------------------------------------- output
def write_markdown(path, res):
    m, L, s = res["machine"], res["limits"], res["settings"]
    la0 = ", ".join(f"{v:.2f}" for v in res["load_average_at_start"])
    la1 = ", ".join(f"{v:.2f}" for v in m["load_average"])
    peers = res.get("peers") or {}
    lines = ["# The free-form flow potential: one energy + forces evaluation, side by side", "",
             f"Machine: {m['cpu']} ({m['cores']} cores, AVX-512 {'yes' if m['avx512f'] else 'no'}), "
             f"{m['platform']}; date {m['date']}; commit {m['commit']}.",
             f"Load average (1, 5, 15 min) at the start {la0} and at the end {la1} on {m['cores']} cores."
             + (" **These numbers were taken under load** (other work shared the cores): they are "
                "slower and noisier than on an idle machine and should be rerun on one."
                if max(res["load_average_at_start"][0], m["load_average"][0]) > 0.5 else ""),
             f"Project environment: Python {m['python']}, OpenMM {m['versions']['openmm']}, "
             f"torch {m['versions']['torch']}, numpy {m['versions']['numpy']}; the C core's OpenBLAS "
             f"runs its {m.get('openblas_core', 'unknown')} kernels"
             + (f" (OPENBLAS_CORETYPE={m['env']['OPENBLAS_CORETYPE']})" if "OPENBLAS_CORETYPE" in m.get("env", {})
                else " (detected)") + ". Peers' environment: "
             + (", ".join(f"{k} {peers[k]}" for k in ("python", "torch", "openmm", "openmmtorch") if k in peers)
                if "torch" in peers else f"not run ({peers.get('error', 'option --no-peers')})") + ".",
             f"Run: {s['rounds']} interleaved rounds, median of the per-round seconds per call (spread: "
             f"min-max over rounds); blocks of about {s['block_seconds']} s; {s['wall_seconds']:.0f} s in all; "
             f"threads {s['threads']} (torch.set_num_threads, the CPU platform's Threads; the C core and "
             "Reference are single-threaded).",
             f"Limits: peak {L['peak_assumption']}; numpy DGEMM on one thread {L['dgemm_flops'] / 1e9:.1f} GFLOP/s.",
             "",
             "Models: random EGNN encoders (coord_gain 1, h0 random, seeded), exported with "
             "`export_free_form`, kT = 1 kJ/mol (reduced units). Configurations: the random "
             "non-overlapping starts of the data's chains (`particles.data`), one per configuration. "
             "A call evaluates B configurations (one System of B copies for the OpenMM cases; "
             "one VerletIntegrator step evaluates the forces once). Operation count: "
             "core/src/sf_egnn.c's, per configuration (benchmarks/flop_count.py; the elementwise "
             "work, a few per cent, not counted), used as the work of every evaluator.", "",
             "Reading the table: the OpenMM cases time a whole MD step, the platform's own cost "
             "included (on the CPU platform a hand-off to its thread pool, tens of us, which is most "
             "of the true potentials' CPU time); the C core and PyTorch autograd time the potential "
             "alone. GFLOP/s and the fraction of peak of PyTorch and TorchForce use the C core's "
             "count: they say how far each is from doing the work the computation needs at the C "
             "core's rate, not what it executes (J_V's D columns by vmapped forward-mode products, "
             "or D reverse-mode rows, and a second-order reverse pass).", ""]
    for name, c in res["flops"].items():
        lines.append(f"- `{name}`: n = {c['n_atoms']}, d = {c['spatial_dim']}, D = {c['dims']}, "
                     f"H = {c['hidden']}, L = {c['layers']}: {c['flops'] / 1e6:.2f} MFLOP per configuration, "
                     f"weights {c['weight_bytes'] / 1e3:.0f} kB, workspace {c['workspace_bytes'] / 1e6:.2f} MB.")
    lines += ["", "## Time per call", "",
              "| model | B | evaluator | per call (median) | spread (min-max) | per configuration | "
              "GFLOP/s | of peak | x C core |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["results"]:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['configurations']} | {r['evaluator']} | skipped | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['configurations']} | {r['evaluator']} | {fmt_t(r['seconds'])} | "
            f"{fmt_t(r['seconds_min'])} - {fmt_t(r['seconds_max'])} | {fmt_t(r['seconds_per_configuration'])} | "
            + (f"{r['gflops']:.2f} | {r['fraction_of_peak']:.1%} | " if "gflops" in r else "- | - | ")
            + (f"{r['ratio_to_c_core']:.2f} |" if "ratio_to_c_core" in r else "- |"))
    lines += ["", "## Ratios", "",
              "Time per call over the C core's (same model and B), and the flow's MD step over the "
              "true potential's on the same platform.", "",
              "| model | B | PyTorch / C core | TorchForce / C core | SmoothFlowForce Reference / C core | "
              "SmoothFlowForce Reference / true potential Reference | SmoothFlowForce CPU / true potential CPU |",
              "|---|---|---|---|---|---|---|"]

    def cell(row, key):
        return f"{row[key]:.1f}" if key in row else "-"
    for row in res["ratios"]:
        lines.append(f"| {row['model']} | {row['configurations']} | {cell(row, 'pytorch_over_c_core')} | "
                     f"{cell(row, 'torchforce_over_c_core')} | {cell(row, 'smoothflowforce_reference_over_c_core')} | "
                     f"{cell(row, 'smoothflowforce_over_true_potential_reference')} | "
                     f"{cell(row, 'smoothflowforce_over_true_potential_cpu')} |")
    lines += ["", f"## Cross-check against the C core (tolerance {s['tolerance']:g})", "",
              "Total energy of the call's B configurations, relative difference; forces, largest "
              "difference over the largest force. A case beyond the tolerance is not timed.", "",
              "| model | B | evaluator | energy (kJ/mol) | energy rel. | forces rel. to max |",
              "|---|---|---|---|---|---|"]
    for key, group in res["cross_check"].items():
        model, B = key.rsplit("|B=", 1)
        for ev, row in group.items():
            if ev == C_CORE:
                lines.append(f"| {model} | {B} | {ev} | {row['energy']:.12g} | reference | reference |")
            elif "error" in row:
                lines.append(f"| {model} | {B} | {ev} | failed: {row['error']} | | |")
            else:
                lines.append(f"| {model} | {B} | {ev} | {row['energy']:.12g} | {row['energy_rel']:.1e} | "
                             f"{row['forces_rel_to_max']:.1e} |")
    skipped = [r for r in res["results"] if "skipped" in r]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {r['id']}: {r['skipped']}" for r in skipped]
    lines.append("")
    Path(path).write_text("\n".join(lines))


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block-seconds", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads and the CPU platform's Threads")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    ap.add_argument("--no-peers", action="store_true", help="skip TorchForce (the peers' environment)")
    ap.add_argument("--peers-python", help="the peers' python (default: benchmarks/peers/setup_peers.sh)")
    ap.add_argument("--quick", action="store_true",
                    help="hidden 32 only, one configuration, 2 rounds of short blocks (about a minute)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "free_form"))
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the temporary folder (model files, TorchScript, the peers' stderr)")
    args = ap.parse_args(argv)
    networks, batches = NETWORKS, BATCHES
    if args.quick:
        networks, batches, args.rounds, args.block_seconds = NETWORKS[:1], [1], 2, 0.05
    start = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)

    from smoothflow_core import CoreModel
    from smoothflow_torch.particles.export import export_free_form
    from smoothflow_torch.particles.systems import R_KJ_PER_MOL_K, REDUCED_TEMPERATURE_KELVIN
    kT, offset = R_KJ_PER_MOL_K * REDUCED_TEMPERATURE_KELVIN, 0.0

    work = Path(tempfile.mkdtemp(prefix="smoothflow-bench-free-form-"))
    peers, peer_info = None, None
    if not args.no_peers:
        try:
            peers = FreeFormPeers(peers_python(args), work)
            peer_info = peers.ask(op="info")
        except Exception as e:
            print(f"[bench] peers unavailable: {e}", flush=True)
            peer_info, peers = {"error": str(e)}, None

    cases, info, flops, groups = [], {}, {}, []
    for si, system in enumerate(SYSTEMS):
        for hidden, layers in networks:
            model = model_name(system, hidden, layers)
            encoder = make_encoder(system, hidden, layers, seed=1000 * si + hidden + layers)
            path = work / f"{model}.safetensors"
            export_free_form(encoder, path, temperature=REDUCED_TEMPERATURE_KELVIN, energy_offset=offset)
            flops[model] = flop_count.count_file(path)
            info[model] = {"system": system, "hidden": hidden, "layers": layers}
            model_bytes = path.read_bytes()
            for B in batches:
                x = configurations(system, B, seed=B)
                pos_path = work / f"{model}-B{B}.npy"
                np.save(pos_path, x)
                group = [core_case(model, CoreModel.from_bytes(model_bytes, max_batch=B), x)]
                group += smoothflow_cases(model, model_bytes, x, args.threads)
                group.append(torch_case(model, encoder, x, kT, offset, args.threads))
                if peers:
                    group.append(peer_case(peers, model, path, pos_path, B, work))
                elif not args.no_peers:
                    c = Case(model, TORCHFORCE, B, 1, "MD step")
                    c.skipped = f"peers' environment unavailable: {peer_info.get('error')}"
                    group.append(c)
                groups.append((f"{model}|B={B}", group))
                cases += group
                print(f"[bench] built {model} B={B} ({time.perf_counter() - start:.0f} s)", flush=True)
        for B in batches:
            x = configurations(system, B, seed=B)
            for c in true_cases(system, x, args.threads):
                info[c.model] = {"system": system}
                cases.append(c)

    checks = {key: cross_check(group, args.tolerance) for key, group in groups}
    print(f"[bench] cross-check: {json.dumps(checks)}", flush=True)
    limits = probe_limits(max(c["weight_bytes"] for c in flops.values()))

    live = [c for c in cases if not c.skipped]
    live = warm_up(live, args.block_seconds)
    print(f"[bench] warm-up done ({time.perf_counter() - start:.0f} s); {len(live)} cases", flush=True)
    for r in range(args.rounds):
        for c in live[r % len(live):] + live[:r % len(live)]:
            if c.skipped:
                continue
            try:
                c.samples.append(c.run(c.steps) / c.steps)
            except Exception as e:
                c.skipped = f"failed in round {r + 1}: {type(e).__name__}: {e}"
        print(f"[bench] round {r + 1}/{args.rounds} ({time.perf_counter() - start:.0f} s)", flush=True)
    if peers:
        peers.close()

    results = [summarize(c, info[c.model]) for c in cases]
    add_rates_and_ratios(results, flops, limits["peak_flops_assumed"])
    res = {"machine": machine(), "load_average_at_start": load_start, "peers": peer_info,
           "limits": limits, "flops": flops,
           "settings": {"systems": {k: {"n": v[0], "d": v[1], "distance_scale": v[2]} for k, v in SYSTEMS.items()},
                        "networks": [list(n) for n in networks], "batches": batches, "rounds": args.rounds,
                        "block_seconds": args.block_seconds, "threads": args.threads, "dt_ps": DT_PS,
                        "kT": kT, "tolerance": args.tolerance, "quick": args.quick,
                        "wall_seconds": time.perf_counter() - start},
           "cross_check": checks, "results": results, "ratios": ratios(results, flops)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), res)
    print(out.with_suffix(".md").read_text())
    if args.keep_work:
        print(f"[bench] work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
