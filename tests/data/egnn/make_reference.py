"""Reference data of the C core's free-form EGNN potential (core/tests/test_egnn.c).

    python tests/data/egnn/make_reference.py        # writes tests/data/egnn/reference.txt

Each case is an egnn.EGNN whose weights are not stored: they are drawn from splitmix64 by a
rule the C test repeats bit for bit (``weights`` below and egnn_random_net in test_egnn.c), so
the file holds only the network's sizes and seed, a few configurations x and, computed here in
float64 by autograd (smoothflow_torch.particles.potential), f(x), log p(x), the sign of det J_V
and d log p / dx.  Numbers are written as Python's repr (the shortest text that reads back to
the same double).
"""
from __future__ import annotations

import math
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "pytorch"))

from smoothflow_torch.particles import egnn, potential  # noqa: E402

MASK = (1 << 64) - 1


class SplitMix64:
    """splitmix64 (Steele, Lea, Flood 2014); uniform() = top 53 bits / 2^53, in [0, 1)."""

    def __init__(self, seed: int):
        self.state = seed & MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0 ** -53


def _fill(rng: SplitMix64, t: torch.Tensor, bound: float, gain: float = 1.0):
    # (2u - 1) * bound * gain, left to right, exactly as the C test computes it
    vals = [(2.0 * rng.uniform() - 1.0) * bound * gain for _ in range(t.numel())]
    with torch.no_grad():
        t.copy_(torch.tensor(vals, dtype=torch.float64).reshape(t.shape))


def weights(net: egnn.EGNN, seed: int, gain: float):
    """Overwrite every parameter: h0 ~ U(-1, 1), then per layer edge1, edge2, coord1, coord2,
    node1, node2 (weight row-major, then bias) ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as
    PyTorch's default, coord2 times gain."""
    rng = SplitMix64(seed)
    _fill(rng, net.h0, 1.0)
    for layer in net.layers:
        lins = [(layer.edge[0], 1.0), (layer.edge[2], 1.0), (layer.coord[0], 1.0),
                (layer.coord[2], gain)]
        if layer.node is not None:
            lins += [(layer.node[0], 1.0), (layer.node[2], 1.0)]
        for lin, g in lins:
            bound = 1.0 / math.sqrt(lin.in_features)
            _fill(rng, lin.weight, bound, g)
            _fill(rng, lin.bias, bound, g)


# name, n, d, hidden, layers, distance scale, coord gain, seed, configurations, spread of x.
# With this initialisation a gain of 0.5 moves f(x) only ~10 % away from P x; gains 1-2 give
# max |f(x) - P x| / max |P x| = 0.5-1.3 (printed), far from the identity.  dw4_deep's
# configurations 1-3 have det J_V < 0 (the sign is checked).
CASES = [
    ("dw4", 4, 2, 16, 2, 2.0, 2.0, 13, 3, 1.5),
    ("lj13", 13, 3, 32, 3, 1.2, 1.0, 13, 2, 0.8),
    ("pair3d", 2, 3, 8, 1, 1.0, 0.5, 13, 3, 1.0),
    ("dw4_deep", 4, 2, 8, 3, 2.0, 2.0, 14, 4, 1.5),   # folds: det J_V < 0 at some x
]


def make_case(name, n, d, hidden, layers, scale, gain, seed, configs, spread):
    net = egnn.EGNN(n, d, hidden=hidden, layers=layers, distance_scale=scale).double()
    weights(net, seed, gain)
    gen = torch.Generator().manual_seed(seed)
    x = spread * torch.randn(configs, n, d, dtype=torch.float64, generator=gen)
    x = x + torch.randn(1, 1, d, dtype=torch.float64, generator=gen)   # not mean-free: f removes it
    log_p, sign, grad = potential.log_density_and_gradient(net, x)
    with torch.no_grad():
        z = net(x)
        far = float((z - egnn.remove_mean(x)).abs().max() / egnn.remove_mean(x).abs().max())
    lines = [f"case {name} {n} {d} {hidden} {layers} {scale!r} {gain!r} {seed} {configs}"]
    for c in range(configs):
        lines.append("x " + " ".join(repr(float(v)) for v in x[c].reshape(-1)))
        lines.append("z " + " ".join(repr(float(v)) for v in z[c].reshape(-1)))
        lines.append(f"logp {float(log_p[c])!r} sign {float(sign[c])!r}")
        lines.append("grad " + " ".join(repr(float(v)) for v in grad[c].reshape(-1)))
    print(f"{name}: log p {[round(float(v), 4) for v in log_p]}, signs {sign.tolist()}, "
          f"max |f(x) - Px| / max |Px| = {far:.2f}")
    return lines


def main():
    out = pathlib.Path(__file__).with_name("reference.txt")
    lines = ["# made by tests/data/egnn/make_reference.py; weights from splitmix64 (see there)"]
    for case in CASES:
        lines += make_case(*case)
    lines.append("end")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
