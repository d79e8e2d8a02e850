"""Train a free-form flow (two EGNNs, encoder f and decoder g) on a particle data set.

    python -m smoothflow_torch.particles.train CONFIG.json --out DIR

CONFIG is a JSON object; every key of ``DEFAULTS`` may be given, ``system`` and ``data`` must
be. DIR receives ``config.json``, ``log.jsonl`` (one line per step), ``checkpoints/step_*.pt``
(atomic; the newest ``keep_checkpoints`` are kept) and, at the end, ``model.safetensors`` (the
encoder f as a free-form SmoothFlow model file in reduced units, kT = 1: the MD potential of
docs/free-form-flows.md section 7) and ``result.json`` with the held-out NLL by the exact
log-determinant and the sign of det J over the held-out data, beside the NLL of an isotropic
Gaussian fitted to the training frames on the same frames (the baseline a flow must beat).
Running the same command again resumes from the newest checkpoint (bit-identical to an
uninterrupted run: the batch / probe-vector generator's state is in the checkpoint); a config
that differs in anything but ``steps`` and the evaluation settings is refused.

    python -m smoothflow_torch.particles.train CONFIG.json --out DIR --export-only \
        [--checkpoint step_N.pt] [--model PATH]

exports a checkpoint (default the newest in DIR/checkpoints) as a model file (default
DIR/model.safetensors) without training and without writing anything else into DIR, so it may
be run beside a training that is still going on.
Model, loss and conventions: docs/free-form-flows.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .egnn import EGNN, remove_mean
from .fff import exact_nll, fff_loss
from .systems import REDUCED_TEMPERATURE_KELVIN, SYSTEMS

CHECKPOINT_FORMAT = "smoothflow-fff-checkpoint"
#: the model file a run writes at the end of training (and --export-only by default)
MODEL_FILE = "model.safetensors"

DEFAULTS = dict(
    system=None,            # "dw4" or "lj13" (sets n, d)
    data=None,              # the .npz of particles.data (keys positions, split)
    hidden=32,
    layers=3,
    distance_scale=None,    # None: the data's mean pair distance. Right for DW4 (its wells are on
                            # that scale); LJ13's structure is the wall and first shell, 0.8-1.3 r_m,
                            # which its mean pair distance (2.08) squeezes into d^2/s^2 in 0.15-0.4,
                            # where the initial messages barely vary: LJ13 trains with s = 0.5
    coord_gain=0.01,
    beta=10.0,              # reconstruction weight
    lr=1e-3,
    lr_schedule="constant", # "constant", or "cosine": from lr to lr_min over the steps after warmup
    lr_min=1e-5,
    warmup=0,               # linear warmup steps (both schedules)
    grad_clip=10.0,         # max gradient norm (0: none)
    steps=1000,
    batch=256,
    seed=0,
    dtype="float32",        # training precision; the final evaluation is in float64
    checkpoint_every=200,
    keep_checkpoints=2,
    eval_every=0,           # validation NLL every so many steps (0: only at the end)
    eval_frames=2000,       # validation frames (evenly spaced) of the periodic evaluation
    final_frames=0,         # frames of each held-out split in the final evaluation (0: all),
                            # evenly spaced over the split like eval_frames
    eval_chunk=1000,
)
#: keys that may change when a run is resumed (they do not change the training trajectory)
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "eval_every",
                     "eval_frames", "final_frames", "eval_chunk"}


def load_config(path_or_dict) -> dict:
    """The config with defaults filled in; unknown keys and missing required keys are errors."""
    user = path_or_dict if isinstance(path_or_dict, dict) else json.loads(Path(path_or_dict).read_text())
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; known keys are {sorted(DEFAULTS)}")
    cfg = dict(DEFAULTS, **user)
    for key in ("system", "data"):
        if cfg[key] is None:
            raise ValueError(f"config: '{key}' is required")
    if cfg["system"] not in SYSTEMS:
        raise ValueError(f"config: system must be one of {sorted(SYSTEMS)}, got {cfg['system']!r}")
    if cfg["dtype"] not in ("float32", "float64"):
        raise ValueError(f"config: dtype must be 'float32' or 'float64', got {cfg['dtype']!r}")
    for key in ("steps", "batch", "checkpoint_every", "keep_checkpoints", "eval_frames", "eval_chunk"):
        if int(cfg[key]) != cfg[key] or cfg[key] < 1:
            raise ValueError(f"config: '{key}' must be a positive integer, got {cfg[key]!r}")
    if not cfg["beta"] >= 0 or not cfg["lr"] > 0:
        raise ValueError(f"config: beta must be >= 0 and lr > 0, got {cfg['beta']}, {cfg['lr']}")
    if cfg["lr_schedule"] not in ("constant", "cosine"):
        raise ValueError(f"config: lr_schedule must be 'constant' or 'cosine', got {cfg['lr_schedule']!r}")
    if not 0 <= cfg["lr_min"] <= cfg["lr"]:
        raise ValueError(f"config: lr_min must be in [0, lr], got {cfg['lr_min']!r}")
    if int(cfg["warmup"]) != cfg["warmup"] or cfg["warmup"] < 0:
        raise ValueError(f"config: 'warmup' must be an integer >= 0, got {cfg['warmup']!r}")
    return cfg


def config_differences(old: dict, new: dict, allowed=RESUMABLE_CHANGES) -> list:
    """The keys (outside ``allowed``) in which a checkpoint's config ``old`` differs from ``new``;
    a cosine schedule ends at ``steps``, so there ``steps`` changes the trajectory too."""
    allowed = set(allowed) - ({"steps"} if new.get("lr_schedule") == "cosine" else set())
    return sorted(k for k in DEFAULTS if k not in allowed and old.get(k, DEFAULTS[k]) != new.get(k))


def learning_rate(cfg: dict, step: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then constant or a cosine from
    lr to lr_min that ends at ``steps`` (so with "cosine", ``steps`` fixes the trajectory)."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    if cfg["lr_schedule"] == "constant":
        return cfg["lr"]
    span = max(1, cfg["steps"] - cfg["warmup"])
    t = min(step - cfg["warmup"], span) / span
    return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (1.0 + math.cos(math.pi * t))


def load_data(cfg: dict) -> dict:
    """Positions by split (train 0, validation 1, test 2), checked against the system's shape."""
    system = SYSTEMS[cfg["system"]]
    with np.load(cfg["data"]) as f:
        for key in ("positions", "split"):
            if key not in f:
                raise ValueError(f"{cfg['data']}: no '{key}' array (a particles.data file is expected)")
        pos, split = f["positions"], f["split"]
    if pos.shape[1:] != (system.n_particles, system.spatial_dim):
        raise ValueError(f"{cfg['data']}: positions have shape {pos.shape}, system {system.name} "
                         f"needs (M, {system.n_particles}, {system.spatial_dim})")
    out = {}
    for name, code in (("train", 0), ("val", 1), ("test", 2)):
        out[name] = remove_mean(torch.as_tensor(pos[split == code], dtype=torch.float64))
    if len(out["train"]) == 0:
        raise ValueError(f"{cfg['data']}: no training frames (split == 0)")
    return out


