"""The flow potential on OpenMM's device platforms (OpenCL, CUDA), beside the CPU platform and
ff99SB-ILDN on the same device: the CPU benchmark's harness (bench_cpu.py) extended to the GPU
platforms, one interleaved run.

Cases, for the shipped smooth alanine-dipeptide flow and the 8-layer generative flow at 1, 16,
256 and 4096 molecules (a System of n copies, one SmoothFlowForce over all of them):
  SmoothFlowForce on each device platform found (OpenCL, CUDA) in single, mixed and double
      precision (the Precision property), by each of its two paths (SMOOTHFLOW_DEVICE_PATH=fused:
      one launch, products as loops; =batched: one launch per stage, products by the platform's
      BLAS, CLBlast or cuBLAS): the table "Which path wins" is where `auto` should choose which
  SmoothFlowForce on the CPU platform (all cores) and, for one molecule, Reference: the best
      this machine does without the device
  ff99SB-ILDN/OBC, one alanine dipeptide, on each device platform (mixed) and on Reference
  openmm-torch's TorchForce on the device, when the peers' openmm-torch has a kernel there
      (openmm-torch 1.5 from PyPI registers its kernel for the Reference platform only, so on
      this machine these cases are recorded as skipped, with that reason)
The timed unit is VerletIntegrator.step(1) in a Python loop (one force evaluation per step);
each case's result is the median over rounds of its seconds per step (bench_cpu.py has the
interleaving rules). FLOPs and bytes per evaluation come from flop_count.py; each result is
reported as a fraction of the device's peak and memory bandwidth (the table DEVICES below, or
--peak-gflops / --bandwidth-gbs): on PoCL the device is this machine's CPU, and the numbers
are CPU numbers.

Writes <out>.json and <out>.md (default benchmarks/results/device_<platform>), with the machine,
device, date and commit.

Usage: python benchmarks/bench_device.py [--platforms OpenCL] [--sizes 1,16,256,4096] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import flop_count
from bench_cpu import DT_PS, MODELS, SHIPPED, Case, fmt_t, machine, stepper, summarize

ROOT = Path(__file__).resolve().parents[1]

# Peak double/single GFLOP/s and memory bandwidth (GB/s) by device name (substring match).
# Vendor datasheet numbers (SXM parts, no tensor cores), stated as assumptions.
DEVICES = {
    "H200": {"fp64": 34000.0, "fp32": 67000.0, "bandwidth": 4800.0, "source": "NVIDIA H200 SXM datasheet"},
    "H100": {"fp64": 34000.0, "fp32": 67000.0, "bandwidth": 3350.0, "source": "NVIDIA H100 SXM datasheet"},
    "A100": {"fp64": 9700.0, "fp32": 19500.0, "bandwidth": 2039.0, "source": "NVIDIA A100 SXM datasheet"},
}
# PoCL runs on this machine's CPU: 2.3 GHz x 2 FMA units x 8 doubles (AVX-512) x 2 flops per core.
POCL_PER_CORE = {"fp64": 73.6, "fp32": 147.2, "bandwidth": 27.4, "source": "this CPU (bench_cpu.py's peak "
                 "assumption; bandwidth: its one-thread copy of cache-sized arrays)"}


def device_context(system, positions, platform_name, precision, path=None):
    """A Context; `path` sets SMOOTHFLOW_DEVICE_PATH, which the kernel reads when it is created."""
    import openmm
    if path:
        os.environ["SMOOTHFLOW_DEVICE_PATH"] = path
    plat = openmm.Platform.getPlatformByName(platform_name)
    props = {}
    if platform_name in ("OpenCL", "CUDA"):
        props["Precision"] = precision
    elif platform_name == "CPU":
        props["Threads"] = str(os.cpu_count())
    ctx = openmm.Context(system, openmm.VerletIntegrator(DT_PS), plat, props)
    ctx.setPositions(positions)
    return ctx, ctx.getIntegrator()


def device_stepper(ctx, integ, x0):
    """bench_cpu's stepper, each block ending with a synchronization (see there)."""
    return stepper(ctx, integ, x0, sync=True)


