"""Train a project's flow from a config file of one or more stages.

A config file (``train.json``, written by prepare) is either one run, a
:class:`smoothflow_torch.training.TrainConfig` as JSON with the sections

    model   the flow (model.py: scheme, blocks, transform, prior, support, init_from, ...)
    data    {"frames": "data/frames.npz", "max_train_frames": null, "weight_power": 1.0,
            "curvature_frames": null, "force_matching_frames": null}: weight_power g draws the
            likelihood's batches with probability w^g instead of the frames' Boltzmann weights w
            (g < 1 flattens what the bias flattened, e.g. puts more of a rare basin in the flow:
            over-covering costs the importance weights little, under-covering gives them a heavy
            tail; the test NLL keeps w); curvature_frames (a file or a list) are frames the
            curvature, stiffness and velocity Verlet bounds visit beside the data (``smoothflow
            hot-frames``: the force field at 1000-2000 K, or a flow's own hot frames); with
            force_matching_extra_batch, force matching visits force_matching_frames (the force
            field's own hot frames); nothing enters the likelihood but the data
    target  {"high_energy": 1000.0, "platform": "Reference"}: the project's force field as the
            reverse-KL / sampling-efficiency target (built only when a loss or eval_samples needs it)

or ``{"stages": [run, run, ...]}``: each stage starts from the previous stage's fields (its
sections merged key by key) and changes what it gives; every stage after the first starts from
the previous stage's model (``model.init_from`` = ``runs/<previous name>/model.safetensors``)
unless it names another. Paths inside a config (``data.frames``, ``model.init_from``) are relative
to the project folder.

Each stage runs in ``runs/<name>/`` (``config.json``, ``log.jsonl``, ``checkpoints/``,
``model.safetensors``, ``summary.json``; smoothflow_torch.training.Trainer). A rerun resumes
every unfinished stage from its newest checkpoint and skips finished ones; ``restart`` starts
over. The last stage's model is copied to ``model.safetensors`` in the project folder.
:func:`export_checkpoint` writes the stage in progress, as of its newest checkpoint, as an
interim model (to run or evaluate a training that has not finished).
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ..training import TrainConfig, Trainer
from . import data as pdata
from .hot_frames import load_positions
from .model import build_flow, model_section, spread_indices
from .project import Project

DATA_DEFAULTS = {"frames": "data/frames.npz", "max_train_frames": None, "weight_power": 1.0,
                 "curvature_frames": None, "force_matching_frames": None}
TARGET_DEFAULTS = {"high_energy": 1000.0, "platform": "Reference"}
MERGED_SECTIONS = ("model", "data", "target", "weights")


def default_config() -> dict:
    """The schedule of the alanine-dipeptide smooth flow shipped until 2026-12-03 (three stages,
    12 300 steps of batch 256: likelihood with weak force matching, then stronger force matching
    twice; K = 8, 2 x 64), with two angle blocks: a cheaper start than the study's current
    five-stage recipe (docs/pipeline.md). Edit ``iterations`` for a quicker first try."""
    stage1 = {
        "name": "stage1", "seed": 0, "iterations": 10000, "batch_size": 256, "reverse_kl_batch_size": 128,
        "weights": {"nll": 1.0, "force_matching": 2e-4, "reverse_kl": 0.0, "tail_matching": 0.0},
        "force_units": "reduced", "force_matching_from": 1000, "lr": 1e-3, "lr_schedule": "cosine",
        "lr_min": 1e-5, "warmup": 200, "grad_clip": 100.0, "eval_every": 500, "eval_frames": 2000,
        "eval_batch_size": 250, "eval_samples": 500, "checkpoint_every": 500, "keep_checkpoints": 2, "threads": 1,
        "progress": True,
        "model": {"transform": "smooth", "direction": "density", "scheme": "ic_coupled", "n_torsion_blocks": 4,
                  "n_angle_blocks": 2, "n_components": 8, "hidden": [64, 64], "activation": "silu",
                  "bond_padding": 1.0, "prior": {"kind": "truncated_normal", "width": 1.0},
                  "support": {"policy": "wall", "margin": 0.01, "angle_margin": 0.1, "wall_constant": 1000.0},
                  "smooth": {"s_min": 0.01, "alpha_min": 1.0, "c_max": 0.99, "beta": 1}},
        "data": dict(DATA_DEFAULTS), "target": dict(TARGET_DEFAULTS)}
    stage2 = {"name": "stage2", "iterations": 1500, "weights": {"force_matching": 2e-3}, "force_matching_from": 0,
              "lr": 3e-4, "warmup": 50}
    stage3 = {"name": "final", "iterations": 800, "weights": {"force_matching": 4e-3}, "lr": 1e-4}
    return {"_comment": "Three stages (smoothflow_torch/pipeline/train.py; docs/pipeline.md): each stage starts "
                        "from the previous one's fields and model.", "stages": [stage1, stage2, stage3]}


def _merge(base: dict, change: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in change.items():
        if k in MERGED_SECTIONS and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **copy.deepcopy(v)}
        else:
            out[k] = copy.deepcopy(v)
    return out


def stages(config) -> List[TrainConfig]:
    """The stages of a config (a dict, or a path to its JSON), validated; ``_``-keys are comments."""
    if not isinstance(config, dict):
        path = Path(config)
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    runs = config["stages"] if "stages" in config else [config]
    if set(config) - {"stages"} and "stages" in config:
        raise ValueError(f"a staged config holds only 'stages', not {sorted(set(config) - {'stages'})}")
    if not runs:
        raise ValueError("'stages' is empty")
    out, current, names = [], {}, []
    for i, run in enumerate(runs):
        run = {k: v for k, v in run.items() if not k.startswith("_")}
        current = _merge(current, run)
        if i > 0 and "init_from" not in run.get("model", {}):
            current["model"] = {**current.get("model", {}), "init_from": f"runs/{names[-1]}/model.safetensors"}
        if current.get("name") in names:
            raise ValueError(f"stage {i} has the name {current.get('name')!r} of an earlier stage: name every stage")
        try:
            cfg = TrainConfig.from_dict(current)
            model_section(cfg.model)
            section(cfg.data, DATA_DEFAULTS, "data")
            section(cfg.target, TARGET_DEFAULTS, "target")
        except (TypeError, ValueError) as e:
            raise ValueError(f"stage {i} ({current.get('name')}): {e}") from None
        names.append(cfg.name)
        out.append(cfg)
    return out


def section(given: dict, defaults: dict, where: str, extra=()) -> dict:
    """A config section with its defaults; a key in neither ``defaults`` nor ``extra`` is an
    error naming it (the alanine study reads its configs with this too)."""
    unknown = sorted(set(given) - set(defaults) - set(extra))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(set(defaults) | set(extra))}")
    return {**defaults, **given}


def training_arrays(frames: pdata.Frames, max_frames: Optional[int], weight_power: float = 1.0):
    """(positions, forces, weights) of the training frames, thinned to ``max_frames`` evenly
    spaced ones when there are more, the weights raised to ``weight_power`` (in [0, 1]) and
    scaled to mean 1."""
    g = float(weight_power)
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"data.weight_power must be in [0, 1] (1: the Boltzmann weights, 0: the frames "
                         f"as sampled), got {weight_power}")
    pos, frc, wts = frames.positions, frames.forces, frames.weights
    if max_frames and max_frames < len(pos):
        idx = spread_indices(len(pos), int(max_frames))
        pos, frc, wts = pos[idx], frc[idx], wts[idx]
    if g != 1.0:
        wts = wts ** g
        wts = wts / wts.mean()
    return pos, frc, wts


def needs_target(config: TrainConfig) -> bool:
    """Whether a run needs the force field as its target: a loss or an evaluation on flow samples."""
    return bool(config.weights["reverse_kl"] or config.weights["tail_matching"]
                or config.weights["alpha_divergence"] or config.eval_samples
                or config.force_matching_noise or config.force_matching_extra_batch)


def _extra_frames(project: Project, spec, key: str, provenance: dict):
    """The positions of a data section's extra frames (``spec``: a file or a list, relative to the
    project; none when empty), recorded under ``provenance[key]`` with their SHA-256."""
    if not spec:
        return None
    files = spec if isinstance(spec, list) else [spec]
    paths = [project.resolve(f) for f in files]
    frames = torch.from_numpy(load_positions(paths, project.n_atoms))
    provenance[key] = {"files": [str(f) for f in files], "frames": int(len(frames)),
                       "sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]}
    return frames


def setup(project: Project, config: TrainConfig) -> Trainer:
    """The data, flow and target of one stage, as a Trainer writing to ``runs/<name>/``."""
    d = section(config.data, DATA_DEFAULTS, "data")
    t = section(config.target, TARGET_DEFAULTS, "target")
    frames = project.resolve(d["frames"])
    train = pdata.load(frames, project.kT, project.n_atoms, "train")
    test = pdata.load(frames, project.kT, project.n_atoms, "test")
    pos, frc, wts = training_arrays(train, d["max_train_frames"], d["weight_power"])
    flow = build_flow(config.model, project.zmatrix, project.meta["atoms"], project.temperature, pos, config.seed,
                      base=project.path, train_weights=wts)
    target = None
    if needs_target(config):
        from ..openmm_bridge import OpenMMEnergy
        target = OpenMMEnergy(project.system(), temperature=project.temperature, platform=t["platform"],
                              high_energy=t["high_energy"])
    provenance = {"pipeline": {"project": project.name, "forcefield": project.forcefield_files,
                               "temperature": project.temperature},
                  "data": {"file": str(d["frames"]), "sha256": hashlib.sha256(frames.read_bytes()).hexdigest(),
                           "train_frames": int(len(pos)), "test_frames": int(len(test)),
                           "weight_power": float(d["weight_power"])},
                  "target": {"force_field": project.forcefield_label, **t},
                  "flow": {"n_parameters": int(sum(p.numel() for p in flow.parameters())),
                           "n_layers": len(flow.layers)}}
    summary = project.data_dir / "summary.json"
    if summary.exists():
        provenance["data"]["generation"] = json.loads(summary.read_text())
    curvature_frames = _extra_frames(project, d["curvature_frames"], "curvature_frames", provenance)
    force_matching_frames = _extra_frames(project, d["force_matching_frames"], "force_matching_frames", provenance)
    return Trainer(flow, config, project.path / "runs" / config.name,
                   train_data=(torch.from_numpy(pos), torch.from_numpy(frc), torch.from_numpy(wts)),
                   test_data=(torch.from_numpy(test.positions), torch.from_numpy(test.forces),
                              torch.from_numpy(test.weights)),
                   target=target, provenance=provenance, curvature_frames=curvature_frames,
                   force_matching_frames=force_matching_frames)


def train(project, config=None, iterations: Optional[int] = None, restart: bool = False,
          stop_at: Optional[int] = None, max_minutes: Optional[float] = None, threads: Optional[int] = None,
          progress: Optional[bool] = None, log=sys.stderr) -> List[dict]:
    """Train every stage of ``config`` (a dict or a JSON file; default the project's ``train.json``;
    module docstring).

    ``iterations`` overrides every stage's (smoke tests); ``stop_at`` / ``max_minutes`` stop the
    stage in progress with a checkpoint (rerun to continue). Returns the stages' summaries."""
    project = project if isinstance(project, Project) else Project(project)
    # a config file given is relative to the caller; the paths inside it to the project
    runs = stages(config if isinstance(config, dict) else Path(config) if config else project.path / "train.json")
    summaries, t_start = [], time.time()
    for cfg in runs:
        if iterations is not None:
            cfg.iterations = int(iterations)
        if threads is not None:
            cfg.threads = int(threads)
        if progress is not None:
            cfg.progress = bool(progress)
        cfg.validate()
        out = project.path / "runs" / cfg.name
        if not restart and (out / "summary.json").exists() and (out / "model.safetensors").exists():
            done = json.loads((out / "summary.json").read_text())
            if done.get("completed") and done.get("steps") == cfg.iterations:
                summaries.append(done)
                continue
        t0 = time.time()
        trainer = setup(project, cfg)
        if log:
            print(f"{cfg.name}: {len(trainer.flow.layers)} layers, "
                  f"{sum(p.numel() for p in trainer.flow.parameters())} parameters, "
                  f"{len(trainer.train_positions)} training frames; setup {time.time() - t0:.1f} s; writing {out}",
                  file=log)
        left = None if max_minutes is None else max(0.0, 60 * max_minutes - (time.time() - t_start))
        summary = trainer.train(resume=not restart, stop_at=stop_at, max_seconds=left)
        summaries.append(summary)
        if not summary["completed"]:
            if log:
                print(f"{cfg.name}: stopped at step {summary['steps']} of {cfg.iterations}; rerun to continue",
                      file=log)
            return summaries
    final = project.path / "runs" / runs[-1].name / "model.safetensors"
    if not project.model_path.exists() or project.model_path.read_bytes() != final.read_bytes():
        shutil.copyfile(final, project.model_path)
    return summaries


