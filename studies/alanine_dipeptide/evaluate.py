"""Evaluate trained alanine dipeptide flows against ff99SB-ILDN (issue part 6).

For each model file: NLL on the held-out frames (nats per molecule, over Cartesian
coordinates modulo rigid motion), force RMSE against the stored reference forces (both
Boltzmann-weighted means: the frames come from phi-biased chains, see phi_bias.py), the
sampling efficiency ESS/n of flow samples reweighted to the force field, free energies along
phi and psi and the Ramachandran plot against the reference MD, and the KL divergence of the
phi/psi histograms.  Writes <out>/evaluation.json, PNG plots, and results/evaluation.md (beside this module).

With --seeds S it also draws S independent sets of --samples samples per flow (seeds --seed,
--seed + 1, ...), each saved to --sets as soon as it is complete (a set already there is reused,
so an interrupted run resumes), and reports the importance weights pooled over them
(weights.py): pooled ESS/n and its spread over the sets, the Pareto k-hat, the largest weights
with the phi/psi and energy of their samples, and the reweighted phi > 0 fraction with its
interval beside the MD reference.  --weights-only computes just that (no generated data set
needed: the MD reference comes from the shipped reference summary) and writes
results/importance_weights.md.

Usage: python -m alanine_dipeptide.evaluate runs/smooth/model.safetensors runs/spline/model.safetensors ...
       [--samples 100000] [--out studies/alanine_dipeptide/results/evaluation]
       python -m alanine_dipeptide.evaluate models/alanine_dipeptide/*.safetensors --weights-only --seeds 10
"""
import argparse
import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch
from smoothflow_torch import load_model
from smoothflow_torch.pipeline.evaluate import held_out_metrics as pipeline_held_out_metrics
from smoothflow_torch.pipeline.evaluate import sample_flow as pipeline_sample_flow
from tqdm import tqdm

from . import data, forcefield, metrics, molecule, results_report, weights

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
    """Weighted mean NLL and force RMSE over held-out frames (weights: data.Frames.weights), the
    pipeline's (smoothflow_torch.pipeline.evaluate.held_out_metrics: also the number of frames
    and of those outside the flow's bond bounds, which are counted, not averaged)."""
    return pipeline_held_out_metrics(flow, frames, batch)


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
    """n samples (positions, log q) from the flow, in batches (the pipeline's, with a progress bar)."""
    return pipeline_sample_flow(flow, n, seed, batch, progress=True)


def _model_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def sample_set_path(sets: Path, path: Path, setting: str, n_samples: int, seed: int) -> Path:
    """Where one set of samples of a model is kept: keyed by the model file's bytes, the
    setting, the sample count and the seed (not by the code: a set is raw samples and energies,
    meant to outlive edits to the statistics; remove the folder if the sampler changes)."""
    return Path(sets) / f"{Path(path).stem}-{_model_digest(path)}" / f"{setting}-n{n_samples}-seed{seed}.npz"


def sample_set(flow, path: Path, ff: "ForceFieldEnergy", setting: str, n_samples: int, seed: int, sets: Path,
               batch: int = 5000) -> dict:
    """One set of ``n_samples`` flow samples with seed ``seed``: log q (nats), the force-field
    energy (kJ/mol), phi and psi (radians).  Loaded from ``sets`` when it was saved before;
    otherwise computed and saved atomically (written to a temporary file, then renamed), so an
    interrupted run leaves either a complete set or none."""
    f = sample_set_path(sets, path, setting, n_samples, seed)
    if f.exists():
        with np.load(f) as d:
            got = {k: d[k] for k in ("log_q", "energy", "phi", "psi")}
        if got["log_q"].shape != (n_samples,):
            raise ValueError(f"{f} holds {got['log_q'].shape} samples, not ({n_samples},): remove it")
        print(f"{path}: reusing sample set {f}")
        return got
    x, log_q = sample_flow(flow, n_samples, seed, batch)
    energy = ff(x, progress=f"force-field energies (seed {seed})")
    phi, psi = data.backbone_dihedrals(x)
    got = {"log_q": log_q, "energy": energy, "phi": phi, "psi": psi}
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez(fh, **got)
    os.replace(tmp, f)
    return got