def device_name(platform_name) -> str:
    import openmm
    try:
        system = openmm.System()
        system.addParticle(1.0)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform_name))
        plat = ctx.getPlatform()
        key = {"OpenCL": "DeviceName", "CUDA": "DeviceName"}.get(platform_name)
        name = plat.getPropertyValue(ctx, key) if key else platform_name
        if platform_name == "OpenCL":
            name += " (" + plat.getPropertyValue(ctx, "OpenCLPlatformName") + ")"
        return name
    except Exception as e:
        return f"unavailable: {e}"


def device_limits(name: str, args) -> dict:
    for key, spec in DEVICES.items():
        if key in name:
            out = dict(spec)
            break
    else:
        cores = os.cpu_count() or 1
        out = {k: v * cores for k, v in POCL_PER_CORE.items() if k != "source"}
        out["source"] = f"{cores} cores of " + POCL_PER_CORE["source"] + " (not a GPU: no known device matched)"
    if args.peak_gflops:
        out["fp64"] = out["fp32"] = args.peak_gflops
        out["source"] = "--peak-gflops"
    if args.bandwidth_gbs:
        out["bandwidth"] = args.bandwidth_gbs
    return out


def flow_system(model_bytes, n, N):
    import openmm
    from openmmsmoothflow import SmoothFlowForce
    system = openmm.System()
    for _ in range(n * N):
        system.addParticle(12.0)
    force = SmoothFlowForce.createFromBytes(model_bytes)
    force.setParticles(list(range(N)))
    for i in range(1, n):
        force.addMolecule(list(range(i * N, (i + 1) * N)))
    system.addForce(force)
    return system


