"""Energy + forces of one molecule: the C core against PyTorch autograd of the same flow.

An alanine-dipeptide-sized model (N = 22 atoms, D = 60, 19 circular dims), 8 coupling
layers, conditioners 2 x 128 SiLU, K = 8 components, random weights, is exported once by
the trainer's exporter and evaluated on the same configurations by
  - the C core (cffi binding, one molecule per call, and a batch of 64 in one call),
  - PyTorch autograd (float64, one molecule per call, and a batch of 64),
  - an OpenMM Context on the Reference platform (when the plugin is installed).
Writes benchmarks/results/energy_forces.json and .md with machine, date and commit.

Usage: python benchmarks/bench_energy_forces.py [--repeats 200] [--threads 1]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from smoothflow_core import CoreModel
from smoothflow_torch import model_to_bytes, provenance
from smoothflow_torch.timing import median_seconds
from smoothflow_torch.testing import random_flow, random_positions

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    return provenance.machine(ROOT, {"torch": torch.__version__})


def timed(fn, repeats: int) -> float:
    """Median seconds per call over `repeats` calls, after a warm-up of a twentieth of them (at least 3)."""
    return median_seconds(fn, repeats, warmup=max(3, repeats // 20))


def openmm_reference(model_bytes: bytes, x: np.ndarray):
    try:
        import openmm
        from openmmsmoothflow import SmoothFlowForce
    except ImportError:
        return None
    n = x.shape[0]
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    force = SmoothFlowForce.createFromBytes(model_bytes)
    force.setParticles(list(range(n)))
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(x)
    return lambda: ctx.getState(getEnergy=True, getForces=True)


def generative_flow():
    """The 8-layer generative flow of this benchmark (also benchmarks/bench_cpu.py's):
    N = 22, D = 60, 8 generative smooth layers, MLP 2 x 128 SiLU, K = 8, seeded weights."""
    return random_flow(n_atoms=22, n_layers=8, n_components=8, hidden=(128, 128), activation="silu",
                       directions="generative", seed=1, weight_scale=0.5, steep=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the C core is single-threaded)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "energy_forces"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    flow = generative_flow()
    model_bytes = model_to_bytes(flow)
    xs = random_positions(flow, args.batch, seed=2)
    core = CoreModel.from_bytes(model_bytes, max_batch=args.batch)
    x1 = xs[:1]
    x1_np, xs_np = x1.numpy(), xs.numpy()

    # The two must agree before their speeds mean anything.
    e_t, f_t = flow.energy_and_forces(xs)
    e_c, f_c = core.evaluate(xs_np)
    max_de = float(np.abs(e_c - e_t.detach().numpy()).max())
    max_df = float(np.abs(f_c - f_t.detach().numpy()).max())

    rows = {}
    rows["C core, 1 molecule"] = timed(lambda: core.evaluate(x1_np), args.repeats)
    rows[f"C core, batch of {args.batch} (per molecule)"] = timed(lambda: core.evaluate(xs_np),
                                                                   max(5, args.repeats // 10)) / args.batch
    rows["PyTorch autograd, 1 molecule"] = timed(lambda: flow.energy_and_forces(x1), max(10, args.repeats // 10))
    rows[f"PyTorch autograd, batch of {args.batch} (per molecule)"] = timed(
        lambda: flow.energy_and_forces(xs), max(3, args.repeats // 40)) / args.batch
    omm = openmm_reference(model_bytes, x1_np[0])
    if omm is not None:
        rows["OpenMM Context, Reference platform, 1 molecule"] = timed(omm, args.repeats)

    base = rows["C core, 1 molecule"]
    result = {"machine": machine(),
              "model": {"n_atoms": 22, "D": 60, "circular_dims": 19, "layers": 8, "hidden": [128, 128],
                        "activation": "silu", "K": 8, "directions": "generative (root finding in MD)"},
              "agreement": {"max_abs_energy_diff_kJ_mol": max_de, "max_abs_force_diff_kJ_mol_nm": max_df},
              "torch_threads": args.threads,
              "seconds_per_evaluation": rows,
              "speedup_of_c_core_single_vs_torch_single": rows["PyTorch autograd, 1 molecule"] / base}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = ["# Energy + forces, one alanine-dipeptide-sized flow", "",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['platform']}; Python {m['python']}, "
             f"torch {m['versions']['torch']} ({args.threads} thread); date {m['date']}; commit {m['commit']}.", "",
             "Model: N = 22, D = 60 (19 circular), 8 generative smooth coupling layers, MLP 2 x 128 SiLU, "
             "K = 8. Median of repeated calls, energy and forces together.", "",
             "| evaluator | time per molecule | vs C core (1 molecule) |", "|---|---|---|"]
    for name, sec in rows.items():
        lines.append(f"| {name} | {sec * 1e3:.3f} ms | {sec / base:.2f} x |")
    lines += ["", f"Agreement on {args.batch} configurations: max |dE| = {max_de:.2e} kJ/mol, "
              f"max |dF| = {max_df:.2e} kJ/mol/nm.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
