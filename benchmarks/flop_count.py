"""Floating-point operations and bytes moved per energy + forces evaluation of a model file.

Counted per molecule, from the model file's config alone (no timing):

Linear maps (exact)
    Every conditioner linear map of widths (i -> o): i*o multiply-adds and o bias adds
    forward, i*o multiply-adds backward (the gradient with respect to its input: the
    forces need the conditioning inputs' gradient, never the weights'). A multiply-add is
    2 flops.

Everything else (an op count, documented here, not measured)
    One flop per add, subtract, multiply, divide, compare or select. Transcendentals
    (exp, log, log1p, sin, cos, atan2, sqrt) are counted separately in ``transcendentals``
    and weigh 1 flop in ``flops`` (a lower bound: each costs 10-40 flops in a libm).
    Per element, forward + backward (OPS below):
      activation   silu 3 + 5 ops, 1 exp; tanh 0 + 3 ops, 1 transcendental;
                   softplus 1 + 4 ops, 2 transcendentals
      encoding     interval 2 + 1 ops; circular 1 + 3 ops, 2 transcendentals (cos, sin)
      smooth       per dimension and component: 25 ops, 1 exp for F and F' (forward),
                   40 ops backward (needs F''); parameters 10 + 12 ops, 4 transcendentals;
                   per dimension 1 log (log F'). A generative smooth layer runs F and F'
                   once per root-finding iteration on top (``inverse_iterations``, an
                   assumption: the bracketed Newton converges in 5-10 iterations at
                   double precision for well-conditioned transforms) plus 2 polishing steps.
      spline       per dimension: 40 + 60 ops, 2 logs, plus 8 ops per bin (softmax,
                   softplus, knots), 3 transcendentals per bin
      affine       per dimension: 20 + 20 ops, 4 transcendentals
      geometry     per Z-matrix row: bond 9 + 12 ops, angle 25 + 40, torsion 50 + 80;
                   3 transcendentals (sqrt, atan2) per row; log J: 2 logs per angle
                   and bond, 4 ops
      prior        truncated normal: 4 + 2 ops per interval dimension

Bytes
    ``weight_bytes``: every weight and bias once (8 bytes each in double). One evaluation
    streams them twice (forward, then backward), once per step for a whole batch if the
    implementation blocks over molecules: per molecule 2 * weight_bytes / n.
    ``activation_bytes``: per molecule, every layer's inputs, hidden activations and raw
    outputs written forward and read backward (8 bytes each, twice), plus positions and
    forces. The total per molecule at n molecules is 2 * weight_bytes / n + activation_bytes.

Free-form models (config ``kind`` "free_form", docs/model-format.md section 9)
    Per configuration, the count of core/src/sf_egnn.c's header (a multiply-add 2 flops),
    with n particles, d dimensions, H hidden, L layers, T = D = (n - 1) d tangents,
    S = T + 1 slots (values and tangents) and E = n (n - 1) edges:
        L (12 E S H^2 + 12 n S H^2) + (L - 1) 16 n S H^2     the linear maps, forward with
                                                             tangents, then reverse over them
        (8/3) T^3                                            LU of J_V and its inverse
    The elementwise work (SiLU and its two derivatives, the coordinate update, biases),
    O(E S (H + d)), a few per cent, is not counted: ``flops`` is a lower bound. Bytes: the
    weights once (8 bytes each) and the workspace of docs/model-format.md section 9.4,
    (D + 1) n (L + 10) (2H + d) + 2 D^2 doubles, per configuration.

Usage: python benchmarks/flop_count.py MODEL.safetensors [--inverse-iterations 8] [--json]
"""
from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

#: Per-element op counts (forward, backward) and transcendentals, see the docstring.
OPS = {
    "silu": (3, 5, 1), "tanh": (0, 3, 1), "softplus": (1, 4, 2),
    "encode_interval": (2, 1, 0), "encode_circular": (1, 3, 2),
    "smooth_component": (25, 40, 1), "smooth_params_component": (10, 12, 4),
    "smooth_dim": (0, 0, 1), "smooth_iteration_component": (25, 0, 1),
    "spline_dim": (40, 60, 2), "spline_bin": (4, 4, 3),
    "affine_dim": (20, 20, 4),
    "bond": (9, 12, 1), "angle": (25, 40, 1), "torsion": (50, 80, 1),
    "log_jacobian": (2, 2, 1), "prior_dim": (4, 2, 0),
}
DOUBLE = 8


