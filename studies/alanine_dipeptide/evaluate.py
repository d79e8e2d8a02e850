"""Evaluate trained alanine dipeptide flows against ff99SB-ILDN (issue part 6).

For each model file: NLL on the held-out frames (nats per molecule, over Cartesian
coordinates modulo rigid motion), force RMSE against the stored reference forces (both
Boltzmann-weighted means: the frames come from phi-biased chains, see phi_bias.py), the
sampling efficiency ESS/n of flow samples reweighted to the force field, free energies along
phi and psi and the Ramachandran plot against the reference MD, and the KL divergence of the
phi/psi histograms.  Writes <out>/evaluation.json, PNG plots, and results/evaluation.md (beside this module).

Usage: python -m alanine_dipeptide.evaluate runs/smooth/model.safetensors runs/spline/model.safetensors ...
       [--samples 100000] [--out studies/alanine_dipeptide/results/evaluation]
"""
import argparse
import datetime
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch
from smoothflow_torch import load_model
from tqdm import tqdm

from . import data, forcefield, metrics, molecule, results_report

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models" / "alanine_dipeptide"
RESULTS = Path(__file__).resolve().parent / "results"   # the study's current results
KT = forcefield.KT


class ForceFieldEnergy:
    """ff99SB-ILDN energies of many configurations (Reference platform)."""

    def __init__(self, setting: str = "obc"):
        self.context = openmm.Context(forcefield.system(setting), openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName("Reference"))

    def __call__(self, positions: np.ndarray, progress: str = "") -> np.ndarray:
        out = np.empty(len(positions))
        for i, x in enumerate(tqdm(positions, desc=progress, disable=not progress, unit="conf", mininterval=2)):
            self.context.setPositions(x)
            out[i] = self.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
                unit.kilojoule_per_mole)
        return out


def held_out_metrics(flow, frames: data.Frames, batch: int = 512) -> dict:
    """Weighted mean NLL and force RMSE over held-out frames (weights: data.Frames.weights)."""
    nll, sq, total = 0.0, 0.0, 0.0
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames.positions[i:i + batch])
        w = frames.weights[i:i + batch]
        e, f = flow.energy_and_forces(x)
        nll += float(np.sum(w * (-flow.log_prob(x)).detach().numpy()))
        sq += float(np.sum(w * ((f.detach().numpy() - frames.forces[i:i + batch]) ** 2).sum((1, 2))))
        total += float(w.sum())
    return {"nll_nats": nll / total, "force_rmse_kj_mol_nm": float(np.sqrt(sq / (total * molecule.N_ATOMS * 3)))}


def _scan(u0: torch.Tensor, d: int, values: torch.Tensor) -> torch.Tensor:
    """Copies of the point ``u0`` with coordinate ``d`` set to each of ``values``."""
    batch = u0.repeat(len(values), 1)
    batch[:, d] = values
    return batch


def well_depths(flow, frames: data.Frames, n_frames: int = 10, grid: int = 97) -> dict:
    """Depth (kJ/mol, metrics.well_depth) of the flow potential's well along each bond and angle,
    scanning one normalized coordinate u over [0.02, 0.98] with the others held at a held-out
    frame; the smallest depth over ``n_frames`` evenly spaced frames per coordinate.  A flow's
    well is finite (docs/design.md, "Well depth"): a bond that gains more energy than this in MD
    leaves the well."""
    idx = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
    scan = torch.linspace(0.02, 0.98, grid, dtype=flow.dtype)
    depths = np.full(flow.n_interval, np.inf)
    with torch.no_grad():
        for u in flow.internal_coordinates(torch.from_numpy(frames.positions[idx])):
            for d in range(flow.n_interval):
                energy = -flow.kT * flow.log_prob_u(_scan(u, d, scan)).numpy()
                depths[d] = min(depths[d], metrics.well_depth(energy))
    n_bonds = molecule.N_ATOMS - 1
    worst = int(np.argmin(depths))
    return {"well_depth_bonds_kj_mol": float(depths[:n_bonds].min()),
            "well_depth_angles_kj_mol": float(depths[n_bonds:].min()),
            "well_depth_median_kj_mol": float(np.median(depths)),
            "shallowest_well": flow.describe_dimension(worst)}


def stiffness_ratios(flow, frames: data.Frames, ff: "ForceFieldEnergy", n_frames: int = 4) -> dict:
    """Curvature of the flow potential along each bond and angle (the others held at a held-out
    frame) over the force field's, from quadratic fits over +-0.06 in u around the frame's value;
    medians over frames and coordinates.  1 is right; below 1 the flow's conditional
    density of that coordinate is too wide, which costs sampling efficiency."""
    idx = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
    ratios = np.empty((n_frames, flow.n_interval))
    with torch.no_grad():
        for f, u in enumerate(flow.internal_coordinates(torch.from_numpy(frames.positions[idx]))):
            for d in range(flow.n_interval):
                near = u[d] + torch.linspace(-0.06, 0.06, 13, dtype=flow.dtype)
                x = flow.to_cartesian(_scan(u, d, near))
                e_flow, e_ff = flow.energy(x).numpy(), ff(x.numpy())
                h = near.numpy()
                ratios[f, d] = np.polyfit(h, e_flow, 2)[0] / np.polyfit(h, e_ff, 2)[0]
    n_bonds = molecule.N_ATOMS - 1
    return {"stiffness_ratio_bonds": float(np.median(ratios[:, :n_bonds])),
            "stiffness_ratio_angles": float(np.median(ratios[:, n_bonds:]))}


