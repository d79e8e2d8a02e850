"""The study's training data, made by the pipeline: ``smoothflow simulate`` on the study's project
with the study's settings, then exported to the study's files.

The chains are the pipeline's (smoothflow_torch.pipeline.simulate; docs/pipeline.md,
"simulate"): Langevin dynamics (LangevinMiddleIntegrator, 300 K, friction 1/ps, 2 fs) with Amber
ff99SB-ILDN, OBC implicit solvent (the main setting) or vacuum, no constraints, on the Reference
platform; hydrogen masses 3 amu (taken from the bonded heavy atom) so that 2 fs steps are
stable without constraints; a static bias V(phi) (phi_bias.py) because unbiased MD visits the
rare phi > 0 basin about once per 100 ns; each frame the force field's forces and energy alone
and the bias energy V, its Boltzmann weight exp(V/kT), exact because the bias is fixed. Six
chains of 20 ns with seeds 1000 + chain, 100 ps of equilibration, a frame every 2 ps, the last
20 % of each held out. The shipped bias table (``<setting>.bias.npz``) is installed as the
project's ``data/bias.npz``, so the chains run under it without rerunning the metadynamics
(without a shipped table the pipeline builds one, with the same settings: ``--bias-ns``).

What is the study's own: the files the rest of the study and the main job read, in
``data/alanine_dipeptide/``: ``<setting>.npz`` (the pipeline's ``data/frames.npz``, same
layout), ``<setting>.json`` (provenance and the weighted phi > 0 populations: overall, per
chain, standard error across chains) and ``<setting>.reference.npz`` (~1 MB, shipped: 200
Boltzmann-resampled held-out frames, phi/psi and weight of every frame; data.write_reference).
The shipped files were made by this study's earlier chain loop with the same settings; the
pipeline's chains start from ``alanine_dipeptide.pdb`` (the same structure, written to 0.001 A)
and draw a fresh random stream when resumed, so a rerun gives statistically equal, not
bit-identical, frames. Hence a rerun never replaces the shipped ``<setting>.json`` and
``<setting>.reference.npz`` (the documented numbers and the tests use them): it writes its own
beside the project's data (``<project>/data/<setting>.json``, ``.reference.npz``) and says so,
unless ``--replace-shipped`` is given. ``<setting>.npz`` (not shipped: the training data) is
always written.

Usage (the study package is installed by scripts/setup.sh):
    python -m alanine_dipeptide.generate_data --setting obc [--ns 20 --chains 6 --jobs 2]
(the project, ``runs/alanine_dipeptide`` or ``runs/alanine_dipeptide_vacuum``, is made when
missing; rerunning continues the chains, as ``smoothflow simulate`` does.)
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from smoothflow_torch import pipeline
from smoothflow_torch.pipeline import data as pipeline_data
# (pipeline.simulate is also the name of the pipeline's simulate step: import by name)
from smoothflow_torch.pipeline.simulate import load_bias, positive_fraction

from . import forcefield, phi_bias

STUDY = Path(__file__).resolve().parent
REPO = STUDY.parents[1]
HYDROGEN_MASS = 3.0  # amu
#: the study's chains (the pipeline's simulate arguments)
CHAINS = {"ns": 20.0, "chains": 6, "interval_ps": 2.0, "dt_fs": 2.0, "equilibration_ps": 100.0, "friction": 1.0,
          "hydrogen_mass": HYDROGEN_MASS, "seed": 1000, "checkpoint_ps": 1000.0}
BIAS_NS = 10.0       # metadynamics that built the shipped table


def project_path(setting: str) -> Path:
    return REPO / "runs" / ("alanine_dipeptide" if setting == "obc" else f"alanine_dipeptide_{setting}")


def make_project(setting: str, path=None) -> pipeline.Project:
    """The study's project for a setting (README.md's `smoothflow prepare` command), made when missing."""
    path = Path(path) if path else project_path(setting)
    if (path / "project.json").exists():
        return pipeline.Project(path)
    files = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if setting == "obc" else [])
    return pipeline.prepare(STUDY / "alanine_dipeptide.pdb", path, forcefield=files,
                            temperature=forcefield.TEMPERATURE, zmatrix=STUDY / "zmatrix.txt",
                            name="alanine dipeptide" + ("" if setting == "obc" else f" ({setting})"))


def install_bias(project: pipeline.Project, setting: str, data_dir) -> bool:
    """Write the shipped table ``<setting>.bias.npz`` as the project's ``data/bias.npz`` (the
    pipeline's form), unless the project has a bias; False when there is no shipped table."""
    if (project.data_dir / "bias.npz").exists():
        return True
    shipped = phi_bias.load(setting, data_dir)
    if shipped is None:
        return False
    table, settings = shipped
    info = {**settings, "torsion": project.torsion("phi")}
    project.data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(project.data_dir / "bias.npz", grid=np.linspace(-np.pi, np.pi, phi_bias.GRID), bias=table,
             info=json.dumps(info))
    return True


def frame_weights(bias: np.ndarray) -> np.ndarray:
    """Reweighting factors exp(V/kT) of biased frames, scaled to mean 1 (all ones when unbiased)."""
    return pipeline_data.frame_weights(bias, forcefield.KT)


