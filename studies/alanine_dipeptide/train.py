"""Train the alanine dipeptide flows: ``python -m alanine_dipeptide.train configs/<name>.json``.

Run from studies/ (or with studies/ and pytorch/ on the path). One JSON config per run
(`studies/alanine_dipeptide/training.md` has the schema); outputs go to ``<repo>/runs/<name>/``: ``config.json``
(the config as run), ``log.jsonl`` (every loss at every step, and the evaluations),
``checkpoints/step_XXXXXXXX.pt``, and when the run completes ``model.safetensors`` (with
provenance in its ``training`` metadata) and ``summary.json``. Rerunning the same command
resumes from the newest checkpoint (bit-identical to an uninterrupted run on the same machine);
``--restart`` starts over.

The flow (the config's ``model`` section) is built by the pipeline's
``smoothflow_torch.pipeline.model`` with the study's Z-matrix, atoms and defaults
(``MODEL_DEFAULTS``: every key the config leaves out takes the study's default, not the pipeline's):

- **Z-matrix** ``zmatrix.ZMATRIX`` (phi and psi are single torsions), atoms metadata from
  ``molecule.atoms_metadata()``, temperature 300 K.
- **Bond bounds** from the training frames: per bond the data's range [min, max] widened by
  ``bond_padding`` (default 1.0) times its width on each side, so the data fill the middle
  third of the unit interval and held-out frames, MD and flow samples have room before the
  support's edge; ``bond_lo`` is kept >= 0.05 nm. (The pipeline's guards for frames without
  spread, a bond width of at least 1e-4 nm and a prior sigma of at least 1e-3, never act on the
  study's data: its narrowest bond spans 0.012 nm in the 200 reference frames, the shipped
  models' smallest prior sigma is 0.015.)
- **Coupling layers** (``scheme``):

  ``ic_hierarchy`` (default; the layout of the smooth-flows paper's alanine dipeptide model,
  Koehler, Kraemer & Noe 2021, built with bgflow): the 19 torsions are split into two
  interleaved halves (even and odd Z-matrix torsion rows, so phi and psi fall in different
  halves and each is transformed conditioned on the other), which transform each other in
  turn for ``n_torsion_blocks`` blocks (2 layers each); then ``n_angle_blocks`` blocks of
  bonds | angles and angles | bonds; then the 20 angles conditioned on the torsions, then the
  21 bonds conditioned on angles and torsions. In generative order torsions come first, so
  the dihedral landscape is built before the stiff coordinates that depend on it.
  ``2 n_torsion_blocks + 2 n_angle_blocks + 2`` layers.

  ``random_halves``: ``n_layers`` layers over alternating random halves of all 60 dims
  (a fresh random half, seeded by ``split_seed``, for every pair of layers and its
  complement), so every coordinate, torsions included, is both transformed and conditioning.

  Every layer has the same ``transform`` (smooth, spline, affine), ``direction``
  (``density``: analytic energy, as the paper's ``inverse`` mixture layers and the demo
  model; or ``generative``), ``n_components``, ``hidden`` and ``activation``.

``init_from`` (a model file, relative to the repository) starts from an exported model's
weights and bond bounds instead of a fresh flow: a second stage, e.g. reverse-KL fine-tuning
of an NLL-trained flow, as its own run with its own config.

The data (``data`` section): ``data.load(setting, "train" / "test")``, optionally thinned to
``max_train_frames`` evenly spaced frames. The target (``target`` section): the force field's
``forcefield.system(setting)`` on OpenMM's Reference platform through
``smoothflow_torch.openmm_bridge.OpenMMEnergy`` with the linlog cut at ``high_energy`` kT
(bgflow's LinLogCutEnergy default 1e3, as the paper), built only when the reverse KL is on or
``eval_samples`` > 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from smoothflow_torch import SmoothFlow
from smoothflow_torch.pipeline import model as flow_model
from smoothflow_torch.pipeline.model import CONSTANT_KEYS, SCHEMES, dims  # noqa: F401 (the study's names)
from smoothflow_torch.pipeline.train import needs_target, section, training_arrays
from smoothflow_torch.training import TrainConfig, Trainer

from . import data as ad_data
from . import forcefield, molecule, repo_paths
from .zmatrix import ZMATRIX

STUDY = Path(__file__).resolve().parent
REPO = repo_paths.REPO

RUNS = REPO / "runs"
#: model-section keys and the study's defaults (the pipeline's model.py builds the flow from them)
MODEL_DEFAULTS = {
    "transform": "smooth", "direction": "density", "scheme": "ic_hierarchy",
    "n_torsion_blocks": 4, "n_angle_blocks": 1, "n_layers": 8, "split_seed": 0,
    "n_components": 8, "hidden": [64, 64], "activation": "silu",
    "bond_padding": 1.0, "min_bond_lo": 0.05, "temperature": forcefield.TEMPERATURE,
    "energy_offset": 0.0, "support": {"policy": "wall", "margin": 0.01, "wall_constant": 1000.0},
    "prior": "uniform", "init_from": None,
}
DATA_DEFAULTS = {"setting": "obc", "max_train_frames": None, "data_dir": None}
TARGET_DEFAULTS = {"setting": "obc", "high_energy": 1000.0, "platform": "Reference"}


def _pipeline_model(model: dict) -> dict:
    """The study's model section with the study's defaults filled in, as the pipeline's model.py
    takes it: every key explicit (the pipeline's own defaults differ: scheme, n_angle_blocks,
    prior), the temperature apart."""
    m = section(model, MODEL_DEFAULTS, "model", CONSTANT_KEYS)
    return {k: v for k, v in m.items() if k != "temperature"}


def coupling_layers(n_atoms: int, model: dict) -> list:
    """The ``layers`` list of SmoothFlow for a model section (module docstring)."""
    return flow_model.coupling_layers(n_atoms, _pipeline_model(model))


def bond_bounds(positions: np.ndarray, padding: float = 1.0, min_lo: float = 0.05):
    """Per-bond (lo, hi) in nm, Z-matrix row order: the data's range widened by ``padding``
    times its width on each side, lo >= ``min_lo``."""
    return flow_model.bond_bounds(ZMATRIX, positions, padding, min_lo)


def data_prior(prior, train_positions: np.ndarray, lo, hi, max_frames: int = 20000):
    """The flow's latent prior from a model section's ``prior``: ``"uniform"``, or
    ``{"kind": "truncated_normal", "width": w}``, a normal per bond and angle with the training
    data's mean and w times its standard deviation of the normalized coordinate u (unweighted:
    the phi bias barely moves bond and angle marginals)."""
    return flow_model.data_prior(prior, ZMATRIX, train_positions, lo, hi, max_frames)


def build_flow(model: dict, train_positions: np.ndarray, seed: int) -> SmoothFlow:
    """The alanine dipeptide SmoothFlow of a model section (weights seeded by ``seed``);
    ``init_from`` is relative to the repository."""
    temperature = float(section(model, MODEL_DEFAULTS, "model", CONSTANT_KEYS)["temperature"])
    return flow_model.build_flow(_pipeline_model(model), ZMATRIX, molecule.atoms_metadata(), temperature,
                                 train_positions, seed, base=REPO)


def setup(config: TrainConfig, out_dir: Path, data_dir=None) -> Trainer:
    """Data, flow and target of a config, as a Trainer writing to ``out_dir``."""
    d = section(config.data, DATA_DEFAULTS, "data")
    t = section(config.target, TARGET_DEFAULTS, "target")
    data_dir = data_dir or d["data_dir"]
    train = ad_data.load(d["setting"], "train", data_dir)
    test = ad_data.load(d["setting"], "test", data_dir)
    pos, frc, wts = training_arrays(train, d["max_train_frames"])
    flow = build_flow(config.model, pos, config.seed)
    target = None
    if needs_target(config):
        from smoothflow_torch.openmm_bridge import OpenMMEnergy
        target = OpenMMEnergy(forcefield.system(t["setting"]), temperature=flow.temperature,
                              platform=t["platform"], high_energy=t["high_energy"])
    f = ad_data.path(d["setting"], data_dir)
    provenance = {"study": "alanine_dipeptide",
                  "data": {"file": repo_paths.repo_relative(f), "sha256": repo_paths.sha256_of(f), "train_frames": int(len(pos)),
                           "test_frames": int(len(test)), "setting": d["setting"]},
                  "target": {"force_field": "amber99sbildn.xml" + (
                      " + amber99_obc.xml" if t["setting"] == "obc" else " (vacuum)"),
                      **t},
                  "flow": {"n_parameters": int(sum(p.numel() for p in flow.parameters())),
                           "n_layers": len(flow.layers)}}
    summary = f.with_suffix(".json")
    if summary.exists():
        provenance["data"]["generation"] = json.loads(summary.read_text())
    return Trainer(flow, config, out_dir, train_data=(torch.from_numpy(pos), torch.from_numpy(frc), torch.from_numpy(wts)),
                   test_data=(torch.from_numpy(test.positions), torch.from_numpy(test.forces),
                              torch.from_numpy(test.weights)),
                   target=target, provenance=provenance)


def resolve_config(path: str) -> Path:
    p = Path(path)
    if not p.exists() and (STUDY / p).exists():
        p = STUDY / p
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="configs/<name>.json (relative to the current or the study directory)")
    ap.add_argument("--out", help="run directory (default <repo>/runs/<config name>)")
    ap.add_argument("--restart", action="store_true", help="ignore and delete existing checkpoints")
    ap.add_argument("--iterations", type=int, help="override the config's iterations (smoke tests)")
    ap.add_argument("--stop-at", type=int, help="stop (with a checkpoint) after this many updates")
    ap.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    ap.add_argument("--threads", type=int, help="override the config's torch threads")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--data-dir", help="directory of <setting>.npz (default data/alanine_dipeptide)")
    ap.add_argument("--export-interim", action="store_true",
                    help="export model.safetensors and summary.json even when stopped before the end "
                         "(their metadata says completed: false)")
    args = ap.parse_args(argv)
    cfg_path = resolve_config(args.config)
    config = TrainConfig.load(cfg_path)
    if args.iterations is not None:
        config.iterations = args.iterations
    if args.threads is not None:
        config.threads = args.threads
    if args.no_progress:
        config.progress = False
    config.validate()
    out = Path(args.out) if args.out else RUNS / config.name
    t0 = time.time()
    trainer = setup(config, out, args.data_dir)
    print(f"{config.name}: {len(trainer.flow.layers)} layers, "
          f"{sum(p.numel() for p in trainer.flow.parameters())} parameters, "
          f"{len(trainer.train_positions)} training frames; setup {time.time() - t0:.1f} s; "
          f"writing {out}", file=sys.stderr)
    summary = trainer.train(resume=not args.restart, stop_at=args.stop_at,
                            max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
    if args.export_interim and not summary["completed"]:
        trainer.export(completed=False)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    state = "done" if summary["completed"] else f"stopped at step {summary['steps']} (rerun to resume)"
    print(json.dumps({"name": summary["name"], "state": state, "steps": summary["steps"],
                      "seconds_per_iteration": summary["seconds_per_iteration"],
                      "final_eval": summary["final_eval"]}, indent=2))


if __name__ == "__main__":
    main()
