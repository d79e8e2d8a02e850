"""CPU benchmark of the flow potential beside its peers: one command, one interleaved run.

Cases (benchmarks/README.md says more):
  SmoothFlowForce on the Reference platform, and on the CPU platform with Threads 1 and 2
  PyTorch autograd of the same flow (SmoothFlow.energy_and_forces on a (n, 22, 3) float64
      batch; torch threads 1 and 2; its unit is one energy + forces evaluation, no MD step)
  openmm-torch's TorchForce running the flow as TorchScript, and OpenMM's PythonForce
      calling PyTorch autograd (peers' own environment, benchmarks/peers/)
  ff99SB-ILDN with OBC, one alanine dipeptide, Reference and CPU (Threads 1 and 2)
for two flows (the shipped smooth alanine-dipeptide flow and the 8-layer generative flow of
bench_energy_forces.py) at 1, 16, 256 and 4096 molecules (a System of n copies, one
SmoothFlowForce over all of them: setParticles for the first, addMolecule for the others).
The timed unit of the OpenMM cases is
VerletIntegrator.step(1) (called in a Python loop; one force evaluation per step).

Interleaving: after warm-up steps (3 where a step takes under 2 s, else 1; the last sizes
the case's block to about --block-seconds of steps, at least one), every round times one block of every case, in an order rotated by
one case per round; the peers' blocks are timed inside their server process when the
round reaches them (this process waits, idle). A case's result is the median over rounds
of its seconds per step.

Writes <out>.json, <out>.md and <out>_scaling.png (default benchmarks/results/cpu*), with
the machine, date, commit, library versions and thread counts.

Usage: python benchmarks/bench_cpu.py [--rounds 5] [--sizes 1,16,256,4096] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from smoothflow_torch import provenance

import flop_count   # beside this script (run as a script, its folder is on the path)

ROOT = Path(__file__).resolve().parents[1]

SHIPPED = ROOT / "models" / "alanine_dipeptide" / "smooth.safetensors"
MODELS = {"smooth": "shipped smooth alanine-dipeptide flow (18 density layers, K = 16, MLP 2x128)",
          "gen8": "8-layer generative flow (N=22, D=60, MLP 2x128 SiLU, K=8, random seeded)"}
DT_PS = 1e-6   # the step's cost does not depend on dt; tiny so blocks stay where they start
ASSUMED_GHZ = 2.3
PEAK_FLOPS_PER_CYCLE = 2 * 8 * 2   # 2 FMA units x 8 doubles (AVX-512) x 2 flops


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    flags = []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    import openmm
    m = provenance.machine(ROOT, {"openmm": openmm.__version__, "torch": torch.__version__, "numpy": np.__version__})
    return {**m, "avx512f": "avx512f" in flags,
            "env": {k: os.environ[k] for k in ("OPENMM_CPU_THREADS", "OMP_NUM_THREADS",
                                                "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
                    if k in os.environ},
            "openblas_core": _openblas_core()}


def _openblas_core() -> str:
    """The kernel set the C core's OpenBLAS chose (Debian 12's 0.3.21 does not know every
    CPU and may fall back to its SSE3 'Prescott' kernels; OPENBLAS_CORETYPE overrides)."""
    import ctypes
    import smoothflow_core
    try:
        smoothflow_core.load_library()  # loads libsmoothflow and the OpenBLAS it links
        lib = ctypes.CDLL("libopenblas.so.0", mode=os.RTLD_NOLOAD)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError) as e:
        return f"unknown ({e})"


_PROBE = r"""
import json, time, numpy as np
def best(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)
out = {}
for label, nbytes in (("weights_sized", int(__WEIGHTS__)), ("dram", 1 << 29)):
    n = max(nbytes // 8, 1024)
    a = np.random.rand(n); b = np.empty_like(a)
    t = best(lambda: np.copyto(b, a), 5 if label == "dram" else 200)
    out["copy_bandwidth_" + label] = 2 * 8 * n / t   # read + write, STREAM convention
    out["copy_bytes_" + label] = 8 * n
m = 1024
x = np.random.rand(m, m); y = np.random.rand(m, m)
out["dgemm_flops"] = 2 * m ** 3 / best(lambda: x @ y, 5)
print(json.dumps(out))
"""


def probe_limits(weight_bytes: int) -> dict:
    """Single-thread stream-copy bandwidth (arrays the size of the weights, and 512 MiB
    ones) and numpy's DGEMM rate, in a fresh process with one BLAS thread."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _PROBE.replace("__WEIGHTS__", str(weight_bytes))],
                         capture_output=True, text=True, env=env, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["peak_flops_assumed"] = ASSUMED_GHZ * 1e9 * PEAK_FLOPS_PER_CYCLE
    out["peak_assumption"] = (f"{ASSUMED_GHZ} GHz x 2 FMA units x 8 doubles (AVX-512) x 2 flops "
                              f"= {out['peak_flops_assumed'] / 1e9:.1f} GFLOP/s per core")
    return out


# ----------------------------------------------------------------------------- cases
class Case:
    """One timed configuration: ``run(k)`` returns seconds for k units."""

    def __init__(self, model, evaluator, n, threads, unit, run=None, evaluate=None, note=""):
        self.model, self.evaluator, self.n, self.threads = model, evaluator, n, threads
        self.unit, self.run, self.evaluate, self.note = unit, run, evaluate, note
        self.steps = 1
        self.samples = []
        self.skipped = None

    @property
    def id(self):
        return f"{self.model}|{self.evaluator}|n={self.n}|t={self.threads}"


def openmm_context(system, positions, platform_name, threads):
    import openmm
    integ = openmm.VerletIntegrator(DT_PS)
    plat = openmm.Platform.getPlatformByName(platform_name)
    props = {"Threads": str(threads)} if platform_name == "CPU" else {}
    ctx = openmm.Context(system, integ, plat, props)
    ctx.setPositions(positions)
    return ctx, integ


def stepper(ctx, integ, x0, sync=False):
    """run(k) times k steps from x0; evaluate() gives the energy and forces at x0.  With sync, each
    block ends with a download of the positions (getState), which waits for the queued work: a
    device platform returns from step() once its kernels are queued."""
    zeros = np.zeros_like(x0)

    def run(k):
        ctx.setPositions(x0)      # every block starts from the same state
        ctx.setVelocities(zeros)
        if sync:
            ctx.getState(getPositions=True)   # the uploads done before the clock starts
        step = integ.step
        t0 = time.perf_counter()
        for _ in range(k):
            step(1)
        if sync:
            ctx.getState(getPositions=True)
        return time.perf_counter() - t0

    def evaluate():
        ctx.setPositions(x0)
        st = ctx.getState(getEnergy=True, getForces=True)
        return st.getPotentialEnergy()._value, st.getForces(asNumpy=True)._value
    return run, evaluate


#: the suffix of the evaluators that run the float32 weight option
FLOAT32 = ", float32 weights"


def smoothflow_cases(model, model_bytes, x, threads_list, float32=False):
    """SmoothFlowForce on Reference and CPU; with float32, the same with
    setWeightPrecision(WeightsFloat32) (evaluator names end in FLOAT32)."""
    import openmm
    from openmmsmoothflow import SmoothFlowForce
    n, N, _ = x.shape
    cases = []
    for plat, threads in [("Reference", 1)] + [("CPU", t) for t in threads_list]:
        system = openmm.System()
        for _ in range(n * N):
            system.addParticle(12.0)
        force = SmoothFlowForce.createFromBytes(model_bytes)
        force.setParticles(list(range(N)))        # molecule 0, then one per copy
        for i in range(1, n):
            force.addMolecule(list(range(i * N, (i + 1) * N)))
        if float32:
            force.setWeightPrecision(SmoothFlowForce.WeightsFloat32)
        system.addForce(force)
        x0 = x.reshape(-1, 3)
        run, ev = stepper(*openmm_context(system, x0, plat, threads), x0)
        cases.append(Case(model, f"SmoothFlowForce {plat}" + (FLOAT32 if float32 else ""), n, threads, "MD step",
                          run, ev))
    return cases


def torch_cases(model, flow, x, threads_list):
    xt = torch.from_numpy(x)
    cases = []
    for t in threads_list:
        def run(k, t=t):
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            for _ in range(k):
                flow.energy_and_forces(xt)
            return time.perf_counter() - t0

        def ev(t=t):
            torch.set_num_threads(t)
            e, f = flow.energy_and_forces(xt)
            return float(e.sum()), f.reshape(-1, 3).numpy()
        cases.append(Case(model, "PyTorch autograd", x.shape[0], t, "energy+forces", run, ev))
    return cases


def forcefield_cases(threads_list):
    from alanine_dipeptide import forcefield, molecule
    x0 = np.asarray(molecule.standard_positions())
    cases = []
    for plat, threads in [("Reference", 1)] + [("CPU", t) for t in threads_list]:
        run, ev = stepper(*openmm_context(forcefield.system("obc"), x0, plat, threads), x0)
        cases.append(Case("ff99SB-ILDN", f"ff99SB-ILDN/OBC {plat}", 1, threads, "MD step", run, ev))
    return cases


def floor_cases(threads_list):
    """A VerletIntegrator step of 22 particles and no force: what a platform costs per step
    before any force (the CPU platform hands work to its thread pool every step)."""
    import openmm
    x0 = np.random.default_rng(0).random((22, 3))
    cases = []
    for plat, threads in [("Reference", 1)] + [("CPU", t) for t in threads_list]:
        system = openmm.System()
        for _ in range(22):
            system.addParticle(12.0)
        run, ev = stepper(*openmm_context(system, x0, plat, threads), x0)
        cases.append(Case("platform floor", f"empty System {plat}", 1, threads, "MD step", run, None))
    return cases


class Peers:
    """The peers' server (benchmarks/peers/bench_peers.py) in their own environment."""

    def __init__(self, python, workdir):
        self.log = open(Path(workdir) / "peers.stderr", "w")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)   # nothing of the project's environment leaks in
        self.proc = subprocess.Popen([python, str(ROOT / "benchmarks" / "peers" / "bench_peers.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peers' process ended (see {self.log.name})")
        ans = json.loads(line)
        if not ans.get("ok"):
            raise RuntimeError(ans.get("error", "unknown error"))
        return ans

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except Exception:
            self.proc.kill()
        self.log.close()


def peer_cases(peers, model, model_path, positions_path, n, threads_list, platform_name, workdir):
    cases = []
    for kind, name in (("torchforce", "TorchForce"), ("pythonforce", "PythonForce")):
        cid = f"{model}-{kind}-{n}"
        label = f"{name} (openmm-torch)" if kind == "torchforce" else f"{name} (PyTorch autograd)"
        try:
            peers.ask(op="build", id=cid, kind=kind, model=str(model_path),
                      positions=str(positions_path), platform=platform_name,
                      torchscript_dir=str(workdir), dt=DT_PS)
            error = None
        except RuntimeError as e:
            error = str(e)
        for t in threads_list:
            def run(k, cid=cid, t=t):
                return peers.ask(op="time", id=cid, threads=t, steps=k)["seconds"]

            def ev(cid=cid, t=t):
                out = Path(workdir) / f"{cid}-eval.npz"
                e = peers.ask(op="evaluate", id=cid, threads=t, out=str(out))["energy"]
                return e, np.load(out)["forces"]
            c = Case(model, f"{label} {platform_name}", n, t, "MD step", run, ev)
            if error:
                c.skipped = f"build failed: {error}"
            cases.append(c)
    return cases


# ----------------------------------------------------------------------------- analysis
def agreement(cases, model, n):
    """Energies and forces of every evaluator of (model, n) against PyTorch autograd."""
    group = [c for c in cases if c.model == model and c.n == n and not c.skipped]
    ref = next((c for c in group if c.evaluator == "PyTorch autograd"), None)
    if ref is None:
        return {}
    e0, f0 = ref.evaluate()
    fs = float(np.abs(f0).max())
    out = {}
    for c in group:
        if c is ref:
            continue
        try:
            e, f = c.evaluate()
            out[c.id] = {"energy_rel": abs(e - e0) / max(abs(e0), 1e-300),
                         "forces_rel_to_max": float(np.abs(f - f0).max()) / fs}
        except Exception as ex:
            out[c.id] = {"error": f"{type(ex).__name__}: {ex}"}
    return out


def summarize(c: Case) -> dict:
    d = {"id": c.id, "model": c.model, "evaluator": c.evaluator, "molecules": c.n,
         "threads": c.threads, "unit": c.unit, "note": c.note}
    if c.skipped:
        d["skipped"] = c.skipped
        return d
    s = np.array(c.samples)
    d.update({"steps_per_block": c.steps, "rounds": len(s),
              "seconds_per_step_samples": s.tolist(),
              "seconds_per_step": float(np.median(s)),
              "seconds_per_step_min": float(s.min()), "seconds_per_step_max": float(s.max()),
              "seconds_per_molecule_step": float(np.median(s)) / c.n})
    return d


def find(results, model, evaluator, n, threads):
    for r in results:
        if (r["model"] == model and r["evaluator"] == evaluator and r["molecules"] == n
                and r["threads"] == threads and "seconds_per_step" in r):
            return r
    return None


def add_ratios_and_fractions(results, flops, limits):
    ff = [r for r in results if r["model"] == "ff99SB-ILDN" and "seconds_per_step" in r]
    ff_best = min((r["seconds_per_step"] for r in ff), default=None)
    peak = limits["peak_flops_assumed"]
    for r in results:
        if "seconds_per_step" not in r or r["model"] not in flops:
            continue
        base = find(results, r["model"], "SmoothFlowForce CPU", r["molecules"], r["threads"])
        if base:
            r["ratio_to_smoothflow_cpu"] = r["seconds_per_step"] / base["seconds_per_step"]
        if ff_best:
            r["ratio_to_ff99sb_per_molecule"] = r["seconds_per_molecule_step"] / ff_best
        c = flops[r["model"]]
        tm = r["seconds_per_molecule_step"]
        r["gflops"] = c["flops"] / tm / 1e9
        r["fraction_of_peak"] = c["flops"] / tm / (peak * r["threads"])
        b = flop_count.bytes_per_molecule(c, r["molecules"], 4 if r["evaluator"].endswith(FLOAT32) else 8)
        r["bytes_per_molecule"] = b
        r["fraction_of_bandwidth"] = b / tm / limits["copy_bandwidth_weights_sized"]
        r["fraction_of_dram_bandwidth"] = b / tm / limits["copy_bandwidth_dram"]
    return ff_best


def targets(results, flops, limits, ff_best):
    """Issue 19's targets for the shipped smooth flow.  The one-molecule targets are judged on
    the flow's fastest platform (Reference or CPU), in the default float64 weights and, on a
    line of its own, with the float32 weight option; each line says by how much, and a missed
    one-molecule target says what the platform's empty step costs."""
    out = []

    def t(name, value, limit, met, how):
        out.append({"target": name, "value": value, "limit": limit, "met": bool(met),
                    "by": how})

    m = "smooth"

    def fastest(n, threads, float32):
        rows = [r for r in results if r["model"] == m and r["molecules"] == n and r["threads"] == threads
                and r["evaluator"].startswith("SmoothFlowForce") and "seconds_per_step" in r
                and r["evaluator"].endswith(FLOAT32) == float32]
        return min(rows, key=lambda r: r["seconds_per_step"], default=None)

    floor = {r["evaluator"]: r["seconds_per_step"] for r in results
             if r["model"] == "platform floor" and r["threads"] == 1 and "seconds_per_step" in r}
    cpu_floor = floor.get("empty System CPU")
    for float32 in (False, True):
        one = fastest(1, 1, float32)
        if not one:
            continue
        label = "float32 weights" if float32 else "float64 weights (default)"
        stream = flops[m]["weight_bytes"] * (0.5 if float32 else 1.0) / limits["copy_bandwidth_weights_sized"]
        v = one["seconds_per_step"]
        how = f"{v / 2e-4:.2f}x the limit, on {one['evaluator']}"
        if cpu_floor:
            how += f" (the CPU platform's empty step alone takes {fmt_t(cpu_floor)})"
        t(f"1 molecule, 1 thread, {label}: <= 0.2 ms per MD step", v, 2e-4, v <= 2e-4, how)
        t(f"... and within 1.5x of streaming its weights once ({label}: "
          f"{stream * 1e3:.3f} ms at the measured copy bandwidth)", v, 1.5 * stream,
          v <= 1.5 * stream, f"{v / stream:.2f}x the streaming time (an evaluation streams them twice)")
    r256 = find(results, m, "SmoothFlowForce CPU", 256, 1)
    if r256:
        v = r256["seconds_per_molecule_step"]
        t("256 molecules, 1 thread: <= 0.1 ms per molecule", v, 1e-4, v <= 1e-4,
          f"{v / 1e-4:.2f}x the limit")
    r256b = find(results, m, "SmoothFlowForce CPU", 256, 2)
    if r256 and r256b:
        v = r256["seconds_per_step"] / r256b["seconds_per_step"]
        t("2 threads >= 1.8x 1 thread at 256 molecules", v, 1.8, v >= 1.8,
          f"speed-up {v:.2f}x")
    one = fastest(1, 1, False)
    tf = find(results, m, "TorchForce (openmm-torch) CPU", 1, 1) or \
        find(results, m, "TorchForce (openmm-torch) Reference", 1, 1)
    if one and tf:
        v = tf["seconds_per_step"] / one["seconds_per_step"]
        t(">= 100x faster than TorchForce per step (1 molecule, 1 thread, float64 weights)", v, 100.0, v >= 100,
          f"{v:.1f}x faster ({one['evaluator']} against {tf['evaluator']})")
    for float32 in (False, True):
        one = fastest(1, 1, float32) if not float32 else min(
            (r for r in (fastest(1, 1, True), fastest(1, 1, False)) if r), key=lambda r: r["seconds_per_step"],
            default=None)
        if one and ff_best:
            v = one["seconds_per_step"] / ff_best
            label = "any weight precision" if float32 else "float64 weights"
            t(f"1 molecule MD step, flow (fastest platform, {label}) within 5x of ff99SB-ILDN (fastest)",
              v, 5.0, v <= 5.0, f"{v:.1f}x ff99SB-ILDN ({one['evaluator']})")
    return out


# ----------------------------------------------------------------------------- output
def fmt_t(s):
    if s is None:
        return "-"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def write_markdown(path, res):
    m = res["machine"]
    L = res["limits"]
    lines = ["# CPU benchmark: the flow potential beside its peers", "",
             f"Machine: {m['cpu']} ({m['cores']} cores, AVX-512 {'yes' if m['avx512f'] else 'no'}), "
             f"{m['platform']}; date {m['date']}; commit {m['commit']}.",
             "Load average (1, 5, 15 min) at the start "
             + ", ".join(f"{v:.2f}" for v in res["load_average_at_start"]) + " and at the end "
             + ", ".join(f"{v:.2f}" for v in m["load_average"])
             + f" on {m['cores']} cores: above ~0 other work shared the cores, which inflates "
             "the two-thread times most.",
             f"Project environment: Python {m['python']}, OpenMM {m['versions']['openmm']}, "
             f"torch {m['versions']['torch']}, numpy {m['versions']['numpy']}; the C core's "
             f"OpenBLAS runs its {m.get('openblas_core', 'unknown')} kernels"
             + (f" (OPENBLAS_CORETYPE={m['env']['OPENBLAS_CORETYPE']})" if "OPENBLAS_CORETYPE" in m.get("env", {})
                else " (detected)") + ".",
             "Peers' environment: " + (", ".join(f"{k} {v}" for k, v in res["peers"].items()
                                                 if k in ("python", "torch", "openmm", "openmmtorch"))
                                        if res.get("peers") else "not run") + ".",
             f"Run: {res['settings']['rounds']} interleaved rounds, median of the per-round "
             f"seconds per step; blocks of about {res['settings']['block_seconds']} s; "
             f"{res['settings']['wall_seconds']:.0f} s in all. Threads: the CPU platform's "
             "Threads property, torch.set_num_threads for PyTorch (also inside TorchForce and "
             "PythonForce, whose platform runs with Threads 1).", "",
             f"Limits: peak {L['peak_assumption']}; numpy DGEMM on one thread "
             f"{L['dgemm_flops'] / 1e9:.1f} GFLOP/s; one-thread copy bandwidth "
             f"{L['copy_bandwidth_weights_sized'] / 1e9:.1f} GB/s for arrays the size of the "
             f"shipped flow's weights ({L['copy_bytes_weights_sized'] / 1e6:.1f} MB, cache) and "
             f"{L['copy_bandwidth_dram'] / 1e9:.1f} GB/s for 512 MiB arrays (memory).", ""]
    for model, desc in MODELS.items():
        c = res["flops"].get(model)
        if not c:
            continue
        lines += [f"## {desc}", "",
                  f"Per molecule and evaluation: {c['flops'] / 1e6:.2f} MFLOP "
                  f"({c['multiply_adds'] / 1e6:.3f} M multiply-adds forward + backward, "
                  f"{c['flops_other'] / 1e6:.3f} M other ops, {c['transcendentals'] / 1e3:.1f} k "
                  "transcendentals" + (f", {c['inverse_iterations_assumed']} root-finding "
                                       "iterations assumed" if model == "gen8" else "") +
                  f"); weights {c['weight_bytes'] / 1e6:.2f} MB streamed twice per step, "
                  f"activations {c['activation_bytes'] / 1e3:.0f} kB per molecule "
                  "(benchmarks/flop_count.py).", "",
                  "Time per molecule per step (per energy + forces evaluation for PyTorch "
                  "autograd). x CPU: time / SmoothFlowForce CPU with the same size and threads. "
                  "x ff: per molecule / ff99SB-ILDN's fastest one-molecule step. "
                  "peak, bw: fraction of the cores' assumed peak and of the one-thread "
                  "copy bandwidth (cache-sized) used by the counted flops and bytes.", "",
                  "| case | threads | " + " | ".join(f"n={n}" for n in res["settings"]["sizes"])
                  + " | x CPU (n=1 / n=max) | x ff (n=1) | peak (n=1 / max) | bw (n=1 / max) |",
                  "|---|---|" + "---|" * (len(res["settings"]["sizes"]) + 4)]
        rows = {}
        for r in res["results"]:
            if r["model"] == model:
                rows.setdefault((r["evaluator"], r["threads"]), {})[r["molecules"]] = r
        for (ev, th), by_n in rows.items():
            cells = []
            for n in res["settings"]["sizes"]:
                r = by_n.get(n)
                if r is None:
                    cells.append("-")
                elif "skipped" in r:
                    cells.append("skipped")
                else:
                    cells.append(fmt_t(r["seconds_per_molecule_step"]))
            ok = [by_n[n] for n in sorted(by_n) if "seconds_per_step" in by_n[n]]

            def pair(key, f):
                if not ok or key not in ok[0]:
                    return "-"
                return f"{f(ok[0][key])} / {f(ok[-1][key])}"
            xff = f"{ok[0]['ratio_to_ff99sb_per_molecule']:.0f}" if ok and ok[0]["molecules"] == 1 \
                and "ratio_to_ff99sb_per_molecule" in ok[0] else "-"
            lines.append(f"| {ev} | {th} | " + " | ".join(cells) + " | "
                         + pair("ratio_to_smoothflow_cpu", lambda v: f"{v:.2f}") + " | " + xff
                         + " | " + pair("fraction_of_peak", lambda v: f"{v:.1%}")
                         + " | " + pair("fraction_of_bandwidth", lambda v: f"{v:.1%}") + " |")
        lines.append("")
        ag = res["agreement"].get(model)
        if ag:
            def worst(key, f32):
                return max((v.get(key, 0) for k, v in ag.items() if (FLOAT32 in k) == f32), default=0)
            errs = [k for k, v in ag.items() if "error" in v]
            lines += [f"Agreement with PyTorch autograd at n={res['settings']['agreement_n']}: "
                      f"energies to {worst('energy_rel', False):.1e} relative, forces to "
                      f"{worst('forces_rel_to_max', False):.1e} of the largest force; with float32 weights "
                      f"(a slightly different potential, docs/c-core.md) {worst('energy_rel', True):.1e} and "
                      f"{worst('forces_rel_to_max', True):.1e}" + (f"; failed: {errs}" if errs else "") + ".",
                      ""]
    ff = [r for r in res["results"] if r["model"] == "ff99SB-ILDN"]
    if ff:
        lines += ["## ff99SB-ILDN with OBC, one alanine dipeptide", "",
                  "| platform | threads | time per step |", "|---|---|---|"]
        for r in ff:
            lines.append(f"| {r['evaluator']} | {r['threads']} | "
                         f"{fmt_t(r.get('seconds_per_step')) if 'skipped' not in r else 'skipped'} |")
        lines.append("")
    floor = [r for r in res["results"] if r["model"] == "platform floor"]
    if floor:
        lines += ["## The platforms' own cost per step (no force)", "",
                  "A VerletIntegrator step of 22 particles and no force: what every MD step on that "
                  "platform costs before any force is evaluated.", "",
                  "| platform | threads | time per step |", "|---|---|---|"]
        for r in floor:
            lines.append(f"| {r['evaluator']} | {r['threads']} | "
                         f"{fmt_t(r.get('seconds_per_step')) if 'skipped' not in r else 'skipped'} |")
        lines.append("")
    lines += ["## Targets (issue 19, shipped smooth flow)", "", "| target | value | met | by |",
              "|---|---|---|---|"]
    for t in res["targets"]:
        v = t["value"]
        vs = fmt_t(v) if t["limit"] < 1 else f"{v:.2f}"
        lines.append(f"| {t['target']} | {vs} | {'met' if t['met'] else 'missed'} | {t['by']} |")
    skipped = [r for r in res["results"] if "skipped" in r]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {r['id']}: {r['skipped']}" for r in skipped]
    lines.append("")
    Path(path).write_text("\n".join(lines))


def plot(path, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = [m for m in MODELS if any(r["model"] == m for r in res["results"])]
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.5), squeeze=False)
    ff_best = res.get("ff99sb_best_seconds")
    for ax, model in zip(axes[0], models):
        lines = {}
        for r in res["results"]:
            if r["model"] == model and "seconds_per_step" in r:
                lines.setdefault(f"{r['evaluator']}, {r['threads']} thr", []).append(
                    (r["molecules"], r["seconds_per_molecule_step"]))
        for label, pts in sorted(lines.items()):
            pts.sort()
            style = "-" if "SmoothFlowForce" in label else "--"
            ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], style, marker="o", label=label)
        if ff_best:
            ax.axhline(ff_best * 1e3, color="k", lw=0.8, ls=":", label="ff99SB-ILDN/OBC, 1 molecule")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("molecules")
        ax.set_ylabel("ms per molecule per step")
        ax.set_title(MODELS[model], fontsize=9)
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=6)
    m = res["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cores']} cores; {m['date']}; commit {m['commit']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- main
def peers_python(args):
    if args.peers_python:
        return args.peers_python
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "peers" / "setup_peers.sh"), "--quiet"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"setup_peers.sh failed: {res.stderr.strip()[-500:]}")
    return str(Path(res.stdout.strip().splitlines()[-1]) / "bin" / "python")