def pooled_weight_statistics(path: Path, ff: "ForceFieldEnergy", setting: str, n_samples: int, seeds,
                             sets: Path, reference_phi_positive: float, count: int = 10,
                             batch: int = 5000) -> dict:
    """The importance weights of ``len(seeds)`` independent sample sets of one flow against the
    force field, pooled (weights.summary), with the phi/psi (degrees) and force-field energy
    (kJ/mol) of the ``count`` heaviest samples and the MD reference phi > 0 fraction."""
    flow = None
    loaded = []
    for seed in seeds:
        if flow is None and not sample_set_path(sets, path, setting, n_samples, seed).exists():
            flow = load_model(path)
        loaded.append(sample_set(flow, path, ff, setting, n_samples, seed, sets, batch))
    log_w = [metrics.log_weights(s["energy"] / KT, s["log_q"]) for s in loaded]
    stats = weights.summary(log_w, [s["phi"] > 0 for s in loaded], count=count)
    for top in stats["largest"]:
        s = loaded[top["set"]]
        i = top["index"]
        top.update(seed=int(seeds[top["set"]]), phi_deg=float(np.degrees(s["phi"][i])),
                   psi_deg=float(np.degrees(s["psi"][i])), energy_kj_mol=float(s["energy"][i]))
    stats.update(seeds=[int(s) for s in seeds], samples_per_set=n_samples,
                 reference_phi_positive=float(reference_phi_positive),
                 sets=[str(sample_set_path(sets, path, setting, n_samples, s)) for s in seeds])
    return stats


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


def weights_only(models, args) -> list:
    """The pooled importance-weight statistics alone, one result per model (label, transform,
    "pooled"), the MD reference phi > 0 fraction from the shipped reference summary."""
    reference = data.load_reference(args.setting)
    ref_phi_positive = float(np.average(reference.phi > 0, weights=reference.weights))
    ff = ForceFieldEnergy(args.setting)
    results = []
    for m in models:
        kind = load_model(m).config()["layers"][0]["transform"]
        results.append({"model": str(m), "transform": kind, "label": model_label(m, kind),
                        "pooled": pooled_weight_statistics(m, ff, args.setting, args.samples, _seeds(args),
                                                           Path(args.sets), ref_phi_positive, batch=args.batch)})
    return results


def _seeds(args) -> list:
    return [args.seed + i for i in range(args.seeds)]


def _meta(args, **extra) -> dict:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"date": datetime.date.today().isoformat(), "commit": commit, "machine": "2-core x86-64 (CI class)",
            "samples": args.samples, "seeds": _seeds(args), "setting": args.setting, "note": args.note, **extra}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--samples", type=int, default=100_000, help="flow samples per set")
    ap.add_argument("--setting", default="obc")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seeds", type=int, default=0,
                    help="independent sample sets per flow for the pooled importance-weight statistics "
                         "(seeds --seed, --seed + 1, ...; 0: none)")
    ap.add_argument("--sets", default=str(ROOT / "runs" / "evaluation_sets"),
                    help="folder keeping each sample set as it completes (a set found there is reused)")
    ap.add_argument("--weights-only", action="store_true",
                    help="only the pooled importance-weight statistics (needs --seeds; writes "
                         "results/importance_weights.md unless --report is given)")
    ap.add_argument("--batch", type=int, default=5000, help="flow samples drawn per batch")
    ap.add_argument("--bins", type=int, default=60)
    ap.add_argument("--out", default=str(RESULTS / "evaluation"))
    ap.add_argument("--report", default=None, help="the markdown report (default results/evaluation.md, "
                                                   "or results/importance_weights.md with --weights-only)")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. the models' training state)")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "evaluation_cache"),
                    help="reuse results of a model file evaluated before with the same settings and code "
                         "('' to always recompute)")
    args = ap.parse_args(argv)
    if args.weights_only and args.seeds < 1:
        ap.error("--weights-only needs --seeds 1 or more")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.weights_only:
        results = weights_only([Path(m) for m in args.models], args)
        meta = _meta(args)
        (out / "importance_weights.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        report = Path(args.report or RESULTS / "importance_weights.md")
        report.write_text(results_report.weights_report(results, meta) + "\n")
        print(report.read_text())
        return results
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
    ref_phi_positive = float(np.average(reference[0] > 0, weights=reference[2]))
    if args.seeds:
        for r in results:
            r["pooled"] = pooled_weight_statistics(Path(r["model"]), ff, args.setting, args.samples, _seeds(args),
                                                   Path(args.sets), ref_phi_positive, batch=args.batch)
    meta = _meta(args, test_frames=len(test), reference_phi_positive=ref_phi_positive)
    results_report.plots(results, reference, out, args.bins)
    clean = [public_fields(r) for r in results]
    (out / "evaluation.json").write_text(json.dumps({"meta": meta, "results": clean}, indent=2) + "\n")
    results_report.write_report(results, meta, out, Path(args.report or RESULTS / "evaluation.md"))
    print(json.dumps(clean, indent=2))
    return results


if __name__ == "__main__":
    main()
