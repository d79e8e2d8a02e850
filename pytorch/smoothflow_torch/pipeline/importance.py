"""Importance weights of a project's flows pooled over many independent sample sets: the
numbers a reviewer asks for (issue 24), for any molecule.

One evaluation set of a few thousand samples cannot show a heavy weight tail (weights.py), so
this draws ``seeds`` sets of ``samples`` each (10 x 10^5 for the shipped flows) and reports,
per flow: ESS/n pooled over the union and per set (mean, sd, range), the PSIS k-hat pooled and
the largest per set, the largest weight over the mean, the reweighted fraction of the indicator
torsion (a peptide's first phi) > 0 with its 95 % interval and per-set range beside the MD
reference, and the heaviest samples with every torsion of interest and their force-field energy
(where the flow under-covers the force field).

Each set (log q, force-field energy, the torsions of interest; no positions) is saved under
``PROJECT/evaluation_sets/<model>-<sha256 of the file>/`` as soon as it is complete, written to a
temporary file and renamed, so an interrupted run resumes at the set in progress and a run with
more seeds reuses the sets it has. A heavy sample is regenerated exactly from its seed and
index with the same ``batch`` (evaluate.sample_flow).

Writes ``importance_weights.md`` and ``importance_weights.json`` (the alanine-dipeptide study's
layout: ``results[i].pooled``) into ``out`` (default ``PROJECT/evaluation``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..export import load_model
from . import data as pdata
from . import weights
from .evaluate import ForceFieldEnergy, _indicator_torsion, model_labels, sample_flow
from .project import Project, dihedral


def set_dir(sets: Path, model: Path) -> Path:
    """The folder of one model's saved sets: keyed by the model file's bytes, not by the code (a
    set is raw samples and energies, meant to outlive edits to the statistics)."""
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()[:16]
    return Path(sets) / f"{Path(model).parent.name}-{Path(model).stem}-{digest}"


def set_path(directory: Path, samples: int, seed: int, batch: int) -> Path:
    """One set in its model's folder (:func:`set_dir`): the sample count, the seed and the batch
    fix the draws."""
    return Path(directory) / f"n{samples}-seed{seed}-batch{batch}.npz"


def sample_set(project: Project, flow, ff, f: Path, samples: int, seed: int, batch: int) -> dict:
    """One set, kept in the file ``f``: log q (nats), the force-field energy (kJ/mol) and each
    torsion of interest (radians, ``torsions`` samples x k, names in ``names``); loaded when it
    was saved before, else drawn from ``flow`` and saved."""
    names = [t["name"] for t in project.torsions]
    if f.exists():
        with np.load(f) as d:
            got = {"log_q": d["log_q"], "energy": d["energy"], "torsions": d["torsions"],
                   "names": [str(n) for n in d["names"]]}
        if got["log_q"].shape != (samples,) or got["names"] != names:
            raise ValueError(f"{f} holds {got['log_q'].shape[0]} samples of torsions {got['names']}, not "
                             f"{samples} of {names}: remove it")
        return got
    x, log_q = sample_flow(flow, samples, seed, batch, progress=True)
    energy = ff(x)
    torsions = np.stack([dihedral(x, t["atoms"]) for t in project.torsions], axis=1) if names else \
        np.zeros((samples, 0))
    got = {"log_q": log_q, "energy": energy, "torsions": torsions, "names": names}
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez(fh, log_q=log_q, energy=energy, torsions=torsions, names=np.array(names, dtype=str))
    os.replace(tmp, f)
    return got


def pooled(project: Project, model: Path, flow, ff, samples: int, seeds: Sequence[int], sets: Path,
           indicator: dict, reference_fraction: float, count: int = 10, batch: int = 2000) -> dict:
    """weights.summary of ``len(seeds)`` sets of one flow (``flow``, loaded from ``model``), its
    heaviest samples with their torsions (degrees) and energy, and the MD reference fraction of
    the ``indicator`` torsion > 0."""
    k = [t["name"] for t in project.torsions].index(indicator["name"])
    directory = set_dir(sets, model)
    files = [set_path(directory, samples, seed, batch) for seed in seeds]
    loaded = [sample_set(project, flow, ff, f, samples, seed, batch) for f, seed in zip(files, seeds)]
    log_w = [-s["energy"] / project.kT - s["log_q"] for s in loaded]
    stats = weights.summary(log_w, [s["torsions"][:, k] > 0 for s in loaded], count=count)
    for top in stats["largest"]:
        s, i = loaded[top["set"]], top["index"]
        top.update(seed=int(seeds[top["set"]]), energy_kj_mol=float(s["energy"][i]),
                   torsions_deg={n: float(np.degrees(v)) for n, v in zip(s["names"], s["torsions"][i])})
    stats.update(seeds=[int(s) for s in seeds], samples_per_set=int(samples), indicator=indicator["name"],
                 reference_phi_positive=float(reference_fraction), sets=[str(f) for f in files], batch=int(batch))
    return stats


def _pct(v: float) -> str:
    """A percentage with three significant digits (0.0013 %, 0.86 %, 42.4 %)."""
    return f"{100 * v:.3g} %"


def table_row(label: str, p: dict, indicator_column: bool = False) -> str:
    """One flow's row of the pooled table (``table_header``'s columns); ``p`` as :func:`pooled`
    (or the alanine-dipeptide study's, whose indicator is phi)."""
    e, f = p["ess"], p["fraction"]
    lo, hi = f["interval"]
    per = p["fraction_per_set"]
    samples = p["samples_per_set"] * len(p["seeds"])
    cells = [label] + ([p.get("indicator", "phi")] if indicator_column else []) + [
        str(samples), _pct(e["pooled"]),
        f"{100 * e['mean']:.3g} +- {100 * e['std']:.3g} % ({_pct(e['min'])}-{_pct(e['max'])})",
        f"{p['k_hat']:.2f} ({max(p['k_hat_per_set']):.2f})", f"{p['largest'][0]['relative_to_mean']:.0f}",
        f"{100 * f['estimate']:.2f} % ({100 * lo:.2f}-{100 * hi:.2f} %)", f"{100 * min(per):.2f}-{100 * max(per):.2f} %",
        f"{100 * p['reference_phi_positive']:.2f} %"]
    return "| " + " | ".join(cells) + " |"


def table_header(indicator: Optional[str] = None) -> list:
    """The pooled table's header; without ``indicator`` a column names each row's."""
    t = indicator or "torsion"
    cells = ["flow"] + ([] if indicator else ["torsion"]) + [
        "samples", "pooled ESS/n", "per-set ESS/n: mean +- sd (min-max)", "k-hat pooled (largest per set)",
        "largest weight / mean", f"{t} > 0 reweighted (95 %)", f"{t} > 0 per set (min-max)", f"{t} > 0 MD"]
    return ["| " + " | ".join(cells) + " |", "|---" * len(cells) + "|"]


def report(project: Project, results: list, meta: dict) -> str:
    """The markdown report: the pooled table and each flow's heaviest samples."""
    indicator = results[0]["pooled"]["indicator"]
    lines = ["# Importance weights pooled over independent sample sets", "",
             f"{project.name}: evaluated {meta['date']} at commit {meta['commit']} on {meta['machine']}; "
             f"{len(meta['seeds'])} sets of {meta['samples']} flow samples per model (seeds {meta['seeds'][0]}-"
             f"{meta['seeds'][-1]}), weights against {project.forcefield_label} at {project.temperature:g} K; "
             f"{meta['seconds']:.0f} s.", "",
             "Pooled ESS/n self-normalizes over the union of the sets; the per-set values show how much one set "
             "can vary. k-hat is PSIS's Pareto tail shape of the pooled weights (< 0.5 good, 0.5-0.7 usable, "
             ">= 0.7 the estimate is unreliable); per set, its largest. The reweighted fraction's interval is the "
             "delta-method 95 % interval of the self-normalized estimate (trustworthy only with k-hat < 0.7).", ""]
    lines += table_header(indicator)
    lines += [table_row(r["label"], r["pooled"]) for r in results]
    # omega stays near 180 degrees in every sample: its columns would say nothing
    names = [t["name"] for t in project.torsions if not t["name"].startswith("omega:")]
    lines += ["", "The heaviest samples of each flow (pooled normalized weight; torsions in degrees, omega left "
              "out; force-field energy): where the flow under-covers the target.", "",
              "| flow | rank | seed | sample | weight / mean | " + " | ".join(names) + " | energy (kJ/mol) |",
              "|---" * (6 + len(names)) + "|"]
    for r in results:
        for rank, t in enumerate(r["pooled"]["largest"], 1):
            lines.append(f"| {r['label']} | {rank} | {t['seed']} | {t['index']} | {t['relative_to_mean']:.1f} | "
                         + " | ".join(f"{t['torsions_deg'][n]:.0f}" for n in names)
                         + f" | {t['energy_kj_mol']:.1f} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def importance_weights(project, models: Optional[Sequence] = None, samples: int = 100000, seeds: int = 10,
                       seed: int = 0, out=None, sets=None, batch: int = 2000, platform: str = "Reference",
                       frames=None) -> dict:
    """Pool ``seeds`` sets of ``samples`` of each model (module docstring); write the report.
    Returns ``{"meta", "results"}`` as in importance_weights.json."""
    project = project if isinstance(project, Project) else Project(project)
    models = [Path(m) for m in models] if models else [project.model_path]
    for m in models:
        if not m.exists():
            raise FileNotFoundError(f"{m} does not exist: run `smoothflow train {project.path}` first")
    if samples < 1 or seeds < 1 or batch < 1:
        raise ValueError("samples, seeds and batch must be >= 1")
    indicator = _indicator_torsion(project)
    if indicator is None:
        raise ValueError(f"{project.name} has no torsion of interest (prepare --torsion) to report a fraction of")
    out = Path(out) if out else project.path / "evaluation"
    sets = Path(sets) if sets else project.path / "evaluation_sets"
    t0 = time.time()
    every = pdata.load(Path(frames) if frames else project.frames_path, project.kT, project.n_atoms, "all")
    reference = float(np.average(dihedral(every.positions, indicator["atoms"]) > 0, weights=every.weights))
    ff = ForceFieldEnergy(project, platform)
    seed_list = [seed + i for i in range(seeds)]
    labels = model_labels(models)
    results = []
    for m, label in zip(models, labels):
        flow = load_model(m)
        results.append({"model": str(m), "transform": flow.config()["layers"][0]["transform"], "label": label,
                        "pooled": pooled(project, m, flow, ff, samples, seed_list, sets, indicator, reference,
                                         batch=batch)})
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.date.today().isoformat(), "commit": _commit(),
            "machine": f"{os.cpu_count()}-core {os.uname().machine}", "project": project.name,
            "samples": samples, "seeds": seed_list, "batch": batch, "platform": platform,
            "seconds": time.time() - t0}
    doc = {"meta": meta, "results": results}
    (out / "importance_weights.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "importance_weights.md").write_text(report(project, results, meta))
    return doc
