"""Does a flow fit its training frames better than the held-out ones? The weighted NLL on a
random subset of the training frames against the held-out frames (the last 20 % of every
chain), with the force RMSE beside it.

A gap that shrinks when the training set grows is memorization; a gap that stays is the split
itself: frames late in a chain differ from early ones in slow degrees of freedom.

Usage (from studies/): python -m alanine_dipeptide.nll_gap MODEL [MODEL ...] [--frames 12000]
       [--seed 0] [--setting obc]
"""
import argparse

import numpy as np
import torch
from smoothflow_torch import load_model

from . import data
from .evaluate import held_out_metrics


def subset(frames: data.Frames, n: int, seed: int) -> data.Frames:
    """n frames drawn without replacement (all of them when n >= len(frames))."""
    if n >= len(frames):
        return frames
    idx = np.sort(np.random.default_rng(seed).choice(len(frames), n, replace=False))
    return data.Frames(frames.positions[idx], frames.forces[idx], frames.energies[idx], frames.weights[idx])


def nll_gap(flow, train: data.Frames, test: data.Frames, n_frames: int, seed: int) -> dict:
    """Weighted NLL (nats) and force RMSE on n_frames training frames and on the held-out frames."""
    a = held_out_metrics(flow, subset(train, n_frames, seed))
    b = held_out_metrics(flow, test)
    return {"train_nll": a["nll_nats"], "test_nll": b["nll_nats"], "gap": b["nll_nats"] - a["nll_nats"],
            "train_force_rmse": a["force_rmse_kj_mol_nm"], "test_force_rmse": b["force_rmse_kj_mol_nm"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frames", type=int, default=12_000, help="training frames to draw (the held-out set is used whole)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", default="obc")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = data.load(args.setting, "train"), data.load(args.setting, "test")
    print("| model | NLL train (nats) | NLL held-out (nats) | gap | force RMSE train / held-out (kJ/mol/nm) |")
    print("|---|---|---|---|---|")
    for path in args.models:
        r = nll_gap(load_model(path), train, test, args.frames, args.seed)
        print(f"| {path} | {r['train_nll']:.3f} | {r['test_nll']:.3f} | {r['gap']:.3f} | "
              f"{r['train_force_rmse']:.1f} / {r['test_force_rmse']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
