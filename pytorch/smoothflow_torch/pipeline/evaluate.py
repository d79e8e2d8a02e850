"""Evaluate a project's flow against its force field: a markdown report with PNG plots.

For each model file (default the project's ``model.safetensors``):

- **held-out NLL** (nats per molecule, over positions modulo rigid motion) and **force RMSE**
  against the force field's forces (kJ/mol/nm), both Boltzmann-weighted means over the held-out
  frames (data.py: biased frames carry exp(V / kT)); frames outside the flow's bond bounds are
  counted, not averaged;
- **sampling efficiency**: ``samples`` flow samples per set, reweighted to the force field
  (log w = -E_ff / kT - log q), ESS/n with its bootstrap interval, the PSIS Pareto k-hat of the
  weights' tail (weights.py); with ``seeds`` > 1 independent sets, ESS/n pooled over them and
  each set's, so a heavy tail one set misses shows;
- for every torsion of interest (project.json: a peptide's phi, psi, omega, and those given to
  prepare): the free-energy profile of the MD data (reweighted), of the flow samples, and of the
  flow samples reweighted; the reweighted fraction with the torsion > 0 against the MD's;
- with more than one phi, the joint states of which residues have phi > 0 at once (MD, flow,
  flow reweighted);
- for a peptide, Ramachandran plots (MD, flow, flow reweighted) of every residue with phi and psi,
  and the KL divergence of the phi/psi histograms.

Writes ``evaluation/report.md``, ``evaluation/evaluation.json`` and the plots
(``free_energy.png``, ``ramachandran.png``) into the project (or ``out``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import data as pdata
from . import weights
from .project import Project, dihedral, ramachandran_pairs


class ForceFieldEnergy:
    """The project's force-field energies of many configurations (one Context)."""

    def __init__(self, project: Project, platform: str = "Reference"):
        import openmm
        self.system = project.system()
        self.context = openmm.Context(self.system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName(platform))

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        import openmm
        import openmm.unit as unit
        out = np.empty(len(positions))
        for i, x in enumerate(positions):
            try:
                self.context.setPositions(np.asarray(x, float))
                out[i] = self.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
                    unit.kilojoule_per_mole)
            except openmm.OpenMMException:
                out[i] = np.inf
        return np.where(np.isfinite(out), out, np.inf)


def held_out_metrics(flow, frames: pdata.Frames, batch: int = 256) -> dict:
    """Weighted mean NLL (nats) and force RMSE (kJ/mol/nm) over the frames inside the support."""
    x_all = torch.from_numpy(frames.positions)
    with torch.no_grad():
        u = flow.internal_coordinates(x_all)[:, :flow.n_interval]
    inside = ((u >= 0) & (u <= 1)).all(-1).numpy()
    nll, sq, total = 0.0, 0.0, 0.0
    idx = np.flatnonzero(inside)
    for s in range(0, len(idx), batch):
        i = idx[s:s + batch]
        x = torch.from_numpy(frames.positions[i])
        w = frames.weights[i]
        e, f = flow.energy_and_forces(x)
        nll += float(np.sum(w * ((e.detach().numpy() - flow.energy_offset) / flow.kT)))
        sq += float(np.sum(w * ((f.detach().numpy() - frames.forces[i]) ** 2).sum((1, 2))))
        total += float(w.sum())
    n_atoms = frames.positions.shape[1]
    return {"test_frames": int(len(frames)), "outside_support": int((~inside).sum()),
            "nll_nats": nll / total if total else float("nan"),
            "force_rmse_kj_mol_nm": float(np.sqrt(sq / (total * n_atoms * 3))) if total else float("nan")}


def sample_flow(flow, n: int, seed: int, batch: int = 2000, progress: bool = False):
    """``n`` samples (positions (n, N, 3) nm, log q) drawn with a generator seeded ``seed``, in
    batches of ``batch`` (which set the samples: the generator's draws follow the batches)."""
    from tqdm.auto import tqdm
    gen = torch.Generator().manual_seed(seed)
    xs, lqs = [], []
    with torch.no_grad():
        for i in tqdm(range(0, n, batch), desc="sampling the flow", unit="batch", disable=not progress):
            x, lq = flow.sample(min(batch, n - i), generator=gen, return_log_prob=True)
            xs.append(x.numpy())
            lqs.append(lq.numpy())
    return np.concatenate(xs), np.concatenate(lqs)