def sample_flow(flow, n: int, seed: int, batch: int = 5000):
    """n samples (positions, log q) from the flow, in batches."""
    gen = torch.Generator().manual_seed(seed)
    xs, lqs = [], []
    with torch.no_grad():
        for i in tqdm(range(0, n, batch), desc="sampling the flow", unit="batch"):
            x, lq = flow.sample(min(batch, n - i), generator=gen, return_log_prob=True)
            xs.append(x.numpy())
            lqs.append(lq.numpy())
    return np.concatenate(xs), np.concatenate(lqs)


def model_label(path: Path, kind: str) -> str:
    """A shipped model is named by its kind; one from a subfolder (v1/, stage1/) or a run by
    kind and folder."""
    return kind if Path(path).parent.resolve() == MODELS.resolve() else f"{kind} ({Path(path).parent.name})"


def evaluate_model(path: Path, test: data.Frames, reference_phi_psi, ff: ForceFieldEnergy, n_samples: int,
                   seed: int, bins: int) -> dict:
    flow = load_model(path)
    kind = flow.config()["layers"][0]["transform"]
    result = {"model": str(path), "transform": kind, "label": model_label(path, kind)}
    result.update(held_out_metrics(flow, test))
    result.update(well_depths(flow, test))
    result.update(stiffness_ratios(flow, test, ff))
    x, log_q = sample_flow(flow, n_samples, seed)
    u = ff(x, progress="force-field energies") / KT
    log_w = metrics.log_weights(u, log_q)
    result["sampling_efficiency"] = metrics.sampling_efficiency(log_w)
    result["sampling_efficiency_95"] = list(metrics.sampling_efficiency_interval(log_w))
    phi, psi = data.backbone_dihedrals(x)
    w = np.exp(log_w - log_w[np.isfinite(log_w)].max())
    w[~np.isfinite(w)] = 0
    ref_phi, ref_psi, ref_w = reference_phi_psi
    h_ref = metrics.ramachandran_histogram(ref_phi, ref_psi, bins, weights=ref_w)
    h_flow = metrics.ramachandran_histogram(phi, psi, bins)
    h_rew = metrics.ramachandran_histogram(phi, psi, bins, weights=w)
    result["kl_phi_psi_flow"] = metrics.histogram_kl(h_ref, h_flow)
    result["kl_phi_psi_reweighted"] = metrics.histogram_kl(h_ref, h_rew)
    result["phi_positive_fraction_flow"] = float(np.mean(phi > 0))
    result["phi_positive_fraction_reweighted"] = float(np.sum(w * (phi > 0)) / np.sum(w))
    result["_angles"] = (phi, psi, w)
    return result


def public_fields(result: dict) -> dict:
    """The result without its ``_``-prefixed working arrays (what JSON and the cache keep)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def _cache_key(path: Path, n_samples: int, seed: int, bins: int, setting: str) -> str:
    """The model file's bytes, the sampling settings and the code that computes the numbers
    (this file and metrics.py; not results_report.py, so a change to the report's layout
    reuses them): a changed metric or model never reuses an old result."""
    h = hashlib.sha256(Path(path).read_bytes())
    for src in (Path(__file__), Path(metrics.__file__)):
        h.update(src.read_bytes())
    h.update(json.dumps([n_samples, seed, bins, setting]).encode())
    return h.hexdigest()[:32]


def evaluate_cached(path: Path, cache: Path, setting: str, *args) -> dict:
    """evaluate_model, reusing an earlier result for the same model file and settings
    (``cache``: a folder outside the repository's tracked files, e.g. runs/)."""
    n_samples, seed, bins = args[-3:]
    key = _cache_key(path, n_samples, seed, bins, setting)
    hit = cache / f"{key}.npz"
    if hit.exists():
        d = np.load(hit)
        result = json.loads(str(d["result"]))
        label = model_label(path, result["transform"])
        result.update(model=str(path), label=label, _angles=(d["phi"], d["psi"], d["w"]))
        print(f"{path}: reusing the evaluation in {hit}")
        return result
    result = evaluate_model(path, *args)
    cache.mkdir(parents=True, exist_ok=True)
    phi, psi, w = result["_angles"]
    np.savez(hit, result=json.dumps(public_fields(result)), phi=phi, psi=psi, w=w)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--setting", default="obc")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bins", type=int, default=60)
    ap.add_argument("--out", default=str(RESULTS / "evaluation"))
    ap.add_argument("--report", default=str(RESULTS / "evaluation.md"))
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. the models' training state)")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "evaluation_cache"),
                    help="reuse results of a model file evaluated before with the same settings and code "
                         "('' to always recompute)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = data.load(args.setting, "test")
    every = data.load(args.setting, "all")
    reference = (*data.backbone_dihedrals(every.positions), every.weights)
    ff = ForceFieldEnergy(args.setting)
    if args.cache:
        results = [evaluate_cached(Path(m), Path(args.cache), args.setting, test, reference, ff, args.samples,
                                   args.seed, args.bins) for m in args.models]
    else:
        results = [evaluate_model(Path(m), test, reference, ff, args.samples, args.seed, args.bins)
                   for m in args.models]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.date.today().isoformat(), "commit": commit, "machine": "2-core x86-64 (CI class)",
            "samples": args.samples, "test_frames": len(test), "setting": args.setting,
            "reference_phi_positive": float(np.average(reference[0] > 0, weights=reference[2])),
            "note": args.note}
    results_report.plots(results, reference, out, args.bins)
    clean = [public_fields(r) for r in results]
    (out / "evaluation.json").write_text(json.dumps({"meta": meta, "results": clean}, indent=2) + "\n")
    results_report.write_report(results, meta, out, Path(args.report))
    print(json.dumps(clean, indent=2))


if __name__ == "__main__":
    main()