def main():
    import openmm
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platforms", default=None, help="device platforms (default: OpenCL and CUDA where OpenMM has them)")
    ap.add_argument("--precisions", default="single,mixed,double")
    ap.add_argument("--paths", default="fused,batched", help="the device paths to time (SMOOTHFLOW_DEVICE_PATH)")
    ap.add_argument("--sizes", default="1,16,256,4096")
    ap.add_argument("--models", default="smooth,gen8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block-seconds", type=float, default=0.25)
    ap.add_argument("--peak-gflops", type=float, help="the device's peak GFLOP/s (overrides the table)")
    ap.add_argument("--bandwidth-gbs", type=float, help="the device's memory bandwidth in GB/s")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    platforms = args.platforms.split(",") if args.platforms else [p for p in ("CUDA", "OpenCL") if p in names]
    if not platforms:
        sys.exit("no device platform (OpenCL, CUDA) in this OpenMM: nothing to benchmark")
    sizes = [int(s) for s in args.sizes.split(",")]
    precisions = args.precisions.split(",")
    paths = args.paths.split(",")
    models = args.models.split(",")
    start, load_start = time.perf_counter(), os.getloadavg()

    from bench_energy_forces import generative_flow
    from smoothflow_torch import load_model, model_to_bytes
    from smoothflow_torch.testing import random_positions

    work = Path(tempfile.mkdtemp(prefix="smoothflow-bench-device-"))
    model_paths = {"smooth": SHIPPED, "gen8": work / "gen8.safetensors"}
    if "gen8" in models:
        model_paths["gen8"].write_bytes(model_to_bytes(generative_flow()))
    flows = {m: load_model(str(model_paths[m])) for m in models}
    flops = {m: flop_count.count_file(model_paths[m]) for m in models}
    devices = {p: device_name(p) for p in platforms}
    limits = {p: device_limits(devices[p], args) for p in platforms}

    cases = []
    for m in models:
        mb = Path(model_paths[m]).read_bytes()
        for n in sizes:
            x = random_positions(flows[m], n, seed=100 + n).numpy()
            x0 = x.reshape(-1, 3)
            N = x.shape[1]
            for p in platforms:
                for prec in precisions:
                    for path in paths:
                        run, ev = device_stepper(*device_context(flow_system(mb, n, N), x0, p, prec, path), x0)
                        cases.append(Case(m, f"SmoothFlowForce {p} {prec} {path}", n, 1, "MD step", run, ev))
                c = Case(m, f"TorchForce (openmm-torch) {p}", n, 1, "MD step")
                c.skipped = ("openmm-torch 1.5 from PyPI registers TorchForce's kernel for the Reference platform "
                             "only (bench_cpu.py times it there)")
                cases.append(c)
            run, ev = device_stepper(*device_context(flow_system(mb, n, N), x0, "CPU", None), x0)
            cases.append(Case(m, "SmoothFlowForce CPU (all cores)", n, os.cpu_count(), "MD step", run, ev))
            if n == 1:
                run, ev = device_stepper(*device_context(flow_system(mb, n, N), x0, "Reference", None), x0)
                cases.append(Case(m, "SmoothFlowForce Reference", n, 1, "MD step", run, ev))
            print(f"[bench] built {m} n={n} ({time.perf_counter() - start:.0f} s)", flush=True)
    from alanine_dipeptide import forcefield, molecule
    xff = np.asarray(molecule.standard_positions())
    for p in platforms + ["Reference"]:
        prec = "mixed" if p in platforms else None
        run, ev = device_stepper(*device_context(forcefield.system("obc"), xff, p, prec), xff)
        cases.append(Case("ff99SB-ILDN", f"ff99SB-ILDN/OBC {p}" + (f" {prec}" if prec else ""), 1, 1, "MD step",
                          run, ev))

    # Agreement with the Reference platform at the second size (energies, forces).
    agree = {}
    for m in models:
        n = sizes[1] if len(sizes) > 1 else sizes[0]
        x = random_positions(flows[m], n, seed=100 + n).numpy().reshape(-1, 3)
        ctx, _ = device_context(flow_system(Path(model_paths[m]).read_bytes(), n, x.shape[0] // n), x, "Reference",
                                None)
        st = ctx.getState(getEnergy=True, getForces=True)
        e0, f0 = st.getPotentialEnergy()._value, st.getForces(asNumpy=True)._value
        del ctx
        for c in cases:
            if c.model == m and c.n == n and c.evaluate and not c.skipped:
                e, f = c.evaluate()
                agree[c.id] = {"energy_rel": abs(e - e0) / abs(e0),
                               "forces_rel_to_max": float(np.abs(f - f0).max() / np.abs(f0).max())}
    live = [c for c in cases if not c.skipped]
    for c in live:
        try:
            t1 = c.run(1)
            t1 = c.run(1)
            c.steps = max(1, int(round(args.block_seconds / max(t1, 1e-9))))
        except Exception as e:
            c.skipped = f"failed: {type(e).__name__}: {e}"
    live = [c for c in live if not c.skipped]
    print(f"[bench] warm-up done ({time.perf_counter() - start:.0f} s); {len(live)} cases", flush=True)
    for r in range(args.rounds):
        order = live[r % len(live):] + live[:r % len(live)]
        for c in order:
            if not c.skipped:
                try:
                    c.samples.append(c.run(c.steps) / c.steps)
                except Exception as e:
                    c.skipped = f"failed in round {r + 1}: {type(e).__name__}: {e}"
        print(f"[bench] round {r + 1}/{args.rounds} ({time.perf_counter() - start:.0f} s)", flush=True)

    results = [summarize(c) for c in cases]
    ff = {r["evaluator"]: r["seconds_per_step"] for r in results if r["model"] == "ff99SB-ILDN" and "seconds_per_step" in r}
    for r in results:
        if "seconds_per_step" not in r or r["model"] not in flops:
            continue
        p = next((q for q in platforms if f" {q} " in r["evaluator"] + " "), None)
        if p is None:
            continue
        lim, c = limits[p], flops[r["model"]]
        tm = r["seconds_per_molecule_step"]
        double = " double" in r["evaluator"]
        peak = lim["fp64"] if double else lim["fp32"]
        r["fraction_of_peak"] = c["flops"] / tm / (peak * 1e9)
        b = flop_count.bytes_per_molecule(c, r["molecules"], 8 if double else 4)
        r["fraction_of_bandwidth"] = b / tm / (lim["bandwidth"] * 1e9)
        # the roofline bound: the slower of compute and memory at this size
        r["fraction_of_roofline"] = max(c["flops"] / (peak * 1e9), b / (lim["bandwidth"] * 1e9)) / tm
        ffp = ff.get(f"ff99SB-ILDN/OBC {p} mixed")
        if ffp:
            r["ratio_to_ff99sb_same_device"] = r["seconds_per_step"] / ffp if r["molecules"] == 1 else None
    res = {"machine": machine(), "load_average_at_start": load_start, "devices": devices, "limits": limits,
           "flops": flops, "models": {m: MODELS[m] for m in models},
           "settings": {"platforms": platforms, "precisions": precisions, "paths": paths, "sizes": sizes,
                        "rounds": args.rounds,
                        "block_seconds": args.block_seconds, "wall_seconds": time.perf_counter() - start},
           "agreement_with_reference": agree, "results": results}
    res["targets"] = gpu_targets(res, platforms)
    out = Path(args.out or ROOT / "benchmarks" / "results" / ("device_" + "_".join(p.lower() for p in platforms)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), res)
    print(out.with_suffix(".md").read_text())


def gpu_targets(res, platforms):
    """Issue 20's GPU targets, judged only where the device is a GPU (a known device of DEVICES)."""
    out = []
    for p in platforms:
        is_gpu = any(k in res["devices"][p] for k in DEVICES)
        note = "" if is_gpu else " (not judged: the device is this machine's CPU through PoCL)"
        one = [r for r in res["results"] if r["model"] == "smooth" and r["molecules"] == 1 and "seconds_per_step" in r
               and r["evaluator"].startswith(f"SmoothFlowForce {p} ")]
        if one:
            best = min(one, key=lambda r: r["seconds_per_step"])
            v = best["seconds_per_step"]
            out.append({"target": f"{p}: one molecule <= 50 us per step" + note, "value": v, "limit": 50e-6,
                        "met": bool(is_gpu and v <= 50e-6), "by": f"{v / 50e-6:.1f}x the limit ({best['evaluator']})"})
        big = [r for r in res["results"] if r["model"] == "smooth" and r["molecules"] == max(res["settings"]["sizes"])
               and "fraction_of_roofline" in r and r["evaluator"].startswith(f"SmoothFlowForce {p} ")]
        if big:
            best = max(big, key=lambda r: r["fraction_of_roofline"])
            v = best["fraction_of_roofline"]
            out.append({"target": f"{p}: {best['molecules']} molecules >= 50 % of the roofline bound" + note,
                        "value": v, "limit": 0.5, "met": bool(is_gpu and v >= 0.5),
                        "by": f"{v:.1%} ({best['evaluator']})"})
        out.append({"target": f"{p}: >= 10x better than TorchForce on the same device", "value": None, "limit": 10,
                    "met": False, "by": "not measurable: openmm-torch 1.5 from PyPI has no kernel for this platform"})
    return out


MIN_BATCHED_MOLECULES = 16  # kMinBatchedMolecules of platforms/common/src/CommonSmoothFlowKernels.h


def path_comparison(res):
    """{'model, platform precision': {n: batched seconds / fused seconds}} where both were timed."""
    times = {}
    for r in res["results"]:
        parts = r["evaluator"].split()
        if len(parts) == 4 and parts[0] == "SmoothFlowForce" and "seconds_per_step" in r:
            times.setdefault((r["model"], parts[1], parts[2]), {}).setdefault(r["molecules"], {})[parts[3]] = \
                r["seconds_per_step"]
    out = {}
    for (model, p, prec), by_n in times.items():
        ratios = {n: t["batched"] / t["fused"] for n, t in by_n.items() if "batched" in t and "fused" in t}
        if ratios:
            out[f"{model}, {p} {prec}"] = ratios
    return out


def write_markdown(path, res):
    m = res["machine"]
    lines = ["# Device benchmark: the flow potential on OpenMM's GPU platforms", "",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['platform']}; date {m['date']}; commit {m['commit']}; "
             f"OpenMM {m['versions']['openmm']}.",
             "Devices: " + "; ".join(f"{p}: {d}" for p, d in res["devices"].items()) + ".",
             "Limits assumed: " + "; ".join(f"{p}: {v['fp64']:.0f} / {v['fp32']:.0f} GFLOP/s (double / single), "
                                            f"{v['bandwidth']:.0f} GB/s ({v['source']})"
                                            for p, v in res["limits"].items()) + ".",
             "Load average at the start " + ", ".join(f"{v:.2f}" for v in res["load_average_at_start"])
             + " and at the end " + ", ".join(f"{v:.2f}" for v in m["load_average"]) + ".",
             f"Run: {res['settings']['rounds']} interleaved rounds, median seconds per step, blocks of about "
             f"{res['settings']['block_seconds']} s; {res['settings']['wall_seconds']:.0f} s in all.", ""]
    for model, desc in MODELS.items():
        c = res["flops"].get(model)
        if not c:
            continue
        lines += [f"## {desc}", "",
                  f"Per molecule and evaluation: {c['flops'] / 1e6:.2f} MFLOP, weights {c['weight_bytes'] / 1e6:.2f} MB "
                  "streamed twice per step (benchmarks/flop_count.py). Time per molecule per step; "
                  "peak / bw / roofline: fraction of the device's assumed peak (double or single), of its "
                  "bandwidth, and of the roofline bound (the slower of the two) at the largest size.", "",
                  "| case | " + " | ".join(f"n={n}" for n in res["settings"]["sizes"])
                  + " | peak / bw / roofline (n=max) |",
                  "|---|" + "---|" * (len(res["settings"]["sizes"]) + 1)]
        rows = {}
        for r in res["results"]:
            if r["model"] == model:
                rows.setdefault(r["evaluator"], {})[r["molecules"]] = r
        for ev, by_n in rows.items():
            cells = []
            for n in res["settings"]["sizes"]:
                r = by_n.get(n)
                cells.append("-" if r is None else ("skipped" if "skipped" in r else fmt_t(r["seconds_per_molecule_step"])))
            big = by_n.get(max(res["settings"]["sizes"]))
            frac = (f"{big['fraction_of_peak']:.1%} / {big['fraction_of_bandwidth']:.1%} / "
                    f"{big['fraction_of_roofline']:.1%}") if big and "fraction_of_peak" in big else "-"
            lines.append(f"| {ev} | " + " | ".join(cells) + f" | {frac} |")
        lines.append("")
    wins = path_comparison(res)
    if wins:
        lines += ["## Which path wins", "",
                  "Batched time over fused time per step (below 1: the batched path is faster). `auto` "
                  f"takes the fused path below {MIN_BATCHED_MOLECULES} molecules without a trial, and above "
                  "times both at the first force evaluation.", "",
                  "| model, platform, precision | " + " | ".join(f"n={n}" for n in res["settings"]["sizes"]) + " |",
                  "|---|" + "---|" * len(res["settings"]["sizes"])]
        for key, by_n in wins.items():
            lines.append(f"| {key} | " + " | ".join(f"{by_n[n]:.2f}" if n in by_n else "-"
                                                    for n in res["settings"]["sizes"]) + " |")
        lines.append("")
    ag = res["agreement_with_reference"]
    if ag:
        lines += ["## Agreement with the Reference platform", "", "| case | energy (relative) | forces (of the largest) |",
                  "|---|---|---|"]
        for k, v in ag.items():
            lines.append(f"| {k} | {v['energy_rel']:.1e} | {v['forces_rel_to_max']:.1e} |")
        lines.append("")
    ff = [r for r in res["results"] if r["model"] == "ff99SB-ILDN"]
    if ff:
        lines += ["## ff99SB-ILDN with OBC, one alanine dipeptide", "", "| platform | time per step |", "|---|---|"]
        for r in ff:
            lines.append(f"| {r['evaluator']} | {fmt_t(r.get('seconds_per_step')) if 'skipped' not in r else 'skipped'} |")
        lines.append("")
    lines += ["## Targets (issue 20, shipped smooth flow)", "", "| target | value | met | by |", "|---|---|---|---|"]
    for t in res["targets"]:
        v = t["value"]
        vs = "-" if v is None else (fmt_t(v) if t["limit"] < 1e-3 else f"{v:.3g}")
        lines.append(f"| {t['target']} | {vs} | {'met' if t['met'] else 'missed'} | {t['by']} |")
    skipped = [r for r in res["results"] if "skipped" in r]
    if skipped:
        lines += ["", "## Skipped", ""] + sorted({f"- {r['evaluator']}: {r['skipped']}" for r in skipped})
    lines.append("")
    Path(path).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