def _edges(bins: int) -> np.ndarray:
    return np.linspace(-np.pi, np.pi, bins + 1)


def free_energy(values, weights=None, bins=36, kT: float = 1.0) -> np.ndarray:
    """F(bin) = -kT log p(bin), minimum 0; empty bins +inf. ``bins``: a number of equal bins of an
    angle in [-pi, pi], or the bin edges."""
    h, _ = np.histogram(values, bins=_edges(bins) if np.ndim(bins) == 0 else bins, weights=weights)
    with np.errstate(divide="ignore"):
        f = -kT * np.log(h / h.sum())
    return f - f[np.isfinite(f)].min()


def histogram_kl(p_counts, q_counts, pseudocount: float = 1e-6) -> float:
    """KL(p || q) of two histograms on the same bins, nats (a pseudocount keeps empty q bins finite)."""
    p = np.asarray(p_counts, float).ravel()
    q = np.asarray(q_counts, float).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    p = p / p.sum() + pseudocount
    q = q / q.sum() + pseudocount
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _hist2d(phi, psi, bins, weights=None):
    return np.histogram2d(phi, psi, bins=[_edges(bins), _edges(bins)], weights=weights)[0]


def _indicator_torsion(project: Project):
    """The torsion the report follows first: a peptide's first phi, else the first of interest."""
    phis = [t for t in project.torsions if t["name"].startswith("phi:")]
    return (phis or project.torsions or [None])[0]


def joint_phi_states(phis, every: pdata.Frames, angles: dict, log_w) -> list:
    """Which residues have phi > 0 at once (a peptide's alpha_L states are joint states of
    neighbouring residues: the tetrapeptide's ALA2 and ALA3 share a left-handed turn 18 times more
    often than independent residues would): each state's MD population (reweighted), the flow
    samples' fraction and the flow reweighted with its 95 % interval."""
    md_up = np.stack([dihedral(every.positions, t["atoms"]) > 0 for t in phis], axis=1)
    flow_up = np.stack([angles[t["name"]] > 0 for t in phis], axis=1)
    with np.errstate(divide="ignore"):
        md = weights.joint_states(md_up, np.log(every.weights))
    flow = weights.joint_states(flow_up)
    finite = np.isfinite(log_w).any()
    rows = []
    for pattern in sorted(set(md) | set(flow), key=lambda p: (sum(p), p)):
        row = {"state": " + ".join(t["name"][4:] for t, u in zip(phis, pattern) if u) or "none",
               "md": md[pattern][1] if pattern in md else 0.0,
               "flow": flow[pattern][0] if pattern in flow else 0.0}
        if finite:
            row["flow_reweighted"] = weights.reweighted_fraction(log_w, np.all(flow_up == np.array(pattern), axis=1))
        rows.append(row)
    return rows