def export_checkpoint(project, config=None, out=None, log=sys.stderr) -> Path:
    """Write the newest checkpoint of the first unfinished stage of ``config`` (default the
    project's ``train.json``) as an interim model file ``out`` (default
    ``runs/<stage>/interim.safetensors``), without training. The file is what the stage would
    export at that step (wall edge forces included), its ``training`` metadata marked
    ``"completed": false`` with the step. Refused when every stage has finished (the model is
    then ``runs/<last>/model.safetensors``) or the stage in progress has no checkpoint yet."""
    project = project if isinstance(project, Project) else Project(project)
    runs = stages(config if isinstance(config, dict) else Path(config) if config else project.path / "train.json")
    for cfg in runs:
        run_dir = project.path / "runs" / cfg.name
        summary = run_dir / "summary.json"
        if summary.exists() and (run_dir / "model.safetensors").exists():
            done = json.loads(summary.read_text())
            if done.get("completed") and done.get("steps") == cfg.iterations:
                continue
        checkpoints = sorted((run_dir / "checkpoints").glob("step_*.pt"))
        if not checkpoints:
            raise FileNotFoundError(f"stage {cfg.name} has no checkpoint yet in {run_dir / 'checkpoints'}: "
                                    f"nothing to export")
        cfg.progress = False
        trainer = setup(project, cfg)
        trainer.load_checkpoint(checkpoints[-1])
        path = Path(out) if out else run_dir / "interim.safetensors"
        trainer.export(path, completed=False)
        if log:
            print(f"{cfg.name}: step {trainer.step} of {cfg.iterations} ({checkpoints[-1].name}) written to {path}",
                  file=log)
        return path
    raise ValueError(f"every stage has finished: the model is runs/{runs[-1].name}/model.safetensors")
