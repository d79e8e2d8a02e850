"""The peers' side of benchmarks/bench_free_form.py, run in the peers' environment
(benchmarks/peers/setup_peers.sh: torch 2.9, openmm-torch 1.5).

openmm-torch's TorchForce running a free-form flow's exact potential as TorchScript,

    U(x) = -kT [log N(f(x); 0, I_D) + log |det J_V(x)|] + U0,    D = (n - 1) d,

with forces by TorchScript autograd inside TorchForce (second derivatives of f: the gradient
of log |det J_V| goes through the Jacobian's own graph). :class:`FreeFormEnergy` builds J_V
by reverse mode: f runs on D copies of each configuration at once, and one
``torch.autograd.grad(..., create_graph=True)`` with the D orthonormal basis vectors of V as
the copies' output seeds gives the D rows of J_V (row r = b_r^T J_f, read in the same basis;
the basis is ``fff.subspace_tangents``, Helmert's, as ``fff.exact_log_det`` uses), then
``torch.linalg.slogdet``. The encoder f is the project's own ``egnn.EGNN`` (loaded from the
model file by ``particles.export``), traced with this environment's torch at the shape it is
called with (B D copies of n particles); the wrapper is scripted, since a trace cannot record
``torch.autograd.grad``.

The same server protocol as bench_peers.py (one JSON request per line on stdin, one JSON
answer per line on stdout), with its ``time``, ``evaluate`` and ``info`` requests; ``build``
here takes a free-form model file:
  {"op": "build", "id": ..., "model": path, "positions": .npy (B, n, 3) nm,
   "platform": "Reference", "torchscript_dir": folder, "dt": ps}
"""
import math
import os
import sys
import time
import warnings
from typing import List, Optional

import numpy as np
# torch before openmm (bench_peers.py says why); bench_peers also moves stray prints to stderr
import torch
import bench_peers  # noqa: E402  (beside this script)
from bench_peers import CASES, _context, evaluate, info, timed  # noqa: E402
import openmm  # noqa: E402
import openmmtorch  # noqa: E402
from smoothflow_torch import read_model_bytes  # noqa: E402
from smoothflow_torch.particles import fff  # noqa: E402
from smoothflow_torch.particles.export import encoder_from_config  # noqa: E402
from smoothflow_torch.particles.systems import R_KJ_PER_MOL_K  # noqa: E402


class FreeFormEnergy(torch.nn.Module):
    """Total energy (kJ/mol, 0-d) of positions (B n, 3) in nm: B configurations of the model's
    n particles, consecutive blocks; only the first d components are read.

    Parameters
    ----------
    encoder : the free-form flow's encoder f (``egnn.EGNN``, float64)
    batch : B, the configurations per call (the trace of f is made for B D copies)
    kT, offset : kJ/mol
    """

    def __init__(self, encoder, batch: int, kT: float, offset: float):
        super().__init__()
        n, d = encoder.n_particles, encoder.spatial_dim
        D = (n - 1) * d
        example = torch.zeros(batch * D, n, d, dtype=torch.float64)
        example.normal_(generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            # the encoder's shape check becomes a constant of the trace: the shape is fixed here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            self.f = torch.jit.trace(encoder.eval(), (example,), check_trace=False)
        # (D, n d): the orthonormal basis vectors of V, rows
        self.register_buffer("basis", fff.subspace_tangents(n, d).reshape(D, n * d).contiguous())
        self.batch, self.n, self.d, self.D = int(batch), int(n), int(d), int(D)
        self.kT, self.offset = float(kT), float(offset)
        self.log_norm = 0.5 * D * math.log(2.0 * math.pi)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        B, n, d, D = self.batch, self.n, self.d, self.D
        if not positions.requires_grad:     # an energy-only call still needs J_V's graph
            positions = positions.detach().requires_grad_(True)
        x = positions.to(torch.float64)[:, :d].reshape(B, n, d)
        copies = x.unsqueeze(1).expand(B, D, n, d).reshape(B * D, n, d)
        z = self.f(copies)
        seeds = self.basis.reshape(1, D, n, d).expand(B, D, n, d).reshape(B * D, n, d)
        grad_outputs: List[Optional[torch.Tensor]] = [seeds]
        rows = torch.autograd.grad([z], [copies], grad_outputs, retain_graph=True, create_graph=True)[0]
        assert rows is not None
        jv = torch.matmul(rows.reshape(B, D, n * d), self.basis.t())   # J_V[b, r, c] = b_r^T J b_c
        log_det = torch.linalg.slogdet(jv)[1]
        z0 = z.reshape(B, D, n * d)[:, 0]                                # f(x): every copy has it
        log_p = -0.5 * (z0 * z0).sum(-1) - self.log_norm + log_det
        return -self.kT * log_p.sum() + B * self.offset


def build(req):
    x = np.load(req["positions"])
    B, n, _ = x.shape
    with open(req["model"], "rb") as fh:
        config, _, tensors = read_model_bytes(fh.read())
    encoder = encoder_from_config(config, tensors, torch.float64)
    if encoder.n_particles != n:
        raise ValueError(f"the model has {encoder.n_particles} particles, the positions {n}")
    kT = R_KJ_PER_MOL_K * float(config["temperature"])
    t0 = time.perf_counter()
    path = os.path.join(req["torchscript_dir"],
                        os.path.basename(req["model"]).rsplit(".", 1)[0] + f".B{B}.pt")
    torch.jit.script(FreeFormEnergy(encoder, B, kT, float(config.get("energy_offset", 0.0)))).save(path)
    system = openmm.System()
    for _ in range(B * n):
        system.addParticle(1.0)
    system.addForce(openmmtorch.TorchForce(path))
    ctx, integ = _context(system, x.reshape(-1, 3), req["platform"], req["dt"])
    CASES[req["id"]] = {"ctx": ctx, "integ": integ, "x0": x.reshape(-1, 3)}
    return {"build_seconds": time.perf_counter() - t0, "torchscript": path}


OPS = {"build": build, "time": timed, "evaluate": evaluate, "info": info}


def main():
    bench_peers.main(OPS)


if __name__ == "__main__":
    main()