def evaluate_model(project: Project, model_path: Path, test: pdata.Frames, every: pdata.Frames,
                   ff: ForceFieldEnergy, samples: int, seed: int, seeds: int, bins: int) -> dict:
    """The numbers of one model (module docstring); ``_``-keys hold arrays for the plots."""
    from ..export import load_model
    flow = load_model(model_path)
    kind = flow.config()["layers"][0]["transform"]
    result = {"model": str(model_path), "sha256": hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:16],
              "transform": kind}
    result.update(held_out_metrics(flow, test))
    sets = []
    for s in range(max(1, seeds)):
        x, log_q = sample_flow(flow, samples, seed + s)
        energy = ff(x)
        sets.append({"x": x, "log_w": -energy / project.kT - log_q})
    log_w = sets[0]["log_w"]
    result["samples"] = int(samples)
    result["seed"] = int(seed)
    result["invalid_samples"] = int((~np.isfinite(log_w)).sum())
    result["ess_fraction"] = weights.ess_fraction(log_w) if np.isfinite(log_w).any() else 0.0
    result["ess_fraction_95"] = list(weights.ess_interval(log_w))
    try:
        result["k_hat"] = weights.pareto_k_hat(log_w)
    except ValueError as e:       # too few samples for a tail fit
        result["k_hat"] = None
        result["k_hat_note"] = str(e)
    indicator = _indicator_torsion(project)
    if seeds > 1:
        result["pooled_ess"] = weights.pooled_ess([s["log_w"] for s in sets])
        try:
            result["pooled_k_hat"] = weights.pareto_k_hat(np.concatenate([s["log_w"] for s in sets]))
        except ValueError:
            result["pooled_k_hat"] = None
    if indicator is not None and all(np.isfinite(s["log_w"]).any() for s in sets):
        # the heaviest samples say where the flow under-covers the force field's distribution
        idx, wn = weights.largest_weights(np.concatenate([s["log_w"] for s in sets]), 5)
        values = np.concatenate([dihedral(s["x"], indicator["atoms"]) for s in sets])
        result["largest_weights"] = [{"set": int(i // samples), "index": int(i % samples),
                                      "relative_to_mean": float(w_i * len(values)),
                                      indicator["name"] + "_deg": float(np.degrees(values[i]))}
                                     for i, w_i in zip(idx, wn)]
    x = np.concatenate([s["x"] for s in sets])
    lw = np.concatenate([s["log_w"] for s in sets])
    w = np.exp(lw - lw[np.isfinite(lw)].max()) if np.isfinite(lw).any() else np.zeros_like(lw)
    w[~np.isfinite(w)] = 0
    torsions = {}
    for t in project.torsions:
        flow_values = dihedral(x, t["atoms"])
        md_values = dihedral(every.positions, t["atoms"])
        entry = {"md_positive_fraction": float(np.average(md_values > 0, weights=every.weights)),
                 "flow_positive_fraction": float(np.mean(flow_values > 0))}
        if w.sum() > 0:
            entry["reweighted"] = weights.reweighted_fraction(lw, flow_values > 0)
        torsions[t["name"]] = entry
        result.setdefault("_angles", {})[t["name"]] = flow_values
    result["torsions"] = torsions
    result["_weights"] = w
    phis = [t for t in project.torsions if t["name"].startswith("phi:")]
    if len(phis) > 1:
        result["joint_phi_states"] = joint_phi_states(phis, every, result["_angles"], lw)
    pairs = ramachandran_pairs(project)
    if pairs:
        label, phi, psi = pairs[0]
        ref = _hist2d(dihedral(every.positions, phi["atoms"]), dihedral(every.positions, psi["atoms"]), bins,
                      every.weights)
        a = result["_angles"]
        result["ramachandran_residue"] = label
        result["kl_phi_psi_flow"] = histogram_kl(ref, _hist2d(a[phi["name"]], a[psi["name"]], bins))
        if w.sum() > 0:
            result["kl_phi_psi_reweighted"] = histogram_kl(ref, _hist2d(a[phi["name"]], a[psi["name"]], bins, w))
    return result


def model_labels(paths) -> list:
    """Names of model files in the report and plots, distinct whenever the paths are: the file's
    stem, the run folder's name for a stage's ``model.safetensors`` (``runs/smooth/model.safetensors``
    -> ``smooth``), "flow" for one project's own model.safetensors, and more of the path where
    names would still collide."""
    paths = [Path(p) for p in paths]
    labels = [p.stem if p.stem != "model" else (p.parent.name if p.parent.parent.name == "runs" else "flow")
              for p in paths]
    for depth in range(1, 1 + max((len(p.parts) for p in paths), default=1)):
        repeated = {lab for lab in labels if labels.count(lab) > 1}
        if not repeated:
            break
        labels = [("/".join(p.with_suffix("").parts[-depth - 1:]) if lab in repeated else lab)
                  for p, lab in zip(paths, labels)]
    return labels


def _plots(project: Project, results, every: pdata.Frames, out: Path, bins: int) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.colors
    import matplotlib.pyplot as plt
    written = []
    labels = model_labels([r["model"] for r in results])
    torsions = project.torsions
    if torsions:
        fig, axes = plt.subplots(1, len(torsions), figsize=(4 * len(torsions), 3.4), squeeze=False)
        centres = np.degrees(0.5 * (_edges(bins)[1:] + _edges(bins)[:-1]))
        for ax, t in zip(axes[0], torsions):
            md = dihedral(every.positions, t["atoms"])
            ax.plot(centres, free_energy(md, every.weights, bins, project.kT), "k-", label="MD (reweighted)")
            for i, (r, name) in enumerate(zip(results, labels)):
                a = r["_angles"][t["name"]]
                ax.plot(centres, free_energy(a, None, bins, project.kT), ":", color=f"C{i}",
                        label=f"{name} samples")
                if r["_weights"].sum() > 0:
                    ax.plot(centres, free_energy(a, r["_weights"], bins, project.kT), "--", color=f"C{i}",
                            label=f"{name} reweighted")
            ax.set_ylim(0, 15 * project.kT)   # the interesting range; empty bins are off the top
            ax.set_title(t["name"], fontsize=9)
            ax.set_xlabel("degrees")
            ax.set_ylabel("free energy (kJ/mol)")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "free_energy.png", dpi=100)
        plt.close(fig)
        written.append("free_energy.png")
    pairs = ramachandran_pairs(project)
    if pairs:
        label, phi, psi = pairs[0]
        panels = [("MD (reweighted)", dihedral(every.positions, phi["atoms"]), dihedral(every.positions, psi["atoms"]),
                   every.weights)]
        for r, name in zip(results, labels):
            a = r["_angles"]
            panels.append((name, a[phi["name"]], a[psi["name"]], None))
            if r["_weights"].sum() > 0:
                panels.append((f"{name} reweighted", a[phi["name"]], a[psi["name"]], r["_weights"]))
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
        for ax, (title, x, y, wt) in zip(axes[0], panels):
            wt = np.ones(len(x)) if wt is None else np.asarray(wt) * len(x) / np.sum(wt)
            ax.hist2d(np.degrees(x), np.degrees(y), bins=bins, range=[[-180, 180], [-180, 180]], weights=wt,
                      cmin=0.5 if len(x) > 1 else None, cmap="viridis", norm=matplotlib.colors.LogNorm())
            ax.set_title(f"{title}: {label}", fontsize=8)
            ax.set_xlabel("phi (degrees)")
            ax.set_ylabel("psi (degrees)")
        fig.tight_layout()
        fig.savefig(out / "ramachandran.png", dpi=100)
        plt.close(fig)
        written.append("ramachandran.png")
    return written