def phi_population(phi: np.ndarray, weights: np.ndarray, chain: np.ndarray) -> dict:
    """Weighted phi > 0 fraction overall, per chain, and its standard error across chains."""
    p = positive_fraction(phi, weights, chain)
    return {"phi_positive_fraction": p["reweighted"], "phi_positive_fraction_per_chain": p["per_chain"],
            "phi_positive_fraction_stderr": p["stderr"],
            "weights_kish_ess_fraction": float(weights.sum() ** 2 / (weights ** 2).sum() / len(weights))}


def summary_destinations(project: pipeline.Project, setting: str, out: Path, replace_shipped: bool):
    """Where ``<setting>.json`` and ``<setting>.reference.npz`` go: into ``out`` when neither is
    there yet or ``replace_shipped``; otherwise beside the project's data (module docstring)."""
    shipped = [out / f"{setting}.json", out / f"{setting}.reference.npz"]
    if replace_shipped or not any(f.exists() for f in shipped):
        return shipped[0], shipped[1], False
    return project.data_dir / f"{setting}.json", project.data_dir / f"{setting}.reference.npz", True


def export(project: pipeline.Project, setting: str, out: Path, summary: dict,
           replace_shipped: bool = False) -> dict:
    """The project's frames as the study's ``<setting>.npz``, and its ``<setting>.json`` and
    ``<setting>.reference.npz`` (where: ``summary_destinations``)."""
    from .data import backbone_dihedrals, write_reference
    out.mkdir(parents=True, exist_ok=True)
    json_path, reference, kept = summary_destinations(project, setting, out, replace_shipped)
    shutil.copyfile(project.frames_path, out / f"{setting}.npz")
    with np.load(out / f"{setting}.npz") as d:
        positions, bias, chain = d["positions"].astype(np.float64), d["bias"].astype(np.float64), d["chain"]
    phi = backbone_dihedrals(positions)[0]
    s = summary["settings"]
    bias_info = phi_bias.load(setting, out)
    meta = {"molecule": "alanine dipeptide (ACE-ALA-NME), standard geometry, minimized",
            "force_field": " + ".join(project.forcefield_files),
            "integrator": f"LangevinMiddleIntegrator {project.temperature:g} K, {s['friction_per_ps']:g}/ps, "
                          f"{s['dt_fs']} fs, hydrogen mass {s['hydrogen_mass']} amu, no constraints, no cutoff, "
                          f"{s['platform']} platform",
            "made_by": f"smoothflow simulate (the pipeline) on the project {project.path.name}",
            "phi_bias": None if s["bias"] is None else (bias_info[1] if bias_info else s["bias"]),
            "chains": summary["chains"], "ns_per_chain": summary["frames_per_chain"] * s["interval_ps"] / 1000,
            "equilibration_ps": s["equilibration_ps"], "interval_ps": s["interval_ps"],
            "seeds": [s["seed"] + c for c in range(summary["chains"])], "sha256": summary["sha256"],
            "wall_seconds_this_run": summary.get("wall_seconds_this_run")}
    result = dict(meta, frames=int(len(phi)), **phi_population(phi, frame_weights(bias), chain),
                  phi_positive_fraction_biased=float(np.mean(phi > 0)), file=f"{setting}.npz",
                  bytes=(out / f"{setting}.npz").stat().st_size)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_reference(setting, out, out=reference)
    if kept:
        print(f"kept the shipped {out / (setting + '.json')} and {out / (setting + '.reference.npz')}; "
              f"this run's are {json_path} and {reference} (--replace-shipped replaces them)", file=sys.stderr)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=forcefield.SETTINGS, default="obc")
    ap.add_argument("--ns", type=float, default=CHAINS["ns"], help="production length of each chain")
    ap.add_argument("--chains", type=int, default=CHAINS["chains"])
    ap.add_argument("--interval-ps", type=float, default=CHAINS["interval_ps"])
    ap.add_argument("--checkpoint-ps", type=float, default=CHAINS["checkpoint_ps"])
    ap.add_argument("--bias-ns", type=float, default=BIAS_NS,
                    help="metadynamics that builds the phi bias when no table is shipped (0: unbiased chains)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="chains in parallel")
    ap.add_argument("--project", help="the project folder (default runs/alanine_dipeptide[_SETTING])")
    ap.add_argument("--out", default=str(REPO / "data" / "alanine_dipeptide"))
    ap.add_argument("--replace-shipped", action="store_true",
                    help="overwrite the shipped <setting>.json and <setting>.reference.npz in --out "
                         "(default: keep them and write this run's beside the project's data)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    project = make_project(args.setting, args.project)
    biased = args.bias_ns > 0
    shipped = biased and install_bias(project, args.setting, out)
    chains = dict(CHAINS, ns=args.ns, chains=args.chains, interval_ps=args.interval_ps,
                  checkpoint_ps=args.checkpoint_ps)
    summary = pipeline.simulate(project, **chains, bias="phi" if biased else None,
                                bias_ns=0.0 if shipped else args.bias_ns, jobs=args.jobs)
    if biased and not shipped:     # the table the pipeline built becomes the shipped one
        table, info = load_bias(project)
        np.savez(phi_bias.bias_path(args.setting, out), phi=np.linspace(-np.pi, np.pi, phi_bias.GRID), bias=table,
                 settings=json.dumps({k: v for k, v in info.items() if k != "torsion"}))
    print(json.dumps(export(project, args.setting, out, summary, args.replace_shipped), indent=2))


if __name__ == "__main__":
    main()