def warm_up(cases, block_seconds: float) -> list:
    """Warm each case up and size its timing block; returns the cases that did not fail.

    TorchScript optimizes its graph over the first runs (seconds for the flow's graph), so up
    to 3 single steps where they are cheap; the last sizes the block. A case that raises is
    marked skipped with the reason."""
    for c in cases:
        try:
            t1 = c.run(1)
            for _ in range(2):
                if t1 < 2.0:
                    t1 = c.run(1)
            c.steps = max(1, int(round(block_seconds / max(t1, 1e-9))))
        except Exception as e:
            c.skipped = f"failed: {type(e).__name__}: {e}"
    return [c for c in cases if not c.skipped]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,16,256,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block-seconds", type=float, default=0.25)
    ap.add_argument("--models", default="smooth,gen8")
    ap.add_argument("--no-peers", action="store_true", help="skip TorchForce and PythonForce")
    ap.add_argument("--peers-python", help="the peers' python (default: setup_peers.sh)")
    # openmm-torch 1.5 registers TorchForce's kernel for the Reference platform only
    ap.add_argument("--peers-platform", default="Reference")
    ap.add_argument("--peers-max-molecules", type=int, default=256,
                    help="larger peer cases are recorded as skipped (memory)")
    ap.add_argument("--float32-max-molecules", type=int, default=16,
                    help="time the float32 weight option up to this many molecules (it is for one molecule; "
                         "batches run dgemm on the rounded weights as doubles, as fast as float64)")
    ap.add_argument("--quick", action="store_true", help="sizes 1,16; 2 rounds (development)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu"))
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.block_seconds = "1,16", 2, 0.05
    sizes = [int(s) for s in args.sizes.split(",")]
    threads_list = [int(s) for s in args.threads.split(",")]
    models = args.models.split(",")
    start = time.perf_counter()
    load_start = os.getloadavg()

    from smoothflow_torch import load_model, model_to_bytes
    from smoothflow_torch.testing import random_positions
    from bench_energy_forces import generative_flow

    work = Path(tempfile.mkdtemp(prefix="smoothflow-bench-"))
    model_paths = {"smooth": SHIPPED, "gen8": work / "gen8.safetensors"}
    flows = {}
    if "gen8" in models:
        model_paths["gen8"].write_bytes(model_to_bytes(generative_flow()))
    for m in models:
        flows[m] = load_model(str(model_paths[m]))
    flops = {m: flop_count.count_file(model_paths[m]) for m in models}
    limits = probe_limits(flops.get("smooth", next(iter(flops.values())))["weight_bytes"])
    print(f"[bench] limits: {json.dumps(limits)}", flush=True)

    peers, peer_info = None, None
    if not args.no_peers:
        try:
            peers = Peers(peers_python(args), work)
            peer_info = peers.ask(op="info")
        except Exception as e:
            print(f"[bench] peers unavailable: {e}", flush=True)
            peer_info = {"error": str(e)}
            peers = None

    cases = []
    for m in models:
        for n in sizes:
            x = random_positions(flows[m], n, seed=100 + n).numpy()
            pos_path = work / f"{m}-{n}.npy"
            np.save(pos_path, x)
            mb = Path(model_paths[m]).read_bytes()
            cases += smoothflow_cases(m, mb, x, threads_list)
            if n <= args.float32_max_molecules:
                cases += smoothflow_cases(m, mb, x, threads_list, float32=True)
            cases += torch_cases(m, flows[m], x, threads_list)
            if peers and n > args.peers_max_molecules:
                for name in ("TorchForce (openmm-torch)", "PythonForce (PyTorch autograd)"):
                    for t in threads_list:
                        c = Case(m, f"{name} {args.peers_platform}", n, t, "MD step")
                        c.skipped = (f"more than --peers-max-molecules {args.peers_max_molecules}: "
                                     "at 4096 molecules the peers' process (TorchScript and "
                                     "eager autograd graphs of all its Contexts) grew past 15 GB "
                                     "and was killed for memory on this 24 GB machine")
                        cases.append(c)
            elif peers:
                cases += peer_cases(peers, m, model_paths[m], pos_path, n, threads_list,
                                    args.peers_platform, work)
            elif not args.no_peers:
                for name in ("TorchForce (openmm-torch)", "PythonForce (PyTorch autograd)"):
                    for t in threads_list:
                        c = Case(m, f"{name} {args.peers_platform}", n, t, "MD step")
                        c.skipped = f"peers' environment unavailable: {peer_info.get('error')}"
                        cases.append(c)
            print(f"[bench] built {m} n={n} ({time.perf_counter() - start:.0f} s)", flush=True)
    cases += forcefield_cases(threads_list)
    cases += floor_cases(threads_list)

    agree_n = 16 if 16 in sizes else sizes[0]
    agree = {m: agreement(cases, m, agree_n) for m in models}
    print(f"[bench] agreement: {json.dumps(agree)}", flush=True)

    live = [c for c in cases if not c.skipped]
    live = warm_up(live, args.block_seconds)
    print(f"[bench] warm-up done ({time.perf_counter() - start:.0f} s); {len(live)} cases",
          flush=True)
    for r in range(args.rounds):
        order = live[r % len(live):] + live[:r % len(live)]
        for c in order:
            if c.skipped:
                continue
            try:
                c.samples.append(c.run(c.steps) / c.steps)
            except Exception as e:   # a failed case (or a dead peers' process) is recorded
                c.skipped = f"failed in round {r + 1}: {type(e).__name__}: {e}"
        print(f"[bench] round {r + 1}/{args.rounds} ({time.perf_counter() - start:.0f} s)", flush=True)
    if peers:
        peers.close()
    torch.set_num_threads(threads_list[0])

    results = [summarize(c) for c in cases]
    ff_best = add_ratios_and_fractions(results, flops, limits)
    res = {"machine": machine(), "load_average_at_start": load_start, "peers": peer_info, "limits": limits, "flops": flops,
           "models": {m: MODELS[m] for m in models},
           "settings": {"sizes": sizes, "threads": threads_list, "rounds": args.rounds,
                        "block_seconds": args.block_seconds, "dt_ps": DT_PS,
                        "agreement_n": agree_n, "peers_platform": args.peers_platform,
                        "wall_seconds": time.perf_counter() - start},
           "agreement": agree, "ff99sb_best_seconds": ff_best, "results": results}
    res["targets"] = targets(results, flops, limits, ff_best) if "smooth" in models else []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), res)
    plot(out.parent / (out.name + "_scaling.png"), res)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