def read_config(path) -> dict:
    """The ``config`` JSON of a model file's safetensors header (no tensors read)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["config"])


def params_per_dim(transform: str, K: int) -> int:
    return {"smooth": 4 * K + 2, "spline": 3 * K + 2, "affine": 2}[transform]


def count_free_form(config: dict) -> dict:
    """FLOPs and bytes of one energy + forces evaluation of a free-form model (an EGNN
    encoder), per configuration, as core/src/sf_egnn.c counts them (see the docstring)."""
    net = config["network"]
    n, d = int(config["n_atoms"]), int(net["spatial_dim"])
    H, L = int(net["hidden"]), int(net["layers"])
    T = (n - 1) * d
    S, E = T + 1, n * (n - 1)
    linear = L * (12 * E * S * H * H + 12 * n * S * H * H) + (L - 1) * 16 * n * S * H * H
    lu = 8 * T ** 3 / 3
    # h0, then per layer edge (2H+1 -> H, H -> H), coord (H -> H, H -> 1), node (2H -> H, H -> H)
    params = H + L * ((2 * H + 1) * H + H + H * H + H + H * H + H + H + 1) \
        + (L - 1) * (2 * H * H + H + H * H + H)
    workspace = (T + 1) * n * (L + 10) * (2 * H + d) + 2 * T * T
    return {"kind": "free_form", "n_atoms": n, "spatial_dim": d, "hidden": H, "layers": L,
            "dims": T, "slots": S, "edges": E, "flops_linear": linear, "flops_lu": lu,
            "flops": linear + lu, "weight_bytes": params * DOUBLE,
            "workspace_bytes": workspace * DOUBLE}


def count(config: dict, inverse_iterations: int = 8) -> dict:
    """FLOPs, transcendentals and bytes of one energy + forces evaluation, per molecule
    (per configuration for a free-form model: :func:`count_free_form`)."""
    if config.get("kind") == "free_form":
        return count_free_form(config)
    N = int(config["n_atoms"])
    D = 3 * N - 6
    n_interval = 2 * N - 3
    macs = 0
    flops_other = 0
    transc = 0
    weights = 0
    act = 0

    def add(key, times=1):
        nonlocal flops_other, transc
        f, b, t = OPS[key]
        flops_other += (f + b) * times
        transc += t * times

    for layer in config["layers"]:
        transformed = layer["transformed"]
        conditioning = layer.get("conditioning")
        if conditioning is None:
            conditioning = [d for d in range(D) if d not in transformed]
        n_circ = sum(1 for d in conditioning if d >= n_interval)
        n_int = len(conditioning) - n_circ
        add("encode_interval", n_int)
        add("encode_circular", n_circ)
        K = int(layer.get("n_components", 8))
        kind = layer.get("transform", "smooth")
        P = params_per_dim(kind, K)
        widths = [n_int + 2 * n_circ] + [int(h) for h in layer.get("hidden", [64, 64])] \
            + [len(transformed) * P]
        for i, o in zip(widths[:-1], widths[1:]):
            macs += 2 * i * o            # forward and backward
            flops_other += o             # bias
            weights += (i * o + o) * DOUBLE
        act += 2 * sum(widths) * DOUBLE
        for h in widths[1:-1]:
            add(layer.get("activation", "silu"), h)
        nt = len(transformed)
        if kind == "smooth":
            add("smooth_component", nt * K)
            add("smooth_params_component", nt * K)
            add("smooth_dim", nt)
            if layer.get("direction", "generative") == "generative":
                add("smooth_iteration_component", nt * K * (inverse_iterations + 2))
        elif kind == "spline":
            add("spline_dim", nt)
            add("spline_bin", nt * K)
        else:
            add("affine_dim", nt)
    add("bond", N - 1)
    add("angle", N - 2)
    add("torsion", N - 3)
    add("log_jacobian", n_interval)
    prior = config.get("prior", "uniform")
    if prior != "uniform":
        add("prior_dim", n_interval)
    act += 2 * 2 * 3 * N * DOUBLE        # positions in, forces out (twice: read and written)
    flops = 2 * macs + flops_other
    return {"n_atoms": N, "layers": len(config["layers"]), "multiply_adds": macs,
            "flops_linear": 2 * macs, "flops_other": flops_other, "transcendentals": transc,
            "flops": flops, "weight_bytes": weights, "activation_bytes": act,
            "inverse_iterations_assumed": inverse_iterations,
            "bytes_one_molecule": 2 * weights + act}


def bytes_per_molecule(c: dict, n: int, weight_bytes_per_value: int = 8) -> float:
    """Bytes moved per molecule at n molecules (weights streamed twice per step; 4 bytes per
    weight with the float32 weight option)."""
    return 2.0 * c["weight_bytes"] * weight_bytes_per_value / 8 / n + c["activation_bytes"]


def count_file(path, inverse_iterations: int = 8) -> dict:
    return count(read_config(path), inverse_iterations)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--inverse-iterations", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    c = count_file(Path(args.model), args.inverse_iterations)
    if args.json:
        print(json.dumps(c, indent=2))
        return
    if c.get("kind") == "free_form":
        print(f"{args.model}: free-form EGNN encoder, n = {c['n_atoms']}, d = {c['spatial_dim']}, "
              f"H = {c['hidden']}, L = {c['layers']}, D = {c['dims']}")
        print(f"  flops per configuration {c['flops'] / 1e6:.3f} M (linear maps {c['flops_linear'] / 1e6:.3f} M, "
              f"LU and inverse {c['flops_lu'] / 1e6:.3f} M; elementwise work not counted)")
        print(f"  weights {c['weight_bytes'] / 1e6:.3f} MB; workspace {c['workspace_bytes'] / 1e6:.3f} MB "
              "per configuration")
        return
    print(f"{args.model}: {c['layers']} layers, N = {c['n_atoms']}")
    print(f"  multiply-adds (forward + backward) {c['multiply_adds'] / 1e6:.3f} M")
    print(f"  flops {c['flops'] / 1e6:.3f} M (linear {c['flops_linear'] / 1e6:.3f} M, "
          f"other {c['flops_other'] / 1e6:.3f} M, of which transcendentals "
          f"{c['transcendentals'] / 1e3:.1f} k)")
    print(f"  weights {c['weight_bytes'] / 1e6:.3f} MB; bytes per evaluation of one molecule "
          f"{c['bytes_one_molecule'] / 1e6:.3f} MB (activations {c['activation_bytes'] / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