def _fmt(v, spec=".4g"):
    return "-" if v is None else format(v, spec)


def report(project: Project, results, meta: dict, plots: Sequence[str]) -> str:
    """The markdown report of an evaluation."""
    lines = [f"# Evaluation: {project.name} against {project.forcefield_label}", "",
             f"{meta['date']}; {meta['test_frames']} held-out frames (Boltzmann-weighted means); "
             f"{meta['samples']} flow samples per set, {meta['seeds']} set(s) from seed {meta['seed']}, reweighted to "
             f"the force field at {project.temperature:g} K; {meta['seconds']:.1f} s.", "",
             "| model | transform | held-out NLL (nats) | force RMSE (kJ/mol/nm) | frames outside support | "
             "ESS/n | ESS/n 95 % interval | k-hat | invalid samples |", "|---|---|---|---|---|---|---|---|---|"]
    labels = model_labels([r["model"] for r in results])
    for r in results:
        lo, hi = r["ess_fraction_95"]
        lines.append(f"| `{r['model']}` (sha256 {r['sha256']}) | {r['transform']} | {r['nll_nats']:.4f} | "
                     f"{r['force_rmse_kj_mol_nm']:.3f} | {r['outside_support']}/{r['test_frames']} | "
                     f"{100 * r['ess_fraction']:.3f} % | {100 * lo:.3f}-{100 * hi:.3f} % | {_fmt(r['k_hat'], '.3f')} | "
                     f"{r['invalid_samples']} |")
    lines.append("")
    for r, name in zip(results, labels):
        if "pooled_ess" in r:
            p = r["pooled_ess"]
            lines.append(f"`{name}`: ESS/n pooled over {len(p['per_set'])} sets "
                         f"{100 * p['pooled']:.3f} % (per set mean {100 * p['mean']:.3f} %, sd {100 * p['std']:.3f} %, "
                         f"range {100 * p['min']:.3f}-{100 * p['max']:.3f} %); pooled k-hat "
                         f"{_fmt(r.get('pooled_k_hat'), '.3f')} (below 0.5 the weights' variance is finite, "
                         f"0.7 or more: importance sampling unreliable whatever ESS/n says).")
            lines.append("")
        if r.get("largest_weights"):
            angle = next(k for k in r["largest_weights"][0] if k.endswith("_deg"))
            lines.append(f"`{name}`: heaviest samples (weight / mean weight, {angle[:-4]} in degrees): "
                         + ", ".join(f"{t['relative_to_mean']:.3g} at {t[angle]:.0f}" for t in r["largest_weights"])
                         + ".")
            lines.append("")
    if project.torsions:
        lines += ["", "Fraction of configurations with the torsion > 0 (MD reweighted; flow samples; flow reweighted "
                  "with its 95 % interval):", "", "| model | torsion | MD | flow | flow reweighted |",
                  "|---|---|---|---|---|"]
        for r, label in zip(results, labels):
            for name, t in r["torsions"].items():
                rw = t.get("reweighted")
                rws = "-" if rw is None else (f"{100 * rw['estimate']:.2f} % ({100 * rw['interval'][0]:.2f}-"
                                              f"{100 * rw['interval'][1]:.2f})")
                lines.append(f"| {label} | {name} | {100 * t['md_positive_fraction']:.2f} % | "
                             f"{100 * t['flow_positive_fraction']:.2f} % | {rws} |")
    for r, name in zip(results, labels):
        if r.get("joint_phi_states"):
            lines += ["", f"`{name}`: which residues have phi > 0 at once (MD reweighted; flow "
                      f"samples; flow reweighted with its 95 % interval):", "",
                      "| phi > 0 | MD | flow | flow reweighted |", "|---|---|---|---|"]
            for row in r["joint_phi_states"]:
                rw = row.get("flow_reweighted")
                rws = "-" if rw is None else (f"{100 * rw['estimate']:.3f} % ({100 * rw['interval'][0]:.3f}-"
                                              f"{100 * rw['interval'][1]:.3f})")
                lines.append(f"| {row['state']} | {100 * row['md']:.3f} % | {100 * row['flow']:.3f} % | {rws} |")
    for r, name in zip(results, labels):
        if "kl_phi_psi_flow" in r:
            lines += ["", f"`{name}`: KL(MD || flow) of the phi/psi histograms of "
                      f"{r['ramachandran_residue']}: {r['kl_phi_psi_flow']:.4f} nats (samples), "
                      f"{_fmt(r.get('kl_phi_psi_reweighted'), '.4f')} nats (reweighted)."]
    lines.append("")
    lines += [f"![{p[:-4].replace('_', ' ')}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def evaluate(project, models: Optional[Sequence] = None, samples: int = 2000, seed: int = 0, seeds: int = 1,
             bins: int = 36, out=None, platform: str = "Reference", frames=None) -> dict:
    """Evaluate ``models`` (default the project's model.safetensors); write the report (module
    docstring). ``frames``: a frames file (data.py's layout) to read instead of the project's
    ``data/frames.npz``, e.g. data kept outside the project (relative to the caller). Returns
    ``{"meta", "results"}`` as in evaluation.json."""
    project = project if isinstance(project, Project) else Project(project)
    models = [Path(m) for m in models] if models else [project.model_path]   # as given: relative to the caller
    for m in models:
        if not m.exists():
            raise FileNotFoundError(f"{m} does not exist: run `smoothflow train {project.path}` first")
    if samples < 1 or seeds < 1:
        raise ValueError("samples and seeds must be >= 1")
    out = Path(out) if out else project.path / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    frames = Path(frames) if frames else project.frames_path
    test = pdata.load(frames, project.kT, project.n_atoms, "test")
    every = pdata.load(frames, project.kT, project.n_atoms, "all")
    ff = ForceFieldEnergy(project, platform)
    results = [evaluate_model(project, m, test, every, ff, samples, seed, seeds, bins) for m in models]
    plots = _plots(project, results, every, out, bins)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "project": project.name,
            "forcefield": project.forcefield_files, "temperature": project.temperature, "frames": str(frames),
            "test_frames": len(test),
            "samples": samples, "seed": seed, "seeds": seeds, "bins": bins, "seconds": time.time() - t0}
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    (out / "evaluation.json").write_text(json.dumps({"meta": meta, "results": clean}, indent=1) + "\n")
    (out / "report.md").write_text(report(project, results, meta, plots))
    return {"meta": meta, "results": clean}