def spread_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` frames evenly spaced over ``x`` (all of them when k is 0 or >= len(x)).

    A split is whole chains in time order, so its first k frames are one correlated stretch
    of one chain: on LJ13 the first 1 000 validation frames put even an isotropic Gaussian fit
    0.2 nats above its value on the whole split. Evenly spaced frames estimate the split's mean.
    """
    if k == 0 or k >= len(x):
        return x
    return x[torch.linspace(0, len(x) - 1, k).round().long()]


def gaussian_fit_nll(train: torch.Tensor, x: torch.Tensor) -> float:
    """Mean NLL on ``x`` of the isotropic Gaussian on the centre-of-mass-free subspace fitted to
    ``train`` (one variance for all D dofs): the baseline a flow must beat on the same frames."""
    n, d = train.shape[-2:]
    dim = (n - 1) * d
    var = float((train ** 2).sum((-2, -1)).mean()) / dim
    sq = (x ** 2).sum((-2, -1)).double()
    return float((0.5 * sq / var + 0.5 * dim * math.log(2.0 * math.pi * var)).mean())


def mean_pair_distance(x: torch.Tensor) -> float:
    n = x.shape[-2]
    i, j = torch.triu_indices(n, n, 1)
    return float((x[:, i] - x[:, j]).norm(dim=-1).mean())


def build_models(cfg: dict, distance_scale: float, dtype):
    system = SYSTEMS[cfg["system"]]
    kw = dict(hidden=cfg["hidden"], layers=cfg["layers"], distance_scale=distance_scale,
              coord_gain=cfg["coord_gain"])
    f = EGNN(system.n_particles, system.spatial_dim, **kw).to(dtype)
    g = EGNN(system.n_particles, system.spatial_dim, **kw).to(dtype)
    return f, g


def evaluate(f: EGNN, g: EGNN, x: torch.Tensor, chunk: int) -> dict:
    """Held-out NLL (exact log-det, float64), its standard error, sign fractions, reconstruction."""
    dtype = next(f.parameters()).dtype
    f64, g64 = f.double(), g.double()
    try:
        with torch.no_grad():      # forward-mode products still run; no graph is kept (memory)
            out = exact_nll(f64, x, chunk)
            nll, sign = out["nll"], out["sign"]
            rec = ((g64(out["z"]) - x) ** 2).sum((-2, -1))
    finally:
        f.to(dtype), g.to(dtype)
    finite = torch.isfinite(nll)
    return {"frames": int(len(x)), "nll": float(nll[finite].mean()),
            "nll_sem": float(nll[finite].std() / math.sqrt(max(int(finite.sum()), 1))),
            "nonfinite": int((~finite).sum()),
            "sign_positive_fraction": float((sign > 0).double().mean()),
            "sign_negative_fraction": float((sign < 0).double().mean()),
            "reconstruction_mse": float(rec.mean())}


def particle_atoms(system: str) -> list:
    """The model file's ``atoms`` for a system: particles named LJ1..LJ13 (DW1..DW4) in one
    residue named after the system. The element is left empty: reduced-unit particles of mass 1
    and r_m = 1 nm are no chemical element, and the force's Topology mapping reads an empty
    element as "not given" (a Topology's elements are then not checked against it)."""
    spec = SYSTEMS[system]
    prefix = {"lj13": "LJ", "dw4": "DW"}.get(spec.name, spec.name.upper())
    return [{"name": f"{prefix}{i + 1}", "residue": spec.name.upper(), "residue_index": 0,
             "element": ""} for i in range(spec.n_particles)]


def export_model(f: EGNN, path, cfg: dict, step: int, source: str = "") -> Path:
    """Write the encoder ``f`` of a run as a free-form model file at ``path`` (atomically).

    Reduced units (docs/particle-systems.md section 2): the temperature is 1 / R kelvin, so that
    kT = 1 kJ/mol and U = -log p(x) in kT, with no offset. The metadata records the training
    step, the run's length and config, and the checkpoint it came from (``source``), so that a
    study can say which model it ran.
    """
    from .export import export_free_form

    meta = {"fff_step": str(int(step)), "fff_steps": str(int(cfg["steps"])),
            "fff_config": json.dumps(cfg, sort_keys=True), "fff_checkpoint": str(source),
            "units": "reduced: length nm, energy kJ/mol = kT, mass amu, time ps (kT = 1 at T = 1/R K)"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_free_form(f, path, temperature=REDUCED_TEMPERATURE_KELVIN,
                     atoms=particle_atoms(cfg["system"]), extra_metadata=meta)
    return path


def _resolve_checkpoint(out_dir, checkpoint=None) -> Path:
    """``checkpoint`` as given if it exists, else its name in OUT/checkpoints; without one the
    newest checkpoint of OUT."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    if checkpoint is None:
        found = sorted(ckpt_dir.glob("step_*.pt")) if ckpt_dir.is_dir() else []
        if not found:
            raise FileNotFoundError(f"{ckpt_dir}: no checkpoints (step_*.pt) to export")
        return found[-1]
    for candidate in (Path(checkpoint), ckpt_dir / checkpoint):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"checkpoint {checkpoint!r} is neither a file nor in {ckpt_dir}")


def export_checkpoint(config, out_dir, checkpoint=None, model_path=None) -> Path:
    """Export the encoder of a run's checkpoint as a model file; returns the file's path.

    ``config`` (a dict or a JSON path) must be the run's (the checkpoint's config may differ only
    in the keys a resume may change); ``checkpoint`` a path or a name in OUT/checkpoints (default:
    the newest); ``model_path`` defaults to OUT/model.safetensors. Only the checkpoint is read and
    only the model file written (not the data, the log or config.json), so a training that is
    still running in OUT is not disturbed.
    """
    cfg = load_config(config)
    path = _resolve_checkpoint(out_dir, checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a free-form flow checkpoint (format {state.get('format')!r})")
    diff = config_differences(state["config"], cfg)
    if diff:
        raise ValueError(f"{path}: the config differs from the checkpoint's in {diff}; give the "
                         f"run's own config")
    ckpt_cfg = dict(DEFAULTS, **state["config"])
    system = SYSTEMS[ckpt_cfg["system"]]
    f = EGNN(system.n_particles, system.spatial_dim, hidden=ckpt_cfg["hidden"],
             layers=ckpt_cfg["layers"], distance_scale=state["distance_scale"],
             coord_gain=ckpt_cfg["coord_gain"]).to(torch.float32 if ckpt_cfg["dtype"] == "float32"
                                                   else torch.float64)
    f.load_state_dict(state["f"])
    target = Path(model_path) if model_path else Path(out_dir) / MODEL_FILE
    return export_model(f, target, ckpt_cfg, state["step"], source=str(path))


class Trainer:
    """State of one run: models, optimizer, generator, step; checkpoints and the log."""

    def __init__(self, cfg: dict, out_dir, progress: bool = True):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.data = load_data(cfg)
        self.dtype = torch.float32 if cfg["dtype"] == "float32" else torch.float64
        scale = cfg["distance_scale"] or mean_pair_distance(self.data["train"][:10000])
        self.distance_scale = float(scale)
        torch.manual_seed(cfg["seed"])
        self.f, self.g = build_models(cfg, self.distance_scale, self.dtype)
        self.opt = torch.optim.Adam(list(self.f.parameters()) + list(self.g.parameters()), lr=cfg["lr"])
        self.gen = torch.Generator().manual_seed(cfg["seed"] + 1)
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def checkpoints(self):
        return sorted(self.ckpt_dir.glob("step_*.pt")) if self.ckpt_dir.is_dir() else []

    def save_checkpoint(self) -> Path:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        state = {"format": CHECKPOINT_FORMAT, "step": self.step, "config": self.cfg,
                 "distance_scale": self.distance_scale, "f": self.f.state_dict(),
                 "g": self.g.state_dict(), "optimizer": self.opt.state_dict(),
                 "generator": self.gen.get_state()}
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in self.checkpoints()[:-self.cfg["keep_checkpoints"]]:
            old.unlink()
        return path

    def load_checkpoint(self, path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a free-form flow checkpoint (format {state.get('format')!r})")
        diff = config_differences(state["config"], self.cfg)
        if diff:
            raise ValueError(f"{path}: the config differs from the checkpoint's in {diff}; use a "
                             f"new --out directory or the checkpoint's values")
        self.f.load_state_dict(state["f"])
        self.g.load_state_dict(state["g"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.step = state["step"]
        self.distance_scale = state["distance_scale"]
        self._truncate_log()

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    def _truncate_log(self) -> None:
        """Keep the log lines of steps the checkpoint covers (a crash may have written more)."""
        if not self.log_path.exists():
            return
        keep = [l for l in self.log_path.read_text().splitlines()
                if l.strip() and json.loads(l)["step"] <= self.step]
        self.log_path.write_text("".join(l + "\n" for l in keep))

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict:
        x_all = self.data["train"]
        idx = torch.randint(len(x_all), (self.cfg["batch"],), generator=self.gen)
        x = x_all[idx].to(self.dtype)
        lr = learning_rate(self.cfg, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        parts = fff_loss(self.f, self.g, x, self.cfg["beta"], generator=self.gen)
        parts["loss"].backward()
        params = list(self.f.parameters()) + list(self.g.parameters())
        clip = self.cfg["grad_clip"]
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        self.opt.step()
        self.step += 1
        entry = {k: float(v.detach()) for k, v in parts.items()}
        entry.update(step=self.step, grad_norm=float(gnorm), lr=lr)
        return entry

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        ckpts = self.checkpoints()
        if ckpts:
            self.load_checkpoint(ckpts[-1])
        (self.out / "config.json").write_text(json.dumps(self.cfg, indent=2) + "\n")
        cfg = self.cfg
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg["steps"], initial=self.step, desc=f"fff {cfg['system']}",
                       dynamic_ncols=True)
        t0 = time.time()
        with self.log_path.open("a") as log:
            while self.step < cfg["steps"]:
                entry = self.train_step()
                if not math.isfinite(entry["loss"]):
                    raise FloatingPointError(f"step {self.step}: the loss is {entry['loss']}; "
                                             f"lower lr or raise beta")
                if cfg["eval_every"] and self.step % cfg["eval_every"] == 0 and len(self.data["val"]):
                    ev = evaluate(self.f, self.g, spread_frames(self.data["val"], cfg["eval_frames"]),
                                  cfg["eval_chunk"])
                    entry["val_nll"] = ev["nll"]
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{entry['loss']:.3f}", rec=f"{entry['reconstruction']:.2e}")
                if self.step % cfg["checkpoint_every"] == 0 or self.step == cfg["steps"]:
                    self.save_checkpoint()
        if bar is not None:
            bar.close()
        model = self.export()
        return {"train_seconds_this_session": time.time() - t0, "model": str(model)}

    def export(self, path=None) -> Path:
        """Write the encoder at the current step as a model file (default OUT/model.safetensors)."""
        ckpts = self.checkpoints()
        source = str(ckpts[-1]) if ckpts and ckpts[-1].name == f"step_{self.step:08d}.pt" else ""
        return export_model(self.f, path or self.out / MODEL_FILE, self.cfg, self.step, source)

    def final_evaluation(self) -> dict:
        n = self.cfg["final_frames"]
        result = {"step": self.step, "system": self.cfg["system"], "dof": self.f.dof,
                  "distance_scale": self.distance_scale}
        for split in ("val", "test"):
            x = self.data[split]
            if len(x):
                x = spread_frames(x, n)
                result[split] = evaluate(self.f, self.g, x, self.cfg["eval_chunk"])
                result[split]["gaussian_fit_nll"] = gaussian_fit_nll(self.data["train"], x)
        (self.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


def train(config, out_dir, progress: bool = True, evaluate_at_end: bool = True) -> dict:
    """Train (or resume) the run of ``config`` (a dict or a JSON path) in ``out_dir``."""
    trainer = Trainer(load_config(config), out_dir, progress)
    info = trainer.run()
    if evaluate_at_end:
        info.update(trainer.final_evaluation())
    return info


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="JSON config (keys: " + ", ".join(DEFAULTS) + ")")
    parser.add_argument("--out", required=True, help="run directory (resumed if it has checkpoints)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.add_argument("--export-only", action="store_true",
                        help="do not train: export a checkpoint's encoder as a model file")
    parser.add_argument("--checkpoint", help="with --export-only: a checkpoint file, or its name in "
                                             "OUT/checkpoints (default: the newest)")
    parser.add_argument("--model", help="with --export-only: where to write the model file "
                                        f"(default OUT/{MODEL_FILE})")
    args = parser.parse_args(argv)
    if not args.export_only and (args.checkpoint or args.model):
        parser.error("--checkpoint and --model go with --export-only")
    if args.export_only:
        print(export_checkpoint(args.config, args.out, args.checkpoint, args.model))
        return
    result = train(args.config, args.out, progress=not args.no_progress)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
