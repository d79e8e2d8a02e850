"""The wall's edge forces: the flow's own restoring force at the edge of the wall zone.

Under the ``wall`` policy (``docs/model-format.md`` 5.2) the flow sees the clamped c(u) of each
bond and angle, and c' falls from 1 to 0 over a width of about m past the zone's edge: the flow's
restoring force f'(c) c' fades there before the harmonic term k/2 (u - c)^2 has grown, so an atom
that reaches the zone meets almost no wall (``docs/flow-math.md``, "Curvature in the zone"). The
wall's linear term g |u - c| takes over what c' removes: with g equal to the flow's force at the
edge, dE/du = f'(c) c' - g (1 - c') below the zone's lower edge stays near -g, and the c'' terms
of the curvature cancel at the join.

f' depends on the other coordinates; g is its median over data frames, each frame's coordinate
set to the edge (u = 2m below, 1 - 2m above), the others as in the frame. Negative restoring
forces (a flow whose energy falls towards a face) give g = 0, the plain harmonic wall.

    python -m smoothflow_torch.edge_force MODEL FRAMES.npz [--out MODEL] [--frames 200] [--angle-margin M]

adds edge forces to a model file (FRAMES: an ``.npz`` with ``positions`` (n, N, 3) in nm, model
atom order, such as a pipeline project's ``data/frames.npz`` with ``--atoms-from`` the project).
``--angle-margin`` first gives the angles this margin of their own, so their edges move and their
forces are measured at the new edges.
"""
import argparse
import json
import os
import sys
from typing import Tuple

import numpy as np
import torch

from .flow import SmoothFlow, wall_clamp

#: Frames of the median by default (the flow's edge force varies by up to 10 % between
#: frames of alanine dipeptide: more frames change g little).
DEFAULT_FRAMES = 200


def edge_gradients(flow: SmoothFlow, positions) -> Tuple[torch.Tensor, torch.Tensor]:
    """dE_flow/du_d (kJ/mol per unit of u) of every interval dimension d of every frame, with
    u_d at the zone's lower edge 2m and at its upper edge 1 - 2m: two (n, 2N - 3) tensors."""
    with torch.no_grad():
        u = flow.internal_coordinates(positions)
    nI, m = flow.n_interval, flow.wall_margins()
    # frames inside the zone already: the point the flow sees
    u = torch.cat([wall_clamp(u[:, :nI], m), u[:, nI:]], dim=-1)
    out = []
    for edge in (2.0 * m, 1.0 - 2.0 * m):             # (nI,): each dimension's own edge
        v = u.unsqueeze(0).repeat(nI, 1, 1)             # (nI, n, D): copy d has u_d at the edge
        idx = torch.arange(nI)
        v[idx, :, idx] = edge.unsqueeze(1)
        v = v.reshape(-1, u.shape[1]).requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(flow.energy_of_u(v).sum(), v)
        g = g.reshape(nI, u.shape[0], -1)[idx, :, idx]  # (nI, n)
        out.append(g.T.detach())
    return out[0], out[1]


def edge_forces(flow: SmoothFlow, positions, frames: int = DEFAULT_FRAMES, seed: int = 0
                ) -> Tuple[np.ndarray, np.ndarray]:
    """The edge forces (lower, upper), 2N - 3 each, >= 0, kJ/mol per unit of u: the median over
    ``frames`` frames of ``positions`` (chosen at random, ``seed``) of the flow's restoring force at
    each edge (-dE/du at the lower edge, dE/du at the upper one), 0 where that is negative."""
    x = torch.as_tensor(np.asarray(positions), dtype=flow.dtype)
    if x.ndim != 3 or x.shape[1:] != (flow.n_atoms, 3):
        raise ValueError(f"positions must be (n, {flow.n_atoms}, 3) in model atom order, got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("edge forces need at least one frame")
    if len(x) > frames:
        x = x[torch.from_numpy(np.random.default_rng(seed).choice(len(x), frames, replace=False))]
    lo, hi = edge_gradients(flow, x)
    lower = (-lo).median(dim=0).values.clamp(min=0)
    upper = hi.median(dim=0).values.clamp(min=0)
    return lower.numpy(), upper.numpy()


def set_edge_forces(flow: SmoothFlow, positions, frames: int = DEFAULT_FRAMES, seed: int = 0) -> dict:
    """Give a ``wall`` flow the edge forces of ``positions``; returns what was done (for provenance)."""
    if flow.support_policy != "wall":
        raise ValueError("edge forces act only under the wall policy; this flow's is 'error'")
    # the flow's own force first: a flow that already has edge forces is measured without them
    flow.set_support("wall", flow.margin, flow.wall_constant, angle_margin=flow.angle_margin)
    lower, upper = edge_forces(flow, positions, frames, seed)
    flow.set_support("wall", flow.margin, flow.wall_constant, lower, upper, angle_margin=flow.angle_margin)
    return {"frames": int(min(frames, len(positions))), "seed": int(seed), "statistic": "median",
            "lower_max": float(lower.max()), "upper_max": float(upper.max())}


def main(argv=None) -> int:
    from .export import export_model, flow_from_config, read_model_bytes, read_model_file

    p = argparse.ArgumentParser(prog="python -m smoothflow_torch.edge_force", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file (.safetensors) with the wall policy")
    p.add_argument("frames", help=".npz with positions (n, N, 3), nm, in model atom order")
    p.add_argument("--key", default="positions", help="the array of the .npz (default positions)")
    p.add_argument("--out", help="where to write the model (default: replace MODEL)")
    p.add_argument("--frames", dest="n", type=int, default=DEFAULT_FRAMES, help="frames of the median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--angle-margin", type=float, default=None,
                   help="set the angles' wall margin first (docs/model-format.md 5.2; e.g. 0.1)")
    a = p.parse_args(argv)
    if a.n < 1:
        p.error("--frames must be at least 1")
    config, metadata, tensors = read_model_bytes(read_model_file(a.model))
    flow = flow_from_config(config, tensors)
    with np.load(a.frames) as d:
        if a.key not in d:
            p.error(f"{a.frames} has no array {a.key!r} (it has {sorted(d.files)})")
        positions = d[a.key]
    try:
        if a.angle_margin is not None:
            flow.set_support(flow.support_policy, flow.margin, flow.wall_constant, angle_margin=a.angle_margin)
        done = set_edge_forces(flow, positions, a.n, a.seed)
    except ValueError as e:
        p.error(f"{a.model}: {e}")
    extra = {k: v for k, v in metadata.items() if k not in ("format", "format_version", "config")}
    # where the edge forces came from (the training metadata, when present, is the flow's)
    extra["edge_forces"] = json.dumps({**done, "frames_file": os.path.basename(a.frames), "key": a.key})
    export_model(flow, a.out or a.model, extra_metadata=extra)
    print(f"{a.out or a.model}: edge forces from {done['frames']} frames; largest {done['lower_max']:.4g} (lower), "
          f"{done['upper_max']:.4g} (upper) kJ/mol per unit of u")
    return 0


if __name__ == "__main__":
    sys.exit(main())
